"""Request ids, one structured log line per request, `/health` and `/metrics` (spec/api.md §11).

Every request gets an id: the client's `X-Request-Id` when it is a sane token (1-128 of letters, digits and
`._:-`), else a fresh one; it comes back in the response's `X-Request-Id` (streams too) and in the request's log
line, which the logger `ai00ref.access` writes with the fields `request_id`, `method`, `route` (the route's
template), `path`, `status` and `duration_ms` as record attributes; `JsonLogFormatter` writes records as one JSON
object a line (`serve --log-format json`).
"""
from __future__ import annotations

import json
import logging
import re
import time
import uuid

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from ai00ref.server.metrics import app_registry
from ai00ref.server.openapi import Operation, documented, obj, typed

access_log = logging.getLogger("ai00ref.access")
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,128}$")
METRICS = web.AppKey("metrics", object)  # (CollectorRegistry, HttpMetrics)
# aiohttp >= 3.14 wants typed request keys; older ones (setup.cfg allows 3.9) take the string
REQUEST_ID_KEY = web.RequestKey("request_id", str) if hasattr(web, "RequestKey") else "request_id"
ACCESS_FIELDS = ("request_id", "method", "route", "path", "status", "duration_ms")


def request_id_of(request: web.Request) -> str:
    sent = request.headers.get(REQUEST_ID_HEADER, "")
    return sent if REQUEST_ID.match(sent) else uuid.uuid4().hex


def route_of(request: web.Request) -> str:
    """The matched route's template (bounded label values), or "unmatched" (404s, the web UI's files)."""
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler):
    """The outermost middleware (the errors middleware inside it has turned failures into responses): gives the
    request its id, then counts and logs the response."""
    started = time.perf_counter()
    request[REQUEST_ID_KEY] = request_id_of(request)
    response = await handler(request)
    seconds = time.perf_counter() - started
    route = route_of(request)
    request.app[METRICS][1].observe(request.method, route, response.status, seconds)
    fields = {"request_id": request[REQUEST_ID_KEY], "method": request.method, "route": route, "path": request.path,
              "status": response.status, "duration_ms": round(seconds * 1000, 2)}
    access_log.info("%s %s %d %.1fms id=%s", request.method, request.path, response.status, seconds * 1000,
                    request[REQUEST_ID_KEY], extra=fields)
    return response


async def add_request_id(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every response, streamed ones too, carries the request's id."""
    if REQUEST_ID_KEY in request:
        response.headers[REQUEST_ID_HEADER] = request[REQUEST_ID_KEY]


# ---- routes ----

HEALTH = obj({"status": typed("string", enum=["ok"]), "model_loaded": typed("boolean"),
              "model": {"anyOf": [typed("string"), typed("null")], "description": "the loaded model's file name"}},
             required=("status", "model_loaded", "model"))


@documented(Operation("Liveness, and whether a model is loaded", "observability",
                      description="Always 200 while the server runs; model_loaded is false until a model loads "
                                  "(generation answers 503 then).", response=HEALTH))
async def health(request: web.Request) -> web.Response:
    from ai00ref.server.app import RUNTIME

    runtime = request.app[RUNTIME]
    return web.json_response({"status": "ok", "model_loaded": runtime is not None,
                              "model": None if runtime is None else runtime.model_path.name})


@documented(Operation("Prometheus metrics (text format)", "observability",
                      description="Requests by route and status, queue length, busy slots, prompt and generated "
                                  "tokens, time to first token and inter-token latency, prefix-cache hits "
                                  "(spec/api.md §11).", response=typed("string"), media="text/plain"))
async def metrics(request: web.Request) -> web.Response:
    registry = request.app[METRICS][0]
    return web.Response(body=generate_latest(registry), headers={"Content-Type": CONTENT_TYPE_LATEST})


def add_observability(app: web.Application, current_runtime) -> None:
    """Metrics registry, request ids and the two routes. `current_runtime()`: the loaded runtime or None."""
    app[METRICS] = app_registry(current_runtime)
    app.on_response_prepare.append(add_request_id)
    app.router.add_get("/health", health)
    app.router.add_get("/metrics", metrics)


# ---- structured logs ----

class JsonLogFormatter(logging.Formatter):
    """One JSON object a line: time, level, logger, message, and the access fields when the record has them."""

    def format(self, record: logging.LogRecord) -> str:
        line = {"time": self.formatTime(record), "level": record.levelname, "logger": record.name,
                "message": record.getMessage()}
        line.update({name: getattr(record, name) for name in ACCESS_FIELDS if hasattr(record, name)})
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, ensure_ascii=False)
