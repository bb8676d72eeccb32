"""The driver's side of an ingest run: listing the input files, taking the engine's result
batches in any order, writing each finished shard's parts and ledger line, and committing the
parts to the pipeline in input order (``Run``, ``merge_parts``).

It must not read or chunk documents itself (the engines do, through ``ragkit.ingest.work``) nor
decide what a run does with an existing folder (``ragkit.ingest.ingest``).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit.errors import (
    DocumentError,
    RagkitError,
)
from ragkit.ingest.ledger import Ledger
from ragkit.ingest.report import Failure, IngestProgress, IngestReport

log = logging.getLogger("ragkit.ingest")


def plan_files(loader: Any, targets: list[Path]) -> tuple[list[Any], list[Any]]:
    """The input files in load order (the loader's walk), and the problems found listing them."""
    from ragkit.loaders import LoadProblem

    files, problems, seen = [], [], {}
    for item in loader.files(targets):
        if isinstance(item, LoadProblem):
            problems.append(item)
            continue
        real = item.path.resolve()
        if real in seen:
            problems.append(LoadProblem(str(item.path), f"is the same file as {seen[real]}; "
                                                        "pass it once"))
            continue
        seen[real] = str(item.path)
        files.append(item)
    return files, problems


@dataclass
class Shard:
    key: str
    order: int
    path: str
    size: int = 0
    sha: str = ""
    n_docs: int | None = None  # set by its "shard" row
    docs: int = 0
    chunks: int = 0
    tokens: int = 0
    nbytes: int = 0
    problems: list[list[Any]] = field(default_factory=list)
    failed_docs: list[list[Any]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)
    pos: list[int] = field(default_factory=list)
    vecs: list[Any] = field(default_factory=list)
    buffered: int = 0
    parts: list[str] = field(default_factory=list)
    done: bool = False


class Run:
    """Takes result batches in any order; writes parts and ledger lines as shards finish."""

    def __init__(self, ledger: Ledger, report: IngestReport, on_error: str, direct: bool,
                 progress: Callable[[IngestProgress], None] | None, *, part_rows: int) -> None:
        self.ledger, self.report, self.on_error = ledger, report, on_error
        self.direct, self.progress = direct, progress
        self.part_rows = part_rows  # chunks buffered per shard before they are written as a part
        self.shards: dict[str, Shard] = {}
        self.state = IngestProgress()
        self.doc_shard: dict[str, int] = {}  # doc id -> order of its shard (this run)
        self.workers: set[str] = set()

    def plan(self, files: list[Any], problems: list[Any]) -> list[dict[str, Any]]:
        """The rows the engine reads: one per file, with the sha256 of a finished shard."""
        from ragkit.ingest.work import shard_key

        for p in problems:  # under "skip"; "raise" has stopped already
            self._fail(Failure(p.path, p.reason, p.line))
        rows = []
        for order, f in enumerate(files):
            key = shard_key(f.path)
            entry = self.ledger.entries.get(key, {})
            clean = not entry.get("problems") and not entry.get("failed_docs")
            done = entry.get("sha", "") if (clean or self.on_error == "skip") else ""
            path = os.path.abspath(f.path)
            try:
                size = os.path.getsize(path)
            except OSError:
                size = 0
            self.shards[key] = Shard(key, order, path, size=size)
            self.state.bytes_total += size
            rows.append({"shard": key, "order": order, "path": path, "name": f.name,
                         "source": f.source, "done": done})
        self.state.shards_total = len(rows)
        return rows

    def take(self, batch: Mapping[str, Sequence[Any]]) -> None:
        from ragkit.ingest.work import rows_of

        for row in rows_of(batch):
            s = self.shards[row["shard"]]
            if row["kind"] == "shard":
                self._note(s, row)
            else:
                self._doc(s, row)
            if s.n_docs is not None and not s.done and s.docs == s.n_docs:
                self._complete(s)
        if self.progress is not None:
            self.progress(self.state)

    def finish(self) -> None:
        missing = [s.path for s in self.shards.values() if not s.done]
        if missing:
            raise RagkitError(f"the engine returned no result for {len(missing)} shards, e.g. "
                              f"{missing[0]}; run again to redo them")

    # -- rows -----------------------------------------------------------------------------------

    def _note(self, s: Shard, row: Mapping[str, Any]) -> None:
        import json

        s.sha, s.size = row["sha"], row["size"] or s.size
        problems = json.loads(row["problems"]) if row["problems"] else []
        if row["status"] == "finished":
            entry = self.ledger.entries[s.key]
            for path, line, reason in entry.get("problems", []):
                self._fail(Failure(path, reason, line, earlier=True))
            for path, doc_id, reason in entry.get("failed_docs", []):
                self._fail(Failure(path, reason, doc_id=doc_id, earlier=True))
            self.report.shards_resumed += 1
            self.report.resumed_documents += entry.get("docs", 0)
            self.report.resumed_chunks += entry.get("chunks", 0)
            s.done = True
            self._advance(s, s.size)
            self.state.shards_done += 1
            return
        if row["status"] == "failed":
            if self.on_error == "raise":
                self._stop([Failure(p, r, ln) for p, ln, r in problems])
            for path, line, reason in problems:
                self._fail(Failure(path, reason, line))
            self.report.shards_failed += 1
            s.done = True
            if s.sha:  # the same bytes fail the same way: record them, report them next time
                self.ledger.finish({"shard": s.key, "path": s.path, "sha": s.sha, "size": s.size,
                                    "docs": 0, "chunks": 0, "tokens": 0, "parts": [],
                                    "problems": problems, "failed_docs": []})
            self._advance(s, s.size)
            self.state.shards_done += 1
            return
        s.n_docs, s.problems = row["n_docs"], problems
        for path, line, reason in problems:  # "skip": bad lines of a shard that was read
            self._fail(Failure(path, reason, line))

    def _doc(self, s: Shard, row: Mapping[str, Any]) -> None:
        import numpy as np

        s.docs += 1
        self.report.worker_cpu_s += row["cpu_s"]
        if row["worker"] not in self.workers:
            self.workers.add(row["worker"])
            self.report.workers_seen = len(self.workers)
        first = self.doc_shard.setdefault(row["doc_id"], s.order)
        if first != s.order and (self.on_error == "raise" or self.direct):
            other = next(x.path for x in self.shards.values() if x.order == first)
            failure = Failure(s.path, f"duplicate document id {row['doc_id']!r}, also in "
                              f"{other}; ids must be unique", doc_id=row["doc_id"])
            if self.on_error == "raise":
                self._stop([failure])
            self._fail(failure)  # a Chroma server holds whichever was written last
        if row["error"]:
            failure = Failure(s.path, row["error"], doc_id=row["doc_id"])
            if self.on_error == "raise":
                self._stop([failure])
            self._fail(failure)
            s.failed_docs.append([s.path, row["doc_id"], row["error"]])
        else:
            s.chunks += row["n_chunks"]
            s.tokens += row["tokens"]
            self.report.documents += 1
            self.report.chunks += row["n_chunks"]
            self.report.tokens += row["tokens"]
            self.state.documents += 1
            self.state.chunks += row["n_chunks"]
        if row["chunks"]:
            import json

            n, dim = row["n_chunks"], row["dim"]
            s.records.extend(json.dumps(r, ensure_ascii=False) for r in json.loads(row["chunks"]))
            s.pos.extend([row["pos"]] * n)
            s.vecs.append(np.frombuffer(row["vecs"], dtype=np.float32).reshape(n, dim))
            s.buffered += n
            if s.buffered >= self.part_rows:
                self._write_part(s)
        s.nbytes += row["nbytes"]
        self._advance(s, row["nbytes"])

    def _complete(self, s: Shard) -> None:
        if s.buffered:
            self._write_part(s)
        self.ledger.finish({"shard": s.key, "path": s.path, "sha": s.sha, "size": s.size,
                            "docs": s.docs - len(s.failed_docs), "chunks": s.chunks,
                            "tokens": s.tokens, "parts": s.parts, "problems": s.problems,
                            "failed_docs": s.failed_docs})
        s.done = True
        self.report.shards_processed += 1
        self.state.shards_done += 1
        self._advance(s, max(0, s.size - s.nbytes))  # JSONL keys and newlines: the rest

    def _write_part(self, s: Shard) -> None:
        import hashlib

        import numpy as np

        name = f"{hashlib.sha256(f'{s.key}#{s.sha}'.encode()).hexdigest()[:24]}-{len(s.parts):05d}"
        dims = {v.shape[1] for v in s.vecs}
        if len(dims) > 1:
            raise RagkitError(f"{s.path}: the embedder returned vectors of dims {sorted(dims)}")
        self.ledger.write_part(name, s.records, s.pos, np.concatenate(s.vecs))
        s.parts.append(name)
        s.records, s.pos, s.vecs, s.buffered = [], [], [], 0

    def _advance(self, s: Shard, nbytes: int) -> None:
        self.state.bytes_done += nbytes

    def _fail(self, failure: Failure) -> None:
        log.warning("skipped %s", failure)
        self.report.failures.append(failure)
        self.state.failures += 1

    def _stop(self, failures: list[Failure]) -> None:
        kept = sum(1 for s in self.shards.values() if s.done)
        shown = "; ".join(str(f) for f in failures[:5])
        more = f"; ... and {len(failures) - 5} more" if len(failures) > 5 else ""
        raise DocumentError(
            f"{shown}{more} (the index was not finished; {kept} shards finished before this are kept in "
            f"{self.ledger.root} and a re-run skips them; pass on_error='skip' / --skip-bad-files "
            "to index the rest)"
        )


def merge_parts(pipe: Any, ledger: Ledger, keys: list[str], run: Run) -> None:
    """Commit the documents in the parts of the run's shards to the pipeline, in input order,
    through its one write step (``RAGPipeline.commit``): each document whole, in the folder's
    log before the index. A document already committed with the same content hash (by an
    earlier, perhaps killed, run) is skipped. A document id already taken by an earlier shard is
    a failure (an error under on_error='raise')."""
    import numpy as np

    from ragkit.doclog import Put
    from ragkit.ingest.work import chunk_from

    pipe.bind_index()
    owner: dict[str, str] = {}
    reported: set[tuple[str, str]] = set()
    ops: list[Any] = []
    waiting = 0
    for key in keys:
        entry = ledger.entries.get(key)
        if not entry or not entry.get("parts"):
            continue
        records, pos, vecs = [], [], []
        for name in entry["parts"]:
            r, p, v = ledger.read_part(name)
            records += r
            pos.append(p)
            vecs.append(v)
        order = np.argsort(np.concatenate(pos), kind="stable")  # documents in shard order
        vecs_all = np.concatenate(vecs)[order]  # (n, d)
        chunks = [chunk_from(records[i]) for i in order.tolist()]
        start = 0
        while start < len(chunks):  # one document's chunks at a time (they are contiguous)
            doc_id = chunks[start].doc_id
            end = start + 1
            while end < len(chunks) and chunks[end].doc_id == doc_id:
                end += 1
            first = owner.setdefault(doc_id, entry["path"])
            if first != entry["path"]:
                failure = Failure(entry["path"], f"duplicate document id {doc_id!r}, already "
                                  f"taken by {first}; ids must be unique", doc_id=doc_id)
                if run.on_error == "raise":
                    run._stop([failure])
                if (entry["path"], doc_id) not in reported:
                    reported.add((entry["path"], doc_id))
                    run._fail(failure)
            else:
                meta = chunks[start].metadata
                digest = meta.get("doc_hash")
                if digest is None or pipe.doc_hash(doc_id) != digest:
                    ops.append(Put(doc_id, meta.get("source"), digest, chunks[start:end],
                                   vecs_all[start:end]))
                    waiting += end - start
                    if waiting >= run.part_rows:
                        pipe.commit(ops)
                        ops, waiting = [], 0
            start = end
    if ops:
        pipe.commit(ops)
