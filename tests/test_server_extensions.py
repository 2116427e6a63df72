"""The extension routes (chooses, states, embeddings) end to end on loopback, checked against direct computations.

A real server runs over a tiny random RWKV-7 model (2 layers, C=32, head size 16, token_chunk_size 16 so that
prompts and choices span several chunks) and the reference engine; the same model is loaded again with
`ai00ref.load_model` and the expected numbers are computed from it directly, with a float64 softmax
(ai00-server.md §1.8, §1.9, §10.2).
"""
from __future__ import annotations

import base64
import json
import math
import urllib.request
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import ai00ref
from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.states import state_to_ai00_layout
from ai00ref.server.runtime import start_runtime
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread, call, sse_events

N_LAYER, N_EMBD, HEAD_SIZE = 2, 32, 16
LONG_PROMPT = "The quick brown fox jumps over the lazy dog, and then the dog, rather annoyed, chases the fox home."
FLOAT32 = dict(rtol=1e-5, atol=1e-5)  # the server feeds 16-token chunks; float32 rounding differs from one pass
CHOICES = [" Paris", " London, the capital of the United Kingdom, which is a very large city indeed", "", " x"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    path = folder / "tiny.st"
    write_random_model(RandomModelSpec("v7", n_layer=N_LAYER, n_embd=N_EMBD, n_vocab=65536, head_size=HEAD_SIZE,
                                       seed=7), path)
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": 2,
                                         "token_chunk_size": 16}, "adapter": {"engine": "ref"}})
    runtime = start_runtime(config)
    app = make_app(runtime)
    served = ServerThread(app)
    served.runtime = runtime
    served.model = ai00ref.load_model(path)
    yield served
    served.close()


# ---- direct computations with a separately loaded engine ----

def log_p(logits, token) -> float:
    x = np.asarray(logits, np.float64)
    p = np.exp(x - x.max())
    return math.log(p[token] / p.sum())


def direct_perplexity(model, prompt: list[int], choice: list[int]) -> float:
    logits, state = model.forward([prompt], model.new_state(1))
    total = log_p(logits[0], choice[0])
    if len(choice) > 1:
        rows, _ = model.forward([choice], state, full_output=True)
        total += sum(log_p(rows[0][i - 1], choice[i]) for i in range(1, len(choice)))
    return -total / len(choice)


def direct_unconditional(model, choice: list[int]) -> float:
    rows, _ = model.forward([[0] + choice], model.new_state(1), full_output=True)
    return -sum(log_p(rows[0][i], choice[i]) for i in range(len(choice))) / (len(choice) + 1)


def direct_state(model, tokens: list[int]):
    return model.forward([tokens], model.new_state(1))[1]


def encode(server, text: str) -> list[int]:
    return server.runtime.tokenizer.encode(text) or [0]


# ---- chooses ----

@pytest.mark.parametrize("prefix", ["/api/oai", "/api/oai/v1", "/v1"])
def test_chooses_matches_direct_perplexities(server, prefix):
    status, body = call(server, prefix + "/chooses", {"input": ["The capital of France is", ""],
                                                      "choices": CHOICES})
    assert status == 200, body
    assert body["object"] == "list" and body["model"].endswith("tiny.st")
    prompt = encode(server, "The capital of France is")
    for item in body["data"]:
        assert item["object"] == "choice" and item["choice"] == CHOICES[item["index"]]
        if CHOICES[item["index"]] == "":
            assert item["perplexity"] is None
            continue
        expected = direct_perplexity(server.model, prompt, encode(server, item["choice"]))
        assert item["perplexity"] == pytest.approx(expected, rel=1e-5)
    check_ranking(body["data"], len(CHOICES))


def check_ranking(data: list[dict], n: int) -> None:
    assert [item["rank"] for item in data] == list(range(n))
    assert sorted(item["index"] for item in data) == list(range(n))
    values = [math.inf if item["perplexity"] is None else item["perplexity"] for item in data]
    assert values == sorted(values)


def test_chooses_with_a_long_prompt_and_calibrate(server):
    status, body = call(server, "/api/oai/chooses", {"input": LONG_PROMPT, "choices": CHOICES, "calibrate": True})
    assert status == 200, body
    prompt = encode(server, LONG_PROMPT)
    assert len(prompt) > 16  # fed in several chunks
    for item in body["data"]:
        choice = encode(server, item["choice"]) if item["choice"] else []
        if not choice:
            assert item["perplexity"] is None
            continue
        expected = direct_perplexity(server.model, prompt, choice) - direct_unconditional(server.model, choice)
        assert item["perplexity"] == pytest.approx(expected, rel=1e-5, abs=1e-9)
    check_ranking(body["data"], len(CHOICES))


def test_chooses_with_an_empty_input_starts_from_token_zero(server):
    status, body = call(server, "/api/oai/chooses", {"input": "", "choices": [" a", " b"]})
    assert status == 200, body
    for item in body["data"]:
        expected = direct_perplexity(server.model, [0], encode(server, item["choice"]))
        assert item["perplexity"] == pytest.approx(expected, rel=1e-5)


def test_chooses_while_generations_stream(server):
    """A chooses request between the decoding steps of a streaming generation disturbs neither."""
    generation = {"prompt": "Once upon a time", "max_tokens": 80, "stop": None, "temperature": 0, "top_k": 0}
    _, alone = call(server, "/api/oai/completions", generation)
    request = urllib.request.Request(server.url + "/api/oai/completions",
                                     data=json.dumps({**generation, "stream": True}).encode(),
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=60) as response, ThreadPoolExecutor(2) as pool:
        first = response.readline().decode()  # the generation holds a slot now
        chosen = [pool.submit(call, server, "/api/oai/chooses", {"input": LONG_PROMPT, "choices": CHOICES[:2]})
                  for _ in range(2)]
        results = [future.result() for future in chosen]
        overlapped = server.runtime.scheduler.busy() == 1  # the generation was still decoding meanwhile
        text = first + response.read().decode()
    events = sse_events(text)
    assert events[-1] == "[DONE]"
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == alone["choices"][0]["text"] and overlapped
    prompt = encode(server, LONG_PROMPT)
    for status, body in results:
        assert status == 200, body
        for item in body["data"]:
            expected = direct_perplexity(server.model, prompt, encode(server, item["choice"]))
            assert item["perplexity"] == pytest.approx(expected, rel=1e-5)


# ---- states ----

@pytest.mark.parametrize("text", ["Hello", LONG_PROMPT, ""])
def test_states_is_the_state_after_the_input(server, text):
    status, body = call(server, "/api/oai/v1/states", {"input": text})
    assert status == 200, body
    (item,) = body["data"]
    assert body["object"] == "list" and item["object"] == "states" and item["index"] == 0
    assert item["shape"] == [N_EMBD, HEAD_SIZE + 2, N_LAYER, 1]
    assert body["usage"]["prompt"] == body["usage"]["total"] == 0
    got = np.asarray(item["data"], np.float32)
    state = direct_state(server.model, encode(server, text))
    expected, shape = state_to_ai00_layout(state, server.model.info)
    assert shape == item["shape"]
    np.testing.assert_allclose(got, expected, **FLOAT32)
    layers = got.reshape(N_LAYER, HEAD_SIZE + 2, N_EMBD)  # the documented shape, slowest index first
    np.testing.assert_allclose(layers[:, 0], state.att_x[0], **FLOAT32)
    np.testing.assert_allclose(layers[:, -1], state.ffn_x[0], **FLOAT32)


# ---- embeddings ----

def test_embeddings_are_the_att_shift_of_the_chosen_layer(server):
    texts = ["Hello world", LONG_PROMPT]
    status, body = call(server, "/v1/embeddings", {"input": texts, "model": "anything"})
    assert status == 200, body
    assert body["object"] == "list" and body["model"] == "tiny"
    assert [item["index"] for item in body["data"]] == [0, 1]
    n = sum(len(encode(server, t)) for t in texts)
    assert body["usage"] == {"prompt_tokens": n, "total_tokens": n}
    for text, item in zip(texts, body["data"]):
        assert item["object"] == "embedding" and len(item["embedding"]) == N_EMBD
        expected = direct_state(server.model, encode(server, text)).att_x[0, N_LAYER - 1]
        np.testing.assert_allclose(item["embedding"], expected, **FLOAT32)
    status, body = call(server, "/api/oai/embeddings", {"input": texts[0], "embed_layer": 0})
    expected = direct_state(server.model, encode(server, texts[0])).att_x[0, 0]
    np.testing.assert_allclose(body["data"][0]["embedding"], expected, **FLOAT32)


def test_embeddings_base64_is_little_endian_float32(server):
    request = {"input": "Hello world", "layer": 1}
    _, floats = call(server, "/v1/embeddings", request)
    status, encoded = call(server, "/v1/embeddings", {**request, "encoding_format": "base64"})
    assert status == 200, encoded
    decoded = np.frombuffer(base64.b64decode(encoded["data"][0]["embedding"]), "<f4")
    np.testing.assert_array_equal(decoded, np.asarray(floats["data"][0]["embedding"], np.float32))


def test_embeddings_of_token_ids(server):
    tokens = encode(server, "Hello world")
    _, by_text = call(server, "/v1/embeddings", {"input": "Hello world"})
    status, by_ids = call(server, "/v1/embeddings", {"input": [tokens, tokens]})
    assert status == 200, by_ids
    assert len(by_ids["data"]) == 2
    assert by_ids["data"][1]["embedding"] == by_text["data"][0]["embedding"]


# ---- errors ----

@pytest.mark.parametrize("route, body, param", [
    ("chooses", {"choices": [" a"]}, "input"),
    ("chooses", {"input": "x"}, "choices"),
    ("chooses", {"input": "x", "choices": []}, "choices"),
    ("chooses", {"input": "x", "choices": " a"}, "choices"),
    ("chooses", {"input": "x", "choices": [" a", 3]}, "choices"),
    ("chooses", {"input": "x", "choices": ["a"] * 65}, "choices"),
    ("chooses", {"input": "x", "choices": [" a"], "calibrate": "yes"}, "calibrate"),
    ("chooses", {"input": 5, "choices": [" a"]}, "input"),
    ("chooses", {"input": "x", "choices": [" a"], "state": "not-a-uuid"}, "state"),
    ("states", {}, "input"),
    ("states", {"input": [1, 2]}, "input"),
    ("embeddings", {"input": ""}, "input"),
    ("embeddings", {"input": []}, "input"),
    ("embeddings", {"input": ["ok", ""]}, "input"),
    ("embeddings", {"input": [[1, 70000]]}, "input"),
    ("embeddings", {}, "input"),
    ("embeddings", {"input": "x", "layer": N_LAYER}, "layer"),
    ("embeddings", {"input": "x", "layer": -1}, "layer"),
    ("embeddings", {"input": "x", "embed_layer": 1.5}, "embed_layer"),
    ("embeddings", {"input": "x", "encoding_format": "hex"}, "encoding_format"),
])
def test_bad_requests_are_400_naming_the_field(server, route, body, param):
    status, error = call(server, f"/api/oai/{route}", body)
    assert status == 400, error
    assert error["error"]["param"] == param and error["error"]["message"]


def test_no_model_answers_503():
    app = make_app(None)
    served = ServerThread(app)
    try:
        for route in ("chooses", "states", "embeddings"):
            status, error = call(served, f"/v1/{route}", {"input": "x", "choices": ["a"]})
            assert status == 503 and error["error"]["code"] == "no_model"
    finally:
        served.close()


# ---- embeds ----

def test_embeds_without_an_embed_section_is_400(server):
    status, body = call(server, "/api/oai/embeds", {"input": "hello"})
    assert status == 400 and "[embed]" in body["error"]["message"]


def test_embeds_with_an_embed_section_says_why_it_is_not_served(tmp_path):
    served = ServerThread(make_app(None, config_from_dict({"embed": {"model": "MultilingualE5Small"}}), tmp_path))
    try:
        status, body = call(served, "/api/oai/v1/embeds", {"input": "hello"})
        assert status == 501 and "model hub" in body["error"]["message"]
    finally:
        served.close()
