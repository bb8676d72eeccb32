"""Ingestion that outgrows one process: read, chunk, embed and index files on an engine.

    from ragkit.ingest import ingest
    report = ingest("corpus/", "configs/hash.yaml" or a RAGPipeline or a config mapping,
                    out=".ragkit/corpus", engine={"name": "ray", "workers": 8})
    print(report.summary())

The same run on every engine: ``"local"`` (this process) or ``"ray"`` (a Ray Data pipeline on a
local or existing cluster). Both run the same two steps (``ragkit.ingest.work``): read shards into
documents, chunk and embed batches of documents. An input *shard* is one file: a ``.txt``/``.md``
file is one document, a ``.jsonl`` file one per line (split millions of documents over many JSONL
shards). Document ids, chunks, offsets and vectors are those of ``RAGPipeline.add`` on
``load_documents`` of the same paths, and the saved folder is the one ``RAGPipeline.save`` writes.

Where the chunks go: on every engine and for every index, chunks and vectors stream back to the
driver, which keeps them per finished shard in ``OUT/ingest/parts`` and commits them at the end (in
input order) through the pipeline's one write step, ``RAGPipeline.commit``: each document whole,
in the folder's document log before the index, its content hash with it. That holds for a Chroma
server too (``index: {name: chroma, host: ..., port: ...}``): workers never write to the server
themselves. They did once, in parallel; that bypassed the document log, so a worker killed
between deleting a document's old chunks and adding its new ones left it half-indexed, and the
server is one serial writer anyway (see benchmarks/README.md, Ingestion).

Resuming: ``OUT/ingest/ledger.jsonl`` records each finished shard with the sha256 of its bytes
(see ``ragkit.ingest.ledger``). A run killed at any point and started again with the same inputs
and pipeline redoes only the shards not recorded (or whose bytes changed), and the index holds
each chunk id once. ``restart=True`` forgets the ledger.

Bad input: a file that cannot be read or decoded, a bad JSONL line, a document the chunker or
embedder refuses. With ``on_error="raise"`` (default) the run stops at the first one, raising a
``DocumentError`` that names the file (and line or document) and saving no index; the shards
finished before it stay in the ledger. With ``on_error="skip"`` it is logged, listed in
``IngestReport.failures`` with its path, and the rest goes on; a finished shard's failures are
listed again (``earlier=True``) by later runs that skip it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit.errors import (
    ConfigError,
    DocumentError,
    IndexExistsError,
    IndexMismatchError,
    RagkitError,
)
from ragkit.ingest.ledger import DIR, Ledger

__all__ = ["ENGINES", "Failure", "IngestProgress", "IngestReport", "ingest"]

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
PART_ROWS = 8192  # chunks buffered per shard before they are written as a part (a document's
# chunks are never split over two parts, so one bigger document makes one bigger part)


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
    bytes: int = 0  # UTF-8 bytes of the documents this run chunked and embedded
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
    # the parts and saving it), and "driver" (the
    # part of "process" the driver spent taking results: decoding, parts, ledger; serial)
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def docs_per_s(self) -> float:
        return self.documents / self.seconds if self.seconds > 0 else 0.0

    def summary(self) -> str:
        """One line: documents, chunks, tokens, throughput, failures, where it was saved."""
        n = self.workers or self.workers_seen
        workers = f", {n} workers" if self.engine != "local" and n else ""
        secs = self.seconds if self.seconds > 0 else float("inf")
        line = (f"indexed {self.documents} documents -> {self.chunks} chunks ({self.tokens} "
                f"tokens, {self.bytes / 1e6:.2f} MB) in {self.seconds:.1f} s "
                f"({self.docs_per_s:.1f} docs/s, {self.chunks / secs:.1f} chunks/s, "
                f"{self.bytes / 1e6 / secs:.2f} MB/s, engine {self.engine}{workers}); "
                f"{len(self.failures)} failures")
        if self.shards_resumed:
            line += (f"; kept {self.shards_resumed} shards ({self.resumed_documents} documents, "
                     f"{self.resumed_chunks} chunks) finished by an earlier run")
        return line + f"; index holds {self.index_chunks} chunks; saved to {self.out}"


def ingest(
    paths: str | os.PathLike[str] | Iterable[str | os.PathLike[str]],
    pipeline: Any,
    out: str | os.PathLike[str],
    *,
    engine: Any = "local",
    batch_size: int = 64,
    on_error: str = "raise",
    text_field: str = "text",
    id_field: str = "id",
    suffixes: Sequence[str] | None = None,
    restart: bool = False,
    mode: str = "append",
    progress: Callable[[IngestProgress], None] | None = None,
) -> IngestReport:
    """Chunk, embed and index the files under ``paths`` into folder ``out`` with ``engine``.

    ``pipeline``: a ``RAGPipeline``, a config mapping, or a YAML file's path. ``engine``: a name
    in ``ENGINES`` or a spec (``{"name": "ray", "workers": 4, "address": "auto"}``).
    ``batch_size``: documents per chunk-and-embed call (the pipeline's ``batch_size`` stays the
    number of chunks per embedder call). ``suffixes``: the files to read (default: the chunker's
    ``file_suffixes`` if it has them, else .txt/.md/.markdown/.jsonl). See the module docstring
    for the rest.

    ``mode``, when ``out`` already holds an index: ``"append"`` (default) adds new and changed
    documents (by content hash) and leaves the rest; ``"sync"`` does the same and deletes the
    documents whose source file is not among the inputs; ``"replace"`` builds a new index beside
    the old one and swaps it in when it is complete (the old one stays usable until then);
    ``"new"`` refuses a finished index (``IndexExistsError``; ``ragkit index`` without a flag).
    ``restart`` forgets the finished shards and replaces the index.
    """
    from ragkit.config import build, load_yaml, model_spec, to_config
    from ragkit.loaders import DEFAULT_SUFFIXES, DocumentLoader, LoadError, path_list
    from ragkit.pipeline import RAGPipeline
    from ragkit.registry import imports_are_allowed

    t0 = time.perf_counter()
    if isinstance(pipeline, (str, os.PathLike)):
        pipeline = load_yaml(pipeline)
    pipe = pipeline if isinstance(pipeline, RAGPipeline) else RAGPipeline.from_config(pipeline)
    eng = build("engine", engine, path="engine")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ConfigError(f"must be an int >= 1; got {batch_size!r}", path="batch_size")
    if suffixes is None:  # the files the chunker takes (source files for the code chunker)
        suffixes = getattr(pipe.chunker, "file_suffixes", DEFAULT_SUFFIXES)
    suffixes = tuple(suffixes)
    loader = DocumentLoader(text_field=text_field, id_field=id_field, on_error=on_error,
                            suffixes=suffixes)
    files, problems = _plan(loader, path_list(paths))
    if problems and on_error == "raise":
        raise LoadError(problems)

    if mode not in MODES:
        raise ConfigError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}", path="mode")
    out = Path(out)
    state = index_state(out)
    if state == "finished" and mode == "new":
        raise IndexExistsError(
            f"{out} already holds an index; pass --append to add new and changed documents "
            "(--sync also deletes those whose files are gone), or --replace to build a new one "
            "from these files and swap it in")
    spec = {"chunker": to_config(pipe.chunker, "chunker"), "embedder": model_spec(pipe.embedder),
            "loader": {"text_field": text_field, "id_field": id_field}, "target": "parts"}
    target = out
    if state != "none" and (mode == "replace" or restart):
        target = out.parent / f".{out.name}.replacing"
        shutil.rmtree(target, ignore_errors=True)
        if not restart and Ledger(out / DIR).made_with(spec):  # its finished shards still count
            shutil.copytree(out / DIR, target / DIR, copy_function=os.link,
                            ignore=shutil.ignore_patterns("lock", FINISHED))
    report = IngestReport(engine=registry_name(eng), workers=getattr(eng, "workers", None),
                          out=str(out), shards=len(files))
    ledger = Ledger(target / DIR)
    ledger.root.mkdir(parents=True, exist_ok=True)
    ledger.lock()
    try:
        ledger.open(spec, restart=restart)
        ledger.drop_orphans()
        (ledger.root / FINISHED).unlink(missing_ok=True)  # until this run is done
        pipe = _open_target(pipe, target)
        run = _Run(ledger, report, on_error, progress)
        rows = run.plan(files, problems)
        job = {"chunker": spec["chunker"], "embedder": to_config(pipe.embedder, "embedder"),
               "embed_batch": pipe.batch_size,
               "batch_size": batch_size,
               "allow_import": imports_are_allowed(),
               "loader": {"text_field": text_field, "id_field": id_field, "on_error": on_error,
                          "suffixes": list(suffixes)}}
        t1 = time.perf_counter()
        report.timings["plan"] = t1 - t0
        if rows:
            with closing(eng.run(rows, job, progress=run.partial)) as batches:  # a failure stops the engine at once
                for batch in batches:
                    t = time.perf_counter()
                    run.take(batch)
                    batch = None  # not alive while the engine makes the next one (memory)
                    report.timings["driver"] = report.timings.get("driver", 0.0) + (
                        time.perf_counter() - t)
        run.finish()
        t2 = time.perf_counter()
        report.timings["process"] = t2 - t1
        _merge(pipe, ledger, [r["shard"] for r in rows], run)
        if mode == "sync":
            report.deleted = _sync(pipe, {f.source for f in files})
        pipe.save(target)
        report.index_chunks = len(pipe.index)
        (ledger.root / FINISHED).write_text("")
        report.timings["index"] = time.perf_counter() - t2
    finally:
        ledger.unlock()
        pipe.close()
    if target != out:
        from ragkit.protocols import Closes

        if isinstance(pipe.index, Closes):
            pipe.index.close()  # an embedded Chroma holds its folder open
        swap_dirs(target, out)
    report.seconds = time.perf_counter() - t0
    return report


MODES = ("append", "sync", "replace", "new")
FINISHED = "finished"  # in OUT/ingest once a run has saved its index


def index_state(out: Path) -> str:
    """``"none"`` (no index in ``out``), ``"unfinished"`` (a run was killed before it saved;
    running again resumes it) or ``"finished"``."""
    from ragkit.pipeline import CONFIG_FILE

    if not (out / CONFIG_FILE).is_file():
        return "none"
    if (out / DIR / "run.json").is_file() and not (out / DIR / FINISHED).exists():
        return "unfinished"
    return "finished"


def _open_target(pipe: Any, target: Path) -> Any:
    """The pipeline that writes to folder ``target``: the index saved there (which must have
    been built with the same chunker, embedder and index settings), or ``pipe`` saved there
    empty, so that the folder opens from the first moment of the run."""
    from ragkit.config import build, to_config
    from ragkit.pipeline import CONFIG_FILE, RAGPipeline

    if (target / CONFIG_FILE).is_file():
        saved = RAGPipeline.load(target)
        for key in ("chunker", "embedder", "index"):
            have, want = to_config(getattr(saved, key), key), to_config(getattr(pipe, key), key)
            if key == "index":
                have, want = _build_time(saved.index, have), _build_time(saved.index, want)
            if have != want:
                saved.close()
                raise IndexMismatchError(
                    f"{target} was built with {key} {have}, but this run uses {want}; use the "
                    "same settings, or replace the index (CLI: --replace) to rebuild it")
        return saved
    if len(pipe.index):  # a pipeline object used before: start from an empty index
        pipe.index = build("index", to_config(pipe.index, "index"), path="index")
    pipe.save(target)
    return pipe


def _build_time(index: Any, config: Any) -> Any:
    """``config`` without the settings a saved index takes at query time or that say only where
    its data lives (an embedded Chroma's ``path``)."""
    if not isinstance(config, Mapping):
        return config
    skip = {*getattr(type(index), "QUERY_TIME", ()), *getattr(type(index), "LOCATION_KEYS", ())}
    return {k: v for k, v in config.items() if k not in skip}


def _sync(pipe: Any, sources: set[str]) -> int:
    """Delete the documents whose source file is not in ``sources``; returns how many."""
    gone = []
    for doc in pipe.documents():
        src = doc.source
        if src is None:
            continue
        base, sep, line = src.rpartition("#")
        if src not in sources and not (sep and line.isdigit() and base in sources):
            gone.append(doc.id)
    if gone:
        pipe.delete(gone)
    return len(gone)


def swap_dirs(new: Path, old: Path) -> None:
    """Put folder ``new`` where ``old`` is, atomically where the OS allows (Linux
    ``renameat2(RENAME_EXCHANGE)``), and delete the old one."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        exchange = libc.renameat2
    except (OSError, AttributeError):
        exchange = None
    if exchange is not None:
        AT_FDCWD, RENAME_EXCHANGE = -100, 2
        if exchange(AT_FDCWD, os.fsencode(new), AT_FDCWD, os.fsencode(old), RENAME_EXCHANGE) == 0:
            shutil.rmtree(new)  # now the old index
            return
    trash = old.parent / f".{old.name}.old"
    shutil.rmtree(trash, ignore_errors=True)
    os.replace(old, trash)
    os.replace(new, old)
    shutil.rmtree(trash)


def registry_name(engine: Any) -> str:
    from ragkit.registry import name_of

    return name_of("engine", type(engine))


# -- the driver's side of a run -------------------------------------------------------------------


def _plan(loader: Any, targets: list[Path]) -> tuple[list[Any], list[Any]]:
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
class _Shard:
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
    records: list[str] = field(default_factory=list)  # blocks of JSON lines, a document each
    pos: list[int] = field(default_factory=list)
    vecs: list[Any] = field(default_factory=list)
    buffered: int = 0
    parts: list[str] = field(default_factory=list)
    done: bool = False


class _Run:
    """Takes result batches in any order; writes parts and ledger lines as shards finish."""

    def __init__(self, ledger: Ledger, report: IngestReport, on_error: str,
                 progress: Callable[[IngestProgress], None] | None) -> None:
        self.ledger, self.report, self.on_error = ledger, report, on_error
        self.progress = progress
        self.bytes_taken = 0  # bytes of the results taken (the engine may report more in flight)
        self.shards: dict[str, _Shard] = {}
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
            self.shards[key] = _Shard(key, order, path, size=size)
            self.state.bytes_total += size
            rows.append({"shard": key, "order": order, "path": path, "name": f.name,
                         "source": f.source, "done": done})
        self.state.shards_total = len(rows)
        return rows

    def partial(self, nbytes: int) -> None:
        """The engine's word that ``nbytes`` of the batch it works on are done (within a big
        document too): shown in ``bytes_done`` until the batch's result arrives."""
        if self.progress is None:
            return
        self.state.bytes_done = self.bytes_taken + nbytes
        self.progress(self.state)

    def take(self, batch: Mapping[str, Sequence[Any]]) -> None:
        from ragkit.ingest.work import rows_of

        self.state.bytes_done = self.bytes_taken  # the batch's rows count it exactly now

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

    def _note(self, s: _Shard, row: Mapping[str, Any]) -> None:
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

    def _doc(self, s: _Shard, row: Mapping[str, Any]) -> None:
        import numpy as np

        s.docs += 1
        self.report.worker_cpu_s += row["cpu_s"]
        if row["worker"] not in self.workers:
            self.workers.add(row["worker"])
            self.report.workers_seen = len(self.workers)
        first = self.doc_shard.setdefault(row["doc_id"], s.order)
        if first != s.order and self.on_error == "raise":  # under "skip", _merge reports it
            other = next(x.path for x in self.shards.values() if x.order == first)
            self._stop([Failure(s.path, f"duplicate document id {row['doc_id']!r}, also in "
                                f"{other}; ids must be unique", doc_id=row["doc_id"])])
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
        if row["chunks"]:  # JSON lines, one record each: kept as one block, written as it is
            n, dim = row["n_chunks"], row["dim"]
            s.records.append(row["chunks"])
            s.pos.extend([row["pos"]] * n)
            s.vecs.append(np.frombuffer(row["vecs"], dtype=np.float32).reshape(n, dim))
            s.buffered += n
            if s.buffered >= PART_ROWS:
                self._write_part(s)
        s.nbytes += row["nbytes"]
        self.report.bytes += row["nbytes"]
        self._advance(s, row["nbytes"])

    def _complete(self, s: _Shard) -> None:
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

    def _write_part(self, s: _Shard) -> None:
        import hashlib

        import numpy as np

        name = f"{hashlib.sha256(f'{s.key}#{s.sha}'.encode()).hexdigest()[:24]}-{len(s.parts):05d}"
        dims = {v.shape[1] for v in s.vecs}
        if len(dims) > 1:
            raise RagkitError(f"{s.path}: the embedder returned vectors of dims {sorted(dims)}")
        self.ledger.write_part(name, s.records, s.pos, np.concatenate(s.vecs))
        s.parts.append(name)
        s.records, s.pos, s.vecs, s.buffered = [], [], [], 0

    def _advance(self, s: _Shard, nbytes: int) -> None:
        self.bytes_taken += nbytes
        self.state.bytes_done = self.bytes_taken

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


def _is_identity(order: Any) -> bool:
    import numpy as np

    return bool((order == np.arange(len(order))).all())


def _merge(pipe: Any, ledger: Ledger, keys: list[str], run: _Run) -> None:
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
        vecs_all = np.concatenate(vecs)
        vecs_all = vecs_all if _is_identity(order) else vecs_all[order]  # (n, d)
        chunks = [chunk_from(records[i]) for i in order.tolist()]
        del records, pos, vecs  # the chunks hold what they need of them
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
                    if waiting >= PART_ROWS:
                        pipe.commit(ops)
                        ops, waiting = [], 0
            start = end
    if ops:
        pipe.commit(ops)
