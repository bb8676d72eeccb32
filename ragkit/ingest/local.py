"""The local engine: the ingestion work on this machine, on one process or one per core."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.errors import ConfigError
from ragkit.ingest.work import ChunkEmbed, batch_of, read_shards, rows_of


@dataclass(kw_only=True)
class LocalEngine:
    """Runs ``read_shards`` and ``ChunkEmbed`` on this machine: the reference the Ray engine is
    checked against, and the right choice when one machine keeps up.

    ``workers`` (default: the cores this process may use): with 1, everything runs in this
    process (the model with torch's own threads). With more, and more than one batch of
    documents to do, that many worker processes each build the chunker and embedder once and
    chunk and embed whole batches with **one torch thread each**, chosen over torch's intra-op
    threads by measurement (benchmarks/README.md, "Indexing against the bare encode"): on a
    loaded 2-core machine two threads used 1.7x the CPU of one for the same texts, two processes
    the same CPU. The chunks and ids are those of one worker (same functions on the same
    documents); the vectors those of the same model on one thread.
    """

    workers: int | None = None

    def __post_init__(self) -> None:
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"must be an int >= 1 (processes) or null; got {w!r}",
                              path="workers")

    def run(self, shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any], *,
            progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Result batches (see ``ragkit.ingest.work``) for the plan's ``shards`` rows.
        ``progress(nbytes)``: the input bytes of the batch being worked on that are done so
        far, called within a document too (see ``chunk_and_embed``) when the batch runs in this
        process; on worker processes it moves per batch. The batch's result supersedes it."""
        from ragkit.chunkers.parallel import cpu_count

        workers = self.workers or cpu_count()
        batches = _batches(shards, job)
        if workers == 1:
            worker = ChunkEmbed(job)
            for batch in batches:
                result = worker(batch, progress)
                batch = None  # the documents' texts: not alive while the driver takes the result
                yield result
                result = None
            return
        first = next(batches, None)
        if first is None:
            return
        second = next(batches, None)
        if second is None:  # one batch: no process to start
            yield ChunkEmbed(job)(first, progress)
            return
        yield from _on_processes(workers, job, [first, second], batches)


def _batches(shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> Iterator[dict]:
    """The shards' documents in batches of ``job["batch_size"]``, each shard read when its first
    batch is wanted and each batch's rows dropped from it once taken."""
    size = int(job["batch_size"])
    for shard in shards:
        rows = rows_of(read_shards(batch_of_input([shard]), loader=job["loader"]))
        while rows:
            batch = batch_of(rows[:size])
            del rows[:size]
            yield batch


def _on_processes(workers: int, job: Mapping[str, Any], head: list[dict],
                  rest: Iterator[dict]) -> Iterator[dict]:
    """Each batch's result from a pool of ``workers`` spawned processes, in input order, with at
    most ``2 * workers`` batches in flight (reading stays ahead, memory stays bounded)."""
    import concurrent.futures
    import os
    import multiprocessing
    from collections import deque
    from itertools import chain

    pool = concurrent.futures.ProcessPoolExecutor(
        max_workers=workers, mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker, initargs=(dict(job), os.getpid()))
    try:
        waiting: deque = deque()
        for batch in chain(head, rest):
            waiting.append(pool.submit(_work, batch))
            if len(waiting) >= 2 * workers:
                yield waiting.popleft().result()
        while waiting:
            yield waiting.popleft().result()
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


_WORKER: Any = None


def _start_worker(job: dict[str, Any], parent: int) -> None:
    """One torch (OpenMP) thread per process, unless the user's environment says otherwise."""
    import os

    from ragkit.concurrency import exit_with_parent

    exit_with_parent(parent)
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    global _WORKER
    _WORKER = ChunkEmbed(job)  # the model loads on first use, after the variables are set


def _work(batch: dict[str, list]) -> dict[str, list]:
    return _WORKER(batch)


def batch_of_input(shards: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    from ragkit.ingest.work import SHARD_INPUT

    return {name: [s[name] for s in shards] for name in SHARD_INPUT}
