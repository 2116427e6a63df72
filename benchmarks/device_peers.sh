#!/usr/bin/env bash
# Device call: the peer engines on the same random models (../shared/peers/bench_peers.py, copied into .peers):
# web-rwkv-py (Vulkan; v4-v6) and the official rwkv package (CUDA kernels, fp16). Carry .gl, .peerwhl, .peers.
set -uo pipefail
layers=${1:-24}; embd=${2:-2048}
source benchmarks/device_setup.sh .peerwhl; models=/tmp/peer-models; mkdir -p $models
python3 - "$layers" "$embd" "$models" <<'PY'
import sys
import numpy as np
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.pth import write_pth
from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors
from ai00ref.weights.safetensors_io import write_safetensors
layers, embd, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
for variant in ("v6", "v7"):
    tensors = random_model_tensors(RandomModelSpec(variant, layers, embd, 65536, head_size=64))
    write_pth(f"{folder}/{variant}.pth", tensors, dtype="fp16")
    write_safetensors(f"{folder}/{variant}.st", {k: v.astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()},
                      metadata={"format": "pt"})
    print("wrote", variant, flush=True)
PY
timeout 200 python3 .peers/bench_peers.py $models/v6 6 webrwkv,rwkvpip 2>&1 | grep -v Warn | tee "$out/peers_v6.log"
timeout 150 python3 .peers/bench_peers.py $models/v7 7 rwkvpip 2>&1 | grep -v Warn | tee "$out/peers_v7.log"
