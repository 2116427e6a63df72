"""Taichi engine on one arch: a correctness check against the reference, then speed on a real model shape.

    python benchmarks/gpu_bench.py --arch vulkan --check v4,v5.0,v5.2,v6,v7 --speed v7,v6 --layers 24 --embd 2048

1. check: for each --check variant, a small random model, reference vs Taichi on this arch (ragged batch, then
   steps), in fp32 and in --precision; prints the relative L2 error of the logits.
2. speed: for each --speed variant, a random model of the given shape (written by the project's generator into
   --cache, reused by later runs), prefill of --prefill tokens, --decode greedy steps at batch 1 and at --batch;
   prints RESULT lines with tok/s.
One process runs one arch (Taichi's rule), and one runtime (--runtime: on Vulkan, "commands" runs recorded passes
as our own command buffers, "taichi" as Taichi's graphs); run it once per arch and runtime.

Quantized weights (spec/quant.md): --check-quant int8,nf4,sf4 adds, per checked variant, a check with all but the
last layer quantized with each scheme (reference with the same settings vs Taichi, fp32).
--quant-types none,int8,nf4 times each variant unquantized and with every layer quantized; those speed models are
built in memory (`repeated_layer_model`: layers 1.. share layer 1's weights and codes, the embedding and head are
plain random draws), because generating and quantizing 1.5B random weights in NumPy takes minutes, and a kernel's
time does not depend on the values it reads.

    python benchmarks/gpu_bench.py --arch cuda --check v7 --check-quant int8,nf4,sf4 --speed v7,v6 \
        --quant-types none,int8,nf4 --prefill 4 --decode 32
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np

import ai00ref
from ai00ref.weights.random_model import RandomModelSpec, write_random_model


def relative_error(a: np.ndarray, b: np.ndarray) -> float:
    return float((np.linalg.norm(a - b, axis=-1) / np.linalg.norm(b, axis=-1)).max())


def check(variant: str, arch: str, precision: str, directory: Path, scheme: str = "none") -> float:
    spec = RandomModelSpec(variant, n_layer=3, n_embd=128, n_vocab=512, head_size=64)
    path = directory / f"check_{variant}.pth"
    if not path.exists():
        write_random_model(spec, path)
    quant = dict(quant=2, quant_type=scheme) if scheme != "none" else {}  # a quantized group and a dense one
    ref = ai00ref.load_model(path, **quant)
    fast = ai00ref.load_model(path, backend="taichi", arch=arch, precision=precision, **quant)
    rows = [[0, 5, 17, 300, 2, 9, 44], [7], [12, 13, 14]]
    lr, sr = ref.forward(rows, ref.new_state(3))
    lf, sf = fast.forward(rows, fast.new_state(3))
    error = relative_error(lf, lr)
    for _ in range(3):
        step = [[int(t)] for t in np.argmax(lr, axis=-1)]
        lr, sr = ref.forward(step, sr)
        lf, sf = fast.forward(step, sf)
        error = max(error, relative_error(lf, lr))
    return error


def two_layer_tensors(variant: str, embd: int, vocab: int) -> dict:
    """Layers 0 and 1 from the project's generator (vocab 256), with an embedding and a head of the full vocab drawn
    plainly (the generator would take minutes for them): the `.st`-form tensors of `repeated_layer_model`."""
    from ai00ref.weights.convert import pth_to_st_tensors
    from ai00ref.weights.random_model import random_model_tensors

    tensors = pth_to_st_tensors(random_model_tensors(RandomModelSpec(variant, 2, embd, 256, head_size=64)))
    rng = np.random.default_rng(0)
    tensors["emb.weight"] = rng.standard_normal((vocab, embd), dtype=np.float32) * np.float32(0.5)
    tensors["head.weight"] = rng.standard_normal((vocab, embd), dtype=np.float32) * np.float32(embd ** -0.5)
    return tensors


def repeated_layer_model(two_layers: dict, layers: int, scheme: str, arch: str, precision: str):
    """A Taichi model for timing, built in memory: layers 2.. share layer 1's arrays, and every layer's quantized
    matrices share layer 1's codes (a kernel's time does not depend on the values it reads). Every layer is quantized
    with `scheme` unless it is "none"."""
    from ai00ref.model_info import read_model_info
    from ai00ref.weights.canonical import QUANTIZED_MATRICES, canonical_weights
    from ai00ref.weights.quant import NO_QUANT, QuantConfig, quantize
    from kernels.engine import TaichiModel

    config = QuantConfig(layers, scheme) if scheme != "none" else NO_QUANT
    tensors = dict(two_layers)
    if config.active:  # layer 1's matrices quantized once; layer 0's (same shapes) share their codes
        for matrix in QUANTIZED_MATRICES:
            if f"blocks.1.{matrix}.weight" in tensors:
                codes = quantize(tensors[f"blocks.1.{matrix}.weight"], scheme)
                tensors[f"blocks.0.{matrix}.weight"] = tensors[f"blocks.1.{matrix}.weight"] = codes
    tensors = repeated_tensors(tensors, layers)
    name = f"<{layers} layers>"
    info = read_model_info(tensors, name)
    return TaichiModel(canonical_weights(tensors, info, name, quant=config), arch=arch, precision=precision)


def repeated_layer_reference(two_layers: dict, layers: int):
    """The NumPy reference engine of `repeated_layer_model`'s weights (unquantized)."""
    from ai00ref.model_info import read_model_info
    from ai00ref.ref.model import RefModel
    from ai00ref.weights.canonical import canonical_weights

    tensors = repeated_tensors(two_layers, layers)
    name = f"<{layers} layers>"
    return RefModel(canonical_weights(tensors, read_model_info(tensors, name), name))


def repeated_tensors(tensors: dict, layers: int) -> dict:
    """`layers` layers' tensors: layers 2.. share layer 1's arrays."""
    tensors = dict(tensors)
    for name in [n for n in tensors if n.startswith("blocks.1.")]:
        for i in range(2, layers):
            tensors[name.replace("blocks.1.", f"blocks.{i}.", 1)] = tensors[name]
    return tensors


def timed(fn, *args):
    start = time.perf_counter()
    out = fn(*args)
    return out, time.perf_counter() - start


PREFILL_RUNS = 5  # timed prefills after the warm-up; the median is reported (a single run after compiling was noisy)


def speed(model, prefill: int, decode: int, batches: list[int]):
    """Yields (name, tok/s) as each is measured: prefill (the median of PREFILL_RUNS), then decode at each batch
    size."""
    prompt = np.random.default_rng(0).integers(1, model.info.n_vocab, prefill).tolist()
    model.forward([prompt], model.new_state(1))  # compile the kernels and record this shape's graph
    runs = [timed(model.forward, [prompt], model.new_state(1)) for _ in range(PREFILL_RUNS)]
    (logits, state), seconds = runs[0][0], float(np.median([seconds for _, seconds in runs]))
    yield "prefill_tok_s", prefill / seconds
    for rows in batches if decode else ():  # --decode 0: prefill only
        state_b = type(state).concat([state] * rows) if rows > 1 else state
        tokens = [[int(np.argmax(logits[0]))] for _ in range(rows)]
        logits_b, state_b = model.forward(tokens, state_b)  # warm-up for this batch size
        start = time.perf_counter()
        for step in range(decode):  # inplace: the caller owns the state, as the scheduler will
            if step == decode // 2:
                half = time.perf_counter()
            logits_b, state_b = model.forward([[int(t)] for t in np.argmax(logits_b, axis=-1)], state_b, inplace=True)
        end = time.perf_counter()
        yield f"decode_b{rows}_tok_s", decode * rows / (end - start)
        yield f"decode_b{rows}_second_half_tok_s", (decode - decode // 2) * rows / (end - half)


AGREE = 1e-2  # --agree: the largest relative L2 error between two fp16 paths (spec/tolerances.md: fp16 vs fp32 ref)
AGREE_REFERENCE_LAYERS = 4  # --agree also compares with the NumPy reference up to this many layers (24 took minutes)


def paths_agree(model, batch: int, prefill: int, reference=None):
    """Yields (name, relative L2 error) of the full-size model's many-position passes against its few-position ones,
    whose kernels the checks compare with the reference: `batch` rows of 3 tokens in one pass (gpu_gemm's BATCH
    shapes, the head included) against each row alone, then one decode step of the batch against each row's; and a
    prompt of `prefill` tokens in chunks against the same prompt 4 tokens a pass. The checks' models (C 128, a few
    positions) never reach these paths' sizes, nor Taichi's grid of 131072 threads. With a `reference` engine (the
    same weights), each path's logits against it too."""
    rng = np.random.default_rng(1)
    rows = rng.integers(1, model.info.n_vocab, (batch, 3)).tolist()
    prompt = rng.integers(1, model.info.n_vocab, prefill).tolist()
    logits = {}
    together, state = model.forward(rows, model.new_state(batch))
    alone = [model.forward([row], model.new_state(1)) for row in rows]
    logits["b_prompt"] = together, np.concatenate([lg for lg, _ in alone])
    step = [[int(t)] for t in np.argmax(together, axis=-1)]
    together, _ = model.forward(step, state)
    each = [model.forward([tokens], st)[0] for tokens, (_, st) in zip(step, alone)]
    logits["b_step"] = together, np.concatenate(each)
    chunked, _ = model.forward([prompt], model.new_state(1))
    state = model.new_state(1)
    for start in range(0, prefill, 4):
        short, state = model.forward([prompt[start:start + 4]], state)
    logits["prefill"] = chunked, short
    names = {"b_prompt": f"b{batch}_prompt", "b_step": f"b{batch}_step", "prefill": f"prefill{prefill}"}
    for key, (many, few) in logits.items():
        yield f"agree_{names[key]}_rel_l2", relative_error(many, few)
    if reference is None:
        return
    wanted, state = reference.forward(rows, reference.new_state(batch))
    want = {"b_prompt": wanted, "b_step": reference.forward(step, state)[0],
            "prefill": reference.forward([prompt], reference.new_state(1))[0]}
    for key, (many, few) in logits.items():
        yield f"ref_{names[key]}_many_rel_l2", relative_error(many, want[key])
        yield f"ref_{names[key]}_few_rel_l2", relative_error(few, want[key])


def report_agreement(model, args, label: str, reference=None) -> None:
    for key, error in paths_agree(model, args.batch, args.prefill, reference):
        print(f"RESULT {label} {key}={error:.2e} {'ok' if error <= AGREE else 'FAIL'}", flush=True)


def profile(model, batch: int) -> None:
    """Device time per kernel of one pass: decode at batch 1 and at `batch`, and a 256-token prefill chunk
    (each kernel replayed in a graph)."""
    import taichi as ti

    from kernels.launch import recording, time_recorded

    for label, lengths in (("decode b1", (1,)), (f"decode b{batch}", (1,) * batch), ("prefill 256", (256,))):
        state = model.new_state(len(lengths))
        plan = model.passes.get(lengths)
        model.run_pass([1] * plan.T, state, plan, False)  # compile
        inputs = model.workspace.buffer("ids", (plan.T,), ti.i32)  # the upload path: a kernel of its own
        with recording() as calls:
            model.launch_pass(inputs, state, plan, False)
        table = time_recorded(calls, repeats=10)
        total = sum(n * seconds for n, seconds in table.values())
        print(f"PROFILE {label}: launches {len(calls)}, sum of kernel times {total * 1e3:.2f} ms", flush=True)
        for name, (n, seconds) in sorted(table.items(), key=lambda kv: -kv[1][0] * kv[1][1])[:10]:
            print(f"PROFILE {label}   {name:52s} {n:4d} x {seconds * 1e6:8.1f} us = {n * seconds * 1e3:7.2f} ms",
                  flush=True)
    phases(model)
    if model.info.version == "v7":
        task_times(model)


RUNS = 7  # --timestamps: timed passes of each shape


def dispatch_times(model, batches: list[int], prefill: int) -> None:
    """--timestamps (runtime "commands"): device time per kernel task of whole recorded passes, from timestamps in
    the command buffer, summed over the layers: decode at each batch size, and a 256-token prefill chunk (if
    `prefill` is 256 or more)."""
    from collections import defaultdict

    passes = [(f"decode b{rows}", (1,) * rows) for rows in batches] + [("prefill 256", (256,))] * (prefill >= 256)
    for label, lengths in passes:
        state = model.new_state(len(lengths))
        model.forward([[1] * n for n in lengths], state, inplace=True)  # records this shape's pass
        replay, _ = model.passes.replays[(lengths, False)]
        runs = []  # RUNS timed passes: each task's median over them
        for _ in range(RUNS):
            times = replay.dispatch_times(**{f"state_{name}": array for name, array in state.fields.items()})
            sums = defaultdict(float)
            for name, seconds in times:
                sums[name] += seconds
            runs.append(sums)
        counts = defaultdict(int)
        for name, _ in times:
            counts[name] += 1
        totals = {name: statistics.median(run[name] for run in runs) for name in counts}
        passes = sorted(sum(run.values()) for run in runs)
        print(f"TIMESTAMPS {label}: {len(times)} dispatches, {sum(totals.values()) * 1e3:.3f} ms (median per task "
              f"of {RUNS} passes; passes {passes[0] * 1e3:.3f}-{passes[-1] * 1e3:.3f} ms)", flush=True)
        for name, seconds in sorted(totals.items(), key=lambda kv: -kv[1])[:14]:
            print(f"TIMESTAMPS {label}   {name:48s} {counts[name]:4d} x {seconds / counts[name] * 1e6:8.1f} us "
                  f"= {seconds * 1e3:7.3f} ms", flush=True)


def task_times(model) -> None:
    """v7: each task of the layer kernel alone (one layer's launch holding only that task, replayed in a graph)."""
    from kernels import v7
    from kernels.launch import recording, time_recorded

    for label, lengths in (("decode b1", (1,)), ("prefill 256", (256,))):
        state = model.new_state(len(lengths))
        plan = model.passes.get(lengths)
        x = model.workspace.buffer("x", (plan.T, model.info.n_embd))
        tile = 1 if plan.T <= 4 else 8
        for task in v7.TASKS:
            with recording() as calls:
                v7.run_blocks(model.blocks, model.info, x, state, plan, model.workspace, tile, (task,))
            (_, seconds), = time_recorded(calls[:1], repeats=10).values()
            print(f"TASK {label} {task:14s} {seconds * 1e6:9.1f} us", flush=True)


def phases(model, steps: int = 20) -> None:
    """Where a decode step's time goes on the host: the graph (token id as its argument, embedding lookup on the
    device, every layer, the head), the logits read-back, and the whole forward call."""
    import taichi as ti

    from kernels.embed import GRAPH_IDS
    from kernels.readback import read_rows

    state = model.new_state(1)
    model.forward([[1]], state, inplace=True)
    plan = model.passes.get((1,))
    totals = dict.fromkeys(("graph", "read back", "forward"), 0.0)
    for _ in range(steps):
        ti.sync()
        t0 = time.perf_counter()
        logits = model.run_pass([1], state, plan, False)
        ti.sync()
        t1 = time.perf_counter()
        read_rows(logits)  # the engine's read-back (kernels/readback.py)
        t2 = time.perf_counter()
        model.forward([[1]], state, inplace=True)
        t3 = time.perf_counter()
        for key, seconds in zip(totals, (t1 - t0, t2 - t1, t3 - t2)):
            totals[key] += seconds
    print("PHASES decode b1: " + ", ".join(f"{k} {v / steps * 1e3:.2f} ms" for k, v in totals.items()), flush=True)
    replay, _ = model.passes.replays[((1,), False)]  # the recorded pass alone, run back to back
    state_roles = {f"state_{name}": array for name, array in state.fields.items()}
    ids = ti.Vector([1] + [0] * (GRAPH_IDS - 1))
    start = time.perf_counter()
    for _ in range(steps):
        replay.run(ids=ids, **state_roles)
    ti.sync()
    print(f"PHASES decode b1: the recorded pass alone {(time.perf_counter() - start) / steps * 1e3:.2f} ms", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--arch", default="vulkan")
    parser.add_argument("--check", default="v4,v5.0,v5.2,v6,v7", help="variants to check (comma-separated)")
    parser.add_argument("--speed", default="v7", help="variants to time (comma-separated)")
    parser.add_argument("--cache", type=Path, default=Path("/tmp/ai00ref-models"))
    parser.add_argument("--layers", type=int, default=24)
    parser.add_argument("--embd", type=int, default=2048)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--precision", default="fp16")
    parser.add_argument("--runtime", default="auto", help="auto, taichi or commands (kernels/__init__.py: runtime)")
    parser.add_argument("--prefill", type=int, default=1024)
    parser.add_argument("--decode", type=int, default=64)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", default="", help="decode batch sizes, comma-separated (default: 1 and --batch)")
    parser.add_argument("--profile", action="store_true", help="also time every kernel of one decode step")
    parser.add_argument("--phases", action="store_true", help="also split a decode step into graph and read-back")
    parser.add_argument("--timestamps", action="store_true", help="runtime commands: device time per task of a pass")
    parser.add_argument("--agree", action="store_true", help="the full-size model's batch and prefill passes against "
                        "its few-position ones (relative L2 of logits; `paths_agree`)")
    parser.add_argument("--check-quant", default="", help="schemes to check as well (comma-separated: int8,nf4,sf4)")
    parser.add_argument("--quant-types", default="", help="time each --speed variant with these (none,int8,nf4,sf4), "
                        "every layer quantized, on in-memory models (repeated_layer_model)")
    args = parser.parse_args()
    args.batches = sorted({int(b) for b in args.batches.split(",") if b} or {1, args.batch})
    import kernels

    kernels.init(args.arch, args.runtime)  # the models below take this process's arch and runtime
    print(f"runtime {kernels.runtime()} on {kernels.current_arch()}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        for variant in filter(None, args.check.split(",")):
            for scheme in ["none"] + list(filter(None, args.check_quant.split(","))):
                for precision in ("fp32", args.precision) if scheme == "none" else ("fp32",):
                    error = check(variant, args.arch, precision, Path(tmp), scheme)
                    print(f"RESULT check arch={args.arch} variant={variant} quant={scheme} precision={precision} "
                          f"rel_l2={error:.2e}", flush=True)
    if args.quant_types:
        quantized_speed(args)
        return
    args.cache.mkdir(parents=True, exist_ok=True)
    for variant in filter(None, args.speed.split(",")):
        spec = RandomModelSpec(variant, args.layers, args.embd, args.vocab, head_size=64)
        path = args.cache / f"{variant}_L{args.layers}_C{args.embd}.st"
        start = time.perf_counter()
        if not path.exists():
            write_random_model(spec, path)
        model = ai00ref.load_model(path, backend="taichi", arch=args.arch, precision=args.precision)
        print(f"model {variant} L{args.layers} C{args.embd} V{args.vocab} ready in "
              f"{time.perf_counter() - start:.0f} s on {model.arch}", flush=True)
        for key, value in speed(model, args.prefill, args.decode, args.batches):
            print(f"RESULT speed arch={model.arch} runtime={model.runtime} variant={variant} L{args.layers} C{args.embd} "
                  f"precision={args.precision} {key}={value:.1f}", flush=True)
        if args.agree:
            report_agreement(model, args, f"agree arch={model.arch} variant={variant}")
        if args.profile:
            profile(model, args.batch)
        if args.timestamps:
            dispatch_times(model, args.batches, args.prefill)
        del model


def quantized_speed(args) -> None:
    """--quant-types: each --speed variant with each storage, on in-memory models (repeated_layer_model)."""
    for variant in filter(None, args.speed.split(",")):
        start = time.perf_counter()
        two_layers = two_layer_tensors(variant, args.embd, args.vocab)
        print(f"{variant}: two generated layers in {time.perf_counter() - start:.0f} s", flush=True)
        for scheme in args.quant_types.split(","):
            start = time.perf_counter()
            model = repeated_layer_model(two_layers, args.layers, scheme, args.arch, args.precision)
            print(f"model {variant} L{args.layers} C{args.embd} V{args.vocab} quant={scheme} ready in "
                  f"{time.perf_counter() - start:.0f} s on {model.arch}; weights {model.info.weight_bytes / 2**20:.0f} "
                  "MiB on the device", flush=True)
            for key, value in speed(model, args.prefill, args.decode, args.batches):
                print(f"RESULT speed arch={model.arch} runtime={model.runtime} variant={variant} L{args.layers} C{args.embd} "
                      f"precision={args.precision} quant={scheme} {key}={value:.1f}", flush=True)
            if args.agree:  # the NumPy reference too, for models it runs in seconds
                reference = None
                if scheme == "none" and args.layers <= AGREE_REFERENCE_LAYERS:
                    reference = repeated_layer_reference(two_layers, args.layers)
                report_agreement(model, args, f"agree arch={model.arch} variant={variant} quant={scheme}", reference)
                del reference
            if args.profile and scheme == "none":
                profile(model, args.batch)
            elif args.phases:
                phases(model)
            if args.timestamps:
                dispatch_times(model, args.batches, args.prefill)
            del model


if __name__ == "__main__":
    main()
