"""Fixed-size token windows with overlap: the baseline every other strategy is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from ragkit import progress
from ragkit.chunkers.base import (
    ChunkMany,
    TokenizerByName,
    check_size,
    chunks_of,
    token_windows,
)
from ragkit.tokenizers import check_tokenizer_name
from ragkit.types import Chunk, Document


@dataclass(kw_only=True)
class FixedChunker(ChunkMany, TokenizerByName):
    """Windows of ``chunk_size`` tokens; consecutive windows share ``overlap`` tokens.

    Windows are cut only where a token and a grapheme cluster start, and lose their edge
    whitespace, so a window may hold slightly fewer tokens than ``chunk_size``.
    """

    chunk_size: int = 256
    overlap: int = 0
    tokenizer: str = "cl100k"

    def __post_init__(self) -> None:
        check_size(self.chunk_size, self.overlap)
        check_tokenizer_name(self.tokenizer)

    def chunk(self, doc: Document) -> list[Chunk]:
        return chunks_of(doc, self.chunk_spans(doc))

    def chunk_spans(self, doc: Document) -> list[tuple[int, int, int]]:
        """The ``(start, end, tokens)`` of ``chunk(doc)``'s chunks (``ChunksBySpans``)."""
        text = doc.text
        listener = progress.listener()  # a big document reports how far it is (the CLI's bar)
        report = None
        if listener is not None:  # tokenizing counts 30% of the work, the windows 70%
            length = max(1, len(text))
            step, marks = max(1, length // 256), [0]

            def report(pos: int) -> None:
                if pos == 0 or pos >= marks[0]:
                    marks[0] = pos + step
                    listener(0.3 + 0.7 * pos / length)

        windows = token_windows(text, 0, len(text), self._tok, self.chunk_size, self.overlap,
                                report)
        return windows
