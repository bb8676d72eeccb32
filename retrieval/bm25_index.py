"""A BM25 keyword index over chunk texts, scored by the ``bm25s`` library.

It implements the same ``Index`` protocol as the vector indexes, but it scores the query *texts*
(``search(..., queries=[...])``) and ignores vectors: ``add(chunks, vecs)`` accepts ``None`` or
any array for ``vecs``, and ``search`` accepts ``None`` for ``query_vecs``.

Costs. ``add`` and ``delete`` only tokenize (``O(chars)`` of the added chunks) and mark the
index stale; bm25s indexes are static, so the next ``search`` rebuilds the whole bm25s index and
its postings from the stored tokens, ``O(total tokens)`` (about a second per million tokens).
Interleaving single adds with searches therefore costs one rebuild per search: add in batches.

A search returns only chunks that contain at least one query term (after lowercasing, stopword
removal and stemming), so it may return fewer than ``k`` hits, or none. Tokens are bm25s's
default pattern, runs of two or more word characters (``(?u)\\b\\w\\w+\\b``): one-letter words
are dropped and a run of CJK characters without spaces is a single token.

Saved as a folder of plain files, never a pickle::

    meta.json       format, version, the config, count, info and the sha256 of chunks.jsonl
    chunks.jsonl    one chunk per line: doc_id, start, end, text, index, metadata

The bm25s matrices are not saved: ``load`` re-tokenizes the texts (``O(chars)``) and the first
search rebuilds the index, so a saved index never disagrees with the installed bm25s.

Thread safety: many readers and one writer at a time, through the readers-writer lock of
``ragkit.concurrency`` around every public method (see there for why a lock and not
copy-on-write); ``replace`` swaps a document's chunks in one write.
"""

from __future__ import annotations

import importlib.util
import os
import threading
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragkit._deps import require
from ragkit.concurrency import Guarded, reads, writes
from ragkit.config import build_dataclass, to_config
from ragkit.errors import ConfigError, MissingDependencyError
from ragkit.retrieval.base import filter_rows
from ragkit.retrieval.index_files import (
    IndexFileError,
    check_chunks,
    check_save_target,
    write_chunks_jsonl,
    read_chunks,
    read_meta,
    saving,
    sha256_file,
    write_meta,
)
from ragkit.types import Chunk, Hit

FORMAT = "ragkit.bm25_index"
VERSION = 1
METHODS = ("lucene", "robertson", "atire", "bm25l", "bm25+")
_COMPONENT = "index 'bm25'"


@dataclass(kw_only=True)
class BM25Index(Guarded):
    """Okapi BM25 over chunk texts (bm25s).

    ``k1`` (term-frequency saturation, >= 0), ``b`` (length normalisation, in [0, 1]) and
    ``method`` (the bm25s variant: ``lucene``, ``robertson``, ``atire``, ``bm25l``, ``bm25+``;
    ``delta`` is used only by the last two) set the scoring. ``lowercase``, ``stopwords``
    (``None`` or ``"en"``) and ``stemmer`` (``None`` or ``"english"``, needs PyStemmer) set the
    tokenization of chunks and queries alike. Scores are higher-is-better; ties go to the
    earlier-added chunk. Adding a chunk whose id is present replaces it in place.
    """

    k1: float = 1.5
    b: float = 0.75
    method: Literal["lucene", "robertson", "atire", "bm25l", "bm25+"] = "lucene"
    delta: float = 0.5
    lowercase: bool = True
    stopwords: Literal["en"] | None = "en"
    stemmer: Literal["english"] | None = None

    def __post_init__(self) -> None:
        for name in ("k1", "b", "delta"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(f"must be a number >= 0; got {value!r}", path=name)
            setattr(self, name, float(value))
        if self.b > 1:
            raise ConfigError(f"must be in [0, 1]; got {self.b!r}", path="b")
        if self.method not in METHODS:
            raise ConfigError(
                f"unknown BM25 variant {self.method!r}; choose one of {', '.join(METHODS)}",
                path="method",
            )
        if not isinstance(self.lowercase, bool):
            raise ConfigError(f"must be true or false; got {self.lowercase!r}", path="lowercase")
        if self.stopwords not in (None, "en"):
            raise ConfigError(f"must be null or 'en'; got {self.stopwords!r}", path="stopwords")
        if self.stemmer not in (None, "english"):
            raise ConfigError(
                f"must be null or 'english' (PyStemmer); got {self.stemmer!r}", path="stemmer"
            )
        _check_installed("bm25s", "pip install 'ragkit[bm25]'", _COMPONENT)
        if self.stemmer is not None:
            _check_installed("Stemmer", "pip install PyStemmer (or 'ragkit[bm25]')",
                             f"{_COMPONENT} with stemmer={self.stemmer!r}")
        # Contents are not config: plain attributes, outside the dataclass fields and equality.
        self._chunks: list[Chunk] = []
        self._tokens: list[list[str]] = []  # aligned with _chunks
        self._row: dict[str, int] = {}  # chunk id -> row
        self._docs: dict[str, str | None] = {}  # doc id -> its doc_hash metadata
        self.info: dict[str, Any] = {}  # what the index was built with (set by the pipeline)
        self._stale = True  # the bm25s index below must be rebuilt before the next search
        self._bm25: Any = None  # bm25s.BM25 over _tokens, or None when no chunk has a token
        self._postings: dict[str, np.ndarray] = {}  # token -> rows holding it, ascending
        self._rebuilding = threading.Lock()  # one reader rebuilds a stale index, others wait

    # -- tokenization ---------------------------------------------------------------------------

    @cached_property
    def _bm25s(self) -> Any:
        return require("bm25s", extra="bm25", component=_COMPONENT)

    @cached_property
    def _stemmer(self) -> Any:
        if self.stemmer is None:
            return None
        stemmer = require("Stemmer", extra="bm25", component=f"{_COMPONENT} with stemmer="
                          f"{self.stemmer!r} (the PyStemmer package)")  # pip name: PyStemmer
        return stemmer.Stemmer(self.stemmer)

    def tokenize(self, texts: Sequence[str]) -> list[list[str]]:
        """The tokens BM25 sees for each text (the same for chunks and queries)."""
        if not texts:
            return []
        return self._bm25s.tokenize(
            list(texts), lower=self.lowercase, stopwords=self.stopwords or [],
            stemmer=self._stemmer, return_ids=False, show_progress=False,
        )

    # -- contents ------------------------------------------------------------------------------

    @reads
    def __len__(self) -> int:
        return len(self._chunks)

    @reads
    def chunks(self) -> Iterator[Chunk]:
        """The stored chunks in insertion order (a replaced chunk keeps its place)."""
        return iter(list(self._chunks))

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: Any = None) -> None:
        """Store ``chunks`` (``vecs`` is ignored: BM25 scores text). Tokenizes now; the bm25s
        index is rebuilt at the next search."""
        chunks = check_chunks(chunks)
        if not chunks:
            return
        tokens = self.tokenize([c.text for c in chunks])
        for chunk, toks in zip(chunks, tokens):
            row = self._row.get(chunk.id)
            if row is None:
                self._row[chunk.id] = len(self._chunks)
                self._chunks.append(chunk)
                self._tokens.append(toks)
            else:
                self._chunks[row] = chunk
                self._tokens[row] = toks
            self._docs[chunk.doc_id] = chunk.metadata.get("doc_hash")
        self._stale = True

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """The stored chunks of one document, in document order."""
        mine = (c for c in self._chunks if c.doc_id == doc_id)
        return sorted(mine, key=lambda c: (c.start, c.end))

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        """The ``doc_hash`` metadata stored with the document's chunks, if it is indexed."""
        return self._docs.get(doc_id)

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of the given documents; returns how many chunks were removed."""
        if isinstance(doc_ids, str):
            raise TypeError("delete takes a sequence of document ids, not a single str")
        gone = set(doc_ids)
        keep = [i for i, c in enumerate(self._chunks) if c.doc_id not in gone]
        removed = len(self._chunks) - len(keep)
        if removed:
            self._chunks = [self._chunks[i] for i in keep]
            self._tokens = [self._tokens[i] for i in keep]
            self._row = {c.id: i for i, c in enumerate(self._chunks)}
            for doc_id in gone:
                self._docs.pop(doc_id, None)
            self._stale = True
        return removed

    # -- search --------------------------------------------------------------------------------

    @reads
    def search(
        self,
        query_vecs: Any,
        k: int,
        filter: Mapping[str, Any] | None = None,
        queries: Sequence[str] | None = None,
    ) -> list[list[Hit]]:
        """The ``k`` best hits for each text in ``queries`` (``query_vecs`` is ignored; it may
        be ``None``). Only chunks sharing a term with the query are returned.

        ``filter`` keeps chunks whose ``metadata[key] == value`` for every item (``"doc_id"``
        matches ``chunk.doc_id``; a list or tuple value means any of its values), as in
        ``MemoryIndex``.
        """
        if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
            raise ValueError(f"k must be an int >= 0; got {k!r}")
        queries = _check_queries(queries, query_vecs, type(self).__name__)
        allowed = filter_rows(self._chunks, filter)  # (r,) rows, ascending, or None for all
        if not self._chunks or k == 0:
            return [[] for _ in queries]
        with self._rebuilding:  # readers run together; the first after a write rebuilds
            self._rebuild()
        return [self._search_one(toks, k, allowed) for toks in self.tokenize(queries)]

    def _search_one(self, tokens: list[str], k: int, allowed: np.ndarray | None) -> list[Hit]:
        if self._bm25 is None:
            return []
        vocab = self._bm25.vocab_dict
        ids = [vocab[t] for t in tokens if t in self._postings]  # duplicates count, as in bm25s
        if not ids:
            return []
        rows = np.unique(np.concatenate(
            [self._postings[t] for t in set(tokens) if t in self._postings]
        ))  # (r,) rows holding a query term
        if allowed is not None:
            rows = np.intersect1d(rows, allowed, assume_unique=True)
        if not len(rows):
            return []
        scores = np.asarray(self._bm25.get_scores_from_ids(ids))[rows]  # (r,)
        order = np.lexsort((rows, -scores))[:k]  # by score descending, then row ascending
        return [
            Hit(chunk=self._chunks[rows[i]], score=float(scores[i]), rank=rank)
            for rank, i in enumerate(order.tolist())
        ]

    def _rebuild(self) -> None:
        """Rebuild the bm25s index and the postings over all stored tokens: ``O(total tokens)``."""
        if not self._stale:
            return
        postings: dict[str, list[int]] = {}
        for row, toks in enumerate(self._tokens):
            for t in set(toks):
                postings.setdefault(t, []).append(row)
        self._postings = {t: np.asarray(rows, dtype=np.intp) for t, rows in postings.items()}
        if postings:
            bm25 = self._bm25s.BM25(
                k1=self.k1, b=self.b, delta=self.delta, method=self.method, backend="numpy"
            )
            bm25.index(self._tokens, show_progress=False)
            self._bm25 = bm25
        else:  # no chunk has a token: every search is empty
            self._bm25 = None
        self._stale = False

    # -- save / load ---------------------------------------------------------------------------

    @reads
    def save(self, path: str | os.PathLike[str]) -> None:
        """Write the index to folder ``path`` (replacing an index saved there before); the
        folder appears complete or not at all."""
        path = Path(path)
        check_save_target(path)
        with saving(path) as tmp:
            write_chunks_jsonl(self._chunks, tmp / "chunks.jsonl", path)  # streamed
            meta = {
                "format": FORMAT,
                "version": VERSION,
                "config": to_config(self),
                "count": len(self._chunks),
                "info": self.info,
                "sha256": {"chunks.jsonl": sha256_file(tmp / "chunks.jsonl")},
            }
            write_meta(tmp, meta)

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> BM25Index:
        """Read an index saved by ``save``; raises ``IndexFileError`` naming ``path`` if it is
        missing, corrupted or inconsistent."""
        path = Path(path)
        meta = read_meta(path, FORMAT, VERSION)
        file = path / "meta.json"
        config, count = meta.get("config"), meta.get("count")
        if not isinstance(config, dict):
            raise IndexFileError(f"{file}: missing the index config")
        if not isinstance(count, int) or count < 0:
            raise IndexFileError(f"{file}: count must be an int >= 0; got {count!r}")
        sums = meta.get("sha256")
        if not isinstance(sums, dict) or not isinstance(sums.get("chunks.jsonl"), str):
            raise IndexFileError(f"{file}: missing the sha256 checksum of chunks.jsonl")
        if sha256_file(path / "chunks.jsonl") != sums["chunks.jsonl"]:
            raise IndexFileError(
                f"{path / 'chunks.jsonl'}: checksum does not match meta.json; the file is "
                "corrupted or was changed after saving"
            )
        try:
            index = build_dataclass(cls, config)
        except ConfigError as exc:
            raise IndexFileError(f"{file}: invalid index config ({exc})") from None
        chunks = read_chunks(path / "chunks.jsonl")
        if len(chunks) != count:
            raise IndexFileError(
                f"{path / 'chunks.jsonl'}: meta.json says {count} chunks; "
                f"the file has {len(chunks)}"
            )
        if len({c.id for c in chunks}) != count:
            raise IndexFileError(f"{path / 'chunks.jsonl'}: the same chunk id appears twice")
        index.add(chunks)
        index.info = dict(meta.get("info") or {})
        return index


# -- helpers shared with the hybrid index (candidates for a common retrieval module) -------------


def _check_installed(module: str, how: str, component: str) -> None:
    """Fail when building, not at the first search: a cheap look-up, nothing is imported."""
    try:
        found = importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):  # a None placeholder in sys.modules, a broken package
        found = False
    if not found:
        raise MissingDependencyError(
            f"{component} needs the Python module {module!r}, which is not installed; install "
            f"it with: {how}"
        )


def _check_queries(queries: Any, query_vecs: Any, who: str) -> list[str]:
    if queries is None:
        raise TypeError(
            f"{who}.search needs the query texts: pass queries=[...] (one str per query); "
            "BM25 scores text, not vectors"
        )
    if isinstance(queries, str):
        raise TypeError(f"{who}.search: queries must be a sequence of str, not a single str; "
                        "wrap it in a list")
    queries = list(queries)
    for q in queries:
        if not isinstance(q, str):
            raise TypeError(f"{who}.search: queries must be str; got {type(q).__name__}")
    if query_vecs is not None:
        q = np.asarray(query_vecs)
        m = 1 if q.ndim == 1 else q.shape[0]
        if m != len(queries):
            raise ValueError(
                f"{who}.search got {m} query vectors but {len(queries)} queries; they must align"
            )
    return queries
