"""An index that also stores a vector for every sentence of its chunks, computed at index time.

``sentence-refine`` narrows each hit to the sentences whose cosine to the query clears a floor.
Embedding those sentences at query time costs ~25 model calls' worth of text per question, about
six times the query itself (benchmarks/README.md, "Retrieval levers"). This index moves that work
to indexing: ``add`` splits every chunk into sentences (``ragkit.retrieval.refiners
.sentence_spans``, the refiner's own rule), embeds each distinct sentence once (overlapping
chunks share theirs) and keeps the vectors by document and absolute character span. At query
time the refiner looks the spans up (``sentence_vectors``) and takes dot products; only a
sentence that is in no stored chunk whole (one crossing the edge of two merged chunks) is
embedded then.

Everything else (``search``, ``doc_chunks``, ``info``, ``doc_hash``...) is the ``inner`` index's.
``embedder`` must be the pipeline's (``RAGPipeline`` refuses another model: the query vector is
compared with these vectors). Saved as a folder::

    meta.json       format, version, embedder, batch_size, the inner index's registered name
    inner/          the inner index, saved by its own ``save``
    sentences.npz   doc ids, (doc row, start, end) spans, float32 vectors
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ragkit import registry
from ragkit.checks import check_int
from ragkit.concurrency import Guarded, reads, writes
from ragkit.config import COMPONENT_KIND, build, build_dataclass, to_config
from ragkit.errors import ConfigError, RagkitError
from ragkit.protocols import HasDocChunks, HasDocHash, ListsChunks, Persistent, RecordsInfo
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_save_target,
    read_meta,
    saving,
    write_meta,
)
from ragkit.retrieval.refiners import sentence_spans
from ragkit.types import Chunk, Hit

FORMAT = "ragkit.sentence_index"
VERSION = 1


@dataclass(kw_only=True)
class SentenceVectorIndex(Guarded):
    """``inner`` for search, plus a vector per sentence of the stored chunks (``embedder``)."""

    QUERY_TIME = frozenset()  # the inner index's settings change through ``inner.<key>``

    inner: Any = field(default_factory=lambda: {"name": "memory"},
                       metadata={COMPONENT_KIND: "index"})
    embedder: Any = field(default_factory=lambda: {"name": "sentence-transformers"},
                          metadata={COMPONENT_KIND: "embedder"})
    batch_size: int = 64

    def __post_init__(self) -> None:
        self.inner = build("index", self.inner, path="inner")
        if isinstance(self.inner, SentenceVectorIndex):
            raise ConfigError("a sentence-vectors index inside another adds nothing; give a "
                              "plain index (memory, faiss, bm25, hybrid...)", path="inner")
        self.embedder = build("embedder", self.embedder, path="embedder")
        check_int(self.batch_size, "batch_size", min=1)
        # contents, not config: doc id -> ({(start, end): row}, (rows, d) float32 vectors)
        self._units: dict[str, tuple[dict[tuple[int, int], int], np.ndarray]] = {}

    # -- the inner index's contents and settings -----------------------------------------------

    @property
    def info(self) -> dict[str, Any]:
        if not isinstance(self.inner, RecordsInfo):
            raise AttributeError(f"{type(self.inner).__name__} records no info")
        return self.inner.info

    @reads
    def __len__(self) -> int:
        return len(self.inner)

    @reads
    def chunks(self) -> Iterator[Chunk]:
        return self._inner_as(ListsChunks, "chunks").chunks()

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        return self._inner_as(HasDocChunks, "doc_chunks").doc_chunks(doc_id)

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        return self._inner_as(HasDocHash, "doc_hash").doc_hash(doc_id)

    def _inner_as(self, ability: type, what: str) -> Any:
        if not isinstance(self.inner, ability):
            raise RagkitError(f"sentence-vectors index: its inner index "
                              f"{type(self.inner).__name__} has no {what}")
        return self.inner

    @reads
    def search(self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None,
               queries: Sequence[str] | None = None) -> list[list[Hit]]:
        """The inner index's search (``queries`` passed on for indexes that read text)."""
        if queries is None:
            return self.inner.search(query_vecs, k, filter=filter)
        return self.inner.search(query_vecs, k, filter=filter, queries=queries)

    # -- writes --------------------------------------------------------------------------------

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None:
        """Add to the inner index, then embed the sentences of ``chunks`` not yet stored."""
        chunks = list(chunks)
        self.inner.add(chunks, vecs)
        new: dict[str, dict[tuple[int, int], str]] = {}  # doc -> span -> sentence text
        for c in chunks:
            have = self._units.get(c.doc_id, ({}, None))[0]
            for a, b in sentence_spans(c.text):
                span = (c.start + a, c.start + b)
                if span not in have:
                    new.setdefault(c.doc_id, {})[span] = c.text[a:b]
        texts = [t for spans in new.values() for t in spans.values()]
        if not texts:
            return
        parts = [np.asarray(self.embedder.embed(texts[i:i + self.batch_size]), dtype=np.float32)
                 for i in range(0, len(texts), self.batch_size)]
        embedded = np.concatenate(parts)  # (len(texts), d)
        at = 0
        for doc_id, spans in new.items():
            rows, old = self._units.get(doc_id, ({}, None))
            block = embedded[at:at + len(spans)]
            at += len(spans)
            rows = dict(rows)
            base = len(rows)
            for i, span in enumerate(spans):
                rows[span] = base + i
            self._units[doc_id] = (rows, block if old is None else np.concatenate([old, block]))

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        removed = self.inner.delete(doc_ids)
        for d in doc_ids:
            self._units.pop(d, None)
        return removed

    # -- what the refiner reads ----------------------------------------------------------------

    @reads
    def sentence_vectors(self, doc_id: str,
                         spans: Sequence[tuple[int, int]]) -> tuple[np.ndarray, np.ndarray]:
        """The stored vectors of ``spans`` (absolute ``(start, end)`` in document ``doc_id``):
        float32 ``(len(spans), d)`` and a bool ``(len(spans),)`` mask of those found (rows of
        spans not found are zero)."""
        rows, vecs = self._units.get(doc_id, ({}, None))
        at = np.array([rows.get((int(a), int(b)), -1) for a, b in spans], dtype=np.intp)
        found = at >= 0
        if vecs is None:
            return np.zeros((len(spans), 0), dtype=np.float32), found
        out = np.zeros((len(spans), vecs.shape[1]), dtype=np.float32)  # (n, d)
        out[found] = vecs[at[found]]
        return out, found

    @property
    def sentence_count(self) -> int:
        return sum(len(rows) for rows, _ in self._units.values())

    # -- save / load ---------------------------------------------------------------------------

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the inner index to ``path/inner`` and the sentence vectors beside it; the
        folder is replaced only once it is complete."""
        path = Path(path)
        if not isinstance(self.inner, Persistent):
            raise RagkitError(f"sentence-vectors index: the inner index "
                              f"{type(self.inner).__name__} cannot be saved to a folder")
        check_save_target(path)
        with saving(path) as tmp:
            self.inner.save(tmp / "inner")
            docs = sorted(self._units)
            spans = [(d, a, b, r) for d, doc in enumerate(docs)
                     for (a, b), r in self._units[doc][0].items()]
            dim = next((v.shape[1] for _, v in self._units.values()), 0)
            vecs = np.zeros((len(spans), dim), dtype=np.float32)  # (sentences, d)
            for i, (d, _, _, r) in enumerate(spans):
                vecs[i] = self._units[docs[d]][1][r]
            np.savez(tmp / "sentences.npz", docs=np.array(docs, dtype=str),
                     spans=np.array([s[:3] for s in spans], dtype=np.int64).reshape(-1, 3),
                     vecs=vecs)
            config = to_config(self)
            write_meta(tmp, {"format": FORMAT, "version": VERSION,
                             "config": {"embedder": config["embedder"],
                                        "batch_size": self.batch_size},
                             "inner": registry.name_of("index", type(self.inner)),
                             "sentences": len(spans)})

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> SentenceVectorIndex:
        path = Path(path)
        meta = read_meta(path, FORMAT, VERSION)
        file = path / "meta.json"
        config, name = meta.get("config"), meta.get("inner")
        if not isinstance(config, dict) or not isinstance(name, str):
            raise IndexFileError(f"{file}: missing the config or the inner index's name")
        try:
            inner_cls = registry.resolve("index", name)
        except ConfigError as exc:
            raise IndexFileError(f"{file}: inner: {exc}") from None
        if not issubclass(inner_cls, Persistent):
            raise IndexFileError(f"{file}: the inner index {name!r} cannot be loaded")
        inner = inner_cls.load(path / "inner")
        try:
            index = build_dataclass(cls, {**config, "inner": inner})
        except ConfigError as exc:
            raise IndexFileError(f"{file}: invalid config ({exc})") from None
        try:
            with np.load(path / "sentences.npz") as z:
                docs, spans, vecs = list(z["docs"]), z["spans"], z["vecs"]
        except (OSError, KeyError, ValueError) as exc:
            raise IndexFileError(f"{path / 'sentences.npz'}: unreadable ({exc})") from None
        if len(spans) != meta.get("sentences") or len(vecs) != len(spans):
            raise IndexFileError(f"{path}: sentences.npz holds {len(spans)} spans and "
                                 f"{len(vecs)} vectors; meta.json says {meta.get('sentences')!r}")
        for d, doc in enumerate(docs):
            mine = np.flatnonzero(spans[:, 0] == d)
            rows = {(int(spans[i, 1]), int(spans[i, 2])): j for j, i in enumerate(mine)}
            index._units[str(doc)] = (rows, np.ascontiguousarray(vecs[mine]))
        return index
