"""Saving and loading a ``FaissIndex`` as a folder of plain files (see the layout in
``ragkit.retrieval.faiss_index``), and the checks that a loaded folder is whole and consistent.

A mixin of ``FaissIndex``; it must not pickle, and it must not change what a loaded index
returns compared with the one that was saved.
"""

from __future__ import annotations

import os
from dataclasses import asdict, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ragkit.concurrency import reads
from ragkit.errors import ConfigError
from ragkit.retrieval.faiss_structures import faiss_module
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_count_dim,
    check_save_target,
    write_chunks_jsonl,
    read_chunks,
    read_meta,
    saving,
    sha256_file,
    write_meta,
)

if TYPE_CHECKING:
    from ragkit.retrieval.faiss_index import FaissIndex

FORMAT = "ragkit.faiss_index"
VERSION = 1


class FaissPersistence:
    """``save`` and ``load`` of a ``FaissIndex``."""

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to folder ``path`` (replacing an index saved there before)."""
        faiss = faiss_module()
        path = Path(path)
        check_save_target(path)
        labels = np.fromiter(self._labels.values(), dtype=np.int64, count=len(self))

        with saving(path) as tmp:
            files = ["chunks.jsonl", "labels.npy"]
            write_chunks_jsonl(self.chunks(), tmp / "chunks.jsonl", path)  # streamed
            np.save(tmp / "labels.npy", labels, allow_pickle=False)
            if self._index is not None:
                faiss.write_index(self._index, str(tmp / "index.faiss"))
                files.append("index.faiss")
            if self._refine is not None:
                faiss.write_index(self._refine, str(tmp / "refine.faiss"))
                files.append("refine.faiss")
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "config": asdict(self),
                "dim": self._dim if self._index is not None else None,
                "count": len(self),
                "tombstones": len(self._dead),
                "trained": self._trained,
                "trained_on": self._trained_on,
                "next_label": self._next,
                "info": self.info,
                "sha256": {name: sha256_file(tmp / name) for name in files},
            }
            write_meta(tmp, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FaissIndex:
        """Read an index saved by ``save``; raises ``IndexFileError`` naming ``path`` if it is
        missing, corrupted or inconsistent."""
        faiss = faiss_module()
        path = Path(path)
        meta = _read_meta(path, cls)
        for name, digest in meta["sha256"].items():
            if sha256_file(path / name) != digest:
                raise IndexFileError(
                    f"{path / name}: checksum does not match meta.json; the file is corrupted or "
                    "was changed after saving"
                )
        try:
            index = cls(**meta["config"])
        except (ConfigError, TypeError) as exc:
            raise IndexFileError(f"{path / 'meta.json'}: invalid config ({exc})") from None
        count, dim = meta["count"], meta["dim"]
        chunks = read_chunks(path / "chunks.jsonl")
        try:
            labels = np.load(path / "labels.npy", allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise IndexFileError(
                f"{path / 'labels.npy'}: not a readable .npy array ({exc})"
            ) from None
        if len(chunks) != count or labels.dtype != np.int64 or labels.shape != (count,):
            raise IndexFileError(
                f"{path}: meta.json says {count} chunks; chunks.jsonl has {len(chunks)} and "
                f"labels.npy holds {labels.dtype} {labels.shape}"
            )
        index._reset(dim)
        index._next = meta["next_label"]
        index.info = dict(meta.get("info") or {})
        index._trained = bool(meta["trained"])
        # absent from indexes saved before retraining existed: count them as trained on all
        index._trained_on = meta.get("trained_on", count if index._trained else 0)
        if "index.faiss" in meta["sha256"]:
            index._index = _read_index(faiss, path / "index.faiss")
        if "refine.faiss" in meta["sha256"]:
            index._refine = _read_index(faiss, path / "refine.faiss")
        for chunk, label in zip(chunks, labels.tolist()):
            if chunk.id in index._labels or label in index._chunk or not 0 <= label < index._next:
                raise IndexFileError(
                    f"{path / 'chunks.jsonl'}: chunk {chunk.id!r} or its label {label} appears "
                    "twice or is out of range"
                )
            index._labels[chunk.id] = label
            index._chunk[label] = chunk
            index._by_doc.setdefault(chunk.doc_id, set()).add(chunk.id)
            index._docs[chunk.doc_id] = chunk.metadata.get("doc_hash")
        index._check_loaded(path, meta, labels)
        return index

    def _check_loaded(self, path: Path, meta: dict[str, Any], labels: np.ndarray) -> None:
        faiss = faiss_module()
        where = path / "index.faiss"
        if self._index is None:
            if meta["count"]:
                raise IndexFileError(f"{where}: missing, but meta.json says {meta['count']} chunks")
            return
        want_ivf = self.kind == "ivfpq" and self._trained
        if want_ivf:  # read_index returns the concrete type (re-wrapping it would free it)
            ok = isinstance(self._index, faiss.IndexIVFPQ)
        else:
            ok = isinstance(self._index, faiss.IndexIDMap2)
            if ok:
                inner = faiss.downcast_index(self._index.index)
                ok = isinstance(inner, faiss.IndexHNSWFlat if self.kind == "hnsw"
                                else faiss.IndexFlatIP)
        if not ok:
            raise IndexFileError(f"{where}: not the faiss index a {self.kind!r} index writes")
        if self._index.d != self._dim:
            raise IndexFileError(f"{where}: holds dim {self._index.d}; meta.json says {self._dim}")
        if want_ivf:
            if self._index.ntotal != len(labels):
                raise IndexFileError(
                    f"{where}: holds {self._index.ntotal} vectors; meta.json says {len(labels)}"
                )
        else:
            stored = faiss.vector_to_array(self._index.id_map)  # (ntotal,)
            extra = np.setdiff1d(stored, labels)
            if len(np.setdiff1d(labels, stored)) or (self.kind != "hnsw" and len(extra)):
                raise IndexFileError(f"{where}: its ids do not match labels.npy")
            if len(extra) != meta["tombstones"]:
                raise IndexFileError(
                    f"{where}: holds {len(extra)} deleted vectors; meta.json says "
                    f"{meta['tombstones']}"
                )
            self._dead = set(extra.tolist())
        if self._refine is not None and self._refine.ntotal != len(labels):
            raise IndexFileError(
                f"{path / 'refine.faiss'}: holds {self._refine.ntotal} vectors; "
                f"meta.json says {len(labels)}"
            )


def _read_index(faiss: Any, file: Path) -> Any:
    try:
        return faiss.read_index(str(file))
    except RuntimeError as exc:
        raise IndexFileError(f"{file}: not a readable faiss index ({exc})") from None


def _read_meta(path: Path, cls: type) -> dict[str, Any]:
    file = path / "meta.json"
    meta = read_meta(path, FORMAT, VERSION)
    config = meta.get("config")
    known = {f.name for f in fields(cls)}
    if not isinstance(config, dict) or not set(config) <= known:
        raise IndexFileError(f"{file}: config must be a mapping of {', '.join(sorted(known))}")
    check_count_dim(meta, file)
    for key in ("tombstones", "next_label"):
        if not isinstance(meta.get(key), int) or meta[key] < 0:
            raise IndexFileError(f"{file}: {key} must be an int >= 0; got {meta.get(key)!r}")
    if not isinstance(meta.get("trained"), bool):
        raise IndexFileError(f"{file}: trained must be true or false")
    if "trained_on" in meta and (not isinstance(meta["trained_on"], int)
                                 or isinstance(meta["trained_on"], bool) or meta["trained_on"] < 0):
        raise IndexFileError(f"{file}: trained_on must be an int >= 0; got {meta['trained_on']!r}")
    sums = meta.get("sha256")
    required = {"chunks.jsonl", "labels.npy"}
    allowed = required | {"index.faiss", "refine.faiss"}
    if (not isinstance(sums, dict) or not required <= set(sums) or not set(sums) <= allowed
            or not all(isinstance(v, str) for v in sums.values())):
        raise IndexFileError(f"{file}: missing or unknown sha256 checksums (files: "
                             f"{', '.join(sorted(allowed))})")
    return meta
