"""kill -9 ``ragkit index`` at random moments, then check what it left behind.

For each store (memory, faiss, chroma), a clean build of a corpus of a few hundred documents gives
the reference: every document's chunks (ids, offsets, texts). Then, ``--kills`` times: start
``ragkit index --append`` into a folder, kill it with SIGKILL after a random delay within the
time a clean run takes, and

1. open the folder (``RAGPipeline.load``) unless the kill came before the run created it: a
   failure to open counts as a *failed open*; *mid-run* counts the kills after which the folder
   held some documents but not yet the finished set (the kill landed during the writes);
2. count *half-indexed* documents: ones the opened index holds with chunks other than the clean
   build's (some missing, or a mix of versions). Must be 0;
3. run ``ragkit index --append`` again to completion and compare every document's chunks with
   the clean build (*mismatched after re-run*, must be 0).

*Rebuilds* counts the Chroma stores that opening the folder (step 1 or the re-run) rebuilt from
the document log's copy after a kill damaged them (each leaves ``index/data*.damaged-*``).
Chroma's own damage (chroma-core/chroma#7678) is rare (one kill in about 150 here), so
``--damage F`` also damages the store after a fraction F of the kills the way that bug leaves it
(the HNSW segment's metadata file truncated, or, before Chroma has written the segment, part of
its SQLite file zeroed), counted as *injected*; the other steps are unchanged.

Every run writes: even-numbered kills start from no folder at all (a fresh build, killed while
it writes the first documents), odd-numbered ones change the corpus first (a few documents
rewritten, one removed, one added) and run ``--sync``, so kills land while documents are being
replaced and deleted.

    .venv/bin/python benchmarks/crash_bench.py --kills 100 --stores memory,faiss,chroma
"""

from __future__ import annotations

import argparse
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
CONFIG = {"chunker": {"name": "fixed", "chunk_size": 24, "overlap": 4, "tokenizer": "whitespace"},
          "embedder": {"name": "hash", "dim": 64}, "k": 5}
WORDS = ("river mill copper harbour orbit tower nectar waggle bridge cipher lantern meadow "
         "quartz signal timber velvet").split()


def make_corpus(folder: Path, n: int, version: int = 0) -> None:
    """``n`` text files; ``version`` rewrites some of them, drops one and adds one."""
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    for i in range(n + (1 if version else 0)):
        if version and i == version % n:
            continue  # removed in this version
        rng = random.Random(f"{i}/{version if i % 7 == version % 7 else 0}")
        words = [rng.choice(WORDS) for _ in range(rng.randrange(60, 400))]
        (folder / f"doc{i:04d}.txt").write_text(" ".join(words) + "\n", encoding="utf-8")


def chunks_by_doc(out: Path) -> dict[str, list[tuple[str, str]]]:
    from ragkit.pipeline import RAGPipeline

    pipe = RAGPipeline.load(out)
    try:
        got: dict[str, list[tuple[str, str]]] = {}
        for c in pipe.index.chunks():
            got.setdefault(c.doc_id, []).append((c.id, c.text))
        return {d: sorted(v) for d, v in got.items()}
    finally:
        pipe.close()


def ragkit_index(corpus: Path, config: Path, out: Path, *flags: str) -> subprocess.Popen:
    cmd = [sys.executable, "-m", "ragkit.cli", "index", str(corpus), "--config", str(config),
           "--out", str(out), "--no-progress", *flags]
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def finish(proc: subprocess.Popen) -> None:
    _, err = proc.communicate(timeout=600)
    if proc.returncode != 0:
        raise RuntimeError(f"ragkit index failed ({proc.returncode}): {err.decode()[-2000:]}")


def run_store(store: str, kills: int, docs: int, work: Path, seed: int,
              say: Callable[[str], None], damage: float = 0.0) -> dict[str, Any]:
    import yaml

    from ragkit.ingest import index_state

    rng = random.Random(seed)
    config = work / f"{store}.yaml"
    config.write_text(yaml.safe_dump({**CONFIG, "index": {"name": store}}), encoding="utf-8")
    corpus, clean, out = work / "corpus", work / f"clean-{store}", work / f"out-{store}"
    references: dict[int, dict[str, list[tuple[str, str]]]] = {}

    def reference(version: int) -> dict[str, list[tuple[str, str]]]:
        if version not in references:
            make_corpus(corpus, docs, version)
            shutil.rmtree(clean, ignore_errors=True)
            finish(ragkit_index(corpus, config, clean))
            references[version] = chunks_by_doc(clean)
        return references[version]

    t0 = time.perf_counter()
    reference(0)
    clean_s = time.perf_counter() - t0
    shutil.rmtree(out, ignore_errors=True)
    stats = {"store": store, "kills": 0, "not_created": 0, "mid_run": 0, "failed_opens": 0,
             "half_indexed": 0, "failed_reruns": 0, "rebuilds": 0, "injected": 0,
             "mismatched_after_rerun": 0, "clean_build_s": round(clean_s, 2), "errors": []}
    version = 0
    for i in range(kills):
        if i % 2 == 0:
            shutil.rmtree(out, ignore_errors=True)  # a fresh build
        else:
            version += 1
        aside = _damaged_aside(out)
        ref = reference(version)
        make_corpus(corpus, docs, version)
        flags = ("--sync",) if i % 2 else ("--append",)
        proc = ragkit_index(corpus, config, out, *flags)
        time.sleep(rng.uniform(0.2, clean_s * 1.2))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        stats["kills"] += 1
        if damage and rng.random() < damage and index_state(out) != "none":
            stats["injected"] += _damage_store(out)
        if index_state(out) == "none":
            stats["not_created"] += 1
        else:
            try:
                seen = chunks_by_doc(out)
            except Exception as exc:  # noqa: BLE001 - what the benchmark counts
                stats["failed_opens"] += 1
                stats["errors"].append(f"kill {i}: open: {type(exc).__name__}: {exc}"[:300])
                seen = {}
            if 0 < len(seen) and seen != ref:
                stats["mid_run"] += 1  # the kill landed while documents were being written
            everything = {d: c for refs in references.values() for d, c in refs.items()}
            versions = [refs for refs in references.values()]
            for doc_id, chunks in seen.items():
                if not any(refs.get(doc_id) == chunks for refs in versions):
                    stats["half_indexed"] += 1
                    stats["errors"].append(f"kill {i}: {doc_id} half-indexed "
                                           f"({len(chunks)} chunks, clean "
                                           f"{len(everything.get(doc_id, []))})")
        try:
            finish(ragkit_index(corpus, config, out, *flags))
        except RuntimeError as exc:  # the folder could not be repaired in place: count it,
            stats["failed_reruns"] += 1  # then rebuild it as a user would be told to
            stats["errors"].append(f"kill {i}: re-run: {str(exc)[-300:]}")
            finish(ragkit_index(corpus, config, out, "--replace"))
        after = chunks_by_doc(out)
        stats["rebuilds"] += len(_damaged_aside(out) - aside)
        bad = sorted(d for d in set(after) | set(ref) if after.get(d) != ref.get(d))
        stats["mismatched_after_rerun"] += len(bad)
        if bad:
            stats["errors"].append(f"kill {i}: after the re-run {len(bad)} documents differ from "
                                   f"a clean build, e.g. {bad[0]}")
        say(f"{store}: kill {i + 1}/{kills}: half-indexed {stats['half_indexed']}, failed opens "
            f"{stats['failed_opens']}, failed re-runs {stats['failed_reruns']}, injected "
            f"{stats['injected']}, rebuilds {stats['rebuilds']}, mismatched "
            f"{stats['mismatched_after_rerun']}")
    return stats


def _damage_store(out: Path) -> int:
    """Damage the embedded Chroma store of folder ``out`` as chroma-core/chroma#7678 leaves it;
    1 if there was one to damage."""
    import json

    pointer = out / "index" / "chroma.json"
    if not pointer.is_file():
        return 0
    store = out / "index" / json.loads(pointer.read_text(encoding="utf-8"))["path"]
    pickles = sorted(store.glob("*/index_metadata.pickle"))
    if pickles:
        with open(pickles[0], "r+b") as f:
            f.truncate(100)
        return 1
    db = store / "chroma.sqlite3"
    if not db.is_file():
        return 0
    raw = bytearray(db.read_bytes())
    raw[100:4000] = bytes(3900)
    db.write_bytes(bytes(raw))
    return 1


def _damaged_aside(out: Path) -> set[str]:
    """The damaged Chroma stores a rebuild kept aside in folder ``out``."""
    return {p.name for p in (out / "index").glob("*.damaged-*")}


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    work = Path(tempfile.mkdtemp(prefix="ragkit-crash-"))
    try:
        rows = [run_store(s, args.kills, args.docs, work, args.seed, say, args.damage)
                for s in args.stores]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"docs": args.docs, "kills_per_store": args.kills, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['docs']} documents, {result['kills_per_store']} kills per store", "",
             "| store | kills | before the folder existed | mid-run | failed opens | half-indexed "
             "| failed re-runs | injected damage | rebuilds | mismatched after re-run |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        lines.append(f"| {r['store']} | {r['kills']} | {r['not_created']} | {r['mid_run']} | "
                     f"{r['failed_opens']} | "
                     f"{r['half_indexed']} | {r['failed_reruns']} | {r.get('injected', 0)} | "
                     f"{r.get('rebuilds', 0)} | "
                     f"{r['mismatched_after_rerun']} |")
    errors = [e for r in result["rows"] for e in r["errors"]]
    if errors:
        lines += ["", "first problems:", *(f"- {e}" for e in errors[:10])]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--kills", type=int, default=100)
    p.add_argument("--docs", type=int, default=300)
    p.add_argument("--stores", type=lambda s: s.split(","), default=["memory", "faiss", "chroma"])
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--damage", type=float, default=0.0,
                   help="fraction of kills after which the Chroma store is damaged too (0-1)")
    args = p.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown,
                       lambda a: "python benchmarks/crash_bench.py " + " ".join(a))


if __name__ == "__main__":
    main()
