"""Core value types: frozen, with their invariants checked at construction.

Vectors never live on these types; they travel as float32 ``(n, d)`` arrays aligned with a list
of chunks.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ragkit.errors import DocumentError


def _first_surrogate(text: str) -> int | None:
    if text.isascii():
        return None
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


@dataclass(frozen=True)
class Document:
    """A text to chunk. ``id`` must be unique within a corpus (the loaders use the relative path)."""

    id: str
    text: str
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not self.id:
            raise DocumentError(f"Document.id must be a non-empty str; got {self.id!r}")
        if not isinstance(self.text, str):
            raise DocumentError(
                f"Document {self.id!r}: text must be str; got {type(self.text).__name__}"
            )
        pos = _first_surrogate(self.text)
        if pos is not None:
            raise DocumentError(
                f"Document {self.id!r}: text has a lone surrogate U+{ord(self.text[pos]):04X} at "
                f"char {pos}, which is not valid Unicode; decode the source bytes with "
                "errors='replace' or fix the source"
            )

    def __hash__(self) -> int:
        return hash((self.id, self.text))

    @property
    def content_hash(self) -> str:
        """sha256 of the text: equal texts, equal hash (used to skip unchanged documents)."""
        return hashlib.sha256(self.text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class Chunk:
    """A span of a document: ``doc.text[start:end] == text`` (half-open char offsets)."""

    doc_id: str
    start: int
    end: int
    text: str
    index: int  # order within the document, from 0
    metadata: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not 0 <= self.start <= self.end:
            raise ValueError(f"Chunk needs 0 <= start <= end; got start={self.start}, end={self.end}")
        if len(self.text) != self.end - self.start:
            raise ValueError(
                f"Chunk text has {len(self.text)} chars but its span [{self.start}, {self.end}) "
                f"has {self.end - self.start}"
            )

    def __hash__(self) -> int:
        return hash((self.doc_id, self.start, self.end, self.text))

    @property
    def id(self) -> str:
        """Deterministic: the same document span always has the same id."""
        return f"{self.doc_id}:{self.start}-{self.end}"

    @classmethod
    def of(cls, doc: Document, start: int, end: int, index: int, **metadata: Any) -> Chunk:
        """The chunk of ``doc`` spanning ``[start, end)``, its text sliced from the document."""
        return cls(doc.id, start, end, doc.text[start:end], index, metadata)


@dataclass(frozen=True)
class Hit:
    """A retrieved chunk with its relevance score (higher is better) and rank (0 = best)."""

    chunk: Chunk
    score: float
    rank: int = 0

    def __hash__(self) -> int:
        return hash((self.chunk, self.score, self.rank))

    @property
    def citation(self) -> str:
        """Where the chunk comes from: ``source:start-end`` (``source`` falls back to the doc id)."""
        source = self.chunk.metadata.get("source", self.chunk.doc_id)
        return f"{source}:{self.chunk.start}-{self.chunk.end}"


@dataclass(frozen=True)
class Answer:
    """What ``RAGPipeline.answer`` returns: generated text (``None`` without a generator) and the
    hits it was given, which are its citations."""

    query: str
    text: str | None
    hits: Sequence[Hit]
    timings: Mapping[str, float] = field(default_factory=dict)

    def __hash__(self) -> int:
        return hash((self.query, self.text, tuple(self.hits)))
