"""Meta-Chunking: cut where a language model's view of the text changes.

From "Meta-Chunking: Learning Text Segmentation and Semantic Completion via Logical Perception"
(Zhao et al., 2024). The text is split into sentences (spaCy, as in the ``sentence`` chunker; a
sentence longer than ``chunk_size`` is cut into token windows), then one of two methods picks
the sentence boundaries to cut at:

- ``ppl`` (perplexity chunking): each sentence's log-perplexity given the text before it (the
  mean negative log-probability of its tokens, in nats) comes from one pass of the LM over the
  document (``token_logprobs``: batched forwards on a growing KV cache, a sliding context of
  ``window`` tokens). A sentence whose value is a local minimum, lower than both neighbours and
  lower than at least one of them by ``threshold`` or more (or lower than the sentence before
  by ``threshold`` and equal to the one after), ends a chunk: the rule of the Meta-Chunking
  reference code. A boundary's strength, used when sizes are enforced, is the depth of that
  minimum (the larger drop on either side).
- ``margin`` (margin-sampling chunking): for each boundary in turn the LM is asked whether the
  current chunk (its last sentences, up to ``window`` tokens of ``tokenizer``) and the next
  sentence should be split (option "1") or kept together ("2"), with ``score(prompt, options)``.
  The margin is P(split) - P(keep), the two probabilities renormalised to sum to 1; the chunk is
  cut when it is above ``threshold``. One LM call per boundary.

Then sizes are made hard (``ragkit.chunkers.llm``): at most ``chunk_size`` tokens of ``tokenizer`` per
chunk, counted on its own text, and chunks under ``min_size`` merged into a neighbour. Local
minima are frequent (every few sentences), so ``min_size`` is how you ask for larger chunks (the
reference code's "dynamic merging" to a target length plays the same role).

``margin`` answers that cannot be read (a ``score`` dict without a finite value for either option)
are not guessed at: that boundary is kept (no cut), counted in ``stats["unparsed"]`` and logged.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np

from ragkit.chunkers.llm import (
    budget,
    build_llm,
    chunks_from_cuts,
    lm_segments,
    llm_field,
)
from ragkit.chunkers.sentence import sentence_spans
from ragkit.checks import check_choice, check_float, check_int
from ragkit.config import check_template
from ragkit.errors import ConfigError
from ragkit.protocols import ScoresOptions, TokenLogprobLLM
from ragkit.chunkers.base import TokenizerByName
from ragkit.tokenizers import check_tokenizer_name
from ragkit.types import Chunk, Document

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

MARGIN_PROMPT = (
    "This is a text chunking task. Decide whether the two passages below belong in the same "
    "chunk.\n\nPassage 1: {first}\n\nPassage 2: {second}\n\nAnswer 1 to split them into two "
    "chunks, or 2 to keep them together. Answer with 1 or 2 only."
)


@dataclass(kw_only=True)
class PerplexityChunker(TokenizerByName):
    """Sentences grouped where a language model reads them as one flow (see the module).

    ``method``: ``ppl`` (local minima of per-sentence log-perplexity; needs ``token_logprobs``) or
    ``margin`` (a split/keep question per boundary; needs ``score``). ``threshold``: for ``ppl``
    the minimum drop in log-perplexity (nats per token, >= 0, default 0); for ``margin`` the
    margin above which to cut (in [-1, 1], default 0). ``window``: for ``ppl`` the LM's sliding
    context in its own tokens; for ``margin`` how much of the current chunk the question shows,
    in tokens of ``tokenizer``. ``chunk_size`` (hard max) and ``min_size`` count tokens of
    ``tokenizer``. ``stats`` counts documents, LM calls, tokens scored and unparsed answers over
    the chunker's life. ``chunk(doc, progress=...)`` reports ``(done, total)`` as it goes
    (tokens for ``ppl``, boundaries for ``margin``).
    """

    llm: Any = llm_field()
    method: Literal["ppl", "margin"] = "ppl"
    threshold: float | None = None
    chunk_size: int = 256
    min_size: int = 0
    tokenizer: str = "cl100k"
    window: int = 1024
    prompt: str = MARGIN_PROMPT
    language: str = "en"
    spacy_model: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.method, "method", ("ppl", "margin"), what="method")
        needs = (TokenLogprobLLM,) if self.method == "ppl" else (ScoresOptions,)
        self.llm = build_llm(self.llm, needs,
                             why=f"the perplexity chunker's {self.method!r} method")
        if self.threshold is not None:
            low, high = (0.0, math.inf) if self.method == "ppl" else (-1.0, 1.0)
            check_float(self.threshold, "threshold", min=low, max=high)
        check_int(self.chunk_size, "chunk_size", min=1)
        check_int(self.min_size, "min_size", min=0)
        check_int(self.window, "window", min=2)
        check_tokenizer_name(self.tokenizer)
        if not isinstance(self.language, str) or not self.language:
            raise ConfigError(f"must be a spaCy language code; got {self.language!r}",
                              path="language")
        if self.method == "margin":
            check_template(self.prompt, {"first", "second"}, path="prompt")
        self.stats: dict[str, int] = {"documents": 0, "llm_calls": 0, "tokens_scored": 0,
                                      "unparsed": 0}

    def chunk(self, doc: Document, *, progress: Progress | None = None) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        bud = budget(self._tok, self.chunk_size)
        units = bud.cut(text, sentence_spans(text, self.language, self.spacy_model))
        if not units:
            return []
        self.stats["documents"] += 1
        if self.method == "ppl":
            starts, strength = self._ppl_cuts(text, units, progress)
        else:
            starts, strength = self._margin_cuts(text, units, progress)
        return chunks_from_cuts(doc, units, starts, strength, bud, self.min_size)

    # -- perplexity chunking --------------------------------------------------------------------

    def sentence_perplexities(
        self, text: str, units: list[tuple[int, int]], progress: Progress | None = None
    ) -> np.ndarray:
        """Log-perplexity of each unit given the text before it (nats per token), ``(n,)``."""
        logprobs = self.llm.token_logprobs(lm_segments(text, units), window=self.window,
                                           progress=progress)
        self.stats["llm_calls"] += 1
        self.stats["tokens_scored"] += int(sum(len(lp) for lp in logprobs))
        return np.array([-float(np.mean(lp)) if len(lp) else np.nan for lp in logprobs])

    def _ppl_cuts(self, text, units, progress) -> tuple[list[int], np.ndarray]:
        ppl = self.sentence_perplexities(text, units, progress)
        t = 0.0 if self.threshold is None else float(self.threshold)
        return [i + 1 for i in local_minima(ppl, t)], minima_depth(ppl)

    # -- margin sampling ------------------------------------------------------------------------

    def _margin_cuts(self, text, units, progress) -> tuple[list[int], np.ndarray]:
        t = 0.0 if self.threshold is None else float(self.threshold)
        n = len(units)
        strength = np.zeros(max(n - 1, 0), dtype=np.float64)
        starts: list[int] = []
        first = 0  # the first unit of the current chunk
        for b in range(n - 1):  # the boundary after unit b
            lo = first
            while lo < b and self._tok.count(text[units[lo][0] : units[b][1]]) > self.window:
                lo += 1  # show only the chunk's last units that fit the window
            prompt = self.prompt.format(first=text[units[lo][0] : units[b][1]],
                                        second=text[units[b + 1][0] : units[b + 1][1]])
            margin = self._margin(prompt)
            if margin is None:
                margin = -math.inf  # unreadable: keep together
            strength[b] = margin if math.isfinite(margin) else -1.0
            if margin > t:
                starts.append(b + 1)
                first = b + 1
            if progress is not None:
                progress(b + 1, n - 1)
        return starts, strength

    def _margin(self, prompt: str) -> float | None:
        scores = self.llm.score(prompt, ["1", "2"])
        self.stats["llm_calls"] += 1
        split, keep = (scores.get(o) if isinstance(scores, dict) else None for o in ("1", "2"))
        vals = [v for v in (split, keep) if isinstance(v, int | float) and math.isfinite(v)]
        if not vals:
            self.stats["unparsed"] += 1
            log.warning("perplexity chunker (margin): no finite score for '1' or '2' in %r; "
                        "keeping the boundary (no cut)", scores)
            return None
        # missing or -inf options count as impossible
        split = split if isinstance(split, int | float) and math.isfinite(split) else -math.inf
        keep = keep if isinstance(keep, int | float) and math.isfinite(keep) else -math.inf
        return math.tanh((split - keep) / 2)  # = (p1 - p2) / (p1 + p2)


def local_minima(values: np.ndarray, threshold: float) -> list[int]:
    """Indices ``i`` (``0 < i < n - 1``) where ``values`` has a local minimum deep enough: lower
    than both neighbours and lower than one of them by ``threshold`` or more, or lower than the
    one before by ``threshold`` and equal to the one after (a plateau's first point). NaN never
    counts as a minimum."""
    out = []
    for i in range(1, len(values) - 1):
        a, v, b = values[i - 1], values[i], values[i + 1]
        if np.isnan(a) or np.isnan(v) or np.isnan(b):
            continue
        if v < a and v < b and (a - v >= threshold or b - v >= threshold):
            out.append(i)
        elif v < a and v == b and a - v >= threshold:
            out.append(i)
    return out


def minima_depth(values: np.ndarray) -> np.ndarray:
    """Strength of the boundary after each unit ``b``: how far below its neighbours unit ``b``
    lies (the larger drop on either side; NaN counts as no drop), ``(n - 1,)``."""
    n = len(values)
    if n < 2:
        return np.zeros(0, dtype=np.float64)
    v = np.nan_to_num(values.astype(np.float64), nan=0.0)
    right = v[1:] - v[:-1]  # unit b + 1 minus unit b
    left = np.full(n - 1, -np.inf)
    left[1:] = v[:-2] - v[1:-1]
    return np.maximum(left, right)
