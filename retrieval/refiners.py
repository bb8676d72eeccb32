"""Refiners: selectors that change the hits' spans, not only which hits are kept.

Retrieval ranks whole chunks, but a chunk of ~150 tokens usually holds the answer in one or two
of its sentences. A refiner narrows each hit to the sentences that match the query (and joins
hits that overlap), so the generator reads less text for the same evidence. Every refiner keeps
the chunk contract exactly: a refined hit's chunk is a sub-span of a given hit's chunk (or the
union of given chunks that overlap), its text sliced from theirs, so
``doc.text[chunk.start:chunk.end] == chunk.text`` holds whenever it held for the input.

- ``SentenceRefiner`` (``sentence-refine``): take hits best first, fold each candidate that
  overlaps a kept hit into it (query-aware de-duplication: the overlap is paid for once and the
  slot goes to the next distinct passage), keep ``k``, then cut each kept hit down to the window
  of sentences that score at least ``min_score`` against the query (or within ``keep`` of its
  best sentence), plus ``pad`` sentences on each side.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

import numpy as np

from ragkit.errors import ConfigError
from ragkit.protocols import HasSentenceVectors
from ragkit.types import Chunk, Hit
from ragkit.checks import check_bool, check_float, check_int
from ragkit.retrieval.selectors import SelectionError, by_score, ranked

SCORERS = ("dense", "lexical")

# a sentence ends after ., ! or ? (and closing quotes or brackets) before whitespace, or at a
# line break; whitespace between sentences belongs to neither
_END = re.compile(r"[.!?]+[\"'\u201d\u2019)\]]*(?=\s)|\n")
_WORD = re.compile(r"\w\w+")
_STOP = frozenset(
    "a an the of to in and or is are was were be been being for on at by with as from that this "
    "it its what how why who whom which when where did does do their they them he she his her you "
    "your i we our us about into than then there these those can could would should will has have "
    "had not no any some such".split()
)


def sentence_spans(text: str) -> list[tuple[int, int]]:
    """``(start, end)`` of each sentence of ``text``, whitespace-trimmed, in order; a text with
    no sentence end is one sentence. Cheap rules, no model: a period inside a word (``3.5``,
    ``e.g.x``) does not end a sentence; one before a space does (so ``Dr. No`` splits)."""
    spans, start = [], 0
    for m in _END.finditer(text):
        spans.append((start, m.end()))
        start = m.end()
    spans.append((start, len(text)))
    out = []
    for a, b in spans:
        piece = text[a:b]
        lo, hi = a + len(piece) - len(piece.lstrip()), a + len(piece.rstrip())
        if hi > lo:
            out.append((lo, hi))
    return out


def _terms(text: str) -> set[str]:
    return {w for w in _WORD.findall(text.lower()) if w not in _STOP}


def union_chunk(a: Chunk, b: Chunk) -> Chunk:
    """The chunk spanning two overlapping (or touching) chunks of one document, its text joined
    exactly from theirs; metadata of ``a``, with ``merged`` listing the ids folded in."""
    if a.doc_id != b.doc_id or b.start > a.end or a.start > b.end:
        raise ValueError(f"chunks {a.id} and {b.id} do not overlap")
    first, second = (a, b) if a.start <= b.start else (b, a)
    text = first.text
    if second.end > first.end:
        text += second.text[first.end - second.start:]
    end = max(first.end, second.end)
    merged = list(a.metadata.get("merged", [a.id]))
    merged += [i for i in b.metadata.get("merged", [b.id]) if i not in merged]
    meta = {k: v for k, v in a.metadata.items() if k != "tokens"}
    meta["merged"] = merged
    return Chunk(a.doc_id, first.start, end, text, min(a.index, b.index), meta)


def sub_chunk(chunk: Chunk, start: int, end: int) -> Chunk:
    """``chunk`` narrowed to its characters ``[start, end)`` (relative offsets); the same chunk if
    nothing is cut. Metadata keeps everything but ``tokens`` and records ``refined_from``."""
    if start == 0 and end == len(chunk.text):
        return chunk
    if not 0 <= start < end <= len(chunk.text):
        raise ValueError(f"cannot narrow {chunk.id} to [{start}, {end})")
    meta = {k: v for k, v in chunk.metadata.items() if k != "tokens"}
    meta["refined_from"] = chunk.id
    return Chunk(chunk.doc_id, chunk.start + start, chunk.start + end, chunk.text[start:end],
                 chunk.index, meta)


@dataclass(kw_only=True)
class SentenceRefiner:
    """Keep ``k`` distinct passages and narrow each to the sentences that answer the query.

    1. Hits are read best first (by score, stably). With ``merge=True``, a hit whose chunk
       overlaps a kept hit of the same document is folded into it (the union of the two spans,
       text joined exactly) instead of taking a slot; otherwise it takes a slot; reading stops
       once ``k`` are kept. So overlapping chunkers cost their overlap once and the freed slots
       go to further passages.
    2. Each kept hit is split into sentences (``sentence_spans``) and each sentence scored
       against the query: ``dense``, the cosine between the query vector
       (``context.query_vec``) and the sentence's vector (``context.embed``, one call for all
       sentences of the hits it narrows); ``lexical``, the idf-weighted share of the query's
       content words that the sentence holds (idf over those sentences; no model; scores divided
       by the hit's best, so they lie in [0, 1]). A sentence stays when it clears the floors
       that are set: ``min_score`` (absolute) and ``best - keep`` (relative to the hit's top
       sentence, which always stays). The hit becomes the span from the first to the last
       sentence that stays, widened by ``pad`` sentences on each side. The first ``whole`` hits
       are left whole (the top-ranked passages are the likeliest to hold the answer, and more
       of it than one sentence). With both floors ``None`` nothing is narrowed.
    3. Hits keep their score and order; ranks are 0..n-1.

    A refined hit is always within the given hits' text, so ``doc.text[start:end] == text``
    holds exactly; its metadata records ``refined_from`` (the chunk it was cut from) and
    ``merged`` (the chunks folded into it). Cost for ``dense``: when ``context.index`` stores
    sentence vectors (``HasSentenceVectors``: the ``sentence-vectors`` index, which embeds every
    sentence at index time) a lookup and dot products, plus an embedding call only for the
    sentences it does not hold (one across the edge of two merged chunks); otherwise one
    embedding call over the sentences of the hits it narrows (about six short texts per hit of
    ~150 tokens). ``stats`` counts the sentences looked up and embedded. None for ``lexical``.
    """

    k: int = 5
    merge: bool = True
    min_score: float | None = 0.3
    keep: float | None = None
    pad: int = 0
    whole: int = 0
    scorer: Literal["dense", "lexical"] = "dense"

    def __post_init__(self) -> None:
        check_int(self.k, "k", min=1)
        check_int(self.pad, "pad", min=0)
        check_int(self.whole, "whole", min=0)
        check_bool(self.merge, "merge")
        self.keep = check_float(self.keep, "keep", min=0.0, null=True)
        self.min_score = check_float(self.min_score, "min_score", min=-1.0, null=True)
        if self.scorer not in SCORERS:
            raise ConfigError(f"unknown scorer {self.scorer!r}; choose one of "
                              f"{', '.join(SCORERS)}", path="scorer")
        # sentences scored from vectors the index stored / embedded at query time
        self.stats: dict[str, int] = {"looked_up": 0, "embedded": 0}

    def select(self, query: str, hits: Sequence[Hit], context: Any = None) -> list[Hit]:
        kept = self.pick(hits)
        if (self.keep is None and self.min_score is None) or len(kept) <= self.whole:
            return ranked(kept)
        units = [[] if i < self.whole else sentence_spans(h.chunk.text)
                 for i, h in enumerate(kept)]
        scores = self._scores(query, kept, units, context)
        out, at = [], 0
        for h, us in zip(kept, units):
            s = scores[at:at + len(us)]
            at += len(us)
            out.append(replace(h, chunk=self._narrow(h.chunk, us, s)))
        return ranked(out)

    def pick(self, hits: Sequence[Hit]) -> list[Hit]:
        """Step 1: up to ``k`` hits, best first, overlapping ones folded together."""
        kept: list[Hit] = []
        for h in by_score(hits):
            if self.merge:
                at = next((i for i, g in enumerate(kept) if _overlap(g.chunk, h.chunk)), None)
                if at is not None:
                    kept[at] = replace(kept[at], chunk=union_chunk(kept[at].chunk, h.chunk))
                    continue
            if len(kept) == self.k:
                break
            kept.append(h)
        if self.merge:  # a fold can make two kept hits overlap: join them (the better one stays)
            i = 0
            while i < len(kept):
                j = next((j for j in range(i + 1, len(kept))
                          if _overlap(kept[i].chunk, kept[j].chunk)), None)
                if j is None:
                    i += 1
                    continue
                kept[i] = replace(kept[i], chunk=union_chunk(kept[i].chunk, kept[j].chunk))
                del kept[j]
        return kept

    def _scores(self, query: str, kept: list[Hit], units: list[list[tuple[int, int]]],
                context: Any) -> np.ndarray:
        """One score per sentence of ``units`` (the kept hits' sentences, in order)."""
        if not any(units):
            return np.zeros(0)
        if self.scorer == "lexical":
            return _lexical(query, [h.chunk.text[a:b] for h, us in zip(kept, units)
                                    for a, b in us])
        vecs = self.sentence_matrix(kept, units, context)
        qvec = context.query_vec if context is not None else None
        q = context.embed([query])[0] if qvec is None else qvec  # embed checked above
        return _cosines(vecs, q)

    def sentence_matrix(self, kept: Sequence[Hit], units: list[list[tuple[int, int]]],
                        context: Any) -> np.ndarray:
        """The vectors ``(n, d)`` of the sentences ``units`` (relative spans) of the hits
        ``kept``: looked up when ``context.index`` stores them (``HasSentenceVectors``),
        embedded with ``context.embed`` otherwise (and for the few it does not hold)."""
        texts = [h.chunk.text[a:b] for h, us in zip(kept, units) for a, b in us]
        embed = context.embed if context is not None else None  # a SelectionContext
        index = context.index if context is not None else None
        stored = isinstance(index, HasSentenceVectors)
        if stored:  # vectors computed at index time: a lookup, and a model call only for misses
            looked = [index.sentence_vectors(h.chunk.doc_id, [(h.chunk.start + a, h.chunk.start + b)
                                                              for a, b in us])
                      for h, us in zip(kept, units) if us]
            vecs = np.concatenate([v for v, _ in looked]).astype(np.float64)  # (n, d) or (n, 0)
            found = np.concatenate([f for _, f in looked])  # (n,)
            self.stats["looked_up"] += int(found.sum())
            if found.all() and context.query_vec is not None:
                return vecs
        if embed is None:
            raise SelectionError(
                "selector 'sentence-refine' with scorer 'dense' needs context.embed (the "
                "pipeline's embedder) to embed the sentences"
                + (" that the index does not store, or the query" if stored else "")
                + "; got none (or use scorer: lexical, or an index that stores sentence vectors: "
                "sentence-vectors)"
            )
        if not stored:
            self.stats["embedded"] += len(texts)
            return np.asarray(embed(texts), dtype=np.float64)  # (n, d)
        if not found.all():  # embed the few the index does not hold (across merged chunks)
            missing = [t for t, f in zip(texts, found) if not f]
            fresh = np.asarray(embed(missing), dtype=np.float64)  # (m, d)
            if vecs.shape[1] != fresh.shape[1]:
                vecs = np.zeros((len(texts), fresh.shape[1]))
            vecs[~found] = fresh
            self.stats["embedded"] += len(missing)
        return vecs

    def _narrow(self, chunk: Chunk, units: list[tuple[int, int]], scores: np.ndarray) -> Chunk:
        if not units:  # left whole, or no sentence in it
            return chunk
        if self.scorer == "lexical":
            top = float(scores.max())
            scores = scores / top if top > 0 else np.ones_like(scores)
        best = float(scores.max())
        floor = max(best - (self.keep if self.keep is not None else np.inf),
                    self.min_score if self.min_score is not None else -np.inf)
        near = np.flatnonzero(scores >= min(best, floor))  # never empty: best is in it
        lo = max(0, int(near[0]) - self.pad)
        hi = min(len(units) - 1, int(near[-1]) + self.pad)
        return sub_chunk(chunk, units[lo][0], units[hi][1])


def _cosines(vecs: np.ndarray, q: Any) -> np.ndarray:
    """Cosine of each row of ``vecs`` ``(n, d)`` with ``q`` ``(d,)``."""
    q = np.asarray(q, dtype=np.float64)
    norms = np.linalg.norm(vecs, axis=1) * max(np.linalg.norm(q), 1e-12)  # (n,)
    return (vecs @ q) / np.maximum(norms, 1e-12)


def _overlap(a: Chunk, b: Chunk) -> bool:
    return a.doc_id == b.doc_id and a.start < b.end and b.start < a.end


def _lexical(query: str, texts: list[str]) -> np.ndarray:
    """Idf-weighted overlap of each text with the query's content words, idf over ``texts``."""
    q = _terms(query)
    bags = [_terms(t) & q for t in texts]
    df: dict[str, int] = {}
    for bag in bags:
        for w in bag:
            df[w] = df.get(w, 0) + 1
    n = len(texts)
    return np.array([sum(math.log(1 + n / df[w]) for w in bag) for bag in bags])
