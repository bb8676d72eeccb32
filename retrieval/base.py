"""Protocols of the retrieval stage. Vectors are float32 ``(n, d)`` arrays aligned with chunks."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.types import Chunk, Hit


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into L2-normalised float32 vectors of shape ``(len(texts), dim)``."""

    @property
    def dim(self) -> int: ...

    def embed(self, texts: Sequence[str]) -> np.ndarray: ...


@runtime_checkable
class Index(Protocol):
    """Stores chunk vectors and returns the nearest chunks to query vectors."""

    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None: ...

    def search(
        self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...

    def delete(self, doc_ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...
