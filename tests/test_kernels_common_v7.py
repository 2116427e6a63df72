"""The Taichi kernels of `kernels/common.py` (v4), each against the reference function it mirrors, then the
whole RWKV-7 Taichi engine against the reference engine (its tasks: tests/test_kernels_v7_tasks.py).
Arch: env AI00REF_TAICHI_ARCH (tests/taichi_arch.py).

Tolerances (spec/tolerances.md, "Taichi kernels"):
- single kernels, fp32: every element's error ≤ 1e-5 × ‖ref‖₂ (the L2 norm of the whole output) + 1e-6 × ‖|terms|‖₂
  (the same norm with every term taken absolute: what fp32 rounding of a cancelling sum can leave; it is ‖ref‖₂
  for the kernels without sums). The reference runs in float64 on the very f32 (or f16-rounded) inputs the kernel
  gets, so the bound is the kernel's own rounding, with an order of magnitude of margin (measured: ≤ 4e-7).
- whole model: max over rows of ‖Δ‖₂/‖ref‖₂ of the logits and of every state tensor ≤ 1e-4 (fp32 weights) and
  ≤ 1e-2 (fp16 weights), as the conformance table (`conformance/runner.py` TOLERANCES).

Inputs are drawn from a NumPy generator seeded by hypothesis, with hypothesis choosing every shape (1 to ~70, and
up to 300 input features for `linear`, so the GPU kernel's 128-wide blocks and 8-token tiles end part-filled),
the ragged batch plan, the activation, the mixing convention and the weight dtype.
"""
from __future__ import annotations

import functools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()

from ai00ref.model_info import read_model_info  # noqa: E402
from ai00ref.ref import common as ref
from ai00ref.ref.model import RefModel
from ai00ref.ref.state import V7State
from ai00ref.weights.canonical import canonical_weights
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors, write_random_model

pytestmark = [pytest.mark.taichi, pytest.mark.usefixtures("taichi_arch")]  # Taichi started first

RTOL, ATOL = 1e-5, 1e-6  # single kernels, fp32 (see above)
f64 = functools.partial(np.asarray, dtype=np.float64)  # the references are computed in float64
MODEL_TOL = {"fp32": 1e-4, "fp16": 1e-2}
MODEL_EXAMPLES = settings(max_examples=4 if taichi_arch.SLOW else 10)  # lavapipe: fewer whole-model examples


# ---- helpers ----

def dev(array, dtype=None):
    """Host array -> device array (f32, or f16 / i32 by dtype) of the runtime in use (kernels/arrays.py)."""
    from kernels import arrays

    array = np.asarray(array)
    if dtype is None:
        dtype = ti.i32 if array.dtype.kind in "iu" else ti.f32
    return arrays.upload(array, dtype)


def rng_of(seed):
    return np.random.default_rng(seed)


def normal(rng, *shape, scale=1.0):
    return (rng.standard_normal(shape) * scale).astype(np.float32)


def assert_close(out, expected, terms=None, rtol=RTOL, atol=ATOL):
    """|out − ref| ≤ rtol‖ref‖₂ + atol‖terms‖₂ everywhere; `terms`: the output with every summand taken absolute."""
    out, expected = np.asarray(out, np.float64), np.asarray(expected, np.float64)
    assert out.shape == expected.shape
    scale = np.linalg.norm(expected)
    bound = rtol * scale + atol * (scale if terms is None else np.linalg.norm(terms)) + 1e-30
    err = np.abs(out - expected)
    assert np.all(np.isfinite(out))
    assert err.max(initial=0.0) <= bound, f"max error {err.max():.3e} > {bound:.3e} (‖ref‖₂ {scale:.3e})"


def plans(max_rows=4, max_len=6):
    return st.lists(st.integers(1, max_len), min_size=1, max_size=max_rows)


def make_plan(lengths):
    from kernels.engine import Pass

    return Pass.plan(tuple(lengths))


def segments(lengths):
    bounds = np.concatenate([[0], np.cumsum(lengths)])
    return list(zip(bounds[:-1], bounds[1:]))


dims = st.integers(1, 70)
seeds = st.integers(0, 2**32 - 1)


# ---- kernels/common.py ----

@given(T=st.integers(1, 12), C=st.one_of(dims, st.sampled_from([127, 128, 129, 300])), seed=seeds,
       in_place=st.booleans())
def test_layer_norm(T, C, seed, in_place):
    """On a GPU arch one 128-lane workgroup per row: C above 128 takes several strided chunks."""
    from kernels import common

    rng = rng_of(seed)
    x, w, b = normal(rng, T, C, scale=3.0) + normal(rng, 1, C), normal(rng, C), normal(rng, C)
    xd = dev(x)
    y = xd if in_place else dev(np.zeros_like(x))
    common.layer_norm(xd, dev(w), dev(b), y, ref.LN_EPS)
    assert_close(y.to_numpy(), ref.layer_norm(x.astype(np.float64), w, b, ref.LN_EPS))


@given(lengths=plans(), L=st.integers(1, 3), C=dims, seed=seeds, data=st.data())
def test_token_shift(lengths, L, C, seed, data):
    from kernels import common

    layer = data.draw(st.integers(0, L - 1), label="layer")
    rng = rng_of(seed)
    plan = make_plan(lengths)
    x, shift = normal(rng, plan.T, C), normal(rng, len(lengths), L, C)
    prev = dev(np.zeros_like(x))
    common.token_shift(dev(x), dev(shift), layer, plan.row, plan.first, prev)
    expected = np.concatenate([ref.previous_tokens(x[a:b], shift[r, layer])
                               for r, (a, b) in enumerate(segments(lengths))])
    np.testing.assert_array_equal(prev.to_numpy(), expected)  # a copy: exact


ACTIVATIONS = {"none": (0, lambda s: s), "relu_squared": (1, ref.relu_squared), "sigmoid": (2, ref.sigmoid),
               "tanh": (3, np.tanh)}


@given(T=st.one_of(st.integers(1, 20), st.sampled_from([4, 5, 8, 16, 17])),
       n_in=st.one_of(dims, st.sampled_from([127, 128, 129, 256, 300])),
       n_out=dims, act=st.sampled_from(sorted(ACTIVATIONS)), accumulate=st.booleans(),
       f16=st.booleans(), mixing=st.sampled_from(["none", "current", "previous"]), seed=seeds)
def test_linear(T, n_in, n_out, act, accumulate, f16, mixing, seed):
    """`linear` (mixing none) and `linear_mixed` (the token-shift mix fused into the input read), vs
    act(lerp(x, prev; m) Wᵀ) [+ y]. On cpu `_linear_rows`; on a GPU arch `_linear_blocks` (128-lane blocks,
    1-position tiles up to T = 4, then 8-position tiles)."""
    from kernels import common

    rng = rng_of(seed)
    x, prev, y0 = normal(rng, T, n_in), normal(rng, T, n_in), normal(rng, T, n_out)
    m = rng.uniform(0, 1, n_in).astype(np.float32)
    W = normal(rng, n_out, n_in, scale=n_in ** -0.5)
    if f16:
        W = W.astype(np.float16).astype(np.float32)  # the kernel sees exactly these values
    y = dev(y0)
    code, fn = ACTIVATIONS[act]
    W_dev = dev(W, ti.f16 if f16 else ti.f32)
    x64, p64 = x.astype(np.float64), prev.astype(np.float64)
    if mixing == "none":
        common.linear(dev(x), W_dev, y, code, accumulate)
        inputs, abs_inputs = x64, np.abs(x64)
    else:
        convention = common.MIX_CURRENT if mixing == "current" else common.MIX_PREVIOUS
        common.linear_mixed(dev(x), dev(prev), dev(m), W_dev, y, convention, code, accumulate)
        inputs = (ref.lerp_current if mixing == "current" else ref.lerp_previous)(x64, p64, m)
        abs_inputs = np.abs(x64) + np.abs(p64)
    s = inputs @ W.astype(np.float64).T
    terms = abs_inputs @ np.abs(W.astype(np.float64)).T
    if act == "relu_squared":  # d(s²) = 2|s| ds
        terms = 2 * terms * np.abs(s)
    expected = fn(s) + (y0 if accumulate else 0)
    if accumulate:
        terms = terms + np.abs(y0)
    assert_close(y.to_numpy(), expected, terms)


@given(B=st.integers(1, 5), L=st.integers(1, 3), T=st.integers(1, 10), C=dims, seed=seeds, data=st.data())
def test_store_last(B, L, T, C, seed, data):
    from kernels import common

    layer = data.draw(st.integers(0, L - 1), label="layer")
    last = np.array(data.draw(st.lists(st.integers(-1, T - 1), min_size=B, max_size=B), label="last"), np.int32)
    rng = rng_of(seed)
    x, shift = normal(rng, T, C), normal(rng, B, L, C)
    out = dev(shift)
    common.store_last(dev(x), dev(last), out, layer)
    expected = shift.copy()
    for b in range(B):
        if last[b] >= 0:
            expected[b, layer] = x[last[b]]
    np.testing.assert_array_equal(out.to_numpy(), expected)


# ---- the whole RWKV-7 engine ----

VOCAB = 64
SHAPES = {"L2 C32 N8": dict(n_layer=2, n_embd=32, head_size=8), "L1 C48 N16": dict(n_layer=1, n_embd=48, head_size=16)}
_models: dict = {}


def models(shape: str, precision: str):
    """(reference model, Taichi model) on the same random v7 weights, built once per process."""
    key = (shape, precision)
    if key not in _models:
        from kernels.engine import TaichiModel

        spec = RandomModelSpec("v7", n_vocab=VOCAB, seed=3, **SHAPES[shape])
        tensors = pth_to_st_tensors(random_model_tensors(spec))
        weights = canonical_weights(tensors, read_model_info(tensors), dtype="float32")
        _models[key] = RefModel(weights), TaichiModel(weights, arch=taichi_arch.ARCH, precision=precision)
    return _models[key]


def rel_l2(out, expected) -> float:
    """Max over rows (last axis) of ‖Δ‖₂/‖ref‖₂, as the conformance runner."""
    out, expected = np.asarray(out, np.float64), np.asarray(expected, np.float64)
    assert out.shape == expected.shape
    num = np.linalg.norm((out - expected).reshape(-1, expected.shape[-1]), axis=-1)
    den = np.linalg.norm(expected.reshape(-1, expected.shape[-1]), axis=-1)
    return float(np.max(num / np.maximum(den, 1e-30)))


def assert_states_close(state, expected, tol):
    host = state.to_host() if hasattr(state, "to_host") else state
    assert type(host) is type(expected)
    for name, value in expected.arrays().items():
        got = host.arrays()[name]
        assert got.shape == value.shape and got.dtype == np.float32
        assert rel_l2(got, value) <= tol, name


token_rows = st.lists(st.integers(0, VOCAB - 1), min_size=1, max_size=7)


# each shape once and each precision once (every case compiles its layer kernels, ~30 s on lavapipe; the
# conformance suite runs v7 in both precisions too): the two-layer one in fp32, as test_v7_full_output, the one-layer
# one (layer 0 only, C not a multiple of the subgroup) in fp16
@pytest.mark.parametrize("shape, precision", [("L2 C32 N8", "fp32"), ("L1 C48 N16", "fp16")])
@MODEL_EXAMPLES
@given(rows=st.lists(token_rows, min_size=1, max_size=3), steps=st.lists(st.integers(0, VOCAB - 1), max_size=3))
def test_v7_model_matches_reference(shape, precision, rows, steps):
    """A ragged batch from zero states, then single-token steps for every row, logits and states vs ref."""
    ref_model, model = models(shape, precision)
    tol = MODEL_TOL[precision]
    B = len(rows)
    logits, state = model.forward(rows, model.new_state(B))
    ref_logits, ref_state = ref_model.forward(rows, ref_model.new_state(B))
    assert logits.shape == (B, VOCAB) and logits.dtype == np.float32
    assert rel_l2(logits, ref_logits) <= tol
    assert_states_close(state, ref_state, tol)
    for token in steps:
        logits, state = model.forward([[token]] * B, state)
        ref_logits, ref_state = ref_model.forward([[token]] * B, ref_state)
        assert rel_l2(logits, ref_logits) <= tol
    assert_states_close(state, ref_state, tol)


@MODEL_EXAMPLES
@given(rows=st.lists(token_rows, min_size=1, max_size=3))
def test_v7_full_output(rows):
    ref_model, model = models("L2 C32 N8", "fp32")
    outputs, state = model.forward(rows, model.new_state(len(rows)), full_output=True)
    ref_outputs, ref_state = ref_model.forward(rows, ref_model.new_state(len(rows)), full_output=True)
    assert isinstance(outputs, list) and len(outputs) == len(rows)
    for out, expected, row in zip(outputs, ref_outputs, rows):
        assert out.shape == (len(row), VOCAB)
        assert rel_l2(out, expected) <= MODEL_TOL["fp32"]
    assert_states_close(state, ref_state, MODEL_TOL["fp32"])
    last, _ = model.forward(rows, model.new_state(len(rows)))  # full_output's last rows are the usual logits
    np.testing.assert_allclose(np.stack([o[-1] for o in outputs]), last, rtol=1e-6, atol=1e-6)


def test_v7_forward_leaves_its_input_state_alone():
    from kernels.engine import TaichiState

    ref_model, model = models("L2 C32 N8", "fp32")
    _, state = model.forward([[1, 2, 3], [4]], model.new_state(2))
    assert isinstance(state, TaichiState)
    before = state.to_host()
    logits, after = model.forward([[5], [6, 7]], state)
    for name, value in before.arrays().items():
        np.testing.assert_array_equal(state.to_host().arrays()[name], value)
    again, _ = model.forward([[5], [6, 7]], state)  # the same input state gives the same output
    np.testing.assert_array_equal(logits, again)
    host = before.copy()  # a host state is accepted and left alone too
    host_logits, _ = model.forward([[5], [6, 7]], host)
    np.testing.assert_array_equal(host_logits, logits)
    for name, value in before.arrays().items():
        np.testing.assert_array_equal(host.arrays()[name], value)


def test_v7_state_copy_rows_concat_and_host_round_trip():
    from kernels.engine import TaichiState

    ref_model, model = models("L2 C32 N8", "fp32")
    _, state = model.forward([[1, 2, 3], [4], [5, 6]], model.new_state(3))
    host = state.to_host()
    assert isinstance(host, V7State) and host.batch == 3 and state.batch == 3
    assert host.wkv.shape == (3, 2, 4, 8, 8) and host.att_x.shape == host.ffn_x.shape == (3, 2, 32)
    round_trip = TaichiState.from_host(host).to_host()
    for name, value in host.arrays().items():
        np.testing.assert_array_equal(round_trip.arrays()[name], value)

    copy = state.copy()
    _, advanced = model.forward([[7], [8], [9]], copy)
    copy.fields["att_x"].from_numpy(np.zeros_like(host.att_x))  # writing the copy leaves the original alone
    np.testing.assert_array_equal(state.to_host().att_x, host.att_x)
    np.testing.assert_array_equal(copy.to_host().wkv, host.wkv)

    for index in (1, [2, 0], slice(0, 2)):
        picked = state.rows(index)
        expected = host.rows(index)
        assert isinstance(picked, TaichiState) and picked.batch == expected.batch
        for name, value in expected.arrays().items():
            np.testing.assert_array_equal(picked.to_host().arrays()[name], value)
    joined = TaichiState.concat([state.rows(2), state.rows([0, 1])])
    for name, value in host.rows([2, 0, 1]).arrays().items():
        np.testing.assert_array_equal(joined.to_host().arrays()[name], value)

    # a row taken out of a batch continues exactly as it would in the batch
    alone, _ = model.forward([[8]], state.rows(1))
    in_batch, _ = model.forward([[7], [8], [9]], state)
    np.testing.assert_allclose(alone[0], in_batch[1], rtol=1e-6, atol=1e-6)
    official = state.to_official(2)
    assert len(official) == 3 * 2
    np.testing.assert_array_equal(official[1], host.wkv[2, 0])


def test_load_model_taichi(tmp_path):
    import ai00ref

    path = write_random_model(RandomModelSpec("v7", n_layer=1, n_embd=32, head_size=8, n_vocab=VOCAB),
                              tmp_path / "m.st", dtype="fp16")
    with pytest.raises(ValueError, match=r"unknown arch 'bogus'.*auto, vulkan, cuda, cpu"):
        ai00ref.load_model(path, backend="taichi", arch="bogus")
    with pytest.raises(ValueError, match=r"unknown precision 'fp8'"):
        ai00ref.load_model(path, backend="taichi", arch=taichi_arch.ARCH, precision="fp8")
    model = ai00ref.load_model(path, backend="taichi", arch=taichi_arch.ARCH, precision="fp16")
    assert model.backend == "taichi" and model.arch == taichi_arch.ARCH and model.precision == "fp16"
    reference = ai00ref.load_model(path)
    logits, _ = model.forward([[1, 2]], model.new_state())
    expected, _ = reference.forward([[1, 2]], reference.new_state())
    assert rel_l2(logits, expected) <= MODEL_TOL["fp16"]


def test_one_arch_per_process():
    import kernels

    other = "vulkan" if kernels.current_arch() == "cpu" else "cpu"
    with pytest.raises(RuntimeError, match="one process uses one arch"):
        kernels.init(other)
    assert kernels.init("auto") == kernels.current_arch() == taichi_arch.ARCH
