"""Saving and loading a ``ChromaIndex``: ``save(path)`` writes ``path/chroma.json``, a pointer to
the Chroma collection (and, for an index not already kept in that folder, a copy of it under
``path/data``); ``load(path)`` reopens it.

A mixin of ``ChromaIndex`` (``ragkit.retrieval.chroma_index``); it must not change what a
loaded index returns compared with the one that was saved.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit._deps import require
from ragkit.concurrency import reads
from ragkit.errors import ConfigError
from ragkit.retrieval.index_files import (
    IndexFileError,
    StoreDamagedError,
    read_meta,
    saving,
)

if TYPE_CHECKING:
    from ragkit.retrieval.chroma_index import ChromaIndex

FORMAT = "ragkit.chroma_index"
VERSION = 1
POINTER = "chroma.json"  # save(path) writes path/chroma.json ...
DATA = "data"  # ... and, when it copies, a PersistentClient folder path/data
# persistent folders held open by ChromaIndex objects, by abspath (save refuses to overwrite one)
HELD_OPEN: dict[str, int] = {}


class ChromaPersistence:
    """``save`` and ``load`` of a ``ChromaIndex``."""

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write a pointer to this index to folder ``path`` (and copy the data there unless the
        data already lives under ``path`` or on a server); see the module docstring."""
        path = Path(path)
        if path.exists() and not path.is_dir():
            raise IndexFileError(f"{path}: exists and is not a folder; cannot save an index there")
        col = self._connect()
        self._sync_info()
        pointer: dict[str, Any] = {"format": FORMAT, "version": VERSION,
                                   "collection": self.collection, "metric": self.metric,
                                   "count": col.count(), "info": self._info}
        target = os.path.abspath(path)
        own = os.path.abspath(self.path) if self.path is not None else None
        if own is not None and (own == target or own.startswith(target + os.sep)):
            # The data already lives under path (it was loaded from there): point at it.
            pointer["path"] = os.path.relpath(own, target)
            tmp = path / f".{POINTER}.tmp"
            tmp.write_text(json.dumps(pointer, indent=2) + "\n", encoding="utf-8")
            os.replace(tmp, path / POINTER)
            return
        if path.is_dir() and any(path.iterdir()) and not (path / POINTER).exists():
            raise IndexFileError(
                f"{path}: folder is not empty and holds no saved index (no {POINTER}); "
                "refusing to overwrite it"
            )
        busy = [p for p in HELD_OPEN if p == target or p.startswith(target + os.sep)]
        if busy:
            raise IndexFileError(
                f"{path}: a ChromaIndex in this process has {busy[0]} open; close() it before "
                "saving over it"
            )
        with saving(path) as tmp:
            if self.host is not None:
                pointer |= {"host": self.host, "port": self.port}
            else:
                pointer["path"] = DATA
                self._copy_to(tmp / DATA)
            (tmp / POINTER).write_text(json.dumps(pointer, indent=2) + "\n", encoding="utf-8")

    def _copy_to(self, folder: Path) -> None:
        chromadb = require("chromadb", extra="chroma", component="index 'chroma'")
        client = chromadb.PersistentClient(path=str(folder))
        try:
            meta = {"ragkit:format": FORMAT, "ragkit:version": VERSION,
                    "ragkit:info": json.dumps(self._info, sort_keys=True)}
            if self._dim is not None:
                meta["ragkit:dim"] = self._dim
            dst = client.create_collection(
                self.collection, embedding_function=None,
                configuration={"hnsw": {"space": self.metric}}, metadata=meta,
            )
            offset, size = 0, self._batch()
            while True:
                got = self._col.get(limit=size, offset=offset,
                                    include=["embeddings", "documents", "metadatas"])
                if not got["ids"]:
                    break
                dst.add(ids=got["ids"], documents=got["documents"], metadatas=got["metadatas"],
                        embeddings=np.asarray(got["embeddings"], dtype=np.float32))
                offset += len(got["ids"])
        finally:
            client.close()

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> ChromaIndex:
        """Open the index that ``save`` pointed to from folder ``path``; raises
        ``IndexFileError`` naming the path if the pointer or the collection is missing."""
        path = Path(path)
        pointer = _read_pointer(path)
        common = {"collection": pointer["collection"], "metric": pointer["metric"]}
        try:
            if "host" in pointer:
                index = cls(host=pointer["host"], port=pointer["port"], **common)
            else:
                data = os.path.normpath(path / pointer["path"])
                if not os.path.isdir(data):
                    raise IndexFileError(f"{data}: the Chroma data folder {POINTER} names is "
                                         "missing")
                index = cls(path=data, **common)
        except ConfigError as exc:
            raise IndexFileError(f"{path / POINTER}: invalid settings ({exc})") from None
        errors = require("chromadb.errors", extra="chroma", component="index 'chroma'")
        fix = "rebuild it with `ragkit index SOURCES --out DIR --replace`"
        try:
            col = index._connect(create=False)
        except errors.ChromaError as exc:
            if index.path is None:
                raise IndexFileError(
                    f"{index._where_text()}: Chroma cannot open it ({exc})") from None
            raise StoreDamagedError(f"{index.path}: Chroma cannot open it ({exc}); {fix}",
                                    store=index.path) from None
        try:  # a read makes Chroma apply its own write log: a damaged store fails here, not later
            col.get(limit=1, include=[])
        except errors.ChromaError as exc:
            text = (f"{index._where_text()}: Chroma's store is damaged ({exc}; a kill during "
                    f"Chroma's own write can do this, chroma-core/chroma#7678); {fix}")
            index.close()
            if index.path is None:
                raise IndexFileError(text) from None
            raise StoreDamagedError(text, store=index.path) from None
        return index

    @classmethod
    def empty_beside(cls, path: str | os.PathLike[str]) -> ChromaIndex:
        """A new empty embedded index with the collection and metric saved in folder ``path``,
        its store a new folder ``path/data-<UTC time>`` (what ``path`` holds is left as it is;
        ``save(path)`` then points at the new store)."""
        import time

        path = Path(path)
        pointer = _read_pointer(path)
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        store, n = path / f"{DATA}-{stamp}", 1
        while store.exists():
            n += 1
            store = path / f"{DATA}-{stamp}-{n}"
        return cls(path=str(store), collection=pointer["collection"], metric=pointer["metric"])

    @reads
    def documents_with_vectors(self) -> list[tuple[list[Any], np.ndarray]]:
        """Per document: its chunks in document order and their stored vectors ``(n, dim)``
        (what the document log's copy starts from when a folder is first saved)."""
        from ragkit.retrieval.chroma_codec import decode_chunk

        col = self._connect()
        docs: dict[str, list[tuple[Any, np.ndarray]]] = {}
        offset, size = 0, self._batch()
        while True:
            got = col.get(limit=size, offset=offset,
                          include=["embeddings", "documents", "metadatas"])
            for cid, text, meta, vec in zip(got["ids"], got["documents"], got["metadatas"],
                                            got["embeddings"]):
                chunk = decode_chunk(cid, text, meta)
                docs.setdefault(chunk.doc_id, []).append((chunk, np.asarray(vec, np.float32)))
            if len(got["ids"]) < size:
                break
            offset += size
        out = []
        for pairs in docs.values():
            pairs.sort(key=lambda p: p[0].index)
            out.append(([c for c, _ in pairs], np.stack([v for _, v in pairs])))
        return out

    def keeps_store_in_folder(self) -> bool:
        """Whether a save keeps the data in the folder (embedded), not on a server."""
        return self.host is None


def _read_pointer(path: Path) -> dict[str, Any]:
    file = path / POINTER
    pointer = read_meta(path, FORMAT, VERSION, name=POINTER, kind="pointer")
    if ("host" in pointer) == ("path" in pointer):
        raise IndexFileError(f"{file}: must name exactly one of path and host")
    if "path" in pointer and not isinstance(pointer["path"], str):
        raise IndexFileError(f"{file}: path must be a str; got {pointer['path']!r}")
    for key in ("collection", "metric"):
        if not isinstance(pointer.get(key), str):
            raise IndexFileError(f"{file}: {key} must be a str; got {pointer.get(key)!r}")
    return pointer
