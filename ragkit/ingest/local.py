"""The local engine: the ingestion work in this process, one shard at a time."""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.ingest.work import ChunkEmbed, batch_of, read_shards, rows_of


@dataclass(kw_only=True)
class LocalEngine:
    """Runs ``read_shards`` and ``ChunkEmbed`` in-process: the reference the Ray engine is
    checked against, and the right choice when one process keeps up."""

    def run(self, shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any], *,
            progress: Callable[[int], None] | None = None) -> Iterator[dict]:
        """Result batches (see ``ragkit.ingest.work``) for the plan's ``shards`` rows.
        ``progress(nbytes)``: the input bytes of the batch being worked on that are done so
        far, called within a document too (see ``chunk_and_embed``); the batch's result
        supersedes them."""
        worker = ChunkEmbed(job)
        size = int(job["batch_size"])
        for shard in shards:
            rows = rows_of(read_shards(batch_of_input([shard]), loader=job["loader"]))
            while rows:  # each batch's documents are dropped here once it is taken
                batch = batch_of(rows[:size])
                del rows[:size]
                result = worker(batch, progress)
                batch = None  # the documents' texts: not alive while the driver takes the result
                yield result
                result = None


def batch_of_input(shards: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    from ragkit.ingest.work import SHARD_INPUT

    return {name: [s[name] for s in shards] for name in SHARD_INPUT}
