#!/usr/bin/env bash
# One device call: ours and the peers on the same machine, the same model shapes. Carry .gl, .whl, .peerwhl, .peers
# and a snapshot of the package (run from it). The peers' models: benchmarks/peer_models.py.
# Usage on the device: bash benchmarks/device_compare.sh WHEELS PEER_WHEELS PEERS [LAYERS] [EMBD]
set -uo pipefail
whl=$1; peerwhl=$2; peers=$3; layers=${4:-24}; embd=${5:-2048}
source benchmarks/device_setup.sh "$whl"
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "$peerwhl"/*.whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
models=/tmp/peer-models; mkdir -p $models
python3 benchmarks/peer_models.py $models "$layers" "$embd" v6,v7
timeout 140 python3 "$peers"/bench_peers.py $models/v6 6 webrwkv,rwkvpip 2>&1 | grep RESULT | tee "$out/peers_v6.log"
timeout 80 python3 "$peers"/bench_peers.py $models/v7 7 rwkvpip 2>&1 | grep RESULT | tee "$out/peers_v7.log"
for arch in vulkan cuda; do
  timeout $([ $arch = vulkan ] && echo 170 || echo 150) python3 benchmarks/gpu_bench.py --arch $arch --check "" --speed v7,v6 --layers "$layers" --embd "$embd" \
    --precision fp16 --quant-types none --prefill 1024 --decode 100 --batch 32 2>&1 | grep -E "RESULT|ready" \
    | tee "$out/ours_$arch.log"
done
