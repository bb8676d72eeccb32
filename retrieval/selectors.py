"""Selectors: decide how many and which hits reach the generator.

Every selector has ``select(query, hits, context) -> list[Hit]``: hits best first, ranks
renumbered 0..n-1, never more hits than given (``Neighbours`` is the exception: it adds the
chunks next to the hits). ``context`` (``ragkit.retrieval.base.SelectionContext``) gives what some
selectors need besides the hits: the query vector and the embedder (``MMR``) or the index
(``Neighbours``). Selectors that rank by score sort the hits by score first (stably: ties keep
their given order), so they do not depend on the order they are given.

- ``TopK``: the ``k`` best.
- ``ScoreGap``: cut where the score drops most sharply (SAGE-style), keeping ``min_k..max_k``.
- ``MMR``: maximal marginal relevance, relevant and mutually different hits.
- ``TokenBudget``: the subset with the highest total score that fits a token budget (exact 0/1
  knapsack).
- ``Neighbours``: add the chunks adjacent to each hit in its document, merged by offsets.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from functools import cached_property
from typing import Any

import numpy as np

from ragkit.checks import check_bool, check_float, check_int
from ragkit.config import COMPONENT_KIND, build
from ragkit.errors import ConfigError, RagkitError
from ragkit.protocols import HasDocChunks
from ragkit.retrieval.base import SelectionContext
from ragkit.tokenizers import check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Hit


class SelectionError(RagkitError, ValueError):
    """A selector lacks what it needs (an embedder, an index, token counts) to select."""


def ranked(hits: Sequence[Hit]) -> list[Hit]:
    """The hits with ranks 0..n-1 in the given order (a hit already so ranked is kept as is)."""
    return [h if h.rank == r else replace(h, rank=r) for r, h in enumerate(hits)]


def by_score(hits: Sequence[Hit]) -> list[Hit]:
    """The hits best first."""
    return sorted(hits, key=lambda h: -h.score)  # stable: ties keep the given order


# -- top-k ----------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TopK:
    """The ``k`` highest-scoring hits."""

    k: int = 5

    def __post_init__(self) -> None:
        check_int(self.k, "k", min=1)

    def select(self, query: str, hits: Sequence[Hit], context: Any = None) -> list[Hit]:
        return ranked(by_score(hits)[: self.k])


# -- score gap ------------------------------------------------------------------------------------


@dataclass(kw_only=True)
class ScoreGap:
    """Keep the hits above the sharpest drop in score (after SAGE, Wang et al. 2025).

    With the scores sorted, ``s[0] >= s[1] >= ...``, cutting after position ``i`` keeps ``i + 1``
    hits; the cut goes where the gap ``s[i] - s[i+1]`` is largest (``relative=True``: the gap
    divided by ``|s[i]|``, so a drop from 0.9 to 0.45 weighs like one from 0.2 to 0.1), among the
    cuts keeping ``min_k`` to ``max_k`` hits; the earliest of equal gaps wins. If that gap is
    smaller than ``min_gap``, no drop is sharp enough and ``max_k`` hits are kept.
    """

    max_k: int = 10
    min_k: int = 1
    relative: bool = False
    min_gap: float = 0.0

    def __post_init__(self) -> None:
        check_int(self.min_k, "min_k", min=1)
        check_int(self.max_k, "max_k", min=1)
        if self.max_k < self.min_k:
            raise ConfigError(f"must be >= min_k={self.min_k}; got {self.max_k}", path="max_k")
        check_bool(self.relative, "relative")
        self.min_gap = check_float(self.min_gap, "min_gap", min=0.0)

    def cut(self, scores: Sequence[float]) -> int:
        """How many of the descending ``scores`` to keep."""
        s = np.asarray(scores, dtype=np.float64)  # (n,)
        n = len(s)
        keep_max = min(n, self.max_k)
        if n <= self.min_k:
            return n
        gaps = s[:-1] - s[1:]  # (n-1,) gap after position i
        if self.relative:
            gaps = gaps / np.maximum(np.abs(s[:-1]), 1e-12)
        lo, hi = self.min_k - 1, min(keep_max, n - 1)  # cut after i in [lo, hi)
        window = gaps[lo:hi]
        if not len(window):
            return keep_max
        i = lo + int(np.argmax(window))  # first of equal maxima
        return i + 1 if gaps[i] >= self.min_gap and gaps[i] > 0 else keep_max

    def select(self, query: str, hits: Sequence[Hit], context: Any = None) -> list[Hit]:
        ordered = by_score(hits)
        return ranked(ordered[: self.cut([h.score for h in ordered])])


# -- maximal marginal relevance -------------------------------------------------------------------


@dataclass(kw_only=True)
class MMR:
    """Maximal marginal relevance (Carbonell & Goldstein, 1998): pick ``k`` hits one at a time,
    each maximising ``lambda_ * cos(hit, query) - (1 - lambda_) * max cos(hit, picked)``.

    Vectors come from ``context.embed`` on the hit texts and ``context.query_vec`` (or the query
    embedded by ``context.embed``). Relevance is the cosine to the query, not the hit's score
    (the two are on different scales after BM25, fusion or reranking). ``lambda_=1`` is plain
    cosine ranking, ``0`` pure diversity. Returns the hits in pick order with their own scores,
    which therefore need not decrease. Cost: one embedding call for the hit texts, ``O(n^2 d)``.
    """

    k: int = 5
    lambda_: float = 0.5

    def __post_init__(self) -> None:
        check_int(self.k, "k", min=1)
        self.lambda_ = check_float(self.lambda_, "lambda_", min=0.0, max=1.0)

    def select(self, query: str, hits: Sequence[Hit], context: Any) -> list[Hit]:
        hits = list(hits)
        if not hits:
            return []
        embed = context.embed if isinstance(context, SelectionContext) else None
        qvec = context.query_vec if isinstance(context, SelectionContext) else None
        if embed is None or (qvec is None and not query):
            raise SelectionError(
                "selector 'mmr' needs context.embed (the pipeline's embedder) to compare the hit "
                "texts, and context.query_vec or the query text; got none"
            )
        vecs = _unit(np.asarray(embed([h.chunk.text for h in hits]), dtype=np.float64))  # (n, d)
        q = np.asarray(embed([query])[0] if qvec is None else qvec, dtype=np.float64)
        q = _unit(q.reshape(1, -1))[0]  # (d,)
        relevance = vecs @ q  # (n,)
        similarity = vecs @ vecs.T  # (n, n)
        redundancy = np.full(len(hits), -np.inf)  # max cosine to a picked hit
        picked: list[int] = []
        free = np.ones(len(hits), dtype=bool)
        while len(picked) < min(self.k, len(hits)):
            penalty = redundancy if picked else np.zeros(len(hits))
            gain = self.lambda_ * relevance - (1.0 - self.lambda_) * penalty
            gain[~free] = -np.inf
            best = int(np.argmax(gain))  # first of equal maxima: the earlier hit
            picked.append(best)
            free[best] = False
            redundancy = np.maximum(redundancy, similarity[best])
        return ranked([hits[i] for i in picked])


def _unit(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)  # (n, 1)
    return np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)


# -- token budget ---------------------------------------------------------------------------------


@dataclass(kw_only=True)
class TokenBudget:
    """The hits with the highest total score whose tokens fit ``budget`` (0/1 knapsack, exact).

    A hit's size is its text's token count in ``tokenizer`` (any ``ragkit.tokenizers`` name), or,
    with ``tokenizer=None``, the ``tokens`` metadata its chunker stored. Hits with a score <= 0
    cannot raise the total and are left out, as are hits larger than the budget. Returned in
    score order.

    Dynamic programming over token counts: ``O(n * W)`` time and ``n * (W + 1)`` bytes, where
    ``W = min(budget, total tokens of the candidates)`` (50 hits under an 8k budget: 400k
    cells, about a millisecond). When everything fits, no table is built.
    """

    budget: int = 2048
    tokenizer: str | None = "cl100k"

    def __post_init__(self) -> None:
        check_int(self.budget, "budget", min=1)
        if self.tokenizer is not None:
            check_tokenizer_name(self.tokenizer)

    @cached_property
    def _tok(self) -> Any:
        return load_tokenizer(self.tokenizer)

    def tokens(self, chunk: Chunk) -> int:
        """The size of ``chunk`` in tokens, as this selector counts it."""
        if self.tokenizer is not None:
            return int(self._tok.count(chunk.text))
        n = chunk.metadata.get("tokens")
        if isinstance(n, bool) or not isinstance(n, int) or n < 0:
            raise SelectionError(
                f"selector 'token-budget' with tokenizer=null reads chunk metadata 'tokens', but "
                f"chunk {chunk.id!r} has {n!r}; set tokenizer (e.g. 'cl100k') to count them"
            )
        return n

    def select(self, query: str, hits: Sequence[Hit], context: Any = None) -> list[Hit]:
        ordered = by_score(hits)
        sizes = [self.tokens(h.chunk) for h in ordered]
        chosen = knapsack([h.score for h in ordered], sizes, self.budget)
        return ranked([ordered[i] for i in chosen])


def knapsack(values: Sequence[float], weights: Sequence[int], capacity: int) -> list[int]:
    """Indices (ascending) of the items with the largest total value whose weights sum to at
    most ``capacity``; items with a value <= 0 or a weight > capacity are never taken. Among
    equal totals the table keeps the one found first (items are added in index order)."""
    items = [i for i, (v, w) in enumerate(zip(values, weights)) if v > 0 and w <= capacity]
    if sum(weights[i] for i in items) <= capacity:
        return items
    cap = capacity
    best = np.zeros(cap + 1)  # best[c]: top total value within c tokens, over the items so far
    take = np.zeros((len(items), cap + 1), dtype=bool)  # (n, W + 1): item j taken at capacity c
    for j, i in enumerate(items):
        w, v = weights[i], float(values[i])
        cand = np.full(cap + 1, -np.inf)
        cand[w:] = best[: cap + 1 - w] + v
        better = cand > best
        take[j] = better
        best = np.where(better, cand, best)
    chosen, c = [], cap
    for j in range(len(items) - 1, -1, -1):
        if take[j, c]:
            chosen.append(items[j])
            c -= weights[items[j]]
    return sorted(chosen)


# -- neighbour expansion --------------------------------------------------------------------------


@dataclass(kw_only=True)
class Neighbours:
    """Add the ``n`` chunks before and after each hit in its document, so the context is not cut
    mid-thought.

    ``inner`` (a selector, optional) chooses the hits to expand first; without it every given
    hit is expanded. The chunks come from ``context.index.doc_chunks(doc_id)`` in document order.
    Each maximal run of adjacent chunks (hits and their neighbours) becomes one hit where its
    chunks touch or overlap: a new ``Chunk`` spanning them whose text is exactly the document's
    text over that span (``index`` of its first chunk; metadata: the items all its chunks agree
    on, plus ``merged``, the ids of its chunks). Where two adjacent chunks leave a gap (most
    chunkers drop the whitespace between chunks) the gap's text is unknown, so they stay
    separate hits, next to each other in document order. Every hit of a run scores the best
    score of the given hits in it; runs come best first, ties in the order of their best hit.

    Because it adds chunks, it is the one selector that may return more hits than it was given
    (at most ``(2n + 1)`` times as many); hits whose chunk the index does not hold come back
    unchanged.
    """

    n: int = 1
    inner: Any = field(default=None, metadata={COMPONENT_KIND: "selector"})

    def __post_init__(self) -> None:
        check_int(self.n, "n", min=0)
        if self.inner is not None:
            self.inner = build("selector", self.inner, path="inner")

    def select(self, query: str, hits: Sequence[Hit], context: Any) -> list[Hit]:
        if self.inner is not None:
            hits = self.inner.select(query, hits, context)
        hits = list(hits)
        index = context.index if isinstance(context, SelectionContext) else None
        if hits and not isinstance(index, HasDocChunks):
            raise SelectionError(
                "selector 'neighbours' needs context.index with doc_chunks(doc_id) (the "
                f"pipeline's index); got {type(index).__name__}"
            )
        groups: list[tuple[float, int, list[Chunk]]] = []  # (score, first hit position, chunks)
        by_doc: dict[str, list[int]] = {}
        for pos, h in enumerate(hits):
            by_doc.setdefault(h.chunk.doc_id, []).append(pos)
        for doc_id, positions in by_doc.items():
            chunks = index.doc_chunks(doc_id)
            where = {c.id: i for i, c in enumerate(chunks)}
            best: dict[int, tuple[float, int]] = {}  # chunk position -> (best score, hit pos)
            for pos in positions:
                h = hits[pos]
                at = where.get(h.chunk.id)
                if at is None:  # not in the index: comes back unchanged
                    groups.append((h.score, pos, [h.chunk]))
                    continue
                if at not in best or h.score > best[at][0]:  # equal: the earlier hit stays
                    best[at] = (h.score, pos)
            covered = sorted({p for at in best for p in range(max(0, at - self.n),
                                                              min(len(chunks), at + self.n + 1))})
            for run in _runs(covered):
                members = [best[p] for p in run if p in best]
                score = max(s for s, _ in members)
                first = min(pos for s, pos in members if s == score)
                groups.append((score, first, _merge([chunks[p] for p in run])))
        groups.sort(key=lambda g: (-g[0], g[1]))
        out = [Hit(chunk=c, score=score, rank=0) for score, _, run in groups for c in run]
        return ranked(out)


def _runs(positions: list[int]) -> list[list[int]]:
    """Sorted positions split into runs of consecutive integers."""
    runs: list[list[int]] = []
    for p in positions:
        if runs and p == runs[-1][-1] + 1:
            runs[-1].append(p)
        else:
            runs.append([p])
    return runs


def _merge(chunks: list[Chunk]) -> list[Chunk]:
    """Chunks in document order, those that touch or overlap merged into one spanning chunk."""
    pieces: list[list[Chunk]] = []
    for c in chunks:
        if pieces and c.start <= max(p.end for p in pieces[-1]):
            pieces[-1].append(c)
        else:
            pieces.append([c])
    return [_span(piece) for piece in pieces]


def _span(piece: list[Chunk]) -> Chunk:
    if len(piece) == 1:
        return piece[0]
    first = piece[0]
    text, end = first.text, first.end
    for c in piece[1:]:
        if c.end > end:
            text += c.text[end - c.start:]  # the part of c past what we have (c.start <= end)
            end = c.end
    common = {k: v for k, v in first.metadata.items()
              if all(k in c.metadata and c.metadata[k] == v for c in piece[1:])}
    common.pop("tokens", None)
    common["merged"] = [c.id for c in piece]
    return Chunk(first.doc_id, first.start, end, text, first.index, common)
