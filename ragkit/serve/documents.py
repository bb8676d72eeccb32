"""Every document operation of the server goes through this module: its seam to the pipeline.

The server never touches the index directly. It calls:

- ``add(pipe, docs) -> AddReport``: chunk, embed and index ``docs`` through ``pipe.add``, the
  pipeline's one write step (an unchanged text is a no-op; a changed one replaces the document's
  chunks). The server's pipeline is opened from its folder (``RAGPipeline.load``), so each
  document is in the folder's log, whole, before ``add`` returns: a 200 is durable;
- ``delete(pipe, doc_ids) -> int``: remove the documents' chunks, durably; chunks removed;
- ``listing(pipe, offset, limit) -> list[dict]``: ``{"id", "source", "content_hash", "chunks"}``
  per document, ordered by id;
- ``counts(pipe) -> (documents, chunks)``;
- ``chunks_of(pipe, doc_id) -> list[Chunk]``: one document's chunks in document order;
- ``retrieve(pipe, query, k, filters) -> list[Hit]``.

No lock of its own: every index takes many readers and one writer (``ragkit.concurrency``) and
shows each document whole, and the pipeline orders its writers; one process writes to a folder
(the log's file lock), so a second server or ``ragkit index`` on the same folder is refused.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ragkit.pipeline import AddReport, RAGPipeline
from ragkit.types import Chunk, Document, Hit


def add(pipe: RAGPipeline, docs: Sequence[Document]) -> AddReport:
    """Index ``docs``; durable when this returns (the pipeline has a folder)."""
    return pipe.add(docs)


def delete(pipe: RAGPipeline, doc_ids: Sequence[str]) -> int:
    """Remove every chunk of ``doc_ids``; durable when this returns."""
    return pipe.delete(list(doc_ids))


def listing(pipe: RAGPipeline, offset: int = 0, limit: int = 100) -> list[dict[str, Any]]:
    """Documents ``[offset, offset + limit)`` ordered by id."""
    return [{**d.to_dict(), "source": d.source or d.id} for d in pipe.documents(offset, limit)]


def counts(pipe: RAGPipeline) -> tuple[int, int]:
    """``(documents, chunks)`` in the index."""
    return len(pipe.documents()), len(pipe.index)


def chunks_of(pipe: RAGPipeline, doc_id: str) -> list[Chunk]:
    """The chunks of one document, in document order (``[]`` if it is not indexed)."""
    return pipe.index.doc_chunks(doc_id)


def retrieve(
    pipe: RAGPipeline, query: str, k: int | None, filters: Mapping[str, Any] | None
) -> list[Hit]:
    return pipe.retrieve(query, k, filter=filters)
