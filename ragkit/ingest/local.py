"""The local engine: the ingestion work in this process, one shard at a time, on every core."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.errors import ConfigError
from ragkit.ingest.work import ChunkEmbed, batch_of, read_shards, rows_of


@dataclass(kw_only=True)
class LocalEngine:
    """Runs ``read_shards`` and ``ChunkEmbed`` in-process: the reference the Ray engine is
    checked against, and the right choice when one machine keeps up.

    ``workers`` (default: the cores this process may use): chunking runs on that many processes
    (``chunk_many``'s pool, kept for the run; a batch of documents under 1 M chars stays in this
    process) and the model embeds with that many torch intra-op threads, chosen over one process
    per core by measurement (benchmarks/README.md, "Indexing against the bare encode"). The
    chunks, ids and vectors are those of one worker: chunks come back as spans rebuilt against
    this process's documents, and every vector is computed here.
    """

    workers: int | None = None

    def __post_init__(self) -> None:
        w = self.workers
        if w is not None and (isinstance(w, bool) or not isinstance(w, int) or w < 1):
            raise ConfigError(f"must be an int >= 1 (processes) or null; got {w!r}",
                              path="workers")

    def run(self, shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> Iterator[dict]:
        """Result batches (see ``ragkit.ingest.work``) for the plan's ``shards`` rows."""
        from ragkit.chunkers.pool import cpu_count

        workers = self.workers or cpu_count()
        worker = ChunkEmbed(dict(job, workers=workers))
        size = int(job["batch_size"])
        with torch_threads(workers) as threads:
            for shard in shards:
                rows = rows_of(read_shards(batch_of_input([shard]), loader=job["loader"]))
                for start in range(0, len(rows), size):
                    result = worker(batch_of(rows[start : start + size]))
                    threads.apply()
                    yield result


class torch_threads:
    """Torch's intra-op threads set to ``n`` while the run lasts, restored after. Torch is not
    imported for it (the chunking workers fork only from a process without torch): ``apply`` sets
    them once the model has loaded torch, so the first batch embeds with torch's own default (the
    physical cores), which differs only when ``workers`` does."""

    def __init__(self, n: int) -> None:
        self.n, self.before = n, None

    def apply(self) -> None:
        import sys

        torch = sys.modules.get("torch")
        if torch is not None and self.before is None:
            self.before = torch.get_num_threads()
            torch.set_num_threads(self.n)

    def __enter__(self) -> torch_threads:
        self.apply()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.before is not None:
            import torch

            torch.set_num_threads(self.before)


def batch_of_input(shards: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    from ragkit.ingest.work import SHARD_INPUT

    return {name: [s[name] for s in shards] for name in SHARD_INPUT}
