"""Initial states: web-rwkv's layout both ways, and a request's `state` as an id, a value or a file
(ai00ref/server/states.py, spec/api.md §States), end to end on loopback against direct computations."""
from __future__ import annotations

import uuid

import numpy as np
import pytest
from hypothesis import given, strategies as st

import ai00ref
from ai00ref.model_info import ModelInfo
from ai00ref.ref.state import V4State, V5State, V7State
from ai00ref.server.app import make_app
from ai00ref.server.config import config_from_dict
from ai00ref.server.runtime import start_runtime
from ai00ref.server.scheduler import Scheduler
from ai00ref.server.states import state_from_ai00_layout, state_to_ai00_layout
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from test_server_api import ServerThread, call

N_LAYER, N_EMBD, HEAD_SIZE = 2, 32, 16
FLOAT32 = dict(rtol=1e-5, atol=1e-5)  # the server feeds 16-token chunks; float32 rounding differs from one pass
CONFIGURED_ID = "5a0bd6b0-0000-4000-8000-000000000001"
# ---- the state layout (hand-built states) ----

def tiny_info(version: str) -> ModelInfo:
    head_size = 4 if version == "v4" else 2
    return ModelInfo(version, version, n_layer=2, n_embd=4, n_head=4 // head_size, head_size=head_size, n_vocab=8,
                     ffn_size=8)


def numbered(shape, offset: float) -> np.ndarray:
    return (offset + np.arange(int(np.prod(shape)), dtype=np.float32)).reshape(shape)


@pytest.mark.parametrize("state_class", [V5State, V7State])
def test_matrix_state_layout_element_by_element(state_class):
    info = tiny_info("v7" if state_class is V7State else "v5")
    L, C, H, N = info.n_layer, info.n_embd, info.n_head, info.head_size
    state = state_class(att_x=numbered((1, L, C), 1000), wkv=numbered((1, L, H, N, N), 0),
                        ffn_x=numbered((1, L, C), 2000))
    flat, shape = state_to_ai00_layout(state, info)
    assert shape == [C, N + 2, L, 1] and flat.dtype == np.float32 and flat.size == C * (N + 2) * L

    def at(c, r, layer):  # web-rwkv order: the first index is the fastest
        return flat[(layer * (N + 2) + r) * C + c]

    for layer in range(L):
        for c in range(C):
            assert at(c, 0, layer) == state.att_x[0, layer, c]
            assert at(c, N + 1, layer) == state.ffn_x[0, layer, c]
        for h in range(H):
            for key in range(N):
                for value in range(N):
                    expected = (state.wkv[0, layer, h, value, key] if state_class is V7State
                                else state.wkv[0, layer, h, key, value])
                    assert at(h * N + value, 1 + key, layer) == expected


def test_v4_state_layout():
    info = tiny_info("v4")
    L, C = info.n_layer, info.n_embd
    fields = {name: numbered((1, L, C), 100 * k) for k, name in enumerate(("att_x", "aa", "bb", "pp", "ffn_x"))}
    flat, shape = state_to_ai00_layout(V4State(**fields), info)
    assert shape == [C, 5 * L, 1, 1]
    rows = flat.reshape(L, 5, C)
    for k, name in enumerate(("att_x", "aa", "bb", "pp", "ffn_x")):
        np.testing.assert_array_equal(rows[:, k], fields[name][0])


def random_state(state_class, info, seed: int):
    rng = np.random.default_rng(seed)
    L, C, H, N = info.n_layer, info.n_embd, info.n_head, info.head_size
    if state_class is V4State:
        return V4State(**{name: rng.standard_normal((1, L, C)).astype(np.float32)
                          for name in ("att_x", "aa", "bb", "pp", "ffn_x")})
    return state_class(att_x=rng.standard_normal((1, L, C)).astype(np.float32),
                       wkv=rng.standard_normal((1, L, H, N, N)).astype(np.float32),
                       ffn_x=rng.standard_normal((1, L, C)).astype(np.float32))


@given(st.sampled_from([("v4", V4State), ("v5", V5State), ("v6", V5State), ("v7", V7State)]),
       st.integers(0, 2 ** 32 - 1))
def test_the_layout_round_trips(version_and_class, seed):
    version, state_class = version_and_class
    info = tiny_info(version)
    state = random_state(state_class, info, seed)
    flat, shape = state_to_ai00_layout(state, info)
    back = state_from_ai00_layout(flat.tolist(), shape, info)
    assert type(back) is state_class
    for name, array in state.arrays().items():
        np.testing.assert_array_equal(getattr(back, name), array, err_msg=name)


@pytest.mark.parametrize("data, shape, message", [
    ([0.0] * 8, [4, 4, 2, 1], "needs"),  # too few numbers
    ([0.0] * 32, [4, 2, 4, 1], "does not fit"),  # the right count in the wrong shape
])
def test_a_value_that_does_not_fit_is_refused_with_the_reason(data, shape, message):
    with pytest.raises(ValueError, match=message):
        state_from_ai00_layout(data, shape, tiny_info("v5"))


def test_a_value_with_nan_is_refused():
    info = tiny_info("v5")
    flat, shape = state_to_ai00_layout(random_state(V5State, info, 0), info)
    flat[3] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        state_from_ai00_layout(flat.tolist(), shape, info)


def test_registered_request_states_are_bounded_and_drop_their_cache(tmp_path):
    path = tmp_path / "m.st"
    write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, n_vocab=64, head_size=16, seed=1), path)
    engine = ai00ref.load_model(path)
    scheduler = Scheduler(engine, max_batch=1, request_states=2)
    try:
        states = [engine.new_state(1) for _ in range(3)]
        ids = [str(uuid.UUID(int=k + 1)) for k in range(3)]
        scheduler.cache.insert(ids[0], [1, 2], states[0], np.zeros(64))
        for state_id, state in zip(ids, states):
            scheduler.call(lambda engine, i=state_id, s=state: scheduler.register_state(i, s)).result(10)
        assert not scheduler.has_state(ids[0]) and scheduler.has_state(ids[1]) and scheduler.has_state(ids[2])
        assert ids[0] not in scheduler.cache.entries  # the evicted id's cache is gone with it
        assert scheduler.start_state(ids[2]) is states[2]
    finally:
        scheduler.close()


# ---- end to end ----

@pytest.fixture(scope="module")
def server(tmp_path_factory):
    folder = tmp_path_factory.mktemp("models")
    path = folder / "tiny.st"
    write_random_model(RandomModelSpec("v7", n_layer=N_LAYER, n_embd=N_EMBD, n_vocab=65536, head_size=HEAD_SIZE,
                                       seed=7), path)
    model = ai00ref.load_model(path)
    configured = folder / "configured.state"
    ai00ref.save_state(model.forward([[11, 12, 13]], model.new_state(1))[1], model.info, configured)
    config = config_from_dict({"model": {"path": str(folder), "name": "tiny.st", "max_batch": 2,
                                         "token_chunk_size": 16}, "adapter": {"engine": "ref"},
                               "state": [{"path": str(configured), "id": CONFIGURED_ID}]})
    runtime = start_runtime(config)
    served = ServerThread(make_app(runtime))
    served.runtime, served.model, served.folder = runtime, model, folder
    yield served
    served.close()


def encode(server, text: str) -> list[int]:
    return server.runtime.tokenizer.encode(text) or [0]


def states_after(server, text: str, state) -> np.ndarray:
    status, body = call(server, "/api/oai/states", {"input": text, "state": state})
    assert status == 200, body
    return np.asarray(body["data"][0]["data"], np.float32)


def direct_layout(server, start, text: str) -> np.ndarray:
    _, state = server.model.forward([encode(server, text)], start)
    return state_to_ai00_layout(state, server.model.info)[0]


def test_a_state_sent_by_value_continues_where_it_was_taken(server):
    first = states_after(server, "The capital of France", None)
    shape = [N_EMBD, HEAD_SIZE + 2, N_LAYER, 1]
    state_id = str(uuid.uuid4())
    value = {"name": "france", "id": state_id, "data": first.tolist(), "shape": shape}
    got = states_after(server, " is Paris", value)
    start = state_from_ai00_layout(first, shape, server.model.info)
    np.testing.assert_allclose(got, direct_layout(server, start, " is Paris"), **FLOAT32)
    np.testing.assert_allclose(states_after(server, " is Paris", state_id), got, **FLOAT32)  # registered by id


def test_a_value_state_drives_a_completion(server):
    first = states_after(server, "Once upon a time", None)
    value = {"name": "story", "id": str(uuid.uuid4()), "data": first.tolist(),
             "shape": [N_EMBD, HEAD_SIZE + 2, N_LAYER, 1]}
    body = {"prompt": " there", "max_tokens": 5, "temperature": 0, "stop": None}
    status, by_value = call(server, "/api/oai/completions", {**body, "state": value})
    assert status == 200, by_value
    status, by_id = call(server, "/api/oai/completions", {**body, "state": value["id"]})
    assert status == 200 and by_id["choices"][0]["text"] == by_value["choices"][0]["text"]


def test_a_state_file_in_the_model_folder(server):
    start = server.model.forward([[5, 6, 7, 8]], server.model.new_state(1))[1]
    ai00ref.save_state(start, server.model.info, server.folder / "mine.state")
    got = states_after(server, "abc", {"name": "mine", "id": str(uuid.uuid4()), "path": "mine.state"})
    np.testing.assert_allclose(got, direct_layout(server, start, "abc"), **FLOAT32)


def test_a_configured_state_by_id(server):
    start = server.model.forward([[11, 12, 13]], server.model.new_state(1))[1]
    np.testing.assert_allclose(states_after(server, "abc", CONFIGURED_ID), direct_layout(server, start, "abc"),
                               **FLOAT32)


def test_the_nil_id_is_the_default_state(server):
    got = states_after(server, "abc", "00000000-0000-0000-0000-000000000000")
    np.testing.assert_allclose(got, direct_layout(server, server.model.new_state(1), "abc"), **FLOAT32)


@pytest.mark.parametrize("state, status, words", [
    ({"id": str(uuid.uuid4()), "path": "../outside.state"}, 404, ".."),
    ({"id": str(uuid.uuid4()), "path": "/etc/passwd"}, 404, "outside"),
    ({"id": str(uuid.uuid4()), "path": "missing.state"}, 404, "no file"),
    ({"id": str(uuid.uuid4()), "path": "tiny.st"}, 400, "state.path"),  # a model, not a state
    ({"id": str(uuid.uuid4()), "data": [0.0] * 10, "shape": [2, 5, 1, 1]}, 400, "does not fit"),
    ({"id": str(uuid.uuid4()), "data": "zeros", "shape": [1]}, 400, "data"),
    ({"id": "not-a-uuid", "path": "mine.state"}, 400, "UUID"),
    ({"id": CONFIGURED_ID, "path": "mine.state"}, 400, "configured"),
    (42, 400, "state"),
    (str(uuid.uuid4()), 404, "not registered"),  # Ai00 silently uses the default state
])
def test_bad_states_are_client_errors(server, state, status, words):
    got, body = call(server, "/api/oai/completions", {"prompt": "x", "max_tokens": 1, "state": state})
    assert got == status, body
    assert body["error"]["param"] == "state" and words in body["error"]["message"]
