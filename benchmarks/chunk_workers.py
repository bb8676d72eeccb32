"""Chunking on several processes: ``chunk_many(docs, workers=N)`` against one worker, same run.

    python benchmarks/chunk_workers.py [--mb 20] [--workers 1,2] [--repeats 2] [--chunkers fixed,recursive]
                                       [--json PATH]

The corpus is ``chunk_throughput.py``'s (info manuals, then Python's doc topics, cut at ``--mb``
MB); every chunker has a 512-token cl100k budget. Each pass calls ``chunk_many`` once, so the
wall clock includes starting the worker processes (spawn, imports, the tokenizer's tables), as a
user of ``ragkit chunk --workers N`` pays it. Passes run round-robin over the worker counts,
``--repeats`` times; the best counts. Every pass's output is checked against one worker's (same
chunk ids). ``--min-batch-chars`` (default 1 M) lowers ``chunk_many``'s smallest batch so that
the worker processes really run (the library keeps inputs under 25 M chars in-process).
``speedup`` is one worker's best wall time over N workers' best, measured in the
same run; the parent's CPU time is printed too (the workers' own CPU is not in it).
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

BUDGET = 512


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    here = str(Path(__file__).resolve().parent)
    if here not in sys.path:  # loaded by path (tests), not run as a script
        sys.path.insert(0, here)
    from prose_corpus import build_corpus

    import ragkit.chunkers.parallel as parallel
    from ragkit.config import build
    from ragkit.types import Document

    parallel.MIN_BATCH_CHARS = args.min_batch_chars  # measure the processes, not the in-process path

    docs = [Document(i, t) for i, t in build_corpus(args.mb)]
    say(f"corpus: {len(docs)} documents, {args.mb:g} MB; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f} at start")
    rows = []
    for name in args.chunkers:
        chunker = build("chunker", {"name": name, "chunk_size": BUDGET, "tokenizer": "cl100k"})
        reference = [[c.id for c in cs] for cs in chunker.chunk_many(docs, workers=1)]  # warm-up
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for w in args.workers:
                t0 = time.perf_counter()
                out = chunker.chunk_many(docs, workers=w)
                times[w].append(time.perf_counter() - t0)
                if [[c.id for c in cs] for cs in out] != reference:
                    raise SystemExit(f"{name}: workers={w} gave other chunks than workers=1")
        one = min(times[args.workers[0]])
        for w in args.workers:
            best = min(times[w])
            rows.append({"chunker": name, "workers": w, "seconds": best, "times": times[w],
                         "mb_per_s": args.mb / best, "speedup": one / best,
                         "chunks": sum(map(len, reference))})
    return {"command": command_line(args.argv), "mb": args.mb, "cpus": os.cpu_count(),
            "load_at_end": os.getloadavg()[0], "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| chunker | workers | best s | MB/s | speedup vs first | all passes (s) | chunks |",
             "|---|--:|--:|--:|--:|---|--:|"]
    for r in result["rows"]:
        lines.append(f"| {r['chunker']} | {r['workers']} | {r['seconds']:.2f} | {r['mb_per_s']:.2f} "
                     f"| {r['speedup']:.2f}x | {', '.join(f'{t:.2f}' for t in r['times'])} "
                     f"| {r['chunks']:,} |")
    lines.append(f"\nload average at the end: {result['load_at_end']:.1f} on {result['cpus']} CPUs")
    return "\n".join(lines)


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/chunk_workers.py", *argv])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=20.0, help="corpus size in MB of UTF-8")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, first = base")
    p.add_argument("--repeats", type=int, default=2, help="passes per worker count; best kept")
    p.add_argument("--chunkers", default="fixed,recursive", help="comma-separated chunker names")
    p.add_argument("--min-batch-chars", type=int, default=1_000_000,
                   help="chunk_many's smallest batch (library default 25 M: in-process below it)")
    p.add_argument("--json", type=Path, help="also write the results here")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.chunkers = [c for c in args.chunkers.split(",") if c.strip()]
    if args.mb <= 0 or args.repeats < 1 or not args.workers or min(args.workers) < 1:
        p.error("need --mb > 0, --repeats >= 1 and worker counts >= 1")
    args.argv = list(argv)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
