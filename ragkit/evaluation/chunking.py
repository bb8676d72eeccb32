"""``ragkit eval chunking``: score chunkers by what retrieval over their chunks recovers.

All chunks of all corpora go into one exact cosine index; each question retrieves ``k`` chunks
(``k="min"``: as many as meet its excerpts, capped at 20) and is scored with Chroma's metrics
(``ragkit.evaluation.metrics``). Means and population standard deviations are reported x100,
overall and per corpus.

Optionally, ``quality_metrics: [boundary_clarity, stickiness]`` adds MoC's chunk-quality metrics,
computed with a language model (``llm``, default ``{name: transformers}``) on each corpus's
chunks, no questions needed (``ragkit.evaluation.quality``).

Two modes:

- ``exact`` (default): chunk spans are the chunker's own offsets; a chunk meets an excerpt only
  if they share a character.
- ``chroma-compat``: reproduces the reference code of Chroma's report, which places each chunk
  string at its first occurrence in the corpus after dropping a trailing ``.``, and counts a
  chunk that ends where an excerpt starts as meeting it.
"""

from __future__ import annotations

import re
import statistics
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from ragkit.checks import check_choice, check_int
from ragkit.config import COMPONENT_KIND, build, model_spec
from ragkit.errors import ConfigError, RagkitError
from ragkit.evaluation.data import EvalDataset
from ragkit.evaluation.metrics import omega, retrieval_scores
from ragkit.protocols import ChunksAndEmbeds, HasEmbedder, KeepsStats, TokenLogprobLLM

Span = tuple[int, int]
Progress = Callable[[Iterable[Any], str, int], Iterable[Any]]
METRICS = ("recall", "precision", "precision_omega", "iou")
MIN_CAP = 20


@dataclass(kw_only=True)
class ChunkingEval:
    """The evaluation config: which chunkers, which embedder, which ``k`` and conventions."""

    chunkers: dict[str, Any]
    embedder: Any = field(
        default_factory=lambda: {"name": "sentence-transformers"},
        metadata={COMPONENT_KIND: "embedder"},
    )
    ks: tuple[int | str, ...] = ("min", 5, 10)
    mode: Literal["exact", "chroma-compat"] = "exact"
    unit: Literal["char", "token"] = "char"
    unit_tokenizer: str = "cl100k"
    # MoC chunk-quality metrics (ragkit.evaluation.quality); none by default
    quality_metrics: tuple[Literal["boundary_clarity", "stickiness"], ...] = ()
    llm: Any = field(default=None, metadata={COMPONENT_KIND: "generator"})
    stickiness_k: float = 0.8
    stickiness_graph: Literal["incomplete", "complete"] = "incomplete"
    stickiness_max_distance: int | None = 1

    def __post_init__(self) -> None:
        if not isinstance(self.chunkers, Mapping) or not self.chunkers:
            raise ConfigError(
                "must map labels to chunker specs, e.g. {fixed-256: {name: fixed, chunk_size: 256}}",
                path="chunkers",
            )
        self.chunkers = {
            str(label): build("chunker", spec, path=f"chunkers.{label}")
            for label, spec in self.chunkers.items()
        }
        self.embedder = build("embedder", self.embedder, path="embedder")
        for label, chunker in self.chunkers.items():
            own = chunker.embedder if isinstance(chunker, HasEmbedder) else None
            if isinstance(chunker, ChunksAndEmbeds) and own is not None:
                if model_spec(own) != model_spec(self.embedder):
                    raise ConfigError(
                        f"embeds chunks with {model_spec(own)} but questions are embedded with "
                        f"{model_spec(self.embedder)}; give both the same model",
                        path=f"chunkers.{label}.embedder",
                    )
        ks = []
        for k in self.ks:
            if k == "min" or (isinstance(k, int) and not isinstance(k, bool) and k >= 1):
                ks.append(k if k == "min" else int(k))
            elif isinstance(k, str) and k.isdigit() and int(k) >= 1:
                ks.append(int(k))
            else:
                raise ConfigError(f"each k must be 'min' or an int >= 1; got {k!r}", path="ks")
        self.ks = tuple(ks)
        self._check_quality()

    def _check_quality(self) -> None:
        from ragkit.evaluation.quality import QUALITY_METRICS

        if isinstance(self.quality_metrics, str):
            self.quality_metrics = (self.quality_metrics,)
        for m in self.quality_metrics:
            if m not in QUALITY_METRICS:
                raise ConfigError(f"unknown metric {m!r}; choose from {', '.join(QUALITY_METRICS)}",
                                  path="quality_metrics")
        self.quality_metrics = tuple(dict.fromkeys(self.quality_metrics))
        k = self.stickiness_k
        if isinstance(k, bool) or not isinstance(k, int | float) or not -1e9 < k < 1:
            raise ConfigError(f"must be a number below 1 (edge weights are at most 1); got {k!r}",
                              path="stickiness_k")
        check_choice(self.stickiness_graph, "stickiness_graph", ("incomplete", "complete"),
                     what="graph")
        check_int(self.stickiness_max_distance, "stickiness_max_distance", min=1, null=True,
                  hint="all pairs")
        if self.quality_metrics and self.llm is None:
            self.llm = {"name": "transformers", "kv_store": None}
        if isinstance(self.llm, str | Mapping):
            self.llm = build("generator", self.llm, path="llm")
        if self.quality_metrics and not isinstance(self.llm, TokenLogprobLLM):
            raise ConfigError(
                f"{type(self.llm).__name__} has no token_logprobs() method, which "
                "quality_metrics need (per-token log-probabilities; the transformers generator "
                "has it)",
                path="llm",
            )


@dataclass
class ChunkerResult:
    label: str
    config: dict[str, Any]
    n_chunks: int
    mean_chunk_chars: float
    mean_chunk_tokens: float | None  # in the chunker's own tokenizer, where it reports one
    mean_chunk_units: float  # in the evaluation unit (chars or unit tokens)
    # results[k][metric] = {"mean", "std"}; results[k]["per_corpus"][corpus][metric] = {...}
    results: dict[str, Any]
    per_question: dict[str, dict[str, list[float]]]  # k -> metric -> one value per question
    seconds: dict[str, float]
    # MoC metrics when asked for: {"boundary_clarity": {mean, std, n, per_corpus}, "stickiness":
    # {mean, std, n, per_corpus, edges}, "lm_passes": int, "per_document": {...}}
    quality: dict[str, Any] | None = None
    # what a chunker counts about its own run (the LLM chunkers: LM calls, unreadable answers and
    # fallbacks), where it keeps a ``stats`` dict; counted over this evaluation's corpora only
    chunker_stats: dict[str, Any] | None = None


def evaluate_chunking(
    dataset: EvalDataset,
    config: ChunkingEval,
    *,
    cache: Any = None,
    progress: Progress | None = None,
) -> list[ChunkerResult]:
    """Run every chunker of ``config`` on ``dataset``; see the module docstring."""
    import time

    from ragkit.retrieval.cache import embed_with_cache

    touching = config.mode == "chroma-compat"
    corpus_ids = list(dataset.corpora)
    unit_map = _unit_maps(dataset, config) if config.unit == "token" else None
    q_vecs = _normalise(
        embed_with_cache(config.embedder, [q.text for q in dataset.questions], cache,
                         progress=progress, desc="embedding questions")
    )
    out: list[ChunkerResult] = []
    for label, chunker in config.chunkers.items():
        t0 = time.perf_counter()
        stats_before = counts_of(chunker)
        spans: list[Span] = []
        owners: list[str] = []
        texts: list[str] = []
        tokens: list[int] = []
        own_vecs: list[np.ndarray] = []  # from chunkers that embed their own chunks (late)
        # a bar per corpus: the LLM chunkers take minutes per corpus
        loop = progress(corpus_ids, f"chunking {label}", len(corpus_ids)) if progress else corpus_ids
        for cid in loop:
            doc = dataset.corpora[cid]
            if isinstance(chunker, ChunksAndEmbeds):
                chunks, v = chunker.chunk_and_embed(doc)
                own_vecs.append(np.asarray(v, dtype=np.float32))
            else:
                chunks = chunker.chunk(doc)
            for c in chunks:
                span = _locate_compat(doc.text, c.text, cid, label) if touching else (c.start, c.end)
                spans.append(span)
                owners.append(cid)
                texts.append(c.text)
                if "tokens" in c.metadata:
                    tokens.append(int(c.metadata["tokens"]))
        t_chunk = time.perf_counter() - t0
        chunker_stats = counts_since(chunker, stats_before)
        if not spans:
            raise RagkitError(f"chunker {label!r} produced no chunks for the dataset")
        if isinstance(chunker, ChunksAndEmbeds):
            vecs = _normalise(np.concatenate(own_vecs))
        else:
            vecs = _normalise(embed_with_cache(config.embedder, texts, cache, progress=progress,
                                               desc=f"embedding {label}"))
        t_embed = time.perf_counter() - t0 - t_chunk
        if unit_map is not None:
            spans = [_to_units(unit_map[o], s) for o, s in zip(owners, spans)]
            refs_of = [tuple(_to_units(unit_map[q.corpus_id], r) for r in q.references)
                       for q in dataset.questions]
        else:
            refs_of = [q.references for q in dataset.questions]
        per_q = _score(dataset, config, spans, owners, vecs, q_vecs, refs_of, touching)
        t_score = time.perf_counter() - t0 - t_chunk - t_embed
        quality = _quality(config, owners, texts, progress, label) if config.quality_metrics \
            else None
        seconds = {"chunk": t_chunk, "embed": t_embed, "score": t_score}
        if quality is not None:
            seconds["quality"] = time.perf_counter() - t0 - t_chunk - t_embed - t_score
        out.append(ChunkerResult(
            label=label,
            config=_spec(chunker),
            n_chunks=len(spans),
            mean_chunk_chars=statistics.fmean(len(t) for t in texts),
            mean_chunk_tokens=statistics.fmean(tokens) if len(tokens) == len(texts) else None,
            mean_chunk_units=statistics.fmean(e - s for s, e in spans),
            results=aggregate(per_q, [q.corpus_id for q in dataset.questions]),
            per_question=per_q,
            seconds=seconds,
            quality=quality,
            chunker_stats=chunker_stats,
        ))
    return out


def _quality(config: ChunkingEval, owners: list[str], texts: list[str], progress: Any,
             label: str) -> dict[str, Any]:
    """MoC's metrics over each corpus's chunks, in the order the chunker gave them."""
    from ragkit.evaluation.quality import chunk_quality

    docs: dict[str, list[str]] = {}
    for owner, text in zip(owners, texts):
        docs.setdefault(owner, []).append(text)
    result = chunk_quality(
        docs, config.llm, config.quality_metrics, k=float(config.stickiness_k),
        graph=config.stickiness_graph, max_distance=config.stickiness_max_distance,
        progress=progress, desc=f"quality {label}",
    )
    summary = result.summary()
    summary["per_document"] = {"boundary_clarity": result.boundary_clarity,
                               "stickiness": result.stickiness, "edges": result.edges}
    return summary


# -- scoring --------------------------------------------------------------------------------------


def _score(dataset, config, spans, owners, vecs, q_vecs, refs_of, touching):
    by_corpus: dict[str, list[int]] = {}
    for i, o in enumerate(owners):
        by_corpus.setdefault(o, []).append(i)
    sizes = np.array([e - s for s, e in spans])
    omegas, n_meet = [], []
    for q, refs in zip(dataset.questions, refs_of):
        w, n = omega(refs, [spans[i] for i in _near(spans, by_corpus.get(q.corpus_id, []), refs)],
                     touching)
        omegas.append(w)
        n_meet.append(n)
    need = max(min(MIN_CAP, max(n_meet)) if "min" in config.ks else 0,
               max((k for k in config.ks if k != "min"), default=0))
    need = min(need, len(spans))
    sims = q_vecs @ vecs.T  # (questions, chunks)
    top = np.argsort(-sims, axis=1, kind="stable")[:, :need]
    per_q: dict[str, dict[str, list[float]]] = {}
    cap = min(MIN_CAP, max(n_meet))
    for k in config.ks:
        vals: dict[str, list[float]] = {m: [] for m in METRICS}
        for qi, (q, refs) in enumerate(zip(dataset.questions, refs_of)):
            n = min(n_meet[qi], cap) if k == "min" else k
            got = top[qi, :n]
            own = [spans[i] for i in got if owners[i] == q.corpus_id]
            r, p, iou = retrieval_scores(refs, own, sizes[got].tolist(), touching)
            vals["recall"].append(r)
            vals["precision"].append(p)
            vals["iou"].append(iou)
            vals["precision_omega"].append(omegas[qi])
        per_q[str(k)] = vals
    return per_q


def _near(spans: Sequence[Span], idx: list[int], refs: Sequence[Span]) -> list[int]:
    """The chunks of a corpus that could meet an excerpt (a cheap prefilter)."""
    lo = min(s for s, _ in refs)
    hi = max(e for _, e in refs)
    return [i for i in idx if spans[i][1] >= lo and spans[i][0] <= hi]


def aggregate(per_q: dict[str, dict[str, list[float]]], corpus_of: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    corpora = sorted(set(corpus_of))
    for k, vals in per_q.items():
        entry: dict[str, Any] = {m: _stats(vals[m]) for m in METRICS}
        entry["per_corpus"] = {
            c: {m: _stats([v for v, o in zip(vals[m], corpus_of) if o == c]) for m in METRICS}
            for c in corpora
        }
        out[k] = entry
    return out


def counts_of(component: Any) -> dict[str, Any] | None:
    """A copy of the ``stats`` dict a component keeps about its own work, or ``None``."""
    if not isinstance(component, KeepsStats) or not isinstance(component.stats, dict):
        return None
    return dict(component.stats)


def counts_since(component: Any, before: dict[str, Any] | None) -> dict[str, Any] | None:
    """The component's counts now less ``before`` (``counts_of`` earlier): one run's share."""
    now = counts_of(component)
    if now is None:
        return None
    before = before or {}
    return {k: v - before.get(k, 0) if isinstance(v, int | float) else v for k, v in now.items()}


def _stats(values: list[float]) -> dict[str, float]:
    arr = np.asarray(values, dtype=np.float64) * 100
    return {"mean": float(arr.mean()), "std": float(arr.std())}


# -- spans ----------------------------------------------------------------------------------------


def _locate_compat(corpus: str, chunk_text: str, corpus_id: str, label: str) -> Span:
    """The reference code's placement: first occurrence after dropping one trailing '.', else a
    whitespace-insensitive, case-insensitive match."""
    target = chunk_text[:-1] if chunk_text.endswith(".") else chunk_text
    pos = corpus.find(target)
    if pos != -1:
        return pos, pos + len(target)
    words = re.sub(r"\s+", " ", target).strip().split()
    match = re.compile(r"\s*".join(re.escape(w) for w in words), re.IGNORECASE).search(corpus)
    if match is None:
        raise RagkitError(
            f"chroma-compat: chunk of {label!r} not found in corpus {corpus_id!r}: {chunk_text[:60]!r}"
        )
    return match.span()


def _unit_maps(dataset: EvalDataset, config: ChunkingEval) -> dict[str, np.ndarray]:
    from ragkit.tokenizers import load_tokenizer

    tok = load_tokenizer(config.unit_tokenizer)
    return {cid: np.asarray(tok.token_starts(doc.text), dtype=np.int64)  # int64 keys below
            for cid, doc in dataset.corpora.items()}


def _to_units(starts: np.ndarray, span: Span) -> Span:
    """A char span as token indices: the tokens that start inside it (at least one token)."""
    s = int(np.searchsorted(starts, span[0], side="right")) - 1
    e = int(np.searchsorted(starts, span[1], side="left"))
    return max(s, 0), max(e, max(s, 0) + 1)


def _normalise(vecs: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)
    return vecs / np.where(norms == 0, 1, norms)


def _spec(chunker: Any) -> dict[str, Any]:
    from ragkit.config import to_config

    return to_config(chunker, "chunker")
