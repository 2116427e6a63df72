// The sampler and generation options, as the server's sampler objects take them
// (ai00ref/server/samplers.py; ai00-server.md §4.3-4.5). Kept in localStorage under a key per page.

import {field, h, loadJSON, saveJSON} from "./dom.js";

const PENALTIES = [
  ["presence_penalty", 0.3, 0.05],
  ["frequency_penalty", 0.3, 0.05],
  ["penalty_decay", 0.99654026, 0.0001], // 0.5 ** (1/200): a 200-token half-life
];

// [name, default, step] of each sampler's parameters, the server's defaults.
export const SAMPLERS = {
  Nucleus: [["temperature", 1.0, 0.05], ["top_p", 0.5, 0.01], ["top_k", 128, 1], ...PENALTIES],
  Typical: [["temperature", 1.0, 0.05], ["tau", 0.5, 0.01], ["top_k", 128, 1], ...PENALTIES],
  Mirostat: [["tau", 3.0, 0.1], ["rate", 0.1, 0.01]],
};

export function defaultOptions(maxTokens = 200) {
  const params = {};
  for (const [type, list] of Object.entries(SAMPLERS)) {
    params[type] = Object.fromEntries(list.map(([name, value]) => [name, value]));
  }
  return {type: "Nucleus", params, max_tokens: maxTokens, seed: ""};
}

/** The request fields for `options`: {sampler: {type, ...}, max_tokens, seed?}. */
export function samplerFields(options) {
  const fields = {sampler: {type: options.type, ...options.params[options.type]}, max_tokens: options.max_tokens};
  if (options.seed !== "" && options.seed !== null) fields.seed = Number(options.seed);
  return fields;
}

function numberInput(name, value, step, onInput) {
  return h("input", {type: "number", name, step: String(step), value: String(value),
    oninput: (event) => event.target.value !== "" && onInput(Number(event.target.value))});
}

/** A form editing the options stored under `storageKey`; `read()` gives the request fields. */
export function samplerForm(storageKey, maxTokens) {
  const options = {...defaultOptions(maxTokens), ...loadJSON(storageKey, {})};
  const save = () => saveJSON(storageKey, options);
  const params = h("div", {class: "grid2"});

  function showParams() {
    params.replaceChildren(...SAMPLERS[options.type].map(([name, , step]) =>
      field(name, numberInput(name, options.params[options.type][name], step, (value) => {
        options.params[options.type][name] = value;
        save();
      }))));
  }

  const type = h("select", {name: "sampler", onchange: (event) => {
    options.type = event.target.value;
    save();
    showParams();
  }}, Object.keys(SAMPLERS).map((name) => h("option", {value: name, text: name, selected: name === options.type})));
  showParams();
  const element = h("div", {class: "sampler"},
    h("div", {class: "grid2"},
      field("sampler", type),
      field("max_tokens", h("input", {type: "number", name: "max_tokens", min: "1", value: String(options.max_tokens),
        oninput: (event) => { options.max_tokens = Number(event.target.value) || 1; save(); }})),
      field("seed", h("input", {type: "number", name: "seed", placeholder: "random", value: String(options.seed),
        oninput: (event) => { options.seed = event.target.value; save(); }}))),
    params);
  return {element, read: () => samplerFields(options)};
}
