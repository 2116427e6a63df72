"""The peers' models for a device comparison: random weights of a real shape, written as VARIANT.pth (the official
package) and VARIANT.st (web-rwkv) in FOLDER. Layers from 2 on repeat layer 1's weights (as gpu_bench.py's
repeated_layer_model does for ours): generating 1.5B random weights in NumPy takes minutes, and no kernel's time
depends on the values it reads.

Usage: python3 benchmarks/peer_models.py FOLDER LAYERS EMBD VARIANT[,VARIANT...]
"""
import sys

import numpy as np

from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.pth import write_pth
from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors
from ai00ref.weights.safetensors_io import write_safetensors


def write_models(folder: str, layers: int, embd: int, variants: list[str]) -> None:
    rng = np.random.default_rng(0)
    for variant in variants:
        tensors = random_model_tensors(RandomModelSpec(variant, 2, embd, 256, head_size=64))
        tensors["emb.weight"] = rng.standard_normal((65536, embd), dtype=np.float32) * np.float32(0.5)
        tensors["head.weight"] = rng.standard_normal((65536, embd), dtype=np.float32) * np.float32(embd ** -0.5)
        for name in [n for n in tensors if n.startswith("blocks.1.")]:
            for i in range(2, layers):
                tensors[name.replace("blocks.1.", f"blocks.{i}.", 1)] = tensors[name]
        write_pth(f"{folder}/{variant}.pth", tensors, dtype="fp16")
        st = {k: v.astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()}
        write_safetensors(f"{folder}/{variant}.st", st, metadata={"format": "pt"})
        print("wrote", variant, flush=True)


if __name__ == "__main__":
    write_models(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4].split(","))
