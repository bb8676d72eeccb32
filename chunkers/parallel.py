"""Chunking many documents on every core: ``chunk_many``/``iter_chunk_many``, the ``ChunkMany``
mixin that gives a chunker ``chunk_many``, the batching of documents and the worker processes.

It must not change a chunk: the result is exactly ``[chunker.chunk(d) for d in docs]``. It holds
no chunking strategy and no span machinery (``ragkit.chunkers.base``).

One pool per process, kept between calls, so its start-up is paid once. Where it is safe, on
Linux with no other thread in this process and torch not imported, the workers are **forked**
from this process after the chunker has chunked a tiny document here: they start with its
tokenizer and tables already loaded (copy-on-write), in milliseconds instead of the ~1-3 s a
spawned worker spends importing ragkit and loading cl100k. Otherwise (another OS, threads, torch:
forking a process whose OpenMP or Rust thread pools have run can deadlock the child) they are
**spawned** and build their chunker from its config.
"""

from __future__ import annotations

import collections
import itertools
import json
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from ragkit.errors import ConfigError, RagkitError
from ragkit.types import Chunk, Document


class ChunkMany:
    """Mixin giving a chunker ``chunk_many(docs, workers=N)``: see ``chunk_many``."""

    def chunk_many(self, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
        return chunk_many(self, docs, workers=workers)


def chunk_many(chunker: Any, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
    """Every document's chunks, one list per document in input order, on ``workers`` processes.

    ``workers=1`` chunks in this process. More workers use this process's pool (see the module
    docstring). Documents go out in batches of roughly equal size and the chunks come back as
    spans rebuilt against the parent's documents, so the result is exactly
    ``[chunker.chunk(d) for d in docs]``: the same chunks, ids, offsets and metadata; a
    ``RagkitError`` a document raises is raised here, after the documents before it.

    ``workers`` is an upper bound: a batch holds at least ``MIN_BATCH_CHARS`` (1 M chars) when the
    workers fork or the pool is already running, ``MIN_SPAWN_BATCH_CHARS`` (25 M) when spawned
    workers would have to start first (each costs ~1-3 s, while one process chunks 20 MB in ~2
    s), and a corpus of one batch (or one document: a document is never split) is chunked in
    this process.
    """
    return list(iter_chunk_many(chunker, docs, workers=workers))


def iter_chunk_many(chunker: Any, docs: Iterable[Document], *, workers: int = 1,
                    lazy: bool = False) -> Iterator[list[Chunk]]:
    """``chunk_many`` lazily: each document's chunks as soon as its batch is done, in order.

    ``lazy=True`` gives each document's chunks as an iterable that makes them as they are taken
    where the chunker gives spans (``ragkit.chunkers.base.iter_chunks``): a caller that writes
    them out one at a time never holds a huge document's chunks all at once."""
    for result in iter_chunk_results(chunker, docs, workers=workers, lazy=lazy):
        if isinstance(result, RagkitError):
            raise result
        yield result


def iter_chunk_results(chunker: Any, docs: Iterable[Document], *, workers: int = 1,
                       lazy: bool = False) -> Iterator[list[Chunk] | RagkitError]:
    """Each document's chunks, or the ``RagkitError`` its chunking raised (the other documents
    go on), in input order; other errors propagate.

    A list (any ``Sequence``) of documents is cut into batches sized from its total length. Any
    other iterable is streamed: documents are taken as they are needed, in batches of the least
    batch size (see ``chunk_many``), with at most ``workers + 1`` batches in flight, so a folder
    of any size holds a bounded part of itself in memory; a stream that ends within its first
    batch is chunked in this process. Either way the chunks are the same."""
    check_workers(workers)
    if workers == 1:
        for doc in docs:
            yield _chunk_one(chunker, doc, lazy)
        return
    spec = _spec(chunker, workers)
    warm = _running(spec, workers) is not None or (
        _POOL["pool"] is None and _start_method() == "fork")
    least = MIN_BATCH_CHARS if warm else MIN_SPAWN_BATCH_CHARS
    if isinstance(docs, Sequence):
        batches: Iterator[list[Document]] = iter(_batches(list(docs), workers, least))
    else:
        batches = _stream_batches(iter(docs), least)
    first = next(batches, None)
    second = next(batches, None) if first is not None else None
    if second is None:  # one batch: no pool
        for doc in first or ():
            yield _chunk_one(chunker, doc, lazy)
        return
    pool = _pool(chunker, spec, workers)
    pending: collections.deque = collections.deque()
    try:
        for batch in itertools.chain((first, second), batches):
            pending.append((batch, pool.submit(_chunk_batch, batch)))
            while len(pending) > workers:
                yield from _rebuilt(*pending.popleft(), lazy)
        while pending:
            yield from _rebuilt(*pending.popleft(), lazy)
    finally:
        for _, future in pending:  # the caller stopped early: drop what was not started
            future.cancel()


def _chunk_one(chunker: Any, doc: Document, lazy: bool = False) -> Any:
    from ragkit.chunkers.base import iter_chunks

    try:
        return iter_chunks(chunker, doc) if lazy else chunker.chunk(doc)
    except RagkitError as exc:
        return exc


def _rebuilt(batch: list[Document], future: Any, lazy: bool = False) -> Iterator[Any]:
    """The chunks of ``batch`` from a worker's spans, rebuilt against the parent's documents
    (as they are taken, with ``lazy``)."""
    for doc, rows in zip(batch, future.result(), strict=True):
        if isinstance(rows, RagkitError):
            yield rows
        else:
            chunks = _from_rows(doc, rows)
            yield chunks if lazy else list(chunks)


def _from_rows(doc: Document, rows: list[tuple[int, int, int, Any]]) -> Iterator[Chunk]:
    for s, e, i, meta in rows:
        yield Chunk(doc.id, s, e, doc.text[s:e], i, meta)


def _stream_batches(docs: Iterator[Document], least: int) -> Iterator[list[Document]]:
    """Consecutive runs of ``docs`` of about ``least`` chars each (a document is never split)."""
    batch: list[Document] = []
    size = 0
    for doc in docs:
        if batch and size + len(doc.text) > least:
            yield batch
            batch, size = [], 0
        batch.append(doc)
        size += len(doc.text)
    if batch:
        yield batch


def check_workers(workers: Any, *, path: str = "workers") -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"must be an int >= 1 (processes); got {workers!r}", path=path)


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS tells it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


def shutdown_pool() -> None:
    """Stop this process's chunking workers (the next ``chunk_many`` starts new ones)."""
    pool, _POOL["pool"], _POOL["key"] = _POOL["pool"], None, None
    if pool is not None:
        pool.shutdown(wait=True, cancel_futures=True)


_BATCHES_PER_WORKER = 4  # several batches each, so one long document does not leave a core idle
MIN_BATCH_CHARS = 1_000_000  # forked or running workers: ~0.05-0.2 s of chunking per batch
MIN_SPAWN_BATCH_CHARS = 25_000_000  # from the 20 MB measurement with spawned workers
_MAX_BATCH_CHARS = 50_000_000
_POOL: dict[str, Any] = {"key": None, "pool": None, "method": None}


def _spec(chunker: Any, workers: int) -> dict[str, Any]:
    from ragkit.config import to_config

    try:
        return to_config(chunker, "chunker")
    except TypeError:
        raise ConfigError(
            f"workers={workers} needs a chunker that is a config dataclass (a registered "
            f"chunker or a 'module:Class' one); got {type(chunker).__qualname__}; use workers=1",
            path="workers",
        ) from None


def _start_method() -> str:
    """``fork`` where a forked child is safe (see the module docstring), else ``spawn``."""
    if (sys.platform.startswith("linux") and threading.active_count() == 1
            and "torch" not in sys.modules):
        return "fork"
    return "spawn"


def _running(spec: Any, workers: int) -> Any:
    """The running pool if it was started for ``spec`` on ``workers`` processes, else None."""
    pool = _POOL["pool"]
    if pool is None or getattr(pool, "_broken", False):
        return None
    return pool if _POOL["key"] == (json.dumps(spec, sort_keys=True, default=str), workers) \
        else None


def _pool(chunker: Any, spec: dict[str, Any], workers: int) -> Any:
    """This process's pool for ``spec`` on ``workers`` processes, started if need be."""
    import concurrent.futures
    import multiprocessing

    pool = _running(spec, workers)
    if pool is not None:
        return pool
    shutdown_pool()  # another chunker's: its threads end before the fork check
    method = _start_method()
    if method == "fork":
        chunker.chunk(Document("warm-up", "Warm up: load the tokenizer before forking."))
        method = _start_method()  # spawn if the warm-up imported torch or started a thread
    init = (chunker if method == "fork" else spec, os.getpid())  # forked children inherit the object
    quiet = method == "fork" and "TOKENIZERS_PARALLELISM" not in os.environ
    if quiet:  # a forked HF tokenizer turns its parallelism off; this only silences its warning
        os.environ["TOKENIZERS_PARALLELISM"] = "false"
    try:
        pool = concurrent.futures.ProcessPoolExecutor(
            max_workers=workers, mp_context=multiprocessing.get_context(method),
            initializer=_start_worker, initargs=init)
    finally:
        if quiet:
            del os.environ["TOKENIZERS_PARALLELISM"]
    if _POOL["method"] is None:  # first pool of this process: stop it before interpreter exit
        import atexit

        atexit.register(shutdown_pool)
    _POOL["pool"] = pool
    _POOL["key"] = (json.dumps(spec, sort_keys=True, default=str), workers)
    _POOL["method"] = method
    return pool


def _batches(docs: list[Document], workers: int, least: int) -> list[list[Document]]:
    """Consecutive runs of documents of about equal total length (all in one for one worker)."""
    if workers == 1:
        return [docs]
    total = sum(len(d.text) for d in docs)
    target = min(max(total // (workers * _BATCHES_PER_WORKER), least), _MAX_BATCH_CHARS)
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


def _start_worker(chunker_or_spec: Any, parent: int) -> None:
    from ragkit.concurrency import exit_with_parent

    exit_with_parent(parent)
    global _WORKER_CHUNKER
    if isinstance(chunker_or_spec, dict):
        from ragkit.config import build

        _WORKER_CHUNKER = build("chunker", chunker_or_spec)
    else:
        _WORKER_CHUNKER = chunker_or_spec


def _chunk_batch(batch: list[Document]) -> list[list[tuple[int, int, int, Any]] | RagkitError]:
    """Each document's chunks as ``(start, end, index, metadata)`` (the text goes back only once,
    in the parent's copy of the document), or the ``RagkitError`` it raised."""
    from ragkit.chunkers.base import span_rows
    from ragkit.protocols import ChunksBySpans, provides

    spans = provides(_WORKER_CHUNKER, ChunksBySpans)  # then no chunk text is made here
    out: list[Any] = []
    for doc in batch:
        try:
            if spans:
                out.append(list(span_rows(doc, _WORKER_CHUNKER.chunk_spans(doc))))
                continue
            chunks = _WORKER_CHUNKER.chunk(doc)
        except RagkitError as exc:
            out.append(_portable(exc))
            continue
        if any(c.doc_id != doc.id for c in chunks):
            raise RuntimeError(f"chunker returned chunks of another document than {doc.id!r}")
        out.append([(c.start, c.end, c.index, c.metadata) for c in chunks])
    return out


def _portable(exc: RagkitError) -> RagkitError:
    """``exc`` if it survives pickling, else a ``RagkitError`` with its message."""
    import pickle

    try:
        pickle.loads(pickle.dumps(exc))
        return exc
    except Exception:
        return RagkitError(str(exc))
