#!/usr/bin/env bash
# Device call: per-kernel profile of one decode step (and the speeds) for one variant on Vulkan and CUDA.
set -uo pipefail
variant=${1:-v7}; layers=${2:-24}; embd=${3:-2048}
for f in .gl/*.deb; do dpkg -x "$f" /; done; ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1
out=${OUT:-/tmp/out}; mkdir -p "$out"
for arch in vulkan cuda; do
  timeout 280 python3 benchmarks/gpu_bench.py --arch $arch --check "" --speed "$variant" --layers "$layers" \
    --embd "$embd" --precision fp16 --batch 32 --profile 2>&1 | grep -v "^\[Taichi\]\|SyntaxWarning\|Save a field" \
    | tee "$out/profile_${arch}_${variant}.log"
done
