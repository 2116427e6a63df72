"""Rounds of ref_speed.py on this CPU: engines of one or more source trees and the official package, alternated.

    python benchmarks/cpu_rounds.py --rounds 3 --engines taichi-fp16,official \
        --official-python .venv-oracle/bin/python [--tree before=/path/to/old/checkout]

The box is shared and its speed drifts (the official package's decode has measured 13-19 tok/s from run to run), so
one run of each engine says little. Here every round runs each (tree, engine) once, in the same order, on one model
file (v7 L12 C768 V65536 from the project's generator, as ref_speed.py writes it), and records the 1-minute load
average before each; the summary gives each one's median and range, and the per-round ratio to the official package.
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent.parent


def run_one(tree: Path, engine: str, model: Path, args) -> dict[str, float]:
    """ref_speed.py's child mode in `tree` (its own kernels and package) for one engine: {measure: tok/s}."""
    python = args.official_python if engine == "official" else sys.executable
    command = [python, str(tree / "benchmarks" / "ref_speed.py"), "--engine", engine, "--model", str(model),
               "--prefill", str(args.prefill), "--decode", str(args.decode)]
    done = subprocess.run(command, cwd=tree, env={**os.environ, "PYTHONPATH": str(tree)},
                          capture_output=True, text=True, check=True)
    return {line.split()[-1].split("=")[0]: float(line.split("=")[-1])
            for line in done.stdout.splitlines() if line.startswith("RESULT")}


def load_average() -> float:
    return float(Path("/proc/loadavg").read_text().split()[0])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--engines", default="taichi-fp16,official")
    parser.add_argument("--tree", action="append", default=[], help="label=path of another checkout (repeatable)")
    parser.add_argument("--official-python", default=sys.executable)
    parser.add_argument("--prefill", type=int, default=128)
    parser.add_argument("--decode", type=int, default=32)
    args = parser.parse_args()
    trees = [("this", HERE)] + [(t.split("=", 1)[0], Path(t.split("=", 1)[1]).resolve()) for t in args.tree]
    runs = [(label, tree, engine) for engine in args.engines.split(",")
            for label, tree in (trees if engine != "official" else trees[:1])]
    results: dict[tuple[str, str], list[dict[str, float]]] = {(label, e): [] for label, _, e in runs}
    sys.path.insert(0, str(HERE))
    from ai00ref.weights.random_model import RandomModelSpec, write_random_model

    with tempfile.TemporaryDirectory() as tmp:
        model = write_random_model(RandomModelSpec("v7", 12, 768, 65536, head_size=64), Path(tmp) / "bench.pth")
        for round_ in range(args.rounds):
            for label, tree, engine in runs:
                load = load_average()
                result = run_one(tree, engine, model, args)
                results[(label, engine)].append(result)
                print(f"ROUND {round_} {label} {engine}: load {load:.2f}, prefill {result['prefill_tok_s']:.1f}, "
                      f"decode {result['decode_tok_s']:.1f} tok/s", flush=True)
    official = results.get(("this", "official"))
    for (label, engine), rows in results.items():
        for key in ("prefill_tok_s", "decode_tok_s"):
            values = [r[key] for r in rows]
            line = f"SUMMARY {label} {engine} {key}: median {statistics.median(values):.1f} " \
                   f"(min {min(values):.1f}, max {max(values):.1f})"
            if official and engine != "official":
                ratios = [r[key] / o[key] for r, o in zip(rows, official)]
                line += f"; vs official per round: median {statistics.median(ratios):.2f}x " \
                        f"(min {min(ratios):.2f}x, max {max(ratios):.2f}x)"
            print(line, flush=True)


if __name__ == "__main__":
    main()
