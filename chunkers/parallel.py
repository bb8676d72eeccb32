"""Chunking many documents on every core: ``chunk_many``/``iter_chunk_many``, the ``ChunkMany``
mixin that gives a chunker ``chunk_many``, the batching of documents and the worker processes.

It must not change a chunk: the result is exactly ``[chunker.chunk(d) for d in docs]``. It holds
no chunking strategy and no span machinery (``ragkit.chunkers.base``).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Any

from ragkit.errors import ConfigError
from ragkit.types import Chunk, Document

if TYPE_CHECKING:
    from ragkit.chunkers.base import Chunker


class ChunkMany:
    """Mixin giving a chunker ``chunk_many(docs, workers=N)``: see ``chunk_many``."""

    def chunk_many(self, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
        return chunk_many(self, docs, workers=workers)


def chunk_many(chunker: Chunker, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
    """Every document's chunks, one list per document in input order, on ``workers`` processes.

    ``workers=1`` chunks in this process. More workers start that many processes (``spawn``, so
    it works wherever Python runs and never forks a process holding Rust thread pools); each
    builds its own chunker from the chunker's config (``to_config``), not from a pickled object,
    so a chunker whose tokenizer or model is loaded lazily loads it once per worker. Documents go
    out in batches of roughly equal size and the chunks come back as spans rebuilt against the
    parent's documents, so the result is exactly ``[chunker.chunk(d) for d in docs]``: the same
    chunks, ids, offsets and metadata.

    A worker costs its start-up: ~1-2.5 s on a 2-core machine for the imports and the cl100k
    tokenizer's tables, while one process chunks 20 MB in ~2 s (benchmarks/chunk_workers.py: 2
    workers were 0.3-0.5x of 1 on 20 MB). So ``workers`` is an upper bound: a batch holds at
    least ``MIN_BATCH_CHARS`` (25 M chars), and a corpus of one batch (or one document: a
    document is never split) is chunked in this process.
    """
    return list(iter_chunk_many(chunker, docs, workers=workers))


def iter_chunk_many(
    chunker: Chunker, docs: Iterable[Document], *, workers: int = 1
) -> Iterator[list[Chunk]]:
    """``chunk_many`` lazily: each document's chunks as soon as its batch is done, in order."""
    check_workers(workers)
    docs = list(docs)
    batches = _batches(docs, workers)
    if len(batches) <= 1:
        for doc in docs:
            yield chunker.chunk(doc)
        return
    import concurrent.futures
    import multiprocessing

    from ragkit.config import to_config

    try:
        spec = to_config(chunker, "chunker")
    except TypeError:
        raise ConfigError(
            f"workers={workers} needs a chunker that is a config dataclass (a registered "
            f"chunker or a 'module:Class' one); got {type(chunker).__qualname__}; use workers=1",
            path="workers",
        ) from None
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(batches)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(spec,),
    ) as pool:
        for batch, spans in zip(batches, pool.map(_chunk_batch, batches)):
            for doc, rows in zip(batch, spans, strict=True):
                yield [Chunk(doc.id, s, e, doc.text[s:e], i, meta) for s, e, i, meta in rows]


def check_workers(workers: Any, *, path: str = "workers") -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"must be an int >= 1 (processes); got {workers!r}", path=path)


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS tells it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_BATCHES_PER_WORKER = 4  # several batches each, so one long document does not leave a core idle


MIN_BATCH_CHARS = 25_000_000  # from the 20 MB measurement; where 2 workers start to win is unmeasured


_MAX_BATCH_CHARS = 50_000_000


def _batches(docs: list[Document], workers: int) -> list[list[Document]]:
    """Consecutive runs of documents of about equal total length (all in one for one worker)."""
    if workers == 1:
        return [docs]
    total = sum(len(d.text) for d in docs)
    target = min(max(total // (workers * _BATCHES_PER_WORKER), MIN_BATCH_CHARS), _MAX_BATCH_CHARS)
    out: list[list[Document]] = [[]]
    size = 0
    for doc in docs:
        if out[-1] and size + len(doc.text) > target:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += len(doc.text)
    return out


_WORKER_CHUNKER: Any = None


def _start_worker(spec: dict[str, Any]) -> None:
    global _WORKER_CHUNKER
    from ragkit.config import build

    _WORKER_CHUNKER = build("chunker", spec)


def _chunk_batch(batch: list[Document]) -> list[list[tuple[int, int, int, Any]]]:
    """Each document's chunks as ``(start, end, index, metadata)``: the text goes back only once,
    in the parent's copy of the document."""
    out = []
    for doc in batch:
        chunks = _WORKER_CHUNKER.chunk(doc)
        if any(c.doc_id != doc.id for c in chunks):
            raise RuntimeError(f"chunker returned chunks of another document than {doc.id!r}")
        out.append([(c.start, c.end, c.index, c.metadata) for c in chunks])
    return out
