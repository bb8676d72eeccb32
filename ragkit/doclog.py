"""The write-ahead document log of a saved index: what makes an add all-or-nothing and durable.

A saved index folder holds ``pipeline.yaml``, the index snapshot ``index/`` and this log,
``documents.sqlite`` (SQLite in WAL mode, ``synchronous=FULL``)::

    documents   one row per indexed document: id, source, content hash, number of chunks
    pending     the operations since the last snapshot, in order: a document's chunks and
                vectors (op "put") or its removal (op "delete"); at most one per document
    meta        format, version, ``checkpoint`` (the last operation the snapshot holds) and
                ``copy`` ("1": ``pending`` also keeps a copy of every document, see below)

Adding a document is one SQLite transaction that writes its chunks and vectors to ``pending``
and its row, with its content hash, to ``documents``: the hash that makes the next run call the
document "unchanged" is committed together with everything it stands for, and a crash before the
commit leaves nothing of it. Only then is the operation applied to the in-memory index. Opening a
folder loads the snapshot and replays the operations after its checkpoint (replaying is
idempotent: a "put" replaces the document's chunks, a "delete" removes them), so whatever a crash
interrupted is repaired on the next open. Because a document's state after a replay depends only
on its last operation, committing an operation drops the document's earlier ones (the log is
compacted as it is written). Saving a snapshot moves the checkpoint and drops the operations it
now holds.

An index that persists its own writes (an embedded or remote Chroma) needs no snapshot: each
operation is applied to its store as soon as it is logged, and the checkpoint moves at once. An
embedded Chroma keeps its store inside the folder, and a kill inside Chroma's own writer can
damage that store beyond Chroma's repair (chroma-core/chroma#7678, its HNSW segment). So a folder
made for such an index keeps a copy of every document (``meta.copy = "1"``): the checkpoint drops
only "delete" rows, and the "put" rows stay, one per document (its latest chunks and vectors; a
delete removes the document's put and is itself dropped at the next checkpoint). When the store
cannot be opened or read back, loading the folder rebuilds it from these rows
(``ragkit.store_repair``). The copy is kept in ``pending`` rather than a table of its own because
``pending`` already holds exactly these rows in exactly this format until the checkpoint: keeping
them costs one ``DELETE`` of the document's earlier row per commit and nothing else, where a
second table would write every vector twice per commit and need its own compaction. Disk cost:
every chunk's text and metadata as JSON and its vector as float32 (``4 * dim`` bytes), about
half of what Chroma's own store takes (300 documents, 1,200 chunks: 2.5 MB beside Chroma's 5.1 MB
with 384-dim vectors; 0.7 MB beside 2.2 MB with 32-dim ones). A folder written before the copy
existed has no ``copy`` key; it opens as before, and a damaged store there still needs
`ragkit index --replace`.

One process writes at a time: ``acquire_writer`` takes an exclusive ``flock`` on
``write.lock`` beside the log, refused at once, with the holder's pid, if another process has it.
"""

from __future__ import annotations

import json
import os
import sqlite3
import threading
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import RagkitError
from ragkit.ingest.work import chunk_from as _chunk
from ragkit.ingest.work import chunk_record as _record
from ragkit.types import Chunk

FILE = "documents.sqlite"
LOCK_FILE = "write.lock"
FORMAT = "ragkit.doclog"
VERSION = 1
PAGE = 256  # pending rows read per query
_BIG = 4 << 20  # bytes: a document over this is written to the log through blob handles


@dataclass(frozen=True)
class DocumentInfo:
    """One indexed document, as ``RAGPipeline.documents()`` and ``ragkit docs list`` show it."""

    id: str
    source: str | None
    content_hash: str | None
    chunks: int

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "source": self.source, "content_hash": self.content_hash,
                "chunks": self.chunks}


@dataclass(frozen=True)
class Put:
    """A document's new chunks (``vecs`` aligned, float32 ``(n, d)``), replacing its old ones."""

    doc_id: str
    source: str | None
    content_hash: str | None
    chunks: Sequence[Chunk]
    vecs: np.ndarray


@dataclass(frozen=True)
class Delete:
    doc_id: str


class WriterBusyError(RagkitError):
    """Another process is writing to the same index folder."""


class DocLog:
    """The log in folder ``root`` (created if missing)."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.path = self.root / FILE
        self._mutex = threading.Lock()  # one connection, shared by the pipeline's threads
        self._lock_fd: int | None = None
        try:
            self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.execute("PRAGMA busy_timeout=10000")
            with self._tx():
                self._db.execute("CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, "
                                 "value TEXT NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS documents (id TEXT PRIMARY KEY, "
                                 "source TEXT, hash TEXT, chunks INTEGER NOT NULL)")
                self._db.execute("CREATE TABLE IF NOT EXISTS pending (seq INTEGER PRIMARY KEY "
                                 "AUTOINCREMENT, doc_id TEXT NOT NULL, op TEXT NOT NULL, "
                                 "chunks TEXT, vecs BLOB, dim INTEGER)")
                self._db.execute("CREATE INDEX IF NOT EXISTS pending_doc ON pending (doc_id)")
                have = dict(self._db.execute("SELECT key, value FROM meta").fetchall())
                if not have:
                    self._db.executemany("INSERT INTO meta VALUES (?, ?)", [
                        ("format", FORMAT), ("version", str(VERSION)), ("checkpoint", "0")])
                elif have.get("format") != FORMAT or have.get("version") != str(VERSION):
                    raise RagkitError(f"{self.path}: not a {FORMAT} v{VERSION} log")
        except sqlite3.DatabaseError as exc:
            raise RagkitError(f"{self.path}: cannot open the document log ({exc}); the index "
                              "folder is damaged: rebuild it with `ragkit index --replace`") from None

    # -- transactions ---------------------------------------------------------------------------

    def _tx(self) -> Any:
        db = self._db

        class _Tx:
            def __enter__(self_inner) -> None:
                db.execute("BEGIN IMMEDIATE")

            def __exit__(self_inner, kind: Any, *_: Any) -> None:
                db.execute("ROLLBACK" if kind else "COMMIT")

        return _Tx()

    def commit(self, ops: Sequence[Put | Delete]) -> int:
        """Write ``ops`` in one transaction; returns the sequence number of the last one."""
        seq = self.last_seq()
        if not ops:
            return seq
        with self._mutex, self._tx():
            for op in ops:  # a document's earlier operation is superseded by this one
                self._db.execute("DELETE FROM pending WHERE doc_id = ?", (op.doc_id,))
                if isinstance(op, Put):
                    vecs = np.ascontiguousarray(op.vecs, dtype=np.float32)
                    dim = vecs.shape[1] if vecs.ndim == 2 else 0
                    if vecs.nbytes + sum(len(c.text) for c in op.chunks) > _BIG:
                        cur = self._put_big(op, vecs, dim)
                    else:
                        records = json.dumps([_record(c) for c in op.chunks], ensure_ascii=False)
                        cur = self._db.execute(
                            "INSERT INTO pending (doc_id, op, chunks, vecs, dim) VALUES (?, "
                            "'put', ?, ?, ?)", (op.doc_id, records,
                                                memoryview(vecs).cast("B"), dim))  # no copy
                    self._db.execute("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                                     (op.doc_id, op.source, op.content_hash, len(op.chunks)))
                else:
                    cur = self._db.execute("INSERT INTO pending (doc_id, op) VALUES (?, 'delete')",
                                           (op.doc_id,))
                    self._db.execute("DELETE FROM documents WHERE id = ?", (op.doc_id,))
                seq = int(cur.lastrowid)
        return seq

    def _put_big(self, op: Put, vecs: np.ndarray, dim: int) -> sqlite3.Cursor:
        """The ``pending`` row of a big document, in the caller's transaction, written through
        SQLite's blob handles a few MB at a time: binding a 50 MB document's records and vectors
        as values made SQLite and the driver copy each of them twice (~330 MB traced). Its
        records are the same JSON array, stored as UTF-8 bytes (``pending`` reads both)."""
        lines = [json.dumps(_record(c), ensure_ascii=False).encode("utf-8") for c in op.chunks]
        size = sum(map(len, lines)) + 2 * max(0, len(lines) - 1) + 2  # "[" ", ".join "]"
        cur = self._db.execute(
            "INSERT INTO pending (doc_id, op, chunks, vecs, dim) VALUES (?, 'put', zeroblob(?), "
            "zeroblob(?), ?)", (op.doc_id, size, vecs.nbytes, dim))
        row = int(cur.lastrowid)
        with self._db.blobopen("pending", "chunks", row) as blob:
            block, n = [b"["], 1
            for i, line in enumerate(lines):
                block.append(line if i == 0 else b", " + line)
                n += len(block[-1])
                if n >= _BIG:
                    blob.write(b"".join(block))
                    block, n = [], 0
            block.append(b"]")
            blob.write(b"".join(block))
        del lines
        data = memoryview(vecs).cast("B")  # no copy
        with self._db.blobopen("pending", "vecs", row) as blob:
            for at in range(0, len(data), _BIG):
                blob.write(data[at : at + _BIG])
        return cur

    def pending(self, after: int) -> Iterator[tuple[int, Put | Delete]]:
        """The operations after sequence number ``after``, in order (read a page at a time)."""
        while True:
            with self._mutex:
                rows = self._db.execute("SELECT seq, doc_id, op, chunks, vecs, dim FROM pending "
                                        "WHERE seq > ? ORDER BY seq LIMIT ?", (after, PAGE)
                                        ).fetchall()
            for seq, doc_id, op, chunks, vecs, dim in rows:
                after = seq
                if op == "delete":
                    yield seq, Delete(doc_id)
                    continue
                records = json.loads(chunks)
                n = len(records)
                arr = np.frombuffer(vecs, dtype=np.float32).reshape(n, dim) if n else np.zeros(
                    (0, dim or 0), dtype=np.float32)
                first = records[0]["metadata"] if records else {}
                yield seq, Put(doc_id, first.get("source"), first.get("doc_hash"),
                               [_chunk(r) for r in records], arr)
            if len(rows) < PAGE:
                return

    def checkpoint(self, seq: int) -> None:
        """The snapshot now holds every operation up to ``seq``: forget them."""
        with self._mutex, self._tx():
            # with a copy (see the module docstring) the puts stay: they are the copy
            drop = " AND op = 'delete'" if self._keeps_copy(locked=True) else ""
            self._db.execute("DELETE FROM pending WHERE seq <= ?" + drop, (seq,))
            self._db.execute("UPDATE meta SET value = ? WHERE key = 'checkpoint'",
                             (str(max(seq, self.checkpoint_seq(locked=True))),))

    def keeps_copy(self) -> bool:
        """Whether ``pending`` keeps every document's chunks and vectors (a folder made for an
        index whose store may need rebuilding; see the module docstring)."""
        return self._keeps_copy()

    def _keeps_copy(self, *, locked: bool = False) -> bool:
        query = "SELECT value FROM meta WHERE key = 'copy'"
        if locked:
            row = self._db.execute(query).fetchone()
        else:
            with self._mutex:
                row = self._db.execute(query).fetchone()
        return row is not None and row[0] == "1"

    def keep_copy(self, docs: Iterable[Put] = ()) -> None:
        """From now on keep a copy of every document; ``docs``: the documents the index holds
        already, written as puts its store has applied. For a new folder only: a log that has
        dropped puts cannot make its copy complete."""
        with self._mutex, self._tx():
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('copy', '1')")
        for op in docs:
            self.checkpoint(self.commit([op]))

    def checkpoint_seq(self, *, locked: bool = False) -> int:
        query = "SELECT value FROM meta WHERE key = 'checkpoint'"
        if locked:
            return int(self._db.execute(query).fetchone()[0])
        with self._mutex:
            return int(self._db.execute(query).fetchone()[0])

    def last_seq(self) -> int:
        """The sequence number of the newest operation ever written (0 for none)."""
        with self._mutex:
            row = self._db.execute("SELECT seq FROM sqlite_sequence WHERE name = 'pending'"
                                   ).fetchone()
        return int(row[0]) if row else 0

    # -- documents ------------------------------------------------------------------------------

    def hash_of(self, doc_id: str) -> str | None:
        with self._mutex:
            row = self._db.execute("SELECT hash FROM documents WHERE id = ?", (doc_id,)).fetchone()
        return row[0] if row else None

    def documents(self, offset: int = 0, limit: int | None = None) -> list[DocumentInfo]:
        """The indexed documents ordered by id (``limit=None``: all of them)."""
        with self._mutex:
            rows = self._db.execute("SELECT id, source, hash, chunks FROM documents ORDER BY id "
                                    "LIMIT ? OFFSET ?", (-1 if limit is None else limit, offset)
                                    ).fetchall()
        return [DocumentInfo(*row) for row in rows]

    def count(self) -> int:
        with self._mutex:
            return int(self._db.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def seed(self, docs: Mapping[str, DocumentInfo]) -> None:
        """Fill an empty ``documents`` table from an index saved before this log existed."""
        with self._mutex, self._tx():
            self._db.executemany("INSERT OR REPLACE INTO documents VALUES (?, ?, ?, ?)",
                                 [(d.id, d.source, d.content_hash, d.chunks)
                                  for d in docs.values()])

    # -- one writer process ---------------------------------------------------------------------

    def acquire_writer(self) -> None:
        """Take the folder's write lock for this process (held until ``close``)."""
        if self._lock_fd is not None:
            return
        import fcntl

        fd = os.open(self.root / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise WriterBusyError(
                f"{self.root} is being written by {holder}; one process writes to an index at a "
                "time: wait for it to finish (readers may open the index meanwhile)") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"pid {os.getpid()}".encode())
        self._lock_fd = fd

    def close(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = None
        with self._mutex:
            self._db.close()

