"""Time to first token with vLLM's prefix cache: one chunk set asked about twice, 1st vs 2nd request.

For each context size, the chunk set is the first chunks of ``wikitexts.md`` (dev-split corpora in
data/chunking_eval; ragkit's ``recursive`` chunker at 200 SmolLM2 tokens) up to about
that many prompt tokens, in a seeded shuffled "rank" order. Request 1 asks question A over it in
that order; request 2 asks question B over the same chunks in another rank order. With
``order: canonical`` both prompts share the whole context, so request 2 reuses every full cache
block of it; with ``order: retrieval`` (same engine) they share only the instruction prefix. The
prefix cache is reset before each repetition, so request 1 is always cold. TTFT is from the call to
the first token's arrival (tokenization and the engine round trip included); median of
``--repeat``. ``num_cached_tokens`` is vLLM's count for request 2.

    bash scripts/setup_vllm.sh
    HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_prefix_bench.py [--repeat 3] [--eager]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkit.bench import offline  # noqa: E402

offline()  # before anything imports transformers
CORPUS = ROOT / "data" / "chunking_eval" / "corpora" / "wikitexts.md"
QUESTIONS = ("What is the main subject of the first passage?",
             "Which dates are mentioned in the context?")


def chunk_set(gen, size: int, seed: int) -> list:
    """Hits over the first chunks whose prompt stays within ``size`` tokens, in a shuffled order."""
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.types import Document, Hit

    doc = Document(CORPUS.name, CORPUS.read_text(encoding="utf-8"))
    chunks = RecursiveChunker(chunk_size=200, tokenizer=f"hf:{gen.model_dir}").chunk(doc)
    base = len(gen.layout(QUESTIONS[0], []).ids)
    picked, total = [], base
    for c in chunks:
        n = len(gen.layout(QUESTIONS[0], [c.text]).ids) - base
        if total + n > size:
            break
        picked.append(c)
        total += n
    order = random.Random(seed).sample(picked, len(picked))
    return [Hit(c, 1.0 - r / len(order), r) for r, c in enumerate(order)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--sizes", type=int, nargs="+", default=[1024, 2048, 4096])
    ap.add_argument("--eager", action="store_true", help="no torch.compile (faster start-up)")
    args = ap.parse_args()
    print("$ HF_HUB_OFFLINE=1 .venv-vllm/bin/python benchmarks/vllm_prefix_bench.py "
          + " ".join(sys.argv[1:]))

    import dataclasses

    import torch
    import vllm

    from ragkit.generation.vllm_backend import VLLMGenerator

    canonical = VLLMGenerator(max_model_len=max(args.sizes) + 64, max_new_tokens=8,
                              kv_cache_gib=1, enforce_eager=args.eager)
    t0 = time.perf_counter()
    llm = canonical.llm
    start_s = time.perf_counter() - t0
    by_rank = dataclasses.replace(canonical, order="retrieval")
    by_rank.__dict__.update(llm=llm, tokenizer=canonical.tokenizer, model_dir=canonical.model_dir)
    block = llm.llm_engine.vllm_config.cache_config.block_size
    print(f"# {platform.machine()} {os.cpu_count()} cpu, vllm {vllm.__version__}, torch "
          f"{torch.__version__}, SmolLM2-135M-Instruct {canonical.dtype}, "
          f"{'eager' if args.eager else 'torch.compile'}, block size {block}, "
          f"engine start {start_s:.1f} s")
    rows = []
    for size in args.sizes:
        for gen in (canonical, by_rank):
            first, second, cached, prompt = [], [], [], 0
            for rep in range(args.repeat):
                llm.reset_prefix_cache()
                hits = chunk_set(gen, size, seed=rep)
                other = random.Random(1000 + rep).sample(hits, len(hits))
                a = gen.generate(QUESTIONS[0], hits)
                b = gen.generate(QUESTIONS[1], other)
                first.append(a.timings["ttft_s"])
                second.append(b.timings["ttft_s"])
                cached.append(int(b.timings["num_cached_tokens"]))
                prompt = int(b.timings["prompt_tokens"])
                assert a.timings["num_cached_tokens"] == 0, a.timings  # reset: request 1 is cold
            f, s = statistics.median(first), statistics.median(second)
            rows.append((prompt, len(hits), gen.order, f, s, statistics.median(cached)))
    print()
    print("| prompt tokens | chunks | order | TTFT 1st request s | TTFT 2nd request s | "
          "1st / 2nd | num_cached_tokens (2nd) |")
    print("|---|---|---|---|---|---|---|")
    for prompt, n, order, f, s, c in rows:
        print(f"| {prompt} | {n} | {order} | {f:.3f} | {s:.3f} | {f / s:.1f}x | "
              f"{c:.0f} of {prompt} |")
    canonical.close()


if __name__ == "__main__":  # the engine core is a separate process: keep this guard
    main()
