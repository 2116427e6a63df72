"""Where a decode step's time goes on a GPU: the host's enqueue time, the device's time per task, and its idle time.

    python benchmarks/task_profile.py --arch cuda --variant v6 --quant-types none,nf4
    python benchmarks/task_profile.py --arch cuda --variant v6 --quant-types none --kernel-profiler --pass 256
    python benchmarks/task_profile.py --arch cuda --variant v6 --quant-types none,nf4 --kernel-profiler

--pass chooses the pass (default: decode at batch 1; "256": a prefill chunk; "32x1": batch 32).
Without --kernel-profiler, per scheme (the graph of one pass, no read-back), over --steps steps:
    STEP ... enqueue E ms, wall W ms
E is the graph run without a sync (the host's recording and launching; on CUDA launches are asynchronous), W the run
and its sync. E close to W: the host bounds the step; E well below W: the device does.

With --kernel-profiler (a separate process: the profiler's events cost host time per task), Taichi's kernel profiler
times every task on the device (CUDA events, Vulkan timestamp queries):
    TASKS ... device sum S ms a step[, span P ms, idle I ms]      (span and idle: CUDA, from the tasks' start times)
    TASK  ... <task name> n per step, mean us, share of S
Task names are Taichi's: the kernel's name, then `_<task index>` in the kernel's order (kernels/v6.py TASKS, with
the decode pass's fused tasks).

Models as gpu_bench.py's --quant-types: in memory, layers 2.. repeat layer 1.
"""
from __future__ import annotations

import argparse
import functools
import time
from collections import defaultdict

import numpy as np

from gpu_bench import repeated_layer_model, two_layer_tensors


def enable_kernel_profiler() -> None:
    """Start Taichi with its kernel profiler on (kernels.init calls ti.init with its own options)."""
    import taichi as ti

    ti.init = functools.partial(ti.init, kernel_profiler=True)


def one_pass(model, lengths: tuple[int, ...] = (1,)):
    """A pass of rows of `lengths` tokens (default: decode at batch 1), compiled and recorded: run() enqueues its
    graph."""
    tokens = [[1 + (i % 100) for i in range(n)] for n in lengths]
    state = model.new_state(len(lengths))
    model.forward(tokens, state, inplace=True)
    plan = model.passes.get(lengths)
    ids = [t for row in tokens for t in row]
    return lambda: model.run_pass(ids, state, plan, False)


def pass_lengths(text: str) -> tuple[int, ...]:
    """--pass: "1" (decode, batch 1), "256" (one row of 256 tokens: a prefill chunk), "32x1" (32 rows of 1)."""
    rows, _, length = text.rpartition("x")
    return (int(length),) * int(rows or 1)


def enqueue_and_wall(model, steps: int, lengths: tuple[int, ...]) -> tuple[float, float]:
    import taichi as ti

    run = one_pass(model, lengths)
    enqueue = wall = 0.0
    for _ in range(steps):
        ti.sync()
        t0 = time.perf_counter()
        run()
        t1 = time.perf_counter()
        ti.sync()
        t2 = time.perf_counter()
        enqueue, wall = enqueue + t1 - t0, wall + t2 - t0
    return enqueue / steps * 1e3, wall / steps * 1e3


def device_tasks(model, steps: int, lengths: tuple[int, ...]) -> tuple[list, dict]:
    """Per step: (device sum, span, idle) in ms; per task name: [launches, ms]."""
    import taichi as ti
    from taichi.lang import impl

    run = one_pass(model, lengths)
    run()
    ti.sync()
    ti.profiler.clear_kernel_profiler_info()
    per_step = []
    for _ in range(steps):
        run()
        ti.sync()
        prog = impl.get_runtime().prog
        prog.update_kernel_profiler()
        records = prog.get_kernel_profiler_records()
        ti.profiler.clear_kernel_profiler_info()
        durations = np.array([r.kernel_time for r in records])
        starts = np.array([r.base_time for r in records])
        span = float((starts + durations).max() - starts.min()) if starts.any() else float("nan")
        per_step.append((float(durations.sum()), span, span - float(durations.sum()), records))
    tasks = defaultdict(lambda: [0, 0.0])
    for _, _, _, records in per_step:
        for r in records:
            tasks[r.name][0] += 1
            tasks[r.name][1] += r.kernel_time
    return [s[:3] for s in per_step], tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="cuda")
    parser.add_argument("--variant", default="v6")
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--quant-types", default="none,nf4")
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--kernel-profiler", action="store_true")
    parser.add_argument("--pass", dest="lengths", type=pass_lengths, default=(1,),
                        help='the pass profiled: "1" (decode), "256" (a prefill chunk), "32x1" (batch 32)')
    args = parser.parse_args()
    if args.kernel_profiler:
        enable_kernel_profiler()
    import kernels

    kernels.init(args.arch, "taichi")  # Taichi's runtime and its profiler (runtime "commands": gpu_bench --timestamps)
    two_layers = two_layer_tensors(args.variant, args.embd, args.vocab)
    for scheme in args.quant_types.split(","):
        model = repeated_layer_model(two_layers, args.layers, scheme, args.arch, args.precision)
        label = (f"arch={model.arch} {args.variant} L{args.layers} C{args.embd} quant={scheme} "
                 f"pass={len(args.lengths)}x{args.lengths[0]}")
        if not args.kernel_profiler:
            enqueue, wall = enqueue_and_wall(model, args.steps, args.lengths)
            print(f"STEP {label}: enqueue {enqueue:.2f} ms, wall {wall:.2f} ms", flush=True)
        else:
            per_step, tasks = device_tasks(model, args.steps, args.lengths)
            device, span, idle = (float(np.median([s[i] for s in per_step])) for i in range(3))
            print(f"TASKS {label}: device sum {device:.2f} ms a step, span {span:.2f} ms, idle {idle:.2f} ms "
                  f"(medians of {args.steps} steps)", flush=True)
            total = sum(ms for _, ms in tasks.values())
            for name, (n, ms) in tasks.items():
                print(f"TASK {label} {name:48s} {n / args.steps:5.1f} per step, {ms / n * 1e3:8.1f} us, "
                      f"{ms / total:6.1%}", flush=True)
        del model


if __name__ == "__main__":
    main()
