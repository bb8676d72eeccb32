"""Many reader threads and one writer on every index kind: no exception, no wrong hit, no
document seen half-written (ragkit.stress has the workload and what counts as wrong)."""

from __future__ import annotations

import threading
import time

import pytest

from ragkit import stress
from ragkit.concurrency import RWLock
from ragkit.pipeline import RAGPipeline

CHUNKER = {"name": "fixed", "chunk_size": 16, "overlap": 4, "tokenizer": "whitespace"}
EMBEDDER = {"name": "hash", "dim": 64}
INDEXES = {
    "memory": {"name": "memory"},
    "faiss": {"name": "faiss"},
    "bm25": {"name": "bm25"},
    "hybrid": {"name": "hybrid"},
    "chroma": {"name": "chroma"},
}


def _pipe(kind: str, tmp_path) -> RAGPipeline:
    pytest.importorskip({"faiss": "faiss", "chroma": "chromadb", "bm25": "bm25s",
                         "hybrid": "bm25s"}.get(kind, "numpy"))
    index = dict(INDEXES[kind])
    if kind == "chroma":
        index["path"] = str(tmp_path / "chroma")
    return RAGPipeline(chunker=CHUNKER, embedder=EMBEDDER, index=index, k=10)


@pytest.mark.parametrize("kind", sorted(INDEXES))
def test_readers_never_see_a_half_written_document(kind, tmp_path):
    pipe = _pipe(kind, tmp_path)
    report = stress.run(pipe, readers=8, seconds=60, writes=60, docs=12)
    assert report.writes == 60, report.exceptions[:3]
    assert report.exceptions == [], report.exceptions[:5]
    assert report.wrong_hits == 0
    assert report.torn_documents == 0
    assert report.queries > 8  # every reader ran while the writer wrote


@pytest.mark.parametrize("kind", ["memory", "faiss"])
def test_the_same_on_a_pipeline_with_a_folder(kind, tmp_path):
    """With a folder, every write also goes through the log first."""
    pipe = _pipe(kind, tmp_path)
    pipe.save(tmp_path / "idx")
    report = stress.run(pipe, readers=4, seconds=60, writes=30, docs=8)
    assert (report.exceptions, report.wrong_hits, report.torn_documents) == ([], 0, 0)
    again = RAGPipeline.load(tmp_path / "idx")
    assert [d.id for d in again.documents()] == [d.id for d in pipe.documents()]
    assert sorted(c.id for c in again.index.chunks()) == sorted(c.id for c in pipe.index.chunks())


def _until(condition, seconds=10.0):
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.001)


def test_rwlock_excludes_writers_from_readers_and_prefers_writers():
    lock, order = RWLock(), []
    release_first = threading.Event()

    def first_reader():
        with lock.read():
            order.append("reader 1")
            release_first.wait(10)
            order.append("reader 1 done")

    def writer():
        with lock.write():
            order.append("writer")

    def late_reader():
        with lock.read():
            order.append("reader 2")

    threads = [threading.Thread(target=first_reader)]
    threads[0].start()
    _until(lambda: order == ["reader 1"])
    threads.append(threading.Thread(target=writer))
    threads[1].start()
    _until(lambda: lock._writers_waiting == 1)  # the writer waits for the reader
    threads.append(threading.Thread(target=late_reader))
    threads[2].start()
    time.sleep(0.2)
    assert order == ["reader 1"]  # neither the writer nor a new reader got in
    release_first.set()
    for t in threads:
        t.join(10)
    assert order == ["reader 1", "reader 1 done", "writer", "reader 2"]


def test_rwlock_is_reentrant_and_refuses_an_upgrade():
    lock = RWLock()
    with lock.write(), lock.write(), lock.read():
        pass
    with lock.read(), lock.read():
        with pytest.raises(RuntimeError, match="read lock cannot take the write lock"):
            with lock.write():
                pass
    with lock.write():  # everything was released
        pass


@pytest.mark.slow
@pytest.mark.parametrize("store", ["memory", "faiss", "chroma"])
def test_kill_9_during_ragkit_index_leaves_no_half_indexed_document(store, tmp_path):
    """benchmarks/crash_bench.py with a few kills: after each, the folder opens with no document
    half-indexed, and a re-run gives exactly the chunks of a clean build."""
    pytest.importorskip({"faiss": "faiss", "chroma": "chromadb"}.get(store, "numpy"))
    from benchmarks.crash_bench import run_store

    stats = run_store(store, kills=3, docs=120, work=tmp_path, seed=1, say=lambda _: None)
    assert stats["kills"] == 3
    assert (stats["failed_opens"], stats["half_indexed"], stats["failed_reruns"],
            stats["mismatched_after_rerun"]) == (0, 0, 0, 0), stats["errors"]
