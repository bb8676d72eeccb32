"""The LLM chunkers beside recursive: retrieval metrics, chunking time per MB, MoC quality.

Step 1 is ``ragkit eval chunking`` (recall and IoU at k, chunking seconds in results.json):

    ragkit eval chunking data/chunking_eval --config configs/eval/llm_chunkers.yaml \\
        --corpora state_of_the_union --out runs/eval-llm --no-plot

Step 2 turns its results.json into the table of benchmarks/README.md (time per MB of the corpora
it chunked, ratio to the first chunker, which is recursive) and, with ``--quality-chars N``,
scores MoC's boundary clarity and chunk stickiness of each chunker's chunks of the first N chars
of each corpus with SmolLM2 (the full corpora would take hours on 2 CPU cores):

    HF_HUB_OFFLINE=1 python benchmarks/llm_chunkers.py runs/eval-llm/results.json \\
        --data data/chunking_eval --config configs/eval/llm_chunkers.yaml \\
        --quality-chars 6000 --stickiness-k 0.8 0.2
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("results", help="results.json written by ragkit eval chunking")
    p.add_argument("--data", required=True, help="the dataset folder the results came from")
    p.add_argument("--config", required=True, help="the eval config (for the chunkers)")
    p.add_argument("--k", default="5")
    p.add_argument("--quality-chars", type=int, default=0,
                   help="also score MoC metrics on the first N chars of each corpus")
    p.add_argument("--stickiness-k", type=float, nargs="+", default=[0.8],
                   help="edge thresholds K for chunk stickiness (one column each)")
    p.add_argument("--llm", default="transformers",
                   help="generator for the MoC metrics (a registered name or pkg.mod:Class)")
    args = p.parse_args(argv)

    from ragkit.evaluation.data import load_dataset

    results = json.loads(Path(args.results).read_text(encoding="utf-8"))
    corpora = sorted({q["corpus_id"] for q in results["questions"]})
    dataset = load_dataset(args.data).only(corpora)
    mb = sum(len(d.text.encode("utf-8")) for d in dataset.corpora.values()) / 1e6
    runs = results["runs"]
    base = runs[0]["seconds"]["chunk"]
    print(f"corpora: {', '.join(corpora)} ({mb * 1e3:.0f} KB, {len(results['questions'])} "
          f"questions); k = {args.k}")
    print()
    print(f"| chunker | chunks | mean tokens | recall@{args.k} | IoU@{args.k} | chunking s | "
          f"s per MB | time vs {runs[0]['label']} |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in runs:
        res = r["results"][args.k]
        s = r["seconds"]["chunk"]
        print(f"| {r['label']} | {r['n_chunks']} | {r['mean_chunk_tokens']:.1f} | "
              f"{res['recall']['mean']:.1f} ± {res['recall']['std']:.1f} | "
              f"{res['iou']['mean']:.1f} ± {res['iou']['std']:.1f} | {s:.1f} | {s / mb:.0f} | "
              f"{s / base:.0f}x |")
    if args.quality_chars:
        quality(args, dataset)


def quality(args: argparse.Namespace, dataset) -> None:
    from ragkit.config import build, load_yaml
    from ragkit.evaluation.quality import Perplexities, boundary_clarity, stickiness
    from ragkit.types import Document

    config = load_yaml(args.config)
    spec = {"name": args.llm}
    if args.llm == "transformers":
        spec["kv_store"] = None
    llm = build("generator", spec)
    print()
    print(f"MoC metrics on the first {args.quality_chars} chars of each corpus, LM {args.llm} "
          "(boundary clarity: mean ± std over adjacent pairs, higher is better; stickiness: "
          "incomplete graph, adjacent pairs, structural entropy (edges), lower is better)")
    print()
    ks = args.stickiness_k
    print("| chunker | chunks | mean tokens | boundary clarity | "
          + " | ".join(f"stickiness K={k}" for k in ks) + " | seconds |")
    print("|---|---:|---:|---:|" + "---:|" * len(ks) + "---:|")
    for label, spec in config["chunkers"].items():
        chunker = build("chunker", spec, path=f"chunkers.{label}")
        docs, tokens = {}, []
        for cid, doc in dataset.corpora.items():
            part = Document(cid, doc.text[: args.quality_chars], doc.metadata)
            chunks = chunker.chunk(part)
            docs[cid] = [c.text for c in chunks]
            tokens += [c.metadata.get("tokens", 0) for c in chunks]
        t0 = time.perf_counter()
        bc, cells = [], {k: [] for k in ks}
        for texts in docs.values():
            ppl = Perplexities(texts, llm)
            bc += boundary_clarity(ppl)
            for k in ks:
                cells[k].append(stickiness(ppl, k=k))
        cs = " | ".join(
            f"{sum(e for e, _ in cells[k]) / len(cells[k]):.3f} ({sum(m for _, m in cells[k])})"
            for k in ks)
        print(f"| {label} | {len(tokens)} | {sum(tokens) / max(len(tokens), 1):.1f} | "
              f"{statistics.fmean(bc):.3f} ± {statistics.pstdev(bc):.3f} | {cs} | "
              f"{time.perf_counter() - t0:.0f} |", flush=True)


if __name__ == "__main__":
    main()
