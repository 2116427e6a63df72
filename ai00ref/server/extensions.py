"""Ai00's extension routes `chooses` and `states`, and an OpenAI-shaped `embeddings` (ai00-server.md §1.8, §1.9, §9).

Every route runs its own forward passes through `Scheduler.call`, the one safe way onto the engine: the passes run
on the inference thread between two scheduler steps, a chunk of at most `token_chunk_size` tokens per call, so
streaming generations go on between the chunks (§8). Between calls a handler holds only *host* states (a Taichi
state is brought back inside the call), so device memory is made and freed on the inference thread alone.

Decisions, where Ai00 leaves room:
- `chooses`: an empty choice's perplexity is +inf in Ai00 (§1.8 step 3); JSON has no infinity, so it is sent as
  `null` (and sorts last, as +inf does). The prefix cache is not consulted (it would only save time).
- `states`: the layout is web-rwkv's (§10.2), see ai00ref/server/states.py; v4 uses web-rwkv's v4 layout.
- `embeddings`: OpenAI's batch semantics (a list is one vector per string, not one joined text), each vector Ai00
  v0.5's: the att token-shift of layer `layer` after the input, i.e. the ln1-normalized last token at that layer,
  `num_emb` floats, not normalized (§1.9 legacy, §9). It is *not* a trained embedding model. Ai00 v0.5 returned the
  whole state for `layer >= num_layer`; here that is a 400.
"""
from __future__ import annotations

import asyncio
import base64
import functools
import math

import numpy as np
from aiohttp import web

from ai00ref.server import protocol
from ai00ref.server.app import OAI_PREFIXES, runtime_of
from ai00ref.server.errors import ApiError, bad_request
from ai00ref.server.openapi import Operation, array, documented, nullable, obj, typed
from ai00ref.server.states import STATE, resolve_state, state_to_ai00_layout

MAX_CHOICES = 64
MAX_EMBEDDING_INPUTS = 2048  # OpenAI's limit on inputs per request
ERRORS = (404, 500, 503)  # an unknown state id, an engine failure, no model
INPUT = {**protocol.STRINGS, "description": "a string, or a list of strings joined with \"\""}


# ---- engine access: forward passes on the inference thread, a chunk per call ----

async def on_engine(runtime, fn):
    """`fn(engine)` on the inference thread, between two scheduler steps."""
    return await asyncio.wrap_future(runtime.scheduler.call(fn))


async def initial_state(runtime, state_id: str):
    """The batch-1 host state a request with `state_id` starts from (made on the inference thread)."""
    return await on_engine(runtime, lambda engine: runtime.scheduler.start_state(state_id))


def ignore_logits(logits, start) -> None:
    return None


def host_state(state):
    return state.to_host() if hasattr(state, "to_host") else state


def forward_chunk(engine, state, chunk, start, full_output, owned, reduce):
    """One chunk: forward, `reduce(logits, start)` here on the inference thread, and the new state as a host state.
    `owned`: the state is this request's own copy and may be updated in place (never a registered initial state)."""
    logits, state = engine.forward([chunk], state, full_output=full_output, inplace=owned)
    return reduce(logits[0], start), host_state(state)


async def feed(runtime, state, tokens: list[int], full_output: bool, reduce) -> tuple[list, object]:
    """Feed `tokens` from `state` (left as it is), a chunk of token_chunk_size per scheduler call.

    `reduce(logits, start)` sees each chunk's logits, (V,) after its last token or with `full_output` (T, V)
    after each of its tokens, `start` being the chunk's offset in `tokens`. Returns its results and the state after.
    """
    size, results = runtime.scheduler.token_chunk_size, []
    for start in range(0, len(tokens), size):
        step = functools.partial(forward_chunk, state=state, chunk=tokens[start:start + size], start=start,
                                 full_output=full_output, owned=start > 0, reduce=reduce)
        result, state = await on_engine(runtime, step)
        results.append(result)
    return results, state


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """ln softmax over the last axis, in float64 (Ai00's softmax then ln, without underflow to -inf)."""
    x = np.asarray(logits, np.float64)
    top = x.max(axis=-1, keepdims=True)
    return x - top - np.log(np.exp(x - top).sum(axis=-1, keepdims=True))


async def run_prompt(runtime, state, tokens: list[int]) -> tuple[np.ndarray, object]:
    """(ln p of the next token (V,), the host state) after the prompt."""
    results, state = await feed(runtime, state, tokens, False, lambda logits, start: logits)
    return log_softmax(results[-1]), state


async def continuation_log_prob(runtime, state, tokens: list[int]) -> float:
    """Σ over i ≥ 1 of ln p(tokens[i] | tokens[:i]) from `state`: `tokens[:-1]` fed with full logits."""
    if len(tokens) < 2:
        return 0.0
    targets = np.asarray(tokens[1:])

    def picked(rows: np.ndarray, start: int) -> float:  # rows (T, V): the logits after tokens[start + t]
        return float(log_softmax(rows)[np.arange(len(rows)), targets[start:start + len(rows)]].sum())

    results, _ = await feed(runtime, state, tokens[:-1], True, picked)
    return sum(results)


# ---- chooses (§1.8) ----

async def choice_perplexities(runtime, prompt: list[int], choices: list[list[int]], state_id: str,
                              calibrate: bool) -> list[float]:
    """Mean NLL in nats of each choice after the prompt; +inf for an empty one; with `calibrate`, minus the
    choice's own value from the initial state over [0] + choice, whose denominator is n + 1 (Ai00's)."""
    start = await initial_state(runtime, state_id)
    head, after_prompt = await run_prompt(runtime, start, prompt)
    perplexities = []
    for tokens in choices:
        if not tokens:
            perplexities.append(math.inf)
            continue
        total = head[tokens[0]] + await continuation_log_prob(runtime, after_prompt, tokens)
        perplexity = -total / len(tokens)
        if calibrate:
            perplexity += await continuation_log_prob(runtime, start, [0] + tokens) / (len(tokens) + 1)
        perplexities.append(float(perplexity))
    return perplexities


def parse_required_input(body: dict) -> str:
    if body.get("input") is None:
        raise bad_request("input is required: a string or a list of strings", "input")
    return protocol.joined_text(body, "input")


def parse_choices(body: dict) -> list[str]:
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not all(isinstance(c, str) for c in choices):
        raise bad_request("choices must be a non-empty list of strings", "choices")
    if len(choices) > MAX_CHOICES:
        raise bad_request(f"at most {MAX_CHOICES} choices", "choices")
    return choices


def parse_calibrate(body: dict) -> bool:
    return protocol.parse_bool(body, "calibrate")


def json_float(value: float) -> float | None:
    """JSON has no inf or NaN: those are sent as null."""
    return value if math.isfinite(value) else None


def ranked_choices(choices: list[str], perplexities: list[float]) -> list[dict]:
    """Sorted ascending (NaN last, as Rust's total_cmp); `rank` the sorted position, `index` the request's."""
    order = sorted(range(len(choices)), key=lambda i: (math.isnan(perplexities[i]), perplexities[i]))
    return [{"object": "choice", "index": i, "rank": rank, "choice": choices[i],
             "perplexity": json_float(perplexities[i])} for rank, i in enumerate(order)]


CHOOSES_REQUEST = obj({"input": INPUT, "choices": array(typed("string"), minItems=1, maxItems=MAX_CHOICES),
                       "calibrate": protocol.BOOLEAN, "state": STATE}, required=("input", "choices"))
CHOOSES_RESPONSE = obj({"object": typed("string"), "model": typed("string"), "data": array(obj(
    {"object": typed("string"), "index": typed("integer"), "rank": typed("integer"), "choice": typed("string"),
     "perplexity": nullable(typed("number", "mean NLL in nats; null for an empty choice"))}))},
    required=("object", "data"))


@documented(Operation("Rank choices by perplexity after the input", "ai00", request=CHOOSES_REQUEST,
                      response=CHOOSES_RESPONSE, errors=ERRORS))
async def chooses(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    body = protocol.parse_json_body(await request.read())
    prompt = runtime.tokenizer.encode(parse_required_input(body)) or [0]
    choices, calibrate = parse_choices(body), parse_calibrate(body)
    state_id = await resolve_state(runtime, body)
    tokenized = [runtime.tokenizer.encode(choice) for choice in choices]
    perplexities = await choice_perplexities(runtime, prompt, tokenized, state_id, calibrate)
    return web.json_response({"object": "list", "model": str(runtime.model_path),
                              "data": ranked_choices(choices, perplexities)})


# ---- states (§1.9) ----

STATES_RESPONSE = obj({"object": typed("string"), "model": typed("string"), "data": array(obj(
    {"object": typed("string"), "index": typed("integer"), "data": array(typed("number")),
     "shape": array(typed("integer"))})), "usage": protocol.USAGE}, required=("object", "data"))


@documented(Operation("The state after the input, in web-rwkv's layout", "ai00",
                      request=obj({"input": INPUT, "state": STATE}, required=("input",)), response=STATES_RESPONSE,
                      errors=ERRORS))
async def states(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    body = protocol.parse_json_body(await request.read())
    prompt = runtime.tokenizer.encode(parse_required_input(body)) or [0]
    state_id = await resolve_state(runtime, body)
    _, state = await feed(runtime, await initial_state(runtime, state_id), prompt, False, ignore_logits)
    data, shape = state_to_ai00_layout(state, runtime.info)
    return web.json_response({"object": "list", "model": str(runtime.model_path),
                              "data": [{"object": "states", "index": 0, "data": data.tolist(), "shape": shape}],
                              "usage": protocol.usage(0, 0, 0.0)})  # always zero, as Ai00's


# ---- embeddings (§1.9 legacy v0.5, §9) ----

def parse_embedding_inputs(body: dict, tokenizer, n_vocab: int) -> list[list[int]]:
    """OpenAI's `input`: a string, a list of strings, a list of token ids, or a list of such lists; each is one
    embedding. Token ids are RWKV ids. Empty inputs are refused."""
    value = body.get("input")
    if isinstance(value, str) or (isinstance(value, list) and value and all(protocol.is_int(t) for t in value)):
        value = [value]
    if not isinstance(value, list) or not value:
        raise bad_request("input must be a non-empty string, a list of strings or a list of token lists", "input")
    if len(value) > MAX_EMBEDDING_INPUTS:
        raise bad_request(f"at most {MAX_EMBEDDING_INPUTS} inputs", "input")
    return [embedding_tokens(item, tokenizer, n_vocab) for item in value]


def embedding_tokens(item, tokenizer, n_vocab: int) -> list[int]:
    if isinstance(item, str):
        tokens = tokenizer.encode(item)
    elif isinstance(item, list) and all(protocol.is_int(t) and 0 <= t < n_vocab for t in item):
        tokens = item
    else:
        raise bad_request(f"each input must be a string or a list of token ids in [0, {n_vocab})", "input")
    if not tokens:
        raise bad_request("an input is empty", "input")
    return tokens


def parse_layer(body: dict, n_layer: int) -> int:
    """`layer` (Ai00 v0.5's alias `embed_layer`): 0 .. n_layer - 1, default the last layer."""
    name = "layer" if body.get("layer") is not None else "embed_layer"
    value = body.get(name)
    if value is None:
        return n_layer - 1
    if not protocol.is_int(value) or not 0 <= value < n_layer:
        raise bad_request(f"{name} must be an integer from 0 to {n_layer - 1}, got {value!r}", name)
    return value


def parse_encoding_format(body: dict) -> str:
    value = body.get("encoding_format") or "float"
    if value not in ("float", "base64"):
        raise bad_request("encoding_format must be \"float\" or \"base64\"", "encoding_format")
    return value


def encode_vector(vector: np.ndarray, encoding_format: str):
    """A list of floats, or base64 of the little-endian float32 bytes, as OpenAI sends them."""
    if encoding_format == "base64":
        return base64.b64encode(np.asarray(vector, "<f4").tobytes()).decode("ascii")
    return np.asarray(vector, np.float32).tolist()


async def embed(runtime, tokens: list[int], state_id: str, layer: int) -> np.ndarray:
    """The att token-shift of `layer` after `tokens`: (num_emb,)."""
    _, state = await feed(runtime, await initial_state(runtime, state_id), tokens, False, ignore_logits)
    return state.att_x[0, layer]


TOKEN_ID = typed("integer", minimum=0)
EMBEDDINGS_REQUEST = obj({
    "input": {"anyOf": [typed("string", minLength=1), array(typed("string", minLength=1), minItems=1),
                        array(TOKEN_ID, minItems=1), array(array(TOKEN_ID, minItems=1), minItems=1)],
              "description": f"one vector per string or token list (at most {MAX_EMBEDDING_INPUTS}); token ids "
                             "below the model's vocabulary size"},
    "layer": nullable(typed("integer", "the layer (default the last)", minimum=0)),
    "embed_layer": nullable(typed("integer", "Ai00 v0.5's alias of layer", minimum=0)),
    "encoding_format": nullable(typed("string", enum=["float", "base64"])), "state": STATE}, required=("input",))
EMBEDDINGS_RESPONSE = obj({"object": typed("string"), "model": typed("string"), "data": array(obj(
    {"object": typed("string"), "index": typed("integer"),
     "embedding": {"anyOf": [array(typed("number")), typed("string")]}})),
    "usage": obj({"prompt_tokens": typed("integer"), "total_tokens": typed("integer")})}, required=("object", "data"))


@documented(Operation("The att token-shift of a layer after each input (not a trained embedding model)", "ai00",
                      request=EMBEDDINGS_REQUEST, response=EMBEDDINGS_RESPONSE, errors=ERRORS))
async def embeddings(request: web.Request) -> web.Response:
    runtime = runtime_of(request)
    body = protocol.parse_json_body(await request.read())
    inputs = parse_embedding_inputs(body, runtime.tokenizer, runtime.info.n_vocab)
    layer, encoding_format = parse_layer(body, runtime.info.n_layer), parse_encoding_format(body)
    state_id = await resolve_state(runtime, body)
    data = []
    for index, tokens in enumerate(inputs):
        vector = await embed(runtime, tokens, state_id, layer)
        data.append({"object": "embedding", "index": index, "embedding": encode_vector(vector, encoding_format)})
    n = sum(len(tokens) for tokens in inputs)
    return web.json_response({"object": "list", "data": data, "model": runtime.model_path.stem,
                              "usage": {"prompt_tokens": n, "total_tokens": n}})


# ---- embeds (§1.10) ----

def embeds_route(embed_config):
    """POST {prefix}/embeds: Ai00's third-party embedding model (fastembed, downloaded from a model hub at start).
    Without `[embed]` it is Ai00's 400. With it, 501: nothing here fetches models from a hub, and no embedding model is
    bundled; `/embeddings` gives the RWKV model's own vectors."""

    @documented(Operation("Ai00's third-party embedding model: 400 without [embed], 501 with it", "ai00",
                          request=typed("object"), errors=(501,)))
    async def embeds(request: web.Request) -> web.Response:
        if embed_config is None:
            raise bad_request("/embeds needs an [embed] section in the config (a third-party embedding model); "
                              "use /embeddings for the loaded RWKV model's vectors")
        raise ApiError(501, f"not implemented: the embedding model {embed_config.model!r} would be downloaded from "
                       f"{embed_config.endpoint}, and this server fetches nothing from a model hub; use /embeddings",
                       code="not_implemented")

    return embeds


def add_extension_routes(app: web.Application, embed_config=None) -> None:
    """POST {prefix}/chooses, /states, /embeddings and /embeds under every OpenAI prefix."""
    embeds = embeds_route(embed_config)
    for prefix in OAI_PREFIXES:
        app.router.add_post(f"{prefix}/chooses", chooses)
        app.router.add_post(f"{prefix}/states", states)
        app.router.add_post(f"{prefix}/embeddings", embeddings)
        app.router.add_post(f"{prefix}/embeds", embeds)
