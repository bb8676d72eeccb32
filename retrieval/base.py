"""Protocols of the retrieval stage. Vectors are float32 ``(n, d)`` arrays aligned with chunks."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.protocols import Embeds
from ragkit.types import Chunk, Hit


def filter_rows(chunks: Sequence[Chunk], filter: Mapping[str, Any] | None) -> np.ndarray | None:
    """Rows of ``chunks`` matching a metadata ``filter``, ascending, or ``None`` for no filter.

    ``filter`` maps a metadata key to a value, or to a list/tuple/set of values meaning "any of";
    the key ``doc_id`` matches the chunk's document id. A chunk without the key does not match.
    """
    if not filter:
        return None
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping of metadata key -> value; got {filter!r}")
    wanted = {
        key: (tuple(v) if isinstance(v, list | tuple | set | frozenset) else (v,))
        for key, v in filter.items()
    }

    def matches(c: Chunk) -> bool:
        for key, values in wanted.items():
            if key == "doc_id":
                value = c.doc_id
            elif key in c.metadata:
                value = c.metadata[key]
            else:
                return False
            if not any(value == v for v in values):
                return False
        return True

    return np.fromiter((i for i, c in enumerate(chunks) if matches(c)), dtype=np.intp)


Embedder = Embeds  # the embedder role is the kernel's ability (ragkit.protocols.Embeds)


@runtime_checkable
class Index(Protocol):
    """Stores chunk vectors and returns the nearest chunks to query vectors.

    Beyond the methods below, ragkit's indexes also have (and the pipeline uses when present):

    - ``info: dict``: what the index was built with (the pipeline records the embedder's and the
      chunker's config there and refuses a pipeline that differs); saved with the index;
    - ``doc_hash(doc_id) -> str | None``: the ``doc_hash`` metadata stored with a document's
      chunks, so re-adding an unchanged document is a no-op;
    - ``save(path)`` and a classmethod ``load(path)``, or persistence by a path in their config;
    - ``search(..., queries=[...])``: the query texts, for indexes that score text (BM25, hybrid);
    - ``doc_chunks(doc_id) -> list[Chunk]``: a document's chunks in order (neighbour expansion).
    """

    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None: ...

    def search(
        self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None
    ) -> list[list[Hit]]: ...

    def delete(self, doc_ids: Sequence[str]) -> int: ...

    def __len__(self) -> int: ...


@runtime_checkable
class Reranker(Protocol):
    """Re-scores hits for a query; returns them best first with new scores and ranks."""

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]: ...


@dataclass
class SelectionContext:
    """What a selector may use besides the hits: the query's vector, the pipeline's embedder
    (``embed(texts) -> (n, d)``) and the index (``doc_chunks(doc_id)`` for neighbours)."""

    query_vec: np.ndarray | None = None
    embed: Callable[[Sequence[str]], np.ndarray] | None = None
    index: Any = None


@runtime_checkable
class Selector(Protocol):
    """Decides how many and which hits reach the generator."""

    def select(self, query: str, hits: Sequence[Hit], context: SelectionContext) -> list[Hit]: ...
