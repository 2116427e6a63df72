// Settings: the loaded model (live, from /api/models/state), loading another one from the model folder
// (/api/models/list -> /admin/models/load) with its LoRAs, states and options, unloading, the adapters, exporting
// the loaded model as a prefab (/admin/models/save), and the admin sign-in.

import {adminToken, api, setAdminToken} from "../api.js";
import {button, field, h, plural, replaceChildren, section} from "../dom.js";
import {currentInfo, onInfo} from "../status.js";

const QUANT_TYPES = ["None", "Int8", "NF4", "SF4"];
const PRECISIONS = ["Fp16", "Fp32"];
const ENGINES = ["auto", "vulkan", "cuda", "cpu", "ref"]; // [adapter].engine (spec/api.md §1)

/** Files of the model folder sorted by what they can be: models, LoRAs, states. */
export function classify(files) {
  const isModel = (f) => f.info !== null || /\.(pth|prefab)$/i.test(f.name);
  return {
    models: files.filter(isModel),
    loras: files.filter((f) => !isModel(f) && /\.(lora|st|safetensors)$/i.test(f.name)),
    states: files.filter((f) => /\.state$/i.test(f.name)),
  };
}

function select(name, values, value) {
  return h("select", {name}, values.map((v) => h("option", {value: v, text: v, selected: v === value})));
}

function number(name, value, min = 0) {
  return h("input", {type: "number", name, min: String(min), value: String(value)});
}

function infoTable(info) {
  if (!info || !info.model) return h("p", {class: "hint", text: "No model is loaded."});
  const m = info.model;
  const s = info.status || {};
  const rows = [
    ["file", info.reload.model_path], ["engine", info.reload.backend],
    ["version", `${m.version}: ${plural(m.num_layer, "layer")}, ${m.num_emb} wide, ${plural(m.num_head, "head")}`],
    ["vocabulary", m.num_vocab], ["slots busy", `${s.busy ?? "?"} of ${info.reload.max_batch}`],
    ["queued requests", s.waiting ?? "?"], ["token chunk size", info.reload.token_chunk_size],
    ["tokens/s", typeof info.tokensPerSecond === "number" ? info.tokensPerSecond.toFixed(1) : "–"],
    ["states", info.states.map((st) => st.name).join(", ") || "none"],
  ];
  return h("table", {class: "kv", id: "model-info"},
    rows.map(([key, value]) => h("tr", {}, h("th", {text: key}), h("td", {text: String(value)}))));
}

function modelChoice(file, loaded) {
  const about = file.info ? ` ${file.info.version}, ${plural(file.info.num_layer, "layer")}` : "";
  return h("label", {class: "file"}, h("input", {type: "radio", name: "model", value: file.name, checked: loaded}),
    ` ${file.name}`, h("small", {class: "hint", text: about}));
}

function loraChoice(file) {
  return h("label", {class: "file"}, h("input", {type: "checkbox", name: "lora", value: file.name}), ` ${file.name} `,
    h("input", {type: "number", name: "alpha", class: "alpha", step: "0.1", value: "1", title: "alpha"}));
}

function stateChoice(file) {
  return h("label", {class: "file"}, h("input", {type: "checkbox", name: "state", value: file.name}), ` ${file.name}`);
}

export function mount(container) {
  const infoBox = h("div");
  const message = h("p", {class: "message", id: "settings-message"});
  const filesBox = h("div", {id: "model-files"});
  const adaptersBox = h("ul", {class: "plain"});
  const accessBox = h("p");
  const options = h("div", {class: "grid3"},
    field("quant (layers)", number("quant", 0)), field("quant_type", select("quant_type", QUANT_TYPES, "None")),
    field("precision", select("precision", PRECISIONS, "Fp16")),
    field("token_chunk_size", number("token_chunk_size", 128, 1)), field("max_batch", number("max_batch", 8, 1)),
    field("engine", select("engine", ENGINES, "auto")));
  const exportPath = h("input", {name: "export_path", value: "exported.prefab"});

  const toolbar = (...children) => h("div", {class: "toolbar"}, ...children);
  container.append(h("div", {class: "settings"},
    section("Loaded model", infoBox, toolbar(button("unload", "Unload", unload))),
    section("Load a model", toolbar(button("refresh", "Refresh list", refresh)), filesBox, options,
      toolbar(button("load", "Load", load, "primary")), message),
    section("Export a prefab (LoRAs merged, quantized as it runs)",
      toolbar(exportPath, button("save", "Export", save))),
    section("Adapters", adaptersBox),
    section("Admin access", accessBox)));

  const say = (text, kind = "") => { message.textContent = text; message.className = `message ${kind}`; };
  const value = (name) => options.querySelector(`[name=${name}]`).value;
  let defaultsShown = false;

  const stopWatching = onInfo((info) => {
    infoBox.replaceChildren(infoTable(info));
    if (info && info.reload && !defaultsShown) { // the form starts from what is loaded
      defaultsShown = true;
      options.querySelector("[name=token_chunk_size]").value = info.reload.token_chunk_size;
      options.querySelector("[name=max_batch]").value = info.reload.max_batch;
      if (ENGINES.includes(info.reload.backend)) options.querySelector("[name=engine]").value = info.reload.backend;
    }
  });

  async function refresh() {
    try {
      const {models, loras, states} = classify(await api.list());
      const info = currentInfo();
      const loaded = info && info.reload ? info.reload.model_path : null;
      replaceChildren(filesBox,
        h("h4", {text: "Model"}),
        models.length ? models.map((f) => modelChoice(f, f.path === loaded))
          : h("p", {class: "hint", text: "no model files in [model].path"}),
        loras.length ? [h("h4", {text: "LoRAs"}), loras.map(loraChoice)] : null,
        states.length ? [h("h4", {text: "States"}), states.map(stateChoice)] : null);
    } catch (error) {
      filesBox.replaceChildren(h("p", {class: "error", text: error.message}));
    }
  }

  function loadRequest() {
    const chosen = filesBox.querySelector("input[name=model]:checked");
    if (!chosen) throw new Error("choose a model file first");
    const checked = (name) => [...filesBox.querySelectorAll(`input[name=${name}]:checked`)];
    return {
      model_path: chosen.value,
      lora: checked("lora").map((box) => ({path: box.value,
        alpha: Number(box.parentElement.querySelector(".alpha").value)})),
      state: checked("state").map((box) => ({path: box.value, name: box.value.replace(/\.state$/i, "")})),
      quant: Number(value("quant")), quant_type: value("quant_type"), precision: value("precision"),
      token_chunk_size: Number(value("token_chunk_size")), max_batch: Number(value("max_batch")),
      adapter: {engine: value("engine")},
    };
  }

  async function load() {
    let body;
    try {
      body = loadRequest();
    } catch (error) {
      say(error.message, "error");
      return;
    }
    say(`loading ${body.model_path}…`);
    try {
      const answer = await api.load(body);
      say(`loaded ${answer.model}`, "ok");
    } catch (error) {
      say(error.message, "error");
    }
    showAdapters();
    showAccess();
  }

  async function unload() {
    try {
      await api.unload();
      say("unloaded", "ok");
    } catch (error) {
      say(error.message, "error");
    }
    showAccess();
  }

  async function save() {
    try {
      const answer = await api.save(exportPath.value);
      say(`exported to ${answer.path}`, "ok");
      refresh();
    } catch (error) {
      say(error.message, "error");
    }
    showAccess();
  }

  async function showAdapters() {
    try {
      const names = await api.adapters();
      const shown = names.length ? names : ["none (no model loaded)"];
      adaptersBox.replaceChildren(...shown.map((name) => h("li", {text: name})));
    } catch (error) {
      adaptersBox.replaceChildren(h("li", {class: "error", text: error.message}));
    }
  }

  function showAccess() {
    replaceChildren(accessBox, adminToken()
      ? ["Signed in (an admin token is kept in this browser). ",
        h("button", {type: "button", text: "Sign out", onclick: () => { setAdminToken(null); showAccess(); }})]
      : "Not signed in: admin actions ask for the app key when the server wants one (force_pass = false).");
  }

  refresh();
  showAdapters();
  showAccess();
  return stopWatching;
}
