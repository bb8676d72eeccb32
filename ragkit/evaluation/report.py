"""Write an evaluation's results: a markdown table, a JSON file with per-question values, a plot."""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from ragkit.evaluation.chunking import METRICS, ChunkerResult, ChunkingEval
from ragkit.protocols import NamesModel

LABELS = {"recall": "recall", "precision": "precision", "iou": "IoU", "precision_omega": "precision_Ω"}


def markdown(results: Sequence[ChunkerResult], config: ChunkingEval, *, std: bool = True) -> str:
    """One table per k: a row per chunker, mean ± std x100 of each metric."""
    unit = "chars" if config.unit == "char" else f"{config.unit_tokenizer} tokens"
    lines = [f"Mode `{config.mode}`, unit: {unit}, embedder `{_embedder_name(config)}`; "
             "mean ± population std, x100.", ""]
    for k in config.ks:
        lines += [f"**k = {k}**", "",
                  "| chunker | chunks | mean chars | mean tokens | "
                  + " | ".join(LABELS[m] for m in METRICS) + " |",
                  "|---|---:|---:|---:|" + "---:|" * len(METRICS)]
        for r in results:
            cells = []
            for m in METRICS:
                s = r.results[str(k)][m]
                cells.append(f"{s['mean']:.1f} ± {s['std']:.1f}" if std else f"{s['mean']:.1f}")
            tokens = f"{r.mean_chunk_tokens:.1f}" if r.mean_chunk_tokens is not None else "-"
            lines.append(f"| {r.label} | {r.n_chunks} | {r.mean_chunk_chars:.1f} | {tokens} | "
                         + " | ".join(cells) + " |")
        lines.append("")
    lines += counts_list("**Chunker counts** (LM calls, unreadable answers, fallbacks):",
                         [(r.label, r.chunker_stats) for r in results])
    if config.quality_metrics:
        lines += quality_table(results, config)
    return "\n".join(lines)


def counts_list(title: str, rows: Sequence[tuple[str, dict[str, Any] | None]]) -> list[str]:
    """Markdown lines: ``title`` and a ``- label: key n, ...`` item per row with counts (none if
    no row has any)."""
    counted = [(label, stats) for label, stats in rows if stats]
    if not counted:
        return []
    return [title, "", *(f"- {label}: " + ", ".join(
        f"{k} {v:,}" if isinstance(v, int) else f"{k} {v}" for k, v in stats.items())
        for label, stats in counted), ""]


def quality_table(results: Sequence[ChunkerResult], config: ChunkingEval) -> list[str]:
    """MoC's metrics: boundary clarity (mean ± std over adjacent pairs, higher is better) and
    stickiness (mean structural entropy over documents, lower is better)."""
    lm = config.llm.model if isinstance(config.llm, NamesModel) else type(config.llm).__name__
    graph = (f"{config.stickiness_graph} graph, K = {config.stickiness_k}, pairs up to "
             f"{config.stickiness_max_distance or 'any'} apart")
    lines = [f"**Chunk quality (MoC), LM `{lm}`**: boundary clarity ↑ (ppl(q|d)/ppl(q), "
             f"adjacent chunks), stickiness ↓ (structural entropy; {graph})", "",
             "| chunker | pairs | boundary clarity | stickiness | edges | LM passes |",
             "|---|---:|---:|---:|---:|---:|"]
    for r in results:
        q = r.quality or {}
        bc, cs = q.get("boundary_clarity"), q.get("stickiness")
        lines.append(
            f"| {r.label} | {bc['n'] if bc else '-'} | "
            + (f"{bc['mean']:.3f} ± {bc['std']:.3f}" if bc else "-") + " | "
            + (f"{cs['mean']:.3f}" if cs else "-") + " | "
            + (f"{cs['edges']}" if cs else "-") + f" | {q.get('lm_passes', '-')} |")
    lines.append("")
    return lines


def to_json(results: Sequence[ChunkerResult], config: ChunkingEval, dataset_name: str,
            questions: Sequence[Any]) -> dict[str, Any]:
    from ragkit.config import to_config

    return {
        "dataset": dataset_name,
        "mode": config.mode,
        "unit": config.unit,
        "unit_tokenizer": config.unit_tokenizer if config.unit == "token" else None,
        "embedder": to_config(config.embedder, "embedder"),
        "ks": [str(k) for k in config.ks],
        "quality_metrics": list(config.quality_metrics),
        "quality_llm": _llm_spec(config.llm),
        "questions": [{"question": q.text, "corpus_id": q.corpus_id} for q in questions],
        "runs": [asdict(r) for r in results],
    }


def plot(results: Sequence[ChunkerResult], config: ChunkingEval, path: Path) -> Path:
    """Recall and IoU at k (5 if evaluated, else the first k) against mean chunk size."""
    from ragkit._deps import require

    matplotlib = require("matplotlib", extra="plot", component="the evaluation plot")
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    k = "5" if 5 in config.ks else str(config.ks[0])
    unit = "chars" if config.unit == "char" else f"{config.unit_tokenizer} tokens"
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    for ax, metric in zip(axes, ("recall", "iou")):
        for r in results:
            x, y = r.mean_chunk_units, r.results[k][metric]["mean"]
            ax.scatter([x], [y], s=36)
            ax.annotate(r.label, (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
        ax.set_xlabel(f"mean chunk size ({unit})")
        ax.set_ylabel(f"{LABELS[metric]}@{k} (x100)")
        ax.grid(alpha=0.3)
    fig.suptitle(f"Chunkers on one index, {config.mode} mode")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def write(results: Sequence[ChunkerResult], config: ChunkingEval, out_dir: str | Path,
          dataset: Any, *, with_plot: bool = True) -> dict[str, Path]:
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {"markdown": out / "results.md", "json": out / "results.json"}
    paths["markdown"].write_text(markdown(results, config) + "\n", encoding="utf-8")
    paths["json"].write_text(
        json.dumps(to_json(results, config, dataset.name, dataset.questions), indent=1) + "\n",
        encoding="utf-8",
    )
    if with_plot:
        paths["plot"] = plot(results, config, out / "recall_iou_vs_size.png")
    return paths


def _llm_spec(llm: Any) -> Any:
    import dataclasses

    from ragkit.config import to_config

    if llm is None:
        return None
    return to_config(llm, "generator") if dataclasses.is_dataclass(llm) else type(llm).__name__


def _embedder_name(config: ChunkingEval) -> str:
    e = config.embedder
    return e.model if isinstance(e, NamesModel) else type(e).__name__
