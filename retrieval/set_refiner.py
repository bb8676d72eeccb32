"""Set selection under a budget (after CORAG): choose the best *combination* of refined passages.

``sentence-refine`` keeps the ``k`` best hits one by one. ``set-refine`` first refines every
candidate (folds overlapping ones together, narrows each to its sentences that match the query,
exactly as ``sentence-refine`` does), then scores whole sets of at most ``k`` of those passages
and returns the best set whose text fits ``budget`` characters:

    value(S) = sum over passages p in S of rel(p)  -  redundancy * sum over pairs p < q in S of
               max(0, cos(p, q))

``rel(p)`` is the evidence for the passage, the sum of the first-stage scores of the hits folded
into it (overlapping candidates that agree on a region add up), divided by the best passage's
(so the top passage is worth 1), and
``cos(p, q)`` the cosine between the mean sentence vectors of two passages (two passages saying
the same thing pay for it). The sets are enumerated exactly (at most ``sum_{i<=k} C(n, i)``
sets of ``n`` candidates: 638 for 10 candidates and ``k = 5``), not grown greedily, so a short
passage that completes a set can beat a long one that ranks higher alone. Ties go to the set
met first (fewer passages, then better-ranked ones). Offsets are exact: every passage is a
sub-span (or an exact union) of the given hits, ``doc.text[start:end] == text``.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ragkit.checks import check_float, check_int
from ragkit.retrieval.refiners import SentenceRefiner, sentence_spans
from ragkit.retrieval.selectors import ranked
from ragkit.types import Hit


@dataclass(kw_only=True)
class SetRefiner:
    """The best set of at most ``k`` refined passages within ``budget`` characters."""

    k: int = 5
    budget: int = 3000
    redundancy: float = 0.5
    min_score: float | None = 0.35
    pad: int = 1
    max_candidates: int = 12

    def __post_init__(self) -> None:
        check_int(self.k, "k", min=1)
        check_int(self.budget, "budget", min=1)
        check_int(self.pad, "pad", min=0)
        check_int(self.max_candidates, "max_candidates", min=1, max=20)
        self.redundancy = check_float(self.redundancy, "redundancy", min=0.0)
        self.min_score = check_float(self.min_score, "min_score", min=-1.0, null=True)
        self.stats: dict[str, int] = {"looked_up": 0, "embedded": 0}

    def select(self, query: str, hits: Sequence[Hit], context: Any = None) -> list[Hit]:
        refiner = SentenceRefiner(k=self.max_candidates, min_score=self.min_score, pad=self.pad)
        refiner.stats = self.stats
        passages = refiner.select(query, hits, context)  # merged, narrowed, best first
        if not passages:
            return []
        vecs = self._passage_vectors(query, passages, refiner, context)  # (n, d) unit rows
        given = {h.chunk.id: h.score for h in hits}
        evidence = np.array([sum(given.get(i, 0.0) for i in _members(h)) or h.score
                             for h in passages])  # (n,) scores of the hits folded into each
        top = evidence.max()
        rel = evidence / top if top > 0 else np.ones(len(passages))  # (n,)
        sim = np.maximum(vecs @ vecs.T, 0.0) if vecs is not None else np.zeros((len(rel),) * 2)
        size = np.array([len(h.chunk.text) for h in passages])
        best, best_value = (), -np.inf
        for r in range(1, min(self.k, len(passages)) + 1):
            for combo in itertools.combinations(range(len(passages)), r):
                if size[list(combo)].sum() > self.budget:
                    continue
                value = rel[list(combo)].sum() - self.redundancy * sum(
                    sim[i, j] for i, j in itertools.combinations(combo, 2))
                if value > best_value + 1e-12:
                    best, best_value = combo, value
        if not best:  # nothing fits: the best passage alone, cut by nothing (never empty)
            best = (0,)
        return ranked([passages[i] for i in sorted(best)])

    def _passage_vectors(self, query: str, passages: list[Hit], refiner: SentenceRefiner,
                         context: Any) -> np.ndarray | None:
        """Mean sentence vector of each passage, unit length, from the same lookups (or
        embeddings) the refiner uses; ``None`` when no redundancy is asked for."""
        if self.redundancy == 0:
            return None
        units = [sentence_spans(h.chunk.text) for h in passages]
        vecs = refiner.sentence_matrix(passages, units, context)  # (sentences, d)
        out, at = [], 0
        for us in units:
            v = vecs[at:at + len(us)].mean(axis=0) if us else np.zeros(vecs.shape[1])
            at += len(us)
            out.append(v / max(np.linalg.norm(v), 1e-12))
        return np.array(out)


def _members(passage: Hit) -> list[str]:
    """The ids of the given hits a refined passage came from (``merged``, else the chunk it was
    narrowed from, else its own)."""
    meta = passage.chunk.metadata
    return list(meta.get("merged") or [meta.get("refined_from", passage.chunk.id)])
