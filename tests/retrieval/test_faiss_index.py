"""FaissIndex: flat checked against numpy brute force, HNSW / IVF-PQ recall against flat, filters,
deletes and tombstones, replacement, the pipeline (save/load: test_faiss_persist.py)."""

from __future__ import annotations

import logging

import numpy as np
import pytest

pytest.importorskip("faiss")

from ragkit import Document, RAGPipeline, load_documents  # noqa: E402
from ragkit.config import build, to_config  # noqa: E402
from ragkit.errors import ConfigError, IndexMismatchError  # noqa: E402
from ragkit.types import Chunk  # noqa: E402
from ragkit.retrieval import faiss_index  # noqa: E402
from ragkit.retrieval.base import Index  # noqa: E402
from ragkit.retrieval.faiss_index import FaissIndex  # noqa: E402
from ragkit.retrieval.memory_index import IndexFileError  # noqa: E402
from tests.retrieval.index_helpers import (  # noqa: E402
    check_bad_vectors_are_refused,
    check_doc_hash_and_doc_chunks,
    CORPUS,
    brute_force,
    clustered,
    make_chunks,
    random_data,
    recall_at,
    small_pipeline,
)

KINDS = ["flat", "hnsw", "ivfpq"]
SMALL = {"flat": {}, "hnsw": {}, "ivfpq": {"train_size": 300, "nlist": 8}}  # ivfpq trains


@pytest.fixture
def data():
    return random_data()


# -- exactness and recall --------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_flat_matches_brute_force(data, metric):
    chunks, vecs, queries = data
    index = FaissIndex(metric=metric)
    index.add(chunks[:200], vecs[:200])
    index.add(chunks[200:], vecs[200:])
    assert len(index) == 500 and index.dim == 24 and isinstance(index, Index)
    results = index.search(queries, k=10)
    ref = brute_force(vecs, queries, metric)
    for hits, scores in zip(results, ref):
        order = np.argsort(-scores, kind="stable")[:10]
        assert [h.chunk for h in hits] == [chunks[i] for i in order]
        assert [h.rank for h in hits] == list(range(10))
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5, atol=1e-5)
        assert all(type(h.score) is float for h in hits)


def test_ivfpq_is_exact_until_trained_and_drops_nothing_when_it_trains(data):
    chunks, vecs, queries = data
    index = FaissIndex(kind="ivfpq", train_size=400, nlist=4, metric="ip")
    index.add(chunks[:399], vecs[:399])
    assert not index.trained
    ref = brute_force(vecs[:399], queries, "ip")
    for hits, scores in zip(index.search(queries, k=10), ref):
        assert [h.chunk for h in hits] == [chunks[i] for i in np.argsort(-scores)[:10]]
    index.add(chunks[399:], vecs[399:])  # reaches train_size: trains on all 500, keeps all 500
    assert index.trained and len(index) == 500
    for doc in {c.doc_id for c in chunks}:
        (hits,) = index.search(queries[:1], k=500, filter={"doc_id": doc})
        assert {h.chunk for h in hits} == {c for c in chunks if c.doc_id == doc}
    (hits,) = index.search(queries[:1], k=500)
    assert len(hits) == 500  # every vector is reachable, none dropped by training


@pytest.mark.parametrize("kind, params", [
    ("hnsw", {}),
    ("ivfpq", {"train_size": 2000}),
])
def test_approximate_recall_against_flat(kind, params):
    vecs = clustered(4100)
    base, queries = vecs[:4000], vecs[4000:]  # held-out queries
    chunks = make_chunks(4000)
    exact = FaissIndex()
    exact.add(chunks, base)
    truth = np.array([[h.chunk.index for h in row] for row in exact.search(queries, k=10)])
    index = FaissIndex(kind=kind, **params)
    for start in range(0, 4000, 1000):  # in batches, as the pipeline adds
        index.add(chunks[start : start + 1000], base[start : start + 1000])
    assert kind != "ivfpq" or index.trained
    recall = recall_at(index.search(queries, k=10), truth, 10)
    assert recall >= 0.9, f"{kind} recall@10 = {recall:.3f}"


def test_ivfpq_retrains_when_it_has_grown_and_keeps_every_vector(tmp_path, caplog):
    """Lists trained on 300 vectors do not fit 1,200: at retrain_growth (4x) the index retrains
    on all live vectors from their fp16 copies, with more lists, and loses none."""
    vecs = clustered(1300, d=32)
    base, queries = vecs[:1200], vecs[1200:]
    chunks = make_chunks(1200)
    index = FaissIndex(kind="ivfpq", train_size=300, pq_m=4)
    index.add(chunks[:300], base[:300])
    assert index.trained and index._trained_on == 300 and index._index.nlist == 7  # 300 // 39
    index.add(chunks[300:1199], base[300:1199])  # 1,199 < 4 x 300: the old lists still
    assert index._trained_on == 300
    index.add(chunks[1199:], base[1199:])  # 1,200: retrains
    assert index._trained_on == 1200 and index._index.nlist == 30  # 1200 // 39
    (hits,) = index.search(queries[:1], k=1200)
    assert {h.chunk for h in hits} == set(chunks)  # every vector reachable after retraining
    exact = FaissIndex()
    exact.add(chunks, base)
    truth = np.array([[h.chunk.index for h in row] for row in exact.search(queries, k=10)])
    assert recall_at(index.search(queries, k=10), truth, 10) >= 0.9
    index.save(tmp_path / "ix")
    again = FaissIndex.load(tmp_path / "ix")
    assert again._trained_on == 1200
    assert [h.chunk for h in again.search(queries[0], k=5)[0]] == [
        h.chunk for h in index.search(queries[0], k=5)[0]]

    # no fp16 copies: nothing to retrain from; a warning, once, and the index keeps working
    lean = FaissIndex(kind="ivfpq", train_size=300, pq_m=4, refine_factor=0)
    lean.add(chunks[:300], base[:300])
    with caplog.at_level(logging.WARNING, logger="ragkit.retrieval.faiss_index"):
        for start in range(300, 1200, 300):
            lean.add(chunks[start : start + 300], base[start : start + 300])
        lean.add(chunks[:10], base[:10])  # replaces: still grown, no second warning
    assert lean._trained_on == 300 and caplog.text.count("cannot retrain") == 1
    with pytest.raises(ConfigError, match="refine_factor=0") as err:
        lean.retrain()
    assert err.value.path == "refine_factor"
    with pytest.raises(ConfigError, match="only an IVF-PQ index retrains"):
        FaissIndex(kind="hnsw").retrain()
    for bad in (1, 0.5, True, "4"):
        with pytest.raises(ConfigError, match="a number > 1 or null") as err:
            FaissIndex(kind="ivfpq", retrain_growth=bad)
        assert err.value.path == "retrain_growth"
    never = FaissIndex(kind="ivfpq", train_size=300, pq_m=4, retrain_growth=None)
    never.add(chunks[:300], base[:300])
    never.add(chunks[300:], base[300:])
    assert never._trained_on == 300
    never.retrain()  # on demand
    assert never._trained_on == 1200


def test_ivfpq_saved_before_retraining_existed_loads(tmp_path):
    import json

    vecs = clustered(400, d=32)
    index = FaissIndex(kind="ivfpq", train_size=300, pq_m=4)
    index.add(make_chunks(400), vecs)
    index.save(tmp_path / "ix")
    meta_file = tmp_path / "ix" / "meta.json"
    meta = json.loads(meta_file.read_text())
    del meta["trained_on"], meta["config"]["retrain_growth"]
    meta_file.write_text(json.dumps(meta))
    again = FaissIndex.load(tmp_path / "ix")
    assert again._trained_on == 400 and again.retrain_growth == 4.0
    meta["trained_on"] = -1
    meta_file.write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match="trained_on must be an int >= 0"):
        FaissIndex.load(tmp_path / "ix")


def test_single_query_vector_empty_index_and_large_k(data):
    chunks, vecs, queries = data
    index = FaissIndex(kind="hnsw")
    assert len(index) == 0 and index.dim is None
    assert index.search(np.ones((3, 5), np.float32), k=4) == [[], [], []]
    index.add(chunks[:8], vecs[:8])
    (hits,) = index.search(queries[0], k=100)  # (d,) is one query
    assert len(hits) == 8
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search(queries[:2], k=0) == [[], []]
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, k=-1)


# -- filters -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_filters_on_metadata_doc_id_and_any_of(data, kind):
    chunks, vecs, queries = data
    index = FaissIndex(kind=kind, **SMALL[kind])
    index.add(chunks, vecs)
    ref = brute_force(vecs, queries[:1], "cosine")[0]

    def expect(keep, k):
        return [chunks[i] for i in np.argsort(-ref, kind="stable") if keep(chunks[i])][:k]

    (hits,) = index.search(queries[:1], k=5, filter={"parity": 1})
    assert [h.chunk for h in hits] == expect(lambda c: c.metadata["parity"] == 1, 5)
    (hits,) = index.search(queries[:1], k=500, filter={"doc_id": "d3"})
    assert {h.chunk for h in hits} == set(expect(lambda c: c.doc_id == "d3", 500))
    assert len(hits) == 100
    (hits,) = index.search(queries[:1], k=7, filter={"doc_id": ["d1", "d4"], "parity": (0,)})
    assert [h.chunk for h in hits] == expect(
        lambda c: c.doc_id in ("d1", "d4") and c.metadata["parity"] == 0, 7
    )
    assert index.search(queries[:2], k=3, filter={"missing_key": 1}) == [[], []]
    assert index.search(queries[:1], k=3, filter={"doc_id": []}) == [[]]


@pytest.mark.parametrize("kind", ["hnsw", "ivfpq"])
def test_selective_filter_through_the_approximate_index_still_gets_k(monkeypatch, kind):
    """Forced through HNSW / IVF with an IDSelector (no exact shortcut for small filters), a
    filter matching 6 of 3000 vectors still returns all 6, exactly ordered."""
    monkeypatch.setattr(faiss_index, "EXACT_SUBSET", 0)
    vecs = clustered(3000, d=64)
    chunks = [Chunk("d", i, i + 1, "x", i, {"rare": i % 500 == 7}) for i in range(3000)]
    index = FaissIndex(kind=kind, ef_search=8, nprobe=1, train_size=1000)
    index.add(chunks, vecs)
    queries = clustered(5, d=64, seed=1)
    ref = brute_force(vecs, queries, "cosine")
    rare = [i for i in range(3000) if i % 500 == 7]
    for hits, scores in zip(index.search(queries, k=10, filter={"rare": True}), ref):
        assert len(hits) == 6
        assert [h.chunk.index for h in hits] == sorted(rare, key=lambda i: -scores[i])


# -- updates -----------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", KINDS)
def test_delete_removes_documents_and_returns_count(data, kind):
    chunks, vecs, queries = data
    index = FaissIndex(kind=kind, **SMALL[kind])
    index.add(chunks, vecs)
    assert index.delete(["d0", "d2", "nope"]) == 200
    assert index.delete(["d0"]) == 0
    assert len(index) == 300 and index.doc_hash("d0") is None and index.doc_chunks("d0") == []
    assert {c.doc_id for c in index.chunks()} == {"d1", "d3", "d4"}
    for hits in index.search(queries, k=300):
        assert {h.chunk.doc_id for h in hits} <= {"d1", "d3", "d4"}
        assert len(hits) == 300
    if kind == "flat":
        kept = [i for i, c in enumerate(chunks) if c.doc_id not in ("d0", "d2")]
        (hits,) = index.search(queries[:1], k=5)
        ref = brute_force(vecs[kept], queries[:1], "cosine")[0]
        assert [h.chunk for h in hits] == [chunks[kept[i]] for i in np.argsort(-ref)[:5]]
    assert index.delete(["d1", "d3", "d4"]) == 300
    assert len(index) == 0 and index.dim is None
    assert index.search(queries[:1], k=3) == [[]]
    index.add(chunks[:2], np.ones((2, 3), np.float32))  # empty again: any dim is welcome
    assert index.dim == 3 and len(index.search(np.ones((1, 3)), k=5)[0]) == 2
    with pytest.raises(TypeError):
        index.delete("d0")


def test_hnsw_tombstones_are_never_returned_and_get_compacted(data):
    chunks, vecs, queries = data
    index = FaissIndex(kind="hnsw")
    index.add(chunks, vecs)
    index.delete(["d0"])  # 100 of 500: below the rebuild threshold, kept as tombstones
    assert len(index._dead) == 100 and index._index.ntotal == 500
    for hits in index.search(vecs[:20], k=50):  # the deleted vectors' own neighbourhoods
        assert all(h.chunk.doc_id != "d0" for h in hits) and len(hits) == 50
    index.delete(["d1", "d2"])  # 300 tombstones > 200 live / 2: the graph is rebuilt
    assert index._dead == set() and index._index.ntotal == 200 == len(index)
    index.delete(["d3"])
    index.compact()
    assert index._dead == set() and index._index.ntotal == 100


@pytest.mark.parametrize("kind", KINDS)
def test_adding_an_existing_chunk_id_replaces_it(kind):
    chunks = make_chunks(300)
    rng = np.random.default_rng(3)
    vecs = rng.standard_normal((300, 16)).astype(np.float32)
    index = FaissIndex(kind=kind, metric="ip", **SMALL[kind] | ({"train_size": 256,
                       "refine_factor": 300} if kind == "ivfpq" else {}))
    index.add(chunks, vecs)
    target = np.zeros(16, np.float32)
    target[0] = 50.0
    updated = Chunk(chunks[1].doc_id, chunks[1].start, chunks[1].end, "t0001", 1, {"v": 2})
    new = Chunk("other", 0, 1, "x", 0)
    index.add([updated, new], np.stack([target, -target]))
    assert len(index) == 301
    listed = list(index.chunks())
    assert listed[1] == updated and listed[-1] == new and chunks[1] not in listed
    (hits,) = index.search(target, k=300)
    assert hits[0].chunk == updated and hits[0].score == pytest.approx(2500, rel=1e-2)
    assert chunks[1] not in [h.chunk for h in hits]
    # the same id twice in one call: the last one wins
    index.add([chunks[0], chunks[0]], np.stack([target * 2, target * 3]))
    (hits,) = index.search(target, k=1)
    assert len(index) == 301 and hits[0].chunk == chunks[0]
    assert hits[0].score == pytest.approx(7500, rel=1e-2)


def test_doc_hash_and_doc_chunks():
    index = FaissIndex()
    check_doc_hash_and_doc_chunks(index)


# -- config and errors -------------------------------------------------------------------------


def test_dim_mismatch_names_both_dims():
    index = FaissIndex(kind="hnsw")
    check_bad_vectors_are_refused(index)


@pytest.mark.parametrize("spec, path", [
    ({"kind": "lsh"}, "index.kind"),
    ({"metric": "l2"}, "index.metric"),
    ({"hnsw_m": 1}, "index.hnsw_m"),
    ({"nprobe": 0}, "index.nprobe"),
    ({"train_size": 100}, "index.train_size"),
    ({"nlist": 20000}, "index.nlist"),
    ({"pq_m": 0}, "index.pq_m"),
])
def test_bad_config_names_the_field(spec, path):
    with pytest.raises(ConfigError, match=path):
        build("index", {"name": "faiss", **spec})


def test_pq_m_that_does_not_divide_dim_fails_before_any_change():
    index = FaissIndex(kind="ivfpq", pq_m=5)
    with pytest.raises(ConfigError, match="pq_m=5 must divide the vector dim 16"):
        index.add(make_chunks(3), np.ones((3, 16), np.float32))
    assert len(index) == 0


def test_config_round_trip():
    spec = {"name": "faiss", "kind": "ivfpq", "metric": "ip", "nlist": 64, "pq_m": 8}
    index = build("index", spec)
    index.add(make_chunks(2), np.ones((2, 16), np.float32))  # contents are not config
    assert build("index", to_config(index, "index")) == index
    assert to_config(index, "index")["nlist"] == 64
    assert build("index", "faiss") == FaissIndex()


# -- through the pipeline ----------------------------------------------------------------------


def _pipe(kind="flat"):
    return small_pipeline({"name": "faiss", "kind": kind})


@pytest.mark.parametrize("kind", ["flat", "hnsw"])
def test_pipeline_add_save_load_retrieve(tmp_path, kind):
    pipe = _pipe(kind)
    docs = load_documents(CORPUS)
    report = pipe.add(docs)
    assert report.documents == 6 and report.chunks == len(pipe.index)
    assert pipe.add(docs).unchanged == 6  # content hashes: nothing re-embedded
    hits = pipe.retrieve("waggle dance of honeybees foragers")
    assert hits[0].chunk.doc_id == "honeybees.md"
    pipe.add([Document("honeybees.md", "replaced text about nothing")])
    assert len(pipe.index.doc_chunks("honeybees.md")) == 1

    pipe.save(tmp_path / "p")
    assert (tmp_path / "p" / "index" / "index.faiss").is_file()
    again = RAGPipeline.load(tmp_path / "p")
    assert again == pipe and isinstance(again.index, FaissIndex)
    assert again.index.info == pipe.index.info and again.index.info["embedder"]["name"] == "hash"
    q = "three-way handshake SYN"
    assert [(h.chunk, h.score) for h in again.retrieve(q)] == [
        (h.chunk, h.score) for h in pipe.retrieve(q)
    ]
    other = small_pipeline(again.index, dim=64)
    with pytest.raises(IndexMismatchError, match="embedder"):
        other.retrieve(q)
