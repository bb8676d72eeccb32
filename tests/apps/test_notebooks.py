"""The notebooks are committed without outputs, run top to bottom, and show their results.

Each notebook in ``notebooks/`` is executed in memory (the committed file is never written) on
small data: ``RAGKIT_NB_SUBSET=3`` questions per corpus and the ``hash`` embedder, so a run takes
seconds to a couple of minutes (03 loads the real SmolLM2). What each must show is checked on
the executed outputs: a results table and a plot, or the chunk view. The kernel is a ``python3``
kernelspec written for this interpreter, so the notebook sees the same packages as the test
whatever kernels the machine or the user has installed.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import pytest

from tests.dev_data import DEV, require

nbformat = pytest.importorskip("nbformat")

ROOT = Path(__file__).resolve().parents[2]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# what each notebook's executed outputs must hold: a markdown table header and a plot, or HTML
SHOWS = {
    "01_compare_chunkers.ipynb": {"text/markdown": "| chunker |", "image/png": ""},
    "02_tune_retrieval.ipynb": {"text/markdown": "| path |", "image/png": ""},
    "03_kv_reuse.ipynb": {"text/markdown": "| mode | TTFT s (median) |", "image/png": ""},
    "04_visualize.ipynb": {"text/html": 'class="rk-doc"'},
}


def _outputs(nb):
    return [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", [])]


def _check_results(nb, name: str) -> None:
    outs = _outputs(nb)
    errors = [o for o in outs if o.output_type == "error"]
    assert not errors, f"{name}: error output {errors[0].get('ename')}: {errors[0].get('evalue')}"
    for mime, needle in SHOWS[name].items():
        assert any(needle in o.get("data", {}).get(mime, "\0") for o in outs), (
            f"{name}: no {mime} output" + (f" holding {needle!r}" if needle else ""))


def test_every_notebook_has_expectations() -> None:
    assert sorted(SHOWS) == [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_committed_notebook_is_stripped(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    dirty = [i for i, c in enumerate(nb.cells) if c.cell_type == "code"
             and (c.outputs or c.execution_count is not None)]
    assert not dirty, (f"{path.name}: cells {dirty} carry outputs or execution counts; strip them "
                       "before committing: nbstripout notebooks/*.ipynb")


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


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.name for p in NOTEBOOKS])
def test_notebook_runs(path: Path, python3_kernel: str, tmp_path, monkeypatch) -> None:
    nbclient = pytest.importorskip("nbclient")
    require(DEV)
    monkeypatch.setenv("RAGKIT_NB_SUBSET", "3")
    monkeypatch.setenv("RAGKIT_NB_EMBEDDER", "hash")
    monkeypatch.setenv("RAGKIT_NB_OUT", str(tmp_path / "out"))  # not the repository's folder
    monkeypatch.setenv("RAGKIT_CACHE", str(tmp_path / "cache"))  # not the user's cache
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(
        nb, timeout=600, kernel_name=python3_kernel,
        resources={"metadata": {"path": str(path.parent)}},
    )
    t0 = time.perf_counter()
    client.execute()  # raises CellExecutionError, naming the cell, if any cell fails
    print(f"{path.name}: executed in {time.perf_counter() - t0:.0f} s")  # -s shows it
    _check_results(nb, path.name)
