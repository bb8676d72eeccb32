"""Issue 18: query latency of the best retrieval path, sentence vectors stored vs embedded per query.

Three pipelines over the same chunks (recursive-200 overlap 50, all-MiniLM-L6-v2) and the same
hybrid index (rrf_k 10), timed question by question in turn so all three see the same machine
load:

- ``plain top-5``: no selector, the 5 best fused hits;
- ``best, query-time sentences``: ``sentence-refine`` (merge + ``min_score`` 0.35, pad 1) that
  embeds the sentences of its hits for every query (the path before this benchmark);
- ``best, stored sentences``: the same refiner over the ``sentence-vectors`` index, which
  embedded every sentence at indexing time; refinement is a lookup plus dot products.

``RAGPipeline.retrieve`` per question after one warm-up query; the query (and any sentence
embedded at query time) goes through the model for real (no on-disk cache; the corpus's chunk
and sentence vectors come from the cache at indexing time, which is not timed). Wall time and
the process's CPU time (all threads: on a loaded machine wall time mostly measures the queue),
p50 and p95; the load average before and after; MiniLM wordpieces of the returned hits per
question (what a generator would read); and whether the two ``best`` pipelines returned the same
spans (they should: same sentences, same model).

    HF_HUB_OFFLINE=1 python benchmarks/retrieval_latency.py --questions 60 --out runs/latency
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time
from pathlib import Path

import numpy as np

from ragkit.config import build
from ragkit.evaluation.data import load_dataset
from ragkit.pipeline import RAGPipeline
from ragkit.types import Document

MINILM = "all-MiniLM-L6-v2"
CACHE = "~/.cache/ragkit/embeddings.sqlite"
CHUNKER = {"name": "recursive", "chunk_size": 200, "overlap": 50, "tokenizer": MINILM}
HYBRID = {"name": "hybrid", "fusion": "rrf", "rrf_k": 10}
REFINE = {"name": "sentence-refine", "k": 5, "min_score": 0.35, "pad": 1}


def embedder(cache: bool) -> dict:
    spec = {"name": "sentence-transformers", "model": MINILM}
    return {**spec, "cache": CACHE} if cache else spec


PATHS = {
    "plain top-5": {"index": HYBRID, "selector": None, "candidates": None},
    "best, query-time sentences": {"index": HYBRID, "selector": REFINE, "candidates": 5},
    "best, stored sentences": {
        "index": {"name": "sentence-vectors", "inner": HYBRID, "embedder": embedder(True)},
        "selector": REFINE, "candidates": 5},
}


def pct(xs: list[float], q: float) -> float:
    return 1000 * float(np.percentile(xs, q))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", default="data/chunking_eval")
    ap.add_argument("--questions", type=int, default=60)
    ap.add_argument("--out", default="runs/latency")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    docs = [Document(cid, d.text) for cid, d in ds.corpora.items()]
    from ragkit.tokenizers import load_tokenizer

    tok = load_tokenizer(MINILM)
    pipes, built = {}, {}
    for name, spec in PATHS.items():
        t0 = time.perf_counter()
        pipe = RAGPipeline(chunker=CHUNKER, embedder=embedder(True), index=spec["index"],
                           selector=spec["selector"], k=5, candidates=spec["candidates"])
        pipe.add(docs)  # chunk (and sentence) vectors from the on-disk cache
        pipe.embedder = build("embedder", embedder(False))  # queries: through the model
        pipe.retrieve("warm up the model and the index")
        pipes[name] = pipe
        built[name] = time.perf_counter() - t0
    load_before = os.getloadavg()
    wall = {n: [] for n in pipes}
    cpu = {n: [] for n in pipes}
    tokens = {n: [] for n in pipes}
    spans = {n: [] for n in pipes}
    for q in ds.questions[: args.questions]:
        for name, pipe in pipes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            hits = pipe.retrieve(q.text)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            tokens[name].append(sum(tok.count(h.chunk.text) for h in hits))
            spans[name].append([h.chunk.id for h in hits])
    load_after = os.getloadavg()
    import torch

    plain = "plain top-5"
    result = {"questions": args.questions, "load_before": load_before, "load_after": load_after,
              "torch_threads": torch.get_num_threads(), "cpus": os.cpu_count(), "paths": {}}
    for name in pipes:
        result["paths"][name] = {
            "wall_p50_ms": pct(wall[name], 50), "wall_p95_ms": pct(wall[name], 95),
            "cpu_p50_ms": pct(cpu[name], 50), "cpu_p95_ms": pct(cpu[name], 95),
            "wall_p50_vs_plain": float(np.median(wall[name]) / np.median(wall[plain])),
            "cpu_p50_vs_plain": float(np.median(cpu[name]) / np.median(cpu[plain])),
            "tokens_per_question": statistics.fmean(tokens[name]),
            "build_s": built[name],
        }
    stored = pipes["best, stored sentences"]
    result["sentences_stored"] = stored.index.sentence_count
    result["refiner_stats"] = stored.selector.stats
    result["same_spans_as_query_time"] = sum(
        a == b for a, b in zip(spans["best, query-time sentences"],
                               spans["best, stored sentences"]))
    print(json.dumps(result, indent=1))
    (out / "latency.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    main()
