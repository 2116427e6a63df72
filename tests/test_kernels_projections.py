"""`kernels.common.projections`: several matrices over one token-shifted input in one launch.

Each segment must equal ref.common.linear(lerp(x, prev, m_s), W_s) with its activation, computed in float64 on the
same f32/f16 inputs. Tolerance as for one kernel (spec/tolerances.md): every element within
1e-5·‖ref‖₂ + 1e-6·‖|terms|‖₂ of its segment, where |terms| = act'·(|input|·|W|ᵀ) bounds what fp32 rounding of the
sum can move (act' = 1 + 2|z| covers relu²; σ and tanh have slope ≤ 1).
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from ai00ref.ref import common as ref

pytestmark = pytest.mark.taichi
ACTIVATIONS = {0: lambda z: z, 1: ref.relu_squared, 2: ref.sigmoid, 3: np.tanh}


def device(array, dtype=np.float32):
    import taichi as ti

    out = ti.ndarray(ti.f16 if dtype == np.float16 else ti.f32, array.shape)
    out.from_numpy(array.astype(dtype))
    return out


@given(T=st.integers(1, 11), n_in=st.integers(1, 300), outs=st.lists(st.integers(1, 70), min_size=1, max_size=4),
       convention=st.sampled_from([-1, 0, 1]), acts=st.lists(st.sampled_from([0, 1, 2, 3]), min_size=4, max_size=4),
       half=st.booleans(), accumulate=st.booleans(), seed=st.integers(0, 2**16))
def test_projections_match_each_linear(taichi_arch, T, n_in, outs, convention, acts, half, accumulate, seed):
    from kernels import common

    rng = np.random.default_rng(seed)
    x, prev = rng.standard_normal((T, n_in)), rng.standard_normal((T, n_in))
    dtype = np.float16 if half else np.float32
    segments, expected, outputs = [], [], []
    for s, n_out in enumerate(outs):
        m, W = rng.uniform(0, 1, n_in), (rng.standard_normal((n_out, n_in)) / n_in**0.5).astype(dtype)
        start = rng.standard_normal((T, n_out)).astype(np.float32)
        mixed = {-1: x, 0: ref.lerp_current(x, prev, m), 1: ref.lerp_previous(x, prev, m)}[convention]
        pre = ref.linear(mixed, W.astype(np.float64))
        value = ACTIVATIONS[acts[s]](pre)
        terms = (1 + 2 * np.abs(pre)) * ref.linear(np.abs(mixed), np.abs(W.astype(np.float64)))
        expected.append((value + start if accumulate else value, terms))
        outputs.append(device(start))
        segments.append((device(m), device(W, dtype), outputs[-1]))
    common.projections(device(x), device(prev), segments, convention, tuple(acts[:len(outs)]), accumulate)
    for out, (want, terms) in zip(outputs, expected):
        error = np.abs(out.to_numpy() - want)
        bound = 1e-5 * np.linalg.norm(want) + 1e-6 * np.linalg.norm(terms)
        assert error.max() <= bound, f"max error {error.max():.3e} > {bound:.3e}"


@given(T=st.integers(1, 9), widths=st.lists(st.integers(1, 40), min_size=1, max_size=4), n_out=st.integers(1, 50),
       seed=st.integers(0, 2**16))
def test_offsets_share_one_hidden_buffer(taichi_arch, T, widths, n_out, seed):
    """First stages write side by side into one buffer; second stages read their slice back (v7's low-rank pairs)."""
    from kernels import common

    rng = np.random.default_rng(seed)
    n_in, columns = 33, np.concatenate([[0], np.cumsum(widths)])
    x = rng.standard_normal((T, n_in))
    firsts = [rng.standard_normal((w, n_in)) / n_in**0.5 for w in widths]
    seconds = [rng.standard_normal((n_out, w)) / w**0.5 for w in widths]
    hidden, outs = device(np.zeros((T, columns[-1]))), [device(np.zeros((T, n_out))) for _ in widths]
    xd = device(x)
    common.projections(xd, xd, [(xd, device(W), hidden) for W in firsts], common.NO_MIX, (3,) * len(widths),
                       offsets=tuple((0, int(c)) for c in columns[:-1]))
    common.projections(hidden, hidden, [(hidden, device(W), out) for W, out in zip(seconds, outs)], common.NO_MIX,
                       (0,) * len(widths), offsets=tuple((int(c), 0) for c in columns[:-1]))
    for W1, W2, out in zip(firsts, seconds, outs):
        want = ref.linear(np.tanh(ref.linear(x, W1)), W2)
        np.testing.assert_allclose(out.to_numpy(), want, rtol=1e-5, atol=1e-6)  # two f32 kernels in a row
