"""The OpenAPI 3.1 document of the server, built from the routes themselves (spec/api.md §12).

Each handler carries its `Operation` (`@documented(...)`), written beside the code that parses its request; the
fields' schemas are constants beside the functions that parse them (protocol.py, samplers.py, chat.py, ...), built
from the same limits those functions check. `openapi_document(app)` walks the app's router, so a route is in the
document exactly when it is served; a route without an Operation appears with `x-undocumented: true` (a test
refuses that for the API's routes). `/api-docs/openapi.json` serves the document, `/api-docs` a page rendered from it.
"""
from __future__ import annotations

import dataclasses

from aiohttp import web

from ai00ref.server.docs_page import render_page

OPENAPI_VERSION = "3.1.0"
TITLE = "ai00ref: Ai00 Server in Python"
API_VERSION = "0.1.0"
ADMIN_AUTH = "adminToken"
ADMIN_QUERY = "adminTokenQuery"


# ---- JSON Schema pieces ----

def nullable(schema: dict) -> dict:
    """`schema` or null (a JSON null means "the default" for most request fields)."""
    return {"anyOf": [schema, {"type": "null"}]}


def obj(properties: dict, required: tuple[str, ...] = (), description: str = "", extra: bool = True) -> dict:
    """An object; `extra`: unknown keys are allowed (they are ignored, as Ai00 ignores them)."""
    schema = {"type": "object", "properties": properties}
    if required:
        schema["required"] = list(required)
    if not extra:
        schema["additionalProperties"] = False
    if description:
        schema["description"] = description
    return schema


def array(items: dict, description: str = "", **limits) -> dict:
    schema = {"type": "array", "items": items, **limits}
    return {**schema, "description": description} if description else schema


def typed(kind: str, description: str = "", **keywords) -> dict:
    """`{"type": kind, ...}` with a description."""
    schema = {"type": kind, **keywords}
    return {**schema, "description": description} if description else schema


def ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def sse_event(data: str) -> dict:
    """One server-sent event, as OpenAPI before 3.2 describes a text/event-stream (a schema per event)."""
    return obj({"data": typed("string", data), "event": typed("string"), "id": typed("string")}, required=("data",))


ERROR = obj({"error": obj({"message": typed("string"), "type": typed("string"),
                           "param": nullable(typed("string")), "code": nullable(typed("string"))},
                          required=("message", "type", "param", "code"))},
            required=("error",), description="Every error: OpenAI's shape (spec/api.md §6)")
STATUS_TEXT = {400: "Invalid request (the field is named in error.param)", 401: "No admin token",
               403: "Invalid admin token, or a path outside the permitted folders", 404: "Not found",
               409: "Conflict", 429: "Queue full (Retry-After: 1)", 500: "The engine failed",
               501: "Not implemented", 503: "No model is loaded (Retry-After: 1)"}


# ---- operations ----

@dataclasses.dataclass(frozen=True)
class Operation:
    """What the document says of one handler. `response`: the JSON Schema of its 200 body (`media` says its media
    type); `streams`: with `"stream": true` the 200 is server-sent events; `errors`: the other statuses it answers;
    `admin`: behind the JWT check (401/403 added)."""
    summary: str
    tag: str
    description: str = ""
    request: dict | None = None
    response: dict | None = None
    media: str = "application/json"
    streams: bool = False
    errors: tuple[int, ...] = ()
    admin: bool = False
    error_bodies: tuple[tuple[int, dict], ...] = ()  # (status, schema) where the body is not the Error object


def documented(operation: Operation):
    """Attach `operation` to a handler (functools.wraps keeps it on wrappers such as admin_only)."""
    def attach(handler):
        handler.api_operation = operation
        return handler
    return attach


def operation_of(handler) -> Operation | None:
    return getattr(handler, "api_operation", None)


def response_headers(status: int) -> dict:
    """Every response carries its request's id (ai00ref/server/observability.py); 429 and 503 say when to retry."""
    from ai00ref.server.observability import REQUEST_ID_HEADER

    headers = {REQUEST_ID_HEADER: {"required": True, "schema": typed("string"),
                                   "description": "the request's id: the client's, or a fresh one"}}
    if status in (429, 503):
        headers["Retry-After"] = {"required": True, "schema": typed("string"), "description": "seconds"}
    return headers


def responses(op: Operation) -> dict:
    content = {op.media: {"schema": op.response}} if op.response is not None else {op.media: {}}
    if op.streams:
        content["text/event-stream"] = {"schema": sse_event("a chunk as JSON, then [DONE] (spec/api.md §4)")}
    out = {"200": {"description": "OK", "headers": response_headers(200), "content": content}}
    statuses = set(op.errors) | ({400} if op.request is not None else set()) | ({401, 403} if op.admin else set())
    bodies = dict(op.error_bodies)
    for status in sorted(statuses | set(bodies)):
        out[str(status)] = {"description": STATUS_TEXT.get(status, "Error"), "headers": response_headers(status),
                            "content": {"application/json": {"schema": bodies.get(status, ref("Error"))}}}
    return out


def request_id_parameter() -> dict:
    from ai00ref.server.observability import REQUEST_ID

    return {"name": "X-Request-Id", "in": "header", "required": False,
            "schema": typed("string", pattern=REQUEST_ID.pattern),
            "description": "the client's id for the request, returned in the response (another value is replaced)"}


def operation_object(method: str, op: Operation | None, path: str) -> dict:
    if op is None:
        return {"summary": f"{method} {path}", "x-undocumented": True, "responses": {"200": {"description": "OK"}}}
    out = {"summary": op.summary, "tags": [op.tag], "operationId": operation_id(method, path),
           "parameters": [request_id_parameter()], "responses": responses(op)}
    if op.description:
        out["description"] = op.description
    if op.request is not None:
        out["requestBody"] = {"required": True, "content": {"application/json": {"schema": op.request}}}
    if op.admin:
        out["security"] = [{ADMIN_AUTH: []}, {ADMIN_QUERY: []}]
    return out


def operation_id(method: str, path: str) -> str:
    words = "_".join(part.strip("{}") for part in path.strip("/").split("/") if part)
    return f"{method.lower()}_{words.replace('-', '_').replace('.', '_')}"


def app_paths(app: web.Application) -> dict:
    """{path: {method: operation object}} for every route of the app's router (HEAD beside GET left out)."""
    paths: dict[str, dict] = {}
    for route in app.router.routes():
        path = route.resource.canonical if route.resource is not None else None
        if path is None or route.method in ("HEAD", "*"):
            continue
        paths.setdefault(path, {})[route.method.lower()] = operation_object(route.method, operation_of(route.handler),
                                                                            path)
    return paths


def openapi_document(app: web.Application) -> dict:
    return {"openapi": OPENAPI_VERSION,
            "info": {"title": TITLE, "version": API_VERSION,
                     "description": "Ai00's API (OpenAI-compatible routes under /api/oai, /api/oai/v1 and /v1, "
                                    "Ai00's extensions, management and admin routes) and this server's own "
                                    "(/health, /metrics). Built from the handlers' declarations (spec/api.md)."},
            "paths": app_paths(app),
            "components": {"schemas": {"Error": ERROR},
                           "securitySchemes": {
                               ADMIN_AUTH: {"type": "http", "scheme": "bearer", "bearerFormat": "JWT",
                                            "description": "from POST /api/auth/exchange (also in "
                                                           "Proxy-Authorization); not needed with "
                                                           "[listen].force_pass"},
                               ADMIN_QUERY: {"type": "apiKey", "in": "query", "name": "admin_token",
                                             "description": "the same JWT as ?admin_token="}}}}


# ---- the routes ----

DOCUMENT = web.AppKey("openapi_document", dict)  # {"document": ...} once built


def cached_document(app: web.Application) -> dict:
    """Built once, at the first request: the router is frozen by then."""
    cache = app[DOCUMENT]
    if "document" not in cache:
        cache["document"] = openapi_document(app)
    return cache["document"]


@documented(Operation("The OpenAPI document of this server", "docs", response=typed("object")))
async def openapi_json(request: web.Request) -> web.Response:
    return web.json_response(cached_document(request.app))


@documented(Operation("This page: the OpenAPI document as HTML", "docs", media="text/html"))
async def api_docs_page(request: web.Request) -> web.Response:
    return web.Response(text=render_page(cached_document(request.app)), content_type="text/html")


def add_docs_routes(app: web.Application) -> None:
    app[DOCUMENT] = {}
    app.router.add_get("/api-docs/openapi.json", openapi_json)
    app.router.add_get("/api-docs", api_docs_page)
