"""FaissIndex saved and loaded: the same results in a fresh process, empty indexes, corrupted
files and a meta.json that disagrees with them found with the path, never a pickle."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("faiss")

from ragkit.errors import RagkitError  # noqa: E402
from ragkit.types import Chunk  # noqa: E402
from ragkit.retrieval.faiss_index import FaissIndex  # noqa: E402
from ragkit.retrieval.memory_index import IndexFileError  # noqa: E402
from tests.retrieval.index_helpers import (  # noqa: E402
    clustered,
    edit_json,
    flip_byte,
    make_chunks,
    run_python,
)

KINDS = ["flat", "hnsw", "ivfpq"]


# -- save / load -------------------------------------------------------------------------------

_LOAD_AND_SEARCH = """
import json, sys
import numpy as np
from ragkit.retrieval.faiss_index import FaissIndex
index = FaissIndex.load(sys.argv[1])
queries = np.load(sys.argv[2])
out = [[[h.chunk.id, h.score] for h in row] for row in index.search(queries, k=12)]
out += [[[h.chunk.id, h.score] for h in row]
        for row in index.search(queries, k=12, filter={"parity": 1})]
print(json.dumps({"hits": out, "info": index.info, "len": len(index)}))
"""


def _in_fresh_process(path: Path, queries: np.ndarray, tmp_path: Path) -> dict:
    np.save(tmp_path / "queries.npy", queries)
    return json.loads(run_python(_LOAD_AND_SEARCH, path, tmp_path / "queries.npy", timeout=120))


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_in_a_fresh_process_gives_identical_results(tmp_path, kind):
    vecs = clustered(1200, d=32)
    chunks = make_chunks(1200)
    chunks[3] = Chunk("d3", 30, 37, "line\nü\u2028", 3, {"tags": ["x", "y"], "parity": 1})
    index = FaissIndex(kind=kind, **({"train_size": 500} if kind == "ivfpq" else {}))
    index.add(chunks, vecs)
    index.delete(["d4"])  # hnsw: tombstones are saved as they are
    index.info["embedder"] = {"name": "hash", "dim": 32}
    queries = clustered(6, d=32, seed=9)
    here = [[[h.chunk.id, h.score] for h in row] for row in index.search(queries, k=12)]
    here += [[[h.chunk.id, h.score] for h in row]
             for row in index.search(queries, k=12, filter={"parity": 1})]
    index.save(tmp_path / "idx")
    names = sorted(p.name for p in (tmp_path / "idx").iterdir())
    assert names == sorted(["chunks.jsonl", "labels.npy", "index.faiss", "meta.json"]
                           + (["refine.faiss"] if kind == "ivfpq" else []))
    there = _in_fresh_process(tmp_path / "idx", queries, tmp_path)
    assert there == {"hits": here, "info": index.info, "len": 960}

    loaded = FaissIndex.load(tmp_path / "idx")
    assert loaded == index and list(loaded.chunks()) == list(index.chunks())
    assert loaded.trained == index.trained and loaded.info == index.info
    loaded.add(make_chunks(1, doc="new"), np.ones((1, 32), np.float32))  # still usable
    loaded.add(chunks[:1], np.ones((1, 32), np.float32))  # replacing a loaded chunk works
    assert len(loaded) == 961
    index.delete(["d0"])  # saving again replaces the folder, leaving no temporary behind
    index.save(tmp_path / "idx")
    assert len(FaissIndex.load(tmp_path / "idx")) == 720
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx", "queries.npy"]


def test_save_load_empty_and_never_added(tmp_path):
    FaissIndex().save(tmp_path / "never")
    assert len(FaissIndex.load(tmp_path / "never")) == 0
    index = FaissIndex(kind="hnsw")
    index.add(make_chunks(2), np.ones((2, 3), np.float32))
    index.delete(["d0", "d1"])
    index.save(tmp_path / "empty")
    loaded = FaissIndex.load(tmp_path / "empty")
    assert len(loaded) == 0 and loaded.dim is None
    assert loaded.search(np.ones((1, 4)), k=2) == [[]]


def _saved(tmp_path, kind="hnsw"):
    index = FaissIndex(kind=kind)
    index.add(make_chunks(40), clustered(40, d=16))
    index.delete(["d1"])
    path = tmp_path / "idx"
    index.save(path)
    return path


@pytest.mark.parametrize(
    "corrupt, where",
    [
        (lambda p: flip_byte(p / "index.faiss"), "index.faiss"),
        (lambda p: flip_byte(p / "index.faiss", offset=40), "index.faiss"),
        (lambda p: flip_byte(p / "chunks.jsonl", offset=30), "chunks.jsonl"),
        (lambda p: flip_byte(p / "labels.npy"), "labels.npy"),
        (lambda p: (p / "index.faiss").unlink(), "index.faiss"),
        (lambda p: (p / "meta.json").write_text("{not json"), "meta.json"),
        (lambda p: (p / "meta.json").unlink(), "meta.json"),
    ],
)
def test_corrupted_files_are_detected_with_the_path(tmp_path, corrupt, where):
    path = _saved(tmp_path)
    corrupt(path)
    with pytest.raises(RagkitError, match=where) as info:
        FaissIndex.load(path)
    assert str(path) in str(info.value)


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"version": 99}, "version 99"),
        ({"format": "ragkit.memory_index"}, "not a ragkit.faiss_index"),
        ({"count": 33}, "meta.json says 33 chunks"),
        ({"dim": 7}, "holds dim 16; meta.json says 7"),
        ({"tombstones": 0}, "deleted vectors"),
        ({"config": {"kind": "flat"}}, "not the faiss index a 'flat' index writes"),
        ({"config": {"kind": "nope"}}, "invalid config"),
        ({"config": {"bogus": 1}}, "config must be"),
    ],
)
def test_meta_that_disagrees_with_the_files_is_detected(tmp_path, changes, message):
    path = _saved(tmp_path)
    edit_json(path / "meta.json", **changes)
    with pytest.raises(IndexFileError, match=message):
        FaissIndex.load(path)


def test_save_refuses_to_overwrite_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "notes.txt").write_text("keep me")
    with pytest.raises(IndexFileError, match="refusing"):
        FaissIndex().save(tmp_path)
    assert (tmp_path / "notes.txt").read_text() == "keep me"


def test_never_pickles(tmp_path, monkeypatch):
    import pickle

    def forbidden(*args, **kwargs):
        raise AssertionError("pickle used")

    for name in ("dump", "dumps", "load", "loads"):
        monkeypatch.setattr(pickle, name, forbidden)
    path = _saved(tmp_path, kind="flat")
    assert len(FaissIndex.load(path)) == 32
