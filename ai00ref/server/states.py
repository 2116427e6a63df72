"""Initial states: web-rwkv's flat layout, and a request's `state` (ai00-server.md §1.3, §10.2; spec/api.md §States).

A request's `state` is one of
- an id (a UUID string): a configured `[[state]]`, or one an earlier request registered; the nil UUID means the
  default state. An unknown id is a 404 (Ai00 silently uses the default: its ids are random at each start unless
  configured, so a client holding an old id got another state without knowing);
- a value `{name, id, data, shape}`: a state in the layout `/states` returns (`state_to_ai00_layout`); every row is
  restored, token shifts included, so the `/states` output of a prompt continues exactly where that prompt ended;
- a file `{name, id, path}`: a `.state` file, confined to the model folder (Ai00 does not confine it).
A value or file is registered under its `id` for later requests (at most `REQUEST_STATES`, least recently registered
out first). A configured state's id cannot be taken over by a request.
"""
from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path

import numpy as np

from ai00ref.engine import load_state
from ai00ref.ref.state import V4State, V7State, zero_state
from ai00ref.server.config import resolve_under
from ai00ref.server.errors import ApiError, bad_request
from ai00ref.server.openapi import array, nullable, obj, typed

NIL_STATE = "00000000-0000-0000-0000-000000000000"
REQUEST_STATES = 64  # states registered by requests, kept by the scheduler
STATE_ID = typed("string", format="uuid")
STATE = nullable({"anyOf": [  # the field's schema (the OpenAPI document), the three forms parse_state reads
    {**STATE_ID, "description": "a configured or registered state's id; the nil UUID: the default state"},
    obj({"name": typed("string"), "id": STATE_ID, "data": array(typed("number")), "shape": array(typed("integer"))},
        required=("id", "data", "shape"), description="a value in the layout /states returns"),
    obj({"name": typed("string"), "id": STATE_ID, "path": typed("string", minLength=1)}, required=("id", "path"),
        description="a .state file under the model folder")],
    "description": "the initial state (spec/api.md §3)"})


@dataclasses.dataclass(frozen=True)
class StateRequest:
    """A parsed `state` field: `kind` is "id", "value" or "file"."""
    kind: str
    id: str
    data: list | None = None
    shape: list | None = None
    path: str | None = None


# ---- web-rwkv's layout (§10.2) ----

def state_to_ai00_layout(state_host, info, row: int = 0) -> tuple[np.ndarray, list[int]]:
    """One row of a host state as web-rwkv's flat f32 tensor and its shape (first index fastest).

    v5/v6/v7: shape [num_emb, head_size + 2, num_layer, 1]; per layer a block of head_size + 2 rows of num_emb:
      row 0 the att token-shift; row 1 + j, column h*head_size + i the WKV state of head h for *key* j and
      *value* i (web-rwkv's time_mix shaders keep each thread on a value channel and walk the key rows), i.e. the
      `.state` file's [h, key, value] orientation: our v5/v6 `wkv[h, j, i]`, our v7 `wkv[h, i, j]`;
      row head_size + 1 the ffn token-shift.
    v4: shape [num_emb, 5 * num_layer, 1, 1], per layer the rows att-shift, aa, bb, pp, ffn-shift (web-rwkv's v4
      runtime). A pp never updated is our -1e30 where web-rwkv has f32::MIN; both mean "minus infinity".
    """
    L, C, N = info.n_layer, info.n_embd, info.head_size
    if isinstance(state_host, V4State):
        fields = (state_host.att_x, state_host.aa, state_host.bb, state_host.pp, state_host.ffn_x)
        layers = np.stack([f[row] for f in fields], axis=1)  # (L, 5, C)
        return layers.astype(np.float32).ravel(), [C, 5 * L, 1, 1]
    wkv = state_host.wkv[row]  # (L, H, N, N)
    key_value = wkv.swapaxes(-1, -2) if isinstance(state_host, V7State) else wkv  # (L, H, key, value)
    wkv_rows = key_value.transpose(0, 2, 1, 3).reshape(L, N, C)  # (L, key, head * N + value)
    layers = np.concatenate([state_host.att_x[row][:, None], wkv_rows, state_host.ffn_x[row][:, None]], axis=1)
    return layers.astype(np.float32).ravel(), [C, N + 2, L, 1]  # layers: (L, N + 2, C)


def ai00_layout_shape(info) -> list[int]:
    L, C, N = info.n_layer, info.n_embd, info.head_size
    return [C, 5 * L, 1, 1] if info.version == "v4" else [C, N + 2, L, 1]


def state_from_ai00_layout(data, shape, info):
    """The inverse of `state_to_ai00_layout`: a batch-1 host state (float32). ValueError names what does not fit."""
    expected = ai00_layout_shape(info)
    if list(shape) != expected:
        raise ValueError(f"shape {list(shape)} does not fit this model, which needs {expected}")
    flat = np.asarray(data, np.float32)
    if flat.ndim != 1 or flat.size != int(np.prod(expected)):
        raise ValueError(f"data has {flat.size} numbers; shape {expected} needs {int(np.prod(expected))}")
    if not np.isfinite(flat).all() and info.version != "v4":  # v4's pp may hold f32::MIN, which is finite
        raise ValueError("data holds a NaN or an infinity")
    state = zero_state(info, 1)
    L, C, H, N = info.n_layer, info.n_embd, info.n_head, info.head_size
    if info.version == "v4":
        layers = flat.reshape(L, 5, C)
        for k, name in enumerate(("att_x", "aa", "bb", "pp", "ffn_x")):
            getattr(state, name)[0] = layers[:, k]
        return state
    layers = flat.reshape(L, N + 2, C)
    state.att_x[0], state.ffn_x[0] = layers[:, 0], layers[:, N + 1]
    key_value = layers[:, 1:N + 1].reshape(L, N, H, N).transpose(0, 2, 1, 3)  # (L, H, key, value)
    state.wkv[0] = key_value.swapaxes(-1, -2) if isinstance(state, V7State) else key_value
    return state


# ---- a request's `state` ----

def _uuid(value, field: str) -> str:
    if not isinstance(value, str):
        raise bad_request(f"{field} must be a UUID string", "state")
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise bad_request(f"{field} {value!r} is not a UUID", "state") from None


def parse_state(body: dict) -> StateRequest:
    """The `state` field's form (no model needed): an id, a value or a file."""
    value = body.get("state")
    if value is None:
        return StateRequest("id", NIL_STATE)
    if isinstance(value, str):
        return StateRequest("id", _uuid(value, "state"))
    if not isinstance(value, dict):
        raise bad_request("state must be a UUID string, {name, id, data, shape} or {name, id, path}", "state")
    state_id = _uuid(value.get("id"), "state.id")
    if "path" in value:
        if not isinstance(value["path"], str) or not value["path"]:
            raise bad_request("state.path must be a non-empty string", "state")
        return StateRequest("file", state_id, path=value["path"])
    data, shape = value.get("data"), value.get("shape")
    if not isinstance(data, list) or not isinstance(shape, list) or not all(isinstance(n, int) for n in shape):
        raise bad_request("a state value needs data (a list of numbers) and shape (a list of integers)", "state")
    return StateRequest("value", state_id, data=data, shape=shape)


def load_request_state(request: StateRequest, info, model_folder: Path):
    """The host state of a value or file (blocking: run it off the event loop)."""
    if request.kind == "value":
        try:
            return state_from_ai00_layout(request.data, request.shape, info)
        except (ValueError, TypeError) as error:
            raise bad_request(f"state: {error}", "state") from None
    try:
        path = resolve_under(model_folder, request.path)
    except ApiError as error:  # outside the model folder
        raise ApiError(404, f"state.path: {error.message}", param="state", code="not_found") from None
    if not path.is_file():
        raise ApiError(404, f"state.path: no file {request.path} in the model folder", param="state",
                       code="not_found")
    try:
        return load_state(path, info)
    except Exception as error:  # noqa: BLE001 - a broken file is the client's problem: named in a 400
        raise bad_request(f"state.path: {error}", "state") from None


async def resolve_state(runtime, body: dict) -> str:
    """The state id a request starts from, registering a value or file first (on the inference thread)."""
    request = parse_state(body)
    scheduler = runtime.scheduler
    if request.kind == "id":
        if request.id != NIL_STATE and not scheduler.has_state(request.id):
            raise ApiError(404, f"state {request.id} is not registered here; /api/models/info lists the states "
                           "(the nil UUID means the default)", param="state", code="state_not_found")
        return request.id
    if request.id in {entry.id for entry in runtime.states} or request.id == NIL_STATE:
        raise bad_request(f"state.id {request.id} is taken by a configured state (or is the nil UUID); "
                          "send another id", "state")
    state = await asyncio.get_running_loop().run_in_executor(
        None, load_request_state, request, runtime.info, runtime.model_folder)
    await asyncio.wrap_future(scheduler.call(lambda engine: scheduler.register_state(request.id, state)))
    return request.id
