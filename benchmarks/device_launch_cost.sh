#!/usr/bin/env bash
# Device call: launch and dispatch costs on Vulkan and CUDA (benchmarks/launch_cost.py).
set -uo pipefail
source benchmarks/device_setup.sh .whl
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
for arch in vulkan cuda; do
  timeout 200 python3 benchmarks/launch_cost.py --arch $arch 2>&1 | grep -v "^\[Taichi\]" | tee "$out/launch_$arch.log"
done
