// The server's HTTP API as the pages use it (spec/api.md; Ai00's routes in ai00-server.md §1.2).
//
// Every failure is thrown as an ApiError carrying the server's OpenAI-style message. Admin routes send the JWT
// from localStorage as `Authorization: Bearer`; on 401/403 the sign-in handler (auth.js) is asked for a new one
// (POST /api/auth/exchange) and the request is tried again. With `force_pass = true` no token is ever asked for.

const TOKEN_KEY = "ai00ref.token";
const OAI = "api/oai/v1";

export class ApiError extends Error {
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

let signIn = async () => null; // replaced by auth.js: (reason) -> a token, or null when the user cancels

export function setSignIn(handler) {
  signIn = handler;
}

export function adminToken() {
  return localStorage.getItem(TOKEN_KEY);
}

export function setAdminToken(token) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
}

function errorMessage(status, body) {
  if (body && body.error) return body.error.message || JSON.stringify(body.error);
  if (body && body.message) return body.message; // /api/auth/exchange's own shape
  return typeof body === "string" && body ? body : `HTTP ${status}`;
}

async function readBody(response) {
  const text = await response.text();
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

async function send(method, path, body, admin, signal) {
  const headers = body === undefined ? {} : {"Content-Type": "application/json"};
  const token = admin ? adminToken() : null;
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(path, {method, headers, signal, body: body === undefined ? undefined : JSON.stringify(body)});
}

/** One JSON request; admin routes retry after a sign-in when the token is missing or refused. */
export async function request(method, path, body, {admin = false, signal} = {}) {
  let response = await send(method, path, body, admin, signal);
  while (admin && (response.status === 401 || response.status === 403)) {
    const reason = errorMessage(response.status, await readBody(response));
    setAdminToken(await signIn(reason));
    if (!adminToken()) throw new ApiError(response.status, reason);
    response = await send(method, path, body, admin, signal);
  }
  const parsed = await readBody(response);
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, parsed));
  return parsed;
}

/** POST a generation with `stream: true`; yields each SSE event's JSON until `[DONE]`.
 *  Aborting `signal` closes the connection, and the server frees the request's slot. */
export async function* stream(path, body, signal) {
  const response = await send("POST", path, {...body, stream: true}, false, signal);
  if (!response.ok) throw new ApiError(response.status, errorMessage(response.status, await readBody(response)));
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  try {
    yield* events(reader);
  } finally {
    reader.cancel().catch(() => {}); // the consumer stopped early, or the stream ended: release the connection
  }
}

/** The JSON of each `data:` event read from `reader`, until `[DONE]` or the end. */
async function* events(reader) {
  let buffer = "";
  for (;;) {
    const {value, done} = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const event = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const data = event.split(/\r?\n/).filter((line) => line.startsWith("data:"))
        .map((line) => line.slice(5).trimStart()).join("\n");
      if (data === "[DONE]") return;
      if (!data) continue;
      const payload = JSON.parse(data);
      if (payload.error) throw new ApiError(500, errorMessage(500, payload)); // an error after the stream began
      yield payload;
    }
  }
}

/** The text of a chat or completion chunk (chat: delta.content; completions: Ai00's delta.content or `text`). */
export function chunkText(chunk) {
  const choice = chunk.choices && chunk.choices[0];
  if (!choice) return "";
  return (choice.delta && choice.delta.content) || choice.text || "";
}

export function chunkFinish(chunk) {
  const choice = chunk.choices && chunk.choices[0];
  return choice ? choice.finish_reason : null;
}

/** Runtime info every 0.5 s from the /api/models/state SSE (its data is JSON encoded twice, as Ai00's).
 *  Returns a function that stops watching. The browser reconnects by itself after an error. */
export function watchState(onInfo, onError) {
  const source = new EventSource("api/models/state");
  source.onmessage = (event) => onInfo(JSON.parse(JSON.parse(event.data)));
  source.onerror = () => onError && onError();
  return () => source.close();
}

export const api = {
  chat: (body, signal) => stream(`${OAI}/chat/completions`, body, signal),
  complete: (body, signal) => stream(`${OAI}/completions`, body, signal),
  info: () => request("GET", "api/models/info"),
  list: () => request("GET", "api/models/list"),
  adapters: () => request("GET", "api/adapters"),
  exchange: (appId, secret) => request("POST", "api/auth/exchange", {app_id: appId, app_secret: secret}),
  load: (body) => request("POST", "admin/models/load", body, {admin: true}),
  unload: () => request("GET", "admin/models/unload", undefined, {admin: true}),
  save: (path) => request("POST", "admin/models/save", {path}, {admin: true}),
};
