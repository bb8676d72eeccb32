"""``ragkit serve`` under concurrent clients: requests/s, TTFT and latency by KV-reuse mode.

An index of the dev split's corpora (data/chunking_eval: ``recursive`` chunks of 200
all-MiniLM-L6-v2 tokens, MiniLM embeddings, memory index) is served by ``ragkit serve`` (a
subprocess, SmolLM2-135M-Instruct, a fresh chunk-KV store). N concurrent clients (the official
``openai`` async client, streaming) ask questions of ``questions.csv`` (the first ``--questions``,
spread over the corpora), each request with ``k`` chunks and ``max_tokens`` new tokens, for every
``kv_reuse`` mode (``none``, ``independent``, ``blend``, sent per request through ``extra_body``)
and N in ``--clients``. Before the measured runs every question is asked once per mode, so chunk
KVs are warm (what a long-running server sees). TTFT is measured by the client: request sent to
the first streamed text; latency to ``[DONE]``. ``server ttft`` is the generator's own TTFT from
the last chunk's ``ragkit.timings`` (prefill only, no queueing). Generation is serialised on the
one model (no batching), so at N clients a request waits for the ones before it.

Then the same with a writer: while N clients ask (``independent``), one more client adds
documents through ``POST /v1/documents`` (paragraphs of the corpora under new ids) as fast as
the server takes them; it checks 0 errors and that every cited source's text equals its
document's ``[start:end]``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/serve_bench.py [--clients 1 4 16] \
        [--questions 8] [--max-tokens 16] [--k 8] [--json runs/serve_bench.json]
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import json
import os
import platform
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkit.bench import offline  # noqa: E402

offline()  # before anything imports transformers
DATA = ROOT / "data" / "chunking_eval"
MODES = ("none", "independent", "blend")
CONFIG = {
    "chunker": {"name": "recursive", "chunk_size": 200, "overlap": 0,
                "tokenizer": "all-MiniLM-L6-v2"},
    "embedder": {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2"},
    "index": {"name": "memory"},
}
HASH_CONFIG = {
    "chunker": {"name": "recursive", "chunk_size": 200, "overlap": 0, "tokenizer": "whitespace"},
    "embedder": {"name": "hash", "dim": 256},
    "index": {"name": "memory"},
}


def questions(n: int) -> list[str]:
    """The first ``n`` questions of the dev split, taken round-robin over its corpora."""
    with open(DATA / "questions.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    by_corpus: dict[str, list[str]] = {}
    for row in rows:
        by_corpus.setdefault(row["corpus_id"], []).append(row["question"])
    out: list[str] = []
    while len(out) < n and any(by_corpus.values()):
        for qs in by_corpus.values():
            if qs and len(out) < n:
                out.append(qs.pop(0))
    return out


def corpus_texts() -> dict[str, str]:
    return {p.name: p.read_text(encoding="utf-8") for p in sorted((DATA / "corpora").glob("*.md"))}


def build_index(folder: Path, config: dict) -> None:
    from ragkit.pipeline import RAGPipeline
    from ragkit.types import Document

    if (folder / "pipeline.yaml").is_file():
        return  # built by an earlier run with the same --out
    pipe = RAGPipeline.from_config(config)
    pipe.add([Document(name, text, {"source": name}) for name, text in corpus_texts().items()])
    pipe.save(folder)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    values = sorted(values)
    return values[min(len(values) - 1, int(round(q * (len(values) - 1))))]


async def one_request(client, model: str, question: str, mode: str, args, texts: dict) -> dict:
    t0 = time.perf_counter()
    first = None
    final = None
    try:
        stream = await client.chat.completions.create(
            model=model, messages=[{"role": "user", "content": question}], stream=True,
            max_tokens=args.max_tokens, temperature=0,
            extra_body={"kv_reuse": mode, "k": args.k})
        async for chunk in stream:
            if first is None and chunk.choices and chunk.choices[0].delta.content:
                first = time.perf_counter()
            if chunk.choices and chunk.choices[0].finish_reason is not None:
                final = chunk.model_extra["ragkit"]
        end = time.perf_counter()
    except Exception as exc:  # counted, the run goes on
        return {"error": f"{type(exc).__name__}: {exc}"}
    if final is None:
        return {"error": "no final chunk"}
    bad = [s["id"] for s in final["sources"]
           if texts.get(s["doc_id"], "")[s["start"]:s["end"]] != s["text"]]
    if bad:
        return {"error": f"source text differs from its document span: {bad[:2]}"}
    t = final["timings"]
    return {"ttft": (first or end) - t0, "latency": end - t0, "server_ttft": t["ttft_s"],
            "computed": t["prefill_tokens_computed"], "reused": t["prefill_tokens_reused"]}


async def run_clients(url: str, model: str, qs: list[str], mode: str, n: int, args,
                      texts: dict, writer: bool = False) -> dict:
    import openai

    client = openai.AsyncOpenAI(base_url=url + "/v1", api_key=args.api_key, max_retries=0,
                                timeout=1800)
    total = max(n, len(qs))
    jobs = [qs[i % len(qs)] for i in range(total)]
    results: list[dict] = []
    adds = {"ok": 0, "errors": 0}
    stop = asyncio.Event()

    async def worker(c: int) -> None:
        for i in range(c, total, n):
            results.append(await one_request(client, model, jobs[i], mode, args, texts))

    async def add_documents() -> None:
        import httpx

        paragraphs = [(name, p) for name, text in corpus_texts().items()
                      for p in text.split("\n\n") if len(p) > 200]
        async with httpx.AsyncClient(timeout=600) as http:
            i = 0
            while not stop.is_set():
                name, para = paragraphs[i % len(paragraphs)]
                doc_id = f"added/{args.run_id}/{i}.md"
                texts[doc_id] = f"{para} (copy {i})"
                r = await http.post(url + "/v1/documents", json=[{"id": doc_id,
                                                                  "text": texts[doc_id]}],
                                    headers={"Authorization": f"Bearer {args.api_key}"})
                adds["ok" if r.status_code == 200 else "errors"] += 1
                i += 1

    t0 = time.perf_counter()
    writing = asyncio.create_task(add_documents()) if writer else None
    await asyncio.gather(*(worker(c) for c in range(n)))
    seconds = time.perf_counter() - t0
    if writing is not None:
        stop.set()
        await writing
    await client.close()
    ok = [r for r in results if "error" not in r]
    errors = [r["error"] for r in results if "error" in r]
    row = {
        "mode": mode, "clients": n, "requests": len(results), "seconds": seconds,
        "requests_per_s": len(ok) / seconds,
        "ttft_p50": pct([r["ttft"] for r in ok], 0.5), "ttft_p95": pct([r["ttft"] for r in ok], 0.95),
        "latency_p50": pct([r["latency"] for r in ok], 0.5),
        "latency_p95": pct([r["latency"] for r in ok], 0.95),
        "server_ttft_p50": pct([r["server_ttft"] for r in ok], 0.5),
        "reused_fraction": sum(r["reused"] for r in ok) / max(1.0, sum(r["reused"] + r["computed"]
                                                                     for r in ok)),
        "errors": len(errors), "error_examples": errors[:3],
    }
    if writer:
        row |= {"writer": True, "documents_added": adds["ok"], "add_errors": adds["errors"]}
    return row


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--clients", type=int, nargs="+", default=[1, 4, 16])
    p.add_argument("--questions", type=int, default=8)
    p.add_argument("--max-tokens", type=int, default=16)
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--modes", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--model", help="generator.model (default: the packaged SmolLM2)")
    p.add_argument("--embedder", choices=("minilm", "hash"), default="minilm")
    p.add_argument("--out", default="runs/serve_bench", help="index, KV store and server log")
    p.add_argument("--json", help="write the rows here")
    p.add_argument("--no-writer", action="store_true", help="skip the run with a writer")
    args = p.parse_args(argv)
    print("$ python benchmarks/serve_bench.py " + " ".join(argv if argv is not None else
                                                             sys.argv[1:]))
    from tests.serve_helpers import free_port, serve_subprocess, wait_ready

    out = Path(args.out)
    index = out / f"index-{args.embedder}"
    build_index(index, CONFIG if args.embedder == "minilm" else HASH_CONFIG)
    shutil.rmtree(out / "kv", ignore_errors=True)  # start with a cold chunk-KV store
    args.api_key = "bench-key"
    args.run_id = str(int(time.time()))
    port = free_port()
    extra = ["-o", f"generator.kv_store.path={out / 'kv'}", "--api-key", args.api_key,
             "--max-k", str(max(50, args.k))]
    if args.model:
        extra += ["-o", f"generator.model={args.model}"]
    proc = serve_subprocess(index, port, *extra, log=out / "server.log")
    url = f"http://127.0.0.1:{port}"
    rows: list[dict] = []
    try:
        wait_ready(url, timeout=900, proc=proc)
        import openai

        model = openai.OpenAI(base_url=url + "/v1", api_key=args.api_key).models.list().data[0].id
        qs = questions(args.questions)
        texts = corpus_texts()
        for mode in args.modes:  # warm: each question once, so chunk KVs are cached
            asyncio.run(run_clients(url, model, qs if mode != "none" else qs[:1], mode, 1, args,
                                    texts))
        for n in args.clients:
            for mode in args.modes:
                rows.append(asyncio.run(run_clients(url, model, qs, mode, n, args, texts)))
                print(json.dumps(rows[-1]), flush=True)
        if not args.no_writer:
            mode = "independent" if "independent" in args.modes else args.modes[0]
            n = max(args.clients)
            rows.append(asyncio.run(run_clients(url, model, qs, mode, n, args, texts,
                                                writer=True)))
            print(json.dumps(rows[-1]), flush=True)
    finally:
        proc.terminate()
        proc.wait(60)
    print(table(rows, args))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps({"args": vars(args), "rows": rows,
                                               "machine": platform.platform(),
                                               "load": os.getloadavg()}, indent=1))
    return 0 if all(r["errors"] == 0 and r.get("add_errors", 0) == 0 for r in rows) else 1


def table(rows: list[dict], args) -> str:
    lines = [f"k={args.k}, max_tokens={args.max_tokens}, {args.questions} questions, load "
             f"average {os.getloadavg()[0]:.1f}", "",
             "| mode | clients | requests | req/s | TTFT p50 s | TTFT p95 s | latency p50 s | "
             "latency p95 s | server TTFT p50 s | prefill reused | errors |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        mode = r["mode"] + (f" + writer ({r['documents_added']} docs added, "
                            f"{r['add_errors']} add errors)" if r.get("writer") else "")
        lines.append(
            f"| {mode} | {r['clients']} | {r['requests']} | {r['requests_per_s']:.2f} | "
            f"{r['ttft_p50']:.2f} | {r['ttft_p95']:.2f} | {r['latency_p50']:.2f} | "
            f"{r['latency_p95']:.2f} | {r['server_ttft_p50']:.3f} | {r['reused_fraction']:.0%} | "
            f"{r['errors']} |")
    base = {r["clients"]: r for r in rows if r["mode"] == "none" and not r.get("writer")}
    lines.append("")
    for r in rows:
        b = base.get(r["clients"])
        if b is None or r["mode"] == "none" or r.get("writer"):
            continue
        lines.append(f"{r['mode']} vs none at {r['clients']} clients: TTFT p50 "
                     f"{b['ttft_p50'] / r['ttft_p50']:.1f}x lower, server TTFT p50 "
                     f"{b['server_ttft_p50'] / r['server_ttft_p50']:.1f}x, requests/s "
                     f"{r['requests_per_s'] / b['requests_per_s']:.2f}x")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
