#!/usr/bin/env bash
# GPU check: the MNIST-shaped study with gpus_per_trial 1, 0.5 and 0.25 on one GPU; prints
# trials per hour and peak GPU memory per trial for each. Then one pack's step, eager and
# replayed from a CUDA graph (benchmarks/pack_step.py).
#
#   bash benchmarks/gpu_check.sh            # on a machine with an NVIDIA GPU and this project installed
#
# Where ray is not installed (a bare GPU image), wheels placed in .whl/ are installed first into
# /tmp/site (see README, "GPU check").
set -euo pipefail
cd "$(dirname "$0")/.."
export RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 PYTHONUNBUFFERED=1
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && PY=.venv/bin/python
if ! "$PY" -c "import ray" 2>/dev/null && ls .whl/*.whl >/dev/null 2>&1; then
  "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
  export PYTHONPATH=/tmp/site:$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader || true
"$PY" -c "import torch, ray; print('torch', torch.__version__, 'cuda', torch.cuda.is_available(), 'ray', ray.__version__)"
"$PY" benchmarks/gpu_check.py "$@"
# One pack's step, eager against replayed from a CUDA graph (issue #8, item 6).
if "$PY" -c "import sys, torch; sys.exit(not torch.cuda.is_available())"; then
  "$PY" benchmarks/pack_step.py --device cuda
fi
