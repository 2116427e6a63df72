"""/health, /metrics and the request log (spec/api.md §11), on a served random model with the reference engine.

Prometheus' text is parsed with prometheus-client's own parser; every number is checked against what the requests
of the test must have produced (token counts, one cache hit, histogram counts), not merely present.
"""
from __future__ import annotations

import json
import logging
import time
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.observability import JsonLogFormatter
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model

from test_server_api import ServerThread, call

GREEDY = {"temperature": 0, "top_k": 0, "stop": None}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=65536, head_size=16, seed=3),
                       folder / "tiny.st")
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": 2,
                                         "token_chunk_size": 16}, "adapter": {"engine": "ref"}})
    served = ServerThread(make_app(start_runtime(config), config, folder.parent))
    yield served
    served.close()


def samples(server) -> dict:
    """{(sample name, frozenset(labels)): value} of one /metrics scrape."""
    with urllib.request.urlopen(server.url + "/metrics", timeout=30) as response:
        assert response.headers["Content-Type"].startswith("text/plain; version=")
        text = response.read().decode()
    return {(s.name, frozenset(s.labels.items())): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


def value(scrape: dict, name: str, **labels) -> float:
    return scrape.get((name, frozenset(labels.items())), 0.0)


def test_health_says_a_model_is_loaded(server):
    assert call(server, "/health") == (200, {"status": "ok", "model_loaded": True, "model": "tiny.st"})


def test_health_without_a_model():
    served = ServerThread(make_app(None))
    try:
        assert call(served, "/health") == (200, {"status": "ok", "model_loaded": False, "model": None})
        assert value(samples(served), "ai00_model_loaded") == 0
    finally:
        served.close()


def test_metrics_count_tokens_latencies_and_cache_hits(server):
    before = samples(server)
    prompt = "word " * 40  # over 32 tokens: its state is cached after the prefill
    for _ in range(2):  # the second request starts from the cached prompt
        status, body = call(server, "/v1/completions", {"prompt": prompt, "max_tokens": 3, **GREEDY})
        assert status == 200, body
    after = samples(server)
    for _ in range(100):  # the scheduler frees the slot just after the reply's last chunk: wait for that moment
        if value(after, "ai00_busy_slots") == 0:
            break
        time.sleep(0.02)
        after = samples(server)
    prompt_tokens = body["usage"]["prompt_tokens"]
    generated = 2 * body["usage"]["completion_tokens"]

    def grew(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert grew("ai00_prompt_tokens_total") == 2 * prompt_tokens
    assert grew("ai00_prefilled_tokens_total") == prompt_tokens  # the second prompt came from the cache
    assert grew("ai00_generated_tokens_total") == generated
    assert grew("ai00_prefix_cache_lookups_total") == 2 and grew("ai00_prefix_cache_hits_total") == 1
    assert grew("ai00_prefix_cache_hit_tokens_total") == prompt_tokens
    assert grew("ai00_time_to_first_token_seconds_count") == 2
    assert grew("ai00_inter_token_latency_seconds_count") == generated - 2
    assert grew("ai00_http_requests_total", method="POST", route="/v1/completions", status="200") == 2
    assert value(after, "ai00_model_loaded") == 1 and value(after, "ai00_slots") == 2
    assert value(after, "ai00_busy_slots") == 0 and value(after, "ai00_queue_length") == 0


def test_metrics_count_errors_by_route_and_status(server):
    before = samples(server)
    assert call(server, "/api/oai/chat/completions", {"messages": "not a list"})[0] == 400
    assert call(server, "/no/such/route")[0] == 404
    after = samples(server)
    assert value(after, "ai00_http_requests_total", method="POST", route="/api/oai/chat/completions",
                 status="400") - value(before, "ai00_http_requests_total", method="POST",
                                       route="/api/oai/chat/completions", status="400") == 1
    assert value(after, "ai00_http_requests_total", method="GET", route="unmatched", status="404") >= 1


def test_request_id_is_returned_and_accepted(server):
    request = urllib.request.Request(server.url + "/health", headers={"X-Request-Id": "client-id.42"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Request-Id"] == "client-id.42"
        assert response.headers["Access-Control-Expose-Headers"] == "X-Request-Id"  # a web page may read it
    with urllib.request.urlopen(server.url + "/health", timeout=30) as response:
        fresh = response.headers["X-Request-Id"]
    assert len(fresh) == 32 and fresh != "client-id.42"
    request = urllib.request.Request(server.url + "/health", headers={"X-Request-Id": "bad id\twith spaces"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["X-Request-Id"] != "bad id\twith spaces"  # not echoed: a fresh one


def test_a_stream_carries_the_request_id(server):
    request = urllib.request.Request(server.url + "/v1/completions", method="POST",
                                     data=json.dumps({"prompt": "Hi", "max_tokens": 2, "stream": True,
                                                      **GREEDY}).encode(),
                                     headers={"Content-Type": "application/json", "X-Request-Id": "stream-1"})
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.headers["Content-Type"] == "text/event-stream"
        assert response.headers["X-Request-Id"] == "stream-1"
        assert response.read().decode().endswith("data: [DONE]\n\n")


def test_one_structured_log_line_per_request(server, caplog):
    with caplog.at_level(logging.INFO, logger="ai00ref.access"):
        status, _ = call(server, "/v1/chat/completions", {"messages": [{"role": "user", "content": "Hi"}],
                                                          "max_tokens": 2, **GREEDY},
                         headers={"X-Request-Id": "log-me"})
    assert status == 200
    (record,) = [r for r in caplog.records if r.name == "ai00ref.access" and r.request_id == "log-me"]
    assert (record.method, record.route, record.path, record.status) == ("POST", "/v1/chat/completions",
                                                                         "/v1/chat/completions", 200)
    assert record.duration_ms > 0
    line = json.loads(JsonLogFormatter().format(record))
    assert {key: line[key] for key in ("request_id", "method", "route", "status", "level", "logger")} == {
        "request_id": "log-me", "method": "POST", "route": "/v1/chat/completions", "status": 200, "level": "INFO",
        "logger": "ai00ref.access"}
