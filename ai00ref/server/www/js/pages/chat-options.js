// The chat page's options panel: per-chat names, stop words, the initial state, a BNF grammar or a JSON schema,
// and the sampler. Everything but the names (which belong to each chat) is kept in localStorage.

import {field, formatLines, h, loadJSON, parseLines, saveJSON, section} from "../dom.js";
import {samplerForm} from "../sampler.js";
import {onInfo} from "../status.js";

const OPTIONS_KEY = "ai00ref.chat.options";
// `{user}` and `{assistant}` stand for the chat's names. "\n\n" ends a turn (the prompt template's separator).
const DEFAULTS = {stops: ["\n\n", "\n{user}:"], state: "", bnf: "", schema: ""};

/** The panel (its names edit `getChat()`'s). `read(chat)` gives the request fields it sets, or throws an Error
 *  naming a bad input. */
export function chatOptions(getChat, onNamesChange) {
  const options = {...DEFAULTS, ...loadJSON(OPTIONS_KEY, {})};
  const save = () => saveJSON(OPTIONS_KEY, options);
  const sampler = samplerForm("ai00ref.chat.sampler", 200);
  const text = (name, rows, placeholder) => h("textarea", {name, rows, placeholder, value: options[name],
    spellcheck: false, oninput: (event) => { options[name] = event.target.value; save(); }});

  const userName = h("input", {name: "user_name", oninput: (event) => setName("user", event.target.value)});
  const assistantName = h("input", {name: "assistant_name",
    oninput: (event) => setName("assistant", event.target.value)});
  function setName(role, value) {
    getChat().names[role] = value;
    onNamesChange();
  }

  const stateSelect = h("select", {name: "state", onchange: (event) => {
    options.state = event.target.value;
    save();
  }});
  let knownStates = "";
  const stopWatching = onInfo((info) => {
    const states = (info && info.states) || [];
    if (JSON.stringify(states) === knownStates) return;
    knownStates = JSON.stringify(states);
    if (options.state && !states.some((s) => s.id === options.state)) { // not a state of the model now loaded
      options.state = "";
      save();
    }
    stateSelect.replaceChildren(h("option", {value: "", text: "default"}),
      ...states.map((s) => h("option", {value: s.id, text: s.name, selected: s.id === options.state})));
  });

  const element = h("aside", {class: "chat-options"},
    section("Names", h("div", {class: "grid2"}, field("user", userName), field("assistant", assistantName))),
    section("Generation",
      field("state", stateSelect, "an initial state of the loaded model"),
      field("stop words", h("textarea", {name: "stops", rows: 3, spellcheck: false, value: formatLines(options.stops),
        oninput: (event) => { options.stops = parseLines(event.target.value); save(); }}),
      "one per line; \\n is a newline; {user} is the user's name"),
      sampler.element),
    section("Structured output",
      field("BNF grammar (bnf_schema)", text("bnf", 4, 'start ::= "yes" | "no";')),
      field("JSON schema (response_format)", text("schema", 4, '{"type": "object", "properties": {...}}'))));

  function showChat(chat) {
    userName.value = chat.names.user;
    assistantName.value = chat.names.assistant;
  }

  function read(chat) {
    const fill = (word) => word.replaceAll("{user}", chat.names.user).replaceAll("{assistant}", chat.names.assistant);
    const fields = {names: chat.names, stop: options.stops.map(fill), ...sampler.read()};
    if (options.state) fields.state = options.state;
    if (options.bnf.trim()) fields.bnf_schema = options.bnf;
    if (options.schema.trim()) {
      let schema;
      try {
        schema = JSON.parse(options.schema);
      } catch (error) {
        throw new Error(`the JSON schema is not JSON: ${error.message}`);
      }
      fields.response_format = {type: "json_schema", json_schema: {name: "answer", schema}};
    }
    return fields;
  }

  return {element, showChat, read, close: stopWatching};
}
