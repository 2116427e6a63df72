"""A decode step's building blocks timed alone on Vulkan under our command buffers (runtime "commands"), from device
timestamps: what a dispatch costs, what a LayerNorm task costs, and how fast matrix-vector readers of a few layouts
read a layer's matrices at one position.

Each case is one kernel recorded `--repeats` times into one pass (kernels/vk/replay.py); its time is the median of
its dispatches, each with the barrier after it. Cases:
  empty               a task of one thread: the fixed cost of a dispatch
  shift_mix C         layer_norms.shift_mix_task at one position, six mixes and the delta (v6's LN1 and token shift)
  gather_norm C       layer_norms.gather_norm_task of one row (the head's LayerNorm)
  round trip P MODE   host seconds per run of a pass of P empty dispatches: submit, wait for its fence ("block":
                      vkWaitForFences; "poll": vkGetFenceStatus in a loop), reset
  reader NAME RxK     Y = W x at one position, W f16: "lanes" is lanes.linear_task as a batch-1 pass runs it;
                      "sS-uU" gives each row S subgroups of one workgroup, each over a contiguous 1/S of the columns
                      with U loads in flight per lane, their sums added through shared memory
Each case is timed after `--warm-up` seconds of load. Every reader is checked against NumPy. The LayerNorm cases
time whichever kernels/ is first on the path: run the script on two trees to compare them
(benchmarks/device_decode_probe.sh).

Usage: python3 benchmarks/decode_probe.py [--repeats 20] [--readers lanes,s1-u16,...] [--shapes 2048x2048,...]
"""
import argparse
import functools
import statistics
import time

import numpy as np
import taichi as ti
import vulkan as vk

import kernels
from kernels import arrays, lanes, layer_norms
from kernels.common import ACT_NONE
from kernels.launch import kernel, pass_replay

READERS = "lanes,s1-u16,s1-u32,s2-u16,s2-u32,s4-u16,s4-u8"
SHAPES = "2048x2048,7168x2048,2048x7168,2048x8192,65536x2048"


def median_dispatch(calls: list, warm_up: float) -> float:
    """Seconds: the median device time of the pass's dispatches but the first, timed after `warm_up` seconds of
    load (`Load`)."""
    return statistics.median(dispatch_seconds(calls, warm_up)[1:])


def dispatch_seconds(calls: list, warm_up: float) -> list[float]:
    """The device time of each dispatch of the pass of `calls` (barriers included), after `warm_up` seconds of
    load (`Load`)."""
    replay = pass_replay(calls, {})
    try:
        replay.run()  # compiles what the pass needs first
        LOAD.run(warm_up)
        return [seconds for _, seconds in replay.dispatch_times()]
    finally:
        replay.close()


class Load:
    """A large reader replayed to keep the card busy. An H100 left idle for a moment (a compile) reads at a quarter
    of its speed for the next dispatches: the first probe calls measured readers at 250-500 GB/s after each new
    kernel's compile, and the same reader at 975-1600 GB/s right after another."""

    def __init__(self):
        self.replay = None

    def run(self, seconds: float) -> None:
        if self.replay is None:
            W = arrays.upload(np.ones((1, 65536, 2048), np.float16), ti.f16)
            X, Y = arrays.upload(np.ones((1, 2048)), ti.f32), arrays.new(ti.f32, (1, 65536))
            self.replay = pass_replay([(lanes_reader.compiled, (W, X, Y))] * 20, {})
        start = time.perf_counter()
        while time.perf_counter() - start < seconds:
            self.replay.run()


LOAD = Load()


@kernel
def empty(Y: ti.types.ndarray()):
    for _ in range(1):
        Y[0, 0] = Y[0, 0] + 1.0


@ti.func
def dot_range(W: ti.template(), o: ti.i32, X: ti.template(), first: ti.i32, count: ti.i32, lane: ti.i32,
              unroll: ti.template()) -> ti.f32:
    """This lane's share of W[o, first:first+count] · X[0, first:first+count]: whole steps of `unroll` loads per
    lane with no condition around them, then a guarded rest."""
    acc = 0.0
    span = lanes.LANES * unroll
    full = count // span
    for step in range(full):
        k0 = first + step * span + lane
        w = ti.Vector([0.0] * unroll)
        for q in ti.static(range(unroll)):
            w[q] = ti.cast(W[o, k0 + q * lanes.LANES], ti.f32)
        for q in ti.static(range(unroll)):
            acc += w[q] * X[0, k0 + q * lanes.LANES]
    for q in range((count - full * span + lanes.LANES - 1) // lanes.LANES):
        k = first + full * span + q * lanes.LANES + lane
        if k < first + count:
            acc += ti.cast(W[o, k], ti.f32) * X[0, k]
    return acc


@functools.cache
def split_reader(split: int, unroll: int):
    """Reader "s{split}-u{unroll}": a workgroup of GROUP threads holds GROUP / (LANES · split) rows."""
    subgroups = lanes.GROUP // lanes.LANES
    assert subgroups % split == 0, (lanes.GROUP, lanes.LANES, split)

    @kernel
    def read(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(W.shape[0] * split * lanes.LANES):  # rows × split × LANES: whole workgroups
            lane, sub = g % lanes.LANES, g // lanes.LANES
            o, part = sub // split, sub % split
            n = X.shape[1]
            width = (n + split - 1) // split
            first = part * width
            total = lanes.lane_sum(dot_range(W, o, X, first, ti.min(width, n - first), lane, unroll))
            if ti.static(split == 1):
                if lane == 0:
                    Y[0, o] = total
            else:
                partials = ti.simt.block.SharedArray((subgroups,), ti.f32)
                local = sub % subgroups
                if lane == 0:
                    partials[local] = total
                ti.simt.block.sync()
                if lane == 0 and part == 0:
                    s = 0.0
                    for q in ti.static(range(split)):
                        s += partials[local + q]
                    Y[0, o] = s

    return read


@kernel
def lanes_reader(W: ti.types.ndarray(), X: ti.types.ndarray(), Y: ti.types.ndarray()):
    lanes.linear_task(W, 0, 0, W.shape[1], W.shape[2], X, 0, Y, 0, ACT_NONE, False, 1)


def probe_readers(names: list, shapes: list, repeats: int, warm_up: float) -> None:
    rng = np.random.default_rng(0)
    for R, K in shapes:
        w16 = (rng.standard_normal((R, K)) * 0.05).astype(np.float16)
        x = rng.standard_normal((1, K)).astype(np.float32)
        want = x @ w16.astype(np.float32).T
        W2, W3, X = arrays.upload(w16, ti.f16), arrays.upload(w16[None], ti.f16), arrays.upload(x, ti.f32)
        for name in names:
            Y = arrays.upload(np.zeros((1, R), np.float32), ti.f32)
            if name == "lanes":
                fn, W = lanes_reader, W3
            else:
                split, unroll = (int(part[1:]) for part in name.split("-"))
                fn, W = split_reader(split, unroll), W2
            fn(W, X, Y)
            err = np.linalg.norm(Y.to_numpy() - want) / np.linalg.norm(want)
            dt = median_dispatch([(fn.compiled, (W, X, Y))] * repeats, warm_up)
            print(f"RESULT reader {name:7s} {R}x{K}: {dt * 1e6:7.1f} us {R * K * 2 / dt / 1e9:6.0f} GB/s  "
                  f"relL2 {err:.1e}", flush=True)


@kernel
def shift_mix(x: ti.types.ndarray(), vec: ti.types.ndarray(), shift: ti.types.ndarray(), plan: ti.types.ndarray(),
              out: ti.types.ndarray()):
    layer_norms.shift_mix_task(x, vec, 0, 0, 2, 6, shift, 0, plan, 1e-5, out, 0, True)


@kernel
def gather_norm(x: ti.types.ndarray(), picks: ti.types.ndarray(), ln: ti.types.ndarray(), out: ti.types.ndarray()):
    layer_norms.gather_norm_task(x, picks, ln, 1e-5, out)


def probe_norms(C: int, repeats: int, warm_up: float) -> None:
    rng = np.random.default_rng(1)
    x = arrays.upload(rng.standard_normal((1, C)), ti.f32)
    vec = arrays.upload(rng.uniform(0, 1, (1, 8, C)), ti.f32)
    shift = arrays.upload(rng.standard_normal((1, 1, C)), ti.f32)
    plan = arrays.upload(np.array([[0], [1], [0], [1], [0]]), ti.i32)  # ROW, FIRST, START, LENGTH, LAST
    out = arrays.new(ti.f32, (1, 7 * C))
    dt = median_dispatch([(shift_mix.compiled, (x, vec, shift, plan, out))] * repeats, warm_up)
    print(f"RESULT shift_mix C={C}: {dt * 1e6:7.1f} us", flush=True)
    picks, ln, row = arrays.upload(np.zeros(1), ti.i32), arrays.upload(rng.standard_normal((1, 2, C)), ti.f32), \
        arrays.new(ti.f32, (1, C))
    dt = median_dispatch([(gather_norm.compiled, (x, picks, ln, row))] * repeats, warm_up)
    print(f"RESULT gather_norm C={C}: {dt * 1e6:7.1f} us", flush=True)


def poll_submit(context, command_buffer) -> None:
    """VkContext.submit, polling the fence instead of blocking in the driver."""
    context.submits += 1
    vk.vkQueueSubmit(context.queue, 1, [vk.VkSubmitInfo(pCommandBuffers=[command_buffer])], context.fence)
    while True:
        try:
            vk.vkGetFenceStatus(context.device, context.fence)
            break
        except vk.VkNotReady:
            pass
    vk.vkResetFences(context.device, 1, [context.fence])


def probe_round_trips(repeats: int) -> None:
    context = arrays.context()
    Y = arrays.upload(np.zeros((1, 1)), ti.f32)
    for dispatches in (1, 240):
        replay = pass_replay([(empty.compiled, (Y,))] * dispatches, {})
        for mode in ("block", "poll", "block"):
            if mode == "poll":
                context.submit = functools.partial(poll_submit, context)
            replay.run()
            start = time.perf_counter()
            for _ in range(repeats):
                replay.run()
            seconds = (time.perf_counter() - start) / repeats
            print(f"RESULT round trip {dispatches} {mode}: {seconds * 1e6:7.1f} us", flush=True)
            context.__dict__.pop("submit", None)
        replay.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--readers", default=READERS)
    parser.add_argument("--shapes", default=SHAPES)
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--warm-up", type=float, default=0.5, help="seconds of load before each case")
    args = parser.parse_args()
    kernels.init("vulkan", "commands")
    print(f"device {arrays.context().name}, {lanes.LANES} lanes", flush=True)
    Y = arrays.upload(np.zeros((1, 1)), ti.f32)
    dt = median_dispatch([(empty.compiled, (Y,))] * args.repeats, args.warm_up)
    print(f"RESULT empty: {dt * 1e6:7.1f} us", flush=True)
    probe_round_trips(10 * args.repeats)
    probe_norms(args.embd, args.repeats, args.warm_up)
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes.split(",") if s]
    probe_readers([r for r in args.readers.split(",") if r], shapes, args.repeats, args.warm_up)


if __name__ == "__main__":
    main()
