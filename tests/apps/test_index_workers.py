"""``ragkit index --workers N`` on the local engine and ``chunk_many``'s kept pool: N workers give
exactly one worker's chunks, ids and vectors; a document a chunker refuses fails alone."""

from __future__ import annotations

import json

import numpy as np
import pytest

import ragkit.chunkers.parallel as pool
from ragkit import RAGPipeline
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.cli import main
from ragkit.errors import ConfigError, DocumentError
from ragkit.ingest import ingest
from ragkit.types import Document
from tests.ingest_helpers import CONFIG, make_corpus


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of ~2 k chars, so a small corpus really goes to the worker processes."""
    monkeypatch.setattr(pool, "MIN_BATCH_CHARS", 2_000)
    monkeypatch.setattr(pool, "MIN_SPAWN_BATCH_CHARS", 2_000)
    yield
    pool.shutdown_pool()


def _index(folder):
    with RAGPipeline.load(folder) as pipe:
        rows = sorted(zip(pipe.index.chunks(), pipe.index._vecs[: len(pipe.index)]),
                      key=lambda cv: cv[0].id)
    return [c for c, _ in rows], np.stack([v for _, v in rows])


def test_cli_workers_2_gives_workers_1_index(tmp_path, capsys, monkeypatch):
    import ragkit.ingest.local as local

    went: list[int] = []
    real = local._on_processes

    def on_processes(workers, *args):
        went.append(workers)
        yield from real(workers, *args)

    monkeypatch.setattr(local, "_on_processes", on_processes)
    corpus = tmp_path / "corpus"
    make_corpus(corpus, md=30, jsonl_shards=3, per_shard=30)
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps(CONFIG), encoding="utf-8")
    out, reports = {}, {}
    for workers in ("1", "2"):
        out[workers] = tmp_path / f"out{workers}"
        assert main(["index", str(corpus), "--config", str(cfg), "--out", str(out[workers]),
                     "--workers", workers, "--no-progress", "--batch-size", "8", "--json"]) == 0
        reports[workers] = json.loads(capsys.readouterr().out)
    assert reports["1"]["workers_seen"] == 1
    assert went == [2]  # --workers 2 ran the batches on the worker processes
    assert reports["2"]["workers_seen"] >= 1  # how many took batches is up to the scheduler
    chunks1, vecs1 = _index(out["1"])
    chunks2, vecs2 = _index(out["2"])
    assert len(chunks1) > 100
    assert [c.id for c in chunks2] == [c.id for c in chunks1]
    assert chunks2 == chunks1  # offsets, text, index, metadata (doc_hash included)
    np.testing.assert_array_equal(vecs2, vecs1)


def test_pool_is_kept_between_calls(small_batches):
    chunker = RecursiveChunker(chunk_size=16, tokenizer="whitespace")
    docs = [Document(f"d{i}", "word and more words. " * 200) for i in range(8)]
    first = chunker.chunk_many(docs, workers=2)
    kept = pool._POOL["pool"]
    assert kept is not None
    assert chunker.chunk_many(docs, workers=2) == first == [chunker.chunk(d) for d in docs]
    assert pool._POOL["pool"] is kept  # reused, not started again
    other = RecursiveChunker(chunk_size=20, tokenizer="whitespace")
    assert other.chunk_many(docs, workers=2) == [other.chunk(d) for d in docs]
    assert pool._POOL["pool"] is not kept  # another config: a new pool


def test_spawned_workers_give_the_same_chunks(small_batches, monkeypatch):
    monkeypatch.setattr(pool, "_start_method", lambda: "spawn")  # as with torch loaded
    chunker = RecursiveChunker(chunk_size=16, tokenizer="whitespace")
    docs = [Document(f"d{i}", "spawn me some words. " * 150) for i in range(6)]
    assert chunker.chunk_many(docs, workers=2) == [chunker.chunk(d) for d in docs]
    assert pool._POOL["method"] == "spawn"


def test_a_refused_document_fails_alone_on_worker_processes(tmp_path, monkeypatch):
    monkeypatch.setenv("RAGKIT_ALLOW_IMPORT", "1")
    corpus = tmp_path / "corpus"
    make_corpus(corpus, md=20, jsonl_shards=0)
    poisoned = sorted(corpus.rglob("*.md"))[3]
    poisoned.write_text(poisoned.read_text(encoding="utf-8") + " POISON", encoding="utf-8")
    cfg = dict(CONFIG, chunker={"name": "tests.ingest_helpers:PickyChunker", "size": 12})
    report = ingest(corpus, cfg, tmp_path / "out", engine={"name": "local", "workers": 2},
                    on_error="skip", batch_size=4)
    assert [f.doc_id for f in report.failures] == [poisoned.relative_to(corpus).as_posix()]
    assert "contains 'POISON'" in report.failures[0].reason
    assert report.documents == 19
    with pytest.raises(DocumentError, match="contains 'POISON'"):
        ingest(corpus, cfg, tmp_path / "out2", engine={"name": "local", "workers": 2},
               batch_size=4)


@pytest.mark.parametrize("bad", [0, -2, 1.5, True, "2"])
def test_bad_local_workers_named(bad, tmp_path):
    with pytest.raises(ConfigError, match=r"^engine.workers: (must be an int >= 1|expected int or null)"):
        ingest(tmp_path, CONFIG, tmp_path / "out", engine={"name": "local", "workers": bad})
