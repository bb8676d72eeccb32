"""Issue 18: retrieval levers on the dev split, chosen by leave-one-corpus-out cross-validation.

For every base path (chunker + index + fusion settings) the corpora are indexed once and each
question's candidates fetched once (``index.search(query_vec, candidates, queries=[q])``, exactly
what ``RAGPipeline.retrieve`` does); then every selector/refiner setting is applied to the same
candidates with the same ``SelectionContext`` the pipeline builds, and scored with the
evaluation's own metric code (``ragkit.evaluation.retrieval.hit_scores``, exact character
spans, k = 5: a setting returns at most 5 hits). That is ``ragkit eval retrieval`` without
re-indexing per setting; ``configs/eval/best_retrieval.yaml`` re-measures the chosen setting
through the real command.

Cross-validation: for each corpus, the setting is chosen on the other two corpora's questions
(the one maximising ``min(recall@5 / 90, IoU@5 / 8)`` there: the target asks for both, so a
setting is as good as its weaker side; ties go to the higher recall), and scored on the held-out
corpus. The report gives each
held-out corpus's figures and their question-weighted mean (every question is scored by a
setting that did not see its corpus).

Latency: ``RAGPipeline.retrieve`` per question, p50 and p95, for the chosen setting and for plain
top-5 over the same chunker and index, with the query (and every sentence the refiner scores)
embedded for real (no on-disk cache), after one warm-up query, interleaved question by question
so both see the same machine load; wall time and the process's CPU time (all threads), since on
a shared machine wall time mostly measures the queue. Tokens to the generator: all-MiniLM-L6-v2
wordpieces of the returned hits per question.

    HF_HUB_OFFLINE=1 python benchmarks/retrieval_levers.py --out runs/levers-cv
    HF_HUB_OFFLINE=1 python benchmarks/retrieval_levers.py --out runs/latency \
        --latency-only configs/eval/best_retrieval.yaml
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import time
from pathlib import Path

import numpy as np

from ragkit.evaluation.data import load_dataset
from ragkit.evaluation.retrieval import hit_scores
from ragkit.pipeline import RAGPipeline
from ragkit.retrieval.base import SelectionContext
from ragkit.config import build
from ragkit.types import Document

MINILM = "all-MiniLM-L6-v2"
CACHE = "~/.cache/ragkit/embeddings.sqlite"
K = 5
CANDIDATES = 20


def embedder(cache: bool = True) -> dict:
    spec = {"name": "sentence-transformers", "model": MINILM}
    return {**spec, "cache": CACHE} if cache else spec


def recursive(size: int, overlap: int = 0) -> dict:
    return {"name": "recursive", "chunk_size": size, "overlap": overlap, "tokenizer": MINILM}


STEM = {"name": "bm25", "stemmer": "english"}
# base paths: label -> (chunker, index); the hybrid ones are run with each fusion below
BASES = {
    "dense r150": (recursive(150), {"name": "memory"}),
    "bm25 r150": (recursive(150), {"name": "bm25"}),
    "bm25-stem r150": (recursive(150), STEM),
    "hybrid r150": (recursive(150), {"name": "hybrid"}),
    "hybrid-stem r150": (recursive(150), {"name": "hybrid", "sparse": STEM}),
    "hybrid r200o50": (recursive(200, 50), {"name": "hybrid"}),
}
FUSIONS = {  # hybrid settings tried (rrf_k 60 is the default)
    "rrf60": {"fusion": "rrf", "rrf_k": 60},
    "rrf30": {"fusion": "rrf", "rrf_k": 30},
    "rrf10": {"fusion": "rrf", "rrf_k": 10},
    "w0.3": {"fusion": "weighted", "weight": 0.3},
    "w0.5": {"fusion": "weighted", "weight": 0.5},
}
FUSIONS_OF = {"hybrid r150": list(FUSIONS), "hybrid-stem r150": ["rrf60", "rrf30", "rrf10"],
              "hybrid r200o50": ["rrf60", "rrf10"]}
# the plain chunkers' trade-off line: dense top-5 at several sizes
LINE = {f"dense r{s}": (recursive(s), {"name": "memory"}) for s in (100, 150, 200, 250)}


def refiners() -> dict[str, tuple[dict | None, int]]:
    """label -> (selector spec or None for plain top-5, candidates it is given)."""
    out: dict[str, tuple[dict | None, int]] = {"top5": (None, K)}
    for whole, floor, pad in itertools.product((0, 1, 2), (0.15, 0.2, 0.25, 0.3, 0.35, 0.4),
                                               (0, 1)):
        out[f"refine w{whole} min{floor} pad{pad}"] = (
            {"name": "sentence-refine", "k": K, "whole": whole, "min_score": floor, "pad": pad}, K)
    for whole, keep, pad in itertools.product((1, 2), (0.1, 0.2, 0.3), (0, 1)):
        out[f"refine w{whole} keep{keep} pad{pad}"] = (
            {"name": "sentence-refine", "k": K, "whole": whole, "keep": keep, "min_score": None,
             "pad": pad}, K)
    out["merge only"] = ({"name": "sentence-refine", "k": K, "keep": None, "min_score": None,
                          "merge": True}, CANDIDATES)
    return out


def candidates(ds, chunker, index, fusion=None):
    """(pipeline, per-question candidate hits, per-question query vector)."""
    pipe = RAGPipeline(chunker=chunker, embedder=embedder(), index=index, k=K)
    pipe.add([Document(cid, d.text) for cid, d in ds.corpora.items()])
    for key, value in (fusion or {}).items():
        setattr(pipe.index, key, value)
    qs = [q.text for q in ds.questions]
    vecs = pipe.embedder.embed(qs)
    # what RAGPipeline.retrieve asks the index for with candidates = 5 and 20 (hybrid fusion
    # depth follows: each side is asked for 4 x that)
    hits = {n: [pipe.index.search(vecs[i:i + 1], n, queries=[qs[i]])[0] for i in range(len(qs))]
            for n in (K, CANDIDATES)}
    return pipe, hits, vecs


def scores(ds, answers) -> dict[str, np.ndarray]:
    out = {"recall": [], "precision": [], "iou": [], "chars": [], "hits": []}
    for q, hits in zip(ds.questions, answers):
        r, p, iou = hit_scores(q, hits)  # the evaluation's own scoring
        out["recall"].append(r)
        out["precision"].append(p)
        out["iou"].append(iou)
        out["chars"].append(sum(h.chunk.end - h.chunk.start for h in hits))
        out["hits"].append(len(hits))
    return {k: np.asarray(v, dtype=np.float64) for k, v in out.items()}


def summary(vals, mask=None) -> dict[str, float]:
    m = np.ones(len(vals["recall"]), bool) if mask is None else mask
    return {"recall": 100 * vals["recall"][m].mean(), "recall_std": 100 * vals["recall"][m].std(),
            "iou": 100 * vals["iou"][m].mean(), "iou_std": 100 * vals["iou"][m].std(),
            "precision": 100 * vals["precision"][m].mean(),
            "chars": float(vals["chars"][m].mean()), "hits": float(vals["hits"][m].mean())}


def choose(rows, mask, recall_target=90.0, iou_target=8.0):
    """The label whose weaker side, ``min(recall / 90, IoU / 8)`` on the masked questions, is
    best (ties: higher recall)."""
    train = {label: summary(vals, mask) for label, vals in rows.items()}
    return max(train, key=lambda lab: (min(train[lab]["recall"] / recall_target,
                                           train[lab]["iou"] / iou_target), train[lab]["recall"]))


def latency(ds, spec: dict, n: int) -> dict[str, dict[str, float]]:
    """``RAGPipeline.retrieve`` cost per question of plain top-5 (the same chunker and index, no
    selector) and of ``spec`` (a pipeline config), on the first ``n`` questions, interleaved so
    both see the same machine load. Wall time and this process's CPU time (all threads: on a
    loaded machine wall time mostly measures the queue, CPU time what the query costs)."""
    from ragkit.tokenizers import load_tokenizer

    tok = load_tokenizer(MINILM)
    pipes = {}
    for name, sel, cands in (("plain top-5", None, None),
                             ("chosen", spec.get("selector"), spec.get("candidates"))):
        pipe = RAGPipeline(chunker=spec["chunker"], embedder=embedder(),
                           index=build("index", copy.deepcopy(spec["index"])),
                           selector=sel, k=K, candidates=cands)
        pipe.add([Document(cid, d.text) for cid, d in ds.corpora.items()])  # vectors from cache
        pipe.embedder = build("embedder", embedder(cache=False))  # queries and sentences: real
        pipe.retrieve("warm up the model and the index")
        pipes[name] = pipe
    wall = {name: [] for name in pipes}
    cpu = {name: [] for name in pipes}
    tokens = {name: [] for name in pipes}
    for q in ds.questions[:n]:
        for name, pipe in pipes.items():
            t0, c0 = time.perf_counter(), time.process_time()
            hits = pipe.retrieve(q.text)
            wall[name].append(time.perf_counter() - t0)
            cpu[name].append(time.process_time() - c0)
            tokens[name].append(sum(tok.count(h.chunk.text) for h in hits))
    return {name: {"wall_p50_ms": 1000 * float(np.percentile(wall[name], 50)),
                   "wall_p95_ms": 1000 * float(np.percentile(wall[name], 95)),
                   "cpu_p50_ms": 1000 * float(np.percentile(cpu[name], 50)),
                   "cpu_p95_ms": 1000 * float(np.percentile(cpu[name], 95)),
                   "tokens_per_question": statistics.fmean(tokens[name]), "questions": n}
            for name in pipes}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("data", nargs="?", default="data/chunking_eval")
    ap.add_argument("--out", default="runs/levers-cv")
    ap.add_argument("--latency-questions", type=int, default=60)
    ap.add_argument("--latency-only", metavar="CONFIG",
                    help="only time the one path of this `ragkit eval retrieval` config "
                         "(e.g. configs/eval/best_retrieval.yaml) against plain top-5")
    args = ap.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ds = load_dataset(args.data)
    if args.latency_only:
        from ragkit.config import load_yaml

        (label, spec), = load_yaml(args.latency_only)["paths"].items()
        lat = latency(ds, spec, args.latency_questions)
        print(json.dumps({label: lat}, indent=1))
        (out / "latency.json").write_text(json.dumps({label: lat}, indent=1) + "\n")
        return
    corpus = np.array([q.corpus_id for q in ds.questions])
    rows: dict[str, dict[str, np.ndarray]] = {}
    specs: dict[str, dict] = {}
    for base, (chunker, index) in BASES.items():
        fusions = {f: FUSIONS[f] for f in FUSIONS_OF.get(base, [])} or {"": None}
        for fname, fusion in fusions.items():
            pipe, found, vecs = candidates(ds, chunker, index, fusion)
            for rname, (rspec, n) in refiners().items():
                hits = found[n]
                if rspec is None:
                    answers = hits
                else:
                    sel = build("selector", rspec)
                    answers = [sel.select(q.text, h, SelectionContext(
                        query_vec=vecs[i], embed=pipe.embedder.embed, index=pipe.index))
                        for i, (q, h) in enumerate(zip(ds.questions, hits))]
                label = " ".join(x for x in (base, fname, rname) if x)
                rows[label] = scores(ds, answers)
                specs[label] = {"chunker": chunker, "index": {**index, **(fusion or {})},
                                "selector": rspec, "candidates": n}
                print(label, {k: round(v, 2) for k, v in summary(rows[label]).items()}, flush=True)
    line = {}
    for label, (chunker, index) in LINE.items():
        if label in rows:
            line[label] = summary(rows[label])
            continue
        _, found, _ = candidates(ds, chunker, index)
        line[label] = summary(scores(ds, found[K]))
    # leave-one-corpus-out
    cv = {}
    for held in sorted(set(corpus)):
        label = choose(rows, corpus != held)
        cv[held] = {"chosen": label, "n": int((corpus == held).sum()),
                    **summary(rows[label], corpus == held)}
        print("CV", held, cv[held], flush=True)
    pooled = {m: sum(c[m] * c["n"] for c in cv.values()) / len(corpus)
              for m in ("recall", "iou", "precision", "chars")}
    best = choose(rows, np.ones(len(corpus), bool))
    print("chosen on all corpora:", best, summary(rows[best]))
    # latency of the chosen setting vs plain top-5 (same chunker, index and fusion)
    lat = latency(ds, specs[best], args.latency_questions)
    print("latency", lat)
    result = {"rows": {lab: summary(v) for lab, v in rows.items()},
              "per_corpus": {lab: {c: summary(v, corpus == c) for c in sorted(set(corpus))}
                             for lab, v in rows.items()},
              "specs": specs, "line": line, "cv": cv, "cv_pooled": pooled,
              "chosen_all": best, "latency": lat}
    (out / "levers.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    plot(result, out / "recall_iou.png")
    print("wrote", out / "levers.json", out / "recall_iou.png")


def plot(result, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 5))
    line = sorted(result["line"].items(), key=lambda kv: kv[1]["iou"])
    ax.plot([v["iou"] for _, v in line], [v["recall"] for _, v in line], "k--o",
            label="plain chunkers (dense top-5, recursive 100-250)")
    for lab, v in line:
        ax.annotate(lab.split()[-1], (v["iou"], v["recall"]), fontsize=7)
    rows = result["rows"]
    for kind, colour in (("top5", "tab:blue"), ("refine", "tab:orange"), ("merge", "tab:green")):
        pts = [v for lab, v in rows.items() if kind in lab]
        ax.scatter([v["iou"] for v in pts], [v["recall"] for v in pts], s=10, c=colour,
                   alpha=0.6, label={"top5": "hybrid/BM25 fusion settings, top-5",
                                     "refine": "+ sentence-refine settings",
                                     "merge": "+ merge overlapping hits"}[kind])
    best = rows[result["chosen_all"]]
    ax.scatter([best["iou"]], [best["recall"]], marker="*", s=200, c="red", label="best_retrieval")
    ax.axhline(90, color="grey", lw=0.5)
    ax.axvline(8, color="grey", lw=0.5)
    ax.set_xlabel("IoU@5 (x100)")
    ax.set_ylabel("recall@5 (x100)")
    ax.set_title("Dev split, all-MiniLM-L6-v2, k = 5, exact spans")
    ax.legend(fontsize=7, loc="lower left")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
