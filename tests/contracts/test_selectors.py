"""One contract, every registered selector: it builds, round-trips its config, and returns hits
ranked 0..n-1 drawn from the hits it was given (``neighbours`` alone adds chunks: their
neighbours); no hits give no hits."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.retrieval.base import SelectionContext, Selector
from ragkit.retrieval.memory_index import MemoryIndex
from ragkit.types import Chunk, Document, Hit
from tests.contracts.registered import components

SELECTORS = components("selector")


@pytest.mark.parametrize("name", SELECTORS)
def test_every_selector_builds_round_trips_and_keeps_its_contract(name):
    selector = build("selector", name)
    assert isinstance(selector, Selector)
    assert build("selector", to_config(selector, "selector")) == selector
    doc = Document("d", " ".join(f"w{i}" for i in range(20)))
    chunks = [Chunk.of(doc, 3 * i, 3 * i + 2, i) for i in range(7)]  # "w0", "w1", ... with gaps
    index = MemoryIndex()
    index.add(chunks, np.eye(7, 8, dtype=np.float32))
    scores = [0.9, 0.8, 0.75, 0.3, 0.2, 0.1, 0.05]
    hits = [Hit(c, s, r) for r, (c, s) in enumerate(zip(chunks, scores))]

    def embed(texts):
        return np.stack([np.eye(8, dtype=np.float32)[int(t[1:]) % 8] for t in texts])

    context = SelectionContext(query_vec=np.ones(8, dtype=np.float32), embed=embed, index=index)
    out = selector.select("query", hits, context)
    assert [h.rank for h in out] == list(range(len(out)))
    if name != "neighbours":  # the one selector that adds chunks
        assert 0 < len(out) <= len(hits)
        assert len({h.chunk.id for h in out}) == len(out)
        assert {h.chunk for h in out} <= {h.chunk for h in hits}
    assert selector.select("query", [], context) == []


# -- every registered selector: what comes back is exact text of the document ---------------------


@pytest.mark.parametrize("name", SELECTORS)
def test_every_selector_returns_exact_spans_of_the_documents(name):
    """Selectors that change spans (neighbours merges, sentence-refine narrows and merges) must
    keep ``doc.text[start:end] == text``, inside the text the given hits (or the index) hold."""
    doc = Document("d", "One fish. Two fish! Red fish? Blue fish.\nOld fish. New fish. " * 3)
    spans = [(0, 19), (10, 40), (41, 61), (61, 100), (90, 130), (130, len(doc.text))]
    chunks = [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(spans)]
    index = MemoryIndex()
    index.add(chunks, np.eye(len(chunks), 8, dtype=np.float32))
    hits = [Hit(c, 1.0 - 0.1 * i, i) for i, c in enumerate(chunks)]

    def embed(texts):
        return np.stack([np.eye(8, dtype=np.float32)[sum(map(ord, t)) % 8] for t in texts])

    context = SelectionContext(query_vec=np.ones(8, dtype=np.float32), embed=embed, index=index)
    out = build("selector", name).select("red fish", hits, context)
    assert out and [h.rank for h in out] == list(range(len(out)))
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    for h in out:
        assert doc.text[h.chunk.start:h.chunk.end] == h.chunk.text
        assert set(range(h.chunk.start, h.chunk.end)) <= covered
