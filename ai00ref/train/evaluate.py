"""Held-out perplexity of a model file with ai00ref's own engine, optionally quantized (no torch needed).

    python -m ai00ref.train.evaluate assets/models/rwkv7-pydoc-L4-C256.st --tokens .train/corpus/val.npy \
        [--quant-type none int8 nf4 ...] [--window 512] [--limit 8193]

The token file is cut into windows of `--window` tokens, each run from a zero state; the loss is the mean
cross-entropy over every target (nats/token) under the model's full 65536-way softmax, as the trainer's
validation loss (ai00ref.train.train.evaluate) computes it.
"""
from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

import numpy as np

from ai00ref import load_model


def log_softmax(logits: np.ndarray) -> np.ndarray:
    z = logits.astype(np.float64)
    z -= z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


def held_out_loss(engine, tokens: np.ndarray, window: int) -> tuple[float, int]:
    total, count = 0.0, 0
    for start in range(0, len(tokens) - 1, window):
        chunk = [int(t) for t in tokens[start:start + window + 1]]
        if len(chunk) < 2:
            break
        logits, _ = engine.forward([chunk[:-1]], engine.new_state(1), full_output=True)
        logp = log_softmax(np.asarray(logits[0]))
        total -= float(logp[np.arange(len(chunk) - 1), chunk[1:]].sum())
        count += len(chunk) - 1
    return total / count, count


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model", type=Path)
    ap.add_argument("--tokens", type=Path, required=True, help="a .npy of token ids (ai00ref.train.corpus)")
    ap.add_argument("--quant-type", nargs="*", default=["none"], help="none, int8, nf4, sf4 (all layers)")
    ap.add_argument("--window", type=int, default=512)
    ap.add_argument("--limit", type=int, help="only the first LIMIT tokens of the file")
    args = ap.parse_args(argv)
    tokens = np.load(args.tokens)[: args.limit]
    for quant_type in args.quant_type:
        quant = 0 if quant_type == "none" else 10**6  # every layer
        engine = load_model(args.model, backend="ref", quant=quant,
                            quant_type="int8" if quant_type == "none" else quant_type)
        loss, count = held_out_loss(engine, tokens, args.window)
        print(json.dumps({"model": str(args.model), "quant_type": quant_type, "loss": round(loss, 4),
                          "ppl": round(math.exp(loss), 2), "targets": count}), flush=True)


if __name__ == "__main__":
    main()
