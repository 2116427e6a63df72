#!/usr/bin/env bash
# One device call on Vulkan: benchmarks/decode_probe.py on this tree, then its LayerNorm cases on the carried .snap's
# kernels/ (the tree before a change; carry .gl, .whl and .snap). Usage on the device:
# bash benchmarks/device_decode_probe.sh WHEELS   (env: REPEATS=20, READERS, SHAPES: decode_probe.py's options)
set -uo pipefail
source benchmarks/device_setup.sh "$1"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
opts=(--repeats "${REPEATS:-20}")
[ -n "${READERS:-}" ] && opts+=(--readers "$READERS"); [ -n "${SHAPES:-}" ] && opts+=(--shapes "$SHAPES")
timeout 240 python3 benchmarks/decode_probe.py "${opts[@]}" 2>&1 | grep -E "RESULT|device|Error" | sed "s/^/new /" \
  | tee "$out/probe.log"
[ -d .snap/kernels ] && PYTHONPATH=/tmp/site:$PWD/.snap:$PWD timeout 120 python3 benchmarks/decode_probe.py \
  --repeats "${REPEATS:-20}" --readers lanes --shapes 2048x2048,2048x7168 2>&1 | grep -E "RESULT|Error" | sed "s/^/old /" \
  | tee -a "$out/probe.log"
