"""LumberChunker: a language model reads a window of paragraphs and names where the content shifts.

From "LumberChunker: Long-Form Narrative Document Segmentation" (Duarte et al., 2024). The
document is cut into paragraphs (its lines; a line longer than ``chunk_size`` tokens is cut into
sentences, and a sentence still too long into token windows). From the current paragraph on,
consecutive paragraphs are grouped while their tokens fit in ``window``, plus the paragraph that
overflows it; the group is shown to the LM with paragraph IDs 1..n and it answers with the ID of
the first paragraph where the content clearly changes. The chunk is the paragraphs before that
one, and the next group starts at it.

``mode``: ``complete`` asks for a free-text answer (the paper's way); ``score`` reads the prompt
once and takes the valid ID (2..n) to which the LM gives the highest log-probability as the
start of its reply (``score(prompt, options)``), so every call yields an ID; ``auto`` (default)
uses ``score`` when the LLM has it. A small model (SmolLM2-135M) mostly answers "1." in free
text, which is never a valid cut; scoring the valid options still reads its preference. Small
models also prefer some IDs whatever the text (SmolLM2-135M nearly always scores "2" highest), so
with ``calibrate`` (default) each option's log-probability is taken relative to the same prompt
with every paragraph replaced by "N/A" (contextual calibration, Zhao et al. 2021; one extra call
per group size, cached): the answer is the ID the text makes likelier than it is a priori.

Free-text answers are read leniently (``parse_paragraph_id``: "Answer: ID 3", "ID: 0003",
"paragraph 3", "3."). An answer with no ID, or with an ID that cannot start a new chunk (1, or past the
group), falls back to the rule a plain window packer follows: cut before the group's last
paragraph (the one that overflowed the window), or, for the document's last group (which fits),
do not cut. Fallbacks are never silent: each is logged as a warning and counted in
``stats["unparsed"]`` (no ID found) or ``stats["invalid"]`` (an ID out of range).

The last group of the document is asked once: the part before the named paragraph is one
chunk, the rest another. Then sizes are made hard (``ragkit.chunkers.llm``): a chunk over
``chunk_size`` (possible when ``window`` is larger) is split at the middle paragraph boundary
until it fits, and chunks under ``min_size`` are merged across the nearest fallback cut first.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ragkit.chunkers.llm import (
    accepts,
    budget,
    build_llm,
    chunks_from_cuts,
    llm_field,
)
from ragkit.chunkers.sentence import sentence_spans
from ragkit.checks import check_bool, check_choice, check_int
from ragkit.config import check_template
from ragkit.errors import ConfigError
from ragkit.protocols import Completes, ScoresOptions
from ragkit.chunkers.base import TokenizerByName
from ragkit.tokenizers import check_tokenizer_name
from ragkit.types import Chunk, Document

log = logging.getLogger(__name__)

Progress = Callable[[int, int], None]

DEFAULT_PROMPT = (
    "Below is a document split into paragraphs, each starting with its ID.\n\n{paragraphs}\n\n"
    "Find the first paragraph (not ID 1) where the content clearly changes compared to the "
    "paragraphs before it. Reply with its ID number only."
)

_ID = re.compile(r"\bID\s*[:#.]?\s*(\d+)", re.I)
_PARAGRAPH = re.compile(r"\bparagraph\s*[:#]?\s*(\d+)", re.I)
_NUMBER = re.compile(r"(?<![\w.])(\d+)(?![\w]|\.\d)")
_LINE = re.compile(r"[^\n]+")


def parse_paragraph_id(answer: Any) -> int | None:
    """The paragraph ID named in a sloppy answer, or ``None``: the first ``ID <n>``, else the
    first ``paragraph <n>``, else the first standalone integer.

    >>> [parse_paragraph_id(a) for a in ("Answer: ID 0003", "It is paragraph 4.", "none")]
    [3, 4, None]
    """
    if not isinstance(answer, str):
        return None
    for pattern in (_ID, _PARAGRAPH, _NUMBER):
        m = pattern.search(answer)
        if m is not None:
            return int(m.group(1))
    return None


@dataclass(kw_only=True)
class LumberChunker(TokenizerByName):
    """Paragraph groups of up to ``window`` tokens; the LM names the paragraph where the content
    shifts and the chunk ends before it (see the module).

    ``chunk_size`` (hard max), ``min_size`` and ``window`` count tokens of ``tokenizer``;
    ``window: null`` is ``chunk_size``, so any answer gives a chunk within the budget.
    ``prompt`` must hold ``{paragraphs}`` (the lines ``ID <k>: <text>``). ``mode``: ``auto``,
    ``complete`` or ``score`` (see the module); ``calibrate`` (score mode) divides out the LM's
    content-free preference for each ID. ``max_answer_tokens`` caps a free-text reply when
    the LLM's ``complete`` accepts ``max_new_tokens``. ``stats`` counts
    documents, LM calls, and fallbacks (``unparsed``, ``invalid``) over the chunker's life.
    ``chunk(doc, progress=...)`` reports ``(paragraphs done, paragraphs)``.
    """

    llm: Any = llm_field()
    chunk_size: int = 256
    min_size: int = 0
    window: int | None = None
    tokenizer: str = "cl100k"
    prompt: str = DEFAULT_PROMPT
    max_answer_tokens: int = 16
    mode: Literal["auto", "complete", "score"] = "auto"
    calibrate: bool = True
    language: str = "en"
    spacy_model: str | None = None

    def __post_init__(self) -> None:
        check_choice(self.mode, "mode", ("auto", "complete", "score"), what="mode")
        needs = (ScoresOptions,) if self.mode == "score" else (Completes,)
        if self.mode == "auto":  # build first, then see what it can do
            self.llm = build_llm(self.llm, (), why="the lumber chunker")
            needs = (ScoresOptions,) if isinstance(self.llm, ScoresOptions) else (Completes,)
        self.llm = build_llm(self.llm, needs, why=f"the lumber chunker (mode {self.mode!r})")
        check_int(self.chunk_size, "chunk_size", min=1)
        check_int(self.min_size, "min_size", min=0)
        check_int(self.window, "window", min=1, null=True)
        check_int(self.max_answer_tokens, "max_answer_tokens", min=1)
        check_tokenizer_name(self.tokenizer)
        check_template(self.prompt, {"paragraphs"}, path="prompt")
        if not isinstance(self.language, str) or not self.language:
            raise ConfigError(f"must be a spaCy language code; got {self.language!r}",
                              path="language")
        check_bool(self.calibrate, "calibrate")
        self.stats: dict[str, int] = {"documents": 0, "llm_calls": 0, "unparsed": 0,
                                      "invalid": 0}
        self._priors: dict[int, dict[str, float]] = {}  # group size -> content-free scores

    @property
    def _scoring(self) -> bool:
        return self.mode == "score" or (
            self.mode == "auto" and isinstance(self.llm, ScoresOptions)
        )

    @cached_property
    def _complete_kwargs(self) -> dict[str, Any]:
        if accepts(self.llm.complete, "max_new_tokens"):
            return {"max_new_tokens": self.max_answer_tokens}
        return {}

    def chunk(self, doc: Document, *, progress: Progress | None = None) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        bud = budget(self._tok, self.chunk_size)
        units = bud.cut(text, self.paragraphs(text))
        if not units:
            return []
        self.stats["documents"] += 1
        sizes = [self._tok.count(text[s:e]) for s, e in units]
        window = self.window or self.chunk_size
        n = len(units)
        starts: list[int] = []
        strength = np.zeros(max(n - 1, 0), dtype=np.float64)  # 1.0 where the LM chose the cut
        s = 0
        while s < n:
            e, total = s, 0  # units [s, e) fit in the window
            while e < n and (e == s or total + sizes[e] <= window):
                total += sizes[e]
                e += 1
            tail = e == n
            end = e if tail else e + 1  # the group is [s, end): with the unit that overflows
            if end - s < 2:
                s = end
                starts.append(s)
                continue
            cut = self._ask(text, units[s:end], tail)
            if cut is not None:
                strength[s + cut - 2] = 1.0  # the boundary before the group's paragraph `cut`
                cut = s + cut - 1
            else:
                cut = n if tail else end - 1
            if cut < n:
                starts.append(cut)
            if tail:
                break
            s = cut
            if progress is not None:
                progress(s, n)
        if progress is not None:
            progress(n, n)
        starts = sorted(set(c for c in starts if 0 < c < n))
        return chunks_from_cuts(doc, units, starts, strength, bud, self.min_size)

    def _prior(self, n: int, options: list[str]) -> dict[str, float]:
        """The options' scores for ``n`` content-free paragraphs (cached per ``n``)."""
        if n not in self._priors:
            blank = "\n".join(f"ID {k}: N/A" for k in range(1, n + 1))
            self._priors[n] = self.llm.score(self.prompt.format(paragraphs=blank), options)
            self.stats["llm_calls"] += 1
        return self._priors[n]

    def paragraphs(self, text: str) -> list[tuple[int, int]]:
        """Lines of ``text``; a line longer than ``chunk_size`` tokens as its sentences."""
        out: list[tuple[int, int]] = []
        for m in _LINE.finditer(text):
            s, e = m.span()
            if not text[s:e].strip():
                continue
            if self._tok.count(text[s:e]) <= self.chunk_size:
                out.append((s, e))
            else:
                line = text[s:e]
                out.extend((s + a, s + b) for a, b in
                           sentence_spans(line, self.language, self.spacy_model))
        return out

    def _ask(self, text: str, group: list[tuple[int, int]], tail: bool) -> int | None:
        """The group's paragraph (1-based, 2..len) that starts new content, or ``None``."""
        lines = "\n".join(f"ID {k}: {text[a:b]}" for k, (a, b) in enumerate(group, 1))
        prompt = self.prompt.format(paragraphs=lines)
        self.stats["llm_calls"] += 1
        if self._scoring:
            options = [str(k) for k in range(2, len(group) + 1)]  # the reply's first tokens
            scores = self.llm.score(prompt, options)
            if self.calibrate:
                prior = self._prior(len(group), options)
                scores = {o: _finite(scores.get(o)) - _finite(prior.get(o), 0.0) for o in options}
            best = max(options, key=lambda o: _finite(scores.get(o)))
            answer = best if _finite(scores.get(best)) > -math.inf else repr(scores)
        else:
            answer = self.llm.complete(prompt, **self._complete_kwargs)
        k = parse_paragraph_id(answer)
        rule = "no cut (last group)" if tail else "cut before the last paragraph"
        if k is None:
            self.stats["unparsed"] += 1
            log.warning("lumber chunker: no paragraph ID in the answer %r; fallback: %s",
                        _short(answer), rule)
            return None
        if not 2 <= k <= len(group):
            self.stats["invalid"] += 1
            log.warning("lumber chunker: answer %r names ID %d, not one of 2..%d; fallback: %s",
                        _short(answer), k, len(group), rule)
            return None
        return k


def _finite(value: Any, default: float = -math.inf) -> float:
    ok = isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
    return float(value) if ok else default


def _short(answer: Any) -> str:
    text = str(answer)
    return text if len(text) <= 80 else text[:77] + "..."
