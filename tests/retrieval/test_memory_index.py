"""MemoryIndex: exact search checked against a brute-force sort, filters, updates, save/load."""

from __future__ import annotations

import json

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError, IndexMismatchError, RagkitError
from ragkit.types import Chunk, Hit
from ragkit.retrieval.base import Index
from ragkit.retrieval.memory_index import IndexFileError, MemoryIndex
from tests.retrieval import index_helpers
from tests.retrieval.index_helpers import (
    brute_force,
    check_bad_vectors_are_refused,
    edit_json,
    flip_byte,
)

SHAPE = {"width": 4, "digits": 3}  # this file's chunks: 4 chars, texts t000 ..


def make_chunks(n: int, doc: str = "d", **metadata) -> list[Chunk]:
    return index_helpers.make_chunks(n, doc, **SHAPE, **metadata)


@pytest.fixture
def data():
    return index_helpers.random_data(**SHAPE)


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_search_matches_brute_force(data, metric):
    chunks, vecs, queries = data
    index = MemoryIndex(metric=metric)
    index.add(chunks[:200], vecs[:200])  # two adds: the buffer grows in between
    index.add(chunks[200:], vecs[200:])
    assert len(index) == 500 and index.dim == 24 and isinstance(index, Index)
    results = index.search(queries, k=10)
    ref = brute_force(vecs, queries, metric)
    assert len(results) == len(queries)
    for hits, scores in zip(results, ref):
        order = np.argsort(-scores, kind="stable")[:10]
        assert [h.chunk for h in hits] == [chunks[i] for i in order]
        assert [h.rank for h in hits] == list(range(10))
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5, atol=1e-5)
        assert all(isinstance(h, Hit) and type(h.score) is float for h in hits)


def test_single_query_vector_and_ties_go_to_earlier_chunks():
    chunks = make_chunks(6)
    vecs = np.array([[1, 0], [0, 1], [1, 0], [1, 0], [2, 0], [1, 0]], dtype=np.float32)
    index = MemoryIndex()
    index.add(chunks, vecs)
    (hits,) = index.search(np.array([1.0, 0.0]), k=3)  # (d,) is one query
    assert [h.chunk.index for h in hits] == [0, 2, 3]  # five tie at 1.0 under cosine
    ip = MemoryIndex(metric="ip")
    ip.add(chunks, vecs)
    (hits,) = ip.search(np.array([[1.0, 0.0]]), k=2)
    assert [h.chunk.index for h in hits] == [4, 0] and hits[0].score == pytest.approx(2.0)


@pytest.mark.parametrize("k", [40, 300])
def test_many_ties_keep_insertion_order(k):
    rng = np.random.default_rng(1)
    levels = rng.integers(0, 3, size=200)  # three distinct scores, each shared by many chunks
    vecs = np.stack([np.array([1.0, float(v)], np.float32) for v in levels])
    index = MemoryIndex(metric="ip")
    index.add(make_chunks(200), vecs)
    (hits,) = index.search(np.array([0.0, 1.0]), k=k)
    expected = np.argsort(-levels, kind="stable")[:k]
    assert [h.chunk.index for h in hits] == expected.tolist()


def test_k_larger_than_index_returns_everything_sorted(data):
    chunks, vecs, queries = data
    index = MemoryIndex()
    index.add(chunks[:8], vecs[:8])
    (hits,) = index.search(queries[:1], k=100)
    assert len(hits) == 8
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search(queries[:2], k=0) == [[], []]


def test_empty_index_search_returns_empty_lists():
    index = MemoryIndex()
    assert len(index) == 0 and index.dim is None
    assert index.search(np.ones((3, 5), np.float32), k=4) == [[], [], []]
    assert index.search(np.ones(5, np.float32), k=4) == [[]]


def test_filters_on_metadata_doc_id_and_any_of(data):
    chunks, vecs, queries = data
    index = MemoryIndex()
    index.add(chunks, vecs)
    ref = brute_force(vecs, queries[:1], "cosine")[0]

    def expect(keep, k):
        rows = [i for i in np.argsort(-ref, kind="stable") if keep(chunks[i])][:k]
        return [chunks[i] for i in rows]

    (hits,) = index.search(queries[:1], k=5, filter={"parity": 1})
    assert [h.chunk for h in hits] == expect(lambda c: c.metadata["parity"] == 1, 5)
    assert [h.rank for h in hits] == list(range(5))
    (hits,) = index.search(queries[:1], k=500, filter={"doc_id": "d3"})
    assert [h.chunk for h in hits] == expect(lambda c: c.doc_id == "d3", 500) and len(hits) == 100
    (hits,) = index.search(queries[:1], k=7, filter={"doc_id": ["d1", "d4"], "parity": (0,)})
    assert [h.chunk for h in hits] == expect(
        lambda c: c.doc_id in ("d1", "d4") and c.metadata["parity"] == 0, 7
    )
    assert index.search(queries[:2], k=3, filter={"missing_key": 1}) == [[], []]
    assert index.search(queries[:1], k=3, filter={"n": 9999}) == [[]]


def test_delete_removes_documents_and_returns_count(data):
    chunks, vecs, queries = data
    index = MemoryIndex()
    index.add(chunks, vecs)
    assert index.delete(["d0", "d2", "nope"]) == 200
    assert index.delete(["d0"]) == 0
    assert len(index) == 300
    assert {c.doc_id for c in index.chunks()} == {"d1", "d3", "d4"}
    kept = [i for i, c in enumerate(chunks) if c.doc_id not in ("d0", "d2")]
    (hits,) = index.search(queries[:1], k=5)
    ref = brute_force(vecs[kept], queries[:1], "cosine")[0]
    assert [h.chunk for h in hits] == [chunks[kept[i]] for i in np.argsort(-ref)[:5]]
    assert index.delete(["d1", "d3", "d4"]) == 300
    assert len(index) == 0 and index.dim is None
    index.add(chunks[:2], np.ones((2, 3), np.float32))  # empty again: any dim is welcome
    assert index.dim == 3
    with pytest.raises(TypeError):
        index.delete("d0")


def test_adding_an_existing_chunk_id_replaces_it_in_place():
    chunks = make_chunks(3)
    index = MemoryIndex(metric="ip")
    index.add(chunks, np.eye(3, dtype=np.float32))
    updated = Chunk(chunks[1].doc_id, chunks[1].start, chunks[1].end, "t001", 1, {"v": 2})
    new = Chunk("other", 0, 1, "x", 0)
    index.add([updated, new], np.array([[0, 0, 5], [0, 1, 0]], np.float32))
    assert len(index) == 4
    assert list(index.chunks()) == [chunks[0], updated, chunks[2], new]
    (hits,) = index.search(np.array([0, 0, 1.0]), k=2)
    assert [h.chunk for h in hits] == [updated, chunks[2]] and hits[0].score == pytest.approx(5)
    # the same id twice in one call: the last one wins
    index.add([chunks[0], chunks[0]], np.array([[9, 0, 0], [3, 0, 0]], np.float32))
    (hits,) = index.search(np.array([1.0, 0, 0]), k=1)
    assert len(index) == 4 and hits[0].score == pytest.approx(3)


def test_dim_mismatch_names_both_dims():
    index = MemoryIndex()
    check_bad_vectors_are_refused(index)
    with pytest.raises(IndexMismatchError, match="2-D"):
        index.add(make_chunks(1, doc="e"), np.ones(8, np.float32))
    assert len(index) == 2


def test_bad_config_and_arguments():
    with pytest.raises(ConfigError) as info:
        MemoryIndex(metric="l2")
    assert info.value.path == "metric"
    with pytest.raises(ConfigError, match="index.metric"):
        build("index", {"name": "memory", "metric": "euclid"})
    with pytest.raises(ValueError, match="k must be"):
        MemoryIndex().search(np.ones((1, 2)), k=-1)


def test_config_round_trip():
    index = build("index", {"name": "memory", "metric": "ip"})
    index.add(make_chunks(2), np.ones((2, 3), np.float32))  # contents are not config
    assert to_config(index, "index") == {"name": "memory", "metric": "ip"}
    assert build("index", to_config(index, "index")) == index
    assert build("index", "memory") == MemoryIndex()


def test_save_load_round_trip_gives_identical_results(tmp_path, data):
    chunks, vecs, queries = data
    chunks = [
        Chunk(c.doc_id, c.start, c.end, c.text, c.index, {**c.metadata, "source": "a\u2028b.md"})
        for c in chunks
    ]
    chunks[3] = Chunk("d3", 30, 37, "line\nü\u2028", 3, {"tags": ["x", "y"], "none": None})
    index = MemoryIndex(metric="ip")
    index.add(chunks, vecs)
    index.delete(["d4"])
    before = index.search(queries, k=12, filter={"parity": 1})
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == [
        "chunks.jsonl", "meta.json", "vectors.npy"
    ]
    meta = json.loads((tmp_path / "idx" / "meta.json").read_text())
    assert (meta["metric"], meta["dim"], meta["count"], meta["version"]) == ("ip", 24, 400, 1)

    loaded = MemoryIndex.load(tmp_path / "idx")
    assert loaded == index and loaded is not index and len(loaded) == 400
    assert list(loaded.chunks()) == list(index.chunks())
    assert loaded.search(queries, k=12, filter={"parity": 1}) == before
    np.testing.assert_array_equal(loaded.vectors, index.vectors)
    loaded.add(make_chunks(1, doc="new"), np.ones((1, 24), np.float32))  # still usable
    assert len(loaded) == 401

    index.delete(["d0"])  # saving again replaces the folder, leaving no temporary behind
    index.save(tmp_path / "idx")
    assert len(MemoryIndex.load(tmp_path / "idx")) == 300
    assert [p.name for p in tmp_path.iterdir()] == ["idx"]


def test_save_load_empty_index(tmp_path):
    index = MemoryIndex()
    index.add(make_chunks(2), np.ones((2, 3), np.float32))
    index.delete(["d0", "d1"])
    index.save(tmp_path / "empty")
    loaded = MemoryIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.dim is None
    assert loaded.search(np.ones((1, 4)), k=2) == [[]]


def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFileError, match="refusing"):
        MemoryIndex().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_save_rejects_metadata_that_is_not_json(tmp_path):
    index = MemoryIndex()
    index.add([Chunk("d", 0, 1, "x", 0, {"obj": object()})], np.ones((1, 2), np.float32))
    with pytest.raises(IndexFileError, match="d:0-1"):
        index.save(tmp_path / "idx")
    assert not (tmp_path / "idx").exists() and list(tmp_path.iterdir()) == []


def _saved(tmp_path, data):
    chunks, vecs, _ = data
    index = MemoryIndex()
    index.add(chunks[:20], vecs[:20])
    path = tmp_path / "idx"
    index.save(path)
    return path


@pytest.mark.parametrize(
    "corrupt, where",
    [
        (lambda p: flip_byte(p / "vectors.npy"), "vectors.npy"),
        (lambda p: flip_byte(p / "chunks.jsonl", offset=30), "chunks.jsonl"),
        (lambda p: (p / "vectors.npy").unlink(), "vectors.npy"),
        (lambda p: (p / "meta.json").write_text("{not json"), "meta.json"),
        (lambda p: (p / "meta.json").unlink(), "meta.json"),
    ],
)
def test_corrupted_files_are_detected_with_the_path(tmp_path, data, corrupt, where):
    path = _saved(tmp_path, data)
    corrupt(path)
    with pytest.raises(RagkitError, match=where) as info:
        MemoryIndex.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": 99}, "version 99"),
        ({"metric": "l2"}, "metric"),
        ({"count": 21}, "expected float32"),
        ({"dim": 7}, "expected float32"),
        ({"format": "something-else"}, "not a ragkit.memory_index"),
    ],
)
def test_meta_that_disagrees_with_the_files_is_detected(tmp_path, data, changes, message):
    path = _saved(tmp_path, data)
    edit_json(path / "meta.json", **changes)
    with pytest.raises(IndexFileError, match=message):
        MemoryIndex.load(path)


def test_consistent_but_invalid_files_are_detected(tmp_path, data):
    """Files rewritten with matching checksums are still validated record by record."""
    import hashlib

    path = _saved(tmp_path, data)
    lines = (path / "chunks.jsonl").read_text().splitlines()
    lines[4] = json.dumps({"doc_id": "d", "start": 0, "end": 9, "text": "short", "index": 0,
                           "metadata": {}})  # span and text disagree
    (path / "chunks.jsonl").write_text("\n".join(lines) + "\n")
    digest = hashlib.sha256((path / "chunks.jsonl").read_bytes()).hexdigest()
    meta = json.loads((path / "meta.json").read_text())
    meta["sha256"]["chunks.jsonl"] = digest
    (path / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(IndexFileError, match=r"chunks.jsonl:5"):
        MemoryIndex.load(path)


def test_load_missing_folder(tmp_path):
    with pytest.raises(IndexFileError, match="nowhere"):
        MemoryIndex.load(tmp_path / "nowhere")


def test_never_pickles(tmp_path, data, monkeypatch):
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "dump", forbidden)
    monkeypatch.setattr(pickle, "dumps", forbidden)
    monkeypatch.setattr(pickle, "load", forbidden)
    monkeypatch.setattr(pickle, "loads", forbidden)
    path = _saved(tmp_path, data)
    assert len(MemoryIndex.load(path)) == 20
    assert np.load(path / "vectors.npy", allow_pickle=False).dtype == np.float32
