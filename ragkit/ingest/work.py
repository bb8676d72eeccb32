"""The work every engine runs: read shards into documents, then chunk and embed documents.

An input *shard* is one file (a ``.txt``/``.md`` file is one document, a ``.jsonl`` file one per
line). Two steps turn shards into chunks with vectors:

- ``read_shards(rows)``: each shard row becomes one row per document plus one ``"shard"`` row that
  says how it went (its sha256, how many documents it gave, its problems). A shard whose sha256
  equals the one the ledger recorded as finished gives only its ``"shard"`` row (``finished``).
- ``ChunkEmbed(job)(rows)``: each document row becomes a result row: its chunks and their vectors,
  which the driver commits to the index (workers never write to an index). ``"shard"`` rows pass
  through.

The local engine calls both in-process; the Ray engine runs the very same two callables as Ray
Data ``map_batches`` stages (reads as tasks, ``ChunkEmbed`` as an actor pool, so the model loads
once per worker). Same functions, same chunks: equality across engines is by construction.

Rows travel as plain ``dict[str, list]`` batches with the columns of ``COLUMNS``; every row has
every column, so Arrow blocks built from them share one schema.
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ragkit.errors import RagkitError
from ragkit.types import Chunk, Document

# column -> default; types: str, int or bytes (vectors: float32, row-major)
COLUMNS: dict[str, Any] = {
    "kind": "",  # "doc" or "shard"
    "shard": "",  # the shard's key: its resolved absolute path
    "order": 0,  # the shard's place in the run's plan (input order)
    "pos": -1,  # the document's place in its shard (-1 on "shard" rows)
    "doc_id": "",
    "source": "",  # where the document comes from, for messages ("a.jsonl#12")
    "text": "",  # the document's text, between reading and chunking
    "meta": "",  # the document's metadata, as JSON
    "nbytes": 0,  # UTF-8 bytes of the document's text
    "chunks": "",  # chunk records as JSON lines (JSON escapes newlines inside strings)
    "vecs": b"",  # their vectors
    "dim": 0,
    "n_chunks": 0,
    "tokens": 0,
    "error": "",  # why this document could not be chunked or embedded
    "worker": "",  # host:pid of the process that chunked and embedded it
    "cpu_s": 0.0,  # its share of the CPU seconds that process spent on its batch
    "status": "",  # "shard" rows: "read", "finished" (by an earlier run) or "failed"
    "sha": "",  # "shard" rows: sha256 of the file's bytes
    "size": 0,  # "shard" rows: the file's size in bytes
    "n_docs": 0,  # "shard" rows: documents the shard gave
    "problems": "",  # "shard" rows: JSON list of [path, line, reason]
}
SHARD_INPUT = ("shard", "order", "path", "name", "source", "done")  # columns of the plan's rows


def rows_of(batch: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """A batch of columns as a list of row dicts."""
    names = list(batch)
    if not names:
        return []
    return [dict(zip(names, values)) for values in zip(*(batch[n] for n in names))]


def batch_of(rows: Sequence[Mapping[str, Any]]) -> dict[str, list[Any]]:
    """Rows as a batch with every column of ``COLUMNS`` (defaults for those a row lacks)."""
    return {name: [row.get(name, default) for row in rows] for name, default in COLUMNS.items()}


# -- step 1: shards -> documents --------------------------------------------------------------


def read_shards(batch: Mapping[str, Sequence[Any]], *,
                loader: Mapping[str, Any]) -> dict[str, list]:
    """Read each shard of ``batch`` (columns ``SHARD_INPUT``) with the loader settings ``loader``
    (``DocumentLoader`` keyword arguments). Under ``on_error="raise"`` a shard with any problem
    gives no document (status ``failed``); under ``"skip"`` it gives its good documents."""
    from ragkit.loaders import DocumentLoader, LoadProblem, SourceFile

    reader = DocumentLoader(**loader)
    out: list[dict[str, Any]] = []
    for row in rows_of(batch):
        note = {"kind": "shard", "shard": row["shard"], "order": int(row["order"])}
        path = Path(row["path"])
        try:
            data = path.read_bytes()
        except OSError as exc:
            problem = [str(path), None, f"cannot be read: {exc.strerror or exc}"]
            out.append(note | {"status": "failed", "problems": json.dumps([problem])})
            continue
        sha = hashlib.sha256(data).hexdigest()
        note |= {"sha": sha, "size": len(data)}
        if sha == row["done"]:
            out.append(note | {"status": "finished"})
            continue
        docs, problems = [], []
        first_line: dict[str, int | None] = {}  # doc id -> its line, as the loader checks ids
        items = reader.parse(SourceFile(path, row["name"], row["source"]), data)
        data = None  # the file's bytes go once decoded (parse drops its own hold)
        for item in items:
            if isinstance(item, LoadProblem):
                problems.append([item.path, item.line, item.reason])
                continue
            doc, line = item
            if doc.id in first_line:
                seen = f"line {first_line[doc.id]}" if first_line[doc.id] else "this file"
                problems.append([str(path), line, f"duplicate document id {doc.id!r}, already "
                                 f"used by {seen}; ids must be unique"])
                continue
            first_line[doc.id] = line
            docs.append(doc)
        if problems and reader.on_error == "raise":
            docs = []
        for pos, doc in enumerate(docs):
            out.append({
                "kind": "doc", "shard": row["shard"], "order": int(row["order"]), "pos": pos,
                "doc_id": doc.id, "source": str(doc.metadata.get("source", doc.id)),
                "text": doc.text, "meta": json.dumps(dict(doc.metadata), ensure_ascii=False),
                "nbytes": len(doc.text.encode("utf-8")),
            })
        status = "failed" if problems and reader.on_error == "raise" else "read"
        out.append(note | {"status": status, "n_docs": len(docs), "problems": json.dumps(problems)})
    return batch_of(out)


# -- step 2: documents -> chunks and vectors --------------------------------------------------


@dataclass
class DocResult:
    """A document's chunks (stamped with its content hash, as ``RAGPipeline.add`` does) and their
    float32 vectors ``(len(chunks), dim)``, or the reason it failed."""

    doc: Document
    chunks: list[Chunk] = field(default_factory=list)
    vecs: Any = None
    error: str = ""


def chunk_and_embed(docs: Sequence[Document], chunker: Any, embedder: Any, embed_batch: int,
                    workers: int = 1, progress: Callable[[int], None] | None = None,
                    sizes: Sequence[int] | None = None) -> list[DocResult]:
    """Chunk ``docs`` (on ``workers`` processes: ``chunk_many``'s pool) and embed their chunks
    ``embed_batch`` texts at a time, longest first, in this process; results in document order.
    (The engines give each worker whole batches and call this with ``workers=1``.)

    ``progress(n)``, if given, is called with the bytes done so far (of ``sizes``, the documents'
    sizes in bytes): a document counts half when chunked and half when embedded. In this process
    (``workers=1``) chunking reports fractions within a document through ``ragkit.progress``;
    embedding reports after every embedder call, each chunk weighing its share of characters.

    A ``RagkitError`` raised for one document (a chunker refusing it, a text longer than the
    embedder reads) fails that document only, with the error's message; other errors propagate.
    """
    import numpy as np

    from ragkit import progress as progress_mod
    from ragkit.chunkers.parallel import iter_chunk_results
    from ragkit.pipeline import stamp
    from ragkit.protocols import ChunksAndEmbeds

    if progress is not None:
        sizes = list(sizes) if sizes is not None else [_nbytes(d) for d in docs]
    results = [DocResult(doc) for doc in docs]
    chunked = 0

    def chunked_one(i: int) -> None:
        nonlocal chunked
        if progress is not None:
            chunked += sizes[i]
            progress(chunked // 2)

    if isinstance(chunker, ChunksAndEmbeds) or workers == 1:
        for i, result in enumerate(results):
            doc = result.doc
            listen = None
            if progress is not None:
                def listen(f: float, before: int = chunked, size: int = sizes[i]) -> None:
                    progress(int(before + f * size) // 2)
            try:
                with progress_mod.listening(listen):
                    if isinstance(chunker, ChunksAndEmbeds):  # e.g. late chunking: own vectors
                        chunks, vecs = chunker.chunk_and_embed(doc)
                        result.chunks = stamp(chunks, doc.content_hash)
                        result.vecs = np.asarray(vecs, dtype=np.float32).reshape(len(chunks), -1)
                    else:
                        result.chunks = stamp(chunker.chunk(doc), doc.content_hash)
            except RagkitError as exc:
                result.chunks, result.error = [], str(exc)
            chunked_one(i)
    else:
        for i, (result, chunks) in enumerate(zip(
                results, iter_chunk_results(chunker, docs, workers=workers), strict=True)):
            if isinstance(chunks, RagkitError):
                result.chunks, result.error = [], str(chunks)
            else:
                result.chunks = stamp(chunks, result.doc.content_hash)
            chunked_one(i)
    todo = [r for r in results if r.vecs is None and not r.error]
    done = None
    if progress is not None:
        waiting = {id(r) for r in todo}
        base = sum(n for r, n in zip(results, sizes, strict=True) if id(r) not in waiting)
        todo_bytes = sum(sizes) - base
        todo_chars = max(1, sum(len(c.text) for r in todo for c in r.chunks))

        def done(chars: int) -> None:  # each chunk weighs its share of the todo bytes
            progress((chunked + base + todo_bytes * chars // todo_chars) // 2)
    try:
        vecs = _embed(embedder, [c.text for r in todo for c in r.chunks], embed_batch, done)
    except RagkitError:  # find which documents: each on its own
        for r in todo:
            try:
                r.vecs = _embed(embedder, [c.text for c in r.chunks], embed_batch)
            except RagkitError as exc:
                r.chunks, r.vecs, r.error = [], None, str(exc)
    else:
        start = 0
        for r in todo:
            r.vecs = vecs[start : start + len(r.chunks)]
            start += len(r.chunks)
    if progress is not None:
        progress(sum(sizes))
    return results


def _nbytes(doc: Document) -> int:
    return len(doc.text) if doc.text.isascii() else len(doc.text.encode("utf-8"))


def _embed(embedder: Any, texts: list[str], batch: int,
           done: Callable[[int], None] | None = None) -> Any:
    from ragkit.retrieval.embedders import embed_sorted

    return embed_sorted(embedder, texts, batch, done)  # (n, d), longest texts embedded together


def chunk_record(c: Chunk) -> dict[str, Any]:
    return {"doc_id": c.doc_id, "start": c.start, "end": c.end, "text": c.text, "index": c.index,
            "metadata": dict(c.metadata)}


def chunk_from(record: Mapping[str, Any]) -> Chunk:
    return Chunk(record["doc_id"], record["start"], record["end"], record["text"], record["index"],
                 record["metadata"])


class ChunkEmbed:
    """The chunk-and-embed stage: built once per worker (the chunker and embedder load their
    models on first use and keep them), then called on batches of ``read_shards`` rows.

    ``job``: ``{"chunker": spec, "embedder": spec, "embed_batch": int, ...}``; the result rows
    carry each document's chunks and vectors back to the driver.
    """

    def __init__(self, job: Mapping[str, Any]) -> None:
        from ragkit.config import build

        self.job = dict(job)
        self.name = f"{socket.gethostname()}:{os.getpid()}"
        from ragkit.registry import imports_allowed

        with imports_allowed(job.get("allow_import", False)):  # as the driver allowed
            self.chunker = build("chunker", job["chunker"], path="chunker")
            self.embedder = build("embedder", job["embedder"], path="embedder")

    def __call__(self, batch: Mapping[str, Sequence[Any]],
                 progress: Callable[[int], None] | None = None) -> dict[str, list]:
        """The result rows of ``batch``; ``progress(nbytes)`` as in ``chunk_and_embed`` (the
        local engine passes it; on Ray the driver hears of a batch when it is done)."""
        cpu = time.process_time()
        rows = rows_of(batch)
        docs = [Document(r["doc_id"], r["text"], json.loads(r["meta"]))
                for r in rows if r["kind"] == "doc"]
        sizes = [r["nbytes"] for r in rows if r["kind"] == "doc"]
        results = iter(chunk_and_embed(docs, self.chunker, self.embedder,
                                       int(self.job["embed_batch"]), progress=progress, sizes=sizes))
        out = []
        for row in rows:
            if row["kind"] != "doc":
                out.append(row)
                continue
            r = next(results)
            res = {k: row[k] for k in ("kind", "shard", "order", "pos", "doc_id", "source",
                                       "nbytes")} | {"worker": self.name}
            if r.error:
                out.append(res | {"error": r.error})
                continue
            res |= {"n_chunks": len(r.chunks),
                    "tokens": sum(int(c.metadata.get("tokens", 0)) for c in r.chunks)}
            if r.chunks:
                res |= {"chunks": "\n".join(json.dumps(chunk_record(c), ensure_ascii=False)
                                             for c in r.chunks),
                        "vecs": r.vecs.tobytes(), "dim": int(r.vecs.shape[1])}
            out.append(res)
        docs = [r for r in out if r["kind"] == "doc"]
        cpu = time.process_time() - cpu
        for r in docs:
            r["cpu_s"] = cpu / len(docs)
        return batch_of(out)


def shard_key(path: Path) -> str:
    """A shard's identity in the ledger: its resolved absolute path."""
    return os.path.realpath(path)
