"""Rerankers: re-score a query's hits with a stronger (slower) model and sort them again.

``Hit`` is frozen, so a reranker returns new hits: same chunks, the reranker's scores, ranks
0..n-1 in the new order. The first-stage score is not kept on the hit; callers that want both
use ``scores(query, hits)``, which returns the new scores aligned with the hits as given.

- ``CrossEncoderReranker``: a sentence-transformers ``CrossEncoder`` reads each (query, chunk
  text) pair. No cross-encoder ships its weights on PyPI, so ``model`` must name a local folder
  (or a hub id already in the local Hugging Face cache).
- ``LLMReranker``: pointwise; asks an LLM for a 0-10 relevance grade per hit.
- ``QueryLikelihoodReranker``: scores a hit by how likely the LLM finds the query after the
  hit's text (UPR); nothing to parse, so it suits small models.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import numpy as np

from ragkit._deps import require
from ragkit.checks import check_choice, check_int
from ragkit.config import COMPONENT_KIND, build, check_template
from ragkit.errors import ConfigError, first_line
from ragkit.protocols import Completes, Fingerprinted, ScoresOptions, TokenLogprobLLM, provides
from ragkit.types import Hit

log = logging.getLogger(__name__)


def _sorted_hits(hits: Sequence[Hit], scores: Sequence[float]) -> list[Hit]:
    """Hits in order of ``scores`` descending; ties keep their given (first-stage) order."""
    order = sorted(range(len(hits)), key=lambda i: -scores[i])
    return [Hit(chunk=hits[i].chunk, score=float(scores[i]), rank=r) for r, i in enumerate(order)]


# -- cross-encoder --------------------------------------------------------------------------------


@dataclass(kw_only=True)
class CrossEncoderReranker:
    """Scores (query, chunk text) pairs with a sentence-transformers ``CrossEncoder`` loaded on
    first use from ``model`` (a local cross-encoder folder). ``max_length`` caps the pair's
    tokens (default: the model's own limit); longer pairs are truncated by the model.
    The model must give one score per pair (``num_labels=1``); its default activation
    (a sigmoid) is applied, so scores are in (0, 1)."""

    model: str | None = None
    batch_size: int = 32
    device: str = "cpu"
    max_length: int | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or not self.model.strip():
            raise ConfigError(
                f"a cross-encoder model is required; got {self.model!r}. No cross-encoder ships "
                "its weights on PyPI, so give the path of a local cross-encoder folder (one saved "
                "with CrossEncoder.save_pretrained, e.g. a copy of "
                "cross-encoder/ms-marco-MiniLM-L6-v2) or a hub id already in the local Hugging "
                "Face cache",
                path="model",
            )
        check_int(self.batch_size, "batch_size", min=1)
        check_int(self.max_length, "max_length", min=2, null=True)
        if not isinstance(self.device, str) or not self.device:
            raise ConfigError(
                f"expected a torch device such as 'cpu' or 'cuda:0'; got {self.device!r}",
                path="device",
            )

    @cached_property
    def _model(self) -> Any:
        from ragkit.retrieval.embedders import no_load_progress_bars

        st = require("sentence_transformers", extra="embed", component="reranker 'cross-encoder'")
        local = Path(self.model).expanduser()
        where = str(local.resolve()) if local.exists() else self.model
        log.info("loading cross-encoder %s on %s", where, self.device)
        try:
            with no_load_progress_bars():
                model = st.CrossEncoder(where, device=self.device, max_length=self.max_length)
        except Exception as exc:  # OSError, ValueError, ... from transformers / huggingface_hub
            raise ConfigError(
                f"cannot load cross-encoder {self.model!r} ({type(exc).__name__}: "
                f"{first_line(exc)}); no model hub is reachable offline, so give the path of a "
                "local cross-encoder folder",
                path="model",
            ) from exc
        if model.num_labels != 1:
            raise ConfigError(
                f"cross-encoder {self.model!r} gives {model.num_labels} scores per pair; a "
                "reranker needs a model with one relevance score (num_labels=1)",
                path="model",
            )
        return model

    def scores(self, query: str, hits: Sequence[Hit]) -> np.ndarray:
        """The cross-encoder's score of each hit, float32 ``(len(hits),)``, in the given order."""
        if not hits:
            return np.zeros(0, dtype=np.float32)
        pairs = [(query, h.chunk.text) for h in hits]
        out = self._model.predict(
            pairs, batch_size=self.batch_size, show_progress_bar=False, convert_to_numpy=True
        )
        return np.asarray(out, dtype=np.float32).reshape(len(hits))  # (n,)

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """The hits sorted by the cross-encoder's score (ties keep their first-stage order)."""
        hits = list(hits)
        return _sorted_hits(hits, self.scores(query, hits).tolist())


# -- LLM ------------------------------------------------------------------------------------------


# the abilities an LLM reranker asks for, declared in the kernel (ragkit.protocols); the old names
# stay importable from here
LLM = Completes
ScoringLLM = ScoresOptions


DEFAULT_TEMPLATE = (
    "Rate how relevant the passage is to the query, from 0 (unrelated) to 10 (answers it "
    "fully).\n\nQuery: {query}\n\nPassage: {text}\n\nAnswer with a single integer from 0 to 10."
    "\nRelevance:"
)
GRADES = tuple(str(i) for i in range(11))

# scale phrases an answer may echo ("8/10", "on a scale of 0 to 10"): not the grade itself
_SCALE = re.compile(
    r"\b0\s*(?:-|–|—|to)\s*10\b|(?:/|\bout\s+of)\s*10\b(?![.,]\d)|\bscale\s+of\s+10\b", re.I
)
_NUMBER = re.compile(r"(?<![\w.])-?\d+(?:[.,]\d+)?(?![\w]|[.,]\d)")


def parse_grade(answer: str) -> float | None:
    """The first number from 0 to 10 in a sloppy answer, ignoring echoes of the scale;
    ``None`` if there is none.

    >>> parse_grade("**8**/10 - the passage answers it"), parse_grade("On a scale of 0-10: 7.5")
    (8.0, 7.5)
    """
    if not isinstance(answer, str):
        return None
    for match in _NUMBER.finditer(_SCALE.sub(" ", answer)):
        value = float(match.group().replace(",", "."))
        if 0 <= value <= 10:
            return value
    return None


@dataclass(kw_only=True)
class LLMReranker:
    """Pointwise LLM reranking: each hit is graded 0-10 by ``llm`` with ``template`` (which must
    hold ``{query}`` and ``{text}``; write a literal brace as ``{{``), and the hits are sorted by
    grade, ties keeping their first-stage order. The new scores are the grades (0.0-10.0).

    ``llm`` is an object with ``complete(prompt) -> str`` (``LLM``) or
    ``score(prompt, options) -> {option: logprob}`` (``ScoringLLM``), or the spec of one, built
    as a ``generator`` component: ``{name: transformers}`` (SmolLM2 by default) has both
    abilities; in tests, ``ragkit.testing:ScriptedLLM``.
    ``mode="auto"`` uses ``score`` when the LLM has it: the grade is then the expected value of
    the options "0".."10" under the model's probabilities, a finer signal than one sampled number.

    An answer with no number from 0 to 10 (or a ``score`` dict with no finite option) is not
    guessed at: that hit keeps its first-stage position, the others are sorted by grade around
    it, and its score copies the hit before it (the next one's if it comes first); if no answer
    parses, the hits come back in the given order with their first-stage scores. Each such answer is logged as a warning and
    counted in ``stats["unparsed"]`` (``stats["graded"]`` counts the answers read).

    ``cache``: a sqlite file (e.g. ``~/.cache/ragkit/grades.sqlite``) that keeps every grade,
    keyed by the LLM's ``fingerprint`` (weights, tokenizer, dtype) and the exact prompt, so a
    re-run, or another path of ``ragkit eval retrieval`` grading the same passages, asks the LLM
    only for prompts it has not seen. Needs an LLM with a ``fingerprint`` (the generation
    backends have one). A sampled ``complete`` answer is cached like any other: delete the file
    to sample again. ``stats["cached"]`` counts grades taken from it.
    """

    llm: Any = field(default=None, metadata={COMPONENT_KIND: "generator"})
    template: str = DEFAULT_TEMPLATE
    mode: Literal["auto", "complete", "score"] = "auto"
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.llm is None:
            raise ConfigError(
                "an LLM is required: an object with complete(prompt) -> str or score(prompt, "
                "options) -> dict, such as a generation backend (or ragkit.testing.ScriptedLLM "
                "in tests)",
                path="llm",
            )
        if isinstance(self.llm, str | Mapping):
            self.llm = build("generator", self.llm, path="llm")
        check_choice(self.mode, "mode", ("auto", "complete", "score"), what="mode")
        can_complete = isinstance(self.llm, Completes)
        can_score = isinstance(self.llm, ScoresOptions)
        need = {"auto": can_complete or can_score, "complete": can_complete, "score": can_score}
        if not need[self.mode]:
            what = {"auto": "complete(prompt) or score(prompt, options)",
                    "complete": "complete(prompt)", "score": "score(prompt, options)"}[self.mode]
            raise ConfigError(
                f"{type(self.llm).__name__} has no {what} method (mode={self.mode!r})", path="llm"
            )
        self._check_template()
        self.cache = _check_cache(self.cache, self.llm)
        self.stats: dict[str, int] = {"graded": 0, "unparsed": 0, "cached": 0}

    @cached_property
    def _grade_cache(self) -> Any:
        from ragkit.retrieval.cache import GradeCache

        return GradeCache(self.cache)

    @cached_property
    def _llm_key(self) -> str:
        return _llm_key(self.llm, "score" if self._scores_options else "complete")

    def _check_template(self) -> None:
        check_template(self.template, {"query", "text"}, path="template")

    @property
    def _scores_options(self) -> bool:
        return self.mode == "score" or (
            self.mode == "auto" and isinstance(self.llm, ScoresOptions)
        )

    def grade(self, query: str, text: str) -> tuple[float | None, str]:
        """The grade of one passage (``None`` if the answer cannot be read) and the raw answer."""
        prompt = self.template.format(query=query, text=text)
        if self.cache is not None:
            found = self._grade_cache.get(self._llm_key, prompt)
            if found is not None:
                self.stats["cached"] += 1
                return found
        if self._scores_options:
            logprobs = self.llm.score(prompt, GRADES)
            value, answer = _expected_grade(logprobs), repr(logprobs)
        else:
            answer = self.llm.complete(prompt)
            value = parse_grade(answer)
        if self.cache is not None:
            self._grade_cache.put(self._llm_key, prompt, value, answer)
        return value, answer

    def scores(self, query: str, hits: Sequence[Hit]) -> list[float | None]:
        """The grade of each hit in the given order; ``None`` where the answer did not parse."""
        grades: list[float | None] = []
        for hit in hits:
            value, answer = self.grade(query, hit.chunk.text)
            self.stats["graded"] += 1
            if value is None:
                self.stats["unparsed"] += 1
                log.warning(
                    "LLM reranker: no grade from 0 to 10 in the answer %.80r for chunk %s; it "
                    "keeps its first-stage position", answer, hit.chunk.id,
                )
            grades.append(value)
        return grades

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """The hits sorted by grade; unparsed ones keep their first-stage position."""
        hits = list(hits)
        grades = self.scores(query, hits)
        graded = [i for i, g in enumerate(grades) if g is not None]
        if not graded:
            return [Hit(chunk=h.chunk, score=h.score, rank=r) for r, h in enumerate(hits)]
        placed: list[int] = list(range(len(hits)))  # slot -> index into hits
        for slot, i in zip(graded, sorted(graded, key=lambda i: -grades[i])):
            placed[slot] = i
        out_scores = [grades[i] for i in placed]
        for slot in range(len(placed)):  # an unparsed hit copies its neighbour's grade
            if out_scores[slot] is None:
                before = [s for s in out_scores[:slot] if s is not None]
                out_scores[slot] = before[-1] if before else next(
                    s for s in out_scores[slot:] if s is not None)
        return [Hit(chunk=hits[i].chunk, score=float(s), rank=r)
                for r, (i, s) in enumerate(zip(placed, out_scores))]


def _check_cache(cache: Any, llm: Any) -> str | None:
    """A reranker's ``cache`` setting: null, or a file path when ``llm`` has a fingerprint."""
    if cache is None:
        return None
    if not isinstance(cache, str | Path) or not str(cache):
        raise ConfigError(f"must be a file path or null; got {cache!r}", path="cache")
    if not provides(llm, Fingerprinted):  # not isinstance: reading a fingerprint loads the model
        raise ConfigError(
            f"a grade cache needs an LLM with a fingerprint (weights, tokenizer) to key its "
            f"grades by; {type(llm).__name__} has none: set cache: null",
            path="cache",
        )
    return str(cache)


def _llm_key(llm: Any, kind: str) -> str:
    import hashlib
    import json

    spec = {"llm": llm.fingerprint, "mode": kind}
    return hashlib.sha256(json.dumps(spec, sort_keys=True, default=str).encode()).hexdigest()[:32]


def _expected_grade(logprobs: Any) -> float | None:
    if not isinstance(logprobs, Mapping):
        return None
    pairs = [(float(opt), float(lp)) for opt, lp in logprobs.items()
             if opt in GRADES and isinstance(lp, int | float) and math.isfinite(lp)]
    if not pairs:
        return None
    values = np.array([v for v, _ in pairs])  # (options,)
    lp = np.array([p for _, p in pairs])
    weights = np.exp(lp - lp.max())  # softmax over the offered options
    return float(values @ weights / weights.sum())


# -- query likelihood (UPR) -----------------------------------------------------------------------

QUERY_LIKELIHOOD_TEMPLATE = (
    "Passage: {text}\n\nPlease write a question based on this passage.\nQuestion:"
)


@dataclass(kw_only=True)
class QueryLikelihoodReranker:
    """Query likelihood (UPR, Sachan et al. 2022): a hit's score is the mean log-probability per
    token of the query, read by ``llm`` right after ``template`` filled with the hit's text
    (``{text}``; the query follows after one space). No grade is asked for and none can fail
    to parse, which suits small models that are poor judges but fair language models.

    ``llm`` needs ``token_logprobs(segments)`` (``ragkit.protocols.TokenLogprobLLM``; the
    transformers generator has it, as does ``ragkit.testing:FakeLM`` for tests). ``window``:
    the LM context in its tokens (passage plus query). ``cache``: as for the ``llm`` reranker, a
    sqlite file of scores keyed by the LLM's fingerprint and the exact text read.
    ``stats["scored"]`` counts passages read, ``stats["cached"]`` those taken from the cache.
    """

    llm: Any = field(default=None, metadata={COMPONENT_KIND: "generator"})
    template: str = QUERY_LIKELIHOOD_TEMPLATE
    window: int = 2048
    cache: str | None = None

    def __post_init__(self) -> None:
        if self.llm is None:
            raise ConfigError("an LLM with token_logprobs(segments) is required, such as "
                              "{name: transformers}", path="llm")
        if isinstance(self.llm, str | Mapping):
            self.llm = build("generator", self.llm, path="llm")
        if not isinstance(self.llm, TokenLogprobLLM):
            raise ConfigError(f"{type(self.llm).__name__} has no token_logprobs(segments) method, "
                              "which query likelihood needs", path="llm")
        check_template(self.template, {"text"}, path="template")
        check_int(self.window, "window", min=2)
        self.cache = _check_cache(self.cache, self.llm)
        self.stats: dict[str, int] = {"scored": 0, "cached": 0}

    @cached_property
    def _score_cache(self) -> Any:
        from ragkit.retrieval.cache import GradeCache

        return GradeCache(self.cache)

    @cached_property
    def _llm_key(self) -> str:
        return _llm_key(self.llm, f"query-likelihood/{self.window}")

    def score(self, query: str, text: str) -> float:
        """Mean log-probability per token of ``query`` after the template filled with ``text``."""
        if not isinstance(query, str) or not query.strip():
            raise ConfigError(f"must be a non-empty string; got {query!r}", path="query")
        prefix = self.template.format(text=text)
        key = prefix + "\x00" + query
        if self.cache is not None:
            found = self._score_cache.get(self._llm_key, key)
            if found is not None and found[0] is not None:
                self.stats["cached"] += 1
                return found[0]
        _, lps = self.llm.token_logprobs([prefix, " " + query.strip()], window=self.window)
        value = float(np.mean(lps)) if len(lps) else -math.inf
        self.stats["scored"] += 1
        if self.cache is not None and math.isfinite(value):
            self._score_cache.put(self._llm_key, key, value, "")
        return value

    def scores(self, query: str, hits: Sequence[Hit]) -> list[float]:
        return [self.score(query, h.chunk.text) for h in hits]

    def rerank(self, query: str, hits: Sequence[Hit]) -> list[Hit]:
        """The hits sorted by query likelihood; ties keep their first-stage order."""
        hits = list(hits)
        return _sorted_hits(hits, self.scores(query, hits))
