#!/usr/bin/env bash
# One device call on Vulkan: the engine under our command buffers ("commands") and under Taichi's runtime ("taichi"),
# same tree, same machine: checks against the reference, then speed (kernels/__init__.py: runtime). Carry .gl, .whl.
# Usage on the device: bash benchmarks/device_runtime_ab.sh WHEELS [CHECKS]
# env RUNS="new:commands new:taichi" (TREE:RUNTIME; old = the carried .snap's kernels/, carry .snap too), VARIANTS=v6,
# QUANT_TYPES=none, LIMIT=240 (seconds per timed run), DECODE=64, CHECK_QUANT=nf4 (schemes checked too; "" none),
# CHECK_LIMIT=200 (seconds for the checks),
# EXTRA (more gpu_bench options)
set -uo pipefail
whl=$1; checks=${2-v5.2,v6,v7}
source benchmarks/device_setup.sh "$whl"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
python3 -c "from kernels.vk.context import VkContext; c = VkContext(allow_software=False); print('device', c.name, c.taichi_caps())"
if [ -n "$checks" ]; then
  timeout ${CHECK_LIMIT:-200} python3 benchmarks/gpu_bench.py --arch vulkan --runtime commands --check "$checks" --check-quant "${CHECK_QUANT-nf4}" \
    --speed "" 2>&1 | grep -E "RESULT|Error|error" | tee "$out/checks.log"
fi
for run in ${RUNS:-new:commands new:taichi}; do  # TREE:RUNTIME; tree "old" is the carried .snap's kernels/
  tree=${run%%:*}; runtime=${run#*:}; path=$PYTHONPATH; [ "$tree" = old ] && path=/tmp/site:$PWD/.snap:$PWD
  PYTHONPATH=$path timeout -s ABRT ${LIMIT:-240} python3 -X faulthandler benchmarks/gpu_bench.py --arch vulkan \
    --runtime "$runtime" --check "" --speed "${VARIANTS:-v6}" --layers 24 --embd 2048 --precision fp16 \
    --quant-types "${QUANT_TYPES:-none}" --prefill 512 --decode "${DECODE:-64}" --batch 32 ${EXTRA:-} 2>&1 \
    | grep -E "RESULT|ready|PHASES|PROFILE|TIMESTAMPS|File|Thread|Fatal|Error" | sed "s/^/$tree /" | tee -a "$out/ab.log"
done
