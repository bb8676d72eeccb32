"""A damaged embedded Chroma store is rebuilt from the copy in the folder's document log when the
folder is opened (ragkit.store_repair), with real Chroma: the same chunks and hits as a clean
build, the damaged store kept aside, and one warning naming both paths. A folder without the copy
still gives the error naming --replace."""

from __future__ import annotations

import json
import logging
import sqlite3
from pathlib import Path

import pytest

from ragkit.cli import main
from ragkit.doclog import FILE, DocLog
from ragkit.pipeline import RAGPipeline
from ragkit.retrieval.index_files import IndexFileError
from ragkit.types import Document

pytest.importorskip("chromadb")

ROOT = Path(__file__).parents[2]
CONFIG = {"chunker": {"name": "fixed", "chunk_size": 7, "overlap": 2, "tokenizer": "whitespace"},
          "embedder": {"name": "hash", "dim": 32}, "index": {"name": "chroma"}}
QUERIES = ["w3x0y5 w3x0y6", "w7x1y2", "w11x0y0 w11x0y1 w11x0y2", "nothing of the sort"]


N = 100  # documents: about 1,300 chunks, enough for Chroma to write its HNSW segment to disk


def doc(i: int, version: int = 0) -> Document:
    words = " ".join(f"w{i}x{version}y{j}" for j in range(50 + i % 30))
    return Document(f"d{i}", words, {"source": f"d{i}.txt"})


def build(folder: Path, docs: list[Document], *, saved_first: bool = True) -> None:
    """A chroma folder holding ``docs``: saved empty and then added to (as `ragkit index` does),
    or added to in memory and then saved."""
    pipe = RAGPipeline.from_config(CONFIG)
    if saved_first:
        pipe.save(folder)
        pipe.close()
        pipe = RAGPipeline.load(folder)
    pipe.add(docs)
    if not saved_first:
        pipe.save(folder)
    pipe.close()
    pipe.index.close()


def damage(folder: Path, how: str = "hnsw") -> Path:
    """Damage the Chroma store as a kill inside Chroma's writer can (chroma-core/chroma#7678):
    ``"hnsw"`` truncates the HNSW segment's metadata file (Chroma opens, the first read fails),
    ``"sqlite"`` zeroes part of its SQLite file (Chroma cannot open it); returns the store."""
    store = folder / "index" / "data"
    if how == "hnsw":
        (pickle,) = store.glob("*/index_metadata.pickle")
        with open(pickle, "r+b") as f:
            f.truncate(100)
    else:
        db = store / "chroma.sqlite3"
        raw = bytearray(db.read_bytes())
        raw[100:4000] = bytes(3900)
        db.write_bytes(bytes(raw))
    return store


def contents(pipe: RAGPipeline) -> dict[str, list[tuple[str, int, int, str]]]:
    out: dict[str, list[tuple[str, int, int, str]]] = {}
    for c in pipe.index.chunks():
        out.setdefault(c.doc_id, []).append((c.id, c.start, c.end, c.text))
    return {d: sorted(v) for d, v in out.items()}


def hits(pipe: RAGPipeline) -> list[list[tuple[str, float]]]:
    return [[(h.chunk.id, round(h.score, 5)) for h in pipe.retrieve(q, k=5)] for q in QUERIES]


def clean(tmp_path: Path, docs: list[Document]) -> tuple[dict, list]:
    build(tmp_path / "clean", docs)
    with RAGPipeline.load(tmp_path / "clean") as pipe:
        result = contents(pipe), hits(pipe)
        pipe.index.close()
    return result


@pytest.mark.parametrize(("saved_first", "how"),
                         [(True, "hnsw"), (False, "hnsw"), (True, "sqlite")], ids=["added-after-save", "saved-after-add", "sqlite"])
def test_a_damaged_store_is_rebuilt_from_the_log_on_open(tmp_path, caplog, saved_first, how):
    docs = [doc(i) for i in range(N)]
    folder = tmp_path / "idx"
    build(folder, docs, saved_first=saved_first)
    store = damage(folder, how)
    with caplog.at_level(logging.WARNING, logger="ragkit"):
        pipe = RAGPipeline.load(folder)
    want_contents, want_hits = clean(tmp_path, docs)
    try:
        assert contents(pipe) == want_contents
        assert hits(pipe) == want_hits
        assert [d.id for d in pipe.documents()] == sorted(d.id for d in docs)
    finally:
        pipe.close()
        pipe.index.close()
    (aside,) = (folder / "index").glob("data.damaged-*")
    (rebuilt,) = (folder / "index").glob("data-*")
    assert not store.exists() and any(aside.iterdir())  # kept, renamed, not deleted
    (record,) = [r for r in caplog.records if "rebuilt" in r.getMessage()]
    message = record.getMessage()
    assert "\n" not in message and record.levelno == logging.WARNING
    assert str(aside) in message and str(rebuilt) in message and str(folder / FILE) in message
    assert "Chroma" in message and f"{N} documents" in message
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="ragkit"), RAGPipeline.load(folder) as again:
        assert contents(again) == want_contents  # the rebuilt store opens by itself
        again.index.close()
    assert not [r for r in caplog.records if "rebuilt" in r.getMessage()]


def test_updates_and_deletes_before_the_damage_are_in_the_rebuilt_store(tmp_path):
    docs = [doc(i) for i in range(N)]
    folder = tmp_path / "idx"
    build(folder, docs)
    with RAGPipeline.load(folder) as pipe:
        pipe.add([doc(7, version=1), doc(3, version=2)])  # updates: new text, new chunks
        pipe.delete(["d2", "d5"])
        pipe.add([doc(N)])
        pipe.index.close()
    damage(folder)
    final = [d for d in docs if d.id not in {"d2", "d3", "d5", "d7"}]
    final += [doc(7, version=1), doc(3, version=2), doc(N)]
    want_contents, want_hits = clean(tmp_path, final)
    with RAGPipeline.load(folder) as pipe:
        assert contents(pipe) == want_contents
        assert hits(pipe) == want_hits
        assert pipe.doc_hash("d7") == doc(7, version=1).content_hash
        assert pipe.doc_hash("d2") is None
        pipe.index.close()
    with sqlite3.connect(folder / FILE) as db:  # compacted: one put per document, no deletes
        ops = db.execute("SELECT doc_id, op FROM pending ORDER BY doc_id").fetchall()
    assert ops == sorted((d.id, "put") for d in final)


def test_a_folder_without_the_copy_still_names_replace(tmp_path):
    """A folder written before the log kept a copy (its puts were dropped once Chroma had them,
    and its meta has no ``copy``) keeps the error naming --replace, and nothing is renamed."""
    folder = tmp_path / "idx"
    build(folder, [doc(i) for i in range(N)])
    keeps = DocLog(folder)
    assert keeps.keeps_copy()  # this version keeps it: take it away as the old one never had it
    keeps.close()
    with sqlite3.connect(folder / FILE) as db:
        db.execute("DELETE FROM meta WHERE key = 'copy'")
        db.execute("DELETE FROM pending")
    store = damage(folder)
    with pytest.raises(IndexFileError) as info:
        RAGPipeline.load(folder)
    message = str(info.value)
    assert "\n" not in message and str(store) in message
    assert "Chroma's store is damaged" in message and "--replace" in message
    assert sorted(p.name for p in (folder / "index").iterdir()) == ["chroma.json", "data"]


def test_ragkit_query_on_a_damaged_folder_says_what_it_rebuilt_on_stderr(tmp_path, capsys):
    out = tmp_path / "idx"
    corpus = ROOT / "ragkit" / "data" / "corpus"
    assert main(["index", str(corpus), "--config", str(ROOT / "configs" / "hash.yaml"),
                 "-o", "index.name=chroma", "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["query", "printing", "--index", str(out), "--json"]) == 0
    before = json.loads(capsys.readouterr().out)["sources"]
    db = out / "index" / "data" / "chroma.sqlite3"
    db.write_bytes(b"this is not a database" * 100)  # Chroma cannot open it at all
    assert main(["query", "printing", "--index", str(out), "--json"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["sources"] == before
    (aside,) = (out / "index").glob("data.damaged-*")
    (rebuilt,) = (out / "index").glob("data-*")
    lines = captured.err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("ragkit: WARNING: ")
    assert str(aside) in lines[0] and str(rebuilt) in lines[0] and "rebuilt" in lines[0]
    assert (aside / "chroma.sqlite3").read_bytes() == b"this is not a database" * 100
