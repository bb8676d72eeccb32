"""The notebooks run top to bottom and show their results.

Each notebook in ``notebooks/`` is executed in memory (the committed file, with the outputs of a
full run, is never written) on a few questions with the ``hash`` embedder: a full run embeds every
chunk of every corpus, a few minutes with all-MiniLM-L6-v2 on a cold cache. The kernel is a
``python3`` kernelspec written for this interpreter, so the notebook sees the same packages as the
test whatever kernels the machine or the user has installed.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

from tests.dev_data import DEV, require

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))
FULL_RUN = "questions per corpus: all; embedder: sentence-transformers"


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _check_results(nb, name: str) -> None:
    outs = _outputs(nb)
    errors = [o for o in outs if o.output_type == "error"]
    assert not errors, f"{name}: error output {errors[0].get('ename')}: {errors[0].get('evalue')}"
    tables = [o for o in outs if "| chunker |" in o.get("data", {}).get("text/markdown", "")]
    assert tables, f"{name}: no markdown table of results (a text/markdown output with '| chunker |')"
    assert any("image/png" in o.get("data", {}) for o in outs), f"{name}: no image/png output"


@pytest.fixture
def python3_kernel(tmp_path, monkeypatch):
    """A ``python3`` kernelspec that runs ``sys.executable``, first on JUPYTER_PATH."""
    from ipykernel.kernelspec import install
    from jupyter_client.kernelspec import KernelSpecManager

    prefix = tmp_path / "jupyter"
    monkeypatch.setenv("JUPYTER_PATH", str(prefix / "share" / "jupyter"))
    install(prefix=str(prefix), kernel_name="python3")
    argv = KernelSpecManager().get_kernel_spec("python3").argv
    if argv[0] != sys.executable:
        pytest.fail(f"kernel 'python3' runs {argv[0]}, not this interpreter {sys.executable}")
    return "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_keeps_a_full_run(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    counts = [c.execution_count for c in code]
    assert counts == list(range(1, len(code) + 1)), (
        f"{path.name}: save it after one full run top to bottom; execution counts are {counts}"
    )
    _check_results(nb, path.name)
    if any("RAGKIT_NB_SUBSET" in c.source for c in code):
        text = "".join(o.get("text", "") for o in _outputs(nb) if o.output_type == "stream")
        assert FULL_RUN in text, f"{path.name}: saved outputs are not a full run ({FULL_RUN!r})"


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, python3_kernel: str, tmp_path, monkeypatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    require(DEV)
    monkeypatch.setenv("RAGKIT_NB_SUBSET", "3")
    monkeypatch.setenv("RAGKIT_NB_EMBEDDER", "hash")
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # not the user's cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=python3_kernel,
        resources={"metadata": {"path": str(path.parent)}},
    )
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    _check_results(nb, path.name)
