"""Where one decode step of the v7 0.1B shape goes on this CPU (arch x64): the layers' tasks, the head, forward().

    python benchmarks/cpu_step.py --precision fp16

Each entry is a Taichi graph replayed 3 times per sample, 7 samples interleaved (the median and the minimum are
printed): "12 layers, X" runs every layer's kernel with only the tasks X (kernels/v7.py `layer_kernel(tasks=...)`),
so the weights stream from memory as in a real step (one layer replayed alone would sit in the 32 MiB L3); "head" is
the last launch alone, "whole pass" every launch of a one-token pass, and forward() the engine call with its
read-back. Compare fp16 with fp32: twice the weight bytes; a step bound by bytes alone would take twice as long.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ai00ref-models"))
    args = parser.parse_args()
    import taichi as ti

    import ai00ref
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model
    from kernels import v7
    from kernels.launch import Replay, recording

    path = args.cache / "v7_L12_C768_V65536.pth"
    if not path.exists():
        args.cache.mkdir(parents=True, exist_ok=True)
        write_random_model(RandomModelSpec("v7", 12, 768, 65536, head_size=64), path)
    model = ai00ref.load_model(path, backend="taichi", arch="cpu", precision=args.precision)
    state = model.new_state(1)
    model.forward([[1]], state, inplace=True)
    plan = model.passes.get((1,))
    x = model.workspace.buffer("x", (1, model.info.n_embd))
    matrices = ("projections", "second_stage", "output", "ffn_key", "ffn_value")
    sets = {"all tasks": v7.TASKS, "matrix tasks": matrices, "other tasks": tuple(t for t in v7.TASKS
                                                                                 if t not in matrices), "no tasks": ()}
    sets.update({f"only {task}": (task,) for task in v7.TASKS})
    replays = {}
    for label, tasks in sets.items():
        with recording() as calls:
            v7.run_blocks(model.blocks, model.info, x, state, plan, model.workspace, 1, tasks)
        replays[f"12 layers, {label}"] = Replay(calls * 3, {})
    with recording() as calls:
        model.launch_pass(model.workspace.buffer("ids", (1,), ti.i32), state, plan, False)
    replays["head"] = Replay(calls[-1:] * 3, {})
    replays["whole pass"] = Replay(calls * 3, {})
    for replay in replays.values():
        replay.run()
        ti.sync()
    times = {key: [] for key in [*replays, "forward()"]}
    for _ in range(7):
        for key, replay in replays.items():
            start = time.perf_counter()
            replay.run()
            ti.sync()
            times[key].append((time.perf_counter() - start) / 3)
        start = time.perf_counter()
        for _ in range(3):
            model.forward([[1]], state, inplace=True)
        times["forward()"].append((time.perf_counter() - start) / 3)
    load = Path("/proc/loadavg").read_text().split()[0]
    for key, samples in times.items():
        samples.sort()
        print(f"STEP {args.precision} {key:32s} median {samples[3] * 1e3:7.2f} ms  min {samples[0] * 1e3:7.2f} ms "
              f"(load {load})", flush=True)


if __name__ == "__main__":
    main()
