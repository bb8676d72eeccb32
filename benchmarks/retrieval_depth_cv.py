"""Issue 18: candidate depth for sentence-refine, chosen by leave-one-corpus-out cross-validation.

``sentence-refine`` folds overlapping hits together, so from 5 candidates it returns ~3.7 hits:
the freed slots stay empty. Giving it more candidates (``candidates`` 6-10, still at most 5 hits
out) fills them with further distinct passages, and narrowing keeps the text short. This grid
crosses depth with the refiner's floor and padding over the strongest hybrid bases, plus ``set-refine`` (the
best combination of refined passages under a character budget, CORAG's idea) at depths 8 and 10, with the
``sentence-vectors`` index (sentence vectors from indexing time, so the grid embeds nothing per
setting), and scores each setting with the evaluation's own ``hit_scores`` (exact spans, k = 5),
exactly as ``benchmarks/retrieval_levers.py`` does; the same rule (``min(recall / 90, IoU / 8)``,
ties to recall) chooses on two corpora and scores the third.

    HF_HUB_OFFLINE=1 python benchmarks/retrieval_depth_cv.py --out runs/depth-cv
"""

from __future__ import annotations

import argparse
import importlib.util
import itertools
import json
import sys
from pathlib import Path

import numpy as np

from ragkit.config import build
from ragkit.evaluation.data import load_dataset
from ragkit.pipeline import RAGPipeline
from ragkit.retrieval.base import SelectionContext
from ragkit.types import Document

_spec = importlib.util.spec_from_file_location(
    "retrieval_levers", Path(__file__).resolve().parent / "retrieval_levers.py")
lev = importlib.util.module_from_spec(_spec)
sys.modules["retrieval_levers"] = lev
_spec.loader.exec_module(lev)

STEM = {"name": "bm25", "stemmer": "english"}
BASES = {  # label -> (chunker, inner index)
    "r150 rrf10": (lev.recursive(150), {"name": "hybrid", "rrf_k": 10}),
    "r150 stem rrf10": (lev.recursive(150), {"name": "hybrid", "rrf_k": 10, "sparse": STEM}),
    "r200o50 rrf10": (lev.recursive(200, 50), {"name": "hybrid", "rrf_k": 10}),
    "r200o50 rrf60": (lev.recursive(200, 50), {"name": "hybrid", "rrf_k": 60}),
    "r200o50 stem rrf10": (lev.recursive(200, 50), {"name": "hybrid", "rrf_k": 10,
                                                     "sparse": STEM}),
}
DEPTHS = (5, 6, 8, 10)


def settings() -> dict[str, tuple[dict | None, int]]:
    out: dict[str, tuple[dict | None, int]] = {"top5": (None, 5)}
    for depth, floor, pad in itertools.product(DEPTHS, (0.3, 0.35, 0.4, 0.45), (0, 1)):
        out[f"depth{depth} min{floor} pad{pad}"] = (
            {"name": "sentence-refine", "k": 5, "min_score": floor, "pad": pad}, depth)
    for depth, budget, red in itertools.product((8, 10), (2000, 2500, 3000, 4000), (0.0, 0.5)):
        out[f"set depth{depth} budget{budget} red{red}"] = (
            {"name": "set-refine", "k": 5, "budget": budget, "redundancy": red,
             "min_score": 0.35, "pad": 1}, depth)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", default="data/chunking_eval")
    ap.add_argument("--out", default="runs/depth-cv")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    corpus = np.array([q.corpus_id for q in ds.questions])
    qs = [q.text for q in ds.questions]
    rows, specs = {}, {}
    for base, (chunker, inner) in BASES.items():
        index = {"name": "sentence-vectors", "inner": inner, "embedder": lev.embedder()}
        pipe = RAGPipeline(chunker=chunker, embedder=lev.embedder(), index=index, k=5)
        pipe.add([Document(cid, d.text) for cid, d in ds.corpora.items()])
        vecs = pipe.embedder.embed(qs)
        found = {n: [pipe.index.search(vecs[i:i + 1], n, queries=[qs[i]])[0]
                     for i in range(len(qs))] for n in DEPTHS}
        for name, (rspec, depth) in settings().items():
            if rspec is None:
                answers = found[5]
            else:
                sel = build("selector", rspec)
                answers = [sel.select(qs[i], found[depth][i], SelectionContext(
                    query_vec=vecs[i], embed=pipe.embedder.embed, index=pipe.index)) for i in range(len(qs))]
            label = f"{base} {name}"
            rows[label] = lev.scores(ds, answers)
            specs[label] = {"chunker": chunker, "index": index, "selector": rspec,
                            "candidates": depth}
            print(label, {k: round(v, 2) for k, v in lev.summary(rows[label]).items()},
                  flush=True)
    cv = {}
    for held in sorted(set(corpus)):
        label = lev.choose(rows, corpus != held)
        cv[held] = {"chosen": label, "n": int((corpus == held).sum()),
                    "train": lev.summary(rows[label], corpus != held),
                    **lev.summary(rows[label], corpus == held)}
        print("CV", held, cv[held], flush=True)
    pooled = {m: sum(c[m] * c["n"] for c in cv.values()) / len(corpus)
              for m in ("recall", "iou", "precision", "chars")}
    best = lev.choose(rows, np.ones(len(corpus), bool))
    print("CV pooled", pooled)
    print("chosen on all corpora:", best, lev.summary(rows[best]))
    result = {"rows": {lab: lev.summary(v) for lab, v in rows.items()},
              "per_corpus": {lab: {c: lev.summary(v, corpus == c) for c in sorted(set(corpus))}
                             for lab, v in rows.items()},
              "specs": specs, "cv": cv, "cv_pooled": pooled, "chosen_all": best}
    (out / "depth_cv.json").write_text(json.dumps(result, indent=1, default=str) + "\n")


if __name__ == "__main__":
    main()
