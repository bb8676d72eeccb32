"""``ragkit eval retrieval``: score whole retrieve paths with the chunking evaluation's data and
metrics, so users see what each stage (chunker, embedder, index, reranker, selector) buys.

Each path is a pipeline config. Its corpora go into its own index; each question is answered by
``pipeline.retrieve(question, k)`` and scored with Chroma's metrics in exact mode (character
spans; a selector may return fewer than ``k`` hits, and precision counts what it returned).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ragkit.checks import check_int
from ragkit.errors import ConfigError
from ragkit.evaluation.chunking import METRICS, aggregate, counts_of, counts_since
from ragkit.evaluation.data import EvalDataset
from ragkit.evaluation.metrics import omega, retrieval_scores
from ragkit.protocols import ListsChunks
from ragkit.types import Document


@dataclass(kw_only=True)
class RetrievalEval:
    """``paths`` maps a label to a pipeline config (chunker, embedder, index, reranker, ...)."""

    paths: dict[str, Any]
    ks: tuple[int, ...] = (5, 10)

    def __post_init__(self) -> None:
        from ragkit.pipeline import RAGPipeline

        if not isinstance(self.paths, Mapping) or not self.paths:
            raise ConfigError("must map labels to pipeline configs", path="paths")
        built = {}
        for label, spec in self.paths.items():
            if isinstance(spec, RAGPipeline):
                built[str(label)] = spec
                continue
            if not isinstance(spec, Mapping):
                raise ConfigError(f"expected a pipeline config mapping; got {spec!r}",
                                  path=f"paths.{label}")
            try:
                built[str(label)] = RAGPipeline.from_config(spec)
            except ConfigError as exc:
                raise exc.under(f"paths.{label}") from None
        self.paths = built
        self.ks = tuple(check_int(k, "ks", min=1, hint="each k") for k in self.ks)


@dataclass
class PathResult:
    label: str
    config: dict[str, Any]
    n_chunks: int
    mean_chunk_chars: float
    mean_hits: dict[str, float]  # k -> hits returned on average (selectors may return fewer)
    # k -> characters of hit text returned per question on average (what a generator would read)
    mean_context_chars: dict[str, float]
    mean_chunk_tokens: float | None  # the chunker's ``tokens`` metadata, where every chunk has it
    results: dict[str, Any]
    per_question: dict[str, dict[str, list[float]]]
    seconds: dict[str, float]
    # what the reranker counts about this run (passages graded or scored, unreadable answers,
    # cache hits), where it keeps a ``stats`` dict
    reranker_stats: dict[str, Any] | None = None


def evaluate_retrieval(dataset: EvalDataset, config: RetrievalEval, *, progress=None) -> list[PathResult]:
    out = []
    docs = [Document(cid, d.text, {"source": d.metadata.get("source", cid)})
            for cid, d in dataset.corpora.items()]
    for label, pipe in config.paths.items():
        t0 = time.perf_counter()
        pipe.add(docs)
        t_add = time.perf_counter() - t0
        chunks = list(pipe.index.chunks()) if isinstance(pipe.index, ListsChunks) else []
        by_corpus: dict[str, list[tuple[int, int]]] = {}
        for c in chunks:
            by_corpus.setdefault(c.doc_id, []).append((c.start, c.end))
        omegas = [omega(q.references, by_corpus.get(q.corpus_id, []))[0] for q in dataset.questions]
        per_q: dict[str, dict[str, list[float]]] = {}
        mean_hits: dict[str, float] = {}
        context_chars: dict[str, float] = {}
        questions = dataset.questions
        loop = progress(questions, f"retrieving {label}", len(questions)) if progress else questions
        answers: dict[int, list[list[Any]]] = {k: [] for k in config.ks}
        before = counts_of(pipe.reranker)
        for q in loop:
            for k in config.ks:
                answers[k].append(pipe.retrieve(q.text, k=k))
        for k in config.ks:
            vals = {m: [] for m in METRICS}
            for q, hits in zip(questions, answers[k]):
                r, p, iou = hit_scores(q, hits)
                vals["recall"].append(r)
                vals["precision"].append(p)
                vals["iou"].append(iou)
            vals["precision_omega"] = list(omegas)
            per_q[str(k)] = vals
            mean_hits[str(k)] = sum(map(len, answers[k])) / len(questions)
            context_chars[str(k)] = sum(h.chunk.end - h.chunk.start
                                        for hits in answers[k] for h in hits) / len(questions)
        tokens = [c.metadata.get("tokens") for c in chunks]
        have_tokens = bool(chunks) and all(isinstance(t, int) for t in tokens)
        out.append(PathResult(
            label=label,
            config=pipe.to_config(),
            n_chunks=len(chunks),
            mean_chunk_chars=(sum(e - s for c in by_corpus.values() for s, e in c) / len(chunks)
                              if chunks else 0.0),
            mean_hits=mean_hits,
            mean_context_chars=context_chars,
            mean_chunk_tokens=sum(tokens) / len(tokens) if have_tokens else None,
            results=aggregate(per_q, [q.corpus_id for q in questions]),
            per_question=per_q,
            seconds={"index": t_add, "retrieve": time.perf_counter() - t0 - t_add},
            reranker_stats=counts_since(pipe.reranker, before),
        ))
    return out


def hit_scores(question: Any, hits: Sequence[Any]) -> tuple[float, float, float]:
    """``(recall, precision, iou)`` of one question's hits: exact character spans, hits from
    other corpora counted in the precision and IoU denominators only."""
    own = [(h.chunk.start, h.chunk.end) for h in hits if h.chunk.doc_id == question.corpus_id]
    sizes = [h.chunk.end - h.chunk.start for h in hits]
    return retrieval_scores(question.references, own, sizes)


def markdown(results: list[PathResult], config: RetrievalEval) -> str:
    lines = ["Exact mode, character units; mean ± population std, x100.", ""]
    for k in config.ks:
        lines += [f"**k = {k}**", "",
                  "| path | chunks | chunk tokens | mean hits | chars/question | recall | precision "
                  "| IoU | precision_Ω |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for r in results:
            cells = [f"{r.results[str(k)][m]['mean']:.1f} ± {r.results[str(k)][m]['std']:.1f}"
                     for m in ("recall", "precision", "iou", "precision_omega")]
            tok = "" if r.mean_chunk_tokens is None else f"{r.mean_chunk_tokens:.1f}"
            lines.append(f"| {r.label} | {r.n_chunks} | {tok} | {r.mean_hits[str(k)]:.1f} | "
                         f"{r.mean_context_chars[str(k)]:.0f} | " + " | ".join(cells) + " |")
        lines.append("")
    from ragkit.evaluation.report import counts_list

    lines += counts_list("**Reranker counts**:", [(r.label, r.reranker_stats) for r in results])
    return "\n".join(lines)
