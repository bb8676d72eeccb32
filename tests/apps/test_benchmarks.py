"""The benchmarks run end to end on a tiny corpus. They report speed; tests never assert it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


def load(name: str):
    if str(BENCHMARKS) not in sys.path:  # as when run as a script: its siblings import
        sys.path.insert(0, str(BENCHMARKS))
    spec = importlib.util.spec_from_file_location(name, BENCHMARKS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while it is being run
    spec.loader.exec_module(module)
    return module


def test_chunk_throughput_smoke(tmp_path, capsys):
    for needed in ("chonkie", "tokie", "langchain_text_splitters", "tiktoken"):
        pytest.importorskip(needed)
    bench = load("chunk_throughput")
    report = tmp_path / "throughput.json"
    argv = ["--mb", "0.1", "--repeats", "1", "--json", str(report)]
    result = bench.main(argv)
    out = capsys.readouterr().out

    assert out.splitlines()[0] == "$ python benchmarks/chunk_throughput.py " + " ".join(argv)
    expected = [("tiktoken encode only", None)]
    for overlap in (0, 64):
        expected += [("ragkit fixed", overlap), ("ragkit recursive", overlap),
                     ("chonkie TokenChunker", overlap)]
        expected += [("chonkie RecursiveChunker", 0)] if overlap == 0 else []
        expected += [("chonkie TokenChunker [tokie]", overlap)]
        expected += [("chonkie RecursiveChunker [tokie]", 0)] if overlap == 0 else []
        expected += [("langchain TokenTextSplitter", overlap),
                     ("langchain RecursiveCharacterTextSplitter", overlap)]
    assert [(r["chunker"], r["overlap"]) for r in result["rows"]] == expected
    table = [line for line in out.splitlines() if line.startswith("| ")]
    for name, overlap in expected:  # one row of the printed results table each
        cell = "–" if overlap is None else str(overlap)
        assert sum(line.startswith(f"| {name} | ") and f" cl100k | {cell} | " in line
                   for line in table) == 1, (name, overlap)

    ragkit = [r for r in result["rows"] if r["library"] == "ragkit"]
    assert len(ragkit) == 4
    for r in ragkit:
        assert r["chunks"] > 0
        assert (r["over_budget"], r["chars_lost"], r["empty"], r["bad_offsets"]) == (0, 0, 0, 0)
        assert r["max_tokens"] <= 512
    assert {(t["ragkit"], t["overlap"]) for t in result["targets"]} == {
        ("ragkit fixed", 0), ("ragkit fixed", 64), ("ragkit recursive", 0)}
    assert json.loads(report.read_text(encoding="utf-8"))["rows"] == result["rows"]


def test_corpus_is_deterministic_and_sized():
    bench = load("chunk_throughput")
    docs = bench.build_corpus(0.05)
    assert docs == bench.build_corpus(0.05)
    assert sum(len(text.encode("utf-8")) for _, text in docs) == 50_000


def test_code_bench_smoke(tmp_path, capsys):
    for needed in ("tree_sitter", "tree_sitter_python", "tiktoken"):
        pytest.importorskip(needed)
    bench = load("code_bench")
    report = tmp_path / "code.json"
    argv = ["--max-files", "3", "--repeats", "1", "--budget", "128", "--json", str(report)]
    result = bench.main(argv)
    out = capsys.readouterr().out

    assert out.splitlines()[0] == "$ python benchmarks/code_bench.py " + " ".join(argv)
    names = [r["chunker"] for r in result["rows"]]
    assert names[:3] == ["tree-sitter parse only", "tiktoken encode only", "ragkit code"]
    expected = {"chonkie CodeChunker", "semantic-text-splitter CodeSplitter"}
    assert set(names[3:]) | set(result["notes"]) == expected  # measured, or skipped with a reason
    ours = result["rows"][2]
    assert ours["chunks"] > 0 and ours["max_tokens"] <= 128
    assert (ours["over_budget"], ours["chars_lost"], ours["empty"], ours["bad_offsets"]) == \
        (0, 0, 0, 0)
    for row in result["rows"][3:]:
        assert row["chunks"] > 0 and row["chars_lost"] >= 0 and f"| {row['chunker']} |" in out
    assert result["targets"]["zero_over_budget"] is True
    assert json.loads(report.read_text(encoding="utf-8"))["rows"] == result["rows"]


def test_code_repo_example_smoke(tmp_path, capsys):
    for needed in ("tree_sitter", "tree_sitter_python", "tree_sitter_javascript", "tiktoken"):
        pytest.importorskip(needed)
    bench = load("code_repo_example")
    (tmp_path / "pkg" / ".hidden").mkdir(parents=True)
    (tmp_path / "pkg" / "a.py").write_text("def f(x):\n    return x\n" * 200, encoding="utf-8")
    (tmp_path / "pkg" / "b.js").write_text("function g(y) { return y; }\n" * 200, encoding="utf-8")
    (tmp_path / "pkg" / "c.c").write_text("int h(int z) { return z; }\n" * 200, encoding="utf-8")
    (tmp_path / "pkg" / "bad.py").write_bytes(b"x = '\xff'\n")  # not UTF-8: skipped
    (tmp_path / "pkg" / ".hidden" / "d.py").write_text("y = 1\n", encoding="utf-8")
    (tmp_path / "pkg" / "notes.md").write_text("# not code\n", encoding="utf-8")
    result = bench.main([str(tmp_path), "--chunk-size", "64"])
    out = capsys.readouterr().out
    rows = {r["language"]: r for r in result["languages"]}
    assert set(rows) == {"c", "javascript", "python"}
    assert rows["python"]["files"] == 1 and rows["python"]["skipped"] == 1
    for r in rows.values():
        assert r["chunks"] > 1 and r["max_size"] <= 64
        assert (r["over_budget"], r["bad_offsets"], r["chars_lost"]) == (0, 0, 0)
    assert "budget check: 0 chunks over budget, 0 bad offsets, 0 characters lost" in out


@pytest.mark.slow  # starts a Ray cluster
def test_ingest_bench_smoke(tmp_path, capsys):
    pytest.importorskip("ray")
    bench = load("ingest_bench")
    argv = ["--docs", "60", "--shards", "3", "--embedders", "hash", "--workers", "1,2",
            "--repeats", "1", "--batch-size", "8", "--json", str(tmp_path / "ingest.json")]
    result = bench.main(argv)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "$ python benchmarks/ingest_bench.py " + " ".join(argv)
    rows = result["rows"]
    assert [(r["engine"], r["workers"]) for r in rows] == [
        ("local", 1), ("ray", 1), ("ray", 2), ("ray (all resumed)", 2)]
    assert all(r["chunks"] == rows[0]["chunks"] > 60 for r in rows)
    assert [r.get("same_as_local") for r in rows[1:3]] == [True, True]
    assert rows[3]["documents"] == 0 and rows[3]["resumed"] == 60  # only the serial part left
    assert rows[0]["x_local"] == 1.0 and rows[1]["x_ray1"] == 1.0
    assert all(r["worker_cpu_s"] > 0 for r in rows[:3]) and rows[3]["worker_cpu_s"] == 0
    assert json.loads((tmp_path / "ingest.json").read_text())["rows"][0]["engine"] == "local"


@pytest.mark.slow
def test_exact_encoder_smoke(tmp_path, capsys):
    for needed in ("bpe_openai", "chonkie", "tiktoken"):  # bpe-openai: ragkit[tiktoken]
        pytest.importorskip(needed)
    bench = load("exact_encoder")
    result = bench.main(["--mb", "0.05", "--repeats", "1", "--overlaps", "0",
                         "--json", str(tmp_path / "encoders.json")])
    assert result["documents_differing"] == []
    assert all(not bad for bad in result["code_point_mismatches"].values())
    assert result["identical_chunks"] is True
    assert [r["what"] for r in result["rows"]] == [
        "tiktoken encode_to_numpy", "bpe-openai encode", "ragkit fixed, tiktoken ids",
        "ragkit fixed, bpe-openai ids", "chonkie TokenChunker, tiktoken"]
    assert "| ragkit fixed, bpe-openai ids | 0 |" in capsys.readouterr().out


def test_llm_chunkers_report_smoke(tmp_path, capsys):
    from ragkit.config import build_dataclass
    from ragkit.evaluation import report
    from ragkit.evaluation.chunking import ChunkingEval, evaluate_chunking
    from ragkit.evaluation.data import load_dataset

    data = tmp_path / "data"
    (data / "corpora").mkdir(parents=True)
    text = "Apples grow on trees. Pears grow too.\nXenon is a gas. Argon is a gas too.\n" * 5
    (data / "corpora" / "c.md").write_text(text, encoding="utf-8")
    start = text.index("Xenon")
    refs = json.dumps([{"content": text[start:start + 15], "start_index": start,
                        "end_index": start + 15}])
    (data / "questions.csv").write_text(
        'question,references,corpus_id\n"Which is a gas?","' + refs.replace('"', '""')
        + '",c\n', encoding="utf-8")
    chunkers = {"rec": {"name": "recursive", "chunk_size": 12, "tokenizer": "whitespace"},
                "ppl": {"name": "perplexity", "chunk_size": 12, "tokenizer": "whitespace",
                        "llm": "ragkit.testing:FakeLM"},
                "lumber": {"name": "lumber", "chunk_size": 12, "tokenizer": "whitespace",
                           "llm": "ragkit.testing:FakeLM"}}
    (tmp_path / "eval.yaml").write_text(json.dumps({"chunkers": chunkers, "embedder": "hash"}))
    config = build_dataclass(ChunkingEval, {"chunkers": chunkers, "embedder": "hash"})
    dataset = load_dataset(data)
    paths = report.write(evaluate_chunking(dataset, config), config, tmp_path / "out", dataset,
                         with_plot=False)
    load("llm_chunkers").main([str(paths["json"]), "--data", str(data), "--config",
                               str(tmp_path / "eval.yaml"), "--quality-chars", "100",
                               "--llm", "ragkit.testing:FakeLM"])
    out = capsys.readouterr().out
    assert "| rec | " in out and "| ppl | " in out and "| lumber | " in out
    assert "boundary clarity" in out and out.count("| lumber |") == 2 and "K=0.8" in out
