"""Peak memory of ``ragkit chunk`` and ``ragkit index`` on one big one-line file and a big folder.

Issue 19 item 5 asks: chunking and indexing a 50 MB one-line file and a large folder stream, with
peak RSS at most 2x the largest file plus the model. Each command runs in its own process
(``python -m ragkit.cli ...``); its peak RSS is the kernel's ``ru_maxrss`` for that child
(``os.wait4``), so nothing of this script is counted. The *baseline* row is the same command on a
1 KB file: the interpreter, the imports and the model, which the target allows on top.

Inputs are generated under a temporary folder and deleted afterwards: words drawn from a fixed
vocabulary with punctuation, the big file with no newline at all, the folder as files of
``--file-mb`` each. The target per row is ``baseline + 2 x largest file``; a store that keeps the
corpus in memory (``memory``, ``faiss``) holds all chunk texts and vectors by design, so its
rows are also shown with that size (``index MB``, the saved folder's size) allowed on top.

``--before DIR`` also runs every command on another copy of ragkit (a folder holding ``ragkit/``
with ``chunkers``, ``retrieval`` and ``generation`` linked inside it, e.g. from ``git archive``
of an older commit), alternating with this one, so before and after share the machine's load.

    python benchmarks/memory_bench.py [--big-mb 50] [--folder-mb 300] [--file-mb 5]
        [--embedders hash] [--stores memory,chroma] [--skip-chunk | --skip-index] [--before DIR]
        [--ascii]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
WORDS = ("the river mill copper harbour orbit tower nectar waggle bridge cipher lantern meadow "
         "quartz signal timber velvet of and a to in engine parse index query chunk vector "
         "Ünïcödé 東京 ✓").split()
EMBEDDERS = {"hash": {"name": "hash", "dim": 384},
             "minilm": {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2"}}


def write_text(path: Path, mb: float, seed: int, *, one_line: bool,
               ascii_only: bool = False) -> None:
    """About ``mb`` MB of sentences of 5-25 words; paragraphs of 3-12 sentences unless
    ``one_line`` (then not a single newline). ``ascii_only`` leaves out the non-ASCII words, so
    Python holds the text at 1 byte a char instead of 2."""
    rng = random.Random(seed)
    words = [w for w in WORDS if w.isascii()] if ascii_only else WORDS
    target = int(mb * 1e6)
    with open(path, "w", encoding="utf-8") as f:
        done = 0
        while done < target:
            sentences = [" ".join(rng.choices(words, k=rng.randint(5, 25))).capitalize() + "."
                         for _ in range(rng.randint(3, 12))]
            piece = " ".join(sentences) + (" " if one_line else "\n\n")
            f.write(piece)
            done += len(piece.encode("utf-8"))


def peak(cmd: list[str], env: dict[str, str], cwd: Path = ROOT) -> tuple[float, float, str, str]:
    """(peak RSS MB, seconds, stdout, stderr) of ``cmd`` run to completion."""
    t = time.perf_counter()
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env=env, cwd=cwd)
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        seconds = time.perf_counter() - t
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read().decode(), err.read().decode()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{stderr[-3000:]}")
    return usage.ru_maxrss / 1024, seconds, stdout, stderr  # ru_maxrss is in KB on Linux


def folder_mb(path: Path) -> float:
    return sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--big-mb", type=float, default=50.0)
    p.add_argument("--folder-mb", type=float, default=300.0)
    p.add_argument("--file-mb", type=float, default=5.0)
    p.add_argument("--embedders", type=lambda s: s.split(","), default=["hash"])
    p.add_argument("--stores", type=lambda s: s.split(","), default=["memory", "chroma"])
    p.add_argument("--only", type=lambda s: s.split(","), default=["big", "folder"])
    p.add_argument("--skip-chunk", action="store_true")
    p.add_argument("--skip-index", action="store_true",
                   help="only `ragkit chunk` (a 1 GB folder indexes for hours on a small machine)")
    p.add_argument("--before", type=Path, help="another copy of ragkit to run side by side")
    p.add_argument("--ascii", action="store_true",
                   help="generate ASCII-only text (1 byte a char in Python; default: a few "
                        "non-ASCII words, so 2 bytes a char)")
    p.add_argument("--json", type=Path)
    args = p.parse_args()
    trees = [("after", ROOT, {})]
    if args.before:
        before = args.before.resolve()
        trees.insert(0, ("before", before, {"PYTHONPATH": str(before)}))

    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", RAGKIT_ALLOW_IMPORT="0")
    tmp = Path(tempfile.mkdtemp(prefix="ragkit-memory-"))
    rows = []
    try:
        inputs = {}
        tiny = tmp / "tiny"
        tiny.mkdir()
        write_text(tiny / "tiny.txt", 0.001, 0, one_line=True)
        if "big" in args.only:
            (tmp / "big").mkdir()
            write_text(tmp / "big" / "big.txt", args.big_mb, 1, one_line=True,
                       ascii_only=args.ascii)
            inputs["big"] = (tmp / "big" / "big.txt", args.big_mb)
        if "folder" in args.only:
            folder = tmp / "folder"
            n = max(1, round(args.folder_mb / args.file_mb))
            for i in range(n):
                sub = folder / f"part{i % 8}"
                sub.mkdir(parents=True, exist_ok=True)
                write_text(sub / f"doc{i:04d}.md", args.file_mb, 100 + i, one_line=False,
                           ascii_only=args.ascii)
            inputs["folder"] = (folder, args.file_mb)
        py = sys.executable
        for emb in args.embedders:
            for store in args.stores:
                cfg = {"chunker": {"name": "recursive", "chunk_size": 256, "overlap": 0},
                       "embedder": EMBEDDERS[emb], "index": {"name": store}}
                cfg_file = tmp / f"{emb}-{store}.json"
                cfg_file.write_text(json.dumps(cfg))
                jobs = [("baseline", tiny, 0.001)] + [(k, *v) for k, v in inputs.items()]
                for what, path, largest in jobs:
                    commands = [] if args.skip_chunk or store != args.stores[0] else ["chunk"]
                    if not args.skip_index:
                        commands.append("index")
                    for command in commands:
                        for label, tree, extra in trees:
                            rows.append(run_one(tmp, py, command, path, cfg_file, dict(env, **extra),
                                                tree, label, emb, store, what, largest))
                            print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    table(rows)
    if args.json:
        args.json.write_text(json.dumps(rows, indent=1) + "\n")


def run_one(tmp: Path, py: str, command: str, path: Path, cfg_file: Path, env: dict, tree: Path,
            label: str, emb: str, store: str, what: str, largest: float) -> dict:
    out = tmp / "out"
    shutil.rmtree(out, ignore_errors=True)
    cmd = [py, "-m", "ragkit.cli", command, str(path), "-c", str(cfg_file), "--no-progress"]
    if command == "index":
        cmd += ["--out", str(out), "--json"]
    rss, secs, stdout, _ = peak(cmd, env, tree)
    row = {"code": label, "embedder": emb, "store": store if command == "index" else "-",
           "command": command, "input": what, "input_mb": _mb(path), "largest_mb": largest,
           "peak_mb": round(rss, 1), "seconds": round(secs, 1)}
    if command == "index":
        report = json.loads(stdout)
        row |= {"chunks": report["chunks"], "index_mb": round(folder_mb(out / "index"), 1)}
    else:
        m = re.search(r"chunks\s+(\d+)", stdout)
        row["chunks"] = int(m.group(1)) if m else None
    shutil.rmtree(out, ignore_errors=True)
    return row


def _mb(path: Path) -> float:
    return round(folder_mb(path) if path.is_dir() else path.stat().st_size / 1e6, 1)


def table(rows: list[dict]) -> None:
    base = {(r["code"], r["embedder"], r["store"], r["command"]): r["peak_mb"] for r in rows
            if r["input"] == "baseline"}
    print("\n| code | embedder | command | store | input | input MB | largest file MB | chunks | s | "
          "peak RSS MB | baseline MB | target MB (baseline + 2x largest) | within | index MB | "
          "within with index |")
    print("|---|---|---|---|---|--:|--:|--:|--:|--:|--:|--:|---|--:|---|")
    for r in rows:
        if r["input"] == "baseline":
            continue
        b = base[(r["code"], r["embedder"], r["store"], r["command"])]
        target = b + 2 * r["largest_mb"]
        idx = r.get("index_mb")
        print(f"| {r['code']} | {r['embedder']} | {r['command']} | {r['store']} | {r['input']} | "
              f"{r['input_mb']} | {r['largest_mb']} | {r['chunks']} | {r['seconds']} | "
              f"{r['peak_mb']} | {b} | {target:.0f} | {'yes' if r['peak_mb'] <= target else 'no'}"
              f" | {idx if idx is not None else '-'} | "
              + ("-" if idx is None else ("yes" if r["peak_mb"] <= target + idx else "no"))
              + " |")


if __name__ == "__main__":
    main()
