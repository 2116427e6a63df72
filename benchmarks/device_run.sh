#!/usr/bin/env bash
# One device call: Vulkan loader + wheels in, then the Taichi engine checked and timed on Vulkan and CUDA.
# Carry: .gl (the Vulkan loader debs), .whl (taichi 1.7.4 for cp312 and its pure-Python needs), .peers.
# Usage on the device: bash benchmarks/device_run.sh [SPEED_VARIANTS] [LAYERS] [EMBD]
set -uo pipefail
variants=${1:-v7,v6}; layers=${2:-24}; embd=${3:-2048}
source benchmarks/device_setup.sh .whl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
python3 -c "from kernels.device import vulkan_devices; print('vulkan devices:', vulkan_devices())"
python3 .peers/taichi_bw.py vulkan 2>&1 | grep RESULT | tee "$out/taichi_bw_vulkan.log"
python3 .peers/taichi_bw.py cuda 2>&1 | grep RESULT | tee "$out/taichi_bw_cuda.log"
for arch in vulkan cuda; do
  timeout 280 python3 benchmarks/gpu_bench.py --arch $arch --speed "$variants" --layers "$layers" --embd "$embd" \
    --precision fp16 2>&1 | grep -v "^\[Taichi\]" | tee "$out/gpu_bench_${arch}.log"
done
