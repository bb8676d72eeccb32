"""The CLI as users run it: chunk stats with a progress bar, index then query."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from ragkit.cli import main
from tests.dev_data import CORPORA, require

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "ragkit" / "data" / "corpus"


def test_chunk_stats(capsys):
    code = main(["chunk", str(CORPUS), "-o", "chunker.name=fixed", "-o", "chunker.chunk_size=50",
                 "-o", "chunker.tokenizer=whitespace", "--no-progress"])
    out = capsys.readouterr().out
    assert code == 0
    assert "documents  6" in out
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert int(lines["chunks"]) > 6
    assert lines["size"].startswith("min ") and "max " in lines["size"]
    max_size = int(lines["size"].split("max ")[1].split()[0])
    assert max_size <= 50


def test_chunk_jsonl_round_trips_offsets(capsys):
    assert main(["chunk", str(CORPUS / "tcp.md"), "--format", "jsonl", "--no-progress",
                 "-o", "chunker.chunk_size=30", "-o", "chunker.tokenizer=whitespace"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    text = (CORPUS / "tcp.md").read_text(encoding="utf-8")
    assert len(rows) > 3
    assert all(text[r["start"]:r["end"]] == r["text"] for r in rows)
    assert [r["index"] for r in rows] == list(range(len(rows)))


def test_index_then_query_with_hash_config(tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--config", str(ROOT / "configs" / "hash.yaml"),
                 "--out", str(out), "--no-progress"]) == 0
    assert "indexed 6 documents" in capsys.readouterr().out
    assert main(["query", "Gutenberg movable type printing press", "--index", str(out), "-k", "2",
                 "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert len(result["sources"]) == 2
    top = result["sources"][0]
    assert top["source"] == "printing-press.md" and set(top) == {
        "id", "doc_id", "source", "start", "end", "score", "text"}
    text = (CORPUS / top["doc_id"]).read_text(encoding="utf-8")
    assert text[top["start"] : top["end"]] == top["text"]


def test_query_overrides_change_query_time_keys_only(tmp_path, capsys):
    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--config", str(ROOT / "configs" / "hash.yaml"),
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["query", "Gutenberg movable type", "--index", str(out), "--json",
                 "-o", "k=2", "-o", "selector.name=mmr", "-o", "selector.k=1"]) == 0
    assert len(json.loads(capsys.readouterr().out)["sources"]) == 1
    assert main(["query", "Gutenberg", "--index", str(out), "-o", "chunker.chunk_size=9"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1
    assert err.startswith("ragkit: error: chunker: fixed when the index was built"), err


def test_bad_input_file_is_exit_2_naming_it(tmp_path, capsys):
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"caf\xe9 latin-1")
    code = main(["chunk", str(bad), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2
    assert "bad.txt" in err and "UTF-8" in err


def test_skip_bad_files_goes_on(tmp_path, capsys):
    (tmp_path / "bad.txt").write_bytes(b"\x00\x01binary")
    (tmp_path / "good.txt").write_text("fine words here", encoding="utf-8")
    code = main(["chunk", str(tmp_path), "--skip-bad-files", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0
    assert "documents  1" in captured.out
    assert "bad.txt" in captured.err


def test_query_missing_index_is_one_line_error(tmp_path, capsys):
    assert main(["query", "anything", "--index", str(tmp_path / "nope")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("ragkit: error: ") and "not a saved ragkit index" in err


@pytest.mark.slow
def test_chunk_5mb_folder_shows_progress_and_stats(tmp_path):
    """The issue's acceptance check: `ragkit chunk` on a 5 MB folder, run as a user runs it."""
    corpora = require(CORPORA)
    texts = [p.read_text(encoding="utf-8") for p in sorted(corpora.glob("*.md"))]
    folder = tmp_path / "five_mb"
    folder.mkdir()
    size, i = 0, 0
    while size < 5_000_000:
        text = texts[i % len(texts)]
        (folder / f"doc{i:03d}.md").write_text(text, encoding="utf-8")
        size += len(text.encode("utf-8"))
        i += 1
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run(
        [sys.executable, "-m", "ragkit.cli", "chunk", str(folder), "-o", "chunker.chunk_size=256"],
        capture_output=True, text=True, env=env, timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    assert "chunking: 100%" in proc.stderr  # the progress bar reached the end
    assert "5." in proc.stderr.split("chunking: 100%")[1].split("\n")[0]  # ~5 MB total
    lines = dict(line.split(None, 1) for line in proc.stdout.splitlines())
    assert int(lines["documents"].split()[0]) == i
    assert int(lines["chunks"]) > 1000
    assert int(lines["size"].split("max ")[1].split()[0]) <= 256


def _tiny_model_folder(path):
    pytest.importorskip("transformers")
    from ragkit.generation.testing import smollm2_tokenizer, tiny_llama

    tiny_llama(0).save_pretrained(path)
    smollm2_tokenizer().save_pretrained(path)
    return path


def test_ask_streams_an_answer_with_sources_and_timings(tmp_path, capsys):
    model = _tiny_model_folder(tmp_path / "tiny")
    out = tmp_path / "idx"
    assert main(["index", str(CORPUS), "--config", str(ROOT / "configs" / "hash.yaml"),
                 "--out", str(out), "--no-progress"]) == 0
    capsys.readouterr()
    args = ["ask", "Gutenberg movable type", "--index", str(out), "-k", "2",
            "-o", f"generator.model={model}", "-o", "generator.max_new_tokens=5",
            "-o", "generator.kv_reuse=independent", "-o", f"generator.kv_store.path={tmp_path / 'kv'}"]
    assert main(args) == 0
    first = capsys.readouterr()
    lines = first.out.splitlines()
    assert lines[0] == "Q: Gutenberg movable type" and lines[1].startswith("A: ")
    assert "Sources:" in first.out and "[1] printing-press.md:" in first.out
    assert "prefill_tokens_reused=0" in first.out
    assert "Loading weights" not in first.out + first.err  # no library progress bar leaks in
    assert main(args) == 0  # the chunk KVs are cached now: only the question is prefilled
    second = capsys.readouterr().out
    assert second.splitlines()[1] == lines[1]
    reused = int(float(second.split("prefill_tokens_reused=")[1].split()[0]))
    assert reused > 0


@pytest.mark.slow
def test_quickstart_commands_answer_with_the_packaged_models(tmp_path, capsys):
    """The README's main job: index the bundled corpus into Chroma with the quickstart config,
    then `ragkit ask` answers with SmolLM2, citing chunks of the right document."""
    pytest.importorskip("chromadb")
    out = tmp_path / "quickstart"
    assert main(["index", str(CORPUS), "--config", str(ROOT / "configs" / "quickstart.yaml"),
                 "--out", str(out), "--no-progress"]) == 0
    assert "indexed 6 documents" in capsys.readouterr().out
    assert (out / "index" / "chroma.json").is_file()
    assert main(["ask", "Who built the Eiffel Tower?", "--index", str(out),
                 "-o", f"generator.kv_store.path={tmp_path / 'kv'}"]) == 0
    text = capsys.readouterr().out
    answer = text.split("A: ", 1)[1].split("\nSources:")[0].strip()
    assert answer and "Eiffel" in answer, text
    assert "[1] eiffel-tower.md:" in text and "ttft_s=" in text
