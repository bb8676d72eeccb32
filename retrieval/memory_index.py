"""An exact in-memory vector index in numpy: brute-force scores, top-k by ``argpartition``.

Saved as a folder of plain files, never a pickle::

    meta.json       format, version, metric, dim, count and the sha256 of the two files below
    vectors.npy     float32 (count, dim), rows aligned with chunks.jsonl
    chunks.jsonl    one chunk per line: doc_id, start, end, text, index, metadata

Thread safety: many readers and one writer at a time, through the readers-writer lock of
``ragkit.concurrency`` around every public method (see there for why a lock and not
copy-on-write); ``replace`` swaps a document's chunks in one write.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragkit.concurrency import Guarded, reads, writes
from ragkit.errors import ConfigError
from ragkit.retrieval.base import filter_rows

# IndexFileError and the checks stay importable from here (callers and tests use them)
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_aligned,
    check_chunks,
    check_count_dim,
    check_k,
    check_save_target,
    check_vecs,
    write_chunks_jsonl,
    normalise,
    query_rows,
    read_chunks,
    read_meta,
    saving,
    sha256_file,
    write_meta,
)
from ragkit.types import Chunk, Hit

FORMAT = "ragkit.memory_index"
VERSION = 1
METRICS = ("cosine", "ip")
_FILES = ("vectors.npy", "chunks.jsonl")


@dataclass(kw_only=True)
class MemoryIndex(Guarded):
    """Exact nearest-neighbour search over chunk vectors held in memory.

    ``metric="cosine"`` L2-normalises stored and query vectors (zero vectors score 0);
    ``metric="ip"`` uses the raw inner product. Scores are higher-is-better, ties go to the
    earlier-added chunk. Adding a chunk whose id is already present replaces its vector in place.
    """

    metric: Literal["cosine", "ip"] = "cosine"

    def __post_init__(self) -> None:
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}", path="metric"
            )
        # Contents are not config: plain attributes, outside the dataclass fields and equality.
        self._vecs = np.zeros((0, 0), dtype=np.float32)  # (capacity, d); rows [:len] in use
        self._chunks: list[Chunk] = []  # aligned with the rows of _vecs
        self._row: dict[str, int] = {}  # chunk id -> row
        self.info: dict[str, Any] = {}  # what the index was built with (set by the pipeline)
        self._docs: dict[str, str | None] = {}  # doc id -> its doc_hash metadata

    # -- contents ------------------------------------------------------------------------------

    @reads
    def __len__(self) -> int:
        return len(self._chunks)

    @property
    def dim(self) -> int | None:
        """The vector dimension, or ``None`` while the index is empty."""
        return self._vecs.shape[1] if self._chunks else None

    @reads
    def chunks(self) -> Iterator[Chunk]:
        """The stored chunks in insertion order (a replaced chunk keeps its place)."""
        return iter(list(self._chunks))

    @property
    def vectors(self) -> np.ndarray:
        """The stored vectors, float32 ``(len, dim)`` aligned with ``chunks()`` (read-only view)."""
        view = self._vecs[: len(self._chunks)]
        view.flags.writeable = False
        return view

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None:
        """Store ``chunks`` with their vectors ``vecs`` (``(len(chunks), dim)``)."""
        chunks = check_chunks(chunks)
        vecs = check_aligned(chunks, vecs, self.dim)
        if not chunks:
            return
        if self.metric == "cosine":
            vecs = normalise(vecs)
        n = len(self._chunks)
        if n == 0 and self._vecs.shape[1] != vecs.shape[1]:
            self._vecs = np.zeros((0, vecs.shape[1]), dtype=np.float32)
        rows = np.empty(len(chunks), dtype=np.intp)  # target row of each input
        for i, chunk in enumerate(chunks):
            row = self._row.get(chunk.id)
            if row is None:
                row = self._row[chunk.id] = len(self._chunks)
                self._chunks.append(chunk)
            else:
                self._chunks[row] = chunk
            self._docs[chunk.doc_id] = chunk.metadata.get("doc_hash")
            rows[i] = row
        self._reserve(len(self._chunks))
        # A repeated id within one call: numpy keeps the last assignment to a row, like the dict.
        _, last = np.unique(rows[::-1], return_index=True)
        keep = len(rows) - 1 - last
        self._vecs[rows[keep]] = vecs[keep]

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """The stored chunks of one document, in document order."""
        return sorted((c for c in self._chunks if c.doc_id == doc_id), key=lambda c: (c.start, c.end))

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        """The ``doc_hash`` metadata stored with the document's chunks, if it is indexed."""
        return self._docs.get(doc_id)

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of the given documents; returns how many chunks were removed."""
        if isinstance(doc_ids, str):
            raise TypeError("delete takes a sequence of document ids, not a single str")
        gone = set(doc_ids)
        keep = [i for i, c in enumerate(self._chunks) if c.doc_id not in gone]
        removed = len(self._chunks) - len(keep)
        if removed:
            self._vecs = self._vecs[keep]  # fancy indexing copies: (len - removed, d)
            self._chunks = [self._chunks[i] for i in keep]
            self._row = {c.id: i for i, c in enumerate(self._chunks)}
            for doc_id in gone:
                self._docs.pop(doc_id, None)
        return removed

    # -- search --------------------------------------------------------------------------------

    @reads
    def search(self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None,
               queries: Sequence[str] | None = None) -> list[list[Hit]]:
        """The ``k`` best hits for each query row of ``(m, d)`` (or a single ``(d,)``) vectors.

        ``filter`` keeps chunks whose ``metadata[key] == value`` for every item (``"doc_id"``
        matches ``chunk.doc_id``; a list or tuple value means any of its values). ``queries``
        is unused: dense search needs only the vectors.
        """
        k = check_k(k)
        q = query_rows(query_vecs)
        q = self._check_vecs(q, what="query vectors")
        if not self._chunks or k == 0:
            return [[] for _ in range(q.shape[0])]
        if self.metric == "cosine":
            q = normalise(q)
        rows = filter_rows(self._chunks, filter)  # (r,) candidate rows, ascending
        if rows is None:
            scores = q @ self._vecs[: len(self._chunks)].T  # (m, n)
        else:
            scores = q @ self._vecs[rows].T  # (m, r)
        return [self._top_k(s, k, rows) for s in scores]

    def _top_k(self, scores: np.ndarray, k: int, rows: np.ndarray | None) -> list[Hit]:
        n = scores.shape[0]
        if k < n:
            # argpartition finds the k-th best score in O(n); among scores tied with it the
            # earliest rows win, so the result equals a stable full sort of -scores.
            kth = scores[np.argpartition(-scores, k - 1)[k - 1]]
            above = np.flatnonzero(scores > kth)
            tied = np.flatnonzero(scores == kth)[: k - len(above)]
            top = np.concatenate((above, tied))
        else:
            top = np.arange(n)
        top = top[np.lexsort((top, -scores[top]))]  # by score descending, then row ascending
        ids = top if rows is None else rows[top]
        return [
            Hit(chunk=self._chunks[row], score=float(scores[i]), rank=rank)
            for rank, (i, row) in enumerate(zip(top.tolist(), ids.tolist()))
        ]

    # -- save / load ---------------------------------------------------------------------------

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to folder ``path`` (replacing an index saved there before)."""
        path = Path(path)
        check_save_target(path)
        if self._chunks:
            vecs = np.ascontiguousarray(self._vecs[: len(self._chunks)])  # (count, dim)
        else:
            vecs = np.zeros((0, 0), dtype=np.float32)  # dim is None: meta.json says null

        with saving(path) as tmp:
            np.save(tmp / "vectors.npy", vecs, allow_pickle=False)
            write_chunks_jsonl(self._chunks, tmp / "chunks.jsonl", path)  # streamed
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "metric": self.metric,
                "dim": self.dim,
                "count": len(self._chunks),
                "info": self.info,
                "sha256": {name: sha256_file(tmp / name) for name in _FILES},
            }
            write_meta(tmp, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> MemoryIndex:
        """Read an index saved by ``save``; raises ``IndexFileError`` naming ``path`` if it is
        missing, corrupted or inconsistent."""
        path = Path(path)
        meta = _read_meta(path)
        for name in _FILES:
            if sha256_file(path / name) != meta["sha256"][name]:
                raise IndexFileError(
                    f"{path / name}: checksum does not match meta.json; the file is corrupted or "
                    "was changed after saving"
                )
        count, dim = meta["count"], meta["dim"]
        try:
            vecs = np.load(path / "vectors.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexFileError(
                f"{path / 'vectors.npy'}: not a readable .npy array ({exc})"
            ) from None
        want = (count, dim if dim is not None else 0)
        if vecs.dtype != np.float32 or vecs.shape != want:
            raise IndexFileError(
                f"{path / 'vectors.npy'}: expected float32 {want}, as meta.json says; "
                f"got {vecs.dtype} {vecs.shape}"
            )
        chunks = read_chunks(path / "chunks.jsonl")
        if len(chunks) != count:
            raise IndexFileError(
                f"{path / 'chunks.jsonl'}: meta.json says {count} chunks; "
                f"the file has {len(chunks)}"
            )
        index = cls(metric=meta["metric"])
        index.info = dict(meta.get("info") or {})
        index._vecs = vecs
        index._chunks = chunks
        index._row = {c.id: i for i, c in enumerate(chunks)}
        index._docs = {c.doc_id: c.metadata.get("doc_hash") for c in chunks}
        if len(index._row) != count:
            raise IndexFileError(f"{path / 'chunks.jsonl'}: the same chunk id appears twice")
        return index

    # -- helpers -------------------------------------------------------------------------------

    def _check_vecs(self, vecs: Any, *, what: str) -> np.ndarray:
        return check_vecs(vecs, self.dim, what=what)

    def _reserve(self, n: int) -> None:
        if n > self._vecs.shape[0]:
            grown = np.zeros((max(n, 2 * self._vecs.shape[0], 64), self._vecs.shape[1]), np.float32)
            grown[: self._vecs.shape[0]] = self._vecs
            self._vecs = grown


def _read_meta(path: Path) -> dict[str, Any]:
    file = path / "meta.json"
    meta = read_meta(path, FORMAT, VERSION)
    if meta.get("metric") not in METRICS:
        raise IndexFileError(f"{file}: unknown metric {meta.get('metric')!r}")
    check_count_dim(meta, file)
    sums = meta.get("sha256")
    if not isinstance(sums, dict) or not all(isinstance(sums.get(n), str) for n in _FILES):
        raise IndexFileError(f"{file}: missing sha256 checksums of {', '.join(_FILES)}")
    return meta




