"""The benchmarks run end to end on a tiny corpus. They report speed; tests never assert it."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
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
    assert "boundary clarity" in out and out.count("| lumber |") == 2
