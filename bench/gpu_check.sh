#!/usr/bin/env bash
# The GPU check in one call: training throughput (DenseNet-121, ResNet-50, ResNet-18; fp32, AMP,
# AMP + channels_last; the step compiled as fit compiles it, at CheXNet's batch 16 first), fit
# end to end at the full profile's set-up, the feed against the bare step, evaluation with ten
# crops, two DDP processes against one, the smoke report on CUDA, peak memory. Under eight
# minutes on an H100/H200; writes bench/results/gpu.md and the raw gpu.json beside it.
# bench/gpu_check.py says what each part measures and its time cap.
#
#   bash bench/gpu_check.sh                                        # on the GPU machine
#   bash bench/gpu_check.sh --device cpu --tiny --out /tmp/gpu.md  # rehearsal on the CPU (tests)
#
# Needs only `pip install -r requirements.txt` and the CUDA build of torch (README, "GPU machine").
# Without CUDA it stops at once and says so.
set -euo pipefail
cd "$(dirname "$0")/.."
# cxrlib from this checkout, with or without `pip install -e .` (offline, that may not work)
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
PY="${PYTHON:-$(command -v python || command -v python3)}"
exec "$PY" bench/gpu_check.py "$@"
