#!/usr/bin/env bash
# One device call: the quantized kernels (spec/quant.md, spec/kernels.md §7) timed and checked against the reference,
# on CUDA and on Vulkan. Carry: .gl (the Vulkan loader debs), .whl (taichi 1.7.4 for cp312 and its pure-Python needs).
# Usage on the device: bash benchmarks/device_quant.sh [LAYERS] [EMBD]
# Each step is its own process with its own time limit (seconds below), so a slow one cannot hide the others:
# v7 decode fp16 / int8 / nf4 on CUDA then Vulkan, the checks of every scheme on both arches at once (small models,
# after the timings, so they never share the GPU with a timed run), then v6 on CUDA.
set -uo pipefail
layers=${1:-24}; embd=${2:-2048}
source benchmarks/device_setup.sh .whl
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader
speed() {  # arch variant seconds
  timeout "$3" python3 benchmarks/gpu_bench.py --arch "$1" --check "" --speed "$2" --layers "$layers" --embd "$embd" \
    --precision fp16 --quant-types none,int8,nf4 --prefill 4 --decode 32 --batch 32 2>&1 | grep -v "^\[Taichi\]" \
    | tee "$out/quant_speed_$2_$1.log"
}
check() {  # arch seconds
  timeout "$2" python3 benchmarks/gpu_bench.py --arch "$1" --check v7 --check-quant int8,nf4,sf4 --speed "" \
    --precision fp16 2>&1 | grep -v "^\[Taichi\]" > "$out/quant_check_$1.log"
}
speed cuda v7 80
speed vulkan v7 80
check cuda 45 & check vulkan 45 & wait
cat "$out"/quant_check_*.log
speed cuda v6 55
