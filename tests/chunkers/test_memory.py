"""Bounded memory of chunking one huge document (issue 19 item 5), and the exactness of what
was changed for it: cl100k token starts computed piece by piece in int32 give the whole text's.

The bound is on ``tracemalloc``'s peak (Python objects and numpy arrays; the Rust tokenizer's own
buffers are not seen), as a multiple of the text's in-memory size, with room to spare: the
returned chunks alone are ~1.25x the text. Before this work the peaks were 3.95x (recursive) and
3.04x (fixed) on this input; then 2.6x and 2.3x; with spans kept in flat arrays and the token
starts in one buffer, 2.34x both. Taken one at a time (``iter_chunks``), what is held while the
chunks are written out drops from 1.25x to 0.05-0.07x."""

from __future__ import annotations

import random
import sys
import tracemalloc

import numpy as np
import pytest

import ragkit.tokenizers as tokenizers
from ragkit.chunkers.base import iter_chunks
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


@pytest.mark.slow  # ~3-10 s under tracemalloc
@pytest.mark.parametrize("chunker", [RecursiveChunker(chunk_size=256),
                                     FixedChunker(chunk_size=256)], ids=["recursive", "fixed"])
def test_chunks_taken_one_at_a_time_are_never_all_held(chunker):
    """``iter_chunks`` (``ragkit chunk``'s path) makes a chunk when it is taken: while a huge
    document's chunks are written out one by one, the memory held is its spans, not its chunks'
    texts as ``chunk()``'s list holds them; and the chunks are the same. (The peak of the
    chunking itself, in tokenizing, is the same either way: the test above bounds it.)"""
    text = one_line(3_000_000)
    chunker.chunk(Document("warm", text[:200_000]))
    doc = Document("big", text)
    held, seen = [], []
    for take in (chunker.chunk, lambda d: iter_chunks(chunker, d)):
        tracemalloc.start()
        try:
            ids, most = [], 0
            for i, c in enumerate(take(doc)):  # each chunk dropped once its id is kept
                ids.append(c.id)
                if i % 100 == 0:
                    most = max(most, tracemalloc.get_traced_memory()[0])
        finally:
            tracemalloc.stop()
        held.append(most)
        seen.append(ids)
    assert seen[0] == seen[1] and len(seen[0]) > 1000
    assert held[0] > sys.getsizeof(text), held  # the list: every chunk's text, and more
    assert held[1] < 0.2 * held[0], held
