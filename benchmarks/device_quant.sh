#!/usr/bin/env bash
# One device call: the quantized kernels (spec/quant.md, spec/kernels.md §7) checked against the reference and timed,
# on CUDA and on Vulkan. Carry: .gl (the Vulkan loader debs), .whl (taichi 1.7.4 for cp312 and its pure-Python needs).
# Usage on the device: bash benchmarks/device_quant.sh [SPEED_VARIANTS] [LAYERS] [EMBD] [SECONDS_PER_RUN]
# Each (variant, arch) is its own process with its own time limit, v7 first, so a slow one cannot hide the others.
set -uo pipefail
variants=${1:-v7,v6}; layers=${2:-24}; embd=${3:-2048}; limit=${4:-60}
source benchmarks/device_setup.sh .whl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
for variant in ${variants//,/ }; do
  for arch in cuda vulkan; do
    checks=(--check "")
    [ "$variant" = "${variants%%,*}" ] && checks=(--check "$variant" --check-quant int8,nf4,sf4)
    timeout "$limit" python3 benchmarks/gpu_bench.py --arch $arch "${checks[@]}" --speed "$variant" \
      --layers "$layers" --embd "$embd" --precision fp16 --quant-types none,int8,nf4 --prefill 4 --decode 32 \
      --batch 32 2>&1 | grep -v "^\[Taichi\]" | tee "$out/quant_${variant}_${arch}.log"
  done
done
