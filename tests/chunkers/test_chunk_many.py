"""chunk_many and ``ragkit chunk --workers``: several processes give exactly one worker's chunks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import ragkit.chunkers.parallel as pool
from ragkit.chunkers.base import chunk_many
from ragkit.chunkers.fixed import FixedChunker
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.cli import main
from ragkit.errors import ConfigError
from ragkit.types import Document

CORPUS = Path(__file__).parents[2] / "ragkit" / "data" / "corpus"


def _docs() -> list[Document]:
    """The shipped corpus, one empty document, and one with emoji and combining marks."""
    docs = [Document(p.name, p.read_text(encoding="utf-8")) for p in sorted(CORPUS.glob("*.md"))]
    odd = "caf\u00e9 e\u0301 \U0001F44D\U0001F3FD, \u2018quoted\u2019.\n\n" * 300
    return [*docs, Document("empty", ""), Document("odd", odd)]


@pytest.fixture
def small_batches(monkeypatch):
    """Batches of ~4 k chars, so the small test corpus really goes to several processes."""
    monkeypatch.setattr(pool, "MIN_BATCH_CHARS", 4_000)
    monkeypatch.setattr(pool, "MIN_SPAWN_BATCH_CHARS", 4_000)


@pytest.mark.parametrize("chunker", [
    FixedChunker(chunk_size=64, overlap=16),
    RecursiveChunker(chunk_size=48, overlap=8),
], ids=["fixed", "recursive"])
def test_two_workers_give_one_workers_chunks(chunker, small_batches):
    docs = _docs()
    assert len(pool._batches(docs, 2, pool.MIN_BATCH_CHARS)) > 2  # the pool is used, several batches each way
    one = chunker.chunk_many(docs, workers=1)
    two = chunker.chunk_many(docs, workers=2)
    assert one == [chunker.chunk(d) for d in docs]
    assert two == one  # same chunks: ids, offsets, text, index and metadata
    assert [[c.id for c in cs] for cs in two] == [[c.id for c in cs] for cs in one]
    assert sum(map(len, two)) > len(docs)


@pytest.mark.parametrize("chunker", [
    FixedChunker(chunk_size=64, overlap=16),
    RecursiveChunker(chunk_size=48, overlap=8),
], ids=["fixed", "recursive"])
def test_a_stream_of_documents_is_taken_as_needed(chunker, small_batches):
    """A generator (a folder being read) is not listed up front: when the first document's chunks
    come back, at most ``workers + 1`` batches of it have been read; the chunks are one worker's."""
    docs = _docs() * 3
    taken = []

    def stream():
        for d in docs:
            taken.append(d.id)
            yield d

    results = pool.iter_chunk_many(chunker, stream(), workers=2)
    first = next(results)
    read_then = len(taken)
    two = [first, *results]
    assert two == [chunker.chunk(d) for d in docs]
    batches = pool._stream_batches(iter(docs), pool.MIN_BATCH_CHARS)
    at_most = sum(len(b) for b, _ in zip(batches, range(2 + 1)))  # workers + 1 batches in flight
    assert read_then <= at_most + 1 < len(docs)  # + the one that showed the last batch full


def test_a_short_stream_stays_in_process(monkeypatch):
    def no_pool(*args):
        raise AssertionError("a stream of one batch started the pool")

    monkeypatch.setattr(pool, "_pool", no_pool)
    docs = _docs()
    chunker = FixedChunker(chunk_size=64)
    assert list(pool.iter_chunk_many(chunker, iter(docs), workers=2)) == [
        chunker.chunk(d) for d in docs]


def test_small_corpus_stays_in_process():
    docs = _docs()
    assert pool._batches(docs, 2, pool.MIN_BATCH_CHARS) == [docs]  # under MIN_BATCH_CHARS: no pool to start


@pytest.mark.parametrize("bad", [0, -1, 1.5, True, "2"])
def test_bad_workers_named(bad):
    with pytest.raises(ConfigError, match="workers.*int >= 1"):
        chunk_many(FixedChunker(), _docs(), workers=bad)


def test_a_chunker_without_config_cannot_go_to_processes(small_batches):
    class Lines:
        def chunk(self, doc):
            return FixedChunker(chunk_size=20, tokenizer="whitespace").chunk(doc)

    with pytest.raises(ConfigError, match="workers=2 needs a chunker that is a config dataclass"):
        chunk_many(Lines(), _docs(), workers=2)
    assert chunk_many(Lines(), _docs()[:2], workers=1)  # in-process it needs no config


def test_cli_workers_2_gives_workers_1_output(capsys, small_batches):
    outputs = {}
    for workers in ("1", "2"):
        code = main(["chunk", str(CORPUS), "--format", "jsonl", "--no-progress",
                     "--workers", workers, "-o", "chunker.chunk_size=40"])
        assert code == 0
        outputs[workers] = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert len(outputs["1"]) > 10
    assert outputs["2"] == outputs["1"]


def test_cli_bad_workers(capsys):
    assert main(["chunk", str(CORPUS), "--workers", "0", "--no-progress"]) == 2
    assert "--workers: must be an int >= 1" in capsys.readouterr().err


KILLED_PARENT = """
import multiprocessing, sys, time
import ragkit.chunkers.parallel as pool
from ragkit.chunkers.base import chunk_many
from ragkit.chunkers.fixed import FixedChunker
from ragkit.types import Document
pool.MIN_BATCH_CHARS = pool.MIN_SPAWN_BATCH_CHARS = 2_000
docs = [Document(str(i), "word " * 2_000) for i in range(8)]
chunk_many(FixedChunker(chunk_size=64, overlap=0, tokenizer="whitespace"), docs, workers=2)
print(" ".join(str(p.pid) for p in multiprocessing.active_children()), flush=True)
time.sleep(600)
"""


def test_pool_workers_exit_when_their_parent_is_killed():
    """A kill -9 of the process that owns the kept pool (a ``ragkit serve``) leaves no worker
    behind: each watches its parent and exits when it is gone."""
    import os
    import signal
    import subprocess
    import sys
    import time

    proc = subprocess.Popen([sys.executable, "-c", KILLED_PARENT], stdout=subprocess.PIPE,
                            text=True, cwd=Path(__file__).parents[2])
    pids = [int(p) for p in proc.stdout.readline().split()]
    assert len(pids) == 2, pids
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    alive = pids
    for _ in range(600):  # a bound, not a timing claim: the watchers poll once a second
        alive = [p for p in alive if Path(f"/proc/{p}").exists()
                 and "Z" not in Path(f"/proc/{p}/stat").read_text().split(")")[-1].split()[0]]
        if not alive:
            break
        time.sleep(0.1)
    assert alive == [], f"pool workers {alive} outlived their killed parent"


def test_a_worker_whose_parent_died_before_it_started_exits():
    """A spawned worker still importing when its parent is killed starts under another parent
    (init): it is told its parent's pid, so it does not take init for its parent and stay."""
    import subprocess
    import sys

    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait()  # a pid that is nobody's parent any more
    code = ("import time; from ragkit.concurrency import exit_with_parent; "
            f"exit_with_parent({gone.pid}, interval=0.05); time.sleep(600)")
    child = subprocess.run([sys.executable, "-c", code], timeout=120,
                           cwd=Path(__file__).parents[2])
    assert child.returncode == 0


@pytest.mark.parametrize("workers", [1, 2])
@pytest.mark.parametrize("chunker", [
    FixedChunker(chunk_size=64, overlap=16),
    RecursiveChunker(chunk_size=48, overlap=8),
], ids=["fixed", "recursive"])
def test_lazy_chunks_are_the_eager_ones(chunker, workers, small_batches):
    """``lazy=True`` (what ``ragkit chunk`` uses) hands out iterators that make each document's
    chunks as they are taken, on one process or several; what they make is ``chunk(d)``."""
    docs = _docs()
    lazy = list(pool.iter_chunk_many(chunker, docs, workers=workers, lazy=True))
    assert all(not isinstance(cs, list) for cs in lazy)  # nothing made before it is taken
    assert [list(cs) for cs in lazy] == [chunker.chunk(d) for d in docs]
