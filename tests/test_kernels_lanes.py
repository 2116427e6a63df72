"""The lane tasks of `kernels/lanes.py` and the layer tasks of `kernels/v7.py` and `kernels/v6.py` (RWKV-6 and -5),
each against the reference function (or lines of `ai00ref/ref/v7.py`, `v6.py`, `v5.py`) it mirrors.
Arch: env AI00REF_TAICHI_ARCH (tests/taichi_arch.py).

Every task is a `ti.func`; a small wrapper kernel per test runs it alone (v6: the layer kernel built with only the
tasks under test). Tolerances as tests/test_kernels_common_v7.py
(spec/tolerances.md, "Taichi kernels"): every element within 1e-5·‖ref‖₂ + 1e-6·‖|terms|‖₂ of a float64 reference
computed on the very inputs the kernel gets. Shapes are drawn so that rows end part-way through a lane group
(LANES is 32 on CUDA, the subgroup size on Vulkan, 1 on the CPU) and token tiles end part-filled.
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
from ai00ref.ref import v4 as ref_v4  # noqa: E402
from ai00ref.ref import v5 as ref_v5  # noqa: E402
from ai00ref.ref import v6 as ref_v6  # noqa: E402
from ai00ref.ref import v7 as ref_v7  # noqa: E402
from test_kernels_common_v7 import (ACTIVATIONS, assert_close, dev, dims, make_plan, normal, plans,  # noqa: E402
                                    rng_of, seeds, segments)

pytestmark = pytest.mark.taichi


@pytest.fixture(scope="module", autouse=True)
def _started(taichi_arch):
    return taichi_arch


f64 = functools.partial(np.asarray, dtype=np.float64)


# ---- wrapper kernels (cached: each compiles once per static configuration) ----

@functools.cache
def linear_runner(act: int, accumulate: bool, tile: int, gated: bool = False, sizes: tuple = ()):
    """A kernel running linear_task; `sizes` (n_out, n_in) bakes the sizes in as the layer kernels do (their
    arguments are then ignored), else they are run-time arguments."""
    from kernels.lanes import linear_task

    @kernel
    def run(W: ti.types.ndarray(), layer: ti.i32, w_row: ti.i32, n_out: ti.i32, n_in: ti.i32,
            X: ti.types.ndarray(), x_col: ti.i32, Y: ti.types.ndarray(), y_col: ti.i32, G: ti.types.ndarray(),
            g_col: ti.i32):
        if ti.static(sizes):
            if ti.static(gated):
                linear_task(W, layer, w_row, sizes[0], sizes[1], X, x_col, Y, y_col, act, accumulate, tile, G, g_col)
            else:
                linear_task(W, layer, w_row, sizes[0], sizes[1], X, x_col, Y, y_col, act, accumulate, tile)
        elif ti.static(gated):
            linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, accumulate, tile, G, g_col)
        else:
            linear_task(W, layer, w_row, n_out, n_in, X, x_col, Y, y_col, act, accumulate, tile)
    return run


@functools.cache
def shift_mix_runner(n_mix: int, out_col: int, keep_delta: bool = False):
    from kernels.layer_norms import shift_mix_task

    @kernel
    def run(x: ti.types.ndarray(), vec: ti.types.ndarray(), shift: ti.types.ndarray(), layer: ti.i32,
            plan: ti.types.ndarray(), out: ti.types.ndarray()):
        shift_mix_task(x, vec, layer, 0, 2, n_mix, shift, layer, plan, ref.LN_EPS, out, out_col, keep_delta)
    return run


@functools.cache
def gather_norm_runner():
    from kernels.layer_norms import gather_norm_task

    @kernel
    def run(x: ti.types.ndarray(), picks: ti.types.ndarray(), ln: ti.types.ndarray(), out: ti.types.ndarray()):
        gather_norm_task(x, picks, ln, ref.LN_EPS, out)
    return run


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


# ---- kernels/lanes.py ----

@given(T=st.one_of(st.integers(1, 20), st.sampled_from([4, 5, 8, 16, 17, 64, 65, 130])),
       n_in=st.one_of(dims, st.sampled_from([31, 32, 33, 300, 513])), n_out=st.one_of(dims, st.sampled_from([64, 100])),
       offsets=st.tuples(st.integers(0, 3), st.integers(0, 5), st.integers(0, 4)),
       act=st.sampled_from(sorted(ACTIVATIONS)), accumulate=st.booleans(), f16=st.booleans(),
       tile=st.sampled_from([1, 8, 64]), gated=st.booleans(), seed=seeds, data=st.data())
def test_linear_task(T, n_in, n_out, offsets, act, accumulate, f16, tile, gated, seed, data):
    """Y[:, y_col:] (+)= act(X[:, x_col:x_col+in] W[layer, w_row:w_row+out, :in]ᵀ) vs ref.common.linear; `gated`:
    times G[:, g_col:g_col+out] (the v5/v6 channel mix's r · (k Wvᵀ)). Tile 64 on a GPU: kernels/gpu_gemm.py (several
    workgroups of positions and rows from T 65 and n_out 65 on; input steps part-filled past n_in 32)."""
    g_col = data.draw(st.integers(0, 3), label="g_col")
    L = data.draw(st.integers(1, 3), label="L")
    layer = data.draw(st.integers(0, L - 1), label="layer")
    check_linear_task(T, n_in, n_out, offsets, act, accumulate, f16, tile, gated, seed, g_col, L, layer)


@pytest.mark.parametrize("tile, T", [(1, 3), (8, 19)])
def test_linear_task_whole_steps_and_the_rest(tile, T):
    """n_in = 1100: several of dot_tile's whole (unconditional) steps on any subgroup size up to 32, then a
    guarded rest; positions past T in the last tile."""
    check_linear_task(T, 1100, 37, (1, 2, 3), "none", True, True, tile, False, 7, 0, 2, 1)


@pytest.mark.parametrize("n_out, act", [(16, "sigmoid"), (5, "none")])
def test_linear_task_split_rows(n_out, act):
    """Rows of SPLIT_COLUMNS + 37 at tile 1: on a GPU two lane groups per row add their halves through shared memory
    (n_out 16), unless the workgroups would not be whole (n_out 5: one group per row); gated and accumulated."""
    import kernels
    from kernels import lanes
    from kernels.quant import DENSE

    n_in = lanes.SPLIT_COLUMNS + 37
    if kernels.is_gpu():
        assert lanes.row_split(1, n_out, n_in, DENSE) == (2 if n_out == 16 else 1)
    check_linear_task(3, n_in, n_out, (1, 2, 3), act, True, True, 1, True, 11, 1, 2, 1, static_sizes=True)


@functools.cache
def gemm_runner(shape, route: tuple, n_out: int, n_in: int):
    """A kernel running gpu_gemm.gemm_task in workgroup shape `shape`, gated and accumulated."""
    from kernels import gpu_gemm

    @kernel
    def run(W: ti.types.ndarray(), layer: ti.i32, X: ti.types.ndarray(), Y: ti.types.ndarray(),
            G: ti.types.ndarray(), P: ti.types.ndarray()):
        gpu_gemm.gemm_task(W, layer, 1, n_out, n_in, X, route, Y, True, G, 2, shape=shape,
                           parts=(P, 5) if ti.static(shape.splits > 1) else None)
    return run


@pytest.mark.parametrize("name, n_out, splits", [
    ("PREFILL", 100, 1), ("PREFILL_WIDE", 100, 1), ("BATCH", 100, 1), ("BATCH_WIDE", 100, 1), ("LOW_RANK", 100, 7),
    ("LOW_RANK/2", 100, 2), ("PREFILL_WIDE/3", 100, 3), ("BATCH_WIDE/2", 100, 2), ("BATCH_WIDE/2", 1024, 1)])
def test_gemm_task_shapes(name, n_out, splits):
    """gpu_gemm.gemm_task in each workgroup shape the engine uses (the wide ones take products of WIDE_OUT rows and
    more, which no test model has, and split ones): a route of two blocks, each reading its own input columns and
    writing its own output columns with its own activation (rows 0-63, 64 on), gated and accumulated; 133 positions
    and 100 rows end part-way through position and row blocks, 140 inputs part-way through a step, and every group
    of a shape without splits takes at least one step. Split products keep their sums from column 5 of a parts
    array, and a pass splits a product as far as its threads stay below the shape's `fill` (`split_count`): LOW_RANK 7
    splits of 2, 2, 2, 2, 1 steps and two empty; "/N": at most N splits, here of 5 and 4 steps (BATCH_WIDE), 3 of 3
    (PREFILL_WIDE); 1024 rows of BATCH_WIDE fill the card unsplit, and the parts go unused."""
    from kernels import gpu_gemm
    shape = getattr(gpu_gemm, name.split("/")[0])
    if "/" in name:
        shape = shape._replace(splits=int(name.split("/")[1]))
    assert split_count(shape, 133, n_out, min(shape.rows, 64)) == splits
    check_gemm_task(shape, 133, n_out, 140)


@functools.cache
def split_counter(shape, n_out: int, rows: int):
    """A kernel writing gpu_gemm.split_count for a pass of X.shape[0] positions."""
    from kernels import gpu_gemm

    @kernel
    def count(X: ti.types.ndarray(), out: ti.types.ndarray()):
        for _ in range(1):
            out[0] = gpu_gemm.split_count(n_out, X.shape[0], rows, shape)
    return count


def split_count(shape, T: int, n_out: int, rows: int) -> int:
    """The splits of a product of n_out rows in a pass of T positions, as a kernel computes them."""
    out = dev(np.zeros(1, np.int32), ti.i32)
    split_counter(shape, n_out, rows)(dev(np.zeros((T, 1), np.float32)), out)
    return int(out.to_numpy()[0])


def test_split_counts():
    """The splits a pass gives products with room for four (the output and channel-mix products of C = 2048 rows) on
    the H100's measure (`Tiling.fill`): four in a 256-token chunk, two in 512, none in 1024; two at batch 32; a
    product of 7168 rows none."""
    from kernels import gpu_gemm, lanes
    if lanes.LANES == 1:
        pytest.skip("the CPU runs the lane kernels")
    for tile, T, n_out, want in ((64, 256, 2048, 4), (64, 512, 2048, 2), (64, 1024, 2048, 1), (32, 32, 2048, 2),
                                 (64, 256, 7168, 1), (32, 32, 7168, 1)):
        shape = gpu_gemm.shape_for(tile, n_out, room=4 * n_out)
        assert shape.splits == 4
        assert split_count(shape, T, n_out, shape.rows) == want, (tile, T, n_out)
    assert gpu_gemm.shape_for(64, 2048).splits == 1  # no room, no splits


@pytest.mark.parametrize("picks", [3, 40, 130])
def test_head_kernel(picks):
    """kernels/head.py: logits = LN_out(x[picks]) W_headᵀ (ref.common.layer_norm, linear), a pick of -1 giving
    zero logits (a row absent from the pass); its sizes come from the arrays at run time. 40 and 130 picks take
    gpu_gemm's BATCH and PREFILL shapes on a GPU (engine.pass_tile), as a batch decode step and a prefill that asks
    for every position's logits."""
    from kernels.engine import pass_tile
    from kernels.head import head_kernel

    rng = rng_of(picks)
    T, C, V = picks + 5, 24, 70
    x, ln, W = normal(rng, T, C), normal(rng, 1, 2, C), normal(rng, 1, V, C, scale=0.3).astype(np.float16)
    chosen = rng.permutation(T)[:picks].astype(np.int32)
    chosen[1] = -1
    logits = dev(np.zeros((picks, V), np.float32))
    head_kernel(pass_tile(picks))(dev(x), dev(chosen), dev(ln), dev(W, ti.f16), dev(np.zeros((picks, C), np.float32)),
                                  logits, ref.LN_EPS)
    normed = ref.layer_norm(f64(x[np.maximum(chosen, 0)]), f64(ln[0, 0]), f64(ln[0, 1]), ref.LN_EPS)
    normed[chosen < 0] = 0.0
    W = f64(W[0])
    assert_close(logits.to_numpy(), ref.linear(normed, W), np.abs(normed) @ np.abs(W).T)


@pytest.mark.parametrize("task", ["gemm groups", "split rows", "common blocks"])
def test_workgroup_tasks_take_several_items(task):
    """Tasks whose workgroups share memory, with more work items than Taichi's Vulkan grid (131072 threads: past it,
    each thread takes items thread, thread + 131072, ...; on CUDA `lanes.THREADS`): a thread's next item must not
    write the workgroup's memory before its last item's reads are done. gemm_task's groups adding their sums (BATCH,
    163840 items; the head at batch 32 has 524288), `row_split`'s halves, and common.linear's blocks."""
    import kernels
    from kernels import common, gpu_gemm, lanes
    from kernels.quant import DENSE
    if not kernels.is_gpu():
        pytest.skip("GPU tasks (workgroup memory and barriers)")
    if task == "gemm groups":
        check_gemm_task(gpu_gemm.BATCH, 133, 2048, 40)
    elif task == "split rows":
        n_out = (131072 // (3 * 2 * lanes.LANES) // 64 + 2) * 64  # 3 positions, two lane groups a row
        assert lanes.row_split(1, n_out, lanes.SPLIT_COLUMNS + 5, DENSE) == 2
        check_linear_task(3, lanes.SPLIT_COLUMNS + 5, n_out, (1, 2, 3), "none", True, True, 1, True, 11, 1, 1, 0,
                          static_sizes=True)
    else:
        rng = rng_of(3)
        x, W, y0 = normal(rng, 2, 24), normal(rng, 1100, 24), normal(rng, 2, 1100)  # 2 · 1100 · BLOCK items
        y = dev(y0)
        common.linear(dev(x), dev(W), y, ACTIVATIONS["none"][0], True)
        s = f64(x) @ f64(W).T
        assert_close(y.to_numpy(), f64(y0) + s, np.abs(f64(x)) @ np.abs(f64(W)).T + np.abs(f64(y0)))


def check_gemm_task(shape, T: int, n_out: int, n_in: int):
    """gemm_task in `shape` against ref.linear: a route of two blocks, rows 0-63 (sigmoid) and 64 on (relu²), each
    reading its own input columns and writing its own output columns, gated and accumulated."""
    import kernels
    from kernels import gpu_gemm
    if not kernels.is_gpu():
        pytest.skip("a GPU task (workgroup memory and barriers): the CPU runs the lane kernels")
    blocks = ((0, 64, 3, 0, "sigmoid"), (64, n_out, 110, 70, "relu_squared"))  # first, end, x_col, y_col, act
    route = tuple((first, x_col, y_col, ACTIVATIONS[act][0]) for first, _, x_col, y_col, act in blocks)
    assert gpu_gemm.block_rows(route, shape) == min(shape.rows, 64)
    rng = rng_of(13)
    W = normal(rng, 2, n_out + 3, n_in + 2, scale=n_in ** -0.5).astype(np.float16).astype(np.float32)
    X, Y0, G = normal(rng, T, 115 + n_in), normal(rng, T, 10 + n_out), normal(rng, T, n_out + 3)
    Y = dev(Y0)
    parts = dev(np.full((T, 5 + shape.splits * n_out), np.nan, np.float32))  # every part read is written first
    gemm_runner(shape, route, n_out, n_in)(dev(W, ti.f16), 1, dev(X), Y, dev(G), parts)
    expected, terms = f64(Y0).copy(), np.abs(f64(Y0))
    for first, end, x_col, y_col, act in blocks:
        used_W, used_X = f64(W[1, 1 + first:1 + end, :n_in]), f64(X[:, x_col:x_col + n_in])
        s, gate = ref.linear(used_X, used_W), f64(G[:, 2 + first:2 + end])
        scale = 2 * np.abs(s) if act == "relu_squared" else 1.0
        cols = slice(y_col, y_col + end - first)
        expected[:, cols] += ACTIVATIONS[act][1](s) * gate
        terms[:, cols] += (np.abs(used_X) @ np.abs(used_W).T) * scale * np.abs(gate)
    assert_close(Y.to_numpy(), expected, terms)


def check_linear_task(T, n_in, n_out, offsets, act, accumulate, f16, tile, gated, seed, g_col, L, layer,
                      static_sizes=False):
    w_row, x_col, y_col = offsets
    rng = rng_of(seed)
    W = normal(rng, L, w_row + n_out + 2, n_in + 3, scale=n_in ** -0.5)  # wider than used: the offsets must hold
    if f16:
        W = W.astype(np.float16).astype(np.float32)
    X, Y0 = normal(rng, T, x_col + n_in + 1), normal(rng, T, y_col + n_out + 2)
    G = normal(rng, T, g_col + n_out + 1)
    code, fn = ACTIVATIONS[act]
    Y = dev(Y0)
    linear_runner(code, accumulate, tile, gated, (n_out, n_in) if static_sizes else ())(dev(W, ti.f16 if f16 else ti.f32), layer, w_row, n_out, n_in,
                                                 dev(X), x_col, Y, y_col, dev(G), g_col)
    used_W, used_X = f64(W[layer, w_row:w_row + n_out, :n_in]), f64(X[:, x_col:x_col + n_in])
    s = ref.linear(used_X, used_W)
    terms = np.abs(used_X) @ np.abs(used_W).T
    if act == "relu_squared":
        terms = 2 * terms * np.abs(s)
    gate = f64(G[:, g_col:g_col + n_out]) if gated else 1.0
    terms = terms * np.abs(gate)
    expected = f64(Y0).copy()
    expected[:, y_col:y_col + n_out] = fn(s) * gate + (Y0[:, y_col:y_col + n_out] if accumulate else 0)
    all_terms = np.abs(expected)
    all_terms[:, y_col:y_col + n_out] = terms + (np.abs(Y0[:, y_col:y_col + n_out]) if accumulate else 0)
    assert_close(Y.to_numpy(), expected, all_terms)


@given(lengths=plans(max_rows=4, max_len=5), L=st.integers(1, 3), C=st.one_of(dims, st.sampled_from([64, 100, 1100])),
       n_mix=st.sampled_from([1, 2, 6]), keep_delta=st.booleans(), seed=seeds, data=st.data())
def test_shift_mix_task(lengths, L, C, n_mix, keep_delta, seed, data):
    """out = lerp_previous(z, previous_tokens(z, state)) for each mix, z = layer_norm(x) per row, and with
    `keep_delta` one more block prev - z; the state gets z at each row's last position."""
    layer = data.draw(st.integers(0, L - 1), label="layer")
    rng = rng_of(seed)
    plan, B = make_plan(lengths), len(lengths)
    x = normal(rng, plan.T, C)
    vec = normal(rng, L, 2 + n_mix, C)  # rows: LN weight, LN bias, then the mixes
    vec[:, 2:] = rng.uniform(0, 1, (L, n_mix, C))
    shift0 = normal(rng, B, L, C)
    out_col, blocks = 3, n_mix + keep_delta
    out, shift = dev(np.zeros((plan.T, out_col + blocks * C), np.float32)), dev(shift0)
    shift_mix_runner(n_mix, out_col, keep_delta)(dev(x), dev(vec), shift, layer, plan.packed, out)
    expected_out, expected_shift = np.zeros((plan.T, n_mix * C)), f64(shift0).copy()
    expected_delta, delta_terms = np.zeros((plan.T, C)), np.zeros((plan.T, C))
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x[a:z]), f64(vec[layer, 0]), f64(vec[layer, 1]))
        prev = ref.previous_tokens(normed, f64(shift0[b, layer]))
        for m in range(n_mix):
            expected_out[a:z, m * C:(m + 1) * C] = ref.lerp_previous(normed, prev, f64(vec[layer, 2 + m]))
        expected_delta[a:z], delta_terms[a:z] = prev - normed, np.abs(prev) + np.abs(normed)
        expected_shift[b, layer] = normed[-1]
    got = out.to_numpy()[:, out_col:]
    assert_close(got[:, :n_mix * C], expected_out)
    if keep_delta:  # a difference: its rounding is relative to |prev| + |z|, not to the (maybe tiny) result
        assert_close(got[:, n_mix * C:], expected_delta, delta_terms)
    assert_close(shift.to_numpy(), expected_shift)


@given(T=st.integers(1, 12), C=st.one_of(dims, st.sampled_from([64, 129, 1100])), seed=seeds, data=st.data())
def test_gather_norm_task(T, C, seed, data):
    """out[k] = layer_norm(x[picks[k]]) (ln_out), zeros where picks[k] is -1."""
    picks = np.array(data.draw(st.lists(st.integers(-1, T - 1), min_size=1, max_size=8), label="picks"), np.int32)
    rng = rng_of(seed)
    x, ln = normal(rng, T, C), normal(rng, 1, 2, C)
    out = dev(np.full((len(picks), C), 7.0, np.float32))
    gather_norm_runner()(dev(x), dev(picks), dev(ln), out)
    expected = np.zeros((len(picks), C))
    for k, t in enumerate(picks):
        if t >= 0:
            expected[k] = ref.layer_norm(f64(x[t]), f64(ln[0, 0]), f64(ln[0, 1]))
    assert_close(out.to_numpy(), expected)


# ---- kernels/norm_linear.py ----

@functools.cache
def norm_linear_runner(n_in: int, n_out: int, act: int):
    from kernels import norm_linear

    @kernel
    def run(x: ti.types.ndarray(), vec: ti.types.ndarray(), shift: ti.types.ndarray(), layer: ti.i32,
            plan: ti.types.ndarray(), W: ti.types.ndarray(), Y: ti.types.ndarray(), kept: ti.types.ndarray()):
        norm_linear.norm_mix_linear_task(x, vec, layer, 0, 2, shift, layer, plan, ref.LN_EPS, W, 1, n_out, n_in, Y, 2,
                                         act, kept, 3)
    return run


# two shapes only: each (C, n_out, act) compiles a kernel of its own (~13 s on lavapipe)
@given(lengths=plans(max_rows=3, max_len=4), case=st.sampled_from([(40, 70, "sigmoid"), (600, 70, "none")]),
       seed=seeds, data=st.data())
def test_norm_mix_linear_task(lengths, case, seed, data):
    """A GPU decode pass's folded LayerNorm, token shift, mix and matrix (kernels/norm_linear.py): Y = act(lerp(z,
    prev, mix) Wᵀ), z = layer_norm(x) per row, prev = previous_tokens(z, state); z kept in scratch. Ragged rows of up
    to 4 tokens (a tile-1 pass), rows longer than a workgroup's threads (600 > 512), row blocks part-filled."""
    import kernels
    if not kernels.is_gpu():
        pytest.skip("a GPU task (workgroup memory and barriers): the CPU runs the LayerNorm task instead")
    C, n_out, act = case
    layer = data.draw(st.integers(0, 1), label="layer")
    rng = rng_of(seed)
    plan, B = make_plan(lengths), len(lengths)
    x, shift0 = normal(rng, plan.T, C), normal(rng, B, 2, C)
    vec = normal(rng, 2, 3, C)  # rows: LN weight, LN bias, the mix
    vec[:, 2] = rng.uniform(0, 1, (2, C))
    W = normal(rng, 2, n_out + 2, C, scale=C ** -0.5).astype(np.float16).astype(np.float32)
    Y, kept = dev(np.zeros((plan.T, n_out + 3), np.float32)), dev(np.zeros((plan.T, C + 3), np.float32))
    code, fn = ACTIVATIONS[act]
    norm_linear_runner(C, n_out, code)(dev(x), dev(vec), dev(shift0), layer, plan.packed, dev(W, ti.f16), Y, kept)
    mixed, normed = np.zeros((plan.T, C)), np.zeros((plan.T, C))
    for b, (a, z) in enumerate(segments(lengths)):
        normed[a:z] = ref.layer_norm(f64(x[a:z]), f64(vec[layer, 0]), f64(vec[layer, 1]))
        prev = ref.previous_tokens(normed[a:z], f64(shift0[b, layer]))
        mixed[a:z] = ref.lerp_previous(normed[a:z], prev, f64(vec[layer, 2]))
    used_W = f64(W[layer, 1:1 + n_out])
    assert_close(Y.to_numpy()[:, 2:2 + n_out], fn(ref.linear(mixed, used_W)), np.abs(mixed) @ np.abs(used_W).T)
    assert_close(kept.to_numpy()[:, 3:], normed)


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
    """r, k, v = linear(x_r|x_k|x_v, W) (k into K_RAW); tanh(x_w w1ᵀ), x_a a1ᵀ, σ(x_g g1ᵀ), x_v v1ᵀ (ref.v7.time_mix)."""
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
    for part, (mix, fn) in enumerate(((v7.MIX_W, np.tanh), (v7.MIX_A, None), (v7.MIX_G, ref.sigmoid), (v7.MIX_V, None))):
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


# ---- kernels/v6.py (RWKV-6, and RWKV-5 through the same kernel) ----
# Each test runs the real layer kernel with only the tasks under test (`layer_kernel(shape, tile, tasks)`) on
# weights packed by `device_blocks` from random canonical blocks, so the load-time packing (v6's r, k, v, g, w block
# order, v5's 1 - mix) is checked with each task. With f16 the matrices are rounded to f16 first: the kernel and the
# reference then see the same numbers.

VERSIONS_5_6 = ("v6", "v5.2", "v5.0")  # v5.1 is read as v5.2 (spec/v5.md §1)


def v56_blocks(rng, version, H, N, F, Dm, Dd, f16, L=2):
    """L random canonical blocks of `version` (only what each version has: v5.0 no gate, v5 no LoRAs)."""
    from ai00ref.weights.canonical import Block, ChannelMix, LayerNorm, V5TimeMix, V6TimeMix

    C = H * N

    def mat(*shape, gain=1.0):  # a matrix the device keeps in the matrix dtype
        m = normal(rng, *shape, scale=gain * shape[-1] ** -0.5)
        return m.astype(np.float16).astype(np.float32) if f16 else m

    def unit(*shape):
        return rng.uniform(0, 1, shape).astype(np.float32)

    def norm():
        return LayerNorm(rng.uniform(0.6, 1.4, C).astype(np.float32), normal(rng, C, scale=0.1))

    blocks = []
    for _ in range(L):
        ffn = ChannelMix(mix_k=unit(C), mix_r=unit(C), key=mat(F, C), value=mat(C, F), receptance=mat(C, C))
        bonus = rng.uniform(-1, 1, (H, N)).astype(np.float32)
        if version == "v6":
            att = V6TimeMix(maa_x=unit(C), maa_wkvrg=unit(5, C), maa_w1=mat(5 * Dm, C, gain=2.0),
                            maa_w2=mat(5, C, Dm), decay=rng.uniform(-4, 1, C).astype(np.float32),
                            decay_w1=mat(Dd, C), decay_w2=mat(C, Dd), bonus=bonus, key=mat(C, C), value=mat(C, C),
                            receptance=mat(C, C), gate=mat(C, C), output=mat(C, C), ln_x=norm())
        else:
            gated = version != "v5.0"
            att = V5TimeMix(mix_k=unit(C), mix_v=unit(C), mix_r=unit(C), mix_g=unit(C) if gated else None,
                            decay=np.exp(-np.exp(rng.uniform(-4, 1, (H, N)))).astype(np.float32), bonus=bonus,
                            key=mat(C, C), value=mat(C, C), receptance=mat(C, C),
                            gate=mat(C, C) if gated else None, output=mat(C, C), ln_x=norm())
        blocks.append(Block(ln1=norm(), att=att, ln2=norm(), ffn=ffn))
    return blocks


def quantized_blocks(blocks, scheme, dequantize=False):
    """The blocks with weights.canonical's QUANTIZED_MATRICES quantized (or quantized and dequantized back)."""
    import dataclasses

    from ai00ref.weights.quant import quantize

    def part(module, names):
        done = {n: quantize(getattr(module, n), scheme) for n in names if getattr(module, n, None) is not None}
        return dataclasses.replace(module, **{n: q.dequantize() if dequantize else q for n, q in done.items()})

    return [dataclasses.replace(b, att=part(b.att, ("key", "value", "receptance", "gate", "output")),
                                ffn=part(b.ffn, ("key", "value", "receptance"))) for b in blocks]


def v56_layers(version, blocks, f16):
    from kernels import v5, v6

    stacked = (v6 if version == "v6" else v5).device_blocks(blocks, ti.f16 if f16 else ti.f32)
    assert len(stacked.groups) == 1  # a small model is one group: weight slot == layer
    return stacked.groups[0]


def run_v56(layers, tasks, layer, plan, tile=1, x=None, att_x=None, S=None, ffn_x=None, sc=None):
    """The layer kernel holding only `tasks`, once; returns the host arrays x, att_x, S, ffn_x, sc after it."""
    from kernels import v6
    from kernels.stacking import layer_arrays

    s = layers.shape
    T, B = plan.T, len(plan.lengths_host)
    defaults = (np.zeros((T, s.C)), np.zeros((B, 2, s.C)), np.zeros((B, 2, s.H, s.N, s.N)), np.zeros((B, 2, s.C)),
                np.zeros((T, s.WIDTH)))
    arrays = [dev(a if a is not None else d) for a, d in zip((x, att_x, S, ffn_x, sc), defaults)]
    x_d, att_x_d, S_d, ffn_x_d, sc_d = arrays
    v6.layer_kernel(s, tile, tuple(tasks), layers.storage)(x_d, *layer_arrays(layers), att_x_d, S_d, ffn_x_d,
                                                           plan.packed, sc_d, layer, layer)
    return [a.to_numpy() for a in arrays]


def block_of(array, start, C):
    return f64(array[:, start:start + C])


# Sizes (H, N, F, Dm, Dd) from a fixed pool: each distinct size compiles the layer kernel anew (its Shape is a
# compile-time argument: several seconds on lavapipe), so the pool holds the edge cases (one head of one channel;
# sizes that fill no lane group evenly; several heads, wide FFN and LoRAs) and hypothesis varies the values, plans,
# versions, precisions and layers within them.
V56_SIZES = ((1, 1, 1, 1, 1), (3, 12, 20, 6, 6), (2, 5, 7, 2, 3))
v56_case = dict(version=st.sampled_from(VERSIONS_5_6), sizes=st.sampled_from(V56_SIZES), f16=st.booleans(),
                layer=st.integers(0, 1), seed=seeds)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks shift_mix, maa_lora, data_mix vs ref.v6.token_shift_mixes on z = layer_norm(x; ln1) and its token
    shift, per row (v5: its static mixes, ref lerp_current); the state gets z at each row's last position. In a GPU
    decode pass (v6) the three are two tasks (kernels/norm_linear.py: folded_maa_task stages xxx in workgroup memory
    and leaves z in MIXED's first block)."""
    check_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed)


@pytest.mark.parametrize("tile", [32, 64])
def test_v6_token_shift_mixes_as_tiled_products(tile):
    """A GPU batch (tile 32) or prefill (tile 64) pass: data_mix as a tiled product (kernels/gpu_gemm.py) of five
    route blocks, each reading its own columns of the same W2 rows, all gated by DELTA (C = 32: the blocks start on
    multiples of the workgroups' rows); maa_lora (30 rows) split over its inputs in 2 workgroups of one step each (F
    = 60 columns of partial sums: `gpu_gemm.low_rank_shape`); 70 positions in three rows."""
    import kernels
    from kernels import gpu_gemm, v6, v6_layout

    sizes = (2, 16, 60, 6, 6)
    if kernels.is_gpu():
        assert gpu_gemm.takes(tile, 5 * 32, v6.data_mix_route(v6_layout.Shape(32, 2, 60, 6, 6, True)))
        assert gpu_gemm.low_rank_shape(tile, 30, 60).splits == 2
    check_v6_token_shift_mixes((30, 12, 28), tile, "v6", sizes, True, 1, 3)


def check_v6_token_shift_mixes(lengths, tile, version, sizes, f16, layer, seed):
    from kernels import norm_linear
    from kernels import v6_layout as layout

    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C, plan = layers.shape, H * N, make_plan(lengths)
    x, att_x0 = normal(rng, plan.T, C), normal(rng, len(lengths), 2, C)
    _, att_x, _, _, sc = run_v56(layers, ("shift_mix", "maa_lora", "data_mix"), layer, plan, tile, x=x, att_x=att_x0)
    ln1 = blocks[layer].ln1
    expected_att_x = f64(att_x0).copy()
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x[a:z]), ln1.weight, ln1.bias)
        prev = ref.previous_tokens(normed, f64(att_x0[b, layer]))
        expected_att_x[b, layer] = normed[-1]
        got = lambda m: sc[a:z, s.MIXED + m * C:s.MIXED + (m + 1) * C]  # noqa: E731
        if version != "v6":
            mixes = ((layout.MIX_R, att.mix_r), (layout.MIX_K, att.mix_k), (layout.MIX_V, att.mix_v),
                     (layout.MIX_G, att.mix_g))
            for m, mix in mixes[:4 if s.gated else 3]:
                assert_close(got(m), ref.lerp_current(normed, prev, f64(mix)), np.abs(normed) + np.abs(prev))
            continue
        delta = np.abs(prev - normed)
        xxx = ref.lerp_previous(normed, prev, f64(att.maa_x))
        if norm_linear.takes(tile, layers.storage):  # folded: xxx stays in workgroup memory, z is kept
            assert_close(got(layout.MIX_X), normed)
        else:
            assert_close(got(layout.MIX_X), xxx, np.abs(normed) + np.abs(prev))
        expected = ref_v6.token_shift_mixes(normed, prev, att)  # (5, T, C) in the reference's w, k, v, r, g order
        W1 = f64(att.maa_w1).reshape(5, Dm, C)
        lora = np.tanh(xxx @ f64(att.maa_w1).T).reshape(-1, 5, Dm)
        for m, r in enumerate(layout.REF_ORDER):  # kernel block 1 + m is the reference's mix r
            W2 = np.abs(f64(att.maa_w2[r]))
            terms = np.abs(normed) + delta * (f64(att.maa_wkvrg[r]) + np.abs(lora[:, r]) @ W2.T
                                              + ((np.abs(normed) + np.abs(prev)) @ np.abs(W1[r]).T) @ W2.T)
            assert_close(got(layout.MIX_R + m), expected[r], terms)
    assert_close(att_x, expected_att_x)


@given(T=st.integers(1, 11), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed):
    """Tasks projections (and decay, v6) vs the linear lines of ref.v6/v5.time_mix, and ref.v6.decay on x_w."""
    check_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed)


@pytest.mark.parametrize("version, tile", [("v5.2", 64), ("v6", 64), ("v6", 32)])
def test_v6_projections_as_tiled_products(version, tile):
    """C = 64: the projections' route fits gpu_gemm's workgroups (PREFILL's 32 rows, BATCH's 16), so a GPU runs them
    as one tiled product, and v6's decay_w1 (16 rows) split over its inputs in 4 workgroups of one step each (F = 64
    columns of partial sums: `gpu_gemm.low_rank_shape`); 70 positions: several workgroups of positions, the last
    part-filled;
    several input steps (BATCH: shared by its groups)."""
    import kernels
    from kernels import gpu_gemm
    if kernels.is_gpu():
        assert gpu_gemm.low_rank_shape(tile, 16, 64).splits == 4
    check_v6_projections_and_decay(70, tile, version, (4, 16, 64, 4, 16), True, 1, 3)


def check_v6_projections_and_decay(T, tile, version, sizes, f16, layer, seed, scheme=None):
    """`scheme`: the blocks' quantizable matrices quantized (a quantized group: u32 `mats`, dense `low`), against
    the dequantized ones."""
    from kernels import v6_layout as layout

    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    if scheme:
        blocks, dequantized = quantized_blocks(blocks, scheme), quantized_blocks(blocks, scheme, dequantize=True)
    layers, att = v56_layers(version, blocks, f16), (dequantized if scheme else blocks)[layer].att
    s, C = layers.shape, H * N
    sc0 = normal(rng, T, s.WIDTH)
    *_, sc = run_v56(layers, ("projections", "decay"), layer, make_plan([T]), tile, sc=sc0)
    mixed = lambda m: block_of(sc0, s.MIXED + m * C, C)  # noqa: E731
    matrices = ((layout.MIX_R, att.receptance), (layout.MIX_K, att.key), (layout.MIX_V, att.value),
                (layout.MIX_G, att.gate))
    for p, (m, W) in enumerate(matrices[:4 if s.gated else 3]):
        W = f64(W)
        assert_close(block_of(sc, s.PROJ + p * C, C), ref.linear(mixed(m), W), np.abs(mixed(m)) @ np.abs(W).T)
    if version != "v6":
        return
    x_w, Wd1, Wd2 = mixed(layout.MIX_W), f64(att.decay_w1), f64(att.decay_w2)
    hidden = np.tanh(ref.linear(x_w, Wd1))
    first_terms = np.abs(x_w) @ np.abs(Wd1).T
    assert_close(block_of(sc, s.DECAY_LOW, Dd), hidden, first_terms)
    w = ref_v6.decay(x_w, att)
    exponent_terms = np.abs(att.decay) + (np.abs(hidden) + first_terms) @ np.abs(Wd2).T
    assert_close(block_of(sc, s.W, C), w, w + w * np.exp(att.decay + hidden @ Wd2.T) * exponent_terms)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
@example(lengths=[5, 2], tile=64, version="v6", sizes=V56_SIZES[1], f16=False, layer=1, seed=4)  # prefill WKV
@example(lengths=[3, 4], tile=64, version="v5.2", sizes=V56_SIZES[2], f16=True, layer=0, seed=5)
@example(lengths=[70, 0, 33], tile=64, version="v6", sizes=V56_SIZES[2], f16=False, layer=0, seed=6)  # long rows
def test_v6_wkv_and_gate(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks wkv and output_gate: ref.v5.wkv_step looped over each row of a ragged batch from a random state (v6
    with its per-token decay, the W column; v5 with the static one it was packed with), then group_norm(y; ln_x) ·
    silu(gate). On a GPU, tile 1 runs them as one task (wkv_gate_task), tile 8 as two (the WKV a thread per value
    column), tile 64 as two (the WKV a lane group per value column, lane_wkv_task)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C, plan, B = layers.shape, H * N, make_plan(lengths), len(lengths)
    T = plan.T
    sc0 = normal(rng, T, s.WIDTH)
    sc0[:, s.W:s.W + C] = rng.uniform(0, 1, (T, C))
    S0 = normal(rng, B, 2, H, N, N, scale=0.5)
    *_, S, _, sc = run_v56(layers, ("wkv", "output_gate"), layer, plan, tile, S=S0, sc=sc0)
    per_head = lambda start: block_of(sc0, start, C).reshape(T, H, N)  # noqa: E731
    r, k, v, w = (per_head(c) for c in (s.PROJ, s.PROJ + C, s.PROJ + 2 * C, s.W))
    expected_S, expected_y = f64(S0).copy(), np.zeros((T, C))
    for b, (start, stop) in enumerate(segments(lengths)):
        state = expected_S[b, layer]
        for t in range(start, stop):
            decay = w[t] if version == "v6" else f64(att.decay)
            y, state = ref_v5.wkv_step(r[t], k[t], v[t], state, decay, f64(att.bonus))
            expected_y[t] = y.reshape(C)
        expected_S[b, layer] = state
    assert_close(S, expected_S)
    normed = ref.group_norm(expected_y, H, f64(att.ln_x.weight), f64(att.ln_x.bias), ref.GN_EPS)
    gate = ref.silu(block_of(sc0, s.PROJ + 3 * C, C)) if version != "v5.0" else 1.0
    # the recurrence has no cheap |terms| (as test_v7_wkv_gate_task): y's, scaled up by GroupNorm's 1/σ per head
    spread = expected_y.reshape(T, H, N).std(-1, keepdims=True) + 1e-3
    y_scale = (np.abs(expected_y).sum() + 1.0) / expected_y.size ** 0.5
    terms = ((y_scale / spread + 1.0) * np.abs(f64(att.ln_x.weight)).reshape(H, N)).reshape(T, C) * np.abs(gate)
    assert_close(block_of(sc, s.Y, C), normed * gate, terms)


@given(T=st.integers(1, 10), **v56_case)
def test_v6_output_gate_task(T, version, sizes, f16, layer, seed):
    """group_norm(y; ln_x) * silu(x_g W_gᵀ) (ref.v6.time_mix, ref.v5.time_mix; v5.0: no gate)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, att = v56_layers(version, blocks, f16), blocks[layer].att
    s, C = layers.shape, H * N
    sc0 = normal(rng, T, s.WIDTH)
    *_, sc = run_v56(layers, ("output_gate",), layer, make_plan([T]), sc=sc0)
    normed = ref.group_norm(block_of(sc0, s.Y, C), H, f64(att.ln_x.weight), f64(att.ln_x.bias), ref.GN_EPS)
    gate = ref.silu(block_of(sc0, s.PROJ + 3 * C, C)) if version != "v5.0" else 1.0
    assert_close(block_of(sc, s.Y, C), normed * gate)


@given(lengths=plans(max_rows=3, max_len=5), tile=st.sampled_from([1, 8]), **v56_case)
def test_v6_channel_mix(lengths, tile, version, sizes, f16, layer, seed):
    """Tasks ffn_shift_mix, ffn_key, ffn_receptance, ffn_value: x += ref.v6.channel_mix(layer_norm(x; ln2), ...)
    per row (v5: ref.v4.channel_mix); the state gets the normed x at each row's last position. At tile 1 on a GPU,
    ffn_key and ffn_receptance run as one task (kernels/v6.py ffn_in_task)."""
    rng = rng_of(seed)
    H, N, F, Dm, Dd = sizes
    blocks = v56_blocks(rng, version, H, N, F, Dm, Dd, f16)
    layers, block = v56_layers(version, blocks, f16), blocks[layer]
    C, plan, ffn = H * N, make_plan(lengths), block.ffn
    x0, ffn_x0 = normal(rng, plan.T, C), normal(rng, len(lengths), 2, C)
    x, _, _, ffn_x, _ = run_v56(layers, ("ffn_shift_mix", "ffn_key", "ffn_receptance", "ffn_value"), layer, plan,
                                tile, x=x0, ffn_x=ffn_x0)
    expected, terms, expected_ffn_x = f64(x0).copy(), np.abs(f64(x0)), f64(ffn_x0).copy()
    channel_mix = ref_v6.channel_mix if version == "v6" else ref_v4.channel_mix
    Wk, Wv, Wr = (np.abs(f64(W)) for W in (ffn.key, ffn.value, ffn.receptance))
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x0[a:z]), block.ln2.weight, block.ln2.bias)
        out, expected_ffn_x[b, layer] = channel_mix(normed, f64(ffn_x0[b, layer]), ffn)
        expected[a:z] += out
        inputs = np.abs(normed) + np.abs(ref.previous_tokens(normed, f64(ffn_x0[b, layer])))  # bounds |x_k|, |x_r|
        key_terms = inputs @ Wk.T  # bounds |x_k W_kᵀ| and its summands
        # relu²'s value and its rounding (2|s|·δs) through W_v, then the receptance's rounding times |r·(k W_vᵀ)|
        terms[a:z] += (3 * key_terms ** 2) @ Wv.T + (inputs @ Wr.T) * np.abs(out)
    assert_close(x, expected, terms)
    assert_close(ffn_x, expected_ffn_x)
