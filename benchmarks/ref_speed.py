"""Engine speed on this CPU for a real model shape: ours (reference, Taichi x64) and the official package.

    python benchmarks/ref_speed.py --variant v7 --layers 12 --embd 768 --vocab 65536 \
        --engines ref,taichi-fp32,taichi-fp16,official

Writes a random model of that shape (the project's generator) to a temp dir, then times prefill of
--prefill tokens and --decode single-token steps at batch 1, each engine in its own process. `official` is
BlinkDL's `rwkv` package (`cpu fp32`; needs torch and rwkv==0.8.32, e.g. the `[oracle]` extra).
Prints one RESULT line per engine and measure.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def time_ours(path: Path, prefill: list[int], decode: int, **options) -> dict[str, float]:
    import ai00ref

    model = ai00ref.load_model(path, **options)
    if options:  # Taichi: compile the kernels and record the graphs of both shapes first
        logits, state = model.forward([prefill], model.new_state(1))
        model.forward([[1]], state)
    t0 = time.perf_counter()
    logits, state = model.forward([prefill], model.new_state(1))
    t1 = time.perf_counter()
    for _ in range(decode):
        token = int(np.argmax(logits[0]))
        logits, state = model.forward([[token]], state, inplace=True)
    t2 = time.perf_counter()
    return {"prefill_tok_s": len(prefill) / (t1 - t0), "decode_tok_s": decode / (t2 - t1)}


def time_official(path: Path, variant: str, prefill: list[int], decode: int) -> dict[str, float]:
    os.environ.update(RWKV_JIT_ON="1", RWKV_CUDA_ON="0", RWKV_V7_ON="1" if variant == "v7" else "0")
    import torch
    from rwkv.model import RWKV

    torch.set_num_threads(os.cpu_count())
    model = RWKV(model=str(path.with_suffix("")) if variant == "v7" else str(path), strategy="cpu fp32")
    with torch.no_grad():
        t0 = time.perf_counter()
        logits, state = model.forward(prefill, None)
        t1 = time.perf_counter()
        for _ in range(decode):
            logits, state = model.forward([int(torch.argmax(logits))], state)
        t2 = time.perf_counter()
    return {"prefill_tok_s": len(prefill) / (t1 - t0), "decode_tok_s": decode / (t2 - t1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variant", default="v7")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=16)
    parser.add_argument("--engines", default="ref,official", help="ref, taichi-fp32, taichi-fp16, official")
    parser.add_argument("--official-python", default=sys.executable,
                        help="the Python that has torch and rwkv (default: this one)")
    parser.add_argument("--engine", help=argparse.SUPPRESS)
    parser.add_argument("--model", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    prompt = [int(t) for t in np.random.default_rng(0).integers(1, args.vocab, args.prefill)]
    if args.model:  # child process: time one engine on an existing file
        if args.engine == "official":
            result = time_official(args.model, args.variant, prompt, args.decode)
        elif args.engine == "ref":
            result = time_ours(args.model, prompt, args.decode)
        else:
            precision = args.engine.split("-")[1]
            result = time_ours(args.model, prompt, args.decode, backend="taichi", arch="cpu", precision=precision)
        shape = f"{args.variant} L{args.layers} C{args.embd} V{args.vocab}"
        for key, value in result.items():
            print(f"RESULT engine={args.engine} shape='{shape}' {key}={value:.2f}")
        return
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    spec = RandomModelSpec(args.variant, args.layers, args.embd, args.vocab, head_size=64)
    with tempfile.TemporaryDirectory() as tmp:
        path = write_random_model(spec, Path(tmp) / "bench.pth")
        for engine in args.engines.split(","):  # one process each: the official package reads env vars at import
            python = args.official_python if engine == "official" else sys.executable
            subprocess.run([python, __file__, *sys.argv[1:], "--engine", engine, "--model", str(path)], check=True)


if __name__ == "__main__":
    main()
