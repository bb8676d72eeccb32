"""Bounded memory of chunking one huge document (issue 19 item 5), and the exactness of what
was changed for it: cl100k token starts computed piece by piece in int32 give the whole text's.

The bound is on ``tracemalloc``'s peak (Python objects and numpy arrays; the Rust tokenizer's own
buffers are not seen), as a multiple of the text's in-memory size, with room to spare: the
returned chunks alone are ~1.25x the text. Before this work the peaks were 3.95x (recursive) and
3.04x (fixed) on this input; now 2.6x and 2.3x."""

from __future__ import annotations

import random
import sys
import tracemalloc

import numpy as np
import pytest

import ragkit.tokenizers as tokenizers
from ragkit.chunkers.fixed import FixedChunker
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.tokenizers import load_tokenizer
from ragkit.types import Document

WORDS = ("the river mill copper harbour orbit tower nectar waggle bridge cipher lantern meadow "
         "quartz signal timber velvet of and a to in engine parse index query chunk vector "
         "Ünïcödé 東京 ✓").split()


def one_line(chars: int, seed: int = 1) -> str:
    """Sentences with no newline at all (as memory_bench's 50 MB file), a few non-ASCII words."""
    rng = random.Random(seed)
    out, n = [], 0
    while n < chars:
        s = " ".join(rng.choices(WORDS, k=rng.randint(5, 25))).capitalize() + ". "
        out.append(s)
        n += len(s)
    return "".join(out)


@pytest.mark.slow  # ~3-10 s under tracemalloc
@pytest.mark.parametrize("chunker", [RecursiveChunker(chunk_size=256),
                                     FixedChunker(chunk_size=256)], ids=["recursive", "fixed"])
def test_chunking_a_big_one_line_document_peaks_under_3x_its_text(chunker):
    text = one_line(3_000_000)
    chunker.chunk(Document("warm", text[:200_000]))  # the tokenizer and its caches, loaded once
    doc = Document("big", text)
    tracemalloc.start()
    try:
        chunks = chunker.chunk(doc)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert len(chunks) > 1000
    assert peak < 3.0 * sys.getsizeof(text), (peak, sys.getsizeof(text))


def test_cl100k_token_starts_by_pieces_are_the_whole_texts(monkeypatch):
    tok = load_tokenizer("cl100k")
    if tok.engine != "bpe-openai":
        pytest.skip("the piecewise path is bpe-openai's")
    text = one_line(60_000, seed=2) + " e\u0301\U0001F44D\U0001F3FD\u6771 " * 50 + one_line(20_000)
    whole = tok._starts(tok._tiktoken_ids(text), 0, np.int64)  # tiktoken, all at once
    monkeypatch.setattr(tokenizers, "_FAST_PIECE", 997)  # many pieces
    pieces = tok.token_starts(text)
    assert pieces.dtype == np.int32
    np.testing.assert_array_equal(pieces, whole)
