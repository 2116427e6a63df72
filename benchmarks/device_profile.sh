#!/usr/bin/env bash
# Device call: per-kernel profile of one decode step (and the speeds) for one variant on Vulkan and CUDA.
set -uo pipefail
variant=${1:-v7}; layers=${2:-24}; embd=${3:-2048}
source benchmarks/device_setup.sh .whl
for arch in vulkan cuda; do
  timeout 280 python3 benchmarks/gpu_bench.py --arch $arch --check "" --speed "$variant" --layers "$layers" \
    --embd "$embd" --precision fp16 --batch 32 --profile 2>&1 | grep -v "^\[Taichi\]\|SyntaxWarning\|Save a field" \
    | tee "$out/profile_${arch}_${variant}.log"
done
