"""Chunking on several processes: ``chunk_many(docs, workers=N)`` against one worker, same run.

    python benchmarks/chunk_workers.py [--mb 20] [--workers 1,2] [--repeats 2] [--chunkers fixed,recursive]
                                       [--cold] [--json PATH]

The corpus is ``chunk_throughput.py``'s (info manuals, then Python's doc topics, cut at ``--mb``
MB); every chunker has a 512-token cl100k budget. Each pass calls ``chunk_many`` once. The
process keeps its worker pool between calls (as ``ragkit index`` does between batches), so by
default only a chunker's first pass with N workers starts them (forked from this process, which
has the tokenizer loaded, where that is safe; see ``chunkers/parallel.py``) and the best pass
measures the work; ``--cold`` stops the pool before every pass, so every pass pays the start-up,
as one ``ragkit chunk --workers N`` command does. Passes run round-robin over the worker counts,
``--repeats`` times; the best counts. Every pass's output is checked against one worker's (same
chunk ids). ``--min-batch-chars`` (default 1 M) sets ``chunk_many``'s smallest batch.
``speedup`` is one worker's best wall time over N workers' best, measured in the same run.

CPU columns, for a machine shared with other work (Linux's autogroup scheduler gives each session
its share of the cores however many processes it runs, so there a second worker gets no second
core and the wall clock cannot show scaling): the parent's CPU seconds, the busiest worker's
(from ``/proc``) and all of them; ``CPU critical-path speedup`` is one worker's CPU seconds over
the larger of the parent's and the busiest worker's, i.e. the speed-up the pass would have if
each process had a core of its own.
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
    import ragkit.chunkers.parallel as pool

    # measure the processes, not the in-process path (restored after: tests load this module)
    saved = pool.MIN_BATCH_CHARS, pool.MIN_SPAWN_BATCH_CHARS
    pool.MIN_BATCH_CHARS = pool.MIN_SPAWN_BATCH_CHARS = args.min_batch_chars
    try:
        return _run(args, say, pool)
    finally:
        pool.MIN_BATCH_CHARS, pool.MIN_SPAWN_BATCH_CHARS = saved
        pool.shutdown_pool()


def _run(args: argparse.Namespace, say: Callable[[str], None], pool: Any) -> dict[str, Any]:
    from prose_corpus import build_corpus

    from ragkit.config import build
    from ragkit.types import Document


    docs = [Document(i, t) for i, t in build_corpus(args.mb)]
    say(f"corpus: {len(docs)} documents, {args.mb:g} MB; {os.cpu_count()} CPUs; "
        f"load average {os.getloadavg()[0]:.1f} at start; "
        f"{'a new pool per pass' if args.cold else 'the pool kept between passes'}")
    rows = []
    for name in args.chunkers:
        chunker = build("chunker", {"name": name, "chunk_size": BUDGET, "tokenizer": "cl100k"})
        reference = [[c.id for c in cs] for cs in chunker.chunk_many(docs, workers=1)]  # warm-up
        times: dict[int, list[float]] = {w: [] for w in args.workers}
        methods: dict[int, str] = {}
        cpus: dict[int, list[tuple[float, float, float]]] = {w: [] for w in args.workers}
        for _ in range(args.repeats):
            for w in args.workers:
                if args.cold:
                    pool.shutdown_pool()
                before = _worker_cpu()
                t0, c0 = time.perf_counter(), time.process_time()
                out = chunker.chunk_many(docs, workers=w)
                times[w].append(time.perf_counter() - t0)
                parent = time.process_time() - c0
                spent = {pid: cpu - before.get(pid, 0.0) for pid, cpu in _worker_cpu().items()}
                cpus[w].append((parent, max(spent.values(), default=0.0),
                                sum(spent.values())))
                methods[w] = pool._POOL["method"] if w > 1 else "-"
                if [[c.id for c in cs] for cs in out] != reference:
                    raise SystemExit(f"{name}: workers={w} gave other chunks than workers=1")
        one = min(times[args.workers[0]])
        one_cpu = min(c[0] for c in cpus[args.workers[0]])
        for w in args.workers:
            best = min(times[w])
            # the pass with the least critical-path CPU: the parent's or the busiest worker's
            parent, busiest, total = min(cpus[w], key=lambda c: max(c[0], c[1]))
            rows.append({"chunker": name, "workers": w, "seconds": best, "times": times[w],
                         "start": methods.get(w, "-"), "cold": args.cold,
                         "parent_cpu": parent, "busiest_worker_cpu": busiest,
                         "total_cpu": parent + total,
                         "cpu_speedup": one_cpu / max(parent, busiest, 1e-9),
                         "mb_per_s": args.mb / best, "speedup": one / best,
                         "chunks": sum(map(len, reference))})
    return {"command": command_line(args.argv), "mb": args.mb, "cpus": os.cpu_count(),
            "load_at_end": os.getloadavg()[0], "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| chunker | workers | workers start by | best s | MB/s | speedup vs first | "
             "parent CPU s | busiest worker CPU s | all CPU s | CPU critical-path speedup | "
             "all passes (s) | chunks |", "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|--:|"]
    for r in result["rows"]:
        lines.append(f"| {r['chunker']} | {r['workers']} | {r['start']} | {r['seconds']:.2f} "
                     f"| {r['mb_per_s']:.2f} | {r['speedup']:.2f}x | {r['parent_cpu']:.2f} | "
                     f"{r['busiest_worker_cpu']:.2f} | {r['total_cpu']:.2f} | "
                     f"{r['cpu_speedup']:.2f}x | {', '.join(f'{t:.2f}' for t in r['times'])} "
                     f"| {r['chunks']:,} |")
    lines.append(f"\nload average at the end: {result['load_at_end']:.1f} on {result['cpus']} CPUs")
    return "\n".join(lines)


def _worker_cpu() -> dict[int, float]:
    """CPU seconds (user + system) so far of each process of the chunking pool, from /proc."""
    import ragkit.chunkers.parallel as pool

    running = pool._POOL["pool"]
    out = {}
    for pid in list(getattr(running, "_processes", None) or {}):
        try:
            fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue
        out[pid] = (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    return out


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/chunk_workers.py", *argv])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=20.0, help="corpus size in MB of UTF-8")
    p.add_argument("--workers", default="1,2", help="comma-separated worker counts, first = base")
    p.add_argument("--repeats", type=int, default=2, help="passes per worker count; best kept")
    p.add_argument("--chunkers", default="fixed,recursive", help="comma-separated chunker names")
    p.add_argument("--min-batch-chars", type=int, default=1_000_000,
                   help="chunk_many's smallest batch (library default 25 M: in-process below it)")
    p.add_argument("--cold", action="store_true",
                   help="stop the worker pool before every pass (each pass starts its workers)")
    args = p.parse_args(argv)
    args.workers = [int(w) for w in args.workers.split(",") if w.strip()]
    args.chunkers = [c for c in args.chunkers.split(",") if c.strip()]
    if args.mb <= 0 or args.repeats < 1 or not args.workers or min(args.workers) < 1:
        p.error("need --mb > 0, --repeats >= 1 and worker counts >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
