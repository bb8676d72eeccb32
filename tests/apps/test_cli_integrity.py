"""`ragkit index` on an existing index, `ragkit docs`, and the CLI's other promises: each with the
exact message a user sees."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ragkit.cli import main
from ragkit.pipeline import RAGPipeline
from tests.apps.test_cli import _tiny_model_folder

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "ragkit" / "data" / "corpus"
HASH = str(ROOT / "configs" / "hash.yaml")


def _index(folder: Path, out: Path, *flags: str) -> int:
    return main(["index", str(folder), "--config", HASH, "--out", str(out), "--no-progress",
                 *flags])


@pytest.fixture
def corpus(tmp_path) -> Path:
    root = tmp_path / "corpus"
    shutil.copytree(CORPUS, root)
    return root


def _doc_ids(out: Path) -> list[str]:
    return [d.id for d in RAGPipeline.load(out).documents()]


def test_index_into_an_existing_index_stops_and_names_the_flags(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    before = _doc_ids(out)
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("Something else entirely.", encoding="utf-8")
    capsys.readouterr()
    assert _index(other, out) == 2
    err = capsys.readouterr().err
    assert err == (f"ragkit: error: {out} already holds an index; pass --append to add new and "
                   "changed documents (--sync also deletes those whose files are gone), or "
                   "--replace to build a new one from these files and swap it in\n")
    assert _doc_ids(out) == before  # untouched


def test_append_adds_new_and_changed_documents_and_keeps_the_rest(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    (corpus / "new.md").write_text("A new page about lighthouses and their keepers.", "utf-8")
    (corpus / "honeybees.md").write_text("Bees, rewritten: they dance to share directions.", "utf-8")
    capsys.readouterr()
    assert _index(corpus, out, "--append", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["documents"] == 2 and report["shards_resumed"] == 5
    pipe = RAGPipeline.load(out)
    docs = {d.id: d for d in pipe.documents()}
    assert len(docs) == 7 and "new.md" in docs
    bees = [c for c in pipe.index.chunks() if c.doc_id == "honeybees.md"]
    assert [c.text for c in bees] == ["Bees, rewritten: they dance to share directions."]


def test_sync_also_deletes_documents_whose_files_are_gone(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    (corpus / "honeybees.md").unlink()
    capsys.readouterr()
    assert _index(corpus, out, "--sync", "--json") == 0
    assert json.loads(capsys.readouterr().out)["deleted"] == 1
    assert "honeybees.md" not in _doc_ids(out)
    assert not [c for c in RAGPipeline.load(out).index.chunks() if c.doc_id == "honeybees.md"]


def test_replace_builds_a_new_index_and_swaps_it_in(corpus, tmp_path):
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    other = tmp_path / "other"
    other.mkdir()
    (other / "b.txt").write_text("Something else entirely.", encoding="utf-8")
    assert _index(other, out, "--replace") == 0
    assert _doc_ids(out) == ["b.txt"]
    assert not list(tmp_path.glob(".idx.*"))  # nothing left beside it


def test_docs_list_json_and_delete(corpus, tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    capsys.readouterr()
    assert main(["docs", "list", "--index", str(out), "--json"]) == 0
    docs = json.loads(capsys.readouterr().out)
    assert len(docs) == 6 and set(docs[0]) == {"id", "source", "content_hash", "chunks"}
    bees = next(d for d in docs if d["id"] == "honeybees.md")
    text = (corpus / "honeybees.md").read_text(encoding="utf-8")
    import hashlib

    assert bees["content_hash"] == hashlib.sha256(text.encode()).hexdigest()
    assert bees["source"] == "honeybees.md" and bees["chunks"] >= 1
    assert main(["docs", "delete", "honeybees.md", "--index", str(out)]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 documents (")
    assert main(["docs", "delete", "--source", "eiffel-tower.md", "--index", str(out)]) == 0
    capsys.readouterr()
    assert sorted(_doc_ids(out)) == sorted(d["id"] for d in docs if d["id"] not in (
        "honeybees.md", "eiffel-tower.md"))
    assert main(["docs", "delete", "nope.md", "--index", str(out)]) == 2
    assert capsys.readouterr().err == (
        f"ragkit: error: ids: no document 'nope.md' in {out} (see `ragkit docs list --index "
        f"{out}`); nothing was deleted\n")


def test_version(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--version"])
    assert exc.value.code == 0
    assert capsys.readouterr().out == "ragkit 0.1.0\n"


def test_a_closed_pipe_exits_quietly(tmp_path):
    big = tmp_path / "big.txt"
    big.write_text("word " * 200_000, encoding="utf-8")
    cmd = (f"{sys.executable} -m ragkit.cli chunk {big} --format jsonl --no-progress -o "
           "chunker.tokenizer=whitespace -o chunker.chunk_size=8 | head -1")
    done = subprocess.run(["bash", "-o", "pipefail", "-c", cmd], capture_output=True, text=True,
                          cwd=ROOT, env={**os.environ, "HF_HUB_OFFLINE": "1"}, timeout=300)
    assert done.returncode == 0, done.stderr
    assert done.stderr == "" and json.loads(done.stdout)["index"] == 0


def test_suffixes_choose_the_files_of_a_folder(corpus, tmp_path, capsys):
    (corpus / "notes.rst").write_text("Restructured text notes.", encoding="utf-8")
    out = tmp_path / "idx"
    assert _index(corpus, out, "--suffixes", ".rst") == 0
    assert _doc_ids(out) == ["notes.rst"]
    capsys.readouterr()
    with pytest.raises(SystemExit):
        _index(corpus, tmp_path / "x", "--suffixes", "rst")
    assert "--suffixes: 'rst': give file suffixes with their dot" in capsys.readouterr().err


def test_chunk_validates_its_config_like_every_command(tmp_path, capsys):
    cfg = tmp_path / "bad.yaml"
    cfg.write_text("chunker: {name: recursive, chunk_sise: 64}\nembedder: hash\n")
    assert main(["chunk", str(CORPUS), "--config", str(cfg), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"ragkit: error: {cfg}: chunker.chunk_sise: unknown key; did you mean "
                          "'chunk_size'?")
    cfg.write_text("chunker: recursive\nembedder: {name: nope}\n")
    assert main(["chunk", str(CORPUS), "--config", str(cfg), "--no-progress"]) == 2
    assert "embedder.name: unknown embedder 'nope'" in capsys.readouterr().err


def test_query_only_retrieves_even_when_the_saved_config_has_a_generator(tmp_path, capsys):
    out = tmp_path / "idx"
    assert _index(CORPUS, out) == 0
    saved = (out / "pipeline.yaml").read_text(encoding="utf-8")
    # a generator that would fail to load: query must never touch it
    (out / "pipeline.yaml").write_text(saved + "generator: {name: transformers, model: "
                                       f"{tmp_path / 'no-such-model'}}}\n", encoding="utf-8")
    capsys.readouterr()
    assert main(["query", "printing press", "--index", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["sources"] and set(result["timings"]) == {"retrieve_s"}


def test_ask_json_is_one_document_with_sources_and_timings(tmp_path, capsys):
    model = _tiny_model_folder(tmp_path / "tiny")
    out = tmp_path / "idx"
    assert _index(CORPUS, out) == 0
    capsys.readouterr()
    assert main(["ask", "Gutenberg movable type", "--index", str(out), "-k", "2", "--json",
                 "-o", f"generator.model={model}", "-o", "generator.max_new_tokens=4",
                 "-o", "generator.kv_reuse=independent",
                 "-o", f"generator.kv_store.path={tmp_path / 'kv'}"]) == 0
    out_text = capsys.readouterr().out
    result = json.loads(out_text)
    assert set(result) == {"answer", "sources", "timings"} and isinstance(result["answer"], str)
    assert len(result["sources"]) == 2
    for key in ("retrieve_s", "ttft_s", "tokens_per_s", "prefill_tokens_computed",
                "prefill_tokens_reused"):
        assert key in result["timings"]
    for s in result["sources"]:
        text = (CORPUS / s["doc_id"]).read_text(encoding="utf-8")
        assert text[s["start"] : s["end"]] == s["text"]


def test_a_corrupt_chroma_folder_is_one_line(tmp_path, capsys):
    """A folder whose log keeps no copy to rebuild from (written before the copy existed; with
    it, tests/apps/test_store_repair.py) stops with one line."""
    pytest.importorskip("chromadb")
    import sqlite3

    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--config", HASH, "-o", "index.name=chroma",
                 "--out", str(out), "--no-progress"]) == 0
    with sqlite3.connect(out / "documents.sqlite") as log:
        log.execute("DELETE FROM meta WHERE key = 'copy'")
        log.execute("DELETE FROM pending")
    db = out / "index" / "data" / "chroma.sqlite3"
    assert db.is_file()
    db.write_bytes(b"this is not a database" * 100)
    capsys.readouterr()
    assert main(["query", "printing", "--index", str(out)]) == 1
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("ragkit: error: ")
    assert str(out / "index" / "data") in err and "Traceback" not in err


def test_replace_with_another_chunker_starts_its_shards_afresh(corpus, tmp_path):
    """The old index's finished shards are kept for a --replace with the same pipeline only."""
    out = tmp_path / "idx"
    assert _index(corpus, out) == 0
    assert main(["index", str(corpus), "--config", HASH, "-o", "chunker.chunk_size=16",
                 "--out", str(out), "--no-progress", "--replace"]) == 0
    pipe = RAGPipeline.load(out)
    assert pipe.chunker.chunk_size == 16 and len(pipe.documents()) == 6


def test_chunk_json_is_one_document_of_the_statistics(capsys):
    code = main(["chunk", str(CORPUS), "--json", "--no-progress", "-o", "chunker.chunk_size=64",
                 "-o", "chunker.tokenizer=whitespace", "--workers", "1"])
    out = capsys.readouterr().out
    assert code == 0
    report = json.loads(out)  # the whole of stdout is one JSON document
    texts = [p.read_text(encoding="utf-8") for p in sorted(CORPUS.glob("*.md"))]
    assert report["documents"] == len(texts)
    assert report["bytes"] == sum(len(t.encode("utf-8")) for t in texts)
    assert report["chunker"]["chunk_size"] == 64
    assert report["chunks"] > len(texts) and report["tokens"]["max"] <= 64
    assert report["chunks_per_s"] > 0 and report["mb_per_s"] > 0


def test_chunk_json_only_with_the_statistics(capsys):
    code = main(["chunk", str(CORPUS), "--json", "--format", "jsonl", "--no-progress"])
    assert code == 2
    assert capsys.readouterr().err.strip() == (
        "ragkit: error: --json: prints the statistics (--format stats); got --format jsonl")
