"""Recursive splitting on a separator hierarchy, then greedy merging up to the budget.

The text is split at the first separator (paragraphs); every piece still over the budget is split
at the next one (lines, sentence ends, spaces), and a piece with no separator left is cut into
token windows. Adjacent pieces are then merged back up to ``chunk_size`` tokens, each chunk
starting with up to ``overlap`` tokens of whole pieces from the end of the previous one.
A separator stays with the piece before it, so pieces tile the text and offsets stay exact.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

import numpy as np

from chunkers.base import (
    check_size,
    grapheme_starts,
    make_chunks,
    on_boundary,
    pack,
    token_windows,
)
from ragkit.errors import ConfigError
from ragkit.tokenizers import Tokenizer, check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Document

DEFAULT_SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "。", "！", "？", "; ", ", ", " ")


@dataclass(kw_only=True)
class RecursiveChunker:
    chunk_size: int = 256
    overlap: int = 0
    tokenizer: str = "cl100k"
    separators: tuple[str, ...] = DEFAULT_SEPARATORS

    def __post_init__(self) -> None:
        check_size(self.chunk_size, self.overlap)
        check_tokenizer_name(self.tokenizer)
        if isinstance(self.separators, str) or not all(
            isinstance(s, str) and s for s in self.separators
        ):
            raise ConfigError(
                f"must be a list of non-empty strings; got {self.separators!r}", path="separators"
            )
        self.separators = tuple(self.separators)

    @cached_property
    def _tok(self) -> Tokenizer:
        return load_tokenizer(self.tokenizer)

    def chunk(self, doc: Document) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        pieces = self._split(text, 0, len(text), 0, grapheme_starts(text))
        merged = pack(text, pieces, self.chunk_size, self._tok.count, overlap_tokens=self.overlap)
        return make_chunks(doc, [(s, e) for s, e, _ in merged], [n for *_, n in merged])

    def _split(
        self, text: str, lo: int, hi: int, level: int, graphemes: np.ndarray | None
    ) -> list[tuple[int, int, int]]:
        n = self._tok.count(text[lo:hi])
        if n <= self.chunk_size:
            return [(lo, hi, n)]
        while level < len(self.separators):
            sep = self.separators[level]
            bounds = _after_each(text, lo, hi, sep, graphemes)
            level += 1
            if len(bounds) > 2:
                out: list[tuple[int, int, int]] = []
                for a, b in zip(bounds, bounds[1:]):
                    out.extend(self._split(text, a, b, level, graphemes))
                return out
        return token_windows(text, lo, hi, self._tok, self.chunk_size)


def _after_each(
    text: str, lo: int, hi: int, sep: str, graphemes: np.ndarray | None = None
) -> list[int]:
    """Cut positions in ``[lo, hi]``: ``lo``, just after every ``sep`` that ends a grapheme
    cluster (a space carrying a combining mark is not a separator), and ``hi``."""
    bounds = [lo]
    pos = text.find(sep, lo, hi)
    while pos != -1:
        end = pos + len(sep)
        if lo < end < hi and on_boundary(graphemes, end):
            bounds.append(end)
        pos = text.find(sep, end, hi)
    bounds.append(hi)
    return bounds
