// The live runtime info from /api/models/state, shared by the header's status line and the pages:
// the loaded model, its states, busy slots, queued requests, and generated tokens per second.

import {watchState} from "./api.js";
import {plural} from "./dom.js";

const listeners = new Set();
let latest = null;
let previous = null; // {generated, at}: for tokens per second

/** Call `fn(info)` on every update (at once with the latest); returns the unsubscribe function. */
export function onInfo(fn) {
  listeners.add(fn);
  if (latest) fn(latest);
  return () => listeners.delete(fn);
}

export function currentInfo() {
  return latest;
}

/** Generated tokens per second between two updates, when the server reports its running total. */
function tokensPerSecond(status) {
  if (!status || typeof status.generated !== "number") return null;
  const now = performance.now();
  const rate = previous && now > previous.at && status.generated >= previous.generated
    ? (status.generated - previous.generated) / ((now - previous.at) / 1000) : null;
  previous = {generated: status.generated, at: now};
  return rate;
}

export function statusLine(info) {
  if (!info || !info.model) return "no model loaded";
  const name = info.reload.model_path.split(/[\\/]/).pop();
  const s = info.status || {};
  const parts = [name, `${info.model.version} · ${plural(info.model.num_layer, "layer")}`,
    `slots ${s.busy ?? "?"}/${info.reload.max_batch}`, `queue ${s.waiting ?? "?"}`];
  if (typeof info.tokensPerSecond === "number") parts.push(`${info.tokensPerSecond.toFixed(1)} tok/s`);
  return parts.join(" · ");
}

export function startStatus(element) {
  watchState((info) => {
    info.tokensPerSecond = tokensPerSecond(info.status);
    latest = info;
    element.textContent = statusLine(info);
    element.classList.toggle("busy", Boolean(info.status && info.status.busy));
    for (const fn of listeners) fn(info);
  }, () => {
    element.textContent = "server unreachable: retrying…";
  });
}
