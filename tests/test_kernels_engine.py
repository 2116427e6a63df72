"""The Taichi engine's own machinery: graph replay equals eager launches, and one graph serves any state."""
from __future__ import annotations

import numpy as np
import pytest

import ai00ref
from ai00ref.weights.random_model import RandomModelSpec, write_random_model
from taichi_arch import SLOW

pytestmark = pytest.mark.taichi
VARIANTS = ["v4", "v5.2", "v6", "v7"]
# The conformance fixtures' small shape (L2 C64 N16 V256): the engine-level tests reuse the kernels their tests compiled
# (compiling is most of the Vulkan suite's time on lavapipe); other shapes are the kernel-level tests' business.
SMALL = dict(n_embd=64, n_vocab=256, head_size=16)


@pytest.fixture(scope="module")
def models(taichi_arch, tmp_path_factory):
    directory = tmp_path_factory.mktemp("engine")
    loaded = {}
    for variant in VARIANTS:
        path = write_random_model(RandomModelSpec(variant, n_layer=2, **SMALL),
                                  directory / f"{variant}.st")
        loaded[variant] = (ai00ref.load_model(path, backend="taichi", arch=taichi_arch, graph=True),
                           ai00ref.load_model(path, backend="taichi", arch=taichi_arch, graph=False))
    return loaded


@pytest.mark.parametrize("variant", VARIANTS)
def test_graph_replay_equals_eager_launches(models, variant):
    graph, eager = models[variant]
    rows = [[1, 2, 3], [4], [5, 6]]
    lg, sg = graph.forward(rows, graph.new_state(3))
    le, se = eager.forward(rows, eager.new_state(3))
    np.testing.assert_array_equal(lg, le)
    for _ in range(3):  # the same decode shape replays one graph
        lg, sg = graph.forward([[7], [8], [9]], sg)
        le, se = eager.forward([[7], [8], [9]], se)
        np.testing.assert_array_equal(lg, le)
    for b in range(3):
        for x, y in zip(sg.to_official(b), se.to_official(b)):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("variant", VARIANTS)
def test_one_graph_serves_different_states(models, variant):
    """A recorded pass replayed with other states' arrays reads and writes those (kernels/vk/replay.py: NVIDIA's
    driver kept the recorded ones when the descriptors were rewritten), as eager launches do."""
    graph, eager = models[variant]
    _, first = graph.forward([[1, 2]], graph.new_state(1))
    _, second = graph.forward([[9, 8, 7]], graph.new_state(1))
    _, first_e = eager.forward([[1, 2]], eager.new_state(1))
    _, second_e = eager.forward([[9, 8, 7]], eager.new_state(1))
    from_first, after_first = graph.forward([[5]], first)  # the (1,) decode graph, recorded with `first`'s copy
    from_second, after_second = graph.forward([[5]], second)  # replayed with `second`'s copy's arrays
    again, _ = graph.forward([[5]], first)
    assert not np.allclose(from_first, from_second)
    np.testing.assert_array_equal(again, from_first)
    np.testing.assert_array_equal(from_first, eager.forward([[5]], first_e)[0])
    np.testing.assert_array_equal(from_second, eager.forward([[5]], second_e)[0])
    for got, state_e in ((after_first, first_e), (after_second, second_e)):
        _, want = eager.forward([[5]], state_e)
        for x, y in zip(got.to_official(0), want.to_official(0)):
            np.testing.assert_array_equal(x, y)


def test_inplace_forward_updates_the_given_state(models):
    graph, _ = models["v7"]
    state = graph.new_state(1)
    copy_logits, copy_state = graph.forward([[3, 4]], state)
    assert not np.any(state.to_host().att_x)  # untouched
    logits, same = graph.forward([[3, 4]], state, inplace=True)
    assert same is state and np.any(state.to_host().att_x)
    np.testing.assert_array_equal(logits, copy_logits)


@pytest.mark.parametrize("lengths, chunk", [((5, 1, 3), 4), ((1,) * 10, 4), ((40, 2), 8), ((7,), 256), ((3, 0, 2), 2)])
def test_split_passes_shares_each_chunk_and_consumes_every_token(lengths, chunk):
    from kernels.engine import split_passes

    passes = split_passes(lengths, chunk)
    assert all(sum(take) <= chunk for take in passes)
    assert tuple(map(sum, zip(*passes))) == tuple(lengths)
    assert all(any(take) for take in passes)


@pytest.mark.parametrize("variant, long_row", [("v4", False), ("v6", False), ("v7", True)])
def test_chunked_passes_equal_one_pass(taichi_arch, tmp_path, variant, long_row):
    """`long_row` (v7): 138 positions in the whole pass, so on a GPU its dense matrices run in kernels/gpu_gemm.py's
    PREFILL shapes and its WKV by lane groups, against three passes of 46 (BATCH shapes, tile 32). One version only:
    each compiles layer kernels of tiled products, ~45-60 s each on lavapipe, and the suite must stay within CI's
    time (v6's routes: the kernel tests). On lavapipe the chunks are passes of 23 (tile 8, as the conformance cases
    in passes of 16 compile them); v7's tile-32 layer there is the C128 conformance case's."""
    path = write_random_model(RandomModelSpec(variant, n_layer=2, **SMALL),
                              tmp_path / "m.st")
    whole = ai00ref.load_model(path, backend="taichi", arch=taichi_arch, token_chunk_size=256)
    chunk = (23 if SLOW else 46) if long_row else 3
    chunked = ai00ref.load_model(path, backend="taichi", arch=taichi_arch, token_chunk_size=chunk)
    rows = [[1, 2, 3, 4, 5, 6, 7], [8], [(9 + 7 * i) % 256 for i in range(130 if long_row else 4)]]
    lw, sw = whole.forward(rows, whole.new_state(3))
    lc, sc = chunked.forward(rows, chunked.new_state(3))
    np.testing.assert_allclose(lc, lw, rtol=1e-5, atol=1e-5)
    fw, _ = whole.forward(rows, whole.new_state(3), full_output=True)
    fc, _ = chunked.forward(rows, chunked.new_state(3), full_output=True)
    for a, b in zip(fc, fw):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for b in range(3):
        for x, y in zip(sc.to_official(b), sw.to_official(b)):
            np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-5)


def test_warm_up_records_every_kind_of_pass_on_a_scratch_state(models):
    """The server's warm-up (start_runtime(warm_up=True)) compiles and records a decode pass, a short pass and, on a
    GPU, a batch of BATCH_POSITIONS and a prefill chunk of GEMM_POSITIONS (their tiled products), so a first request
    waits for no compiler. v4: the cheapest layer kernels to compile (v7's took ~70 s on lavapipe)."""
    import kernels
    from kernels.engine import BATCH_POSITIONS, DECODE_POSITIONS, GEMM_POSITIONS

    model, _ = models["v4"]
    model.warm_up()
    gpu_kinds = {(BATCH_POSITIONS,), (GEMM_POSITIONS,)} if kernels.is_gpu() else set()
    expected = {(1,), (DECODE_POSITIONS + 1,)} | gpu_kinds
    assert expected <= {lengths for lengths, _ in model.passes.replays}


# On lavapipe not v5.2: its fp16 layer kernel is v6's with a static decay (kernels/v6.py), the x64 suite runs it, and
# lavapipe compiling its kernels was 34 s of CI's slowest process (most of CI's time is lavapipe compiling kernels)
@pytest.mark.parametrize("variant", ["v4", "v6", "v7"] if SLOW else ["v4", "v5.2", "v6", "v7"])
def test_fp16_precision_on_weights_that_fp16_cannot_hold(taichi_arch, tmp_path, variant):
    """The generator's weights are fp16-exact; perturb them so that fp16 storage really rounds (spec/tolerances.md:
    fp16 within 1e-2 of the reference), and check that it did round (the error is not zero)."""
    from ai00ref.weights.pth import write_pth
    from ai00ref.weights.random_model import random_model_tensors

    spec = RandomModelSpec(variant, n_layer=2, n_embd=64, n_vocab=128, head_size=16)
    rng = np.random.default_rng(7)
    tensors = {k: (v * (1 + 1e-3 * rng.standard_normal(v.shape))).astype(np.float32)
               for k, v in random_model_tensors(spec).items()}
    write_pth(tmp_path / "m.pth", tensors)
    ref = ai00ref.load_model(tmp_path / "m.pth")
    fast = ai00ref.load_model(tmp_path / "m.pth", backend="taichi", arch=taichi_arch, precision="fp16")
    rows = [[1, 2, 3, 4, 5], [6], [7, 8]]
    lr, sr = ref.forward(rows, ref.new_state(3))
    lf, sf = fast.forward(rows, fast.new_state(3))
    errors = [np.linalg.norm(lf - lr, axis=1) / np.linalg.norm(lr, axis=1)]
    lr, _ = ref.forward([[9], [10], [11]], sr)
    lf, _ = fast.forward([[9], [10], [11]], sf)
    errors.append(np.linalg.norm(lf - lr, axis=1) / np.linalg.norm(lr, axis=1))
    worst = float(np.max(errors))
    assert 1e-7 < worst <= 1e-2, worst


@pytest.mark.parametrize("variant", ["v6", "v7"])
def test_empty_rows_keep_their_state_and_give_zero_logits(models, variant):
    """A scheduler's idle slots: rows with no tokens are left alone (as in the reference engine)."""
    graph, _ = models[variant]
    _, state = graph.forward([[5, 6], [7], [8, 9, 10]], graph.new_state(3))
    before = state.to_host()
    logits, after = graph.forward([[1], [], [2]], state)
    alone, alone_state = graph.forward([[1], [2]], state.rows([0, 2]))
    assert not logits[1].any()
    after, alone_state = after.to_host(), alone_state.to_host()
    for name, array in after.arrays().items():
        np.testing.assert_array_equal(array[1], before.arrays()[name][1])
        np.testing.assert_allclose(array[[0, 2]], alone_state.arrays()[name], rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(logits[[0, 2]], alone, rtol=1e-5, atol=1e-6)


def test_assign_row_overwrites_one_row(models):
    graph, _ = models["v7"]
    _, state = graph.forward([[5], [6]], graph.new_state(2))
    _, other = graph.forward([[9, 9]], graph.new_state(1))
    other_host, before = other.to_host(), state.to_host()
    state.assign_row(1, other_host)
    host = state.to_host()
    for name, array in host.arrays().items():
        np.testing.assert_array_equal(array[1], other_host.arrays()[name][0])
        np.testing.assert_array_equal(array[0], before.arrays()[name][0])  # the other row untouched


@pytest.mark.parametrize("variant", ["v5.2", "v6", "v7"])
def test_layers_stacked_in_groups_give_the_same_model(variant, taichi_arch, tmp_path, monkeypatch):
    """A model too large for one stack per array (here: the limit lowered to two layers' worth) runs in groups of
    layers (kernels/stacking.py): logits and states equal the one-group engine's over prefill and decode."""
    from kernels import stacking

    path = write_random_model(RandomModelSpec(variant, n_layer=5, **SMALL),
                              tmp_path / f"{variant}.st")
    whole = ai00ref.load_model(path, backend="taichi", arch=taichi_arch)
    assert len(whole.blocks.groups) == 1
    per_layer = max(int(np.prod(getattr(whole.blocks.groups[0], name).shape[1:]))
                    for name in ("vec", "mats", "second", "ffn_value"))
    monkeypatch.setattr(stacking, "MAX_ELEMENTS", 2 * per_layer)
    grouped = ai00ref.load_model(path, backend="taichi", arch=taichi_arch)
    assert (len(grouped.blocks.groups), grouped.blocks.size) == (3, 2)
    rows = [[1, 2, 3, 4], [5], [6, 7]]
    expected, expected_state = whole.forward(rows, whole.new_state(3))
    got, got_state = grouped.forward(rows, grouped.new_state(3))
    np.testing.assert_array_equal(got, expected)
    for _ in range(2):
        expected, expected_state = whole.forward([[8], [9], [10]], expected_state)
        got, got_state = grouped.forward([[8], [9], [10]], got_state)
        np.testing.assert_array_equal(got, expected)
    for b in range(3):
        for x, y in zip(got_state.to_official(b), expected_state.to_official(b)):
            np.testing.assert_array_equal(x, y)


def test_a_layer_past_taichis_index_range_is_refused_by_name():
    from kernels.stacking import StackTooLarge, group_size

    assert group_size(32, [30720 * 4096, 4096 * 14336]) == 17  # v6 7B: two groups of layers
    with pytest.raises(StackTooLarge, match="2\\^31 index limit.*backend='ref'"):
        group_size(1, [2 ** 31])


CONSTANT_RANGES_RUN = """
import functools, sys
import numpy as np
import taichi as ti
import ai00ref
from kernels import lanes
from taichi.lang import impl

lanes.constant_ranges = lambda: True  # CUDA's task ranges (kernels/lanes.py task_range) on the x64 backend
lanes.THREADS = 64  # few threads: several rounds each
ti.init = functools.partial(ti.init, kernel_profiler=True)
path = sys.argv[1]
ref, fast = ai00ref.load_model(path), ai00ref.load_model(path, backend="taichi", arch="cpu")
rows, worst = [[1, 2, 3, 4, 5, 6, 7, 8, 9], [10], [11, 12]], 0.0
lr, sr = ref.forward(rows, ref.new_state(3))
ti.profiler.clear_kernel_profiler_info()
lf, sf = fast.forward(rows, fast.new_state(3))
for _ in range(3):
    worst = max(worst, float(np.max(np.linalg.norm(lf - lr, axis=-1) / np.linalg.norm(lr, axis=-1))))
    step = [[int(t)] for t in np.argmax(lr, axis=-1)]
    lr, sr = ref.forward(step, sr)
    lf, sf = fast.forward(step, sf)
prog = impl.get_runtime().prog
prog.update_kernel_profiler()
names = sorted({r.name for r in prog.get_kernel_profiler_records()})
print("WORST", worst)
print("TASKS", " ".join(names))
"""


def test_constant_task_ranges_leave_no_serial_task_and_the_same_logits(taichi_arch, tmp_path):
    """CUDA's task ranges (kernels/lanes.py `task_range`: a constant range, each thread taking several items), run on
    the x64 backend, which splits kernels into tasks as CUDA does: a v6 model (its layer and head kernels are the
    lane kernels CUDA runs) matches the reference, and no layer or head kernel has a serial task (spec/kernels.md
    §4). In a subprocess: the kernel profiler is a ti.init option."""
    import subprocess
    import sys

    if taichi_arch != "cpu":
        pytest.skip("an x64 subprocess: runs in the x64 suite")
    path = write_random_model(RandomModelSpec("v6", n_layer=2, **SMALL), tmp_path / "v6.st")
    done = subprocess.run([sys.executable, "-c", CONSTANT_RANGES_RUN, str(path)], capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    lines = dict(line.split(" ", 1) for line in done.stdout.splitlines() if line.startswith(("WORST", "TASKS")))
    assert float(lines["WORST"]) <= 1e-4  # spec/tolerances.md: fp32
    tasks = lines["TASKS"].split()
    assert any(name.startswith("layer") for name in tasks) and any(name.startswith("head") for name in tasks)
    assert not [name for name in tasks if name.startswith(("layer", "head")) and "serial" in name], tasks
