"""Accuracy and memory of Int8 / NF4 / SF4 against fp32, on random models of each version (spec/quant.md §6).

    .venv/bin/python benchmarks/quant_accuracy.py --variants v4,v5.2,v6,v7 --layers 6 --embd 768 --vocab 65536

For each version: a random model of that shape from the project's generator, a random token sequence, the
reference engine (float32) unquantized and with every layer quantized by each scheme. Per scheme: the relative L2
error of the logits at every position (mean and max over positions), top-1 agreement with fp32, and the bytes of
the quantized matrices and of the whole model against fp16. Random weights are not trained weights: their matrices
are Gaussian, the error of a trained model (outliers, heavy tails) differs; the perplexity of the project's
trained model: `python -m ai00ref.train.evaluate` (assets/models/README.md).
"""
from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

import ai00ref
from ai00ref.weights.quant import SCHEMES
from ai00ref.weights.random_model import RandomModelSpec, write_random_model


def logits_per_position(model, tokens: list[int]) -> np.ndarray:
    outputs, _ = model.forward([tokens], model.new_state(1), full_output=True)
    return outputs[0]  # (T, V)


def compare(ref: np.ndarray, got: np.ndarray) -> tuple[float, float, float]:
    """(mean, max) over positions of ‖got - ref‖₂ / ‖ref‖₂, and the share of positions with the same argmax."""
    rel = np.linalg.norm(got - ref, axis=-1) / np.linalg.norm(ref, axis=-1)
    return float(rel.mean()), float(rel.max()), float(np.mean(got.argmax(-1) == ref.argmax(-1)))


def run_variant(variant: str, args, folder: Path) -> list[str]:
    spec = RandomModelSpec(variant, args.layers, args.embd, args.vocab, 64, seed=args.seed)
    path = write_random_model(spec, folder / f"{variant}.st")
    tokens = np.random.default_rng(args.seed).integers(0, args.vocab, args.tokens).tolist()
    reference = logits_per_position(ai00ref.load_model(path), tokens)
    rows = []
    for scheme in SCHEMES:
        start = time.perf_counter()
        model = ai00ref.load_model(path, quant=args.layers, quant_type=scheme)
        seconds = time.perf_counter() - start
        mean, worst, top1 = compare(reference, logits_per_position(model, tokens))
        info = model.info
        rows.append(f"| {variant} | {scheme} | {mean:.2e} | {worst:.2e} | {top1:.3f} | "
                    f"{info.quantized_bytes / info.quantized_bytes_fp16:.4f} | "
                    f"{info.weight_bytes / info.weight_bytes_fp16:.3f} | {seconds:.1f} |")
        print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variants", default="v4,v5.2,v6,v7")
    parser.add_argument("--layers", type=int, default=6)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--tokens", type=int, default=64, help="positions compared (one random sequence)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"random models L{args.layers} C{args.embd} V{args.vocab} N64 seed {args.seed}, {args.tokens} tokens; "
          "every layer quantized; reference engine float32")
    print("| version | scheme | logits rel. L2 (mean) | (max) | top-1 agreement | quantized matrices / fp16 | "
          "whole model / fp16 | load + quantize s |")
    print("|---|---|---|---|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for variant in args.variants.split(","):
            run_variant(variant, args, Path(tmp))


if __name__ == "__main__":
    main()
