"""Every `ragkit` command the README shows runs as shown, in order, against the quickstart corpus
and index (a user copies them; a stale flag or an example that fails is a bug)."""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[2]
README = ROOT / "README.md"

# Commands that need what a test machine has not: said here, with the test that covers them.
NOT_HERE = {
    "serve": "a long-running server: tests/test_serve*.py start it on a loopback port",
    "--ray-address auto": "needs an existing Ray cluster (tests/test_ingest_ray.py starts one)",
    "/shared/corpus": "a path on someone's cluster",
}


def readme_commands() -> list[tuple[int, str]]:
    """(line number, command) for each line of a ```bash block that starts with `ragkit `."""
    out, in_bash = [], False
    for n, line in enumerate(README.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            in_bash = line.strip() in ("```bash", "```sh", "```shell")
            continue
        if in_bash and line.startswith("ragkit "):
            out.append((n, line))
    return out


def test_the_readme_shows_commands():
    commands = [c for _, c in readme_commands()]
    assert len(commands) >= 10
    for verb in ("chunk", "index", "query", "ask", "docs", "eval"):
        assert any(c.split()[1] == verb for c in commands), verb


def _workspace(tmp_path: Path) -> Path:
    """A folder laid out as the README assumes: docs/, notes.md, big-corpus/, configs/, data/,
    ragkit/."""
    ws = tmp_path / "ws"
    shutil.copytree(ROOT / "ragkit" / "data" / "corpus", ws / "docs")
    (ws / "docs" / "notes").mkdir()
    (ws / "docs" / "notes" / "old.md").write_text("Old notes about slow start in TCP.", "utf-8")
    (ws / "notes.md").write_text("Notes. " * 200, encoding="utf-8")
    shutil.copytree(ROOT / "ragkit" / "data" / "corpus", ws / "big-corpus")
    for name in ("configs", "data", "ragkit"):  # as in a clone (ragkit/ is the package itself)
        (ws / name).symlink_to(ROOT / name)
    return ws


@pytest.mark.slow
def test_every_readme_command_runs_as_shown(tmp_path):
    pytest.importorskip("chromadb")
    ws = _workspace(tmp_path)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1",
           "RAGKIT_CACHE": str(tmp_path / "cache")}

    def run(argv: list[str]) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-m", "ragkit.cli", *argv], cwd=ws, env=env,
                              capture_output=True, text=True, timeout=900)

    # the quickstart's index, which `ragkit ask` examples use
    built = run(["index", "ragkit/data/corpus", "--config", "configs/quickstart.yaml",
                 "--out", ".ragkit/quickstart", "--no-progress"])
    assert built.returncode == 0, built.stderr
    ran = 0
    for line_no, line in readme_commands():
        reason = next((why for key, why in NOT_HERE.items() if key in line), None)
        if reason:
            continue
        command, _, comment = line.partition(" #")
        argv = shlex.split(command)[1:]
        if argv[:1] == ["eval"]:  # the whole dev split takes minutes: two questions per corpus
            argv += ["--subset", "2", "--no-progress"] + (["--no-plot"] if argv[1] == "chunking"
                                                          else [])
        if "--engine" in argv and "ray" in argv:
            pytest.importorskip("ray")
        expect = 2 if "refused" in comment else 0
        done = run(argv)
        assert done.returncode == expect, (
            f"README line {line_no}: {line}\nexit {done.returncode}\n{done.stderr[-3000:]}")
        if expect:
            assert re.search(r"--append.*--replace", done.stderr), done.stderr
        ran += 1
    assert ran >= 12
