#!/usr/bin/env bash
# GPU check of m2f-med in one run (< 8 min on one GPU): CUDA tests, predict on a 300-slice CT in fp32 / fp16 /
# bf16 autocast, 20 training iterations with and without AMP; one table. On a machine without CUDA every GPU
# part is skipped with a line saying so. Usage: bash benchmarks/gpu_check.sh [--slices N] [--iterations N]
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
export OMP_WAIT_POLICY="${OMP_WAIT_POLICY:-PASSIVE}"
start=$(date +%s)
"$PY" benchmarks/gpu_check.py "$@"
echo "total: $(( $(date +%s) - start )) s"
