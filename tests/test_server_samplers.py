"""Tests of ai00ref.server.samplers against hand-computed cases from shared/reference/ai00-server.md §4 and the
request fields of §1.3. Run: .venv/bin/python -m pytest tests/test_server_samplers.py -q
"""
from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref.server.errors import ApiError
from ai00ref.server.samplers import (DEFAULT_PENALTY_DECAY, Mirostat, Nucleus, Penalties, Typical, apply_bias,
                                     build_sampler, cumulative_cut, make_rng, parse_bias, request_bias, softmax,
                                     temperature_weights)


class FixedRng:
    """Stands in for np.random.Generator: `random()` returns the given values in turn (the sampler draws 1 - x)."""

    def __init__(self, *values: float):
        self.values = list(values)

    def random(self) -> float:
        return self.values.pop(0)


def no_penalties() -> Penalties:
    return Penalties(0.0, 0.0, 1.0)


# ---- softmax and bias ----

def test_softmax_hand_values():
    np.testing.assert_allclose(softmax(np.array([0.0, math.log(3.0)])), [0.25, 0.75], rtol=1e-15)


def test_softmax_minus_inf_gets_zero():
    assert softmax(np.array([0.0, -np.inf, 0.0])).tolist() == [0.5, 0.0, 0.5]


def test_softmax_all_minus_inf_is_all_zero():
    assert softmax(np.full(3, -np.inf)).tolist() == [0.0, 0.0, 0.0]


def test_softmax_large_logits_do_not_overflow():
    assert softmax(np.array([1000.0, 1000.0], dtype=np.float32)).tolist() == [0.5, 0.5]


@given(st.lists(st.floats(-50, 50), min_size=1, max_size=20))
def test_softmax_is_a_distribution(xs):
    p = softmax(np.array(xs))
    assert p.dtype == np.float64 and (p >= 0).all() and abs(p.sum() - 1.0) < 1e-12
    assert p[int(np.argmax(xs))] == p.max()  # the largest logit has the largest probability


def test_apply_bias_returns_a_new_array():
    logits = np.zeros(3, dtype=np.float32)
    out = apply_bias(logits, {2: -1.5, 0: 2.0})
    assert out.tolist() == [2.0, 0.0, -1.5] and logits.tolist() == [0.0, 0.0, 0.0]
    assert out.dtype == np.float32


# ---- penalties (§4.2) ----

def test_penalty_seed_formula():
    pen = Penalties(presence=0.3, frequency=0.5, decay=0.5)
    pen.seed([7, 8, 7])
    # reversed: i=0 t=7 -> 0.3 + 0.5; i=1 t=8 -> 0.3 + 0.5*0.5; i=2 t=7 -> 0.8 + 0.5*0.25
    assert pen.pen == pytest.approx({7: 0.925, 8: 0.55}, rel=1e-15)


def test_penalty_update_sequence():
    pen = Penalties(presence=1.0, frequency=2.0, decay=0.5)
    pen.update(3)
    assert pen.pen == {3: 1.0}
    pen.update(4)
    assert pen.pen == {3: 0.5, 4: 1.0}
    pen.update(3)  # closed form: ap*d^2 + af*d^0 = 0.25 + 2
    assert pen.pen == {3: 2.25, 4: 0.5}
    assert pen.apply(np.zeros(5)).tolist() == [0.0, 0.0, 0.0, -2.25, -0.5]


def test_samplers_update_penalties_after_sampling():
    sampler = Nucleus(top_p=0.0, penalties=Penalties(1.0, 2.0, 0.5))
    assert sampler.sample(np.array([0.1, 0.9]), FixedRng(0.5)) == 1
    assert sampler.penalties.pen == {1: 1.0}
    assert sampler.transform(np.zeros(2)).tolist() == [0.0, -1.0]


# ---- Nucleus (§4.3) ----

def test_cumulative_cut_keeps_the_crossing_token():
    assert cumulative_cut(np.array([0.5, 0.3, 0.2]), 0.5) == 2  # sums before: 0, 0.5 (<= 0.5), 0.8
    assert cumulative_cut(np.array([0.5, 0.25, 0.25]), 0.75) == 3
    assert cumulative_cut(np.array([0.5, 0.25, 0.25]), 0.7) == 2
    assert cumulative_cut(np.array([0.5, 0.25, 0.25]), 0.0) == 1


def test_temperature_weights_hand_values():
    p = np.array([0.5, 0.25])
    np.testing.assert_allclose(temperature_weights(p, 1.0), [2 / 3, 1 / 3], rtol=1e-15)
    np.testing.assert_allclose(temperature_weights(p, 0.5), [0.8, 0.2], rtol=1e-15)  # p**2 = .25, .0625
    s = math.sqrt(0.5) + 0.5
    np.testing.assert_allclose(temperature_weights(p, 2.0), [math.sqrt(0.5) / s, 0.5 / s], rtol=1e-14)
    assert temperature_weights(p, 0.0).tolist() == [1.0, 0.0]


def test_nucleus_draw_is_deterministic_given_the_uniform():
    probs = np.array([0.5, 0.3, 0.2])  # top_p 0.5 keeps tokens 0, 1: weights 0.625, 0.375
    assert Nucleus(0.5, 128, 1.0, no_penalties()).sample(probs, FixedRng(0.5)) == 0  # u = 0.5 <= 0.625
    assert Nucleus(0.5, 128, 1.0, no_penalties()).sample(probs, FixedRng(0.3)) == 1  # u = 0.7
    assert Nucleus(0.5, 128, 1.0, no_penalties()).sample(probs, FixedRng(0.0)) == 1  # u = 1.0


def test_nucleus_kept_set_and_frequencies():
    sampler, rng = Nucleus(0.7, 128, 1.0, no_penalties()), np.random.default_rng(0)
    draws = np.array([sampler.sample(np.array([0.25, 0.5, 0.25]), rng) for _ in range(3000)])
    assert set(draws.tolist()) == {0, 1}  # sorted: 1 (0.5), 0 (0.25, lower id first), then 2 is cut
    assert abs((draws == 1).mean() - 2 / 3) < 0.03


def test_nucleus_top_k_and_top_k_zero():
    probs = np.array([0.1, 0.4, 0.3, 0.2])
    rng = np.random.default_rng(1)
    two = {Nucleus(1.0, 2, 1.0, no_penalties()).sample(probs, rng) for _ in range(300)}
    assert two == {1, 2}
    unlimited = {Nucleus(1.0, 0, 1.0, no_penalties()).sample(probs, rng) for _ in range(500)}
    assert unlimited == {0, 1, 2, 3}


def test_nucleus_temperature_zero_is_greedy_lowest_id_on_ties():
    sampler = Nucleus(1.0, 128, 0.0, no_penalties())
    assert sampler.sample(np.array([0.2, 0.4, 0.4]), FixedRng(0.0)) == 1
    assert sampler.sample(np.array([0.1, 0.2, 0.7]), FixedRng(0.999)) == 2


def test_nucleus_all_zero_probs_falls_back_to_token_zero():
    assert Nucleus(0.5, 128, 1.0, no_penalties()).sample(np.zeros(4), FixedRng(0.5)) == 0


# ---- Typical (§4.4) ----

TYPICAL_PROBS = np.array([0.5, 0.25, 0.125, 0.125])
# surprise/ln2 = 1, 2, 3, 3; entropy/ln2 = 1.75; distances 0.75, 0.25, 1.25, 1.25 -> order 1, 0, 2, 3


def test_typical_orders_by_distance_to_entropy():
    rng = np.random.default_rng(2)
    only = {Typical(0.2, 128, 1.0, no_penalties()).sample(TYPICAL_PROBS, rng) for _ in range(100)}
    assert only == {1}  # sums before: 0, 0.25 > 0.2
    kept = {Typical(0.25, 128, 1.0, no_penalties()).sample(TYPICAL_PROBS, rng) for _ in range(300)}
    assert kept == {0, 1}
    top1 = {Typical(1.0, 1, 1.0, no_penalties()).sample(TYPICAL_PROBS, rng) for _ in range(100)}
    assert top1 == {1}


def test_typical_draw_and_greedy():
    sampler = Typical(0.25, 128, 1.0, no_penalties())  # kept order 1 (0.25), 0 (0.5): cdf 1/3, 1
    assert sampler.sample(TYPICAL_PROBS, FixedRng(0.7)) == 1  # u = 0.3
    assert sampler.sample(TYPICAL_PROBS, FixedRng(0.5)) == 0  # u = 0.5
    assert Typical(0.25, 128, 0.0, no_penalties()).sample(TYPICAL_PROBS, FixedRng(0.999)) == 0


def test_typical_skips_zero_probabilities():
    rng = np.random.default_rng(3)
    draws = {Typical(1.0, 128, 1.0, no_penalties()).sample(np.array([0.0, 0.5, 0.5]), rng) for _ in range(200)}
    assert draws == {1, 2}


# ---- Mirostat (§4.5) ----

def test_mirostat_truncation_and_update():
    sampler = Mirostat(tau=1.0, rate=0.1)
    assert sampler.max_surprise == 2.0
    # -log2 p = 1, 2, 3, 3: the first over 2 is index 2 -> keep 3 tokens (mass 0.875); u = 1 -> the last kept
    assert sampler.sample(TYPICAL_PROBS, FixedRng(0.0)) == 2
    surprise = math.log2(0.875) - math.log2(0.125)
    assert sampler.max_surprise == pytest.approx(2.0 - 0.1 * (surprise - 1.0), rel=1e-15)
    assert sampler.truncation(TYPICAL_PROBS) == 2  # now the first over ~1.82 is index 1


def test_mirostat_draws_in_the_truncated_set():
    assert Mirostat(1.0, 0.0).sample(TYPICAL_PROBS, FixedRng(0.5)) == 0  # u*0.875 = 0.4375 <= 0.5
    assert Mirostat(1.0, 0.0).sample(TYPICAL_PROBS, FixedRng(0.2)) == 1  # 0.7 in (0.5, 0.75]
    assert Mirostat(10.0, 0.0).truncation(TYPICAL_PROBS) == 4  # nothing over 20 bits: keep all


def test_mirostat_cap_at_four_tau():
    sampler = Mirostat(tau=1.0, rate=20.0)
    assert sampler.sample(TYPICAL_PROBS, FixedRng(0.9)) == 0  # surprise log2(1.75) < tau: max_surprise grows
    assert sampler.max_surprise == 4.0


def test_mirostat_transform_is_identity():
    logits = np.array([1.0, -2.0])
    out = Mirostat().transform(logits)
    assert out.tolist() == [1.0, -2.0] and out is not logits


# ---- build_sampler (§1.3) ----

def test_build_sampler_defaults():
    sampler = build_sampler({}, [5])
    assert isinstance(sampler, Nucleus)
    assert (sampler.top_p, sampler.top_k, sampler.temperature) == (0.5, 128, 1.0)
    pen = sampler.penalties
    assert (pen.presence, pen.frequency, pen.decay) == (0.3, 0.3, DEFAULT_PENALTY_DECAY)
    assert pen.pen == {5: 0.6}


def test_build_sampler_top_level_fields_are_honoured():
    sampler = build_sampler({"top_p": 0.9, "top_k": 0, "temperature": 0, "presence_penalty": 0,
                             "frequency_penalty": 1, "penalty_decay": 1.0}, [])
    assert (sampler.top_p, sampler.top_k, sampler.temperature) == (0.9, 0, 0.0)
    assert (sampler.penalties.presence, sampler.penalties.frequency, sampler.penalties.decay) == (0.0, 1.0, 1.0)
    assert build_sampler({"half_life": 100}, []).penalties.decay == 0.5 ** (1 / 100)


def test_build_sampler_objects():
    typical = build_sampler({"sampler": {"type": "Typical", "tau": 0.9, "top_k": 5}, "top_p": 0.1}, [1, 1])
    assert isinstance(typical, Typical) and (typical.tau, typical.top_k, typical.temperature) == (0.9, 5, 1.0)
    assert typical.penalties.pen == pytest.approx({1: 0.3 + 0.3 + 0.3 * DEFAULT_PENALTY_DECAY})
    miro = build_sampler({"sampler_override": {"type": "mirostat", "learning_rate": 0.2}}, [1])
    assert isinstance(miro, Mirostat) and (miro.tau, miro.rate, miro.max_surprise) == (3.0, 0.2, 6.0)
    untagged = build_sampler({"sampler": {"top_p": 0.2, "presence_penalty": 1}, "top_p": 0.9}, [])
    assert isinstance(untagged, Nucleus) and untagged.top_p == 0.2 and untagged.penalties.presence == 1.0
    nucleus = build_sampler({"sampler": {"type": "Nucleus"}, "sampler_override": None}, [])
    assert (nucleus.top_p, nucleus.top_k) == (0.5, 128)


@pytest.mark.parametrize("body, param", [
    ({"top_p": 1.5}, "top_p"),
    ({"top_p": "0.5"}, "top_p"),
    ({"top_p": True}, "top_p"),
    ({"top_k": -1}, "top_k"),
    ({"top_k": 2.0}, "top_k"),
    ({"top_k": False}, "top_k"),
    ({"temperature": -0.1}, "temperature"),
    ({"temperature": float("inf")}, "temperature"),
    ({"presence_penalty": float("nan")}, "presence_penalty"),
    ({"frequency_penalty": [1]}, "frequency_penalty"),
    ({"penalty_decay": 0}, "penalty_decay"),
    ({"penalty_decay": 1.01}, "penalty_decay"),
    ({"half_life": 0}, "half_life"),
    ({"half_life": 10, "penalty_decay": 0.9}, "half_life"),
    ({"sampler": {}, "sampler_override": {}}, "sampler_override"),
    ({"sampler": "Nucleus"}, "sampler"),
    ({"sampler": {"type": "Greedy"}}, "sampler.type"),
    ({"sampler": {"type": "NUCLEUS"}}, "sampler.type"),
    ({"sampler": {"type": "Nucleus", "top_p": -0.1}}, "sampler.top_p"),
    ({"sampler_override": {"type": "Typical", "tau": 2}}, "sampler_override.tau"),
    ({"sampler": {"type": "Typical", "top_k": 1.5}}, "sampler.top_k"),
    ({"sampler": {"type": "Typical", "temperature": -1}}, "sampler.temperature"),
    ({"sampler": {"type": "Mirostat", "tau": 0}}, "sampler.tau"),
    ({"sampler": {"type": "Mirostat", "rate": -0.1}}, "sampler.rate"),
    ({"sampler": {"type": "Mirostat", "learning_rate": "x"}}, "sampler.learning_rate"),
    ({"sampler": {"type": "Mirostat", "rate": 0.1, "learning_rate": 0.1}}, "sampler.rate"),
])
def test_build_sampler_errors(body, param):
    with pytest.raises(ApiError) as err:
        build_sampler(body, [])
    assert (err.value.status, err.value.param) == (400, param)


def test_unknown_type_names_the_allowed_ones():
    with pytest.raises(ApiError, match="Nucleus, Typical, Mirostat"):
        build_sampler({"sampler": {"type": "greedy"}}, [])


# ---- bias and seed ----

def test_parse_bias():
    assert parse_bias({"50256": -100, "3": 0.5}, 65536) == {50256: -100.0, 3: 0.5}
    assert parse_bias({7: 1}, 8) == {7: 1.0}
    assert parse_bias(None, 8) == {}
    assert request_bias({"logit_bias": {"1": 2}}, 8) == {1: 2.0}
    assert request_bias({}, 8) == {}


@pytest.mark.parametrize("value", [{"abc": 1}, {"-1": 1}, {"8": 1}, {"1.0": 1}, {"1": "x"}, {"1": True},
                                   {"1": float("inf")}, [1, 2], {True: 1}])
def test_parse_bias_errors(value):
    with pytest.raises(ApiError) as err:
        parse_bias(value, 8, "logit_bias")
    assert (err.value.status, err.value.param.split(".")[0]) == (400, "logit_bias")


def test_bias_and_logit_bias_together_is_an_error():
    with pytest.raises(ApiError) as err:
        request_bias({"bias": {}, "logit_bias": {}}, 8)
    assert (err.value.status, err.value.param) == (400, "logit_bias")


def test_make_rng():
    assert make_rng(42).random() == make_rng(42).random()
    assert make_rng(-1).random() == make_rng(2 ** 64 - 1).random()
    assert isinstance(make_rng(None), np.random.Generator)
    for bad in ("1", 1.0, True):
        with pytest.raises(ApiError) as err:
            make_rng(bad)
        assert (err.value.status, err.value.param) == (400, "seed")


def test_seeded_sampling_is_reproducible():
    probs = softmax(np.linspace(0, 3, 50))
    runs = []
    for rng in (make_rng(7), make_rng(7)):
        sampler = build_sampler({"top_p": 1.0}, [])
        runs.append([sampler.sample(probs, rng) for _ in range(20)])
    assert runs[0] == runs[1] and len(set(runs[0])) > 1


from hypothesis import given as _given, settings as _settings, strategies as _st  # noqa: E402


@_settings(max_examples=60)
@_given(seed=_st.integers(0, 2**32 - 1), size=_st.sampled_from([3, 5, 300, 3000]), top_k=_st.integers(0, 4000),
        top_p=_st.floats(0, 1), ties=_st.booleans())
def test_nucleus_candidates_equal_the_full_sort(seed, size, top_k, top_p, ties):
    """The partial sort gives exactly descending_order(p)[:top_k] cut by cumulative_cut, ties included."""
    from ai00ref.server.samplers import cumulative_cut, descending_order, nucleus_candidates, softmax

    rng = np.random.default_rng(seed)
    logits = rng.standard_normal(size) * 3
    if ties:
        logits = np.round(logits)  # many equal probabilities
    p = softmax(logits)
    full = descending_order(p)[: top_k or None]
    expected = full[: cumulative_cut(p[full], top_p)]
    np.testing.assert_array_equal(nucleus_candidates(p, top_k, top_p), expected)
