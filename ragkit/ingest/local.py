"""The local engine: the ingestion work in this process, one shard at a time."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.ingest.work import ChunkEmbed, batch_of, read_shards, rows_of


@dataclass(kw_only=True)
class LocalEngine:
    """Runs ``read_shards`` and ``ChunkEmbed`` in-process: the reference the Ray engine is
    checked against, and the right choice when one process keeps up."""

    def run(self, shards: Sequence[Mapping[str, Any]], job: Mapping[str, Any]) -> Iterator[dict]:
        """Result batches (see ``ragkit.ingest.work``) for the plan's ``shards`` rows."""
        worker = ChunkEmbed(job)
        size = int(job["batch_size"])
        for shard in shards:
            rows = rows_of(read_shards(batch_of_input([shard]), loader=job["loader"]))
            for start in range(0, len(rows), size):
                yield worker(batch_of(rows[start : start + size]))


def batch_of_input(shards: Sequence[Mapping[str, Any]]) -> dict[str, list]:
    from ragkit.ingest.work import SHARD_INPUT

    return {name: [s[name] for s in shards] for name in SHARD_INPUT}
