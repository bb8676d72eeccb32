"""Ingestion on the local engine: the same index as ``RAGPipeline.add``, resumed runs that neither
redo finished shards nor duplicate chunks (after an exception, after SIGKILL, with a torn ledger
line), bad input reported with its path, the CLI, and a Chroma server written by the workers.

The Ray engine runs the same steps; tests/apps/test_ingest_ray.py compares it with this one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import ragkit.ingest as ingest_mod
from ragkit import RAGPipeline, load_documents
from ragkit.cli import main
from ragkit.errors import ConfigError, DocumentError, IndexMismatchError, RagkitError
from ragkit.ingest import index_state, ingest
from ragkit.ingest.ledger import Ledger
from tests.ingest_helpers import CONFIG, make_corpus

ROOT = Path(__file__).parents[2]


def config(**changes):
    cfg = json.loads(json.dumps(CONFIG))
    for key, value in changes.items():
        cfg[key] = value
    return cfg


def reference(paths, cfg=CONFIG):
    """What RAGPipeline.add gives on load_documents of the same paths."""
    pipe = RAGPipeline.from_config(cfg)
    report = pipe.add(load_documents(paths))
    return pipe, report


def vectors(index):
    return index._vecs[: len(index)]


def assert_same_index(saved: Path, ref: RAGPipeline):
    """The same chunks (ids, offsets, text, metadata) with the same vectors, each once. Order is
    insertion order, so a document replaced by a later run sits at the end: compare by id."""
    got = RAGPipeline.load(saved)
    chunks = list(got.index.chunks())
    assert len({c.id for c in chunks}) == len(chunks)  # no duplicates
    mine, theirs = _by_id(got.index), _by_id(ref.index)
    assert [c for c, _ in mine.values()] == [c for c, _ in theirs.values()]
    np.testing.assert_array_equal(np.stack([v for _, v in mine.values()]),
                                  np.stack([v for _, v in theirs.values()]))
    return got


def _by_id(index):
    rows = sorted(zip(index.chunks(), vectors(index)), key=lambda cv: cv[0].id)
    return {c.id: (c, v) for c, v in rows}


@pytest.fixture(autouse=True)
def _test_components(monkeypatch):
    """These tests name their own chunkers and embedders by import path (tests.ingest_helpers)."""
    monkeypatch.setenv("RAGKIT_ALLOW_IMPORT", "1")


@pytest.fixture
def corpus(tmp_path):
    root = tmp_path / "corpus"
    n = make_corpus(root, md=24, jsonl_shards=3, per_shard=20)
    return root, n


# -- the same index as RAGPipeline.add --------------------------------------------------------


def test_local_engine_gives_the_index_pipeline_add_gives(corpus, tmp_path):
    root, n = corpus
    ref, added = reference(root)
    seen = []
    report = ingest(root, CONFIG, tmp_path / "out", batch_size=7, progress=lambda p: seen.append(
        (p.bytes_done, p.documents, p.shards_done)))
    got = assert_same_index(tmp_path / "out", ref)
    assert report.documents == added.documents == n
    assert (report.chunks, report.tokens) == (added.chunks, added.tokens) == (
        len(ref.index), sum(c.metadata["tokens"] for c in ref.index.chunks()))
    assert report.index_chunks == len(ref.index) and report.failures == []
    assert report.shards == report.shards_processed == 24 + 3
    assert seen == sorted(seen) and seen[-1][2] == 27  # progress only goes forward, to the end
    assert seen[-1][0] == sum(f.stat().st_size for f in root.rglob("*") if f.is_file())
    assert got.retrieve("waggle dance forager")[0].score > 0
    assert report.summary().startswith(f"indexed {n} documents -> {len(ref.index)} chunks")


def test_faiss_target_is_built_from_the_parts_in_input_order(corpus, tmp_path):
    pytest.importorskip("faiss")
    root, _ = corpus
    cfg = config(index={"name": "faiss", "kind": "flat"})
    ref, _ = reference(root, cfg)
    ingest(root, cfg, tmp_path / "out")
    got = RAGPipeline.load(tmp_path / "out")
    assert list(got.index.chunks()) == list(ref.index.chunks())
    q = ref.embedder.embed(["iron lattice tower", "comet orbit saturn", "bees nectar"])
    assert [[(h.chunk.id, round(h.score, 5)) for h in row] for row in got.index.search(q, 5)] == \
           [[(h.chunk.id, round(h.score, 5)) for h in row] for row in ref.index.search(q, 5)]


def test_late_chunking_ability_goes_through_the_same_step(tmp_path):
    from ragkit.ingest.work import chunk_and_embed
    from ragkit.testing import HashEmbedder
    from ragkit.types import Chunk, Document

    class Late:  # the chunk_and_embed ability: the chunker supplies the vectors
        def chunk_and_embed(self, doc):
            c = Chunk.of(doc, 0, len(doc.text), 0, tokens=1)
            return [c], np.full((1, 4), 0.5, np.float32)

    (r,) = chunk_and_embed([Document("a", "hello")], Late(), HashEmbedder(dim=4), 8)
    assert r.chunks[0].metadata["doc_hash"] == Document("a", "hello").content_hash
    np.testing.assert_array_equal(r.vecs, np.full((1, 4), 0.5, np.float32))


# -- resuming -------------------------------------------------------------------------------


def test_a_rerun_skips_finished_shards_and_redoes_a_changed_one(corpus, tmp_path):
    root, n = corpus
    out = tmp_path / "out"
    ingest(root, CONFIG, out)
    again = ingest(root, CONFIG, out)
    assert (again.documents, again.shards_resumed, again.shards_processed) == (0, 27, 0)
    assert again.resumed_documents == n and again.index_chunks == again.resumed_chunks

    changed = root / "part1" / "doc001.md"
    changed.write_text("Entirely new words about a copper mill by the river.", encoding="utf-8")
    third = ingest(root, CONFIG, out)
    assert (third.documents, third.shards_processed, third.shards_resumed) == (1, 1, 26)
    ref, _ = reference(root)
    assert_same_index(out, ref)  # the old chunks of doc001.md are gone
    lines = (out / "ingest" / "ledger.jsonl").read_text().splitlines()
    assert len(lines) == 28  # one line more: the changed shard, recorded again


def test_a_run_that_crashes_midway_resumes_without_redoing_or_duplicating(corpus, tmp_path,
                                                                          monkeypatch):
    monkeypatch.setattr(ingest_mod, "PART_ROWS", 5)  # several parts per shard: some half-written
    root, n = corpus
    out = tmp_path / "out"

    def crash(p):
        if p.documents >= n // 2:
            raise KeyboardInterrupt  # what Ctrl-C (or any crash) does between two batches

    with pytest.raises(KeyboardInterrupt):
        ingest(root, CONFIG, out, batch_size=3, progress=crash)
    assert index_state(out) == "unfinished"  # no index claims to be complete
    entries = Ledger(out / "ingest").load_entries()
    finished = len(entries)
    assert 0 < finished < 27
    named = {p for e in entries.values() for p in e["parts"]}
    orphans = [f for f in (out / "ingest" / "parts").iterdir() if f.stem not in named]
    assert orphans, "the crash should have left parts of an unfinished shard"
    assert not (out / "ingest" / "lock").exists()  # released on the way out

    docs_done = sum(e["docs"] for e in entries.values())
    resumed = ingest(root, CONFIG, out, batch_size=3)
    assert resumed.shards_resumed == finished and resumed.resumed_documents == docs_done
    assert resumed.documents == n - docs_done  # nothing finished was chunked or embedded again
    ref, _ = reference(root)
    assert_same_index(out, ref)
    named = {p for e in Ledger(out / "ingest").load_entries().values() for p in e["parts"]}
    assert {f.stem for f in (out / "ingest" / "parts").iterdir()} == named  # orphans dropped


KILL_SCRIPT = """
import sys
import ragkit.ingest
ragkit.ingest.PART_ROWS = 4
from ragkit.cli import main
raise SystemExit(main(sys.argv[1:]))
"""


def test_a_killed_process_resumes_without_duplicates(corpus, tmp_path):
    root, n = corpus
    out = tmp_path / "out"
    cfg = config(embedder={"name": "tests.ingest_helpers:SlowHashEmbedder", "dim": 32,
                           "delay": 0.05})
    (tmp_path / "slow.yaml").write_text(json.dumps(cfg))
    args = ["index", str(root), "-c", str(tmp_path / "slow.yaml"), "--out", str(out),
            "--no-progress", "--batch-size", "2"]
    proc = subprocess.Popen([sys.executable, "-c", KILL_SCRIPT, *args], cwd=ROOT,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    ledger = out / "ingest" / "ledger.jsonl"
    deadline = time.monotonic() + 60
    while not (ledger.exists() and len(ledger.read_text().splitlines()) >= 5):
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.monotonic() < deadline, "the run did not finish 5 shards in 60 s"
        time.sleep(0.02)
    proc.send_signal(signal.SIGKILL)
    proc.wait(timeout=30)
    proc.stderr.close()
    finished = len(ledger.read_text().splitlines())
    assert 5 <= finished < 27 and (out / "ingest" / "lock").exists()  # killed: no clean-up

    assert main(args) == 0  # the stale lock is taken over
    lines = [json.loads(x) for x in ledger.read_text().splitlines()]
    assert len(lines) == 27 and len({e["shard"] for e in lines}) == 27  # every shard once
    ref, _ = reference(root, cfg)
    assert_same_index(out, ref)


def test_a_torn_last_ledger_line_is_ignored_and_its_shard_redone(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    ingest(root, CONFIG, out)
    ledger = out / "ingest" / "ledger.jsonl"
    lines = ledger.read_bytes().splitlines(keepends=True)
    ledger.write_bytes(b"".join(lines[:-1]) + lines[-1][: len(lines[-1]) // 2])  # killed mid-write
    report = ingest(root, CONFIG, out)
    assert (report.shards_resumed, report.shards_processed) == (26, 1)
    ref, _ = reference(root)
    assert_same_index(out, ref)
    assert Ledger(out / "ingest").load_entries().keys() == {
        json.loads(x)["shard"] for x in lines}


def test_another_pipeline_cannot_resume_and_restart_forgets(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    ingest(root, CONFIG, out)
    other = config(chunker={"name": "recursive", "chunk_size": 50, "tokenizer": "whitespace"})
    with pytest.raises(IndexMismatchError, match="chunker.*--restart"):
        ingest(root, other, out)
    report = ingest(root, other, out, restart=True)
    assert report.shards_processed == 27 and report.shards_resumed == 0
    ref, _ = reference(root, other)
    assert_same_index(out, ref)
    # query-time index settings are not part of the shards: a new index kind reuses them
    new_kind = {**other, "index": {"name": "memory", "metric": "ip"}}
    with pytest.raises(IndexMismatchError, match="built with index .*--replace"):
        ingest(root, new_kind, out)  # appending would mix two index settings
    reuse = ingest(root, new_kind, out, mode="replace")
    assert reuse.shards_resumed == 27 and reuse.documents == 0
    assert RAGPipeline.load(out).index.metric == "ip"


def test_a_live_run_holds_the_lock(corpus, tmp_path):
    root, _ = corpus
    out = tmp_path / "out"
    (out / "ingest").mkdir(parents=True)
    import socket

    (out / "ingest" / "lock").write_text(json.dumps({"pid": os.getpid(),
                                                     "host": socket.gethostname()}))
    with pytest.raises(RagkitError, match=f"another ingestion run \\(pid {os.getpid()}"):
        ingest(root, CONFIG, out)


# -- bad input --------------------------------------------------------------------------------


def _poison(root: Path) -> dict[str, Path]:
    bad = {"latin1": root / "part0" / "doc099.md", "jsonl": root / "shard01.jsonl",
           "refused": root / "part2" / "doc098.md"}
    bad["latin1"].write_bytes("caf\xe9 au lait".encode("latin-1"))
    with open(bad["jsonl"], "a", encoding="utf-8") as f:
        f.write('{"text": "fine"}\n{"text": 42}\n')
    bad["refused"].write_text("the POISON pill", encoding="utf-8")
    return bad


PICKY = config(chunker={"name": "tests.ingest_helpers:PickyChunker", "size": 20})


def test_bad_input_stops_a_run_naming_the_file_and_saves_no_index(corpus, tmp_path):
    root, _ = corpus
    bad = root / "part0" / "doc099.md"
    bad.write_bytes(b"caf\xe9")
    out = tmp_path / "out"
    with pytest.raises(DocumentError) as info:
        ingest(root, CONFIG, out)
    msg = str(info.value)
    assert str(bad) in msg and "UTF-8" in msg and "the index was not finished" in msg
    assert index_state(out) == "unfinished"
    kept = Ledger(out / "ingest").load_entries()
    assert kept and str(bad) not in {e["path"] for e in kept.values()}

    bad.write_text("now it is fine", encoding="utf-8")
    report = ingest(root, CONFIG, out)
    assert report.shards_resumed == len(kept) and report.failures == []
    ref, _ = reference(root)
    assert_same_index(out, ref)


def test_a_document_the_chunker_refuses_stops_a_run_naming_it(corpus, tmp_path):
    root, _ = corpus
    (root / "part2" / "doc098.md").write_text("the POISON pill", encoding="utf-8")
    with pytest.raises(DocumentError, match=r"doc098\.md \(document 'part2/doc098\.md'\): "
                                            r"document .* contains 'POISON'"):
        ingest(root, PICKY, tmp_path / "out")


def test_skip_reports_every_bad_input_with_its_path_and_indexes_the_rest(corpus, tmp_path):
    root, n = corpus
    bad = _poison(root)
    out = tmp_path / "out"
    report = ingest(root, PICKY, out, on_error="skip")
    by_path = {f.path: f for f in report.failures}
    assert set(by_path) == {str(p) for p in bad.values()}, report.failures
    assert "UTF-8" in by_path[str(bad["latin1"])].reason
    assert by_path[str(bad["jsonl"])].line == 23 and "must be a string" in \
        by_path[str(bad["jsonl"])].reason
    assert by_path[str(bad["refused"])].doc_id == "part2/doc098.md"
    assert report.documents == n + 1  # every good document, the good new JSONL line included

    problems = []
    good = load_documents(root, on_error="skip", problems=problems)
    ref = RAGPipeline.from_config(PICKY)
    ref.add([d for d in good if "POISON" not in d.text])
    assert_same_index(out, ref)

    again = ingest(root, PICKY, out, on_error="skip")  # skipped shards: failures listed again
    assert again.documents == 0 and {f.path for f in again.failures} == set(by_path)
    assert all(f.earlier for f in again.failures)
    with pytest.raises(DocumentError):  # a strict run does not take the skipped shards as done
        ingest(root, PICKY, out)


def test_duplicate_ids_across_shards(tmp_path):
    root = tmp_path / "c"
    root.mkdir()
    (root / "a.jsonl").write_text('{"id": "x", "text": "alpha words"}\n', encoding="utf-8")
    (root / "b.jsonl").write_text('{"id": "x", "text": "beta words"}\n'
                                  '{"id": "y", "text": "gamma"}\n', encoding="utf-8")
    with pytest.raises(DocumentError, match="duplicate document id 'x'"):
        ingest(root, CONFIG, tmp_path / "out")
    report = ingest(root, CONFIG, tmp_path / "out2", on_error="skip")
    assert [str(f) for f in report.failures] == [
        f"{root / 'b.jsonl'} (document 'x'): duplicate document id 'x', already taken by "
        f"{root / 'a.jsonl'}; ids must be unique"]
    got = RAGPipeline.load(tmp_path / "out2")
    assert {c.doc_id: c.text for c in got.index.chunks()} == {"x": "alpha words", "y": "gamma"}


def test_missing_paths_fail_before_anything_is_written(tmp_path):
    with pytest.raises(DocumentError, match="does not exist"):
        ingest(tmp_path / "nope", CONFIG, tmp_path / "out")
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="engine.name: unknown engine 'spark'; choose one of "
                                          "local, ray"):
        ingest(tmp_path, CONFIG, tmp_path / "out", engine="spark")
    with pytest.raises(ConfigError, match="batch_size: must be an int >= 1"):
        ingest(tmp_path, CONFIG, tmp_path / "out", batch_size=0)


# -- the CLI ----------------------------------------------------------------------------------


def test_cli_index_shows_progress_and_a_summary(corpus, tmp_path, capsys):
    root, n = corpus
    (tmp_path / "c.yaml").write_text(json.dumps(CONFIG))
    out = tmp_path / "out"
    assert main(["index", str(root), "-c", str(tmp_path / "c.yaml"), "--out", str(out),
                 "--engine", "local", "--batch-size", "5"]) == 0
    captured = capsys.readouterr()
    assert "indexing" in captured.err and "100%" in captured.err  # the progress bar
    (line,) = captured.out.splitlines()
    assert line.startswith(f"indexed {n} documents -> ") and "docs/s" in line
    assert "0 failures" in line and f"saved to {out}" in line
    assert main(["query", "bees nectar", "--index", str(out), "--json"]) == 0


def test_cli_bad_file_is_one_line_exit_2_and_skip_goes_on(corpus, tmp_path, capsys):
    root, n = corpus
    (root / "bad.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "c.yaml").write_text(json.dumps(CONFIG))
    base = ["index", str(root), "-c", str(tmp_path / "c.yaml"), "--no-progress"]
    assert main([*base, "--out", str(tmp_path / "a")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "bad.txt" in err and "binary" in err
    assert main([*base, "--out", str(tmp_path / "b"), "--skip-bad-files"]) == 0
    captured = capsys.readouterr()
    assert "bad.txt" in captured.err and "1 failures" in captured.out
    assert main([*base, "--out", str(tmp_path / "c"), "--workers", "0"]) == 2
    assert "--workers: must be an int >= 1" in capsys.readouterr().err
    assert main([*base, "--out", str(tmp_path / "d"), "--ray-address", "auto"]) == 2
    assert "--ray-address: only with --engine ray" in capsys.readouterr().err


def test_import_stays_light():
    code = ("import sys, ragkit, ragkit.ingest; "
            "print(sorted(m for m in ('ray', 'pyarrow', 'numpy', 'torch', 'pandas') "
            "if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          check=True)
    assert done.stdout.strip() == "[]"


# -- a Chroma server, written by the workers --------------------------------------------------


@pytest.mark.slow  # starts a Chroma server
def test_chroma_server_target_resumes_without_stale_or_duplicate_chunks(corpus, tmp_path,
                                                                        monkeypatch):
    pytest.importorskip("chromadb")
    from tests.retrieval.index_helpers import chroma_server, free_port

    root, n = corpus
    port = free_port()
    cfg = config(index={"name": "chroma", "host": "127.0.0.1", "port": port,
                        "collection": "ingest"})
    out = tmp_path / "out"
    with chroma_server(tmp_path / "server", port):
        def crash(p):
            if p.documents >= n // 2:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            ingest(root, cfg, out, batch_size=4, progress=crash)
        (root / "part1" / "doc007.md").write_text("changed text, fewer chunks", encoding="utf-8")
        report = ingest(root, cfg, out, batch_size=4)
        assert report.shards_resumed > 0
        assert report.documents + report.resumed_documents == n
        got = RAGPipeline.load(out)
        ref, _ = reference(root)
        stored = sorted(got.index.chunks(), key=lambda c: c.id)
        assert stored == sorted(ref.index.chunks(), key=lambda c: c.id)
        assert report.index_chunks == len(ref.index)
        assert got.index.info["embedder"] == {"name": "hash", "dim": 32}
        q = ref.embedder.embed(["copper mill river"])
        assert got.index.search(q, 3)[0][0].chunk.id == ref.index.search(q, 3)[0][0].chunk.id
        got.index.close()
