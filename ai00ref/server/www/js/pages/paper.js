// Paper writing: a title, then an outline (one streamed completion, editable), then every section of the outline
// written at once, one streamed request each: the server batches them into the same forward passes.

import {api, chunkFinish, chunkText} from "../api.js";
import {field, h, loadJSON, saveJSON, section} from "../dom.js";
import {samplerForm} from "../sampler.js";

const PAPER_KEY = "ai00ref.paper";
const MAX_SECTIONS = 12;

function outlinePrompt(title) {
  return `Title: ${title}\n\nOutline of the paper, one section per line:\n1.`;
}

/** A section's start: the paper's title and the section's numbered heading, as a document's text has them. */
function sectionPrompt(title, number, heading) {
  return `${title}\n\n${number}. ${heading}\n\n`;
}

/** The outline's lines as section headings, without their numbering ("1.", "2)", "-"). */
export function headings(outline) {
  return outline.split("\n").map((line) => line.replace(/^\s*(\d+[.)]|[-*•])\s*/, "").trim())
    .filter((line) => line !== "").slice(0, MAX_SECTIONS);
}

export function mount(container) {
  const saved = loadJSON(PAPER_KEY, {title: "State-space language models on small devices", outline: ""});
  const sampler = samplerForm("ai00ref.paper.sampler", 120);
  const controllers = new Set();
  const save = () => saveJSON(PAPER_KEY, {title: title.value, outline: outline.value});

  const title = h("input", {name: "title", class: "paper-title", value: saved.title, oninput: save});
  const outline = h("textarea", {name: "outline", rows: 8, spellcheck: false, value: saved.outline, oninput: save,
    placeholder: "one section per line (written by the model, or by you)"});
  const status = h("p", {class: "hint", id: "paper-status"});
  const sections = h("div", {class: "paper-sections", id: "paper-sections"});
  const outlineButton = h("button", {name: "outline", type: "button", text: "1. Outline", onclick: writeOutline});
  const writeButton = h("button", {name: "write", class: "primary", type: "button", text: "2. Write sections",
    onclick: writeSections});
  const stopButton = h("button", {name: "stop", class: "danger", type: "button", text: "Stop", hidden: true,
    onclick: () => controllers.forEach((c) => c.abort())});

  container.append(h("div", {class: "two-columns"},
    h("section", {class: "paper-main"},
      field("Title", title),
      h("div", {class: "toolbar"}, outlineButton, writeButton, stopButton),
      field("Outline", outline), status, sections),
    h("aside", {class: "side"}, section("Generation", sampler.element))));

  /** Stream one completion, calling onText(piece) for each piece; -> {finish, seconds, started, first, ended}
   *  (times from performance.now(); `first`: when the first text came). */
  async function run(prompt, stop, onText) {
    const controller = new AbortController();
    controllers.add(controller);
    setBusy();
    const started = performance.now();
    let finish = null;
    let first = null;
    try {
      for await (const chunk of api.complete({prompt, stop, ...sampler.read()}, controller.signal)) {
        const piece = chunkText(chunk);
        if (piece) {
          first = first ?? performance.now();
          onText(piece);
        }
        finish = chunkFinish(chunk) || finish;
      }
    } catch (error) {
      finish = error.name === "AbortError" ? "stopped" : `error: ${error.message}`;
    } finally {
      controllers.delete(controller);
      setBusy();
    }
    const ended = performance.now();
    return {finish: finish || "ended", seconds: (ended - started) / 1000, started, first: first ?? ended, ended};
  }

  function setBusy() {
    const busy = controllers.size > 0;
    outlineButton.disabled = writeButton.disabled = busy;
    stopButton.hidden = !busy;
    if (busy) status.textContent = `${controllers.size} request${controllers.size > 1 ? "s" : ""} in flight`;
  }

  async function writeOutline() {
    outline.value = "1.";
    const result = await run(outlinePrompt(title.value), ["\n\n"], (piece) => { outline.value += piece; });
    save();
    status.textContent = `outline: ${result.finish} in ${result.seconds.toFixed(1)} s`;
  }

  async function writeSections() {
    const list = headings(outline.value);
    if (list.length === 0) {
      status.textContent = "the outline is empty: write one line per section";
      return;
    }
    const cards = list.map((heading) => h("article", {class: "paper-section"},
      h("h4", {text: heading}), h("div", {class: "text"}), h("div", {class: "meta", text: "waiting…"})));
    sections.replaceChildren(...cards);
    const results = await Promise.all(list.map((heading, i) => {
      const text = cards[i].querySelector(".text");
      const meta = cards[i].querySelector(".meta");
      return run(sectionPrompt(title.value, i + 1, heading), [], (piece) => { // max_tokens ends it
        text.textContent += piece;
        meta.textContent = "writing…";
      }).then((result) => {
        meta.textContent = `${result.finish} · ${result.seconds.toFixed(1)} s`;
        Object.assign(cards[i].dataset, {finish: result.finish, first: result.first, ended: result.ended});
        return result;
      });
    }));
    const wall = (Math.max(...results.map((r) => r.ended)) - Math.min(...results.map((r) => r.started))) / 1000;
    status.textContent = `${results.length} sections written in parallel in ${wall.toFixed(1)} s`;
  }

  return () => controllers.forEach((c) => c.abort());
}
