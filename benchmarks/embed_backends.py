"""Embedding backends against fp32 torch: encode speed, vectors, and retrieval on the dev split.

    python benchmarks/embed_backends.py [--backends torch,onnx,onnx-int8,openvino,openvino-int8]
                                        [--model2vec FOLDER] [--repeats 3] [--threads N]
                                        [--export-dir DIR] [--json PATH]

Texts: the chunks of the dev split (``data/chunking_eval``, three corpora) cut by ``recursive``
at 200 all-MiniLM-L6-v2 wordpieces, as in the README's dev table (253 chunks). Every backend runs
the packaged all-MiniLM-L6-v2 (``SentenceTransformerEmbedder(backend=...)``); ``--model2vec``
adds a static model distilled from it (``scripts/distill_model2vec.sh``). Exports happen in an
untimed warm-up pass (into ``--export-dir``, default a fresh temporary folder). Then
``--repeats`` timed passes of ``embed(texts)`` run round-robin over the backends; the best counts;
``speedup`` is torch's best time over the backend's, from the same run. ``cos`` compares each
vector with torch's (not for model2vec: another vector space). Retrieval: ``evaluate_chunking``
with that embedder (exact spans, char units), recall and IoU at k = 5, mean over the 276
questions, x100; the chunk vectors come from the warm-up pass (a fresh cache in a temporary
folder, so every vector is computed by the backend named), the questions' are computed there.
"""

from __future__ import annotations

import argparse
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "chunking_eval"
CHUNKER = {"name": "recursive", "chunk_size": 200, "tokenizer": "all-MiniLM-L6-v2"}


def embedders(args: argparse.Namespace, export_dir: str) -> dict[str, Any]:
    from ragkit.retrieval.embedders import SentenceTransformerEmbedder
    from ragkit.retrieval.static import Model2VecEmbedder

    threads = {"threads": args.threads} if args.threads else {}
    out: dict[str, Any] = {
        b: SentenceTransformerEmbedder(backend=b, export_dir=export_dir,
                                       **(threads if b != "torch" else {}))
        for b in args.backends
    }
    if args.model2vec:
        out["model2vec"] = Model2VecEmbedder(model=args.model2vec)
    return out


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from ragkit.config import build
    from ragkit.evaluation.chunking import ChunkingEval, evaluate_chunking
    from ragkit.evaluation.data import load_dataset
    from ragkit.retrieval.cache import EmbeddingCache, embed_with_cache
    from ragkit.types import Document

    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    chunker = build("chunker", CHUNKER)
    texts = [c.text for p in sorted((DEV / "corpora").glob("*.md"))
             for c in chunker.chunk(Document(p.name, p.read_text(encoding="utf-8")))]
    say(f"texts: {len(texts)} dev-split chunks ({sum(map(len, texts)):,} chars); "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.1f} at start")
    with tempfile.TemporaryDirectory() as tmp:
        lineup = embedders(args, args.export_dir or tmp)
        # the warm-up's vectors are kept in a fresh cache (keyed by each embedder's config, backend
        # included), so the evaluation below computes only the questions' vectors
        cache = EmbeddingCache(str(Path(tmp) / "vectors.sqlite"))
        vecs, warm = {}, {}
        for name, emb in lineup.items():  # export, quantise, load: untimed
            t0 = time.perf_counter()
            vecs[name] = embed_with_cache(emb, texts, cache)
            warm[name] = time.perf_counter() - t0
            say(f"warm-up {name}: {warm[name]:.1f} s (export and load included)")
        times: dict[str, list[float]] = {name: [] for name in lineup}
        for _ in range(args.repeats):
            for name, emb in lineup.items():
                t0 = time.perf_counter()
                emb.embed(texts)
                times[name].append(time.perf_counter() - t0)
        dataset = load_dataset(str(DEV))
        rows = []
        base = min(times["torch"]) if "torch" in times else None
        for name, emb in lineup.items():
            config = ChunkingEval(chunkers={"recursive-200": CHUNKER}, embedder=emb, ks=(5,))
            result = evaluate_chunking(dataset, config, cache=cache)[0].results["5"]
            cos = None
            if "torch" in vecs and name != "model2vec":
                c = (vecs[name] * vecs["torch"]).sum(axis=1)
                cos = {"min": float(c.min()), "mean": float(c.mean())}
            best = min(times[name])
            rows.append({
                "backend": name, "seconds": best, "times": times[name], "warm_up": warm[name],
                "texts_per_s": len(texts) / best, "speedup": base / best if base else None,
                "cos": cos, "dim": int(vecs[name].shape[1]),
                "recall_5": result["recall"]["mean"], "iou_5": result["iou"]["mean"],  # x100 already
            })
            say(f"{name}: recall@5 {rows[-1]['recall_5']:.1f}, IoU@5 {rows[-1]['iou_5']:.2f}")
    return {"command": command_line(args.argv), "texts": len(texts), "cpus": os.cpu_count(),
            "threads": args.threads, "load_at_end": os.getloadavg()[0], "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| backend | dim | best s | texts/s | speedup vs torch | cos vs torch (min / mean) "
             "| recall@5 | IoU@5 | all passes (s) |",
             "|---|--:|--:|--:|--:|--:|--:|--:|---|"]
    for r in result["rows"]:
        cos = "–" if r["cos"] is None else f"{r['cos']['min']:.4f} / {r['cos']['mean']:.4f}"
        speed = "–" if r["speedup"] is None else f"{r['speedup']:.2f}x"
        lines.append(f"| {r['backend']} | {r['dim']} | {r['seconds']:.2f} | {r['texts_per_s']:.1f} "
                     f"| {speed} | {cos} | {r['recall_5']:.1f} | {r['iou_5']:.2f} "
                     f"| {', '.join(f'{t:.2f}' for t in r['times'])} |")
    lines.append(f"\n{result['texts']} texts; load average at the end {result['load_at_end']:.1f} "
                 f"on {result['cpus']} CPUs")
    return "\n".join(lines)


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/embed_backends.py", *argv])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("--backends", default="torch,onnx,onnx-int8,openvino,openvino-int8",
                   help="comma-separated SentenceTransformerEmbedder backends (torch first)")
    p.add_argument("--model2vec", help="also a model2vec folder (scripts/distill_model2vec.sh)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per backend; best kept")
    p.add_argument("--threads", type=int,
                   help="threads for every backend: torch.set_num_threads and the onnx/openvino "
                        "runtimes' (default: each library's own choice, all cores)")
    p.add_argument("--export-dir", help="where exports go (default: a temporary folder)")
    args = p.parse_args(argv)
    args.backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if args.repeats < 1:
        p.error("need --repeats >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
