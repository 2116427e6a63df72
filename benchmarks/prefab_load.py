"""Load time: a model quantized at load against its prefab (spec/formats.md §6), and the plain fp16 `.st` as a peer.

    .venv/bin/python benchmarks/prefab_load.py --variant v7 --layers 12 --embd 768 --vocab 65536 --quant-type nf4

Writes a random model (the project's generator, fp16 `.st`) and, once, its prefab with every layer quantized; then
times, each `--repeat` times (the best is kept; the files are in the page cache after the first read):
`load_model(st)`, `load_model(st, quant=L, quant_type=T)` and `load_model(prefab)`. Prints one RESULT line each.
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import ai00ref
from ai00ref.engine import save_prefab
from ai00ref.weights.random_model import RandomModelSpec, write_random_model


def best_seconds(repeat: int, load) -> float:
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        load()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--variant", default="v7")
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--embd", type=int, default=768)
    parser.add_argument("--vocab", type=int, default=65536)
    parser.add_argument("--quant-type", default="nf4", choices=["int8", "nf4", "sf4"])
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        spec = RandomModelSpec(args.variant, args.layers, args.embd, args.vocab, 64)
        st = write_random_model(spec, Path(tmp) / "m.st")
        prefab = Path(tmp) / "m.prefab"
        start = time.perf_counter()
        save_prefab(st, prefab, quant=args.layers, quant_type=args.quant_type)
        print(f"RESULT save_prefab_s={time.perf_counter() - start:.2f} "
              f"st_mib={os.path.getsize(st) / 2**20:.0f} prefab_mib={os.path.getsize(prefab) / 2**20:.0f}")
        quant = dict(quant=args.layers, quant_type=args.quant_type)
        for name, load in (("st_fp16", lambda: ai00ref.load_model(st)),
                           (f"st_quantize_{args.quant_type}", lambda: ai00ref.load_model(st, **quant)),
                           (f"prefab_{args.quant_type}", lambda: ai00ref.load_model(prefab))):
            print(f"RESULT load_s={best_seconds(args.repeat, load):.2f} what={name}", flush=True)


if __name__ == "__main__":
    main()
