"""One contract, every registered index (``ragkit.registry.names("index")``): add, search,
filter, delete, doc_hash, doc_chunks and a save + load round trip, on a small corpus embedded
with the hash embedder. What an index can do beyond the ``Index`` role is read from its declared
abilities (``ragkit.protocols``), so the contract asks each index for exactly what it offers.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.config import build
from ragkit.protocols import HasDocChunks, HasDocHash, ListsChunks, Persistent
from ragkit.testing import HashEmbedder
from ragkit.types import Chunk, Document
from tests.contracts.registered import components, spec

INDEXES = components("index")
EMB = HashEmbedder(dim=64)

# three documents; every chunk has words of its own, so each chunk is its own best match for
# dense (hash) and for sparse (BM25) search alike
TEXTS = {
    "alpha": ["apple banana cherry orchard", "granite basalt quarry stone", "violin cello sonata"],
    "beta": ["comet nebula galaxy telescope", "kayak paddle river rapids"],
    "gamma": ["saffron cumin turmeric spice", "glacier fjord iceberg tundra",
              "lathe chisel workshop timber"],
}


def corpus() -> list[Chunk]:
    chunks = []
    for doc_id, parts in TEXTS.items():
        doc = Document(doc_id, " | ".join(parts))
        pos = 0
        for i, part in enumerate(parts):
            start = doc.text.index(part, pos)
            chunks.append(Chunk.of(doc, start, start + len(part), i, doc_hash=f"h-{doc_id}",
                                   topic=doc_id[0]))
            pos = start + len(part)
    return chunks


def filled(name: str):
    index = build("index", spec("index", name))
    chunks = corpus()
    index.add(chunks, EMB.embed([c.text for c in chunks]))
    return index, chunks


def search(index, texts: list[str], k: int, **kw):
    return index.search(EMB.embed(texts), k, queries=texts, **kw)


@pytest.mark.parametrize("name", INDEXES)
def test_add_then_search_finds_each_chunk_first(name):
    index, chunks = filled(name)
    assert len(index) == len(chunks)
    results = search(index, [c.text for c in chunks], 3)
    assert len(results) == len(chunks)
    for chunk, hits in zip(chunks, results):
        assert 1 <= len(hits) <= 3
        assert hits[0].chunk == chunk  # the chunk itself, metadata and all
        assert [h.rank for h in hits] == list(range(len(hits)))
        scores = [h.score for h in hits]
        assert scores == sorted(scores, reverse=True)
    assert all(len(h) <= len(chunks) for h in search(index, ["apple comet saffron"], 50))


@pytest.mark.parametrize("name", INDEXES)
def test_filter_keeps_only_matching_chunks(name):
    index, chunks = filled(name)
    hits = search(index, ["apple banana comet nebula saffron"], 10, filter={"doc_id": "beta"})[0]
    assert hits and {h.chunk.doc_id for h in hits} == {"beta"}
    hits = search(index, ["apple comet saffron"], 10, filter={"topic": ["a", "g"]})[0]
    assert hits and {h.chunk.metadata["topic"] for h in hits} <= {"a", "g"}


@pytest.mark.parametrize("name", INDEXES)
def test_declared_abilities_answer_truthfully(name):
    index, chunks = filled(name)
    if isinstance(index, HasDocHash):
        assert index.doc_hash("alpha") == "h-alpha"
        assert index.doc_hash("no-such-doc") is None
    if isinstance(index, HasDocChunks):
        assert index.doc_chunks("gamma") == [c for c in chunks if c.doc_id == "gamma"]
        assert index.doc_chunks("no-such-doc") == []
    if isinstance(index, ListsChunks):
        assert sorted(c.id for c in index.chunks()) == sorted(c.id for c in chunks)


@pytest.mark.parametrize("name", INDEXES)
def test_delete_removes_a_document_everywhere(name):
    index, chunks = filled(name)
    removed = index.delete(["alpha"])
    assert removed == len(TEXTS["alpha"])
    assert len(index) == len(chunks) - removed
    assert index.delete(["no-such-doc"]) == 0
    for hits in search(index, TEXTS["alpha"], 10):
        assert all(h.chunk.doc_id != "alpha" for h in hits)
    if isinstance(index, HasDocHash):
        assert index.doc_hash("alpha") is None


@pytest.mark.parametrize("name", INDEXES)
def test_save_and_load_give_the_same_index(name, tmp_path):
    index, chunks = filled(name)
    if not isinstance(index, Persistent):
        pytest.skip(f"index {name!r} does not declare save/load")
    index.delete(["beta"])
    index.save(tmp_path / "saved")
    again = type(index).load(tmp_path / "saved")
    assert len(again) == len(index)
    queries = [c.text for c in chunks if c.doc_id != "beta"] + ["comet nebula"]
    before, after = search(index, queries, 4), search(again, queries, 4)
    assert [[h.chunk for h in hs] for hs in after] == [[h.chunk for h in hs] for hs in before]
    np.testing.assert_allclose([[h.score for h in hs] for hs in after][:-1],
                               [[h.score for h in hs] for hs in before][:-1], rtol=1e-5)
    if isinstance(again, HasDocHash):
        assert again.doc_hash("gamma") == "h-gamma" and again.doc_hash("beta") is None
