"""A Chroma vector index: embedded (in memory or persistent at ``path``) or a Chroma server.

``path=None, host=None``: an in-memory ``EphemeralClient``; ``path="dir"``: a ``PersistentClient``
writing to ``dir`` (several processes may open it one after another); ``host="127.0.0.1"``: an
``HttpClient`` to a server started with ``chroma run --path DIR --host HOST --port PORT``, which
lets several processes or machines write one index at the same time.

Vectors always come from ragkit: collections are made with ``embedding_function=None``, so Chroma
never loads (or downloads) a model of its own.

What is stored per chunk: the id is ``chunk.id``, the document is ``chunk.text``, and the Chroma
metadata holds the chunk's fields under ``ragkit:doc_id``, ``ragkit:start``, ``ragkit:end``,
``ragkit:index`` plus the chunk's own metadata, flattened: a str, bool, finite float or 64-bit
int value is stored as is under its key (so Chroma filters on it natively); any other value (a
list, a dict, ``None``, a huge int) or a key Chroma refuses (empty, or starting with ``$``, ``#``
or ``ragkit``) is stored JSON-encoded under ``ragkit.json:<key>`` and decoded back on the way out.

Filters have ``MemoryIndex``'s semantics (key -> value or list of values, ``"doc_id"`` matching the
chunk's document) and become a Chroma ``where``: ``$in`` per key, ``$and`` across keys. One
difference: Chroma tells ``True`` from ``1``, Python's ``==`` does not.

Scores are higher-is-better: Chroma's cosine distance is ``1 - cos`` and its ``ip`` distance is
``1 - q.v``, so the score is ``1 - distance`` in both spaces (the plain cosine / inner product).
Search is Chroma's HNSW: approximate, like faiss ``hnsw``.

The collection's metadata holds ragkit's format version, the vector dim (fixed once set: Chroma
keeps a collection's dimension even when it is emptied) and ``info`` as a JSON string, so every
process that opens the collection sees what it was built with.

``save(path)`` writes ``path/chroma.json``, a pointer: for a server, its host, port and collection
(the server keeps the data); for an embedded index whose data already lives under ``path`` (it was
loaded from there), only the pointer is rewritten; otherwise (in memory, or persistent elsewhere)
the collection is copied into a new ``PersistentClient`` at ``path/data``, swapped in whole like
``MemoryIndex`` does. ``load(path)`` opens what the pointer names.

Thread safety: many readers and one writer at a time, through the readers-writer lock of
``ragkit.concurrency`` around every public method (see there for why a lock and not
copy-on-write); ``replace`` swaps a document's chunks in one write.

This module holds the connection, the contents and search; how chunks and filters become Chroma
metadata is in ``ragkit.retrieval.chroma_codec``, saving and loading in
``ragkit.retrieval.chroma_persist``.
"""

from __future__ import annotations

import importlib.util
import itertools
import json
import logging
import os
import re
import warnings
import weakref
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ragkit._deps import require
from ragkit.concurrency import Guarded, reads, writes
from ragkit.errors import ConfigError, IndexMismatchError, MissingDependencyError, RagkitError
from ragkit.retrieval.chroma_codec import (
    FIELD,
    NOTHING,
    decode_chunk,
    decode_metadata,
    encode_chunk,
    where_clause,
)
from ragkit.retrieval.chroma_persist import FORMAT, HELD_OPEN, VERSION, ChromaPersistence
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_aligned,
    check_chunks,
    check_k,
    check_vecs,
    normalise,
    query_rows,
)
from ragkit.types import Chunk, Hit

log = logging.getLogger(__name__)

METRICS = ("cosine", "ip")
_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9._-]{1,478}[a-zA-Z0-9]")
_ephemeral = itertools.count()  # in-memory collections get a process-unique name


class ChromaConnectionError(RagkitError, ConnectionError):
    """The Chroma server named by ``host`` and ``port`` cannot be reached."""


@dataclass(kw_only=True)
class ChromaIndex(ChromaPersistence, Guarded):
    """Nearest-neighbour search over chunk vectors stored in Chroma; see the module docstring.

    ``metric="cosine"`` L2-normalises stored and query vectors (Chroma space ``cosine``);
    ``"ip"`` uses the raw inner product (space ``ip``). Adding a chunk whose id is present
    replaces it, metadata included. The client connects on first use, not when built.
    """

    # where the data lives, not how it is indexed: a saved index points at its own copy
    LOCATION_KEYS = frozenset({"path"})

    path: str | None = None  # PersistentClient folder; None (and no host): in memory
    host: str | None = None  # Chroma server (exclusive with path)
    port: int = 8000
    collection: str = "ragkit"
    metric: Literal["cosine", "ip"] = "cosine"
    batch_size: int = 1000  # records per Chroma call (capped by the client's max batch size)

    def __post_init__(self) -> None:
        if self.path is not None and self.host is not None:
            raise ConfigError(
                f"path={self.path!r} (an embedded PersistentClient) and host={self.host!r} (a "
                "Chroma server) exclude each other; set one of them, or neither for an "
                "in-memory index", path="host",
            )
        for name in ("path", "host"):
            value = getattr(self, name)
            if value is not None and (not isinstance(value, str) or not value):
                raise ConfigError(f"must be a non-empty str or null; got {value!r}", path=name)
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}", path="metric"
            )
        if not isinstance(self.collection, str) or not _NAME.fullmatch(self.collection):
            raise ConfigError(
                f"must be 3-480 characters from [a-zA-Z0-9._-], starting and ending with a letter "
                f"or digit (Chroma's rule); got {self.collection!r}", path="collection",
            )
        for name, low, high in (("port", 1, 65535), ("batch_size", 1, None)):
            value = getattr(self, name)
            if (isinstance(value, bool) or not isinstance(value, int) or value < low
                    or (high is not None and value > high)):
                bound = f"in [{low}, {high}]" if high else f">= {low}"
                raise ConfigError(f"must be an int {bound}; got {value!r}", path=name)
        if importlib.util.find_spec("chromadb") is None:
            raise MissingDependencyError(
                "index 'chroma' needs the Python module 'chromadb'; "
                "install it with: pip install 'ragkit[chroma]'"
            )
        # Connection state is not config: plain attributes, outside the fields and equality.
        self._client: Any = None
        self._col: Any = None
        self._close: Any = None  # weakref.finalize that closes the client
        self._dim: int | None = None
        self._info: dict[str, Any] = {}
        self._info_saved = "{}"  # the info JSON last read from or written to the collection

    # -- connection ------------------------------------------------------------------------------

    def _connect(self, *, create: bool = True) -> Any:
        if self._col is not None:
            return self._col
        chromadb = require("chromadb", extra="chroma", component="index 'chroma'")
        errors = require("chromadb.errors", extra="chroma", component="index 'chroma'")
        where = self._where_text()
        held = None
        if self.host is not None:
            try:
                client = chromadb.HttpClient(host=self.host, port=self.port)
            except Exception as exc:  # httpx / chroma raise several types for "not there"
                raise ChromaConnectionError(
                    f"index 'chroma': no Chroma server answers at {where} ({exc}); start one with "
                    f"`chroma run --path DIR --host {self.host} --port {self.port}`"
                ) from None
            name = self.collection
        elif self.path is not None:
            held = os.path.abspath(self.path)  # one client per folder, however it is spelled
            client = chromadb.PersistentClient(path=held)
            name = self.collection
        else:
            client = chromadb.EphemeralClient()  # shared by the process: a name of our own
            name = f"{self.collection[:400]}-mem{next(_ephemeral)}"
        drop = name if self.path is None and self.host is None else None
        if held is not None:
            HELD_OPEN[held] = HELD_OPEN.get(held, 0) + 1
        self._close = weakref.finalize(self, _release, client, held, drop)
        try:
            if create:
                col = client.get_or_create_collection(
                    name, embedding_function=None,
                    configuration={"hnsw": {"space": self.metric}},
                    metadata={"ragkit:format": FORMAT, "ragkit:version": VERSION,
                              "ragkit:info": "{}"},
                )
            else:
                try:
                    col = client.get_collection(name, embedding_function=None)
                except errors.NotFoundError:
                    raise IndexFileError(
                        f"{where}: holds no Chroma collection {self.collection!r}"
                    ) from None
            meta = dict(col.metadata or {})
            if meta.get("ragkit:format") != FORMAT:
                raise IndexMismatchError(
                    f"{where}: collection {self.collection!r} was not made by ragkit's chroma "
                    "index (no ragkit:format metadata); choose another collection name"
                )
            if meta.get("ragkit:version") != VERSION:
                raise IndexMismatchError(
                    f"{where}: collection {self.collection!r} has format version "
                    f"{meta.get('ragkit:version')!r}; this ragkit reads version {VERSION}"
                )
            space = _space(col)
            if space != self.metric:
                raise IndexMismatchError(
                    f"{where}: collection {self.collection!r} uses metric {space!r}; this index "
                    f"is configured with metric {self.metric!r}"
                )
        except BaseException:
            self._close()
            raise
        self._client, self._col = client, col
        self._read_meta(meta)
        return col

    def close(self) -> None:
        """Release the Chroma client (an in-memory collection is dropped); using the index again
        reconnects."""
        if self._close is not None:
            self._close()
        self._client = self._col = self._close = None

    def persists_writes(self, folder: str | os.PathLike[str]) -> bool:
        """Whether each write is already durable in what a save to ``folder`` points at: a
        server's collection, or embedded data that lives under ``folder``."""
        if self.host is not None:
            return True
        if self.path is None:
            return False
        own, target = os.path.abspath(self.path), os.path.abspath(folder)
        return own == target or own.startswith(target + os.sep)

    @property
    def concurrent_writers(self) -> bool:
        """Whether many processes may write this index at once: a Chroma server can, an embedded
        client cannot (distributed ingestion then writes through its driver)."""
        return self.host is not None

    def _where_text(self) -> str:
        if self.host is not None:
            return f"http://{self.host}:{self.port}"
        return self.path if self.path is not None else "(in memory)"

    def _read_meta(self, meta: Mapping[str, Any]) -> None:
        dim = meta.get("ragkit:dim")
        self._dim = dim if isinstance(dim, int) else None
        raw = meta.get("ragkit:info") or "{}"
        try:
            info = json.loads(raw)
        except ValueError:
            info = None
        if not isinstance(info, dict):
            raise IndexMismatchError(
                f"{self._where_text()}: collection {self.collection!r} has invalid ragkit:info "
                f"metadata {raw[:80]!r}"
            )
        self._info, self._info_saved = info, json.dumps(info, sort_keys=True)

    def _refresh_dim(self) -> None:
        """Before the first add seen by this client: another client may have set the dim."""
        if self._dim is None:
            meta = self._client.get_collection(self._col.name, embedding_function=None).metadata
            dim = (meta or {}).get("ragkit:dim")
            self._dim = dim if isinstance(dim, int) else None

    def _write_meta(self, **changes: Any) -> None:
        """Update the collection metadata, starting from the server's current copy (another
        client may have written it since this one connected)."""
        fresh = self._client.get_collection(self._col.name, embedding_function=None)
        meta = dict(fresh.metadata or {})
        meta.update(changes)
        self._col.modify(metadata=meta)

    def _sync_info(self) -> None:
        text = json.dumps(self._info, sort_keys=True)
        if text != self._info_saved:
            self._write_meta(**{"ragkit:info": text})
            self._info_saved = text

    @property
    def info(self) -> dict[str, Any]:
        """What the index was built with (set by the pipeline), kept as JSON in the collection's
        metadata: written on the next ``add``, ``delete`` or ``save``; re-read from the
        collection on access while this client has no unwritten change (another process may
        have written it)."""
        self._connect()
        if json.dumps(self._info, sort_keys=True) == self._info_saved:
            self._read_meta(self._client.get_collection(self._col.name,
                                                        embedding_function=None).metadata or {})
        return self._info

    @info.setter
    def info(self, value: dict[str, Any]) -> None:
        self._connect()
        self._info = dict(value)

    # -- contents ------------------------------------------------------------------------------

    @reads
    def __len__(self) -> int:
        return self._connect().count()

    @property
    def dim(self) -> int | None:
        """The collection's vector dimension, or ``None`` before the first add. Chroma keeps it
        once set, even when every chunk is deleted."""
        self._connect()
        return self._dim

    @reads
    def chunks(self) -> Iterator[Chunk]:
        """The stored chunks in Chroma's order (insertion order, for the embedded clients),
        fetched a page of ``batch_size`` at a time."""
        col = self._connect()
        offset, size = 0, self._batch()
        while True:
            got = col.get(limit=size, offset=offset, include=["documents", "metadatas"])
            for cid, text, meta in zip(got["ids"], got["documents"], got["metadatas"]):
                yield decode_chunk(cid, text, meta)
            if len(got["ids"]) < size:
                return
            offset += size

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """The stored chunks of one document, in document order."""
        got = self._connect().get(where={FIELD + "doc_id": doc_id},
                                  include=["documents", "metadatas"])
        chunks = [decode_chunk(*r) for r in zip(got["ids"], got["documents"], got["metadatas"])]
        return sorted(chunks, key=lambda c: (c.start, c.end))

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        """The ``doc_hash`` metadata stored with the document's chunks, if it is indexed."""
        got = self._connect().get(where={FIELD + "doc_id": doc_id}, limit=1,
                                  include=["metadatas"])
        if not got["ids"]:
            return None
        return decode_metadata(got["metadatas"][0]).get("doc_hash")

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None:
        """Store ``chunks`` with their vectors ``vecs`` (``(len(chunks), dim)``)."""
        chunks = check_chunks(chunks)
        col = self._connect()
        self._refresh_dim()
        vecs = check_aligned(chunks, vecs, self._dim)
        self._sync_info()
        if not chunks:
            return
        if self.metric == "cosine":
            vecs = normalise(vecs)
        last = {c.id: i for i, c in enumerate(chunks)}  # the same id twice: the last one wins
        rows = sorted(last.values())
        records = [encode_chunk(chunks[i]) for i in rows]  # every chunk checked before any write
        size = self._batch()
        for start in range(0, len(rows), size):
            batch = rows[start : start + size]
            metas = records[start : start + size]
            ids = [chunks[i].id for i in batch]
            # An upsert merges metadata into the old record's: clear the keys it no longer has.
            old = col.get(ids=ids, include=["metadatas"])
            stale = dict(zip(old["ids"], old["metadatas"]))
            metas = [m | {key: None for key in (stale.get(cid) or {}) if key not in m}
                     for cid, m in zip(ids, metas)]
            col.upsert(ids=ids, embeddings=vecs[batch], metadatas=metas,
                       documents=[chunks[i].text for i in batch])
        if self._dim is None:
            self._dim = vecs.shape[1]
            self._write_meta(**{"ragkit:dim": self._dim})

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of the given documents; returns how many chunks were removed."""
        if isinstance(doc_ids, str):
            raise TypeError("delete takes a sequence of document ids, not a single str")
        docs = [d for d in dict.fromkeys(doc_ids) if isinstance(d, str)]
        col = self._connect()
        self._sync_info()
        removed = 0
        size = self._batch()
        for start in range(0, len(docs), 100):
            where = {FIELD + "doc_id": {"$in": docs[start : start + 100]}}
            ids = col.get(where=where, include=[])["ids"]
            for i in range(0, len(ids), size):
                col.delete(ids=ids[i : i + size])
            removed += len(ids)
        return removed

    # -- search --------------------------------------------------------------------------------

    @reads
    def search(self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None,
               queries: Sequence[str] | None = None) -> list[list[Hit]]:
        """The ``k`` best hits for each query row, with ``filter`` and ``queries`` as in
        ``MemoryIndex.search``."""
        k = check_k(k)
        q = query_rows(query_vecs)
        col = self._connect()
        self._refresh_dim()
        q = self._check_vecs(q, what="query vectors")
        where = where_clause(filter)
        empty: list[list[Hit]] = [[] for _ in range(q.shape[0])]
        if k == 0 or where is NOTHING or self._dim is None or col.count() == 0:
            return empty
        if self.metric == "cosine":
            q = normalise(q)
        out = []
        size = self._batch()
        for start in range(0, q.shape[0], size):
            got = col.query(query_embeddings=q[start : start + size], n_results=int(k),
                            where=where, include=["documents", "metadatas", "distances"])
            for ids, texts, metas, dists in zip(got["ids"], got["documents"], got["metadatas"],
                                                got["distances"]):
                out.append([
                    Hit(chunk=decode_chunk(cid, text, meta), score=float(1.0 - dist), rank=rank)
                    for rank, (cid, text, meta, dist) in enumerate(zip(ids, texts, metas, dists))
                ])
        return out

    # -- helpers -------------------------------------------------------------------------------

    def _batch(self) -> int:
        return max(1, min(self.batch_size, self._client.get_max_batch_size()))

    def _check_vecs(self, vecs: Any, *, what: str) -> np.ndarray:
        return check_vecs(vecs, self._dim, what=what)


def _space(col: Any) -> str | None:
    """The collection's distance space. Chroma records ``embedding_function=None`` as a
    "legacy" function config and warns about it on every read: that is the setting we want."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", "legacy embedding function config", DeprecationWarning)
        return ((col.configuration or {}).get("hnsw") or {}).get("space")


def _release(client: Any, held: str | None, drop: str | None) -> None:
    """Close a client (the finalizer of a ChromaIndex: it must not reference the index)."""
    if held is not None:
        HELD_OPEN[held] -= 1
        if not HELD_OPEN[held]:
            del HELD_OPEN[held]
    try:
        if drop is not None:
            client.delete_collection(drop)
    except Exception:  # interpreter shutdown: the in-memory data goes away with the process
        log.debug("could not drop in-memory collection %s", drop, exc_info=True)
    client.close()


# -- chunks <-> Chroma records ------------------------------------------------------------------
