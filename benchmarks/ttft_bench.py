"""Time to first token by KV-reuse mode, with the real SmolLM2-135M-Instruct on CPU.

Contexts of about 1k, 2k, 4k and 8k prompt tokens, made of chunks of the dev-split corpora
(data/chunking_eval/corpora, chunked by ragkit's ``recursive`` chunker at 256 cl100k
tokens) retrieved for a question of ``questions.csv`` (``hash`` embedder + memory index: a
deterministic ranking, not a good one; the context is the top chunks up to the size). For each
size and mode: the time from the question to the first token's id (prompt tokenization, store
reads, RoPE re-positioning, blending and the question prefill included; median of ``--repeat``),
with a warm chunk cache (every chunk's KV precomputed by ``warm``; for ``prefix`` the same prompt
was answered once, so its whole context is a cached exact prefix: its best case). The floor is a
forward over the question tokens alone on a ready cache. Quality is measured against the full
prefill (``none``): agreement of the first 32 greedy tokens (same token at the same position) and
KL(none || mode) of the first-token distribution, in nats, each averaged over the first
``--questions`` questions (each over its own context of the same size; times use the first).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ttft_bench.py [--repeat 3] [--sizes 1024 ...]
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkit.bench import offline  # noqa: E402

offline()  # before anything imports transformers
DATA = ROOT / "data" / "chunking_eval"
MODES = ("none", "prefix", "independent", "blend")

from kv_fidelity import context_for, corpus_ranker, kl  # noqa: E402  (same folder)


def ranker():
    """``rank(question) -> chunks``: the dev-split corpora, ``hash`` embedder + memory index (a
    deterministic ranking, not a good one)."""
    return corpus_ranker({"name": "memory"})


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096, 8192])
    ap.add_argument("--blend-ratio", type=float, default=0.15)
    ap.add_argument("--questions", type=int, default=5,
                    help="quality is averaged over the first N rows of questions.csv; "
                         "times are measured on the first")
    args = ap.parse_args()
    print("$ HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/ttft_bench.py " + " ".join(sys.argv[1:]))

    import torch

    from ragkit.generation.kv_store import TieredKVStore
    from ragkit.generation.transformers_backend import TransformersGenerator

    with open(DATA / "questions.csv", encoding="utf-8") as f:
        questions = [r["question"] for r in csv.DictReader(f)][: args.questions]
    question = questions[0]
    gen = TransformersGenerator(blend_ratio=args.blend_ratio,
                                kv_store=TieredKVStore(disk=False, max_memory_bytes=8 << 30))
    gen.lm  # load outside the timed region
    print(f"# {platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__} "
          f"({torch.get_num_threads()} threads), model {gen.model} float32 sdpa, "
          f"blend_ratio {args.blend_ratio}, median of {args.repeat}")
    print(f"# timed question: {question}")
    rank = ranker()
    chunks = rank(question)

    rows = []
    for size in args.sizes:
        texts = context_for(gen, question, chunks, size)
        layout = gen.layout(question, texts)
        t0 = time.perf_counter()
        gen.warm(texts)
        warm_s = time.perf_counter() - t0
        gen.first_logits(layout, "prefix")  # store the exact prefix chain once

        def ttft(mode: str) -> float:
            t = time.perf_counter()
            lay = gen.layout(question, texts)
            logits, _, _ = gen.first_logits(lay, mode)
            int(torch.argmax(logits))
            return time.perf_counter() - t

        def floor() -> float:
            from ragkit.generation import context

            with torch.inference_mode():
                kv, _ = context.independent_context(gen, layout, len(layout.ids) + 8)
            cache = context.buffer_cache(kv, layout.context_len)
            t = time.perf_counter()
            with torch.inference_mode():
                int(torch.argmax(gen.forward_ids(list(layout.question), cache, layout.context_len)))
            return time.perf_counter() - t

        times = {m: [] for m in MODES}
        times["floor"] = []
        for _ in range(args.repeat):  # interleaved, so a noisy moment hits every mode alike
            for m in MODES:
                times[m].append(ttft(m))
            times["floor"].append(floor())
        med = {m: statistics.median(v) for m, v in times.items()}
        quality = {m: ([], []) for m in MODES[1:]}
        for q in questions:  # quality: mean over the questions, each with its own context
            q_texts = texts if q == question else context_for(gen, q, rank(q), size)
            q_layout = gen.layout(q, q_texts)
            gen.warm(q_texts)
            ref_ids, ref_logits = gen.greedy_ids(q_layout, 32, "none")
            for m in MODES[1:]:
                ids, logits = gen.greedy_ids(q_layout, 32, m)
                quality[m][0].append(sum(a == b for a, b in zip(ids, ref_ids)) / 32)
                quality[m][1].append(kl(ref_logits, logits))
        quality = {m: (statistics.mean(a), statistics.mean(d)) for m, (a, d) in quality.items()}
        _, _, bstats = gen.first_logits(layout, "blend")
        rows.append((size, len(layout.ids), len(texts), warm_s, med, quality,
                     bstats.get("blend_recomputed", 0)))
        print(f"# {size}: {len(layout.ids)} tokens, {len(texts)} chunks, warm {warm_s:.1f} s, "
              f"ttft {', '.join(f'{m} {v:.3f}' for m, v in med.items())}", flush=True)

    print()
    print(f"quality: mean over {len(questions)} questions, each over its own retrieved context "
          "of the same size")
    print()
    print("| context | chunks | mode | TTFT s (median) | speed-up vs none | greedy-32 agreement"
          " | KL first token (nats) |")
    print("|---|---|---|---|---|---|---|")
    for size, n_tok, n_chunks, _, med, quality, n_blend in rows:
        for m in (*MODES, "floor"):
            agree, div = quality.get(m, (1.0, 0.0) if m == "none" else (None, None))
            q = "" if agree is None else f"{agree:.2f}"
            d = "" if div is None else f"{div:.4f}"
            label = f"{m} ({n_blend} tok recomputed)" if m == "blend" else m
            print(f"| {n_tok} | {n_chunks} | {label} | {med[m]:.3f} | "
                  f"{med['none'] / med[m]:.1f}x | {q} | {d} |")


if __name__ == "__main__":
    main()
