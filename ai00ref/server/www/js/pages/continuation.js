// Continuation: the model continues a text (POST /api/oai/v1/completions, streamed into the text box).
// Presets start a text in a few styles; Undo puts back the text as it was before the last continuation.

import {api, chunkFinish, chunkText} from "../api.js";
import {field, formatLines, h, loadJSON, parseLines, saveJSON, section} from "../dom.js";
import {samplerForm} from "../sampler.js";

const TEXT_KEY = "ai00ref.continuation.text";
const STOPS_KEY = "ai00ref.continuation.stops";

export const PRESETS = {
  "Story": "Once upon a time, in a village at the edge of a great forest, there lived",
  "Q & A": "Question: Why is the sky blue?\n\nAnswer:",
  "Email": "Subject: Meeting next week\n\nDear team,\n\n",
  "Code": "def fibonacci(n):\n    \"\"\"The n-th Fibonacci number.\"\"\"\n",
  "Poem": "The Road Home\n\nThe evening light falls soft and slow,\n",
  "故事": "很久很久以前，在一座大山的脚下，住着",
  "物語": "昔々、ある山のふもとに、",
};

export function mount(container) {
  const sampler = samplerForm("ai00ref.continuation.sampler", 150);
  let stops = loadJSON(STOPS_KEY, []);
  let controller = null;
  let before = null; // the text before the last continuation (Undo)

  const text = h("textarea", {name: "text", class: "writing", spellcheck: false,
    value: localStorage.getItem(TEXT_KEY) ?? PRESETS.Story,
    oninput: () => localStorage.setItem(TEXT_KEY, text.value)});
  const preset = h("select", {name: "preset", onchange: () => {
    if (PRESETS[preset.value] !== undefined) setText(PRESETS[preset.value]);
    preset.value = "";
  }}, h("option", {value: "", text: "Start from a preset…"}),
  Object.keys(PRESETS).map((name) => h("option", {value: name, text: name})));
  const status = h("span", {class: "hint", id: "continuation-status"});
  const goButton = h("button", {name: "continue", class: "primary", type: "button", text: "Continue", onclick: go});
  const stopButton = h("button", {name: "stop", class: "danger", type: "button", text: "Stop", hidden: true,
    onclick: () => controller && controller.abort()});
  const undoButton = h("button", {name: "undo", type: "button", text: "Undo", disabled: true, onclick: () => {
    setText(before);
    before = null;
    undoButton.disabled = true;
  }});

  container.append(h("div", {class: "two-columns"},
    h("section", {class: "writing-main"},
      h("div", {class: "toolbar"}, preset, goButton, stopButton, undoButton, status), text),
    h("aside", {class: "side"},
      section("Generation",
        field("stop words", h("textarea", {name: "stops", rows: 3, spellcheck: false, value: formatLines(stops),
          placeholder: "none", oninput: (event) => {
            stops = parseLines(event.target.value);
            saveJSON(STOPS_KEY, stops);
          }}), "one per line; \\n is a newline; empty: none"),
        sampler.element))));

  function setText(value) {
    text.value = value;
    localStorage.setItem(TEXT_KEY, value);
  }

  async function go() {
    if (controller) return;
    before = text.value;
    controller = new AbortController();
    goButton.hidden = true;
    stopButton.hidden = false;
    status.textContent = "writing…";
    const started = performance.now();
    let finish = null;
    let chunks = 0;
    try {
      const body = {prompt: text.value, stop: stops, ...sampler.read()};
      for await (const chunk of api.complete(body, controller.signal)) {
        const piece = chunkText(chunk);
        if (piece) {
          text.value += piece;
          text.scrollTop = text.scrollHeight;
          chunks += 1;
        }
        finish = chunkFinish(chunk) || finish;
      }
      const seconds = (performance.now() - started) / 1000;
      status.textContent = `${finish || "ended"} · ${chunks} chunks · ${seconds.toFixed(1)} s`;
    } catch (error) {
      status.textContent = error.name === "AbortError" ? "stopped" : `error: ${error.message}`;
    }
    localStorage.setItem(TEXT_KEY, text.value);
    controller = null;
    goButton.hidden = false;
    stopButton.hidden = true;
    undoButton.disabled = false;
  }

  return () => controller && controller.abort();
}
