"""Progress that moves within one big document (issue 15 item 6, issue 19 item 5), the summary
line's rates, and the durability of ingest parts (fsync before the ledger names them)."""

from __future__ import annotations

import json
import os
import random

import pytest

from ragkit import progress
from ragkit.cli import main
from ragkit.config import build
from ragkit.ingest import ingest
from ragkit.ingest.work import chunk_and_embed
from ragkit.types import Document

WORDS = "river mill copper harbour orbit tower nectar bridge cipher Ünïcödé 東京".split()
CONFIG = {"chunker": {"name": "recursive", "chunk_size": 24, "overlap": 0,
                      "tokenizer": "whitespace"},
          "embedder": {"name": "hash", "dim": 16}, "index": {"name": "memory"}, "batch_size": 32}


def big_text(words: int, seed: int = 0) -> str:
    rng = random.Random(seed)
    return " ".join(rng.choice(WORDS) for _ in range(words)) + "."  # one line, no paragraph


@pytest.mark.parametrize("spec", [
    {"name": "recursive", "chunk_size": 24, "tokenizer": "whitespace"},
    {"name": "fixed", "chunk_size": 24, "tokenizer": "whitespace"},
    {"name": "recursive", "chunk_size": 64},  # cl100k
], ids=["recursive", "fixed", "recursive-cl100k"])
def test_chunker_reports_fractions_within_one_document(spec):
    chunker = build("chunker", spec)
    doc = Document("big", big_text(60_000))
    seen: list[float] = []
    with progress.listening(seen.append):
        chunks = chunker.chunk(doc)
    assert chunks == chunker.chunk(doc)  # listening changes nothing
    assert len(seen) >= 20  # many reports within the one document
    assert seen == sorted(seen) and 0 < seen[0] and seen[-1] <= 1.0
    assert sum(0.2 < f < 0.9 for f in seen) >= 10  # and from the middle of it, not its ends


def test_nobody_listening_costs_nothing_visible():
    assert progress.listener() is None
    progress.done(0.5)  # no listener: a no-op
    with progress.listening(None):
        assert progress.listener() is None


def test_chunk_and_embed_reports_bytes_within_one_document():
    chunker = build("chunker", CONFIG["chunker"])
    embedder = build("embedder", CONFIG["embedder"])
    doc = Document("big", big_text(30_000))
    size = len(doc.text.encode("utf-8"))
    seen: list[int] = []
    [result] = chunk_and_embed([doc], chunker, embedder, 64, progress=seen.append)
    assert len(result.chunks) > 64 * 10  # so the embedder is called more than ten times
    assert seen == sorted(seen) and seen[-1] == size
    inside = [n for n in seen if 0 < n < size]
    assert len(set(inside)) >= 20  # chunking then embedding both move it within the document
    assert any(n < size // 2 for n in inside) and any(n > size // 2 for n in inside)


def test_ingest_progress_advances_within_a_single_file(tmp_path):
    (tmp_path / "in").mkdir()
    text = big_text(40_000, seed=1)
    (tmp_path / "in" / "big.txt").write_text(text, encoding="utf-8")
    size = len(text.encode("utf-8"))
    states = []
    report = ingest(tmp_path / "in", CONFIG, tmp_path / "out",
                    progress=lambda p: states.append((p.bytes_done, p.documents, p.bytes_total)))
    within = [b for b, docs, _ in states if docs == 0 and 0 < b < size]
    assert len(set(within)) >= 20  # several updates while the one document is in the works
    assert [b for b, *_ in states] == sorted(b for b, *_ in states)
    assert states[-1][0] == states[-1][2] == size and states[-1][1] == 1
    assert report.bytes == size and report.documents == 1
    line = report.summary()
    assert "chunks/s" in line and "MB/s" in line and f"{size / 1e6:.2f} MB)" in line


def test_cli_chunk_summary_gives_chunks_and_mb_per_second(tmp_path, capsys):
    (tmp_path / "a.txt").write_text(big_text(2000), encoding="utf-8")
    assert main(["chunk", str(tmp_path), "--no-progress", "-o", "chunker.chunk_size=32"]) == 0
    out = capsys.readouterr().out
    time_line = next(line for line in out.splitlines() if line.startswith("time"))
    assert "chunks/s" in time_line and "MB/s" in time_line


def test_cli_chunk_bar_moves_within_one_file(tmp_path, capsys, monkeypatch):
    import tqdm

    updates: list[float] = []
    real = tqdm.tqdm.update

    def update(self, n=1):
        updates.append(self.n + n)
        return real(self, n)

    monkeypatch.setattr(tqdm.tqdm, "update", update)
    text = big_text(60_000, seed=2)
    (tmp_path / "big.txt").write_text(text, encoding="utf-8")
    assert main(["chunk", str(tmp_path), "--workers", "1", "-o", "chunker.chunk_size=32",
                 "-o", "chunker.tokenizer=whitespace"]) == 0
    size = len(text.encode("utf-8"))
    assert len({u for u in updates if 0 < u < size}) >= 20
    assert max(updates) == size


# -- durability of the parts ------------------------------------------------------------------


def test_parts_are_fsynced_before_the_ledger_names_them(tmp_path, monkeypatch):
    """Every part file is fsynced under its temporary name, renamed, and its folder fsynced,
    all before the fsync of the ledger line that names it."""
    for i in range(3):
        (tmp_path / "in").mkdir(exist_ok=True)
        (tmp_path / "in" / f"d{i}.txt").write_text(big_text(300, seed=i), encoding="utf-8")
    events: list[tuple[str, str]] = []
    real_fsync, real_replace = os.fsync, os.replace

    def fsync(fd):
        try:
            events.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        except OSError:
            events.append(("fsync", "?"))
        return real_fsync(fd)

    def replace(src, dst, *a, **k):
        events.append(("replace", f"{os.fspath(src)} -> {os.fspath(dst)}"))
        return real_replace(src, dst, *a, **k)

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", replace)
    ingest(tmp_path / "in", CONFIG, tmp_path / "out")
    ledger = tmp_path / "out" / "ingest" / "ledger.jsonl"
    parts_dir = str((tmp_path / "out" / "ingest" / "parts").resolve())
    named = [p for line in ledger.read_text().splitlines() for p in json.loads(line)["parts"]]
    assert len(named) == 3
    ledger_syncs = [i for i, (kind, what) in enumerate(events)
                    if kind == "fsync" and what == str(ledger.resolve())]
    for name in named:
        tmp_i = next(i for i, (k, w) in enumerate(events)
                     if k == "fsync" and w.endswith(f".{name}.tmp.npz"))
        ren_i = next(i for i, (k, w) in enumerate(events)
                     if k == "replace" and w.endswith(f"{name}.npz") and ".tmp" in w)
        dir_i = next(i for i, (k, w) in enumerate(events)
                     if k == "fsync" and w == parts_dir and i > ren_i)
        line_i = next(i for i in ledger_syncs if i > ren_i)
        assert tmp_i < ren_i < dir_i < line_i
