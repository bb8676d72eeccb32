"""Chunk-quality metrics that need no questions: boundary clarity and chunk stickiness (MoC).

From "MoC: Mixtures of Text Chunking Learners for Retrieval-Augmented Generation System" (Zhao et
al., 2025). Both read the chunks of one document with a language model. ``ppl(q)`` is the
perplexity of chunk ``q`` read alone (after a document-start token), ``ppl(q|d)`` its perplexity
when chunk ``d`` is read first (``d``, a blank line, then ``q``; only ``q``'s own tokens are
scored, the same tokens in both): ``exp`` of the mean negative log-probability of its tokens.

- **Boundary clarity** of two adjacent chunks, ``d`` the earlier and ``q`` the later:
  ``BC(q, d) = ppl(q|d) / ppl(q)``. Near 1, reading ``d`` does not help predict ``q``: the
  boundary separates two self-contained pieces. Lower, ``q`` leans on ``d``: the boundary cuts
  through one piece of content. Higher is better. Reported as the mean (and population std)
  over all adjacent pairs of all documents.
- **Chunk stickiness**: a graph over a document's chunks in which chunks ``d`` and ``q`` are
  joined when ``Edge(q, d) = 1 - ppl(q|d) / ppl(q)`` is above the threshold ``K``
  (``stickiness_k``, default 0.8); its structural entropy
  ``CS = -sum_i (h_i / 2m) * log2(h_i / 2m)``, with ``h_i`` the degree of chunk ``i`` (its
  number of edges) and ``m`` the number of edges (``CS = 0`` with no edge). Lower is better:
  chunks that do not lean on each other. Pairs considered: ``incomplete`` (default), every
  earlier chunk ``d`` with every later chunk ``q``, in reading order; ``complete``, both
  orders (an edge when either direction is above ``K``). The paper takes all pairs of a
  document, whose LM cost grows with the square of the number of chunks; here pairs are at
  most ``max_distance`` chunks apart (default 1, adjacent chunks only, which reuses the
  boundary-clarity passes; ``None`` for all pairs). Reported as the mean over documents, with
  the total number of edges. Like any entropy it grows with the number of nodes, so compare
  chunkings at similar mean chunk size (as the paper does).

Cost: one LM pass over ``d + q`` for every pair (which also gives ``ppl(d)``), one over the last
chunk alone. The LM needs ``token_logprobs`` (``ragkit.protocols.TokenLogprobLLM``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

QUALITY_METRICS = ("boundary_clarity", "stickiness")
SEPARATOR = "\n\n"  # between d and q when d is read first


class Perplexities:
    """``ppl(q)`` and ``ppl(q|d)`` for the chunks of one document, each pass computed once."""

    def __init__(self, texts: Sequence[str], llm: Any, *, window: int = 1024) -> None:
        self.texts, self.llm, self.window = list(texts), llm, window
        self._alone: dict[int, float] = {}
        self._given: dict[tuple[int, int], float] = {}
        self.passes = 0

    def alone(self, q: int) -> float:
        if q not in self._alone:
            (lp,) = self._run([self.texts[q]])
            self._alone[q] = _ppl(lp)
        return self._alone[q]

    def given(self, q: int, d: int) -> float:
        """``ppl(texts[q] | texts[d])``."""
        if (q, d) not in self._given:
            lp_d, _, lp_q = self._run([self.texts[d], SEPARATOR, self.texts[q]])
            self._alone.setdefault(d, _ppl(lp_d))  # d is read first: that is ppl(d) alone
            self._given[(q, d)] = _ppl(lp_q)
        return self._given[(q, d)]

    def ratio(self, q: int, d: int) -> float:
        """``ppl(q|d) / ppl(q)``."""
        given = self.given(q, d)
        return given / self.alone(q)

    def _run(self, segments: list[str]) -> list[np.ndarray]:
        self.passes += 1
        return self.llm.token_logprobs(segments, window=self.window)


def _ppl(logprobs: np.ndarray) -> float:
    if len(logprobs) == 0:
        return math.nan
    return float(math.exp(-float(np.mean(logprobs))))


def boundary_clarity(ppl: Perplexities) -> list[float]:
    """``BC(q, d) = ppl(q|d) / ppl(q)`` for each adjacent pair (``d`` = chunk i, ``q`` = i + 1)."""
    n = len(ppl.texts)
    for i in range(n - 1):  # every pass over d + q first: it gives ppl(d) alone for free
        ppl.given(i + 1, i)
    return [ppl.ratio(i + 1, i) for i in range(n - 1)]


def stickiness(
    ppl: Perplexities, *, k: float = 0.8, graph: str = "incomplete", max_distance: int | None = 1
) -> tuple[float, int]:
    """``(structural entropy, number of edges)`` of the chunk graph (see the module)."""
    n = len(ppl.texts)
    reach = n - 1 if max_distance is None else min(max_distance, n - 1)
    degree = np.zeros(n, dtype=np.int64)
    edges = 0
    pairs = [(i, j) for i in range(n) for j in range(i + 1, min(i + reach, n - 1) + 1)]
    for i, j in pairs:  # the passes over d + q first: they give ppl(d) alone for free
        ppl.given(j, i)
    for i, j in pairs:
        linked = 1.0 - ppl.ratio(j, i) > k  # q = j read after d = i
        if not linked and graph == "complete":
            linked = 1.0 - ppl.ratio(i, j) > k  # q = i read after d = j
        if linked:
            degree[i] += 1
            degree[j] += 1
            edges += 1
    return structural_entropy(degree), edges


def structural_entropy(degree: np.ndarray) -> float:
    """``-sum_i (h_i / 2m) log2(h_i / 2m)`` over nodes with ``h_i > 0``; 0 for no edge."""
    total = int(np.sum(degree))  # = 2m
    if total == 0:
        return 0.0
    p = degree[degree > 0] / total
    return float(-(p * np.log2(p)).sum())


@dataclass
class QualityResult:
    """Per-document values and their summary (``summary()``), for one chunking."""

    boundary_clarity: dict[str, list[float]] = field(default_factory=dict)  # doc -> pairs
    stickiness: dict[str, float] = field(default_factory=dict)  # doc -> entropy
    edges: dict[str, int] = field(default_factory=dict)  # doc -> edges
    lm_passes: int = 0

    def summary(self, corpus_of: Mapping[str, str] | None = None) -> dict[str, Any]:
        """Means (BC over pairs, CS over documents), overall and per corpus (``corpus_of`` maps
        a document to its corpus; default: each document is its own corpus)."""
        corpus_of = corpus_of or {}
        out: dict[str, Any] = {"lm_passes": self.lm_passes}
        if self.boundary_clarity:
            out["boundary_clarity"] = _group(self.boundary_clarity, corpus_of, flatten=True)
        if self.stickiness:
            out["stickiness"] = _group({d: [v] for d, v in self.stickiness.items()}, corpus_of)
            out["stickiness"]["edges"] = int(sum(self.edges.values()))
        return out


def _group(values: Mapping[str, list[float]], corpus_of: Mapping[str, str],
           flatten: bool = False) -> dict[str, Any]:
    every = [v for vs in values.values() for v in vs if not math.isnan(v)]
    out = _stats(every)
    by: dict[str, list[float]] = {}
    for doc, vs in values.items():
        by.setdefault(corpus_of.get(doc, doc), []).extend(v for v in vs if not math.isnan(v))
    out["per_corpus"] = {c: _stats(vs) for c, vs in sorted(by.items())}
    return out


def _stats(values: list[float]) -> dict[str, Any]:
    if not values:
        return {"mean": math.nan, "std": math.nan, "n": 0}
    arr = np.asarray(values, dtype=np.float64)
    return {"mean": float(arr.mean()), "std": float(arr.std()), "n": len(values)}


def chunk_quality(
    docs: Mapping[str, Sequence[str]],
    llm: Any,
    metrics: Sequence[str] = QUALITY_METRICS,
    *,
    k: float = 0.8,
    graph: str = "incomplete",
    max_distance: int | None = 1,
    window: int = 1024,
    progress: Callable[[Iterable[Any], str, int], Iterable[Any]] | None = None,
    desc: str = "chunk quality",
) -> QualityResult:
    """The MoC metrics of the chunk texts of each document (in reading order), with ``llm``."""
    unknown = [m for m in metrics if m not in QUALITY_METRICS]
    if unknown:
        raise ValueError(f"unknown quality metric {unknown[0]!r}; choose from "
                         f"{', '.join(QUALITY_METRICS)}")
    out = QualityResult()
    items: Iterable[Any] = list(docs.items())
    if progress is not None:
        items = progress(items, desc, len(docs))
    for doc_id, texts in items:
        ppl = Perplexities(texts, llm, window=window)
        if "boundary_clarity" in metrics:
            out.boundary_clarity[doc_id] = boundary_clarity(ppl)
        if "stickiness" in metrics:
            out.stickiness[doc_id], out.edges[doc_id] = stickiness(
                ppl, k=k, graph=graph, max_distance=max_distance)
        out.lm_passes += ppl.passes
    return out
