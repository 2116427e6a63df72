"""The lane tasks of `kernels/lanes.py`, the tiled products of `kernels/gpu_gemm.py` (and the head, which runs
them), and `kernels/norm_linear.py`, each against the reference function it mirrors. The layer tasks of
`kernels/v7.py` and `kernels/v6.py` (RWKV-6 and -5): tests/test_kernels_v7_tasks.py, test_kernels_v56_tasks.py.
Arch: env AI00REF_TAICHI_ARCH (tests/taichi_arch.py).

Every task is a `ti.func`; a small wrapper kernel per test runs it alone. Tolerances as
tests/test_kernels_common_v7.py (spec/tolerances.md, "Taichi kernels"): every element within 1e-5·‖ref‖₂ +
1e-6·‖|terms|‖₂ of a float64 reference computed on the very inputs the kernel gets. Shapes are drawn so that rows
end part-way through a lane group (LANES is 32 on CUDA, the subgroup size on Vulkan, 1 on the CPU) and token tiles
end part-filled.
"""

import functools

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

import taichi_arch

ti = taichi_arch.import_taichi()

from kernels.launch import kernel  # noqa: E402  (a test kernel runs on the runtime in use, as the engine's do)

from ai00ref.ref import common as ref  # noqa: E402
from test_kernels_common_v7 import (ACTIVATIONS, assert_close, dev, dims, make_plan, normal, plans,  # noqa: E402
                                    f64, rng_of, seeds, segments)

pytestmark = [pytest.mark.taichi, pytest.mark.usefixtures("taichi_arch")]  # Taichi started first


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
def shift_mix_runner(n_mix: int, out_col: int, keep_delta: bool, stats_col: int):
    from kernels.layer_norms import shift_mix_task

    @kernel
    def run(x: ti.types.ndarray(), vec: ti.types.ndarray(), shift: ti.types.ndarray(), layer: ti.i32,
            plan: ti.types.ndarray(), out: ti.types.ndarray()):
        shift_mix_task(x, vec, layer, 0, 2, n_mix, shift, layer, plan, ref.LN_EPS, out, out_col, stats_col,
                       keep_delta)
    return run


@functools.cache
def gather_norm_runner():
    from kernels.layer_norms import gather_norm_task

    @kernel
    def run(x: ti.types.ndarray(), picks: ti.types.ndarray(), ln: ti.types.ndarray(), out: ti.types.ndarray()):
        gather_norm_task(x, picks, ln, ref.LN_EPS, out)
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

    n_in = lanes.SPLIT_COLUMNS + 37
    if kernels.is_gpu():
        assert lanes.row_split(1, n_out, n_in) == (2 if n_out == 16 else 1)
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
    (PREFILL_WIDE); 1024 rows of BATCH_WIDE fill the card unsplit, and the parts go unused. The register tiles come
    in runs of 1 (PREFILL, LOW_RANK), 2 (PREFILL_WIDE, BATCH_WIDE: several runs a thread) and 4 (BATCH: one run),
    `Tiling.run`."""
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
    the H100's measure (`Tiling.fill`): four in a 256-token chunk, two in 512, none in 1024; four at batch 32
    (BATCH_WIDE has 128 threads a workgroup); a product of 7168 rows none."""
    from kernels import gpu_gemm, lanes
    if lanes.LANES == 1:
        pytest.skip("the CPU runs the lane kernels")
    for tile, T, n_out, want in ((64, 256, 2048, 4), (64, 512, 2048, 2), (64, 1024, 2048, 1), (32, 32, 2048, 4),
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
    if not kernels.is_gpu():
        pytest.skip("GPU tasks (workgroup memory and barriers)")
    if task == "gemm groups":
        check_gemm_task(gpu_gemm.BATCH, 133, 2048, 40)
    elif task == "split rows":
        n_out = (131072 // (3 * 2 * lanes.LANES) // 64 + 2) * 64  # 3 positions, two lane groups a row
        assert lanes.row_split(1, n_out, lanes.SPLIT_COLUMNS + 5) == 2
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
    run = linear_runner(code, accumulate, tile, gated, (n_out, n_in) if static_sizes else ())
    run(dev(W, ti.f16 if f16 else ti.f32), layer, w_row, n_out, n_in, dev(X), x_col, Y, y_col, dev(G), g_col)
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
       n_mix=st.sampled_from([1, 2, 6]), keep_delta=st.booleans(), kept_stats=st.booleans(), seed=seeds,
       data=st.data())
def test_shift_mix_task(lengths, L, C, n_mix, keep_delta, kept_stats, seed, data):
    """out = lerp_previous(z, previous_tokens(z, state)) for each mix, z = layer_norm(x) per row, and with
    `keep_delta` one more block prev - z; the state gets z at each row's last position. With `kept_stats` (a prefill
    pass's form, `layer_norms.stats_column`) out's columns 0 and 1 keep each position's LayerNorm statistics (mean,
    1/sqrt(var + eps)) on the way; without, each piece of channels makes them itself and they stay untouched."""
    layer = data.draw(st.integers(0, L - 1), label="layer")
    rng = rng_of(seed)
    plan, B = make_plan(lengths), len(lengths)
    x = normal(rng, plan.T, C)
    vec = normal(rng, L, 2 + n_mix, C)  # rows: LN weight, LN bias, then the mixes
    vec[:, 2:] = rng.uniform(0, 1, (L, n_mix, C))
    shift0 = normal(rng, B, L, C)
    out_col, blocks = 3, n_mix + keep_delta
    out, shift = dev(np.zeros((plan.T, out_col + blocks * C), np.float32)), dev(shift0)
    shift_mix_runner(n_mix, out_col, keep_delta, 0 if kept_stats else -1)(dev(x), dev(vec), shift, layer, plan.packed,
                                                                           out)
    expected_out, expected_shift = np.zeros((plan.T, n_mix * C)), f64(shift0).copy()
    expected_delta, delta_terms = np.zeros((plan.T, C)), np.zeros((plan.T, C))
    for b, (a, z) in enumerate(segments(lengths)):
        normed = ref.layer_norm(f64(x[a:z]), f64(vec[layer, 0]), f64(vec[layer, 1]))
        prev = ref.previous_tokens(normed, f64(shift0[b, layer]))
        for m in range(n_mix):
            expected_out[a:z, m * C:(m + 1) * C] = ref.lerp_previous(normed, prev, f64(vec[layer, 2 + m]))
        expected_delta[a:z], delta_terms[a:z] = prev - normed, np.abs(prev) + np.abs(normed)
        expected_shift[b, layer] = normed[-1]
    centered, stats = f64(x) - f64(x).mean(axis=1, keepdims=True), out.to_numpy()[:, :2]
    if kept_stats:
        assert_close(stats[:, 0], f64(x).mean(axis=1), np.abs(f64(x)).mean(axis=1))
        assert_close(stats[:, 1], 1 / np.sqrt((centered ** 2).mean(axis=1) + ref.LN_EPS))
    else:
        assert not stats.any()
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
