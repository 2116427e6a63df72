#!/usr/bin/env bash
# One device call: what a launch and a serial task cost (launch_cost.py), then where a v6 decode step's time goes
# (task_profile.py: the host's enqueue time against the wall time, then each task's device time).
# Carry .gl and .whl. Usage on the device: bash benchmarks/device_tasks.sh WHEELS ARCH [VARIANT] [QUANT_TYPES]
set -uo pipefail
whl=$1; arch=$2; variant=${3:-v6}; quant=${4:-none,nf4}
source benchmarks/device_setup.sh "$whl"
nvidia-smi --query-gpu=name,driver_version --format=csv,noheader
timeout 120 python3 benchmarks/launch_cost.py --arch "$arch" 2>&1 | grep -E " us$|arch" | tee "$out/launch_$arch.log"
timeout -s ABRT ${LIMIT:-300} python3 -X faulthandler benchmarks/task_profile.py --arch "$arch" --variant "$variant" \
  --quant-types "$quant" 2>&1 | grep -E "^STEP|File|Fatal" | tee "$out/step_$arch.log"
timeout -s ABRT ${LIMIT:-300} python3 -X faulthandler benchmarks/task_profile.py --arch "$arch" --variant "$variant" \
  --quant-types "${PROFILE_TYPES:-none}" --kernel-profiler 2>&1 | grep -E "^TASK|File|Fatal" | tee "$out/tasks_$arch.log"
