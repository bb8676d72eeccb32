"""A faiss vector index: exact inner product, HNSW or IVF-PQ, chosen by ``kind``.

Every stored vector gets a fresh int64 *label* (a counter, never reused); ragkit keeps the maps
label -> chunk and chunk id -> label, and faiss only ever sees labels. Re-adding a chunk id gives
it a new label and retires the old one, so the replaced vector can never come back.

``kind``:

- ``"flat"``: ``IndexIDMap2(IndexFlatIP)``, exact: the same hits and scores as ``MemoryIndex``
  (ties may come in either order).
- ``"hnsw"``: ``IndexIDMap2(IndexHNSWFlat)``. Faiss cannot remove vectors from an HNSW graph, so a
  deleted or replaced vector becomes a *tombstone*: it stays in the graph (keeping it connected),
  searches exclude it with an ``IDSelector``, and once tombstones outnumber half the live vectors
  the graph is rebuilt from the live ones (``compact()`` forces it).
- ``"ivfpq"``: ``IndexIVFPQ`` (8-bit codes, ``pq_m`` bytes per vector) with a hashtable direct
  map, so deletes and replacements remove vectors for real. Training needs data, so until
  ``train_size`` live vectors are stored they sit in an exact flat index (searches are exact
  meanwhile); the add that reaches ``train_size`` trains on everything stored so far (a sample of
  at most ``max(65536, 40 * nlist)`` vectors) and moves it into the IVF-PQ index. Lists trained
  on few vectors fit a grown index badly, so once the live vectors reach ``retrain_growth``
  (default 4) times the number trained on, the index retrains on all of them from their fp16
  copies (``retrain()`` does it on demand; with ``refine_factor=0`` there are no copies, and a
  warning says so once). With ``refine_factor > 0`` (the default) an fp16 copy of each
  vector is kept too: a search takes ``k * refine_factor`` candidates from the PQ codes and
  re-scores them with the fp16 vectors, which restores recall at the cost of 2 bytes per
  dimension per vector; ``refine_factor=0`` keeps only the PQ codes (smallest, least accurate).

Filters have the semantics of ``MemoryIndex``: a mapping of metadata key -> value or list of
values, ``"doc_id"`` matching the chunk's document. An approximate index can return fewer than
``k`` hits under a selective filter (the graph or the probed lists hold too few matches), so:
at most ``4096`` matching vectors are scored exactly, and any query that still comes back short
of ``min(k, matches)`` hits is re-run exactly over the matching vectors. A filter never silently
loses hits that exist.

Saved as a folder of plain files, never a pickle::

    meta.json       format, version, config, dim, count, the next label, info, sha256 of the files
    index.faiss     faiss.write_index of the main index (absent while nothing was ever added)
    refine.faiss    the fp16 vectors of a trained IVF-PQ index with refine_factor > 0
    labels.npy      int64 (count,), the label of each line of chunks.jsonl
    chunks.jsonl    one chunk per line, in chunks() order, as MemoryIndex writes them

Thread safety: many readers and one writer at a time, through the readers-writer lock of
``ragkit.concurrency`` around every public method (see there for why a lock and not
copy-on-write); ``replace`` swaps a document's chunks in one write.

This module holds the chunk bookkeeping and search; the faiss structures and training are in
``ragkit.retrieval.faiss_structures``, saving and loading in ``ragkit.retrieval.faiss_persist``.
"""

from __future__ import annotations

import importlib.util
import logging
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ragkit.checks import check_int
from ragkit.concurrency import Guarded, reads, writes
from ragkit.errors import ConfigError, MissingDependencyError
from ragkit.retrieval.base import filter_rows
from ragkit.retrieval.faiss_persist import FaissPersistence
from ragkit.retrieval.faiss_structures import FaissStructures, faiss_module
from ragkit.retrieval.index_files import (
    check_aligned,
    check_chunks,
    check_k,
    check_vecs,
    normalise,
    query_rows,
)
from ragkit.types import Chunk, Hit

log = logging.getLogger(__name__)

KINDS = ("flat", "hnsw", "ivfpq")
METRICS = ("cosine", "ip")
EXACT_SUBSET = 4096  # a filter matching at most this many vectors is scored exactly
_BLOCK = 16384  # vectors reconstructed at a time by the exact fallback


@dataclass(kw_only=True)
class FaissIndex(FaissStructures, FaissPersistence, Guarded):
    """Nearest-neighbour search over chunk vectors with faiss; see the module docstring.

    ``metric="cosine"`` L2-normalises stored and query vectors; ``"ip"`` uses the raw inner
    product. Scores are higher-is-better. Adding a chunk whose id is present replaces it.
    """

    # settings a saved index accepts as overrides at load time (RAGPipeline.load)
    QUERY_TIME = frozenset({"ef_search", "nprobe"})

    kind: Literal["flat", "hnsw", "ivfpq"] = "flat"
    metric: Literal["cosine", "ip"] = "cosine"
    # HNSW: graph degree, build-time and search-time beam widths
    hnsw_m: int = 32
    ef_construction: int = 200
    ef_search: int = 64
    # IVF-PQ: lists (None: round(4 * sqrt(n)) at training, at most n // 39), bytes per vector
    # (None: the largest divisor of dim that is <= dim // 8), lists probed per query
    nlist: int | None = None
    pq_m: int | None = None
    nprobe: int = 16
    train_size: int = 10_000  # live vectors needed before IVF-PQ trains (exact until then)
    refine_factor: int = 8  # IVF-PQ: re-score k * refine_factor candidates with fp16 vectors
    # IVF-PQ: retrain (lists and codebooks) from the fp16 copies once the live vectors reach this
    # many times the number it was trained on; null: never (retrain() still can)
    retrain_growth: float | None = 4.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ConfigError(
                f"unknown kind {self.kind!r}; choose one of {', '.join(KINDS)}", path="kind"
            )
        if self.metric not in METRICS:
            raise ConfigError(
                f"unknown metric {self.metric!r}; choose one of {', '.join(METRICS)}", path="metric"
            )
        for name, low in (("hnsw_m", 2), ("ef_construction", 1), ("ef_search", 1), ("nprobe", 1),
                          ("train_size", 256), ("refine_factor", 0)):
            check_int(getattr(self, name), name, min=low)
        for name in ("nlist", "pq_m"):
            check_int(getattr(self, name), name, min=1, null=True)
        if self.retrain_growth is not None and (
            isinstance(self.retrain_growth, bool)
            or not isinstance(self.retrain_growth, int | float) or not self.retrain_growth > 1
        ):
            raise ConfigError(f"must be a number > 1 or null; got {self.retrain_growth!r}",
                              path="retrain_growth")
        if self.nlist is not None and self.nlist > self.train_size:
            raise ConfigError(
                f"nlist={self.nlist} needs at least that many training vectors; raise train_size "
                f"(now {self.train_size}) to >= nlist (39 * nlist is better)", path="nlist"
            )
        if importlib.util.find_spec("faiss") is None:
            raise MissingDependencyError(
                "index 'faiss' needs the Python module 'faiss'; "
                "install it with: pip install 'ragkit[faiss]'"
            )
        # Contents are not config: plain attributes, outside the dataclass fields and equality.
        self.info: dict[str, Any] = {}  # what the index was built with (set by the pipeline)
        self._reset(None)

    def _reset(self, dim: int | None) -> None:
        self._dim = dim
        self._index: Any = None  # the faiss index; built on the first add
        self._refine: Any = None  # IVF-PQ: IndexIDMap2(fp16 scalar quantizer), or None
        self._trained = False  # IVF-PQ: False while vectors sit in the exact flat buffer
        self._trained_on = 0  # IVF-PQ: how many live vectors the lists were trained on
        self._warned_growth = False
        self._labels: dict[str, int] = {}  # chunk id -> label, in chunks() order
        self._chunk: dict[int, Chunk] = {}  # label -> chunk
        self._by_doc: dict[str, set[str]] = {}  # doc id -> chunk ids
        self._docs: dict[str, str | None] = {}  # doc id -> its doc_hash metadata
        self._dead: set[int] = set()  # HNSW tombstones: labels in the graph, not searchable
        self._next = getattr(self, "_next", 0)  # labels are never reused, even after a reset

    # -- contents ------------------------------------------------------------------------------

    @reads
    def __len__(self) -> int:
        return len(self._labels)

    @property
    def dim(self) -> int | None:
        """The vector dimension, or ``None`` while the index is empty."""
        return self._dim if self._labels else None

    @property
    def trained(self) -> bool:
        """``kind="ivfpq"``: whether the IVF-PQ index is trained (else search is exact flat)."""
        return self._trained

    @reads
    def chunks(self) -> Iterator[Chunk]:
        """The stored chunks in insertion order (a replaced chunk keeps its place)."""
        return iter([self._chunk[label] for label in self._labels.values()])

    @reads
    def doc_chunks(self, doc_id: str) -> list[Chunk]:
        """The stored chunks of one document, in document order."""
        chunks = (self._chunk[self._labels[cid]] for cid in self._by_doc.get(doc_id, ()))
        return sorted(chunks, key=lambda c: (c.start, c.end))

    @reads
    def doc_hash(self, doc_id: str) -> str | None:
        """The ``doc_hash`` metadata stored with the document's chunks, if it is indexed."""
        return self._docs.get(doc_id)

    @writes
    def add(self, chunks: Sequence[Chunk], vecs: np.ndarray) -> None:
        """Store ``chunks`` with their vectors ``vecs`` (``(len(chunks), dim)``)."""
        chunks = check_chunks(chunks)
        vecs = check_aligned(chunks, vecs, self.dim)
        if not chunks:
            return
        d = vecs.shape[1]
        if self.kind == "ivfpq":
            self._pq_m(d)  # a pq_m that does not divide dim fails here, before any change
        if self.metric == "cosine":
            vecs = normalise(vecs)
        if not self._labels and (self._index is None or self._dim != d or self._dead):
            trained = self._trained and self._dim == d and not self._dead
            if not trained:
                self._reset(d)
                self._index = self._new_store(d) if self.kind != "hnsw" else self._new_hnsw(d)

        # The same id twice in one call: the last vector wins, at the first one's place.
        ids = [c.id for c in chunks]  # each id string built once, shared by the maps below
        last = {cid: i for i, cid in enumerate(ids)}
        order = [last[cid] for cid in dict.fromkeys(ids)]
        new = np.arange(self._next, self._next + len(order), dtype=np.int64)  # (u,) labels
        self._next += len(order)
        retired = []
        for label, i in zip(new.tolist(), order):
            chunk, cid = chunks[i], ids[i]
            old = self._labels.get(cid)
            if old is not None:
                retired.append(old)
                del self._chunk[old]
            self._labels[cid] = label
            self._chunk[label] = chunk
            self._by_doc.setdefault(chunk.doc_id, set()).add(cid)
            self._docs[chunk.doc_id] = chunk.metadata.get("doc_hash")
        rows = vecs if len(order) == len(chunks) else vecs[order]  # (u, d) aligned with new
        if retired:
            self._retire(np.asarray(retired, dtype=np.int64))

        if self.kind == "ivfpq" and not self._trained and len(self) >= self.train_size:
            self._train(rows, new)
        elif self.kind == "ivfpq" and self._trained:
            self._index.add_with_ids(rows, new)
            if self._refine is not None:
                self._refine.add_with_ids(rows, new)
            growth = self.retrain_growth
            if growth is not None and len(self) >= growth * max(self._trained_on, 1):
                if self._refine is not None:
                    self.retrain()
                elif not self._warned_growth:
                    self._warned_growth = True
                    log.warning(
                        "IVF-PQ index holds %d vectors, %.1fx the %d it was trained on, but "
                        "cannot retrain: refine_factor=0 keeps no copy of the vectors. Rebuild it "
                        "from the documents (or use refine_factor > 0) for lists that fit the "
                        "data.", len(self), len(self) / max(self._trained_on, 1), self._trained_on)
        else:
            self._index.add_with_ids(rows, new)
        if self.kind == "hnsw" and len(self._dead) > max(len(self), 1) // 2:
            self.compact()

    @writes
    def delete(self, doc_ids: Sequence[str]) -> int:
        """Remove every chunk of the given documents; returns how many chunks were removed."""
        if isinstance(doc_ids, str):
            raise TypeError("delete takes a sequence of document ids, not a single str")
        labels = []
        for doc_id in dict.fromkeys(doc_ids):
            for cid in self._by_doc.pop(doc_id, ()):
                label = self._labels.pop(cid)
                del self._chunk[label]
                labels.append(label)
            self._docs.pop(doc_id, None)
        if labels:
            self._retire(np.asarray(labels, dtype=np.int64))
            if self.kind == "hnsw" and len(self._dead) > max(len(self), 1) // 2:
                self.compact()
        return len(labels)

    @writes
    def compact(self) -> None:
        """HNSW: rebuild the graph from the live vectors, dropping tombstones (other kinds
        remove vectors for real and have nothing to compact)."""
        if self.kind != "hnsw" or not self._dead:
            return
        labels = np.fromiter(self._labels.values(), dtype=np.int64, count=len(self))
        labels.sort()
        vecs = self._index.reconstruct_batch(labels) if len(labels) else None  # (n, d)
        log.debug("rebuilding the HNSW graph: %d live, %d tombstones", len(labels),
                  len(self._dead))
        self._index = self._new_hnsw(self._dim)
        if vecs is not None:
            self._index.add_with_ids(vecs, labels)
        self._dead = set()

    # -- search --------------------------------------------------------------------------------

    @reads
    def search(self, query_vecs: np.ndarray, k: int, filter: Mapping[str, Any] | None = None,
               queries: Sequence[str] | None = None) -> list[list[Hit]]:
        """The ``k`` best hits for each query row, with ``filter`` and ``queries`` as in
        ``MemoryIndex.search``."""
        k = check_k(k)
        q = query_rows(query_vecs)
        q = self._check_vecs(q, what="query vectors")
        allowed = self._allowed(filter)  # (s,) sorted labels, or None: every live vector
        if not self._labels or k == 0 or (allowed is not None and len(allowed) == 0):
            return [[] for _ in range(q.shape[0])]
        if self.metric == "cosine":
            q = normalise(q)
        q = np.ascontiguousarray(q)
        if allowed is not None and len(allowed) <= EXACT_SUBSET:
            return [self._hits(s, lab) for s, lab in self._exact(q, allowed, k)]

        want = min(k, len(self) if allowed is None else len(allowed))
        scores, labels = self._ann(q, k, allowed)  # (m, k) each, label -1 for no hit
        out = []
        for i, (s, lab) in enumerate(zip(scores, labels)):
            found = lab >= 0
            s, lab = s[found], lab[found]
            if len(lab) < want:  # the graph / probed lists held too few: score exactly
                log.debug("query %d: approximate search found %d of %d hits; exact fallback",
                          i, len(lab), want)
                every = allowed if allowed is not None else self._live()
                ((s, lab),) = self._exact(q[i : i + 1], every, k)
            out.append(self._hits(s, lab))
        return out

    def _ann(self, q: np.ndarray, k: int, allowed: np.ndarray | None) -> tuple[np.ndarray, ...]:
        faiss = faiss_module()
        sel = None
        if allowed is not None:
            sel = faiss.IDSelectorBatch(allowed)
        elif self._dead:
            dead = np.fromiter(self._dead, dtype=np.int64, count=len(self._dead))
            sel = faiss.IDSelectorNot(faiss.IDSelectorBatch(dead))
        refine = self.kind == "ivfpq" and self._trained and self._refine is not None
        kk = k * max(1, self.refine_factor) if refine else k
        if self.kind == "hnsw":
            params = faiss.SearchParametersHNSW(efSearch=max(self.ef_search, kk))
        elif self.kind == "ivfpq" and self._trained:
            params = faiss.SearchParametersIVF(nprobe=min(self.nprobe, self._index.nlist))
        else:
            params = faiss.SearchParameters()
        if sel is not None:
            params.sel = sel
        scores, labels = self._index.search(q, kk, params=params)  # (m, kk) each
        if not refine:
            return scores, labels
        # Re-score the PQ candidates with the fp16 vectors and keep the k best.
        found = labels >= 0
        flat = labels[found]
        exact = np.full(labels.shape, -np.inf, dtype=np.float32)  # (m, kk)
        if len(flat):
            vecs = self._refine.reconstruct_batch(flat)  # (c, d)
            rows = np.nonzero(found)[0]
            exact[found] = np.einsum("cd,cd->c", vecs, q[rows])
        top = np.argsort(-exact, axis=1, kind="stable")[:, :k]  # (m, k)
        labels = np.where(np.take_along_axis(found, top, 1), np.take_along_axis(labels, top, 1), -1)
        return np.take_along_axis(exact, top, 1), labels

    def _exact(
        self, q: np.ndarray, labels: np.ndarray, k: int
    ) -> list[tuple[np.ndarray, np.ndarray]]:
        """Exact top-``k`` of queries ``(m, d)`` over the vectors of ``labels``, reconstructed
        block by block; per query its scores and labels, best first (ties: earlier label)."""
        store = self._refine if self._refine is not None else self._index
        m = q.shape[0]
        best_s = np.empty((m, 0), dtype=np.float32)
        best_l = np.empty((m, 0), dtype=np.int64)
        for start in range(0, len(labels), _BLOCK):
            block = labels[start : start + _BLOCK]  # (b,)
            scores = q @ store.reconstruct_batch(block).T  # (m, b)
            best_s = np.concatenate((best_s, scores), axis=1)
            best_l = np.concatenate((best_l, np.broadcast_to(block, scores.shape)), axis=1)
            if best_s.shape[1] > k:
                top = np.argpartition(-best_s, k - 1, axis=1)[:, :k]  # (m, k), unordered
                best_s = np.take_along_axis(best_s, top, 1)
                best_l = np.take_along_axis(best_l, top, 1)
        out = []
        for s, lab in zip(best_s, best_l):
            order = np.lexsort((lab, -s))
            out.append((s[order], lab[order]))
        return out

    def _hits(self, scores: np.ndarray, labels: np.ndarray) -> list[Hit]:
        return [
            Hit(chunk=self._chunk[label], score=float(score), rank=rank)
            for rank, (score, label) in enumerate(zip(scores.tolist(), labels.tolist()))
        ]

    def _live(self) -> np.ndarray:
        labels = np.fromiter(self._labels.values(), dtype=np.int64, count=len(self))
        labels.sort()
        return labels

    def _allowed(self, filter: Mapping[str, Any] | None) -> np.ndarray | None:
        if not filter:
            return None
        if not isinstance(filter, Mapping):
            raise TypeError(f"filter must be a mapping of metadata key -> value; got {filter!r}")
        docs = filter.get("doc_id")
        if docs is not None:  # narrow by document first: no scan over every chunk
            docs = tuple(docs) if isinstance(docs, list | tuple | set | frozenset) else (docs,)
            ids = (cid for doc in dict.fromkeys(docs) if isinstance(doc, str)
                   for cid in self._by_doc.get(doc, ()))
            candidates = [self._chunk[self._labels[cid]] for cid in ids]
        else:
            candidates = list(self._chunk.values())
        rows = filter_rows(candidates, filter)  # the one definition of a match, shared by all
        labels = np.fromiter((self._labels[candidates[i].id] for i in rows), dtype=np.int64,
                             count=len(rows))
        labels.sort()
        return labels

    # -- helpers -------------------------------------------------------------------------------

    def _check_vecs(self, vecs: Any, *, what: str) -> np.ndarray:
        return check_vecs(vecs, self.dim, what=what)
