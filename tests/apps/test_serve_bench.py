"""benchmarks/serve_bench.py end to end with a tiny random model and the hash embedder: every
row is there with 0 errors (speed is reported by the benchmark, never asserted)."""

from __future__ import annotations

import importlib.util
import json
import sys
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("openai")
pytest.importorskip("transformers")

from tests.serve_helpers import tiny_model_folder  # noqa: E402

BENCH = Path(__file__).resolve().parents[2] / "benchmarks" / "serve_bench.py"


@pytest.mark.slow  # a server subprocess and a few dozen requests
def test_serve_bench_smoke(tmp_path, capsys):
    spec = importlib.util.spec_from_file_location("serve_bench", BENCH)
    bench = importlib.util.module_from_spec(spec)
    sys.modules["serve_bench"] = bench
    spec.loader.exec_module(bench)
    model = tiny_model_folder(tmp_path / "tiny")
    report = tmp_path / "bench.json"
    code = bench.main(["--clients", "1", "3", "--questions", "2", "--max-tokens", "2", "--k", "2",
                       "--model", str(model), "--embedder", "hash", "--out", str(tmp_path / "run"),
                       "--json", str(report)])
    out = capsys.readouterr().out
    assert code == 0, out
    rows = json.loads(report.read_text())["rows"]
    assert [(r["mode"], r["clients"]) for r in rows] == [
        (m, n) for n in (1, 3) for m in ("none", "independent", "blend")] + [("independent", 3)]
    assert all(r["errors"] == 0 for r in rows)
    assert rows[-1]["writer"] and rows[-1]["documents_added"] > 0 and rows[-1]["add_errors"] == 0
    warm = [r for r in rows if r["mode"] == "independent" and not r.get("writer")]
    assert all(r["reused_fraction"] > 0.5 for r in warm)
    assert "| none | 1 |" in out and "independent vs none at 3 clients" in out
