#!/usr/bin/env bash
# One device call on one arch: the quantized readers' tests, then quantized decode of a snapshot of kernels/ (SNAP: the
# tree before a change) against the working tree's, on the same machine. Carry .gl, .whl and SNAP.
# Usage on the device: bash benchmarks/device_quant_ab.sh WHEELS SNAP ARCH [LAYERS] [EMBD] [TESTS]
# (TESTS "" skips the tests, env TEST_FILES names other test files; env TREES="new old", VARIANTS=v6 and
# QUANT_TYPES=none,int8,nf4 choose the timed runs, DECODE=0 times prefill only)
set -uo pipefail
whl=$1; snap=$2; arch=$3; layers=${4:-24}; embd=${5:-2048}; tests=${6-linear_task or model_matches}
source benchmarks/device_setup.sh "$whl"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
[ -n "$tests" ] && AI00REF_TAICHI_ARCH=$arch HYPOTHESIS_PROFILE=ci timeout 240 python3 -m pytest -q -p no:cacheprovider \
  ${TEST_FILES:-tests/test_kernels_quant.py} -k "$tests" 2>&1 | tail -4 | tee "$out/tests_$arch.log"
for tree in ${TREES:-new old}; do
  path=$PYTHONPATH; [ "$tree" = old ] && path=/tmp/site:$PWD/$snap:$PWD
  PYTHONPATH=$path timeout -s ABRT ${LIMIT:-170} python3 -X faulthandler benchmarks/gpu_bench.py --arch "$arch" --check "" --speed "${VARIANTS:-v6}" --layers "$layers" \
    --embd "$embd" --precision fp16 --quant-types "${QUANT_TYPES:-none,int8,nf4}" --prefill 512 --decode ${DECODE:-64} --batch 32 2>&1 \
    | grep -E "RESULT|ready|File|Thread|Fatal" | sed "s/^/$tree /" | tee -a "$out/ab_$arch.log"
done
