"""Late chunking: equal to pooling the encoder's own token vectors, windowed or not."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.chunkers.late import LateChunker, pool, token_vectors, windows
from ragkit import Document, RAGPipeline
from ragkit.config import build, to_config
from ragkit.errors import ConfigError

pytestmark = pytest.mark.slow  # every test here runs all-MiniLM-L6-v2

TEXT = (
    "Berlin is the capital of Germany. Its population is about 3.8 million. "
    "The city is known for its museums and its nightlife. It was divided until 1990."
)


@pytest.fixture(scope="module")
def late() -> LateChunker:
    return LateChunker(boundary={"name": "sentence", "chunk_size": 14,
                                 "tokenizer": "all-MiniLM-L6-v2"})


def _direct(late: LateChunker, doc: Document, chunks):
    """Pooling done by hand from sentence-transformers' own token embeddings of the whole text."""
    model = late.embedder._model
    tok = model.tokenizer(doc.text, return_offsets_mapping=True)
    vecs = np.asarray(model.encode([doc.text], output_value="token_embeddings")[0])  # (n+2, d)
    out = []
    for c in chunks:
        rows = [i for i, (s, e) in enumerate(tok["offset_mapping"])
                if e > s and c.start <= s < c.end]  # [CLS]/[SEP] have empty offsets
        v = vecs[rows].mean(axis=0)
        out.append(v / np.linalg.norm(v))
    return np.stack(out)


def test_one_window_equals_pooling_the_encoders_token_vectors(late):
    doc = Document("berlin", TEXT)
    chunks, vecs = late.chunk_and_embed(doc)
    assert len(chunks) == 4 and vecs.shape == (4, 384)
    assert chunks == late.boundary.chunk(doc)
    assert np.allclose(vecs, _direct(late, doc, chunks), atol=1e-5)
    # not what embedding each chunk alone gives: the context changes the vectors
    alone = late.embedder.embed([c.text for c in chunks])
    assert not np.allclose(vecs, alone, atol=1e-2)


def test_windowed_path_on_a_document_of_exactly_one_window(late):
    size = late._window_text_tokens()  # 254 for MiniLM
    words = ("alpha beta gamma delta epsilon zeta eta theta iota kappa " * 40).split()
    ids = np.zeros(0)
    text = ""
    for n in range(len(words), 0, -1):  # the longest prefix of words that is exactly one window
        text = " ".join(words[:n]) + "."
        ids, _ = late.embedder.token_ids(text)
        if len(ids) == size:
            break
    assert len(ids) == size, "could not build a text of exactly one window"
    doc = Document("one-window", text)
    assert windows(len(ids), size) == [(0, size)]
    chunks, vecs = late.chunk_and_embed(doc)
    assert np.allclose(vecs, _direct(late, doc, chunks), atol=1e-5)
    # forcing several overlapping windows over the same tokens still pools sensible vectors
    ids, offsets = late.embedder.token_ids(doc.text)
    split = pool(chunks, offsets, token_vectors(late.embedder, ids, size // 2, size // 4),
                 late.embedder)
    assert np.all(np.sum(split * vecs, axis=1) > 0.7)  # drift from narrower context, bounded


def test_each_token_comes_from_its_most_central_window(late):
    ids, _ = late.embedder.token_ids(TEXT * 12)
    size, stride = 64, 32
    spans = windows(len(ids), size, stride)
    assert spans[0] == (0, size) and spans[-1][1] == len(ids)
    assert all(b - a == size for a, b in spans)
    merged = token_vectors(late.embedder, ids, size, stride)
    per_window = late.embedder.encode_token_windows([ids[a:b] for a, b in spans])
    t = spans[1][0] + size // 2  # the centre of the second window
    assert np.allclose(merged[t], per_window[1][size // 2], atol=1e-6)
    assert np.allclose(merged[0], per_window[0][0], atol=1e-6)  # only the first window has it


def test_long_document_covers_every_token_and_matches_its_chunks(late):
    doc = Document("long", TEXT * 30)  # far over one window
    chunks, vecs = late.chunk_and_embed(doc)
    assert len(chunks) == len(late.chunk(doc)) and vecs.shape == (len(chunks), 384)
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    from collections import Counter

    text, count = Counter(c.text for c in chunks).most_common(1)[0]
    same = [i for i, c in enumerate(chunks) if c.text == text]
    assert count > 1  # repeated text, different context, still close vectors
    assert float(vecs[same[0]] @ vecs[same[1]]) > 0.7


def test_pipeline_stores_late_vectors_and_embeds_queries_normally():
    pipe = RAGPipeline(chunker={"name": "late"}, embedder={"name": "sentence-transformers"})
    pipe.add([Document("berlin", TEXT), Document("bees", "Bees dance to show where flowers are.")])
    hits = pipe.retrieve("How many people live in Berlin?", k=1)
    assert hits[0].chunk.doc_id == "berlin"
    stored = pipe.index.vectors
    chunks, vecs = pipe.chunker.chunk_and_embed(Document("berlin", TEXT))
    assert np.allclose(stored[: len(chunks)], vecs, atol=1e-5)


def test_mismatched_models_are_refused_before_work():
    with pytest.raises(ConfigError, match="^chunker.embedder: the chunker embeds chunks with"):
        RAGPipeline(chunker={"name": "late"}, embedder={"name": "hash"})


def test_config_round_trip():
    late = build("chunker", {"name": "late", "window": 128, "stride": 32,
                             "boundary": {"name": "recursive", "chunk_size": 60}})
    assert build("chunker", to_config(late, "chunker")) == late
    with pytest.raises(ConfigError, match=r"^chunker.window: must be an int >= 1 or null; got 0$"):
        build("chunker", {"name": "late", "window": 0})
