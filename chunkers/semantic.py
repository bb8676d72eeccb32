"""Semantic chunking: cut where the meaning shifts, within the embedder's own size limit.

The text is split into sentences (spaCy, as in the ``sentence`` chunker); a sentence longer than
the budget is cut into token windows. Each of these units is embedded once, and a group of units
is represented by the normalised mean of its units' vectors, so no window text is ever embedded.
At every boundary between two units the cosine distance between the ``window`` units before it and
the ``window`` units after it is measured; a ``breakpoint`` rule turns the distances into a
threshold and the text is cut wherever a distance exceeds it (LangChain's rules and default
thresholds; ``gradient`` differs in one point, see ``SemanticChunker``).

Then sizes are made hard, counted exactly on each chunk's text:

- a segment over the budget is split at its most dissimilar unit boundary, again and again,
  until every part fits;
- a segment under ``min_size`` is merged into the neighbour it is more similar to, if the merged
  chunk still fits (the budget always wins over ``min_size``).

The budget is ``chunk_size`` tokens of ``tokenizer``; by default both come from the embedder:
its tokenizer, and the longest text it reads without cutting (254 tokens for all-MiniLM-L6-v2,
whose 256 include [CLS] and [SEP]). When ``tokenizer`` is not the embedder's own, the embedder's
limit is enforced as well, so no chunk this chunker returns would be truncated by its embedder.
"""

from __future__ import annotations

import heapq
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ragkit.chunkers.base import make_chunks, token_windows, trim
from ragkit.chunkers.sentence import sentence_spans
from ragkit import registry
from ragkit.checks import check_int
from ragkit.config import COMPONENT_KIND, build
from ragkit.errors import ConfigError
from ragkit.protocols import (
    LimitsTextTokens,
    LimitsTokens,
    NamesTokenizer,
    ReadsTokenizerFile,
    provides,
)
from ragkit.tokenizers import Tokenizer, check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Document

Breakpoint = Literal["percentile", "std", "iqr", "gradient"]
BREAKPOINTS: tuple[str, ...] = ("percentile", "std", "iqr", "gradient")
DEFAULT_THRESHOLDS = {"percentile": 95.0, "std": 3.0, "iqr": 1.5, "gradient": 95.0}

Piece = tuple[int, int]  # char span [start, end) of a unit, trimmed


class EmbedderBudget:
    """The size budget of a chunker that embeds with ``embedder``: ``chunk_size`` tokens of
    ``tokenizer`` (default: the embedder's own), and the embedder's input limit, resolved on
    first use (that limit needs its model). Shared by the ``semantic`` and ``cluster``
    chunkers, which have the three fields."""

    embedder: Any
    tokenizer: str | None
    chunk_size: int | None

    @cached_property
    def _budget(self) -> Budget:
        return Budget.resolve(self.embedder, self.tokenizer, self.chunk_size)

    @property
    def resolved_tokenizer(self) -> str:
        """The tokenizer that counts ``chunk_size`` (and the chunker's other sizes) and each
        chunk's tokens."""
        return self.tokenizer or self.embedder.tokenizer

    @property
    def resolved_chunk_size(self) -> int | None:
        """The most tokens of ``resolved_tokenizer`` in a chunk (``None``: no bound in those
        tokens, only the embedder's limit in its own tokens)."""
        return self._budget.chunk_size


@dataclass(kw_only=True)
class SemanticChunker(EmbedderBudget):
    """Sentences grouped where adjacent groups are similar, cut where they are not.

    ``breakpoint`` and ``threshold``: a boundary becomes a cut when

    - ``percentile``: its distance is above the ``threshold``-th percentile of all distances
      (default 95);
    - ``std``: its distance is above their mean plus ``threshold`` standard deviations (default 3);
    - ``iqr``: its distance is above their mean plus ``threshold`` interquartile ranges
      (default 1.5);
    - ``gradient``: the rise of its distance over the previous boundary's is above the
      ``threshold``-th percentile of all rises (default 95). LangChain takes a central difference
      (``np.gradient``) instead, which peaks one boundary before a peak in distance; this
      one-sided rise peaks on it.

    ``window``: units on each side of a boundary whose mean vectors are compared (default 1).
    ``chunk_size`` (max) and ``min_size`` are tokens of ``tokenizer``; ``chunk_size: null`` is the
    embedder's limit and ``tokenizer: null`` the embedder's tokenizer. An embedder that declares
    neither (the ``hash`` test embedder) needs both set. ``language`` and ``spacy_model`` choose
    the sentence segmenter, as in the ``sentence`` chunker.
    """

    embedder: Any = field(
        default_factory=lambda: {"name": "sentence-transformers"},
        metadata={COMPONENT_KIND: "embedder"},
    )
    breakpoint: Breakpoint = "percentile"
    threshold: float | None = None
    window: int = 1
    chunk_size: int | None = None
    min_size: int = 0
    tokenizer: str | None = None
    language: str = "en"
    spacy_model: str | None = None

    def __post_init__(self) -> None:
        self.embedder = build("embedder", self.embedder, path="embedder")
        if self.breakpoint not in BREAKPOINTS:
            raise ConfigError(
                f"unknown rule {self.breakpoint!r}; choose one of {', '.join(BREAKPOINTS)}",
                path="breakpoint",
            )
        t = self.threshold
        if t is not None:
            if isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t):
                raise ConfigError(f"must be a number or null; got {t!r}", path="threshold")
            if self.breakpoint in ("percentile", "gradient") and not 0 <= t <= 100:
                raise ConfigError(
                    f"is a percentile for breakpoint {self.breakpoint!r}: must be in [0, 100]; "
                    f"got {t!r}",
                    path="threshold",
                )
            if self.breakpoint in ("std", "iqr") and t < 0:
                raise ConfigError(
                    f"counts {'standard deviations' if self.breakpoint == 'std' else 'IQRs'} "
                    f"above the mean: must be >= 0; got {t!r}",
                    path="threshold",
                )
        check_int(self.window, "window", min=1)
        check_int(self.min_size, "min_size", min=0)
        check_budget_fields(self)
        if not isinstance(self.language, str) or not self.language:
            raise ConfigError(
                f"must be a spaCy language code; got {self.language!r}", path="language"
            )


    # -- chunking -------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        budget = self._budget
        units = budget.cut(text, sentence_spans(text, self.language, self.spacy_model))
        if not units:
            return []
        vecs = embed_spans(self.embedder, [text[s:e] for s, e in units])  # (n, d)
        prefix = np.zeros((len(units) + 1, vecs.shape[1]), dtype=np.float64)  # (n + 1, d)
        np.cumsum(vecs, axis=0, out=prefix[1:])
        dist = boundary_distances(prefix, self.window)  # (n - 1,)
        cuts = breakpoints(dist, self.breakpoint, self.threshold)
        sizes = Sizes(text, units, budget)
        segments: list[tuple[int, int]] = []
        for a, b in zip([0, *cuts], [*cuts, len(units)]):  # unit ranges [a, b)
            segments.extend(split_to_fit(a, b, dist, sizes))
        if self.min_size > 0:
            segments = merge_small(segments, sizes, self.min_size, mean_vector_similarity(prefix))
        spans = [trim(text, units[a][0], units[b - 1][1]) for a, b in segments]
        return make_chunks(doc, spans, [sizes.tokens(a, b) for a, b in segments])


# -- the budget ---------------------------------------------------------------------------------


def check_budget_fields(chunker: Any) -> None:
    """Build-time checks of ``chunk_size`` / ``tokenizer`` against what the embedder declares."""
    size = check_int(chunker.chunk_size, "chunk_size", min=1, null=True)
    if chunker.tokenizer is not None:
        check_tokenizer_name(chunker.tokenizer)
    name = _embedder_name(chunker.embedder)
    if chunker.tokenizer is None and not provides(chunker.embedder, NamesTokenizer):
        raise ConfigError(
            f"embedder {name!r} has no tokenizer to count chunk sizes with; set tokenizer "
            "(e.g. whitespace, cl100k, all-MiniLM-L6-v2) and chunk_size",
            path="tokenizer",
        )
    if size is None and not (
        provides(chunker.embedder, LimitsTextTokens) or provides(chunker.embedder, LimitsTokens)
    ):
        raise ConfigError(
            f"embedder {name!r} declares no input limit to default to; set chunk_size "
            f"(tokens of {chunker.tokenizer or 'the tokenizer'})",
            path="chunk_size",
        )


@dataclass
class Budget:
    """Size limits as ``(tokenizer, max tokens)`` pairs, all enforced on every chunk and unit.

    ``tok`` counts the chunks' ``tokens`` metadata and ``min_size``; ``limits`` holds
    ``(tok, chunk_size)`` if there is a chunk size, and the embedder's own ``(tokenizer, limit)``
    when that tokenizer is another one. So every unit embedded fits the embedder too.
    """

    tok: Tokenizer
    chunk_size: int | None
    limits: list[tuple[Tokenizer, int]]

    @classmethod
    def resolve(cls, embedder: Any, tokenizer: str | None, chunk_size: int | None) -> Budget:
        etok: Tokenizer | None = None
        elimit = _embedder_limit(embedder)
        if provides(embedder, NamesTokenizer):
            etok = load_tokenizer(embedder.tokenizer)
        tok = load_tokenizer(tokenizer) if tokenizer is not None else etok
        same = etok is not None and (tok is etok or _same_tokenizer(tok, etok))
        if same and chunk_size is not None and elimit is not None and chunk_size > elimit:
            raise ConfigError(
                f"{chunk_size} is more than embedder {_embedder_name(embedder)!r} reads without "
                f"cutting ({elimit} of its tokens); use chunk_size <= {elimit} or null",
                path="chunk_size",
            )
        if chunk_size is None and same:
            chunk_size = elimit
        limits: list[tuple[Tokenizer, int]] = []
        if chunk_size is not None:
            limits.append((tok, chunk_size))
        embed_limit = (etok, elimit) if etok is not None and elimit is not None else None
        if embed_limit is not None and not same:
            limits.append(embed_limit)
        if not limits:
            raise ConfigError(
                f"embedder {_embedder_name(embedder)!r} reports no input limit; set chunk_size",
                path="chunk_size",
            )
        return cls(tok, chunk_size, limits)

    def cut(self, text: str, spans: Sequence[Piece]) -> list[Piece]:
        """Trimmed, non-empty units: the spans, each cut into token windows where it is over a
        limit (a unit never holds more than any limit allows, save an unbreakable one)."""
        units = [(s, e) for a, b in spans for s, e in [trim(text, a, b)] if e > s]
        for tok, limit in self.limits:
            out: list[Piece] = []
            for s, e in units:
                if tok.count(text[s:e]) <= limit:
                    out.append((s, e))
                else:
                    out.extend((a, b) for a, b, _ in token_windows(text, s, e, tok, limit))
            units = out
        return units


class Sizes:
    """Token counts of unit ranges ``[a, b)``: per-unit sums as a quick test, exact counts of the
    trimmed chunk text as the verdict (memoised)."""

    def __init__(self, text: str, units: Sequence[Piece], budget: Budget) -> None:
        self.text, self.units, self.budget = text, units, budget
        counters = [budget.tok] + [t for t, _ in budget.limits if t is not budget.tok]
        self._counters = counters
        self._col = {id(t): i for i, t in enumerate(counters)}
        counts = np.array(
            [[t.count(text[s:e]) for t in counters] for s, e in units], dtype=np.int64
        )  # (n, c)
        self._prefix = np.zeros((len(units) + 1, len(counters)), dtype=np.int64)  # (n + 1, c)
        np.cumsum(counts.reshape(len(units), len(counters)), axis=0, out=self._prefix[1:])
        self._exact: dict[tuple[int, int], list[int]] = {}

    def _counts(self, a: int, b: int) -> list[int]:
        got = self._exact.get((a, b))
        if got is None:
            s, e = trim(self.text, self.units[a][0], self.units[b - 1][1])
            got = self._exact[(a, b)] = [t.count(self.text[s:e]) for t in self._counters]
        return got

    def tokens(self, a: int, b: int) -> int:
        """Exact tokens of ``tok`` in the chunk made of units ``[a, b)``."""
        return self._counts(a, b)[0]

    def fits(self, a: int, b: int) -> bool:
        """Whether units ``[a, b)`` make a chunk within every limit; one unit always does."""
        if b - a <= 1:
            return True
        sums = self._prefix[b] - self._prefix[a]
        idx = self._col
        if any(sums[idx[id(t)]] > lim for t, lim in self.budget.limits):
            return False
        exact = self._counts(a, b)
        return all(exact[idx[id(t)]] <= lim for t, lim in self.budget.limits)


# -- embedding ----------------------------------------------------------------------------------


def embed_spans(embedder: Any, texts: Sequence[str]) -> np.ndarray:
    """One L2-normalised vector per text, float32 ``(n, d)``, from one ``embed`` call in which
    each distinct text appears once."""
    unique = list(dict.fromkeys(texts))
    if not unique:
        return np.zeros((0, 1), dtype=np.float32)
    vecs = np.asarray(embedder.embed(unique), dtype=np.float32)  # (u, d)
    row = {t: i for i, t in enumerate(unique)}
    return normalise(vecs[[row[t] for t in texts]])  # (n, d)


def normalise(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=-1, keepdims=True)
    return np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)


# -- breakpoints --------------------------------------------------------------------------------


def boundary_distances(prefix: np.ndarray, window: int) -> np.ndarray:
    """Cosine distance at each boundary ``b`` (between unit ``b`` and ``b + 1``) between the mean
    vector of the ``window`` units before it and of the ``window`` units after it.

    ``prefix`` is the running sum of the unit vectors, ``(n + 1, d)``. A side whose mean is the
    zero vector (units with no embeddable content) is taken as unrelated: distance 1.
    """
    n = len(prefix) - 1
    if n < 2:
        return np.zeros(0, dtype=np.float64)
    b = np.arange(1, n)  # the boundary before unit b
    left = prefix[b] - prefix[np.maximum(b - window, 0)]  # (n - 1, d)
    right = prefix[np.minimum(b + window, n)] - prefix[b]  # (n - 1, d)
    sim = np.einsum("ij,ij->i", normalise(left), normalise(right))
    return 1.0 - np.clip(sim, -1.0, 1.0)


def breakpoints(dist: np.ndarray, rule: str, threshold: float | None = None) -> list[int]:
    """Unit indices where a new segment starts: ``b + 1`` for each boundary ``b`` above the
    rule's threshold (LangChain's rules and ``>`` test, so equal distances never all cut; see
    ``SemanticChunker`` for ``gradient``)."""
    t = DEFAULT_THRESHOLDS[rule] if threshold is None else float(threshold)
    if len(dist) == 0:
        return []
    score = dist
    if rule == "percentile":
        limit = np.percentile(dist, t)
    elif rule == "std":
        limit = dist.mean() + t * dist.std()
    elif rule == "iqr":
        q1, q3 = np.percentile(dist, [25, 75])
        limit = dist.mean() + t * (q3 - q1)
    elif rule == "gradient":
        score = np.diff(dist, prepend=dist[0])  # the rise into each boundary (0 at the first)
        limit = np.percentile(score, t)
    else:
        raise ConfigError(f"unknown rule {rule!r}; choose one of {', '.join(BREAKPOINTS)}",
                          path="breakpoint")
    return [int(b) + 1 for b in np.flatnonzero(score > limit)]


# -- hard sizes ---------------------------------------------------------------------------------


def split_to_fit(a: int, b: int, dist: np.ndarray, sizes: Sizes) -> list[tuple[int, int]]:
    """Unit ranges covering ``[a, b)``, each within the budget: a range that is not is cut at its
    largest boundary distance (ties: the boundary nearest its middle), recursively."""
    out: list[tuple[int, int]] = []
    stack = [(a, b)]
    while stack:
        lo, hi = stack.pop()
        if sizes.fits(lo, hi):
            out.append((lo, hi))
            continue
        inner = dist[lo : hi - 1]  # boundaries lo .. hi - 2; cutting after unit k gives
        # [lo, k + 1) and [k + 1, hi)
        ties = np.flatnonzero(inner == inner.max())
        k = lo + int(ties[np.argmin(np.abs(ties - (len(inner) - 1) / 2))])
        stack.append((k + 1, hi))
        stack.append((lo, k + 1))
    return out


def merge_small(
    segments: list[tuple[int, int]],
    sizes: Sizes,
    min_size: int,
    affinity: Callable[[list[int], list[int], int, int], float],
) -> list[tuple[int, int]]:
    """Merge each segment under ``min_size`` tokens into the neighbour it has more ``affinity``
    with (``affinity(lo, hi, i, j)`` over the current segment bounds; ties go to the left one),
    smallest first, when the merged chunk fits the budget (else it stays small)."""
    n = len(segments)
    lo = [a for a, _ in segments]
    hi = [b for _, b in segments]
    prev = list(range(-1, n - 1))
    nxt = list(range(1, n + 1))
    alive = [True] * n
    size = [sizes.tokens(a, b) for a, b in segments]
    version = [0] * n
    heap = [(size[i], i, 0) for i in range(n) if size[i] < min_size]
    heapq.heapify(heap)
    while heap:
        _, i, ver = heapq.heappop(heap)
        if not alive[i] or ver != version[i]:
            continue
        options = []
        for j in (prev[i], nxt[i]):
            if 0 <= j < n:
                a, b = (lo[j], hi[i]) if j < i else (lo[i], hi[j])
                if sizes.fits(a, b):
                    options.append((affinity(lo, hi, i, j), j < i, j))  # ties: the left one
        if not options:
            continue  # neighbours only grow: it will never fit with either
        _, _, j = max(options)
        keep, drop = (j, i) if j < i else (i, j)  # merge the right one into the left one
        hi[keep] = hi[drop]
        alive[drop] = False
        nxt[keep] = nxt[drop]
        if nxt[drop] < n:
            prev[nxt[drop]] = keep
        size[keep] = sizes.tokens(lo[keep], hi[keep])
        version[keep] += 1
        if size[keep] < min_size:
            heapq.heappush(heap, (size[keep], keep, version[keep]))
    return [(lo[i], hi[i]) for i in range(n) if alive[i]]


def mean_vector_similarity(
    prefix: np.ndarray,
) -> Callable[[list[int], list[int], int, int], float]:
    """``merge_small``'s affinity for the semantic chunker: the cosine of the two segments' summed
    unit vectors (``prefix`` is the running sum of the units' vectors)."""

    def sim(lo: list[int], hi: list[int], i: int, j: int) -> float:
        u = prefix[hi[i]] - prefix[lo[i]]
        v = prefix[hi[j]] - prefix[lo[j]]
        den = float(np.linalg.norm(u) * np.linalg.norm(v))
        return float(u @ v) / den if den > 0 else 0.0

    return sim


# -- helpers ------------------------------------------------------------------------------------


def _embedder_limit(embedder: Any) -> int | None:
    """The longest text, in the embedder's tokens, that it reads without cutting."""
    if provides(embedder, LimitsTextTokens):
        return int(embedder.max_text_tokens)
    if provides(embedder, LimitsTokens):
        limit = embedder.max_tokens
        return None if limit is None else int(limit)
    return None


def _same_tokenizer(a: Tokenizer, b: Tokenizer) -> bool:
    """Two loaded tokenizers read the same file (``hf:<folder>`` and ``all-MiniLM-L6-v2``)."""
    if not (isinstance(a, ReadsTokenizerFile) and isinstance(b, ReadsTokenizerFile)):
        return False
    return os.path.realpath(a.path) == os.path.realpath(b.path)


def _embedder_name(embedder: Any) -> str:
    return registry.name_of("embedder", type(embedder))
