"""Recursive splitting on a separator hierarchy, then greedy merging up to the budget.

The text is split at the first separator (paragraphs); every piece still over the budget is split
at the next one (lines, sentence ends, spaces), and a piece with no separator left is cut into
token windows. Adjacent pieces are then merged back up to ``chunk_size`` tokens, each chunk
starting with up to ``overlap`` tokens of whole pieces from the end of the previous one.
A separator stays with the piece before it, so pieces tile the text and offsets stay exact.
"""

from __future__ import annotations

import array
from dataclasses import dataclass

import numpy as np

from ragkit.chunkers.base import (
    ChunkMany,
    Columns,
    TokenIndex,
    TokenizerByName,
    check_size,
    chunks_of,
    pack_indexed,
    token_windows,
)
from ragkit import progress
from ragkit.errors import ConfigError
from ragkit.tokenizers import check_tokenizer_name
from ragkit.types import Chunk, Document

DEFAULT_SEPARATORS = ("\n\n", "\n", ". ", "? ", "! ", "。", "！", "？", "; ", ", ", " ")


@dataclass(kw_only=True)
class RecursiveChunker(ChunkMany, TokenizerByName):
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

    def chunk(self, doc: Document) -> list[Chunk]:
        return chunks_of(doc, self.chunk_spans(doc))

    def chunk_spans(self, doc: Document) -> list[tuple[int, int, int]]:
        """The ``(start, end, tokens)`` of ``chunk(doc)``'s chunks (``ChunksBySpans``)."""
        text = doc.text
        if not text.strip():
            return []
        report = progress.listener()  # a big document reports how far it is (the CLI's bar)
        index = TokenIndex(text, self._tok)  # tokenized once; spans are counted from it
        split = None
        if report is not None:  # tokenizing is ~10% of the work, splitting and packing ~45% each
            report(0.1)
            split = _Reporter(report, 0.1, 0.45, len(text))
        flat = self._split(index, 0, len(text), 0, split)
        starts, ends = flat[0::2], flat[1::2]  # compact: 8 bytes a value, no int objects
        del flat
        # each piece's size in context, which pack only uses to choose: it counts chunks exactly
        at, dt = index.starts.searchsorted, index.starts.dtype
        sizes = (at(np.frombuffer(ends, dtype=np.int64).astype(dt))
                 - at(np.frombuffer(starts, dtype=np.int64).astype(dt)))
        tokens = array.array("q")
        tokens.frombytes(sizes.astype(np.int64, copy=False).tobytes())
        pieces = Columns(starts, ends, tokens)
        del starts, ends, sizes, tokens
        merged = pack_indexed(index, pieces, self.chunk_size, overlap_tokens=self.overlap,
                              report=None if report is None else
                              _Reporter(report, 0.55, 0.45, len(text)))
        del pieces, index  # a huge document's token table goes before its chunks' texts come
        return merged

    def _split(self, index: TokenIndex, lo: int, hi: int, level: int,
               report: _Reporter | None = None) -> array.array:
        """Spans tiling ``[lo, hi)``, each within the budget, as one flat ``array('q')`` of
        ``start, end`` pairs (16 bytes a span; a list of tuples took ~100 for the ~1.7 M pieces
        of a 50 MB one-line file)."""
        out = array.array("q")
        self._split_into(out, index, lo, hi, level, index.sure_fit(self.chunk_size), report)
        return out

    def _split_into(
        self, out: array.array, index: TokenIndex, lo: int, hi: int, level: int,
        sure: int, report: _Reporter | None = None,
    ) -> None:
        """Appends to ``out`` the spans tiling ``[lo, hi)`` (flat: start, end, start, end...).
        A span of at most ``sure`` chars fits the budget without counting; it is decided here,
        without a call per piece (most pieces of a document are short: ~35,000 of them on the
        5 MB benchmark corpus). ``report`` (the outermost call only) hears the offset reached."""
        if index.at_most(lo, hi, self.chunk_size):
            out.append(lo)
            out.append(hi)
            return
        text = index.text
        while level < len(self.separators):
            bounds = after_each(text, lo, hi, self.separators[level], index)
            level += 1
            if len(bounds) > 2:
                a = bounds[0]
                for b in bounds[1:]:
                    if b - a <= sure:
                        out.append(a)
                        out.append(b)
                    else:
                        self._split_into(out, index, a, b, level, sure)
                    if report is not None:
                        report(b)
                    a = b
                return
        for s, e, _ in token_windows(text, lo, hi, self._tok, self.chunk_size):
            out.append(s)
            out.append(e)


class _Reporter:
    """Turns offsets reached in one phase into ``progress`` fractions of the whole call, at most
    every ``1/256`` of the text."""

    def __init__(self, report, base: float, share: float, length: int) -> None:
        self.report, self.base, self.share = report, base, share
        self.length = max(1, length)
        self.step = max(1, self.length // 256)
        self.next = self.step

    def __call__(self, pos: int) -> None:
        if pos >= self.next:
            self.next = pos + self.step
            self.report(self.base + self.share * pos / self.length)


def after_each(
    text: str, lo: int, hi: int, sep: str, index: TokenIndex | None = None
) -> list[int]:
    """Cut positions in ``[lo, hi]``: ``lo``, just after every ``sep`` that ends a grapheme
    cluster (a space carrying a combining mark is not a separator), and ``hi``."""
    bounds = [lo]
    check = index is not None and index.has_clusters  # else every position is a boundary
    step = len(sep)
    find = text.find
    pos = find(sep, lo, hi)
    while pos != -1:
        end = pos + step
        if lo < end < hi and (not check or index.on_boundary(end)):
            bounds.append(end)
        pos = find(sep, end, hi)
    bounds.append(hi)
    return bounds
