#!/usr/bin/env bash
# One device call on Vulkan: benchmarks/gemm_probe.py over batch-decode positions (BATCH variants) and prefill positions
# (PREFILL variants). Carry .gl and .whl. Usage on the device: bash benchmarks/device_gemm_probe.sh WHEELS
# (env BATCH_T, BATCH_VARIANTS, PREFILL_T, PREFILL_VARIANTS, SHAPES: gemm_probe.py's options)
set -uo pipefail
source benchmarks/device_setup.sh "$1"
nvidia-smi --query-gpu=name,driver_version,clocks.max.sm --format=csv,noheader
shapes=${SHAPES:-2048x2048,7168x2048,2048x7168}
timeout 250 python3 benchmarks/gemm_probe.py --positions "${BATCH_T:-16,32,64}" --shapes "$shapes" \
  --variants "${BATCH_VARIANTS:-lanes,64x32x32x4x4x1,32x16x16x4x4x8,32x16x32x4x4x4,32x32x32x4x4x4,32x16x16x4x4x4}" \
  2>&1 | grep -E "RESULT|device|Error" | tee "$out/batch.log"
timeout 250 python3 benchmarks/gemm_probe.py --positions "${PREFILL_T:-256,1024}" --shapes "$shapes" \
  --variants "${PREFILL_VARIANTS:-64x32x32x4x4x1,64x32x32x4x4x2,128x64x16x4x8x1,128x64x32x4x8x1,64x64x32x4x8x1}" \
  2>&1 | grep -E "RESULT|device|Error" | tee "$out/prefill.log"
