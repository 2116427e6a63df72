"""The aiohttp application: routes, CORS and errors, thin over the runtime's scheduler (spec/api.md).

Every generation streams; a non-streamed reply is the same events collected. Every failure a client can cause is a
4xx (or 503 while no model is loaded) with an OpenAI-style `{"error": {...}}` body.
"""
from __future__ import annotations

import asyncio
import json
import logging
import uuid

from aiohttp import web

from ai00ref.server import protocol
from ai00ref.server.chat import CHAT_FIELDS, chat_prompt
from ai00ref.server.errors import ApiError, bad_request
from ai00ref.server.generation import Generation, GenerationParams
from ai00ref.server.grammar.request import GRAMMAR_FIELDS, request_grammar
from ai00ref.server.observability import add_observability, observe
from ai00ref.server.openapi import Operation, add_docs_routes, array, documented, nullable, obj, sse_event, typed
from ai00ref.server.samplers import SAMPLER_FIELDS, build_sampler, make_rng, request_bias
from ai00ref.server.states import STATE, resolve_state
from ai00ref.server.tools import TOOL_FIELDS, ToolCallReader, call_id, history_messages, parse_tools, tool_grammar
from ai00ref.server.webui import load_static, static_response

log = logging.getLogger("ai00ref.server")
RUNTIME = web.AppKey("runtime", object)
STOPPING = web.AppKey("stopping", asyncio.Event)
STATIC = web.AppKey("static", object)  # the web UI's files (ai00ref/server/webui.py), or None
STATE_INTERVAL = 0.5  # seconds between /api/models/state events, as Ai00
OAI_PREFIXES = ("/api/oai", "/api/oai/v1", "/v1")
RETRY_AFTER_SECONDS = "1"
MAX_BODY_BYTES = 64 * 1024 * 1024  # a state sent by value is num_emb * (head_size + 2) * num_layer numbers
CORS_HEADERS = {"Access-Control-Allow-Origin": "*", "Access-Control-Allow-Methods": "GET, POST, DELETE, OPTIONS",
                "Access-Control-Allow-Headers": "*", "Access-Control-Expose-Headers": "X-Request-Id"}


def error_response(error: ApiError) -> web.Response:
    headers = {"Retry-After": RETRY_AFTER_SECONDS} if error.status in (429, 503) else {}
    return web.json_response(error.body(), status=error.status, headers=headers)


@web.middleware
async def errors_and_cors(request: web.Request, handler):
    if request.method == "OPTIONS":  # CORS preflight
        return web.Response(status=204, headers=CORS_HEADERS)
    try:
        response = await handler(request)
    except ApiError as error:
        response = error_response(error)
    except web.HTTPNotFound as error:  # no route: a GET may be the web UI's (API routes come first)
        response = error_response(ApiError(404, error.reason, code="not_found"))
        if request.method in ("GET", "HEAD"):  # HEAD: the same headers, no body
            response = await static_or_error(request)
    except web.HTTPException as error:  # aiohttp's own (405 method, ...): in the same JSON shape
        response = error_response(ApiError(error.status, error.reason, code=error.reason.lower().replace(" ", "_")))
    except ConnectionResetError:  # the client left mid-stream (a UI's Stop button): the job was cancelled with it
        log.info("%s %s: the client closed the connection", request.method, request.path)
        response = error_response(ApiError(499, "the client closed the connection", code="client_closed"))
    except Exception as error:  # noqa: BLE001 - logged; the client gets a JSON 500 and the server goes on
        log.exception("unhandled error in %s %s", request.method, request.path)
        response = error_response(ApiError(500, f"internal error: {type(error).__name__}: {error}"))
    if not response.prepared:
        response.headers.update(CORS_HEADERS)
    return response


async def static_or_error(request: web.Request) -> web.Response:
    try:
        return static_response(request.app[STATIC], request.path)
    except ApiError as error:
        return error_response(error)


def runtime_of(request: web.Request):
    runtime = request.app[RUNTIME]
    if runtime is None:
        raise ApiError(503, "no model is loaded; load one with /admin/models/load", code="no_model")
    return runtime


# ---- generation ----

def generation_params(body: dict, kind: str, runtime, state_id: str) -> GenerationParams:
    """Validate every field before anything is queued (spec/api.md §Requests)."""
    tokenizer = runtime.tokenizer
    if kind == "chat":
        text, model_text = chat_prompt(body.get("messages"), body.get("names"), body.get("template"))
        model_tokens = tokenizer.encode(model_text) if model_text else []
    else:
        text, model_tokens = protocol.joined_text(body, "prompt"), []
    bias = request_bias(body, runtime.info.n_vocab)
    return GenerationParams(
        prompt=tokenizer.encode(text) or [0], max_tokens=protocol.parse_max_tokens(body),
        stops=protocol.parse_stops(body), sampler=build_sampler(body, model_tokens), bias=bias,
        rng=make_rng(body.get("seed")), state_id=state_id,
        unusable=runtime.unusable)


async def generate(request: web.Request, kind: str) -> web.StreamResponse:
    runtime = runtime_of(request)
    body = protocol.parse_json_body(await request.read())
    stream = protocol.parse_stream(body)
    tools = parse_tools(body) if kind == "chat" else None
    if tools is not None:
        body = {**body, "messages": history_messages(body.get("messages"), tools)}
    params = generation_params(body, kind, runtime, await resolve_state(runtime, body))
    grammar = request_grammar(body)
    if tools is not None:
        if grammar is not None:
            raise bad_request("send tools or a grammar (bnf_schema, response_format), not both", "tools")
        grammar = (tool_grammar(tools), "tools")
    if grammar is not None:
        params.constraint = await runtime.grammars.constraint(*grammar)
    job = Generation(params, runtime.tokenizer, asyncio.get_running_loop())
    runtime.scheduler.submit(job)
    request_id = ("chatcmpl-" if kind == "chat" else "cmpl-") + uuid.uuid4().hex
    model = str(runtime.model_path)
    reader = ToolCallReader() if tools is not None else None
    if stream:
        return await stream_events(request, job, kind, request_id, model, reader)
    return await collect_events(job, kind, request_id, model, len(params.prompt), reader)


async def collect_events(job: Generation, kind: str, request_id: str, model: str, prompt_tokens: int,
                         reader: ToolCallReader | None = None):
    texts, reason = [], None
    async for event in job.events():
        if event[0] == "text":
            texts.append(event[1])
            if reader is not None:
                reader.feed(event[1])
        elif event[0] == "finish":
            reason = event[1]
        elif event[0] == "error":
            raise event[1]
    use = protocol.usage(prompt_tokens, job.generated, job.duration())
    if reader is not None and reader.mode == "call" and reader.name is not None:
        call = {"id": call_id(), "type": "function", "function": {"name": reader.name,
                                                                    "arguments": reader.arguments()}}
        return web.json_response(protocol.tool_call_response(request_id, model, call, tool_finish(reason), use))
    build = protocol.chat_response if kind == "chat" else protocol.completion_response
    return web.json_response(build(request_id, model, "".join(texts), reason, use))


def tool_finish(reason: str | None) -> str | None:
    """A call that ended with its grammar is OpenAI's "tool_calls"; one cut by max_tokens stays "length"."""
    return "tool_calls" if reason == "stop" else reason


def tool_call_deltas(items, call: dict) -> list[dict]:
    """ToolCallReader items as OpenAI stream deltas (the call's id and name first, then argument pieces)."""
    deltas = []
    for kind, value in items:
        if kind == "content":
            deltas.append({"content": value})
        elif kind == "call":
            deltas.append({"tool_calls": [{"index": 0, "id": call["id"], "type": "function",
                                           "function": {"name": value, "arguments": ""}}]})
        else:
            deltas.append({"tool_calls": [{"index": 0, "function": {"arguments": value}}]})
    return deltas


async def stream_events(request: web.Request, job: Generation, kind: str, request_id: str, model: str,
                        reader: ToolCallReader | None = None):
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **CORS_HEADERS})
    await response.prepare(request)
    first_content, call = True, {"id": call_id()}
    async for event in job.events():
        payloads = []
        if event[0] == "start" and kind == "chat":
            payloads.append(protocol.chat_chunk(request_id, model, {"role": "Assistant"}, None))
        elif event[0] == "text" and reader is not None:
            payloads += [protocol.chat_chunk(request_id, model, delta, None)
                         for delta in tool_call_deltas(reader.feed(event[1]), call)]
        elif event[0] == "text":
            text = event[1]
            if kind == "chat":
                text = text.lstrip() if first_content else text
                if text:
                    first_content = False
                    payloads.append(protocol.chat_chunk(request_id, model, {"content": text}, None))
            else:
                payloads.append(protocol.completion_chunk(request_id, model, text, None))
        elif event[0] == "finish":
            reason = event[1]
            if reader is not None and reader.mode == "call":
                payloads += [protocol.chat_chunk(request_id, model, delta, None)
                             for delta in tool_call_deltas(reader.finish(), call)]
                reason = tool_finish(reason)
            payloads.append(protocol.chat_chunk(request_id, model, {}, reason) if kind == "chat"
                            else protocol.completion_chunk(request_id, model, None, reason))
        elif event[0] == "error":
            payloads.append(event[1].body() if isinstance(event[1], ApiError) else ApiError(500, str(event[1])).body())
        for payload in payloads:
            await response.write(protocol.sse(payload))
    await response.write(protocol.sse("[DONE]"))
    await response.write_eof()
    return response


GENERATION_ERRORS = (404, 429, 500, 503)  # unknown state id, queue full, engine failure, no model
COMMON_FIELDS = {**protocol.GENERATION_FIELDS, **SAMPLER_FIELDS, **GRAMMAR_FIELDS, "state": STATE}


@documented(Operation(
    "Complete a prompt", "openai", request=obj({"prompt": protocol.PROMPT, **COMMON_FIELDS}),
    response=protocol.COMPLETION_RESPONSE, streams=True, errors=GENERATION_ERRORS,
    description="Ai00's completions: sampler fields at the top level or a sampler object, stop strings, a state, "
                "a grammar (bnf_schema or response_format). Chunks carry delta.content and OpenAI's text."))
async def completions(request: web.Request):
    return await generate(request, "completion")


@documented(Operation(
    "Answer a chat", "openai", request=obj({**CHAT_FIELDS, **COMMON_FIELDS, **TOOL_FIELDS}),
    response=protocol.CHAT_RESPONSE, streams=True, errors=GENERATION_ERRORS,
    description="Ai00's chat template over messages (roles system, user, assistant, observation or tool); tools "
                "and tool_choice as OpenAI's. Streams begin with a {role} delta."))
async def chat_completions(request: web.Request):
    return await generate(request, "chat")


# ---- model information ----

MODEL_LIST = obj({"object": typed("string"), "data": array(obj({"object": typed("string"), "id": typed("string"),
                                                               "owned_by": typed("string")}))},
                 required=("object", "data"))


@documented(Operation("The loaded model (an empty list without one)", "openai", response=MODEL_LIST))
async def models(request: web.Request):
    runtime = request.app[RUNTIME]
    data = [] if runtime is None else [{"object": "models", "id": runtime.model_path.stem, "owned_by": "ai00ref"}]
    return web.json_response({"object": "list", "data": data})


def model_info(info) -> dict:
    """Ai00's ModelInfo: version "V4".."V7", sizes, and `custom` (the low-rank sizes of v6/v7)."""
    return {"version": info.version.upper()[:2], "num_layer": info.n_layer, "num_emb": info.n_embd,
            "num_hidden": info.ffn_size, "num_vocab": info.n_vocab, "num_head": info.n_head, "custom": "None"}


def runtime_info(runtime) -> dict:
    """Ai00's `{reload, model, states}`, plus `status` (busy slots, waiting requests, tokens sampled so far):
    /api/models/info and /state."""
    scheduler = runtime.scheduler
    return {"reload": {"model_path": str(runtime.model_path), "backend": runtime.backend,
                       "max_batch": scheduler.max_batch, "token_chunk_size": scheduler.token_chunk_size},
            "model": model_info(runtime.info),
            "states": [{"id": s.id, "name": s.name} for s in runtime.states],
            "status": {"busy": scheduler.busy(), "waiting": scheduler.waiting_count(),
                       "generated": scheduler.metrics.generated()}}


NO_MODEL_INFO = {"reload": None, "model": None, "states": [], "status": None}
MODEL_INFO = obj({key: typed("integer") for key in ("num_layer", "num_emb", "num_hidden", "num_vocab", "num_head")}
                 | {"version": typed("string"), "custom": typed("string")})
RUNTIME_INFO = obj({
    "reload": nullable(obj({"model_path": typed("string"), "backend": typed("string"), "max_batch": typed("integer"),
                            "token_chunk_size": typed("integer")})),
    "model": nullable(MODEL_INFO),
    "states": array(obj({"id": typed("string"), "name": typed("string")}, required=("id", "name"))),
    "status": nullable(obj({"busy": typed("integer", "slots in use"), "waiting": typed("integer", "queued"),
                            "generated": typed("integer", "tokens sampled since the model was loaded")}))},
    required=("reload", "model", "states", "status"))


@documented(Operation("The loaded model, its states and the scheduler's status", "ai00", response=RUNTIME_INFO,
                      errors=(503,)))
async def models_info(request: web.Request):
    return web.json_response(runtime_info(runtime_of(request)))


@documented(Operation("The runtime info as server-sent events every 0.5 s", "ai00", media="text/event-stream",
                      response=sse_event("the /api/models/info object as a JSON string (encoded twice, as Ai00)")))
async def models_state(request: web.Request) -> web.StreamResponse:
    """SSE: the runtime info every STATE_INTERVAL seconds until the client leaves or the server stops. As Ai00's,
    each event's data is the JSON *encoded again as a JSON string* (a quirk its clients parse)."""
    response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache",
                                           **CORS_HEADERS})
    await response.prepare(request)
    stopping = request.app[STOPPING]
    while not stopping.is_set():
        runtime = request.app[RUNTIME]
        info = NO_MODEL_INFO if runtime is None else runtime_info(runtime)
        try:
            await response.write(protocol.sse(json.dumps(json.dumps(info))))  # a JSON string of JSON
        except (ConnectionResetError, asyncio.CancelledError):
            break
        try:
            await asyncio.wait_for(stopping.wait(), STATE_INTERVAL)
        except asyncio.TimeoutError:
            pass
    return response


ADAPTERS = {"ref": "NumPy reference engine (Ref)", "cpu": "Taichi x64 CPU (Cpu)", "vulkan": "Taichi GPU (Vulkan)",
            "cuda": "Taichi GPU (Cuda)"}


@documented(Operation("The engine the loaded model runs on", "ai00", response=array(typed("string"))))
async def adapters(request: web.Request):
    """Ai00's `["<adapter name> (<Backend>)"]`: here the engine the loaded model runs on (none without a model)."""
    runtime = request.app[RUNTIME]
    return web.json_response([] if runtime is None else [ADAPTERS.get(runtime.backend, runtime.backend)])


def make_app(runtime, config=None, assets_root=None) -> web.Application:
    """The application over a started runtime (or None: no model loaded, generation answers 503). With `config`,
    the admin, auth and file routes are added too (ai00ref/server/admin.py), sandboxed under `assets_root`."""
    from ai00ref.server.admin import add_admin_routes
    from ai00ref.server.extensions import add_extension_routes

    app = web.Application(middlewares=[observe, errors_and_cors], client_max_size=MAX_BODY_BYTES)
    app[RUNTIME] = runtime
    add_observability(app, lambda: app[RUNTIME])
    add_docs_routes(app)
    app[STOPPING] = asyncio.Event()
    app[STATIC] = load_static(config.web.path if config is not None and config.web is not None else None)
    for prefix in OAI_PREFIXES:
        app.router.add_get(f"{prefix}/models", models)
        app.router.add_post(f"{prefix}/completions", completions)
        app.router.add_post(f"{prefix}/chat/completions", chat_completions)
    app.router.add_get("/api/models/info", models_info)
    app.router.add_get("/api/models/state", models_state)
    app.router.add_get("/api/adapters", adapters)
    add_extension_routes(app, config.embed if config is not None else None)
    if config is not None:
        add_admin_routes(app, config, assets_root)

    async def shutdown(app: web.Application) -> None:
        app[STOPPING].set()  # ends the /api/models/state streams
        if app[RUNTIME] is not None:
            await asyncio.get_running_loop().run_in_executor(None, app[RUNTIME].close)

    app.on_shutdown.append(shutdown)
    return app
