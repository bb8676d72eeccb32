"""The faiss structures behind ``FaissIndex``: the flat, HNSW and IVF-PQ indexes it builds, how a
replaced or deleted vector is retired from each, and IVF-PQ training and retraining.

A mixin of ``FaissIndex`` (``ragkit.retrieval.faiss_index``), working on its state; it holds no
chunk bookkeeping, no search and no persistence, and is not a component on its own.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import numpy as np

from ragkit._deps import require
from ragkit.concurrency import writes
from ragkit.errors import ConfigError

log = logging.getLogger("ragkit.retrieval.faiss_index")


def faiss_module() -> Any:
    """The ``faiss`` module, or an error saying which extra installs it."""
    return require("faiss", extra="faiss", component="index 'faiss'")


class FaissStructures:
    """Building and training the faiss indexes of a ``FaissIndex``."""

    def _new_store(self, d: int) -> Any:
        faiss = faiss_module()
        return faiss.IndexIDMap2(faiss.IndexFlatIP(d))

    def _new_hnsw(self, d: int) -> Any:
        faiss = faiss_module()
        graph = faiss.IndexHNSWFlat(d, self.hnsw_m, faiss.METRIC_INNER_PRODUCT)
        graph.hnsw.efConstruction = self.ef_construction
        graph.hnsw.efSearch = self.ef_search
        return faiss.IndexIDMap2(graph)

    def _retire(self, labels: np.ndarray) -> None:
        if self.kind == "hnsw":
            self._dead.update(labels.tolist())
            return
        self._index.remove_ids(labels)
        if self._refine is not None:
            self._refine.remove_ids(labels)

    def _pq_m(self, d: int) -> int:
        if self.pq_m is not None:
            if d % self.pq_m:
                raise ConfigError(
                    f"pq_m={self.pq_m} must divide the vector dim {d}; choose a divisor of {d} "
                    "or null (automatic)", path="pq_m",
                )
            return self.pq_m
        return max(m for m in range(1, max(d // 8, 1) + 1) if d % m == 0)

    @writes
    def retrain(self) -> None:
        """IVF-PQ: train new lists and codebooks on every live vector (from the fp16 copies kept
        for ``refine_factor > 0``) and re-encode them all. Runs by itself when the index has
        grown ``retrain_growth`` times past what it was trained on; with ``nlist: null`` the
        number of lists grows with the data. Searches give the same hits before and after up to
        the approximation."""
        if self.kind != "ivfpq":
            raise ConfigError(f"only an IVF-PQ index retrains; this one is {self.kind!r}",
                              path="kind")
        if not self._trained:
            return  # still the exact flat buffer: it trains when it reaches train_size
        if self._refine is None:
            raise ConfigError(
                "cannot retrain with refine_factor=0: the index keeps only PQ codes, not the "
                "vectors; rebuild it from the documents", path="refine_factor")
        labels = self._live()
        vecs = self._refine.reconstruct_batch(labels)  # (n, d) float32 from the fp16 copies
        log.info("retraining IVF-PQ on %d vectors (trained on %d)", len(labels), self._trained_on)
        self._build_ivfpq(np.ascontiguousarray(vecs, dtype=np.float32), labels)

    def _train(self, rows: np.ndarray, new: np.ndarray) -> None:
        """Train IVF-PQ on the buffered vectors plus ``rows`` and move them all into it."""
        faiss = faiss_module()
        old = faiss.vector_to_array(self._index.id_map)  # (b,) labels in the flat buffer
        if len(old):
            vecs = np.concatenate((self._index.reconstruct_batch(old), rows))  # (n, d)
            labels = np.concatenate((old, new))
        else:
            vecs, labels = rows, new
        self._build_ivfpq(vecs, labels)

    def _build_ivfpq(self, vecs: np.ndarray, labels: np.ndarray) -> None:
        faiss = faiss_module()
        n, d = vecs.shape
        nlist = self.nlist or max(1, min(round(4 * math.sqrt(n)), n // 39))
        sample = min(n, max(65536, 40 * nlist))
        train = vecs if sample == n else vecs[np.random.default_rng(0).choice(n, sample, False)]
        log.debug("training IVF-PQ: nlist=%d, pq_m=%d on %d of %d vectors", nlist,
                  self._pq_m(d), len(train), n)
        quantizer = faiss.IndexFlatIP(d)
        ivf = faiss.IndexIVFPQ(quantizer, d, nlist, self._pq_m(d), 8, faiss.METRIC_INNER_PRODUCT)
        ivf.cp.max_points_per_centroid = max(256, math.ceil(sample / nlist))
        ivf.train(np.ascontiguousarray(train))
        ivf.set_direct_map_type(faiss.DirectMap.Hashtable)
        ivf.add_with_ids(vecs, labels)
        ivf.nprobe = min(self.nprobe, nlist)
        self._index = ivf  # faiss's Python wrapper keeps the quantizer alive with it
        if self.refine_factor:
            refine = faiss.IndexIDMap2(faiss.IndexScalarQuantizer(
                d, faiss.ScalarQuantizer.QT_fp16, faiss.METRIC_INNER_PRODUCT))
            refine.add_with_ids(vecs, labels)
            self._refine = refine
        self._trained = True
        self._trained_on = n
        self._warned_growth = False
