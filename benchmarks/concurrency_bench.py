"""8 reader threads and 1 writer on every index kind: errors, and queries/s under write load.

For each index kind, the same pipeline (fixed 16-word chunks, the ``hash`` embedder, k = 10) runs
``ragkit.stress.run``: reader threads query for ``--seconds`` while one writer adds new
documents, replaces documents with new versions and deletes documents through
``RAGPipeline.add``/``delete``; then the same readers run alone for ``--seconds``. Reported:
exceptions, wrong hits (id, offsets and text disagree, or the text is not the span of the
document version the hit claims), torn documents (a document's stored chunks mix versions or miss
some), writes, and queries/s with the writer as a ratio of queries/s without it (same run).

    .venv/bin/python benchmarks/concurrency_bench.py --seconds 60
"""

from __future__ import annotations

import argparse
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

KINDS = ("memory", "faiss", "bm25", "hybrid", "chroma")


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from ragkit import stress
    from ragkit.pipeline import RAGPipeline

    rows = []
    for kind in args.kinds:
        row: dict[str, Any] = {"index": kind}
        for label, write in (("with_writer", True), ("readers_only", False)):
            with tempfile.TemporaryDirectory() as tmp:
                index = {"name": kind} | ({"path": str(Path(tmp) / "c")} if kind == "chroma"
                                          else {})
                pipe = RAGPipeline(
                    chunker={"name": "fixed", "chunk_size": 16, "overlap": 4,
                             "tokenizer": "whitespace"},
                    embedder={"name": "hash", "dim": 64}, index=index, k=10)
                if args.folder:
                    pipe.save(Path(tmp) / "idx")
                r = stress.run(pipe, readers=args.readers, seconds=args.seconds, docs=args.docs,
                               write=write)
                pipe.close()
            row[label] = {"queries": r.queries, "queries_per_s": round(r.queries_per_s, 1),
                          "writes": r.writes, "exceptions": len(r.exceptions),
                          "wrong_hits": r.wrong_hits, "torn_documents": r.torn_documents,
                          "first_exceptions": r.exceptions[:3]}
            say(f"{kind} {label}: {r.summary()}")
        base = row["readers_only"]["queries_per_s"]
        row["ratio"] = round(row["with_writer"]["queries_per_s"] / base, 3) if base else None
        rows.append(row)
    return {"seconds": args.seconds, "readers": args.readers, "docs": args.docs,
            "folder": args.folder, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = [f"{result['readers']} readers + 1 writer, {result['seconds']} s per run, "
             f"{result['docs']} documents to start"
             + (", pipeline with a folder (writes go through the log)" if result["folder"] else ""),
             "", "| index | writes | exceptions | wrong hits | torn documents | queries/s with "
             "writer | queries/s readers only | ratio |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        w, o = r["with_writer"], r["readers_only"]
        lines.append(f"| {r['index']} | {w['writes']} | {w['exceptions'] + o['exceptions']} | "
                     f"{w['wrong_hits'] + o['wrong_hits']} | {w['torn_documents']} | "
                     f"{w['queries_per_s']} | {o['queries_per_s']} | {r['ratio']} |")
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.splitlines()[0])
    p.add_argument("--seconds", type=float, default=60.0)
    p.add_argument("--readers", type=int, default=8)
    p.add_argument("--docs", type=int, default=50)
    p.add_argument("--kinds", type=lambda s: s.split(","), default=list(KINDS))
    p.add_argument("--folder", action="store_true", help="bind the pipeline to a folder")
    args = p.parse_args(argv)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown,
                       lambda a: "python benchmarks/concurrency_bench.py " + " ".join(a))


if __name__ == "__main__":
    main()
