#!/usr/bin/env bash
# Every GPU measurement of the kernels issue in one run, for a session that is lent a CUDA device:
# kernel bandwidth vs copy bandwidth and speed-up over eager torch, the sync-debug-mode check of the
# fixed-step loop (both benchmarks/kernels.py), solver overhead per NFE, and compile= against eager
# (default mode and CUDA graphs). Needs torch with CUDA and triton importable (PYTHONPATH may point
# at carried wheels). Results go to $OUT (default benchmarks/results); each script says so and exits
# 0 when there is no CUDA device, so this also runs, measuring nothing, on a CPU machine.
#
#   bash benchmarks/gpu.sh            # about 5-8 minutes on an H100/H200
set -uo pipefail
cd "$(dirname "$0")/.."
out=${OUT:-benchmarks/results}
mkdir -p "$out"
export PYTHONPATH=".${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
py=${PYTHON:-python3}
status=0
"$py" -c "import torch; print('torch', torch.__version__, 'cuda', torch.cuda.is_available())" || exit 1
"$py" benchmarks/kernels.py --out "$out/kernels_cuda" || status=1
"$py" benchmarks/overhead.py --device cuda --steps 20 --repeats 5 --out "$out/overhead_cuda" || status=1
"$py" benchmarks/compile.py --device cuda --out "$out/compile_cuda" || status=1
"$py" benchmarks/compile.py --device cuda --mode reduce-overhead --out "$out/compile_cuda_graphs" || status=1
exit $status
