#!/usr/bin/env bash
# One check of the GPU paths (training precisions, gradient checkpointing, encoding, torch search):
# prints one table and writes JSON (docs/performance.md#gpu-check). Needs torch and
# transformers only; no faiss, no ir_measures, no network. Under 8 minutes on one H200.
#
#   bash bench/gpu_check.sh                      # README sizes on cuda:0
#   bash bench/gpu_check.sh --json out/gpu.json  # results elsewhere (default ./gpu_check.json)
#   bash bench/gpu_check.sh --tiny               # small sizes, CPU if no GPU, seconds
set -euo pipefail
repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-$(command -v python3 || command -v python)}"
export PYTHONPATH="$repo${PYTHONPATH:+:$PYTHONPATH}"
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false
exec "$python" "$repo/bench/gpu_check.py" "$@"
