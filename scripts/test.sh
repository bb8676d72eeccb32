#!/usr/bin/env bash
# Install everything (first run) and run the whole test suite, slow tests included.
#   bash scripts/test.sh                 # everything, as CI runs it
#   bash scripts/test.sh -m "not slow"   # skip the tests that load real models
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
VENV="${RAGKIT_VENV:-.venv}"
# -rs: every skip is listed with its reason (none may be for missing data: data/ ships in the repo)
exec "$VENV/bin/python" -m pytest -q -rs -p no:cacheprovider "$@"
