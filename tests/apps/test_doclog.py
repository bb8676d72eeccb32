"""The document log behind a saved index: durable adds, repair after a crash, one writer
process, readers that reload, and folders saved before the log existed."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragkit.doclog import FILE, DocLog, Put, WriterBusyError
from ragkit.pipeline import RAGPipeline
from ragkit.types import Document

ROOT = Path(__file__).parents[2]
CONFIG = {"chunker": {"name": "fixed", "chunk_size": 6, "overlap": 0, "tokenizer": "whitespace"},
          "embedder": {"name": "hash", "dim": 32}, "index": {"name": "memory"}}


def doc(i: int, version: int = 0) -> Document:
    words = " ".join(f"w{i}x{version}y{j}" for j in range(20))
    return Document(f"d{i}", words, {"source": f"d{i}.txt"})


def chunk_ids(pipe: RAGPipeline) -> list[str]:
    return sorted(c.id for c in pipe.index.chunks())


@pytest.fixture
def folder(tmp_path) -> Path:
    pipe = RAGPipeline.from_config(CONFIG)
    pipe.add([doc(0), doc(1)])
    pipe.save(tmp_path / "idx")
    pipe.close()
    return tmp_path / "idx"


def test_an_add_is_durable_when_it_returns_without_a_save(folder):
    with RAGPipeline.load(folder) as pipe:
        pipe.add([doc(2), doc(0, version=1)])
        pipe.delete(["d1"])
        want = chunk_ids(pipe)
    # no save: the snapshot on disk is still the first one; the log holds the rest
    with RAGPipeline.load(folder) as again:
        assert chunk_ids(again) == want
        assert [d.id for d in again.documents()] == ["d0", "d2"]
        assert again.doc_hash("d0") == doc(0, version=1).content_hash


def test_kill_9_right_after_add_returns_loses_nothing(folder):
    script = (
        "import os, signal, sys\n"
        "from ragkit.pipeline import RAGPipeline\n"
        "from tests.apps.test_doclog import doc\n"
        f"pipe = RAGPipeline.load({str(folder)!r})\n"
        "pipe.add([doc(i) for i in range(2, 40)])\n"
        "print('added', flush=True)\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == -signal.SIGKILL and done.stdout == "added\n", done.stderr
    with RAGPipeline.load(folder) as pipe:
        assert len(pipe.documents()) == 40
        ref = RAGPipeline.from_config(CONFIG)
        ref.add([doc(i) for i in range(40)])
        assert chunk_ids(pipe) == chunk_ids(ref)


def test_a_crash_between_the_log_and_the_index_is_repaired_on_open(folder):
    """The log committed, the index never saw it (the process died in between)."""
    log = DocLog(folder)
    chunks = RAGPipeline.from_config(CONFIG).chunker.chunk(doc(5))
    log.commit([Put("d5", "d5.txt", doc(5).content_hash, chunks,
                    np.ones((len(chunks), 32), dtype=np.float32))])
    log.close()
    with RAGPipeline.load(folder) as pipe:
        assert "d5" in [d.id for d in pipe.documents()]
        assert sorted(c.id for c in pipe.index.chunks() if c.doc_id == "d5") == sorted(
            c.id for c in chunks)


def test_one_writer_process_at_a_time(folder):
    writer = RAGPipeline.load(folder)
    writer.add([doc(3)])
    other = RAGPipeline.load(folder)  # reading is fine
    assert "d3" in [d.id for d in other.documents()]
    with pytest.raises(WriterBusyError, match=r"is being written by pid \d+; one process writes "
                       r"to an index at a time"):
        other.add([doc(4)])
    assert "d4" not in [d.id for d in other.documents()]  # nothing half-written
    writer.close()
    other.add([doc(4)])  # the lock went with the writer
    other.close()


def test_a_reader_sees_committed_writes_after_reload(folder):
    reader = RAGPipeline.load(folder)
    with RAGPipeline.load(folder) as writer:
        writer.add([doc(7)])
        assert "d7" not in {c.doc_id for c in reader.index.chunks()}
        assert reader.reload() == 1
        assert "d7" in {c.doc_id for c in reader.index.chunks()}
        writer.save(folder)  # a new snapshot: the log is compacted
        writer.delete(["d0"])
        reader.reload()  # reopens the snapshot, then replays the delete
        assert chunk_ids(reader) == chunk_ids(writer)
    reader.close()


def test_a_folder_saved_before_the_log_opens_and_lists_its_documents(folder):
    (folder / FILE).unlink()
    for extra in folder.glob(FILE + "-*"):
        extra.unlink()
    with RAGPipeline.load(folder) as pipe:
        docs = pipe.documents()
        assert [(d.id, d.source, d.content_hash) for d in docs] == [
            ("d0", "d0.txt", doc(0).content_hash), ("d1", "d1.txt", doc(1).content_hash)]
        assert pipe.add([doc(0)]).unchanged == 1


def test_a_damaged_log_is_one_clear_error(folder):
    (folder / FILE).write_bytes(b"not sqlite" * 200)
    for extra in folder.glob(FILE + "-*"):
        extra.unlink()
    with pytest.raises(Exception, match=r"cannot open the document log .*rebuild it with "
                       r"`ragkit index --replace`"):
        RAGPipeline.load(folder)


def test_unchanged_documents_are_skipped_and_updates_replace_every_old_chunk(folder):
    with RAGPipeline.load(folder) as pipe:
        assert pipe.add([doc(0), doc(1)]).unchanged == 2
        old = {c.id for c in pipe.index.chunks() if c.doc_id == "d0"}
        pipe.add([Document("d0", "short now", {"source": "d0.txt"})])
        now = [c for c in pipe.index.chunks() if c.doc_id == "d0"]
        assert [c.text for c in now] == ["short now"] and not old & {c.id for c in now}
        assert pipe.delete(["d0"]) == 1
        assert not [c for c in pipe.index.chunks() if c.doc_id == "d0"]
        assert pipe.delete(["never-there"]) == 0
    assert os.path.exists(folder / FILE)


@pytest.mark.parametrize("big", [False, True], ids=["bound", "blob-handles"])
def test_a_big_document_goes_through_the_log_whole(tmp_path, monkeypatch, big):
    """A document over the log's size threshold is written through SQLite blob handles in
    pieces (not bound as one value: memory); it reads back exactly, and a failure later in the
    same transaction leaves nothing of it."""
    import ragkit.doclog as doclog_mod
    from ragkit.types import Chunk

    monkeypatch.setattr(doclog_mod, "_BIG", 64 if big else 1 << 40)  # pieces of 64 bytes
    text = "caf\u00e9 \u6771\u4eac \u2713 word " * 40
    chunks = [Chunk("doc", i, i + 7, text[i : i + 7], n, {"source": "s", "doc_hash": "h",
                                                           "tokens": 2})
              for n, i in enumerate(range(0, 280, 7))]
    vecs = np.arange(len(chunks) * 5, dtype=np.float32).reshape(len(chunks), 5)
    log = DocLog(tmp_path)
    log.acquire_writer()
    seq = log.commit([Put("doc", "s", "h", chunks, vecs)])
    [(got_seq, put)] = list(log.pending(0))
    assert got_seq == seq and list(put.chunks) == chunks
    np.testing.assert_array_equal(put.vecs, vecs)

    class Boom(Exception):
        pass

    bad = Put("doc2", "s", "h", chunks, vecs)
    with pytest.raises(Boom):
        with monkeypatch.context() as m:
            real = log._db

            class Failing:  # the documents row after the pending row fails: roll back both
                def __getattr__(self, name):
                    return getattr(real, name)

                def execute(self, sql, *args):
                    if sql.startswith("INSERT OR REPLACE INTO documents") and args[0][0] == "doc2":
                        raise Boom()
                    return real.execute(sql, *args)

            m.setattr(log, "_db", Failing())
            log.commit([bad])
    assert [s for s, _ in log.pending(0)] == [seq]
    assert [d.id for d in log.documents()] == ["doc"]


def test_the_log_keeps_one_operation_per_document_and_replays_to_the_same_state(folder):
    """A document's state after a replay depends only on its last operation, so committing one
    drops the document's earlier ones: the log stays one row per document between snapshots."""
    import sqlite3

    with RAGPipeline.load(folder) as pipe:
        for version in (1, 2, 3):
            pipe.add([doc(0, version=version)])
        pipe.add([doc(2)])
        pipe.delete(["d1", "d2"])
        want = chunk_ids(pipe)
    with sqlite3.connect(folder / FILE) as db:
        rows = db.execute("SELECT doc_id, op FROM pending ORDER BY doc_id").fetchall()
    assert rows == [("d0", "put"), ("d1", "delete"), ("d2", "delete")]
    with RAGPipeline.load(folder) as again:  # the snapshot holds d0 v0 and d1: replayed
        assert chunk_ids(again) == want
        assert [d.id for d in again.documents()] == ["d0"]
        assert again.doc_hash("d0") == doc(0, version=3).content_hash
