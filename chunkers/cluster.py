"""Cluster semantic chunking (Chroma's technical report, "Evaluating Chunking Strategies for
Retrieval", 2024: ClusterSemanticChunker), with its size limit made exact.

The text is cut into small pieces (the ``recursive`` chunker at ``piece_size`` tokens), each piece
is embedded once, and chunk boundaries are chosen by dynamic programming to maximise the sum over
chunks of the within-chunk similarity: for a chunk of pieces ``a..b`` the sum of ``sim(i, j) - mu``
over its ordered pairs ``i != j``, where ``mu`` is the mean similarity of all pairs of distinct
pieces in the document. A chunk holds at most ``chunk_size // piece_size`` pieces, as in the
report, and its text must also fit the budget when counted exactly (pieces merged into one text
can count more tokens than their sum).

Written from the report and the MIT-licensed reference code
(github.com/brandonstarxel/chunking_evaluation, ``cluster_semantic_chunker.py``); unlike it, the
rewards come from running sums of the piece vectors (no ``n x n`` matrix) and a position where no
segmentation has a positive total still gets a valid one.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any

import numpy as np

from ragkit.chunkers.base import make_chunks, trim
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.chunkers.semantic import (
    EmbedderBudget,
    Sizes,
    check_budget_fields,
    embed_spans,
)
from ragkit.checks import check_int
from ragkit.config import COMPONENT_KIND, build
from ragkit.types import Chunk, Document


@dataclass(kw_only=True)
class ClusterChunker(EmbedderBudget):
    """Pieces of at most ``piece_size`` tokens grouped into the chunks of highest total
    within-chunk similarity, at most ``chunk_size`` tokens each.

    ``chunk_size`` and ``piece_size`` are tokens of ``tokenizer``; ``chunk_size: null`` is the
    embedder's limit and ``tokenizer: null`` the embedder's tokenizer (an embedder that declares
    neither, such as ``hash``, needs both set). Pieces are at most ``min(piece_size, chunk_size)``.
    """

    embedder: Any = field(
        default_factory=lambda: {"name": "sentence-transformers"},
        metadata={COMPONENT_KIND: "embedder"},
    )
    chunk_size: int | None = None
    piece_size: int = 50
    tokenizer: str | None = None

    def __post_init__(self) -> None:
        self.embedder = build("embedder", self.embedder, path="embedder")
        check_int(self.piece_size, "piece_size", min=1)
        check_budget_fields(self)

    @cached_property
    def _max_tokens(self) -> int:
        """The budget the piece count is derived from (in the embedder's tokens if ``tokenizer``
        is another one and ``chunk_size`` is null)."""
        budget = self._budget
        return budget.chunk_size if budget.chunk_size is not None else budget.limits[0][1]

    @cached_property
    def _splitter(self) -> RecursiveChunker:
        size = min(self.piece_size, self._max_tokens)
        return RecursiveChunker(chunk_size=size, tokenizer=self.resolved_tokenizer)

    def chunk(self, doc: Document) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        budget = self._budget
        pieces = budget.cut(text, [(c.start, c.end) for c in self._splitter.chunk(doc)])
        vecs = embed_spans(self.embedder, [text[s:e] for s, e in pieces])  # (n, d)
        sizes = Sizes(text, pieces, budget)
        max_pieces = max(1, self._max_tokens // min(self.piece_size, self._max_tokens))
        segments = optimal_segmentation(vector_rewards(vecs, max_pieces), sizes.fits)
        spans = [trim(text, pieces[a][0], pieces[b - 1][1]) for a, b in segments]
        return make_chunks(doc, spans, [sizes.tokens(a, b) for a, b in segments])


# -- the dynamic programme ----------------------------------------------------------------------


def matrix_rewards(sim: np.ndarray, max_pieces: int) -> np.ndarray:
    """``R[a, m - 1]``: the reward of a chunk of pieces ``[a, a + m)`` from a similarity matrix,
    as the reference computes it: the sum of ``sim - mu`` over the chunk's off-diagonal cells,
    ``mu`` the mean of the matrix's strict upper triangle. ``-inf`` past the end."""
    n = len(sim)
    mu = float(sim[np.triu_indices(n, k=1)].mean()) if n > 1 else 0.0
    centred = np.asarray(sim, dtype=np.float64) - mu
    np.fill_diagonal(centred, 0.0)
    out = np.full((n, max_pieces), -np.inf)
    for a in range(n):
        for m in range(1, min(max_pieces, n - a) + 1):
            out[a, m - 1] = centred[a : a + m, a : a + m].sum()
    return out


def vector_rewards(vecs: np.ndarray, max_pieces: int) -> np.ndarray:
    """``matrix_rewards(vecs @ vecs.T, max_pieces)`` without the matrix, in
    ``O(n * max_pieces * d)``: the off-diagonal sum of a block is the squared norm of the sum of
    its vectors minus the sum of their squared norms."""
    v = np.asarray(vecs, dtype=np.float64)  # (n, d)
    n = len(v)
    prefix = np.zeros((n + 1, v.shape[1] if v.ndim == 2 else 0))  # (n + 1, d)
    np.cumsum(v, axis=0, out=prefix[1:])
    sq = np.concatenate(([0.0], np.cumsum(np.einsum("ij,ij->i", v, v))))  # (n + 1,)
    mu = (float(prefix[n] @ prefix[n]) - sq[n]) / (n * (n - 1)) if n > 1 else 0.0
    out = np.full((n, max_pieces), -np.inf)
    for m in range(1, min(max_pieces, n) + 1):
        block = prefix[m:] - prefix[:-m]  # (n - m + 1, d): sums of the blocks of m pieces
        off = np.einsum("ij,ij->i", block, block) - (sq[m:] - sq[:-m])
        out[: n - m + 1, m - 1] = off - mu * m * (m - 1)
    return out


def optimal_segmentation(
    rewards: np.ndarray, fits: Callable[[int, int], bool] | None = None
) -> list[tuple[int, int]]:
    """The segmentation of ``n`` pieces into ranges ``[a, b)`` with the largest total reward,
    ``rewards[a, b - a - 1]`` (from ``matrix_rewards`` or ``vector_rewards``), using only ranges
    for which ``fits(a, b)``; a single piece is always allowed. Ties go to shorter last chunks."""
    n, max_pieces = rewards.shape if rewards.ndim == 2 else (0, 0)
    best = np.full(n + 1, -np.inf)
    best[0] = 0.0
    start = np.zeros(n + 1, dtype=np.int64)
    for b in range(1, n + 1):
        for m in range(1, min(max_pieces, b) + 1):
            a = b - m
            value = best[a] + rewards[a, m - 1]
            if value > best[b] and (m == 1 or fits is None or fits(a, b)):
                best[b] = value
                start[b] = a
    out: list[tuple[int, int]] = []
    b = n
    while b > 0:
        out.append((int(start[b]), b))
        b = int(start[b])
    return out[::-1]
