"""The layer tasks of `kernels/v7.py` (and kernels/v7_wkv.py), each against the lines of `ai00ref/ref/v7.py` it
mirrors.
Tolerances, arch and shapes as tests/test_kernels_lanes.py; a small wrapper kernel per test runs a task alone.
"""

import functools

import numpy as np
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()

from kernels.launch import kernel  # noqa: E402  (a test kernel runs on the runtime in use, as the engine's do)

from ai00ref.ref import common as ref  # noqa: E402
from ai00ref.ref import v7 as ref_v7  # noqa: E402
from test_kernels_common_v7 import (assert_close, dev, make_plan, normal, plans,  # noqa: E402
                                    f64, rng_of, seeds, segments)

pytestmark = [pytest.mark.taichi, pytest.mark.usefixtures("taichi_arch")]  # Taichi started first


@functools.cache
def v7_runner(task: str, shape, tile: int = 1):
    from kernels import v7

    @kernel
    def run(vec: ti.types.ndarray(), mats: ti.types.ndarray(), second: ti.types.ndarray(), S: ti.types.ndarray(),
            plan: ti.types.ndarray(), sc: ti.types.ndarray(), layer: ti.i32):
        if ti.static(task == "projections"):
            v7.projections_task(shape, mats, mats, layer, sc, tile)
        if ti.static(task == "second_stage"):
            v7.second_stage_task(shape, vec, second, layer, layer, sc, tile)
        if ti.static(task == "wkv_gate"):
            v7.wkv_gate_task(shape, S, vec, layer, layer, plan, sc, tile)
    return run


low_dims = st.tuples(*(st.integers(1, 9) for _ in range(4)))


# ---- kernels/v7.py ----

def v7_case(rng, T, H, N, dims_low, F=8):
    """A Shape and random vec (L=2), mats, second and scratch arrays for it."""
    from kernels import v7

    s = v7.Shape(C=H * N, H=H, Dw=dims_low[0], Da=dims_low[1], Dg=dims_low[2], Dv=dims_low[3], F=F)
    vec = normal(rng, 2, v7.NV, s.C)
    mats = normal(rng, 2, s.ROWS, s.C, scale=s.C ** -0.5)
    second = normal(rng, 2, s.C, s.D, scale=s.D ** -0.5)
    sc = normal(rng, T, s.WIDTH)
    return s, vec, mats, second, sc


def run_v7(task, s, vec, mats, second, sc, layer, tile=1, S=None, plan=None):
    S_dev = dev(S) if S is not None else dev(np.zeros((1, 1, 1, 1, 1), np.float32))
    packed = plan.packed if plan is not None else dev(np.zeros((5, 1), np.int32))
    sc_dev = dev(sc)
    v7_runner(task, s, tile)(dev(vec), dev(mats), dev(second), S_dev, packed, sc_dev, layer)
    return sc_dev.to_numpy(), S_dev.to_numpy()


low_dims = st.tuples(*(st.integers(1, 9) for _ in range(4)))


@given(T=st.integers(1, 11), H=st.integers(1, 3), N=st.integers(1, 12), dims_low=low_dims, layer=st.integers(0, 1),
       tile=st.sampled_from([1, 8]), seed=seeds)
def test_v7_projections(T, H, N, dims_low, layer, tile, seed):
    """r, k, v = linear(x_r|x_k|x_v, W) (k into K_RAW); tanh(x_w w1ᵀ), x_a a1ᵀ, σ(x_g g1ᵀ), x_v v1ᵀ
    (ref.v7.time_mix)."""
    check_v7_projections(T, H, N, dims_low, layer, tile, seed)


@pytest.mark.parametrize("tile", [32, 64])
def test_v7_projections_as_tiled_products(tile):
    """C = 64: the r, k, v route fits gpu_gemm's workgroups, so a GPU runs them as a tiled product, and the first
    stages (16 rows each, 64 in all) as one product split over its inputs in 2 workgroups of two steps each (F = 128
    columns of partial sums: `gpu_gemm.low_rank_shape`); 70 positions: several workgroups of positions, the last
    part-filled."""
    import kernels
    from kernels import gpu_gemm
    if kernels.is_gpu():
        assert gpu_gemm.low_rank_shape(tile, 64, 128).splits == 2
    check_v7_projections(70, 4, 16, (16, 16, 16, 16), 1, tile, 5, F=128)


def check_v7_projections(T, H, N, dims_low, layer, tile, seed, F=8):
    rng = rng_of(seed)
    s, vec, mats, second, sc = v7_case(rng, T, H, N, dims_low, F)
    out, _ = run_v7("projections", s, vec, mats, second, sc, layer, tile)
    assert_v7_projections(s, sc, out, f64(mats[layer]), dims_low)


def assert_v7_projections(s, sc, out, W, dims_low):
    """The projections' columns of `out` (from scratch `sc`) against a layer's rows W (ROWS, C), r, k, v first."""
    from kernels import v7

    C = s.C
    mixed = lambda m: f64(sc[:, s.MIXED + m * C:s.MIXED + (m + 1) * C])  # noqa: E731
    for m, col in enumerate((s.PROJ, s.K_RAW, s.PROJ + 2 * C)):
        assert_close(out[:, col:col + C], ref.linear(mixed(m), W[m * C:(m + 1) * C]),
                     np.abs(mixed(m)) @ np.abs(W[m * C:(m + 1) * C]).T)
    bounds = np.cumsum((0,) + dims_low)
    stages = ((v7.MIX_W, np.tanh), (v7.MIX_A, None), (v7.MIX_G, ref.sigmoid), (v7.MIX_V, None))
    for part, (mix, fn) in enumerate(stages):
        rows = W[s.FIRST + bounds[part]:s.FIRST + bounds[part + 1]]
        expected = ref.linear(mixed(mix), rows)
        assert_close(out[:, s.LOW + bounds[part]:s.LOW + bounds[part + 1]], fn(expected) if fn else expected,
                     np.abs(mixed(mix)) @ np.abs(rows).T)


@given(T=st.integers(1, 11), H=st.integers(1, 4), N=st.integers(1, 20), dims_low=low_dims, layer=st.integers(0, 1),
       tile=st.sampled_from([1, 8]), seed=seeds)
@example(T=40, H=2, N=8, dims_low=(20, 3, 37, 5), layer=1, tile=32, seed=7)  # a tiled product: widths of 1-3 steps
@example(T=70, H=2, N=8, dims_low=(3, 3, 5, 2), layer=1, tile=64, seed=9)
@example(T=11, H=3, N=5, dims_low=(4, 2, 2, 3), layer=0, tile=32, seed=8)  # C = 15: the blocks start off 16 rows
def test_v7_second_stage(T, H, N, dims_low, layer, tile, seed):
    """The second stages w2, a2, g2, v2 of the LOW columns and the lines of ref.v7.time_mix that finish each channel:
    w = exp(-e^-0.5 σ(w0 + ·)), a = σ(a0 + ·), kk = l2_normalize(k k_k) per head, k (1 + (a - 1) k_a),
    v + (v_first - v) σ(v0 + ·) (layer 0: v_first = v, and no v2). On a GPU, tiles 32 and 64 take one tiled
    product (`second_stage_route`: a block per part, each of its own width) and the finishing task, or the lanes
    where the blocks start off a multiple of gpu_gemm.MIN_ROWS."""
    from kernels import v7

    rng = rng_of(seed)
    s, vec, mats, second, sc = v7_case(rng, T, H, N, dims_low)
    C, D = s.C, s.D
    out, _ = run_v7("second_stage", s, vec, mats, second, sc, layer, tile)
    col = lambda start: f64(sc[:, start:start + C])  # noqa: E731
    v_row = lambda row: f64(vec[layer, row])  # noqa: E731
    low, bounds = f64(sc[:, s.LOW:s.LOW + D]), np.cumsum((0,) + dims_low)
    stage, terms = [], []
    for part in range(4):
        cols = slice(bounds[part], bounds[part + 1])
        W2 = f64(second[layer, :, cols])
        stage.append(ref.linear(low[:, cols], W2))
        terms.append(np.abs(low[:, cols]) @ np.abs(W2).T + 1.0)  # + 1: the vector added before each σ
    k, v, v_first = col(s.K_RAW), col(s.PROJ + 2 * C), col(s.V_FIRST)
    w = np.exp(-ref_v7.DECAY_SCALE * ref.sigmoid(v_row(v7.W0) + stage[0]))
    a = ref.sigmoid(v_row(v7.A0) + stage[1])
    kk = ref.l2_normalize((k * v_row(v7.K_K)).reshape(T, H, N)).reshape(T, C)
    if layer == 0:
        v_out, v_first_out = v, v
    else:
        v_out, v_first_out = v + (v_first - v) * ref.sigmoid(v_row(v7.V0) + stage[3]), v_first
    got = lambda start: out[:, start:start + C]  # noqa: E731
    assert_close(got(s.LORA), w, terms[0])  # σ' ≤ 1/4 and |d exp(-e^-0.5 σ)| ≤ 1: a term's error passes through
    assert_close(got(s.LORA + C), a, terms[1])
    assert_close(got(s.LORA + 2 * C), stage[2], terms[2])
    assert_close(got(s.KK), kk)
    assert_close(got(s.PROJ + C), k * (1 + (a - 1) * v_row(v7.K_A)), np.abs(k) * (1 + np.abs(v_row(v7.K_A))))
    assert_close(got(s.PROJ + 2 * C), v_out, np.abs(v) + np.abs(v_first) + 1.0)
    assert_close(got(s.V_FIRST), v_first_out)


@given(lengths=plans(max_len=5), H=st.integers(1, 3), N=st.integers(1, 16), layer=st.integers(0, 1),
       tile=st.sampled_from([1, 8]), seed=seeds)
@example(lengths=[2, 5], H=2, N=16, layer=1, tile=64, seed=2)  # the prefill WKV, always: keys shared by the lanes
@example(lengths=[4, 1, 3], H=1, N=12, layer=0, tile=64, seed=3)  # ... and lanes past a head of 12 keys
@example(lengths=[45, 3, 0], H=1, N=8, layer=1, tile=64, seed=4)  # outputs stored LANES steps at a time; an empty row
@example(lengths=[40, 9], H=2, N=16, layer=0, tile=64, seed=5)  # long rows of 16 keys: two a lane on lavapipe
def test_v7_wkv_gate_task(lengths, H, N, layer, tile, seed):
    """ref.v7.wkv_step looped over each row of a ragged batch, from a random (not zero) state, then the output gate
    (group_norm(y; ln_x) + (Σ_head r k r_k) v) * g, the last lines of ref.v7.time_mix. On a GPU, tile 1 runs the
    one-task version (a lane group per head), tile 8 the WKV (a thread per value row) and the gate as two tasks,
    tile 64 (prefill) the WKV with a lane group per value row."""
    from kernels import v7

    rng = rng_of(seed)
    plan, B = make_plan(lengths), len(lengths)
    T = plan.T
    s, vec, mats, second, sc = v7_case(rng, T, H, N, (2, 2, 2, 2))
    C = s.C
    sc[:, s.PROJ + C:s.PROJ + 2 * C] *= 0.5
    sc[:, s.LORA:s.LORA + C] = np.exp(-np.exp(-0.5) * rng.uniform(0, 1, (T, C)))  # decays in (0.545, 1)
    sc[:, s.LORA + C:s.LORA + 2 * C] = rng.uniform(0, 1, (T, C))
    kk = normal(rng, T, H, N)
    sc[:, s.KK:s.KK + C] = (kk / np.linalg.norm(kk, axis=-1, keepdims=True)).reshape(T, C)
    S0 = normal(rng, B, 2, H, N, N, scale=0.5)
    import kernels

    to_device = (lambda S: np.swapaxes(S, -1, -2)) if kernels.is_gpu() else (lambda S: S)  # v7.cell's layout
    out, S = run_v7("wkv_gate", s, vec, mats, second, sc, layer, tile, np.ascontiguousarray(to_device(S0)), plan)
    per_head = lambda start: f64(sc[:, start:start + C]).reshape(T, H, N)  # noqa: E731
    r, k, v, w, a, kk = (per_head(c) for c in (s.PROJ, s.PROJ + C, s.PROJ + 2 * C, s.LORA, s.LORA + C, s.KK))
    expected_S, y = f64(S0).copy(), np.zeros((T, C))
    for b, (start, stop) in enumerate(segments(lengths)):
        state = expected_S[b, layer]
        for t in range(start, stop):
            y_t, state = ref_v7.wkv_step(r[t], w[t], k[t], v[t], kk[t], a[t], state)
            y[t] = y_t.reshape(C)
        expected_S[b, layer] = state
    assert_close(to_device(S), expected_S)
    g, r_k = f64(sc[:, s.LORA + 2 * C:s.LORA + 3 * C]), f64(vec[layer, v7.R_K]).reshape(H, N)
    normed = ref.group_norm(y, H, f64(vec[layer, v7.LNX]), f64(vec[layer, v7.LNX + 1]), ref.GN_EPS)
    bonus = (r * k * r_k).sum(-1, keepdims=True)
    expected = (normed + (bonus * v).reshape(T, C)) * g
    # the recurrence has no cheap |terms| (as test_v7_wkv): y's error, scaled up by GroupNorm's 1/σ per head
    spread = y.reshape(T, H, N).std(-1, keepdims=True) + 1e-3
    y_scale = (np.abs(y).sum() + 1.0) / y.size ** 0.5
    terms = ((y_scale / spread + 1.0) * np.abs(f64(vec[layer, v7.LNX])).reshape(H, N)).reshape(T, C) * np.abs(g)
    terms += (np.abs(r * k * r_k).sum(-1, keepdims=True) * np.abs(v)).reshape(T, C) * np.abs(g)
    assert_close(out[:, s.Y:s.Y + C], expected, terms)
