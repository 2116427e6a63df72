"""The HTTP server end to end on loopback: routes, response shapes, SSE, errors, batching and the openai client.

A real aiohttp server runs in a background thread on a free port, over a small random RWKV-7 model (vocab 65536 so
the World tokenizer's ids fit) and the reference engine; requests are plain HTTP (urllib) or the `openai` client.
"""
from __future__ import annotations

import asyncio
import json
import threading
import time
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import pytest
from aiohttp import web

from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model

SLOTS = 4


class ServerThread:
    """An aiohttp app served on 127.0.0.1:<free port> by an event loop in its own thread."""

    def __init__(self, app: web.Application, ssl_context=None):
        self.loop = asyncio.new_event_loop()
        self.runner = web.AppRunner(app)
        self.loop.run_until_complete(self.runner.setup())
        site = web.TCPSite(self.runner, "127.0.0.1", 0, ssl_context=ssl_context)
        self.scheme = "https" if ssl_context else "http"
        self.loop.run_until_complete(site.start())
        self.port = site._server.sockets[0].getsockname()[1]
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    def close(self) -> None:
        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(30)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=7),
                       folder / "tiny.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": SLOTS,
                                         "token_chunk_size": 16}, "adapter": {"engine": "ref"}})
    runtime = start_runtime(config)
    served = ServerThread(make_app(runtime))
    served.runtime = runtime
    yield served
    served.close()


def call(server, path, body=None, method=None, raw: bytes | None = None, headers: dict | None = None):
    """(status, parsed JSON or raw text) of one request."""
    data = raw if raw is not None else (None if body is None else json.dumps(body).encode())
    request = urllib.request.Request(server.url + path, data=data, method=method or ("POST" if data else "GET"),
                                     headers={"Content-Type": "application/json", **(headers or {})})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            status, text = response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        status, text = error.code, error.read().decode()
    try:
        return status, json.loads(text)
    except json.JSONDecodeError:
        return status, text


def sse_events(text: str) -> list:
    """The data of each server-sent event, JSON-decoded except the final [DONE]."""
    events = []
    for block in text.split("\n\n"):
        if block.strip():
            assert block.startswith("data:"), block
            data = block[len("data:"):].strip()
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


GREEDY = {"temperature": 0, "top_k": 0}


# ---- routes and shapes ----

@pytest.mark.parametrize("prefix", ["/api/oai", "/api/oai/v1", "/v1"])
def test_models_on_every_prefix(server, prefix):
    status, body = call(server, prefix + "/models")
    assert status == 200 and body["data"] == [{"object": "models", "id": "tiny", "owned_by": "ai00ref"}]


def test_completion_shape_and_usage(server):
    status, body = call(server, "/api/oai/completions", {"prompt": "The capital of France is", "max_tokens": 5,
                                                         "stop": None, **GREEDY})
    assert status == 200, body
    assert body["object"] == "text_completion" and body["model"].endswith("tiny.st")
    assert body["id"].startswith("cmpl-") and isinstance(body["created"], int)
    (choice,) = body["choices"]
    assert choice["index"] == 0 and choice["finish_reason"] in ("stop", "length")
    use = body["usage"]
    assert use["prompt"] == use["prompt_tokens"] == len(server.runtime.tokenizer.encode("The capital of France is"))
    assert 1 <= use["completion"] == use["completion_tokens"] <= 5
    assert use["total"] == use["prompt"] + use["completion"] and set(use["duration"]) == {"secs", "nanos"}
    if choice["finish_reason"] == "length":
        assert use["completion"] == 5


def test_chat_non_stream_and_stream_agree(server):
    request = {"messages": [{"role": "user", "content": "Hi!"}], "max_tokens": 6, "stop": None, **GREEDY}
    status, whole = call(server, "/api/oai/chat/completions", request)
    assert status == 200, whole
    message = whole["choices"][0]["message"]
    assert message["role"] == "Assistant" and whole["object"] == "chat.completion"
    status, text = call(server, "/api/oai/chat/completions", {**request, "stream": True})
    events = sse_events(text)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "Assistant"}
    assert chunks[-1]["choices"][0]["delta"] == {} and chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")
    assert all(c["choices"][0]["finish_reason"] is None for c in chunks[:-1])
    streamed = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks[1:-1])
    assert streamed.strip() == message["content"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["choices"][0]["finish_reason"]


def test_completion_stream_chunks(server):
    status, text = call(server, "/v1/completions", {"prompt": "Once", "max_tokens": 4, "stop": None,
                                                    "stream": True, **GREEDY})
    events = sse_events(text)
    assert status == 200 and events[-1] == "[DONE]"
    chunks = events[:-1]
    assert all(c["object"] == "text_completion.chunk" for c in chunks)
    for c in chunks[:-1]:
        assert c["choices"][0]["delta"]["content"] == c["choices"][0]["text"]
    _, whole = call(server, "/v1/completions", {"prompt": "Once", "max_tokens": 4, "stop": None, **GREEDY})
    assert "".join(c["choices"][0]["text"] for c in chunks[:-1]) == whole["choices"][0]["text"]


def test_models_info(server):
    status, body = call(server, "/api/models/info")
    assert status == 200 and body["model"]["version"] == "V7" and body["model"]["num_layer"] == 1
    assert body["model"]["num_emb"] == 32 and body["model"]["num_vocab"] == 65536


def test_adapters_names_the_engine_as_ai00_does(server):
    assert call(server, "/api/adapters") == (200, ["NumPy reference engine (Ref)"])


def read_events(response, n: int) -> list:
    """The first `n` server-sent events' data (raw text) of an open streaming response."""
    events, block = [], b""
    while len(events) < n:
        line = response.readline()
        assert line, "the stream ended early"
        if line.strip():
            block += line
        elif block:
            assert block.startswith(b"data:")
            events.append(block[len(b"data:"):].strip().decode())
            block = b""
    return events


def wait_until_idle(server, seconds: float = 20.0) -> None:
    """Until the server reports no busy or waiting slot: an earlier test's abandoned stream may still be finishing
    (on a loaded machine, a moment after its client has gone)."""
    deadline = time.monotonic() + seconds
    while True:
        status = call(server, "/api/models/info")[1]["status"]
        if (status["busy"], status["waiting"]) == (0, 0):
            return
        assert time.monotonic() < deadline, f"the server stayed busy: {status}"
        time.sleep(0.05)


def test_models_state_streams_the_info_double_encoded_as_ai00(server):
    wait_until_idle(server)
    started = time.monotonic()
    with urllib.request.urlopen(server.url + "/api/models/state", timeout=10) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        events = read_events(response, 3)
    assert time.monotonic() - started >= 2 * 0.5 - 0.1  # one event each half second
    for data in events:
        info = json.loads(json.loads(data))  # a JSON string holding the JSON object
        assert info["model"]["version"] == "V7" and info["model"]["num_emb"] == 32
        status = info["status"]
        assert (status["busy"], status["waiting"]) == (0, 0) and isinstance(status["generated"], int)
    assert info == call(server, "/api/models/info")[1]


def test_models_info_counts_the_tokens_sampled(server):
    """`status.generated`: what the web UI turns into tokens per second."""
    before = call(server, "/api/models/info")[1]["status"]["generated"]
    status, body = call(server, "/v1/completions", {"prompt": "Hi", "max_tokens": 5, "stop": None, "seed": 1})
    assert status == 200
    assert call(server, "/api/models/info")[1]["status"]["generated"] - before == body["usage"]["completion_tokens"]


def test_shutdown_ends_the_state_stream(tmp_path):
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=7),
                       tmp_path / "tiny.st")
    config = config_from_dict({"model": {"path": str(tmp_path), "name": "tiny.st"}, "adapter": {"engine": "ref"}})
    served = ServerThread(make_app(start_runtime(config)))
    with urllib.request.urlopen(served.url + "/api/models/state", timeout=10) as response:
        read_events(response, 1)
        started = time.monotonic()
        served.close()
        assert time.monotonic() - started < 5
        response.read()  # the server ended the stream: reading to the end returns


# ---- batching ----

def test_greedy_output_is_the_same_alone_and_together(server):
    prompts = ["A", "The quick brown fox", "1, 2, 3,", "你好", "Hello there, how are"]
    bodies = [{"prompt": p, "max_tokens": 8, "stop": None, **GREEDY} for p in prompts]
    alone = [call(server, "/api/oai/completions", b)[1]["choices"][0]["text"] for b in bodies]
    with ThreadPoolExecutor(len(bodies)) as pool:
        together = list(pool.map(lambda b: call(server, "/api/oai/completions", b)[1]["choices"][0]["text"], bodies))
    assert together == alone


def test_many_concurrent_streams_all_complete(server):
    """64 streams against 4 slots: every one ends with a finish chunk and [DONE]; none is lost."""
    body = {"messages": [{"role": "user", "content": "Count"}], "max_tokens": 5, "stream": True, "stop": None}

    def one(i):
        status, text = call(server, "/api/oai/chat/completions", {**body, "seed": i})
        events = sse_events(text)
        return status, events[-1], events[-2]["choices"][0]["finish_reason"]

    with ThreadPoolExecutor(64) as pool:
        results = list(pool.map(one, range(64)))
    assert all(r == (200, "[DONE]", r[2]) and r[2] in ("stop", "length") for r in results), results
    assert server.runtime.scheduler.busy() == 0


def test_a_client_that_leaves_frees_its_slot(server):
    body = json.dumps({"prompt": "Go", "max_tokens": 100000, "stop": None, "stream": True}).encode()
    request = urllib.request.Request(server.url + "/api/oai/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    response = urllib.request.urlopen(request, timeout=60)
    response.readline()  # the first event arrived: the request holds a slot
    assert server.runtime.scheduler.busy() == 1
    response.close()
    deadline = time.time() + 20
    while server.runtime.scheduler.busy() and time.time() < deadline:
        time.sleep(0.05)
    assert server.runtime.scheduler.busy() == 0


# ---- errors ----

@pytest.mark.parametrize("path, body, status, param", [
    ("/api/oai/completions", {"prompt": "x", "max_tokens": -1}, 400, "max_tokens"),
    ("/api/oai/completions", {"prompt": "x", "max_tokens": 10 ** 12}, 400, "max_tokens"),
    ("/api/oai/completions", {"prompt": "x", "max_tokens": "5"}, 400, "max_tokens"),
    ("/api/oai/completions", {"prompt": 5}, 400, "prompt"),
    ("/api/oai/completions", {"prompt": "x", "stop": 3}, 400, "stop"),
    ("/api/oai/completions", {"prompt": "x", "stream": "yes"}, 400, "stream"),
    ("/api/oai/completions", {"prompt": "x", "state": "not-a-uuid"}, 400, "state"),
    ("/api/oai/completions", {"prompt": "x", "logit_bias": {"99999999": 1}}, 400, None),
    ("/api/oai/chat/completions", {"messages": [{"role": "wizard", "content": "x"}]}, 400, None),
    ("/api/oai/chat/completions", {"messages": [{"role": "user", "content": ["x"]}]}, 400, None),
    ("/api/oai/chat/completions", {"messages": [], "sampler": {"type": "Greedy"}}, 400, None),
])
def test_bad_requests_get_openai_errors(server, path, body, status, param):
    got, error = call(server, path, body)
    assert got == status, error
    assert set(error["error"]) == {"message", "type", "param", "code"} and error["error"]["message"]
    if param is not None:
        assert error["error"]["param"] == param


def test_malformed_json_and_unknown_routes(server):
    status, error = call(server, "/api/oai/completions", raw=b"{not json")
    assert status == 400 and error["error"]["code"] == "invalid_json"
    status, error = call(server, "/api/oai/completions", raw=b"[1, 2]")
    assert status == 400
    status, error = call(server, "/api/oai/nothing-here")
    assert status == 404 and "error" in error
    status, _ = call(server, "/api/oai/models")  # and the server is still serving
    assert status == 200


def test_no_model_answers_503():
    served = ServerThread(make_app(None))
    try:
        status, error = call(served, "/api/oai/chat/completions", {"messages": [{"role": "user", "content": "x"}]})
        assert status == 503 and error["error"]["code"] == "no_model"
        status, body = call(served, "/api/oai/models")
        assert status == 200 and body["data"] == []
    finally:
        served.close()


def test_cors_preflight_and_headers(server):
    request = urllib.request.Request(server.url + "/api/oai/chat/completions", method="OPTIONS")
    with urllib.request.urlopen(request, timeout=10) as response:
        assert response.status == 204 and response.headers["Access-Control-Allow-Origin"] == "*"
    with urllib.request.urlopen(server.url + "/api/oai/models", timeout=10) as response:
        assert response.headers["Access-Control-Allow-Origin"] == "*"


# ---- the openai client ----

def test_openai_client_chat_and_stream(server):
    openai = pytest.importorskip("openai")
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="none")
    reply = client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                           max_tokens=4, temperature=0, stop=None)
    assert isinstance(reply.choices[0].message.content, str) and reply.usage.completion_tokens <= 4
    pieces = [chunk.choices[0].delta.content or "" for chunk in
              client.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}],
                                             max_tokens=4, temperature=0, stop=None, stream=True)]
    assert "".join(pieces).strip() == reply.choices[0].message.content
    completion = client.completions.create(model="tiny", prompt="Hello", max_tokens=3, temperature=0)
    assert completion.choices[0].finish_reason in ("stop", "length")


def test_the_seed_readme_legacy_example_bodies(server):
    """What the seed README's openai 0.28 example sends (ChatCompletion/Completion.create with names, half_life,
    penalties and stop ['\\x00', '\\n\\n']) to {api_base}/chat/completions and /completions, api_base /api/oai."""
    params = {"model": "model", "max_tokens": 16, "half_life": 400, "top_p": 0.6, "temperature": 1,
              "presence_penalty": 0.3, "frequency_penalty": 0.3, "stop": ["\x00", "\n\n"]}
    messages = [{"role": "user", "content": "Hello"}]
    status, reply = call(server, "/api/oai/chat/completions", {
        **params, "messages": messages, "names": {"system": "System", "user": "User", "assistant": "Assistant"}})
    assert status == 200, reply
    assert isinstance(reply["choices"][0]["message"]["content"], str)
    status, reply = call(server, "/api/oai/completions", {**params, "prompt": "Hello"})
    assert status == 200 and isinstance(reply["choices"][0]["text"], str)
