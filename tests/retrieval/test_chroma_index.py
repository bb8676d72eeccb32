"""ChromaIndex: search checked against numpy brute force, recall, filters, updates, persistence
across processes, save/load, a Chroma server on loopback, the pipeline.

Every collection is made with ``embedding_function=None``: nothing here can download a model.
"""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("chromadb")

from ragkit import Document, RAGPipeline, load_documents  # noqa: E402
from ragkit.config import build, to_config  # noqa: E402
from ragkit.errors import ConfigError, IndexMismatchError  # noqa: E402
from ragkit.types import Chunk  # noqa: E402
from ragkit.retrieval.base import Index  # noqa: E402
from ragkit.retrieval.chroma_index import ChromaConnectionError, ChromaIndex  # noqa: E402
from ragkit.retrieval.memory_index import IndexFileError  # noqa: E402
from tests.retrieval.index_helpers import (  # noqa: E402
    check_bad_vectors_are_refused,
    check_doc_hash_and_doc_chunks,
    CORPUS,
    brute_force,
    chroma_server,
    clustered,
    edit_json,
    free_port,
    hits_of,
    make_chunks,
    random_data,
    run_python,
    small_pipeline,
)



@pytest.fixture
def data():
    return random_data()


# -- search ------------------------------------------------------------------------------------


@pytest.mark.parametrize("metric", ["cosine", "ip"])
def test_search_matches_brute_force(data, metric):
    chunks, vecs, queries = data
    index = ChromaIndex(metric=metric, batch_size=128)  # several upsert batches
    index.add(chunks[:200], vecs[:200])
    index.add(chunks[200:], vecs[200:])
    assert len(index) == 500 and index.dim == 24 and isinstance(index, Index)
    ref = brute_force(vecs, queries, metric)
    for hits, scores in zip(index.search(queries, k=10), ref):
        order = np.argsort(-scores, kind="stable")[:10]
        assert [h.chunk for h in hits] == [chunks[i] for i in order]
        assert [h.rank for h in hits] == list(range(10))
        np.testing.assert_allclose([h.score for h in hits], scores[order], rtol=1e-5, atol=1e-5)
        assert all(type(h.score) is float for h in hits)


def test_recall_against_exact_search():
    vecs = clustered(4100)
    base, queries = vecs[:4000], vecs[4000:]
    truth = np.argsort(-brute_force(base, queries, "cosine"), axis=1)[:, :10]
    index = ChromaIndex()
    index.add(make_chunks(4000), base)
    results = index.search(queries, k=10)
    recall = np.mean([len({h.chunk.index for h in row} & set(t.tolist())) / 10
                      for row, t in zip(results, truth)])
    assert recall >= 0.9, f"chroma recall@10 = {recall:.3f}"


def test_single_query_empty_index_and_large_k(data):
    chunks, vecs, queries = data
    index = ChromaIndex()
    assert len(index) == 0 and index.dim is None
    assert index.search(np.ones((3, 5), np.float32), k=4) == [[], [], []]
    index.add(chunks[:8], vecs[:8])
    (hits,) = index.search(queries[0], k=100)  # (d,) is one query
    assert len(hits) == 8
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)
    assert index.search(queries[:2], k=0) == [[], []]
    with pytest.raises(ValueError, match="k must be"):
        index.search(queries, k=-1)


def test_in_memory_indexes_are_independent_and_close_drops_them(data):
    chunks, vecs, _ = data
    a, b = ChromaIndex(), ChromaIndex()  # one shared in-memory Chroma, two collections
    a.add(chunks[:5], vecs[:5])
    assert len(a) == 5 and len(b) == 0
    a.close()
    assert len(a) == 0  # reconnecting opens a fresh in-memory collection


# -- filters -----------------------------------------------------------------------------------


def test_filters_on_metadata_doc_id_and_any_of(data):
    chunks, vecs, queries = data
    index = ChromaIndex()
    index.add(chunks, vecs)
    ref = brute_force(vecs, queries[:1], "cosine")[0]

    def expect(keep, k):
        return [chunks[i] for i in np.argsort(-ref, kind="stable") if keep(chunks[i])][:k]

    (hits,) = index.search(queries[:1], k=5, filter={"parity": 1})
    assert [h.chunk for h in hits] == expect(lambda c: c.metadata["parity"] == 1, 5)
    (hits,) = index.search(queries[:1], k=500, filter={"doc_id": "d3"})
    assert [h.chunk for h in hits] == expect(lambda c: c.doc_id == "d3", 500)
    (hits,) = index.search(queries[:1], k=7, filter={"doc_id": ["d1", "d4"], "parity": (0,)})
    assert [h.chunk for h in hits] == expect(
        lambda c: c.doc_id in ("d1", "d4") and c.metadata["parity"] == 0, 7
    )
    (hits,) = index.search(queries[:1], k=3, filter={"n": [7, 8.0, "x"]})  # mixed types
    assert {h.chunk.index for h in hits} == {7, 8}
    assert index.search(queries[:2], k=3, filter={"missing_key": 1}) == [[], []]
    assert index.search(queries[:1], k=3, filter={"doc_id": []}) == [[]]


def test_metadata_chroma_cannot_hold_round_trips_and_filters():
    odd = {"tags": ["x", "y"], "none": None, "nested": {"a": [1, 2]}, "$dollar": 1, "#hash": "h",
           "": "empty key", "big": 2**70, "ragkit:doc_id": "mine", "flag": True, "f": 0.5}
    chunks = [Chunk("a", 0, 1, "x", 0, odd), Chunk("a", 1, 2, "y", 1, {"tags": ["z"]}),
              Chunk("b", 0, 0, "", 0, {})]
    index = ChromaIndex(metric="ip")
    index.add(chunks, np.eye(3, dtype=np.float32))
    assert list(index.chunks()) == chunks  # types, the empty text and odd keys come back
    q = np.ones((1, 3), np.float32)
    assert [h.chunk for h in index.search(q, 5, filter={"tags": [["x", "y"]]})[0]] == chunks[:1]
    assert [h.chunk for h in index.search(q, 5, filter={"none": None})[0]] == chunks[:1]
    assert [h.chunk for h in index.search(q, 5, filter={"$dollar": 1})[0]] == chunks[:1]
    assert [h.chunk for h in index.search(q, 5, filter={"big": 2**70})[0]] == chunks[:1]
    assert [h.chunk for h in index.search(q, 5, filter={"flag": True, "f": 0.5})[0]] == chunks[:1]
    with pytest.raises(IndexMismatchError, match="a:5-6.*not plain JSON"):
        index.add([Chunk("a", 5, 6, "z", 2, {"obj": object()})], np.ones((1, 3), np.float32))
    assert len(index) == 3


def test_selective_filter_still_gets_every_match():
    vecs = clustered(3000, d=64)
    chunks = [Chunk("d", i, i + 1, "x", i, {"rare": i % 500 == 7}) for i in range(3000)]
    index = ChromaIndex()
    index.add(chunks, vecs)
    queries = clustered(5, d=64, seed=1)
    ref = brute_force(vecs, queries, "cosine")
    rare = [i for i in range(3000) if i % 500 == 7]
    for hits, scores in zip(index.search(queries, k=10, filter={"rare": True}), ref):
        assert [h.chunk.index for h in hits] == sorted(rare, key=lambda i: -scores[i])


# -- updates -----------------------------------------------------------------------------------


def test_delete_removes_documents_and_returns_count(data):
    chunks, vecs, queries = data
    index = ChromaIndex()
    index.add(chunks, vecs)
    assert index.delete(["d0", "d2", "nope"]) == 200
    assert index.delete(["d0"]) == 0 and index.delete([]) == 0
    assert len(index) == 300 and index.doc_hash("d0") is None and index.doc_chunks("d0") == []
    assert {c.doc_id for c in index.chunks()} == {"d1", "d3", "d4"}
    kept = [i for i, c in enumerate(chunks) if c.doc_id not in ("d0", "d2")]
    ref = brute_force(vecs[kept], queries, "cosine")
    for hits, scores in zip(index.search(queries, k=5), ref):
        assert [h.chunk for h in hits] == [chunks[kept[i]] for i in np.argsort(-scores)[:5]]
    assert index.delete(["d1", "d3", "d4"]) == 300
    assert len(index) == 0 and index.search(queries[:1], k=3) == [[]]
    assert index.dim == 24  # Chroma keeps a collection's dimension
    with pytest.raises(IndexMismatchError, match=r"dim 3 .*dim 24"):
        index.add(chunks[:2], np.ones((2, 3), np.float32))
    with pytest.raises(TypeError):
        index.delete("d0")


def test_adding_an_existing_chunk_id_replaces_it_metadata_included():
    chunks = make_chunks(3, extra="old")
    index = ChromaIndex(metric="ip")
    index.add(chunks, np.eye(3, dtype=np.float32))
    updated = Chunk(chunks[1].doc_id, chunks[1].start, chunks[1].end, "t0001", 1, {"v": 2})
    new = Chunk("other", 0, 1, "x", 0)
    index.add([updated, new], np.array([[0, 0, 5], [0, 1, 0]], np.float32))
    assert len(index) == 4
    (hits,) = index.search(np.array([0, 0, 1.0]), k=2)
    assert [h.chunk for h in hits] == [updated, chunks[2]] and hits[0].score == pytest.approx(5)
    assert hits[0].chunk.metadata == {"v": 2}  # "n", "parity" and "extra" are gone
    assert index.search(np.array([0, 0, 1.0]), k=5, filter={"extra": "old"})[0][0].chunk != updated
    index.add([chunks[0], chunks[0]], np.array([[9, 0, 0], [3, 0, 0]], np.float32))
    (hits,) = index.search(np.array([1.0, 0, 0]), k=1)
    assert len(index) == 4 and hits[0].score == pytest.approx(3)


def test_doc_hash_and_doc_chunks():
    index = ChromaIndex()
    check_doc_hash_and_doc_chunks(index)


# -- config and errors -------------------------------------------------------------------------


def test_dim_mismatch_names_both_dims():
    index = ChromaIndex()
    check_bad_vectors_are_refused(index)


@pytest.mark.parametrize("spec, message", [
    ({"path": "x", "host": "127.0.0.1"}, r"index.host: path='x' .* and host='127.0.0.1'"),
    ({"metric": "l2"}, "index.metric"),
    ({"collection": "a"}, "index.collection"),
    ({"collection": "bad name!"}, "index.collection"),
    ({"port": 0}, "index.port"),
    ({"batch_size": 0}, "index.batch_size"),
    ({"path": ""}, "index.path"),
])
def test_bad_config_names_the_fields(spec, message):
    with pytest.raises(ConfigError, match=message):
        build("index", {"name": "chroma", **spec})


def test_config_round_trip_and_cheap_init(tmp_path):
    index = build("index", {"name": "chroma", "path": str(tmp_path / "db"), "metric": "ip"})
    assert not (tmp_path / "db").exists()  # nothing opens until first use
    assert build("index", to_config(index, "index")) == index
    assert build("index", "chroma") == ChromaIndex()


def test_reopening_with_another_metric_or_a_foreign_collection_is_refused(tmp_path):
    import chromadb

    db = str(tmp_path / "db")
    first = ChromaIndex(path=db)
    first.add(make_chunks(2), np.ones((2, 4), np.float32))
    first.close()
    with pytest.raises(IndexMismatchError, match="uses metric 'cosine'.*'ip'"):
        len(ChromaIndex(path=db, metric="ip"))
    client = chromadb.PersistentClient(path=os.path.abspath(db))
    client.create_collection("foreign", embedding_function=None)
    with pytest.raises(IndexMismatchError, match="not made by ragkit"):
        len(ChromaIndex(path=db, collection="foreign"))
    client.close()


def test_unreachable_server_is_a_clear_error():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nobody listens there
    with pytest.raises(ChromaConnectionError, match=f"127.0.0.1:{port}.*chroma run"):
        len(ChromaIndex(host="127.0.0.1", port=port))


# -- persistence -------------------------------------------------------------------------------

_WRITE = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[3])
from index_helpers import make_chunks
from ragkit.retrieval.chroma_index import ChromaIndex
index = ChromaIndex(path=sys.argv[1])
vecs = np.load(sys.argv[2])
index.info.update({"embedder": {"name": "hash", "dim": 24}})
index.add(make_chunks(len(vecs)), vecs)
index.delete(["d4"])
"""

_READ = """
import json, sys
import numpy as np
from ragkit.retrieval.chroma_index import ChromaIndex
index = ChromaIndex.load(sys.argv[1]) if sys.argv[3] == "load" else ChromaIndex(path=sys.argv[1])
queries = np.load(sys.argv[2])
out = [[[h.chunk.id, h.score] for h in row] for row in index.search(queries, k=12)]
out += [[[h.chunk.id, h.score] for h in row]
        for row in index.search(queries, k=12, filter={"parity": 1})]
print(json.dumps({"hits": out, "info": index.info, "len": len(index), "dim": index.dim}))
"""


def test_persistent_across_processes(tmp_path, data):
    chunks, vecs, queries = data
    np.save(tmp_path / "vecs.npy", vecs)
    np.save(tmp_path / "queries.npy", queries)
    db = tmp_path / "db"
    run_python(_WRITE, db, tmp_path / "vecs.npy", Path(__file__).parent)  # one process writes
    got = json.loads(run_python(_READ, db, tmp_path / "queries.npy", "open"))  # another reads
    assert got["len"] == 400 and got["dim"] == 24
    assert got["info"] == {"embedder": {"name": "hash", "dim": 24}}
    kept = [i for i, c in enumerate(chunks) if c.doc_id != "d4"]
    ref = brute_force(vecs[kept], queries, "cosine")
    for row, scores in zip(got["hits"][:7], ref):
        order = np.argsort(-scores)[:12]
        assert [cid for cid, _ in row] == [chunks[kept[i]].id for i in order]
        np.testing.assert_allclose([s for _, s in row], scores[order], rtol=1e-5, atol=1e-5)
    here = ChromaIndex(path=str(db))  # and this process sees the same
    assert len(here) == 400 and here.info == got["info"]
    assert hits_of(here.search(queries, k=12)) == got["hits"][:7]


def test_save_load_in_a_fresh_process_gives_identical_results(tmp_path, data):
    chunks, vecs, queries = data
    index = ChromaIndex()  # in memory: save copies it into path/data
    index.add(chunks, vecs)
    index.delete(["d4"])
    index.info["embedder"] = {"name": "hash", "dim": 24}
    index.save(tmp_path / "idx")
    assert sorted(p.name for p in (tmp_path / "idx").iterdir()) == ["chroma.json", "data"]
    loaded = ChromaIndex.load(tmp_path / "idx")
    assert loaded.path == os.path.normpath(tmp_path / "idx" / "data")
    assert len(loaded) == 400 and loaded.info == index.info and loaded.dim == 24
    assert list(loaded.chunks()) == list(index.chunks())
    np.save(tmp_path / "queries.npy", queries)
    mine = hits_of(loaded.search(queries, k=12)) + hits_of(
        loaded.search(queries, k=12, filter={"parity": 1}))
    theirs = json.loads(run_python(_READ, tmp_path / "idx", tmp_path / "queries.npy", "load"))
    assert theirs["hits"] == mine and theirs["info"] == index.info
    original = hits_of(index.search(queries, k=12))  # the copy: same hits, float32-close scores
    for a, b in zip(original, mine[:7]):
        assert [cid for cid, _ in a] == [cid for cid, _ in b]
        np.testing.assert_allclose([s for _, s in a], [s for _, s in b], atol=1e-6)

    loaded.info["note"] = "saved where it lives"  # its data is under idx: only the pointer moves
    loaded.add(make_chunks(1, doc="new"), np.ones((1, 24), np.float32))
    loaded.save(tmp_path / "idx")
    pointer = json.loads((tmp_path / "idx" / "chroma.json").read_text())
    assert pointer["path"] == "data" and pointer["count"] == 401
    with pytest.raises(IndexFileError, match="open"):
        index.save(tmp_path / "idx")  # would swap the folder out from under `loaded`
    loaded.close()
    again = ChromaIndex.load(tmp_path / "idx")
    assert len(again) == 401 and again.info["note"] == "saved where it lives"
    again.close()
    index.save(tmp_path / "idx")  # nothing holds it now: replaced whole, no temporary left
    assert len(ChromaIndex.load(tmp_path / "idx")) == 400
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "queries.npy"]


def test_saving_a_persistent_index_elsewhere_copies_it(tmp_path, data):
    chunks, vecs, queries = data
    index = ChromaIndex(path=str(tmp_path / "live"), metric="ip")
    index.add(chunks[:50], vecs[:50])
    index.save(tmp_path / "snapshot")
    index.add(chunks[50:60], vecs[50:60])  # after the snapshot: not in it
    snap = ChromaIndex.load(tmp_path / "snapshot")
    assert (len(snap), len(index), snap.metric) == (50, 60, "ip")


@pytest.mark.parametrize("corrupt, message", [
    (lambda p: (p / "chroma.json").unlink(), "chroma.json: cannot read"),
    (lambda p: (p / "chroma.json").write_text("{nope"), "not valid JSON"),
    (lambda p: edit_json(p / "chroma.json", version=7), "version 7"),
    (lambda p: edit_json(p / "chroma.json", path="elsewhere"),
     "elsewhere: the Chroma data folder"),
    (lambda p: edit_json(p / "chroma.json", collection="other"), "no Chroma collection 'other'"),
    (lambda p: edit_json(p / "chroma.json", metric="l2"), "invalid settings"),
    (lambda p: _zero(p / "data" / "chroma.sqlite3"), "data: Chroma cannot open it"),
])
def test_broken_saves_are_detected(tmp_path, corrupt, message):
    index = ChromaIndex()
    index.add(make_chunks(3), np.eye(3, dtype=np.float32))
    index.save(tmp_path / "idx")
    corrupt(tmp_path / "idx")
    with pytest.raises(IndexFileError, match=message):
        ChromaIndex.load(tmp_path / "idx")


def test_a_store_chroma_cannot_read_back_is_one_line_naming_the_fix(tmp_path, monkeypatch):
    """A kill inside Chroma's own writer can leave a store that opens but fails on the first read
    (chroma-core/chroma#7678): loading says so in one line, with the command that rebuilds it."""
    import chromadb.errors
    from chromadb.api.models.Collection import Collection

    index = ChromaIndex()
    index.add(make_chunks(3), np.eye(3, dtype=np.float32))
    index.save(tmp_path / "idx")

    def damaged(self, *args, **kwargs):
        raise chromadb.errors.InternalError("Failed to apply logs to the hnsw segment writer")

    monkeypatch.setattr(Collection, "get", damaged)
    with pytest.raises(IndexFileError) as info:
        ChromaIndex.load(tmp_path / "idx")
    message = str(info.value)
    assert "\n" not in message and str(tmp_path / "idx") in message
    assert "Chroma's store is damaged" in message and "--replace" in message


def _zero(file):
    raw = bytearray(file.read_bytes())
    raw[100:4000] = bytes(3900)
    file.write_bytes(bytes(raw))



def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFileError, match="refusing"):
        ChromaIndex().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


# -- a Chroma server on loopback ---------------------------------------------------------------


def test_server_round_trip_two_writers_and_a_restart(tmp_path, data):
    chunks, vecs, queries = data
    folder = tmp_path / "server"
    port = free_port()
    with chroma_server(folder, port):
        one = ChromaIndex(host="127.0.0.1", port=port, collection="shared")
        two = ChromaIndex(host="127.0.0.1", port=port, collection="shared")
        assert len(two) == 0 and two.dim is None  # connected before `one` writes anything
        one.info.update({"embedder": {"name": "hash"}})
        one.add(chunks[:250], vecs[:250])
        two.add(chunks[250:], vecs[250:])  # learns the dim the other client set
        assert len(one) == len(two) == 500 and two.dim == 24
        assert two.info == {"embedder": {"name": "hash"}}  # written by `one`, read from Chroma
        ref = brute_force(vecs, queries, "cosine")
        for hits, scores in zip(two.search(queries, k=10), ref):
            assert [h.chunk for h in hits] == [chunks[i] for i in np.argsort(-scores)[:10]]
        assert one.delete(["d0"]) == 100 and len(two) == 400
        before = hits_of(one.search(queries, k=10, filter={"parity": 0}))
        one.save(tmp_path / "pointer")
        assert json.loads((tmp_path / "pointer" / "chroma.json").read_text())["host"] == "127.0.0.1"
        one.close()
        two.close()
    port2 = free_port()
    with chroma_server(folder, port2):  # restarted: the data is still there
        back = ChromaIndex(host="127.0.0.1", port=port2, collection="shared")
        assert len(back) == 400 and back.info == {"embedder": {"name": "hash"}}
        assert hits_of(back.search(queries, k=10, filter={"parity": 0})) == before
        back.close()
    with chroma_server(folder, port):  # the saved pointer names the original port
        loaded = ChromaIndex.load(tmp_path / "pointer")
        assert loaded.host == "127.0.0.1" and loaded.port == port and len(loaded) == 400
        loaded.close()


# -- through the pipeline ----------------------------------------------------------------------


def _pipe(**index):
    return small_pipeline({"name": "chroma", **index})


_PIPE_READ = """
import json, sys
from ragkit import RAGPipeline
pipe = RAGPipeline.load(sys.argv[1])
print(json.dumps([[h.chunk.id, h.score] for h in pipe.retrieve(sys.argv[2])]))
"""


def test_pipeline_add_save_load_retrieve(tmp_path):
    pipe = _pipe()
    docs = load_documents(CORPUS)
    report = pipe.add(docs)
    assert report.documents == 6 and report.chunks == len(pipe.index)
    assert pipe.add(docs).unchanged == 6  # content hashes: nothing re-embedded
    assert pipe.retrieve("waggle dance of honeybees foragers")[0].chunk.doc_id == "honeybees.md"
    pipe.add([Document("honeybees.md", "replaced text about nothing")])
    assert len(pipe.index.doc_chunks("honeybees.md")) == 1

    pipe.save(tmp_path / "p")
    again = RAGPipeline.load(tmp_path / "p")
    assert again.index.path == os.path.normpath(tmp_path / "p" / "index" / "data")
    assert again.index.info == pipe.index.info and again.index.info["embedder"]["name"] == "hash"
    q = "three-way handshake SYN"
    mine = [[h.chunk.id, h.score] for h in again.retrieve(q)]
    assert [c for c, _ in mine] == [h.chunk.id for h in pipe.retrieve(q)]
    again.index.close()
    assert json.loads(run_python(_PIPE_READ, tmp_path / "p", q)) == mine  # a fresh process agrees


def test_pipeline_on_a_persistent_path_keeps_updating_in_place(tmp_path):
    db = str(tmp_path / "db")
    pipe = _pipe(path=db)
    pipe.add(load_documents(CORPUS))
    n = len(pipe.index)
    pipe.index.close()
    later = _pipe(path=db)  # another run on the same store: unchanged documents are skipped
    report = later.add(load_documents(CORPUS))
    assert report.unchanged == 6 and len(later.index) == n
    other = small_pipeline({"name": "chroma", "path": db}, dim=64)
    with pytest.raises(IndexMismatchError, match="embedder"):
        other.add([Document("x", "some text")])
