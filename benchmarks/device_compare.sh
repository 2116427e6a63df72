#!/usr/bin/env bash
# One device call: ours and the peers on the same machine, the same model shapes. Carry .gl, .whl, .peerwhl, .peers
# and a snapshot of the package (run from it). The peers' models repeat layer 1's weights in every layer from 2 on
# (as gpu_bench.py's repeated_layer_model does for ours): generating 1.5B random weights in NumPy takes minutes, and
# no kernel's time depends on the values it reads.
# Usage on the device: bash benchmarks/device_compare.sh WHEELS PEER_WHEELS PEERS [LAYERS] [EMBD]
set -uo pipefail
whl=$1; peerwhl=$2; peers=$3; layers=${4:-24}; embd=${5:-2048}
source benchmarks/device_setup.sh "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$peerwhl"/*.whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
models=/tmp/peer-models; mkdir -p $models
python3 - "$layers" "$embd" "$models" <<'PY'
import sys
import numpy as np
from ai00ref.weights.convert import pth_to_st_tensors
from ai00ref.weights.pth import write_pth
from ai00ref.weights.random_model import RandomModelSpec, random_model_tensors
from ai00ref.weights.safetensors_io import write_safetensors
layers, embd, folder = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3]
rng = np.random.default_rng(0)
for variant in ("v6", "v7"):
    tensors = random_model_tensors(RandomModelSpec(variant, 2, embd, 256, head_size=64))
    tensors["emb.weight"] = rng.standard_normal((65536, embd), dtype=np.float32) * np.float32(0.5)
    tensors["head.weight"] = rng.standard_normal((65536, embd), dtype=np.float32) * np.float32(embd ** -0.5)
    for name in [n for n in tensors if n.startswith("blocks.1.")]:
        for i in range(2, layers):
            tensors[name.replace("blocks.1.", f"blocks.{i}.", 1)] = tensors[name]
    write_pth(f"{folder}/{variant}.pth", tensors, dtype="fp16")
    write_safetensors(f"{folder}/{variant}.st", {k: v.astype(np.float16) for k, v in pth_to_st_tensors(tensors).items()},
                      metadata={"format": "pt"})
    print("wrote", variant, flush=True)
PY
timeout 140 python3 "$peers"/bench_peers.py $models/v6 6 webrwkv,rwkvpip 2>&1 | grep RESULT | tee "$out/peers_v6.log"
timeout 80 python3 "$peers"/bench_peers.py $models/v7 7 rwkvpip 2>&1 | grep RESULT | tee "$out/peers_v7.log"
for arch in vulkan cuda; do
  timeout $([ $arch = vulkan ] && echo 170 || echo 150) python3 benchmarks/gpu_bench.py --arch $arch --check "" --speed v7,v6 --layers "$layers" --embd "$embd" \
    --precision fp16 --quant-types none --prefill 1024 --decode 100 --batch 32 2>&1 | grep -E "RESULT|ready" \
    | tee "$out/ours_$arch.log"
done
