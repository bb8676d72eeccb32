"""The sentence-vectors index: sentence vectors stored at index time, looked up by the refiner
(exact offsets, the same spans as embedding per query, save/load, delete, a known answer)."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.pipeline import RAGPipeline
from ragkit.protocols import HasSentenceVectors
from ragkit.retrieval.base import SelectionContext
from ragkit.retrieval.refiners import SentenceRefiner, sentence_spans
from ragkit.retrieval.sentence_index import SentenceVectorIndex
from ragkit.testing import HashEmbedder
from ragkit.types import Chunk, Document, Hit

EMB = {"name": "hash", "dim": 64}
DOCS = [
    Document("pets", "The cat sat on the mat. Dogs bark loudly at night. The sun is hot today. "
                     "Rain falls in spring. Cats like warm mats and milk. Birds sing at dawn."),
    Document("space", "Comets have icy tails. The moon orbits the earth. Mars is a red planet. "
                      "Jupiter has many moons. Saturn has bright rings."),
]
REFINE = {"name": "sentence-refine", "k": 3, "min_score": 0.3}


def pipeline(index: dict, chunk_size: int = 12, overlap: int = 4) -> RAGPipeline:
    pipe = RAGPipeline(chunker={"name": "recursive", "chunk_size": chunk_size, "overlap": overlap},
                       embedder=EMB, index=index, selector=REFINE, k=3, candidates=6)
    pipe.add(DOCS)
    return pipe


STORED = {"name": "sentence-vectors", "inner": {"name": "memory"}, "embedder": EMB}


def test_every_sentence_of_every_chunk_is_stored_once_by_absolute_span():
    pipe = pipeline(STORED)
    index = pipe.index
    assert isinstance(index, HasSentenceVectors)
    spans = {(c.doc_id, c.start + a, c.start + b) for c in index.chunks()
             for a, b in sentence_spans(c.text)}
    assert index.sentence_count == len(spans)  # overlapping chunks share their sentences
    text = {d.id: d.text for d in DOCS}
    for doc_id, a, b in spans:
        vecs, found = index.sentence_vectors(doc_id, [(a, b)])
        assert found.all()
        np.testing.assert_allclose(vecs[0], HashEmbedder(dim=64).embed([text[doc_id][a:b]])[0],
                                   atol=1e-6)
    vecs, found = index.sentence_vectors("pets", [(0, 3), (1, 2)])
    assert not found.any() and not vecs.any()
    assert not index.sentence_vectors("no-such-doc", [(0, 3)])[1].any()


def test_known_answer_with_exact_offsets_and_no_embedding_at_query_time():
    pipe = pipeline(STORED)
    hits = pipe.retrieve("cat mat")
    assert hits[0].chunk.text == "The cat sat on the mat."
    text = {d.id: d.text for d in DOCS}
    for query in ("cat mat", "moon orbits", "rings of saturn", "rain in spring"):
        for h in pipe.retrieve(query):
            assert text[h.chunk.doc_id][h.chunk.start:h.chunk.end] == h.chunk.text
    assert pipe.selector.stats["looked_up"] > 0


@pytest.mark.parametrize("size,overlap", [(12, 4), (20, 8), (9, 0)])
def test_same_spans_as_embedding_the_sentences_per_query(size, overlap):
    stored = pipeline(STORED, size, overlap)
    plain = pipeline({"name": "memory"}, size, overlap)
    for query in ("cat mat", "moon orbits", "rings of saturn", "rain in spring", "red planet",
                  "dogs bark at dawn"):
        assert ([h.chunk.id for h in stored.retrieve(query)]
                == [h.chunk.id for h in plain.retrieve(query)])
    assert plain.selector.stats["looked_up"] == 0 and plain.selector.stats["embedded"] > 0


def test_a_sentence_across_merged_chunks_is_embedded_at_query_time():
    doc = DOCS[0]
    index = build("index", STORED)
    # two chunks that cut "Dogs bark loudly at night." in the middle, overlapping
    cut = doc.text.index("loudly")
    a, b = Chunk.of(doc, 0, cut + 3, 0), Chunk.of(doc, doc.text.index("bark"), len(doc.text), 1)
    emb = HashEmbedder(dim=64)
    index.add([a, b], emb.embed([a.text, b.text]))
    calls = []

    def embed(texts):
        calls.append(list(texts))
        return emb.embed(texts)

    refiner = SentenceRefiner(k=2, min_score=0.3)
    q = emb.embed(["dogs bark loudly"])[0]
    out = refiner.select("dogs bark loudly", [Hit(a, 1.0, 0), Hit(b, 0.9, 1)],
                         SelectionContext(query_vec=q, embed=embed, index=index))
    assert [h.chunk.text for h in out] == ["Dogs bark loudly at night."]
    assert calls == [["Dogs bark loudly at night."]]  # in neither chunk whole
    assert refiner.stats["embedded"] == 1 and refiner.stats["looked_up"] >= 4


def test_save_load_and_delete(tmp_path):
    pipe = pipeline(STORED)
    n = pipe.index.sentence_count
    pipe.save(tmp_path / "saved")
    again = RAGPipeline.load(tmp_path / "saved")
    assert type(again.index) is SentenceVectorIndex and again.index.sentence_count == n
    for query in ("cat mat", "moon orbits"):
        assert ([h.chunk.id for h in again.retrieve(query)]
                == [h.chunk.id for h in pipe.retrieve(query)])
    assert again.selector.stats["embedded"] == 0
    again.delete(["space"])
    assert not again.index.sentence_vectors("space", [(0, 22)])[1].any()
    assert again.index.sentence_count < n
    assert all(h.chunk.doc_id == "pets" for h in again.retrieve("moon orbits"))


def test_config_round_trip_and_the_pipeline_refuses_another_model():
    index = build("index", STORED)
    assert build("index", to_config(index, "index")) == index
    with pytest.raises(ConfigError, match="index.embedder"):
        RAGPipeline(embedder=EMB, index={**STORED, "embedder": {"name": "hash", "dim": 32}})
    with pytest.raises(ConfigError, match="inner"):
        build("index", {"name": "sentence-vectors", "inner": STORED, "embedder": EMB})
    with pytest.raises(ConfigError, match="batch_size"):
        build("index", {**STORED, "batch_size": 0})


def test_best_retrieval_config_refines_from_stored_sentence_vectors():
    from pathlib import Path

    from ragkit.config import load_yaml
    from ragkit.evaluation.retrieval import RetrievalEval

    path = Path(__file__).resolve().parents[2] / "configs" / "eval" / "best_retrieval.yaml"
    spec = load_yaml(path)
    ev = RetrievalEval(paths=spec["paths"], ks=tuple(spec["ks"]))
    assert list(ev.paths) == ["best"]
    best = ev.paths["best"]
    assert isinstance(best.index, HasSentenceVectors)
    assert type(best.selector) is SentenceRefiner


def test_depth_cv_benchmark_settings_all_build():
    import importlib.util
    import sys
    from pathlib import Path

    path = Path(__file__).resolve().parents[2] / "benchmarks" / "retrieval_depth_cv.py"
    spec = importlib.util.spec_from_file_location("retrieval_depth_cv", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["retrieval_depth_cv"] = module
    spec.loader.exec_module(module)
    for selector, depth in module.settings().values():
        assert depth in module.DEPTHS
        if selector is not None:
            build("selector", selector)


def test_an_empty_index_saves_and_loads(tmp_path):
    # `ragkit index` saves the index before any document is in it
    index = build("index", STORED)
    index.save(tmp_path / "empty")
    again = SentenceVectorIndex.load(tmp_path / "empty")
    assert len(again) == 0 and again.sentence_count == 0
    emb = HashEmbedder(dim=64)
    chunk = Chunk.of(DOCS[1], 0, 22, 0)
    again.add([chunk], emb.embed([chunk.text]))
    assert again.sentence_vectors("space", [(0, 22)])[1].all()


def test_ragkit_index_and_ask_keep_the_sentence_vectors(tmp_path):
    from ragkit.cli import main

    docs = tmp_path / "docs"
    docs.mkdir()
    for d in DOCS:
        (docs / f"{d.id}.txt").write_text(d.text, encoding="utf-8")
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text("chunker: {name: recursive, chunk_size: 12, overlap: 4}\n"
                   "embedder: {name: hash, dim: 64}\n"
                   "index: {name: sentence-vectors, inner: {name: hybrid, rrf_k: 10}, "
                   "embedder: {name: hash, dim: 64}}\n"
                   "selector: {name: sentence-refine, k: 3, min_score: 0.3}\n"
                   "candidates: 5\nk: 3\n", encoding="utf-8")
    assert main(["index", str(docs), "--config", str(cfg), "--out", str(tmp_path / "out"),
                 "--no-progress"]) in (0, None)
    pipe = RAGPipeline.load(tmp_path / "out", ["index.inner.rrf_k=30"])
    assert pipe.index.inner.rrf_k == 30 and pipe.index.sentence_count > 0
    hits = pipe.retrieve("moon orbits")
    assert hits[0].chunk.text == "The moon orbits the earth."
    assert pipe.selector.stats == {"looked_up": pipe.selector.stats["looked_up"], "embedded": 0}
