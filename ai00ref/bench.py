"""`python -m ai00ref bench`: prefill and decode speed of an engine on a model file or a random model.

    python -m ai00ref bench --random v7:L12:C768:V65536 --prefill 128 --decode 16 --batch 4
    python -m ai00ref bench --model assets/models/x.st --backend ref
    python -m ai00ref bench --random v7:L12:C768:V65536 --backend taichi --arch cpu --precision fp16
    python -m ai00ref bench --random v7:L12:C768:V65536 --quant 12 --quant-type nf4   # spec/quant.md

Prefill: one row of N tokens from a zero state. Decode: greedy single-token steps at batch 1, then at batch B.
Peak memory is the process's maximum resident set size. Prints one `RESULT key=value` line per figure.
"""
from __future__ import annotations

import argparse
import resource
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class BenchResult:
    prefill_tok_s: float
    decode_tok_s: float  # batch 1
    batch_decode_tok_s: float  # batch B, all rows together
    peak_rss_mib: float


def parse_random(text: str):
    """"v7:L12:C768:V65536[:N64]" -> RandomModelSpec."""
    from ai00ref.weights.random_model import RandomModelSpec

    variant, *sizes = text.split(":")
    fields = {"L": "n_layer", "C": "n_embd", "V": "n_vocab", "N": "head_size"}
    kwargs = {"head_size": 64}
    for size in sizes:
        if size[:1] not in fields or not size[1:].isdigit():
            raise ValueError(f"bad size {size!r} in --random {text!r}: use L<layers>, C<embd>, V<vocab>, N<head size>")
        kwargs[fields[size[0]]] = int(size[1:])
    return RandomModelSpec(variant, **kwargs)


def decode_speed(model, state, logits, steps: int) -> float:
    start = time.perf_counter()
    for _ in range(steps):
        logits, state = model.forward([[int(t)] for t in np.argmax(logits, axis=-1)], state)
    return steps * state.batch / (time.perf_counter() - start)


def run_bench(model, prefill: int, decode: int, batch: int) -> BenchResult:
    prompt = np.random.default_rng(0).integers(1, model.info.n_vocab, prefill).tolist()
    start = time.perf_counter()
    logits, state = model.forward([prompt], model.new_state(1))
    prefill_speed = prefill / (time.perf_counter() - start)
    single = decode_speed(model, state, logits, decode)
    many = type(state).concat([state] * batch)
    batched = decode_speed(model, many, np.repeat(logits, batch, axis=0), decode)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return BenchResult(prefill_speed, single, batched, peak)


def add_bench_command(subparsers) -> None:
    parser = subparsers.add_parser("bench", help="time prefill and decode of an engine",
                                   description=__doc__.split("\n\n")[0])
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--model", help="a .st or .pth model file")
    source.add_argument("--random", help="a random model VARIANT:L<layers>:C<embd>:V<vocab>[:N<head size>]")
    parser.add_argument("--backend", default="ref", choices=["ref", "taichi"])
    parser.add_argument("--arch", help="taichi: auto, vulkan, cuda or cpu (default auto)")
    parser.add_argument("--precision", help="taichi: fp32 or fp16 (default fp32)")
    parser.add_argument("--runtime", help="taichi on Vulkan: commands (our command buffers, the default) or taichi")
    parser.add_argument("--token-chunk-size", type=int, help="taichi: tokens per pass (default 256)")
    parser.add_argument("--quant", type=int, default=0, metavar="N", help="quantize the first N layers (default 0)")
    parser.add_argument("--quant-type", default="int8", choices=["int8", "nf4", "sf4"], help="(default int8)")
    parser.add_argument("--prefill", type=int, default=128, help="prompt tokens (default 128)")
    parser.add_argument("--decode", type=int, default=16, help="decode steps (default 16)")
    parser.add_argument("--batch", type=int, default=4, help="rows for the batched decode (default 4)")
    parser.set_defaults(run=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    import ai00ref
    from ai00ref.weights.random_model import write_random_model

    with tempfile.TemporaryDirectory() as tmp:
        path = args.model or write_random_model(parse_random(args.random), Path(tmp) / "random.st")
        options = {k: v for k, v in (("arch", args.arch), ("precision", args.precision),
                                      ("token_chunk_size", args.token_chunk_size), ("runtime", args.runtime))
                   if v is not None}
        model = ai00ref.load_model(path, backend=args.backend, quant=args.quant, quant_type=args.quant_type,
                                   progress=True, **options)
    info = model.info
    where = f"backend {args.backend}" + (f" on {model.arch} ({model.runtime} runtime), {model.precision}"
                                          if args.backend == "taichi" else "")
    print(f"model: {args.model or args.random} ({info.variant}, L{info.n_layer} C{info.n_embd} V{info.n_vocab}), {where}")
    quant = f"{info.quant_layers} layers {info.quant_type}" if info.quant_layers else "none"
    print(f"quant: {quant}; weights {info.weight_bytes / 2**20:.1f} MiB (fp16: {info.weight_bytes_fp16 / 2**20:.1f} "
          f"MiB); state {info.state_bytes_per_sequence / 2**10:.1f} KiB per sequence")
    if args.backend == "taichi":  # compile the kernels and record the graphs of the shapes timed below
        run_bench(model, args.prefill, 1, args.batch)
    result = run_bench(model, args.prefill, args.decode, args.batch)
    print(f"RESULT prefill_tok_s={result.prefill_tok_s:.1f} tokens={args.prefill}")
    print(f"RESULT decode_tok_s={result.decode_tok_s:.1f} batch=1 steps={args.decode}")
    print(f"RESULT decode_tok_s={result.batch_decode_tok_s:.1f} batch={args.batch} steps={args.decode}")
    print(f"RESULT peak_rss_mib={result.peak_rss_mib:.0f}")
    return 0
