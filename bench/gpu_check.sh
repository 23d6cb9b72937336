#!/usr/bin/env bash
# The GPU check in one call: training throughput (DenseNet-121, ResNet-50, ResNet-18; fp32, AMP,
# AMP + channels_last, + torch.compile), the feed against the bare step, evaluation with ten
# crops, the smoke report on CUDA, peak memory. Under eight minutes on an H100/H200; writes
# bench/results/gpu.md. bench/gpu_check.py says what each part measures and its time cap.
#
#   bash bench/gpu_check.sh                                        # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny --out /tmp/gpu.md  # rehearsal on the CPU (tests)
#
# Needs only `pip install -r requirements.txt` and the CUDA build of torch (README, "GPU machine").
# Without CUDA it stops at once and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PY" bench/gpu_check.py "$@"
