"""Hybrid retrieval: a dense (vector) index and a sparse (BM25) index, fused per query.

Both sides hold the same chunks: ``add`` and ``delete`` go to both, and a search asks each side
for ``fetch`` candidates (default ``4 * k``) before fusing them into ``k`` hits:

- ``rrf``, reciprocal rank fusion (Cormack et al., 2009): a chunk scores
  ``sum over sides of 1 / (rrf_k + rank)``, with rank 1 for a side's best hit; a side that did not
  return the chunk adds nothing. Scores are rank-based, so the two sides' scales never matter.
- ``weighted``: each side's scores are min-max normalised per query to [0, 1] (a side whose
  scores are all equal gives them all 1), and a chunk scores
  ``weight * dense + (1 - weight) * sparse``, 0 for a side that did not return it.

Ties keep the order in which the chunks were met: the dense side's hits first, then the sparse
side's new ones. ``info``, ``doc_hash``, ``doc_chunks``, ``chunks`` and ``len`` come from the dense
side. Saved as a folder::

    meta.json    format, version, the hybrid's config and the registered names of both sides
    dense/       the dense index, saved by its own ``save``
    sparse/      the sparse index, saved by its own ``save``

Thread safety: many readers and one writer at a time, through the readers-writer lock of
``ragkit.concurrency`` around every public method (see there for why a lock and not
copy-on-write); ``replace`` swaps a document's chunks in one write.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragkit import registry
from ragkit.concurrency import Guarded, reads, writes
from ragkit.config import COMPONENT_KIND, build, build_dataclass, to_config
from ragkit.errors import ConfigError, RagkitError
from ragkit.protocols import Persistent
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_k,
    check_save_target,
    read_meta,
    saving,
    write_meta,
)
from ragkit.types import Chunk, Hit

FORMAT = "ragkit.hybrid_index"
VERSION = 1
FUSIONS = ("rrf", "weighted")
_SIDES = ("dense", "sparse")


@dataclass(kw_only=True)
class HybridIndex(Guarded):
    """Dense and sparse retrieval fused by reciprocal rank (``rrf``) or by normalised scores
    (``weighted``, ``weight`` being the dense side's share). ``search`` needs both the query
    vectors and the query texts (``queries=``)."""

    # settings a saved index accepts as overrides at load time (RAGPipeline.load)
    QUERY_TIME = frozenset({"fusion", "rrf_k", "weight", "fetch"})

    dense: Any = field(
        default_factory=lambda: {"name": "memory"}, metadata={COMPONENT_KIND: "index"}
    )
    sparse: Any = field(
        default_factory=lambda: {"name": "bm25"}, metadata={COMPONENT_KIND: "index"}
    )
    fusion: Literal["rrf", "weighted"] = "rrf"
    rrf_k: int = 60
    weight: float = 0.5
    fetch: int | None = None  # candidates asked of each side before fusion (default: 4 * k)

    def __post_init__(self) -> None:
        self.dense = build("index", self.dense, path="dense")
        self.sparse = build("index", self.sparse, path="sparse")
        if self.fusion not in FUSIONS:
            raise ConfigError(
                f"unknown fusion {self.fusion!r}; choose one of {', '.join(FUSIONS)}", path="fusion"
            )
        if isinstance(self.rrf_k, bool) or not isinstance(self.rrf_k, int) or self.rrf_k < 0:
            raise ConfigError(f"must be an int >= 0; got {self.rrf_k!r}", path="rrf_k")
        w = self.weight
        if isinstance(w, bool) or not isinstance(w, int | float) or not 0 <= w <= 1:
            raise ConfigError(f"must be a number in [0, 1]; got {w!r}", path="weight")
        self.weight = float(w)
        if self.fetch is not None and (
            isinstance(self.fetch, bool) or not isinstance(self.fetch, int) or self.fetch < 1
        ):
            raise ConfigError(f"must be an int >= 1 or null; got {self.fetch!r}", path="fetch")

    # -- contents: both sides hold the same chunks; reads come from the dense side --------------

    @property
    def info(self) -> dict[str, Any]:
        """The dense side's ``info`` (the same dict: the pipeline records its config there)."""
        return self.dense.info

    @reads
    def __len__(self) -> int:
        return len(self.dense)

    @reads
    def chunks(self) -> Iterator[Chunk]:
        return self.dense.chunks()

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        return self.dense.doc_chunks(doc_id)

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        return self.dense.doc_hash(doc_id)

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None:
        """Add to the dense side first (it checks the vectors), then to the sparse side."""
        chunks = list(chunks)
        self.dense.add(chunks, vecs)
        self.sparse.add(chunks, vecs)

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove the documents from both sides; returns how many chunks the dense side lost."""
        removed = self.dense.delete(doc_ids)
        self.sparse.delete(doc_ids)
        return removed

    # -- search --------------------------------------------------------------------------------

    @reads
    def search(
        self,
        query_vecs: np.ndarray,
        k: int,
        filter: Mapping[str, Any] | None = None,
        queries: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best fused hits per query; ``query_vecs`` (``(m, d)`` or ``(d,)``) feed the
        dense side and ``queries`` (``m`` texts) the sparse side."""
        k = check_k(k)
        if query_vecs is None:
            raise TypeError("HybridIndex.search needs query_vecs for its dense side; got None")
        if queries is None or isinstance(queries, str):
            raise TypeError(
                "HybridIndex.search needs the query texts for its sparse side: pass "
                f"queries=[...] (a list of str, one per query vector); got {queries!r}"
            )
        q = np.asarray(query_vecs)
        m = 1 if q.ndim == 1 else q.shape[0]
        if m != len(queries):
            raise ValueError(
                f"HybridIndex.search got {m} query vectors but {len(queries)} queries; they "
                "must align"
            )
        if k == 0:
            return [[] for _ in queries]
        fetch = self.fetch or 4 * k
        dense = self.dense.search(query_vecs, fetch, filter=filter, queries=queries)
        sparse = self.sparse.search(query_vecs, fetch, filter=filter, queries=queries)
        return [self.fuse(d, s)[:k] for d, s in zip(dense, sparse)]

    def fuse(self, dense: Sequence[Hit], sparse: Sequence[Hit]) -> list[Hit]:
        """One query's two hit lists (each best first) fused into one, best first."""
        if self.fusion == "rrf":
            parts = [_rrf(dense, self.rrf_k), _rrf(sparse, self.rrf_k)]
        else:
            parts = [_minmax(dense, self.weight), _minmax(sparse, 1.0 - self.weight)]
        chunks: dict[str, Chunk] = {}
        fused: dict[str, float] = {}
        for part in parts:
            for chunk, score in part:
                chunks.setdefault(chunk.id, chunk)
                fused[chunk.id] = fused.get(chunk.id, 0.0) + score
        order = sorted(fused, key=lambda cid: -fused[cid])  # stable: ties keep meeting order
        return [Hit(chunk=chunks[cid], score=fused[cid], rank=r) for r, cid in enumerate(order)]

    # -- save / load ---------------------------------------------------------------------------

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write both sides to ``path/dense`` and ``path/sparse`` with a ``meta.json``; the folder
        is replaced only once it is complete."""
        path = Path(path)
        for side in _SIDES:
            if not isinstance(getattr(self, side), Persistent):
                raise RagkitError(
                    f"hybrid index: the {side} index {type(getattr(self, side)).__name__} cannot "
                    "be saved to a folder"
                )
        check_save_target(path)
        with saving(path) as tmp:
            for side in _SIDES:
                getattr(self, side).save(tmp / side)
            config = to_config(self)
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "config": {key: config[key] for key in ("fusion", "rrf_k", "weight", "fetch")},
                "sides": {
                    side: registry.name_of("index", type(getattr(self, side))) for side in _SIDES
                },
                "count": len(self),
            }
            write_meta(tmp, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> HybridIndex:
        """Read a hybrid index saved by ``save``: each side is loaded by its own ``load``, which
        checks its files; this checks that both sides hold the same chunks."""
        path = Path(path)
        meta = read_meta(path, FORMAT, VERSION)
        file = path / "meta.json"
        config, sides = meta.get("config"), meta.get("sides")
        if not isinstance(config, dict) or not isinstance(sides, dict):
            raise IndexFileError(f"{file}: missing the hybrid config or the names of its sides")
        loaded = {}
        for side in _SIDES:
            name = sides.get(side)
            if not isinstance(name, str):
                raise IndexFileError(f"{file}: no index name for the {side} side")
            try:
                side_cls = registry.resolve("index", name)
            except ConfigError as exc:
                raise IndexFileError(f"{file}: {side} side: {exc}") from None
            if not issubclass(side_cls, Persistent):
                raise IndexFileError(f"{file}: the {side} index {name!r} cannot be loaded")
            loaded[side] = side_cls.load(path / side)
        try:
            index = build_dataclass(cls, {**config, **loaded})
        except ConfigError as exc:
            raise IndexFileError(f"{file}: invalid hybrid config ({exc})") from None
        ids = [{c.id for c in getattr(index, side).chunks()} for side in _SIDES]
        if ids[0] != ids[1] or meta.get("count") != len(index):
            raise IndexFileError(
                f"{path}: the dense side holds {len(ids[0])} chunks and the sparse side "
                f"{len(ids[1])} (meta.json says {meta.get('count')!r}); they must hold the same "
                "chunks"
            )
        return index


def _rrf(hits: Sequence[Hit], rrf_k: int) -> list[tuple[Chunk, float]]:
    return [(h.chunk, 1.0 / (rrf_k + rank)) for rank, h in enumerate(hits, 1)]


def _minmax(hits: Sequence[Hit], weight: float) -> list[tuple[Chunk, float]]:
    if not hits:
        return []
    scores = np.array([h.score for h in hits], dtype=np.float64)  # (n,)
    lo, hi = scores.min(), scores.max()
    norm = (scores - lo) / (hi - lo) if hi > lo else np.ones_like(scores)
    return [(h.chunk, weight * float(s)) for h, s in zip(hits, norm)]
