"""Time a LayerNorm's statistics on Vulkan under our command buffers (runtime "commands"), from device timestamps:
`layer_norms.row_stats_task` (a lane group per position; the engine's) against candidate forms, each checked
against NumPy.

    python3 benchmarks/norm_probe.py --positions 32,256 --channels 2048 --variants engine,two_rounds,groups4

Variants: "engine"; "two_rounds" (`mean_and_inv`: two passes through memory, ROW_UNROLL loads in flight);
"groupsG" (G lane groups per position, each summing its share of the row, their sums added through workgroup
memory). Each case is one kernel recorded `--repeats` times into one pass after `--warm-up` seconds of load; its
time is the median of its calls. Prints one RESULT line per (variant, positions).
"""
import argparse
import functools
import statistics
import sys

import numpy as np
import taichi as ti

sys.path.insert(0, "benchmarks")

import kernels  # noqa: E402
from kernels import arrays, lanes, layer_norms  # noqa: E402
from kernels.launch import kernel  # noqa: E402

EPS = 1e-5


@functools.cache
def variant_kernel(variant: str, C: int):
    if variant == "engine":
        @kernel
        def run(x: ti.types.ndarray(), out: ti.types.ndarray()):
            layer_norms.row_stats_task(x, EPS, out, 0)
        return run
    if variant == "two_rounds":
        @kernel
        def run(x: ti.types.ndarray(), out: ti.types.ndarray()):
            ti.loop_config(block_dim=lanes.GROUP)
            for g in range(x.shape[0] * lanes.LANES):
                lane, t = g % lanes.LANES, g // lanes.LANES
                values = layer_norms.mean_and_inv(x, t, 0, x.shape[1], lane, EPS)
                if lane == 0:
                    out[t, 0], out[t, 1] = values[0], values[1]
        return run
    groups = int(variant.removeprefix("groups"))
    return groups_kernel(groups, C)


@ti.func
def workgroup_sum(value: ti.f32, lane: ti.i32, part: ti.i32, sums: ti.template(), row: ti.template(),
                  groups: ti.template()) -> ti.f32:
    """Σ of `value` over the workgroup's `groups` lane groups (subgroup sums, then in group order through sums[row])."""
    total = lanes.lane_sum(value)
    if lane == 0:
        sums[row, part] = total
    ti.simt.block.sync()
    total = 0.0
    for h in ti.static(range(groups)):
        total += sums[row, h]
    return total


def groups_kernel(groups: int, C: int):
    """G lane groups a position (a workgroup of G·LANES threads), each holding C/(G·LANES) values a lane."""
    per = -(-C // (groups * lanes.LANES))

    @kernel
    def run(x: ti.types.ndarray(), out: ti.types.ndarray()):
        ti.loop_config(block_dim=groups * lanes.LANES)
        for g in range(x.shape[0] * groups * lanes.LANES):
            lane, part, t = g % lanes.LANES, g // lanes.LANES % groups, g // (groups * lanes.LANES)
            sums = ti.simt.block.SharedArray((2, groups), ti.f32)
            n = x.shape[1]
            values = ti.Vector([x[t, ti.min((part * per + m) * lanes.LANES + lane, n - 1)]
                                for m in ti.static(range(per))])
            total = 0.0
            for m in ti.static(range(per)):
                total += ti.select((part * per + m) * lanes.LANES + lane < n, values[m], 0.0)
            mean = workgroup_sum(total, lane, part, sums, 0, groups) / n
            spread = 0.0
            for m in ti.static(range(per)):
                spread += ti.select((part * per + m) * lanes.LANES + lane < n, (values[m] - mean) ** 2, 0.0)
            var = workgroup_sum(spread, lane, part, sums, 1, groups) / n
            if lane == 0 and part == 0:
                out[t, 0], out[t, 1] = mean, 1.0 / ti.sqrt(var + EPS)
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", default="32,256")
    parser.add_argument("--channels", type=int, default=2048)
    parser.add_argument("--variants", default="engine,two_rounds,groups4")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warm-up", type=float, default=0.5)
    args = parser.parse_args()
    kernels.init("vulkan", "commands")
    from decode_probe import dispatch_seconds  # after init: it builds kernels
    print(f"device {arrays.context().name}", flush=True)
    rng = np.random.default_rng(0)
    for T in (int(v) for v in args.positions.split(",")):
        x = rng.standard_normal((T, args.channels), dtype=np.float32) + 0.5
        want = np.stack([x.mean(axis=1), 1 / np.sqrt(x.var(axis=1) + EPS)], axis=1)
        X = arrays.upload(x, ti.f32)
        for variant in args.variants.split(","):
            fn, out = variant_kernel(variant, args.channels), arrays.new(ti.f32, (T, 2))
            fn(X, out)
            err = np.abs(out.to_numpy() - want).max() / np.abs(want).max()
            times = dispatch_seconds([(fn.compiled, (X, out))] * args.repeats, args.warm_up)
            seconds = statistics.median(times[1:])
            print(f"RESULT {variant:12s} T={T:4d} C={args.channels} {seconds * 1e6:8.1f} us err {err:.1e}", flush=True)


if __name__ == "__main__":
    main()
