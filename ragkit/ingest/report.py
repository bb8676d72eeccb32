"""What an ingest run tells its caller: ``Failure`` (an input not indexed, and why),
``IngestProgress`` (passed to ``progress`` as the run goes) and ``IngestReport`` (the result).

Plain data only: nothing here reads files, runs an engine or touches an index.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Failure:
    """An input that was not indexed, and why."""

    path: str  # the file
    reason: str
    line: int | None = None  # JSONL line
    doc_id: str | None = None  # a document the chunker or embedder refused
    earlier: bool = False  # recorded by an earlier run of a shard this run skipped

    def __str__(self) -> str:
        where = self.path + (f" line {self.line}" if self.line is not None else "")
        where += f" (document {self.doc_id!r})" if self.doc_id is not None else ""
        return f"{where}: {self.reason}" + (" [recorded by an earlier run]" if self.earlier else "")


@dataclass
class IngestProgress:
    """Where a run is, passed to ``progress`` after every result batch."""

    bytes_done: int = 0  # input bytes of documents done, and of whole finished shards
    bytes_total: int = 0
    shards_done: int = 0  # finished by this run, by an earlier one, or failed
    shards_total: int = 0
    documents: int = 0
    chunks: int = 0
    failures: int = 0


@dataclass
class IngestReport:
    """What ``ingest`` did. ``documents``/``chunks``/``tokens`` count this run's work; the
    ``resumed_*`` counts are shards an earlier run finished, which this one kept."""

    engine: str
    workers: int | None = None
    out: str = ""
    shards: int = 0
    shards_processed: int = 0
    shards_resumed: int = 0
    shards_failed: int = 0
    documents: int = 0
    chunks: int = 0
    tokens: int = 0
    resumed_documents: int = 0
    resumed_chunks: int = 0
    index_chunks: int = 0  # chunks in the saved index
    deleted: int = 0  # documents removed because their files are gone (mode "sync")
    workers_seen: int = 0  # distinct processes that chunked and embedded documents
    worker_cpu_s: float = 0.0  # CPU seconds they spent on it (all threads; the work that scales)
    failures: list[Failure] = field(default_factory=list)
    seconds: float = 0.0
    # where the time went: "plan" (listing inputs, ledger), "process" (reading, chunking and
    # embedding on the engine, with the driver writing parts), "index" (building the index from
    # the parts and saving it; for a Chroma server, only saving its pointer), and "driver" (the
    # part of "process" the driver spent taking results: decoding, parts, ledger; serial)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: documents, chunks, tokens, throughput, failures, where it was saved."""
        n = self.workers or self.workers_seen
        workers = f", {n} workers" if self.engine != "local" and n else ""
        line = (f"indexed {self.documents} documents -> {self.chunks} chunks ({self.tokens} "
                f"tokens) in {self.seconds:.1f} s ({self.docs_per_s:.1f} docs/s, engine "
                f"{self.engine}{workers}); {len(self.failures)} failures")
        if self.shards_resumed:
            line += (f"; kept {self.shards_resumed} shards ({self.resumed_documents} documents, "
                     f"{self.resumed_chunks} chunks) finished by an earlier run")
        return line + f"; index holds {self.index_chunks} chunks; saved to {self.out}"
