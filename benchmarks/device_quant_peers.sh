#!/usr/bin/env bash
# One device call: quantized decode, ours against web-rwkv's quantized modes on the same v6 shape (issue 6).
# Carry .gl, .whl, .peerwhl. web-rwkv (Vulkan) reads a v6 .st written by benchmarks/peer_models.py; ours runs the
# same shape from gpu_bench.py's in-memory repeated-layer model.
# Usage on the device: bash benchmarks/device_quant_peers.sh WHEELS PEER_WHEELS [LAYERS] [EMBD] [ARCHES]
set -uo pipefail
whl=$1; peerwhl=$2; layers=${3:-24}; embd=${4:-2048}; arches=${5:-vulkan}
source benchmarks/device_setup.sh "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$peerwhl"/*.whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
models=/tmp/peer-models; mkdir -p $models
python3 benchmarks/peer_models.py $models "$layers" "$embd" v6
timeout 200 python3 benchmarks/webrwkv_quant.py $models/v6.st "$layers" 2>&1 | grep -E "RESULT|load" \
  | tee "$out/webrwkv_quant.log"
for arch in ${arches//,/ }; do
  timeout 300 python3 benchmarks/gpu_bench.py --arch $arch --check "" --speed v6 --layers "$layers" --embd "$embd" \
    --precision fp16 --quant-types none,int8,nf4 --prefill 1024 --decode 100 --batch 32 2>&1 \
    | grep -E "RESULT|ready" | tee "$out/ours_quant_$arch.log"
done
