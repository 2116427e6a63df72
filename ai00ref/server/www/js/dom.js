// Tiny DOM helpers: build elements from a tag, properties and children (no framework).

/** h("button", {class: "primary", onclick: f}, "Send") -> <button class="primary">Send</button>.
 *  Properties: `class`, `text`, `on<event>` handlers, `dataset`, DOM properties (value, checked, ...),
 *  anything else as an attribute. Children: nodes, strings, arrays of them; null and false are skipped. */
export function h(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === null || value === undefined || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else if (key === "dataset") Object.assign(node.dataset, value);
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (key in node && typeof value !== "string") node[key] = value;
    else if (key === "value") node.value = value;
    else node.setAttribute(key, value === true ? "" : value);
  }
  append(node, children);
  return node;
}

function append(node, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(node, child);
    else node.append(child instanceof Node ? child : String(child));
  }
}

/** Replace every child of `node`. */
export function replaceChildren(node, ...children) {
  node.replaceChildren();
  append(node, children);
}

/** A labelled form control: <label>Text <control></label>. */
export function field(label, control, hint = null) {
  return h("label", {class: "field"}, h("span", {text: label}), control,
    hint ? h("small", {class: "hint", text: hint}) : null);
}

/** A plain button: button("save", "Export", onclick) or with a class: button("load", "Load", onclick, "primary"). */
export function button(name, text, onclick, className = null) {
  return h("button", {name, type: "button", text, onclick, class: className});
}

/** A titled panel section. */
export function section(title, ...children) {
  return h("section", {class: "panel"}, h("h3", {text: title}), ...children);
}

/** Stop words as typed (one per line, `\n` and `\t` escapes) -> strings. */
export function parseLines(text) {
  return text.split("\n").filter((line) => line !== "")
    .map((line) => line.replace(/\\n/g, "\n").replace(/\\t/g, "\t"));
}

/** The inverse of parseLines, for showing stored stop words. */
export function formatLines(words) {
  return words.map((word) => word.replace(/\n/g, "\\n").replace(/\t/g, "\\t")).join("\n");
}

/** "1 layer", "2 layers". */
export function plural(count, noun) {
  return `${count} ${noun}${count === 1 ? "" : "s"}`;
}

/** localStorage as JSON, with a fallback when absent or unreadable. */
export function loadJSON(key, fallback) {
  try {
    const text = localStorage.getItem(key);
    return text === null ? fallback : JSON.parse(text);
  } catch {
    return fallback;
  }
}

export function saveJSON(key, value) {
  localStorage.setItem(key, JSON.stringify(value));
}
