"""The "commands" runtime (kernels/vk): Taichi's compiled tasks replayed from our own Vulkan command buffers.

Every engine and kernel test of the Vulkan suite runs on it (it is the Vulkan default); these check its own parts:
argument layouts, role patching, host copies, transfers, timestamps, and that it runs exactly what Taichi's own
runtime runs (bit for bit, in a subprocess on Taichi's runtime that reads the same offline cache).
"""

import subprocess
import sys

import numpy as np
import pytest

import taichi_arch

ti = taichi_arch.import_taichi()

import kernels  # noqa: E402
from kernels.launch import kernel, pass_replay, recording  # noqa: E402

pytestmark = pytest.mark.taichi


@pytest.fixture(scope="module")
def commands(taichi_arch):
    if kernels.runtime() != "commands":
        pytest.skip(f"the commands runtime runs on Vulkan (this suite: {taichi_arch}, {kernels.runtime()} runtime)")
    from kernels import arrays
    return arrays


def test_one_process_keeps_one_runtime(taichi_arch):
    other = "taichi" if kernels.runtime() == "commands" else "commands"
    with pytest.raises(RuntimeError, match="one process uses one"):
        kernels.init(taichi_arch, other)
    with pytest.raises(ValueError, match="unknown runtime"):
        kernels.init(taichi_arch, "metal")


def test_auto_falls_back_to_taichi_when_our_device_cannot_start(taichi_arch, monkeypatch):
    """Without our Vulkan device (the `vulkan` package missing, say), "auto" takes Taichi's runtime with a warning and
    an explicit "commands" fails with a message naming the cause."""
    from kernels import arrays

    def unavailable():
        raise ImportError("No module named 'vulkan'")

    monkeypatch.setattr(arrays, "context", unavailable)
    assert kernels._start_runtime("vulkan", "auto") == "taichi"
    with pytest.raises(RuntimeError, match="No module named 'vulkan'"):
        kernels._start_runtime("vulkan", "commands")
    assert kernels._start_runtime("cuda", "auto") == "taichi"
    assert kernels._start_runtime("vulkan", "taichi") == "taichi"


def test_an_allocation_past_the_device_memory_is_a_clear_error(commands):
    with pytest.raises(MemoryError, match="cannot allocate"):
        commands.context().buffer(1 << 50)


@kernel
def _mixed(a: ti.types.ndarray(), b: ti.types.ndarray(), c: ti.types.ndarray(), n: ti.i32, scale: ti.f32,
           v: ti.types.vector(4, ti.i32)):
    """Two tasks: one over a run-time range (a's rows), one over a constant one; every argument kind."""
    for i in range(a.shape[0]):
        for j in range(a.shape[1]):
            a[i, j] = ti.cast(b[i], ti.f32) * scale + n + v[j % 4] + c[i, j, 1]
    for k in range(3):
        b[k] += ti.f16(1.0)


def _expected(a_shape, b, c, n, scale, v):
    j = np.arange(a_shape[1])
    return b.astype(np.float32)[:, None] * np.float32(scale) + n + np.asarray(v)[j % 4][None, :] + c[:, :, 1]


@pytest.mark.parametrize("record_on_rebind", [False, True])
def test_arguments_reach_the_tasks_and_roles_are_patched(commands, record_on_rebind):
    """Scalars, a vector, arrays of f32/f16/i32 and 1-3 dimensions land where Taichi's layout puts them; a run with
    another vector and another array of a role uses them, and the array it replaced is left alone: through
    descriptors rewritten after binding (UPDATE_AFTER_BIND, where the device has it), and through a command buffer
    recorded again (devices without it)."""
    rng = np.random.default_rng(0)
    b_host = rng.standard_normal(37).astype(np.float16)
    c_host = rng.integers(-5, 5, (37, 6, 2)).astype(np.int32)
    a = commands.new(ti.f32, (37, 6))
    b, c, other_c = commands.upload(b_host, ti.f16), commands.upload(c_host, ti.i32), commands.upload(-c_host, ti.i32)
    v = ti.Vector([1, 2, 3, 4])
    with recording() as calls:
        _mixed(a, b, c, 7, 0.5, v)
    replay = pass_replay(calls, {id(v): "ids", id(c): "c"}, outputs=(a,))
    replay.record_on_rebind = record_on_rebind
    replay.run(ids=v, c=c)
    np.testing.assert_allclose(a.to_numpy(), _expected((37, 6), b_host, c_host, 7, 0.5, (1, 2, 3, 4)), rtol=1e-6)
    np.testing.assert_array_equal(b.to_numpy()[:3], (b_host[:3].astype(np.float32) + 1).astype(np.float16))
    b_now = b.to_numpy()
    replay.run(ids=ti.Vector([10, 20, 30, 40]), c=other_c)
    np.testing.assert_allclose(a.to_numpy(), _expected((37, 6), b_now, -c_host, 7, 0.5, (10, 20, 30, 40)), rtol=1e-6)
    np.testing.assert_array_equal(c.to_numpy(), c_host)
    with pytest.raises(ValueError, match="recorded with"):
        replay.run(c=commands.new(ti.i32, (36, 6, 2)))
    replay.close()


def test_a_launch_outside_a_recording_runs_at_once(commands):
    a, b = commands.new(ti.f32, (5, 4)), commands.upload(np.arange(5, dtype=np.float16), ti.f16)
    c = commands.upload(np.ones((5, 4, 2), np.int32), ti.i32)
    _mixed(a, b, c, 1, 2.0, ti.Vector([0, 0, 0, 0]))
    np.testing.assert_allclose(a.to_numpy(), _expected((5, 4), np.arange(5), np.ones((5, 4, 2)), 1, 2.0, (0,) * 4))


def test_a_host_copy_is_read_only_while_current(commands):
    """A pass's outputs are read from the host copy its command buffer made; after any later submit, from the
    device (here a later pass changed the array)."""
    a, b = commands.new(ti.f32, (4, 4)), commands.upload(np.zeros(4, np.float16), ti.f16)
    c = commands.upload(np.zeros((4, 4, 2), np.int32), ti.i32)
    with recording() as calls:
        _mixed(a, b, c, 3, 1.0, ti.Vector([0, 0, 0, 0]))
    first = pass_replay(calls, {}, outputs=(a,))
    first.run()
    assert a.host_copy_at == a.context.submits
    np.testing.assert_array_equal(a.to_numpy(), np.full((4, 4), 3, np.float32))
    _mixed(a, b, c, 5, 1.0, ti.Vector([0, 0, 0, 0]))  # b is now 1 in rows 0-2
    np.testing.assert_array_equal(a.to_numpy(), np.array([6, 6, 6, 5], np.float32)[:, None] * np.ones((1, 4)))
    first.close()


def test_transfers_in_pieces_and_copies(commands):
    """Uploads and downloads larger than the staging buffer go in pieces; copy_from acts on the device."""
    context = commands.context()
    host = np.random.default_rng(1).standard_normal((50, 33)).astype(np.float32)
    piece, context.STAGING_BYTES = context.STAGING_BYTES, 1000
    try:
        array = commands.upload(host, ti.f32)
        np.testing.assert_array_equal(array.to_numpy(), host)
    finally:
        context.STAGING_BYTES = piece
    twin = commands.new(ti.f32, host.shape)
    twin.copy_from(array)
    np.testing.assert_array_equal(twin.to_numpy(), host)
    with pytest.raises(ValueError):
        twin.from_numpy(host[:10])


def test_dispatch_times_cover_every_task(commands):
    a, b = commands.new(ti.f32, (8, 4)), commands.upload(np.zeros(8, np.float16), ti.f16)
    c = commands.upload(np.zeros((8, 4, 2), np.int32), ti.i32)
    with recording() as calls:
        _mixed(a, b, c, 1, 1.0, ti.Vector([0, 0, 0, 0]))
        _mixed(a, b, c, 2, 1.0, ti.Vector([0, 0, 0, 0]))
    replay = pass_replay(calls, {})
    times = replay.dispatch_times()
    assert [name for name, _ in times] == ["_mixed task 0", "_mixed task 1"] * 2
    assert all(seconds > 0 for _, seconds in times)
    replay.close()


TAICHI_RUNTIME_LOGITS = """
import sys, numpy as np, ai00ref
model = ai00ref.load_model(sys.argv[1], backend="taichi", arch="vulkan", runtime="taichi")
logits, state = model.forward([[1, 2, 3, 4, 5], [6]], model.new_state(2))
step, _ = model.forward([[7], [8]], state)
np.save(sys.argv[2], np.stack([logits, step]))
"""


def test_commands_run_what_taichi_runs(commands, tmp_path):
    """A v7 model (fp32) gives the same logits, bit for bit, on our command buffers and on Taichi's runtime: the same
    SPIR-V (Taichi compiles both from one offline cache entry), dispatched alike."""
    import ai00ref
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    path = write_random_model(RandomModelSpec("v7", n_layer=2, n_embd=64, n_vocab=256, head_size=16),
                              tmp_path / "v7.st")
    model = ai00ref.load_model(path, backend="taichi", arch="vulkan")
    logits, state = model.forward([[1, 2, 3, 4, 5], [6]], model.new_state(2))
    step, _ = model.forward([[7], [8]], state)
    done = subprocess.run([sys.executable, "-c", TAICHI_RUNTIME_LOGITS, str(path), str(tmp_path / "taichi.npy")],
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    np.testing.assert_array_equal(np.stack([logits, step]), np.load(tmp_path / "taichi.npy"))
