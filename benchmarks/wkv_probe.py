"""Time v6's prefill WKV (one row of --positions tokens, the 1.6B shape's heads) on Vulkan under our command buffers,
from device timestamps: kernels/v6.py `lane_wkv_task` against candidate forms, each checked against it.

    python3 benchmarks/wkv_probe.py --positions 256 --variants lanes,k8d1,k8d2,k4d2

Variants: "lanes" (the engine's task: LANES lanes per value column, two keys a lane on NVIDIA); "k{K}d{D}": K lanes
per value column (a divisor of LANES), each over keys j = m·K + lane, their shares added through workgroup memory
(`group_sum`), the inputs loaded D steps ahead, with suffixes "s" (the sum by the subgroup's own, K = LANES), "n" (no
sum) and "x" (no loads after the first; the last two are diagnostics and compute wrong outputs); "c{CT}": LANES
lanes per CT neighbouring value columns, r, k, w loaded once for them. Prints one RESULT line per variant:
microseconds a layer, and the largest difference from the first variant in the outputs and the state.
"""
import argparse
import functools
import statistics
import sys

import numpy as np
import taichi as ti

sys.path.insert(0, "benchmarks")

import kernels  # noqa: E402
from kernels import arrays, lanes, v6  # noqa: E402
from kernels.engine import Pass  # noqa: E402
from kernels.launch import kernel  # noqa: E402
from kernels.lanes import LENGTH, START  # noqa: E402
from kernels.v6_layout import BONUS, DECAY, NV, Shape  # noqa: E402


@ti.func
def group_sum(value: ti.f32, K: ti.template(), tid: ti.i32, step: ti.i32, red: ti.template()) -> ti.f32:
    """Σ of `value` over the K lanes of a column group (neighbouring lanes of one subgroup), in lane order, every lane
    getting the same sum: through workgroup memory (Taichi 1.7 has no subgroup shuffles on Vulkan), two buffers by
    step parity so a step's writes never meet the last step's reads."""
    total = value
    if ti.static(K > 1):
        red[step % 2, tid] = value
        ti.simt.subgroup.barrier()
        ti.simt.subgroup.memory_barrier()
        base = tid - tid % K
        total = 0.0
        for q in ti.static(range(K)):
            total += red[step % 2, base + q]
    return total


@functools.cache
def grouped(s: Shape, K: int, D: int, reduce: str = "shared", load: bool = True):
    """The k{K}d{D} variant's kernel; `reduce`: "shared" (group_sum), "subgroup" (K = LANES: the subgroup's own sum)
    or "none" (diagnostic: each lane's share as the sum); `load`: False (diagnostic) keeps the first inputs."""
    N, M = s.N, (s.N + K - 1) // K

    @kernel
    def wkv(vec: ti.types.ndarray(), S: ti.types.ndarray(), plan: ti.types.ndarray(), sc: ti.types.ndarray()):
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(S.shape[0] * s.H * N * K):
            lane, column, tid = g % K, g // K, g % lanes.GROUP
            red = ti.simt.block.SharedArray((2, lanes.GROUP), ti.f32)
            b, h, i = column // (s.H * N), column // N % s.H, column % N
            start, length, T = plan[START, b], plan[LENGTH, b], sc.shape[0]
            keys = ti.Vector([ti.min(m * K + lane, N - 1) for m in ti.static(range(M))])
            state = ti.Vector([S[b, 0, h, keys[m], i] for m in ti.static(range(M))])
            u = ti.Vector([vec[0, BONUS, h * N + keys[m]] for m in ti.static(range(M))])
            queue_r = ti.Matrix([[0.0] * M for _ in ti.static(range(D))])
            queue_k = ti.Matrix([[0.0] * M for _ in ti.static(range(D))])
            queue_w = ti.Matrix([[0.0] * M for _ in ti.static(range(D))])
            queue_v = ti.Vector([0.0] * D)
            for d in ti.static(range(D)):
                at = ti.min(start + ti.min(d, ti.max(length - 1, 0)), T - 1)
                r, k, w, v = v6.wkv_inputs(s, vec, 0, sc, at, h, i, keys)
                for m in ti.static(range(M)):
                    queue_r[d, m], queue_k[d, m], queue_w[d, m] = r[m], k[m], w[m]
                queue_v[d] = v
            kept = 0.0
            for step in range(length):
                r_now = ti.Vector([queue_r[0, m] for m in ti.static(range(M))])
                k_now = ti.Vector([queue_k[0, m] for m in ti.static(range(M))])
                w_now = ti.Vector([queue_w[0, m] for m in ti.static(range(M))])
                v_now = queue_v[0]
                for d in ti.static(range(D - 1)):
                    for m in ti.static(range(M)):
                        queue_r[d, m], queue_k[d, m], queue_w[d, m] = queue_r[d + 1, m], queue_k[d + 1, m], \
                            queue_w[d + 1, m]
                    queue_v[d] = queue_v[d + 1]
                ahead = ti.min(start + ti.min(step + D, ti.max(length - 1, 0)), T - 1)
                if ti.static(not load):
                    ahead = ti.min(start, T - 1)
                r, k, w, v = v6.wkv_inputs(s, vec, 0, sc, ahead, h, i, keys)
                for m in ti.static(range(M)):
                    queue_r[D - 1, m], queue_k[D - 1, m], queue_w[D - 1, m] = r[m], k[m], w[m]
                queue_v[D - 1] = v
                part = 0.0
                for m in ti.static(range(M)):
                    kv = k_now[m] * v_now
                    if m * K + lane < N:
                        part += r_now[m] * (u[m] * kv + state[m])
                    state[m] = kv + w_now[m] * state[m]
                out = part
                if ti.static(reduce == "shared"):
                    out = group_sum(part, K, tid, step, red)
                elif ti.static(reduce == "subgroup"):
                    out = lanes.lane_sum(part)
                kept = ti.select(lane == step % K, out, kept)
                if step % K == K - 1 or step == length - 1:
                    base = step - step % K
                    if base + lane <= step:
                        sc[start + base + lane, s.Y + h * N + i] = kept
            for m in ti.static(range(M)):
                if m * K + lane < N:
                    S[b, 0, h, keys[m], i] = state[m]
    return wkv


@functools.cache
def columns(s: Shape, CT: int):
    """The c{CT} variant's kernel: LANES lanes per group of CT neighbouring value columns, each lane over keys
    j = m·LANES + lane for all CT columns (r, k, w loaded once for them), CT subgroup sums a step."""
    N, K = s.N, lanes.LANES
    M = (N + K - 1) // K

    @kernel
    def wkv(vec: ti.types.ndarray(), S: ti.types.ndarray(), plan: ti.types.ndarray(), sc: ti.types.ndarray()):
        ti.loop_config(block_dim=lanes.GROUP)
        for g in range(S.shape[0] * s.H * (N // CT) * K):
            lane, group = g % K, g // K
            b, h, i0 = group // (s.H * (N // CT)), group // (N // CT) % s.H, group % (N // CT) * CT
            start, length, T = plan[START, b], plan[LENGTH, b], sc.shape[0]
            keys = ti.Vector([ti.min(m * K + lane, N - 1) for m in ti.static(range(M))])
            state = ti.Matrix([[S[b, 0, h, keys[m], i0 + c] for c in ti.static(range(CT))]
                               for m in ti.static(range(M))])
            u = ti.Vector([vec[0, BONUS, h * N + keys[m]] for m in ti.static(range(M))])
            r, k, w, _ = v6.wkv_inputs(s, vec, 0, sc, ti.min(start, T - 1), h, i0, keys)
            v = ti.Vector([sc[ti.min(start, T - 1), s.PROJ + 2 * s.C + h * N + i0 + c] for c in ti.static(range(CT))])
            kept = ti.Vector([0.0] * CT)
            for step in range(length):
                r_now, k_now, w_now, v_now = r, k, w, v
                ahead = ti.min(start + ti.min(step + 1, ti.max(length - 1, 0)), T - 1)
                r, k, w, _ = v6.wkv_inputs(s, vec, 0, sc, ahead, h, i0, keys)
                v = ti.Vector([sc[ahead, s.PROJ + 2 * s.C + h * N + i0 + c] for c in ti.static(range(CT))])
                for c in ti.static(range(CT)):
                    part = 0.0
                    for m in ti.static(range(M)):
                        kv = k_now[m] * v_now[c]
                        if m * K + lane < N:
                            part += r_now[m] * (u[m] * kv + state[m, c])
                        state[m, c] = kv + w_now[m] * state[m, c]
                    kept[c] = ti.select(lane == step % K, lanes.lane_sum(part), kept[c])
                if step % K == K - 1 or step == length - 1:
                    base = step - step % K
                    if base + lane <= step:
                        for c in ti.static(range(CT)):
                            sc[start + base + lane, s.Y + h * N + i0 + c] = kept[c]
            for m in ti.static(range(M)):
                if m * K + lane < N:
                    for c in ti.static(range(CT)):
                        S[b, 0, h, keys[m], i0 + c] = state[m, c]
    return wkv


@functools.cache
def engine_task(s: Shape):
    @kernel
    def wkv(vec: ti.types.ndarray(), S: ti.types.ndarray(), plan: ti.types.ndarray(), sc: ti.types.ndarray()):
        v6.lane_wkv_task(s, vec, S, 0, 0, plan, sc)
    return wkv


def kernel_of(s: Shape, variant: str):
    if variant == "lanes":
        return engine_task(s)
    if variant.startswith("c"):
        return columns(s, int(variant[1:]))
    K, D = (int(v) for v in variant[1:].rstrip("snx").split("d"))
    reduce = "subgroup" if "s" in variant[1:] else "none" if "n" in variant[1:] else "shared"
    return grouped(s, K, D, reduce, "x" not in variant)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--positions", type=int, default=256)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--variants", default="lanes,k8d1,k8d2,k4d2,k16d1")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--warm-up", type=float, default=0.5)
    args = parser.parse_args()
    kernels.init("vulkan", "commands")
    from decode_probe import dispatch_seconds  # after init: it builds kernels
    print(f"device {arrays.context().name} lanes {lanes.LANES}", flush=True)
    s = Shape(C=args.heads * 64, H=args.heads, F=7168, Dm=32, Dd=64, gated=True)
    T, rng = args.positions, np.random.default_rng(0)
    vec = rng.uniform(-1, 1, (1, NV, s.C)).astype(np.float32)
    vec[0, DECAY] = rng.uniform(0.5, 1, s.C)
    sc = rng.standard_normal((T, s.WIDTH), dtype=np.float32) * 0.5
    sc[:, s.W:s.W + s.C] = rng.uniform(0.5, 1, (T, s.C))
    S0 = rng.standard_normal((1, 1, s.H, s.N, s.N), dtype=np.float32) * 0.5
    plan = Pass.plan((T,))
    want = None
    for variant in args.variants.split(","):
        fn = kernel_of(s, variant)
        call = (arrays.upload(vec, ti.f32), arrays.upload(S0, ti.f32), plan.packed, arrays.upload(sc, ti.f32))
        fn(*call)
        got = (call[1].to_numpy(), call[3].to_numpy()[:, s.Y:s.Y + s.C])
        want = want or got
        diff = max(np.abs(a - b).max() / np.abs(b).max() for a, b in zip(got, want))
        times = dispatch_seconds([(fn.compiled, call)] * args.repeats, args.warm_up)
        print(f"RESULT {variant:8s} T={T} {statistics.median(times[1:]) * 1e6:8.1f} us  diff {diff:.1e}", flush=True)


if __name__ == "__main__":
    main()
