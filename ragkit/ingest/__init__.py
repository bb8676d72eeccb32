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

Where the chunks go:

- an index that lives in one process (``memory``, ``faiss``, ``bm25``, ``hybrid``, an embedded
  ``chroma``): chunks and vectors stream back to the driver, which keeps them per finished shard in
  ``OUT/ingest/parts`` and builds the index from the parts at the end (in input order);
- a Chroma server (``index: {name: chroma, host: ..., port: ...}``): every worker writes its
  chunks to the server itself (upserts keyed by chunk id, the documents' earlier chunks deleted
  first); the driver keeps only the ledger.

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

This module decides what a run does with the output folder (modes, resuming) and runs it; the
driver's side of a run is ``ragkit.ingest.driver``, the report types ``ragkit.ingest.report``.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import closing
from pathlib import Path
from typing import Any

from ragkit.errors import (
    ConfigError,
    IndexExistsError,
    IndexMismatchError,
)
from ragkit.ingest.driver import Run, merge_parts, plan_files
from ragkit.ingest.ledger import DIR, Ledger
from ragkit.ingest.report import Failure, IngestProgress, IngestReport
from ragkit.protocols import ConcurrentWriters, HasWorkers

__all__ = ["ENGINES", "Failure", "IngestProgress", "IngestReport", "ingest"]

log = logging.getLogger(__name__)

ENGINES = ("local", "ray")
PART_ROWS = 8192  # chunks buffered per shard before they are written as a part


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
    files, problems = plan_files(loader, path_list(paths))
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
    direct = isinstance(pipe.index, ConcurrentWriters) and bool(pipe.index.concurrent_writers)
    spec = {"chunker": to_config(pipe.chunker, "chunker"), "embedder": model_spec(pipe.embedder),
            "loader": {"text_field": text_field, "id_field": id_field},
            "target": to_config(pipe.index, "index") if direct else "parts"}
    target = out
    if state != "none" and (mode == "replace" or restart):
        target = out.parent / f".{out.name}.replacing"
        shutil.rmtree(target, ignore_errors=True)
        if not restart and Ledger(out / DIR).made_with(spec):  # its finished shards still count
            shutil.copytree(out / DIR, target / DIR, copy_function=os.link,
                            ignore=shutil.ignore_patterns("lock", FINISHED))
    workers = eng.workers if isinstance(eng, HasWorkers) else None
    report = IngestReport(engine=registry_name(eng), workers=workers, out=str(out),
                          shards=len(files))
    ledger = Ledger(target / DIR)
    ledger.root.mkdir(parents=True, exist_ok=True)
    ledger.lock()
    try:
        ledger.open(spec, restart=restart)
        ledger.drop_orphans()
        (ledger.root / FINISHED).unlink(missing_ok=True)  # until this run is done
        if not direct:
            pipe = _open_target(pipe, target)
        if direct:
            pipe.bind_index()  # refuses a collection built with another embedder or chunker
            pipe.index.delete([])  # writes what it is built with before any worker adds
        run = Run(ledger, report, on_error, direct, progress, part_rows=PART_ROWS)
        rows = run.plan(files, problems)
        job = {"chunker": spec["chunker"], "embedder": to_config(pipe.embedder, "embedder"),
               "index": to_config(pipe.index, "index"), "embed_batch": pipe.batch_size,
               "batch_size": batch_size, "write": "index" if direct else "driver",
               "allow_import": imports_are_allowed(),
               "loader": {"text_field": text_field, "id_field": id_field, "on_error": on_error,
                          "suffixes": list(suffixes)}}
        t1 = time.perf_counter()
        report.timings["plan"] = t1 - t0
        if rows:
            with closing(eng.run(rows, job)) as batches:  # a failure stops the engine at once
                for batch in batches:
                    t = time.perf_counter()
                    run.take(batch)
                    report.timings["driver"] = report.timings.get("driver", 0.0) + (
                        time.perf_counter() - t)
        run.finish()
        t2 = time.perf_counter()
        report.timings["process"] = t2 - t1
        if not direct:
            merge_parts(pipe, ledger, [r["shard"] for r in rows], run)
            if mode == "sync":
                report.deleted = _sync(pipe, {f.source for f in files})
        pipe.save(target)
        report.index_chunks = len(pipe.index)
        (ledger.root / FINISHED).write_text("")
        report.timings["index"] = time.perf_counter() - t2
    finally:
        ledger.unlock()
        if not direct:
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
