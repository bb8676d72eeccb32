"""Every document operation of the server goes through this module: the seam to the pipeline.

The server never touches the index directly. It calls:

- ``add(pipe, folder, docs) -> AddReport``: chunk, embed and index ``docs`` through
  ``pipe.add`` (the pipeline's one add path: an unchanged text is a no-op, a changed one replaces
  the document's chunks), then make the index durable in ``folder`` before returning;
- ``delete(pipe, folder, doc_ids) -> int``: remove the documents' chunks, durably; the number of
  chunks removed;
- ``listing(pipe, offset, limit) -> list[dict]``: ``{"id", "source", "content_hash", "chunks"}``
  per document, in index order;
- ``chunks_of(pipe, doc_id) -> list[Chunk]``: one document's chunks in document order;
- ``retrieve(pipe, query, k, filters) -> list[Hit]``: ``pipe.retrieve`` as a reader.

What it uses of the pipeline today (all of it exists on ``main``): ``pipe.add(docs)``,
``pipe.retrieve(query, k, filter)``, ``pipe.index.delete(doc_ids)``, ``pipe.index.chunks()``,
``pipe.index.save(folder / "index")`` and ``len(pipe.index)``.

Concurrency, for now: the indexes are not safe for a reader during a write (``MemoryIndex.delete``
swaps its arrays and lists one after the other), so readers (``retrieve``, ``listing``,
``chunks_of``) share a readers-writer lock that writers (``add``, ``delete``) hold alone; writers
also run one at a time. Durability, for now: after each write the whole index is saved to
``folder/index`` (the memory index writes a temporary folder and swaps it in), so a 200 means the
documents are on disk. Only the index is written: ``pipeline.yaml`` keeps what was built (a
``pipe.save`` would also write the server's query-time overrides and generator into it).

This is the place to swap at merge time: once ``RAGPipeline.add`` is atomic and durable per
document on a pipeline loaded from a folder, the indexes are safe for many readers and one
writer, and ``RAGPipeline.delete``/``documents`` exist, the bodies below become one-line calls
and the lock keeps only the one-writer rule (or goes).
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ragkit.pipeline import INDEX_DIR, AddReport, RAGPipeline
from ragkit.types import Chunk, Document, Hit


class ReadWriteLock:
    """Many readers or one writer; a waiting writer blocks new readers (no writer starvation)."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._readers = 0
        self._writer = False
        self._writers_waiting = 0

    @contextmanager
    def reading(self) -> Iterator[None]:
        with self._cond:
            while self._writer or self._writers_waiting:
                self._cond.wait()
            self._readers += 1
        try:
            yield
        finally:
            with self._cond:
                self._readers -= 1
                if not self._readers:
                    self._cond.notify_all()

    @contextmanager
    def writing(self) -> Iterator[None]:
        with self._cond:
            self._writers_waiting += 1
            while self._writer or self._readers:
                self._cond.wait()
            self._writers_waiting -= 1
            self._writer = True
        try:
            yield
        finally:
            with self._cond:
                self._writer = False
                self._cond.notify_all()


LOCK = ReadWriteLock()  # one per process: one pipeline is served per process


def add(pipe: RAGPipeline, folder: str | Path | None, docs: Sequence[Document]) -> AddReport:
    """Index ``docs``; durable in ``folder`` (if given) when this returns."""
    with LOCK.writing():
        report = pipe.add(docs)
        if report.documents and folder is not None:
            _persist(pipe, folder)
    return report


def delete(pipe: RAGPipeline, folder: str | Path | None, doc_ids: Sequence[str]) -> int:
    """Remove every chunk of ``doc_ids``; durable in ``folder`` (if given) when this returns."""
    with LOCK.writing():
        removed = pipe.index.delete(list(doc_ids))
        if removed and folder is not None:
            _persist(pipe, folder)
    return removed


def listing(pipe: RAGPipeline, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Documents ``[offset, offset + limit)`` in index order."""
    with LOCK.reading():
        docs: dict[str, dict[str, Any]] = {}
        for c in pipe.index.chunks():
            entry = docs.get(c.doc_id)
            if entry is None:
                entry = docs[c.doc_id] = {
                    "id": c.doc_id, "source": c.metadata.get("source", c.doc_id),
                    "content_hash": c.metadata.get("doc_hash"), "chunks": 0,
                }
            entry["chunks"] += 1
    return list(docs.values())[offset: offset + limit]


def counts(pipe: RAGPipeline) -> tuple[int, int]:
    """``(documents, chunks)`` in the index."""
    with LOCK.reading():
        return len({c.doc_id for c in pipe.index.chunks()}), len(pipe.index)


def chunks_of(pipe: RAGPipeline, doc_id: str) -> list[Chunk]:
    """The chunks of one document, in document order (``[]`` if it is not indexed)."""
    with LOCK.reading():
        found = [c for c in pipe.index.chunks() if c.doc_id == doc_id]
    return sorted(found, key=lambda c: (c.start, c.end))


def retrieve(
    pipe: RAGPipeline, query: str, k: int | None, filters: Mapping[str, Any] | None
) -> list[Hit]:
    with LOCK.reading():
        return pipe.retrieve(query, k, filter=filters)


def _persist(pipe: RAGPipeline, folder: str | Path) -> None:
    pipe.index.save(Path(folder) / INDEX_DIR)
