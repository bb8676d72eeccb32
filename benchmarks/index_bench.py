"""ragkit's vector indexes side by side: faiss HNSW, faiss IVF-PQ and Chroma, against exact search.

For each size, one run builds every index over the same synthetic vectors and queries it with the
same held-out queries. Each index is built in its own child process, so memory is measured
cleanly:

- build: wall time of ``index.add(chunks, vecs)`` (one call for faiss, so IVF-PQ trains once on
  everything with its default ``nlist = 4 sqrt(n)``; Chroma in slices of 50k, printing progress);
- query: wall time of one ``index.search(queries, k=10)`` call with all queries (after a one-query
  warm-up), per query; IVF-PQ is searched at each ``--ivf-nprobe`` on the same built index;
- memory: resident set size (RSS, from /proc/self/statm) after the build minus RSS before it,
  with the input vectors and the ``Chunk`` objects already allocated, so it is what the index
  itself holds in memory (not tracemalloc: faiss and Chroma allocate outside Python's heap);
  Chroma also writes its PersistentClient folder, whose size is the "disk" column;
- recall@10: the fraction of the exact top 10 (faiss ``IndexFlatIP`` through ``FaissIndex``
  ``kind="flat"``, measured in the same run) that each index returns.

Ratios are against exact flat search measured in the same run: build and memory as a multiple of
flat's, query as a speed-up over flat.

The vectors are a clustered Gaussian mixture, L2-normalised, in 384 dimensions (the size of
MiniLM embeddings): 1000 centres, each cluster spread along its own random 32-dimensional
subspace plus isotropic noise, so clusters overlap and nearest neighbours are neither trivial
nor meaningless. Queries are extra points drawn from the same mixture, never indexed.

HNSW runs with Chroma's defaults (M=16, ef_construction=100, ef_search=100) on both sides, so
faiss and Chroma are compared like for like; ``--hnsw-m`` and friends change the faiss side
(FaissIndex's own defaults, M=32 and ef_construction=200, build about 4x slower).

    .venv/bin/python benchmarks/index_bench.py --sizes 100000,1000000 --queries 1000
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

# faiss's OpenMP threads spin while they wait; on a shared machine that makes k-means many times
# slower. Set before faiss loads (the children inherit it).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import numpy as np  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

METHODS = ("flat", "hnsw", "ivfpq", "chroma")
LABELS = {"flat": "faiss flat (exact)", "hnsw": "faiss HNSW", "ivfpq": "faiss IVF-PQ",
          "chroma": "chroma (HNSW)"}


# -- data --------------------------------------------------------------------------------------


def mixture(n: int, d: int = 384, centres: int = 1000, rank: int = 32, spread: float = 1.75,
            noise: float = 0.5, seed: int = 0) -> np.ndarray:
    """``n`` unit vectors ``(n, d)`` float32 from a clustered Gaussian mixture (see the module
    docstring); the same arguments give the same vectors."""
    rng = np.random.default_rng(seed)
    mu = rng.standard_normal((centres, d), dtype=np.float32)  # (c, d)
    label = rng.integers(0, centres, n)  # (n,)
    x = np.empty((n, d), dtype=np.float32)
    for start in range(0, n, 100_000):  # isotropic noise, in slices to bound temporaries
        stop = min(n, start + 100_000)
        x[start:stop] = rng.standard_normal((stop - start, d), dtype=np.float32)
        x[start:stop] *= np.float32(noise)
    order = np.argsort(label, kind="stable")
    bounds = np.searchsorted(label[order], np.arange(centres + 1))
    for c in range(centres):
        rows = order[bounds[c] : bounds[c + 1]]
        basis = rng.standard_normal((rank, d), dtype=np.float32) * np.float32(spread / rank**0.5)
        x[rows] += mu[c] + rng.standard_normal((len(rows), rank), dtype=np.float32) @ basis
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


# -- one index, in a child process -------------------------------------------------------------


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def folder_bytes(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def child(args: argparse.Namespace) -> None:
    from ragkit.types import Chunk

    vecs = np.load(args.data)  # (n, d), read whole: allocated before the baseline
    queries = np.load(args.query_file)  # (q, d)
    n = len(vecs)
    chunks = [Chunk(f"doc{i // 10}", i, i, "", i) for i in range(n)]  # unique ids
    work = Path(args.work)
    if args.method == "chroma":
        from ragkit.retrieval.chroma_index import ChromaIndex

        index = ChromaIndex(path=str(work / "chroma"), batch_size=5000)
        len(index)  # connect (and create the folder) before the baseline
    else:
        from ragkit.retrieval.faiss_index import FaissIndex

        params = {}
        if args.method == "hnsw":
            params = {"hnsw_m": args.hnsw_m, "ef_construction": args.ef_construction,
                      "ef_search": args.ef_search}
        index = FaissIndex(kind=args.method, **params)
    gc.collect()
    base = rss_bytes()

    t0 = time.perf_counter()
    if args.method == "chroma":
        step = 50_000
        for start in range(0, n, step):
            index.add(chunks[start : start + step], vecs[start : start + step])
            if n >= 500_000 or start + step >= n:
                print(f"    chroma: {min(n, start + step):,}/{n:,} added, "
                      f"{time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    else:
        index.add(chunks, vecs)
    build_s = time.perf_counter() - t0
    gc.collect()
    memory = rss_bytes() - base

    untrained = args.method == "ivfpq" and not index.trained  # below train_size: exact flat
    result = {"build_s": build_s, "memory": memory, "query_s": {}, "untrained": untrained,
              "disk": folder_bytes(work / "chroma") if args.method == "chroma" else None}
    index.search(queries[:1], k=10)  # warm-up: first-call costs are not per-query costs
    probes = [int(p) for p in args.ivf_nprobe.split(",")] if args.method == "ivfpq" else [0]
    for nprobe in probes:  # IVF-PQ: the same index searched at several nprobe
        if nprobe:
            index.nprobe = nprobe
        t0 = time.perf_counter()
        hits = index.search(queries, k=10)
        result["query_s"][nprobe] = time.perf_counter() - t0
        found = np.full((len(queries), 10), -1, dtype=np.int64)
        for i, row in enumerate(hits):
            found[i, : len(row)] = [h.chunk.index for h in row]
        np.save(f"{args.out}.{nprobe}.npy", found)
    Path(args.out).write_text(json.dumps(result))


def run_child(method: str, data: Path, queries: Path, work: Path, args) -> dict:
    out = work / f"{method}.json"
    cmd = [sys.executable, __file__, "--child", method, "--data", str(data),
           "--query-file", str(queries), "--work", str(work), "--out", str(out),
           "--hnsw-m", str(args.hnsw_m), "--ef-construction", str(args.ef_construction),
           "--ef-search", str(args.ef_search), "--ivf-nprobe", args.ivf_nprobe]
    t0 = time.perf_counter()
    # The child's stderr is ours: its progress lines (and faiss's warnings) appear as they come.
    done = subprocess.run(cmd, stdout=subprocess.DEVNULL)
    if done.returncode != 0:
        raise SystemExit(f"{method} failed (exit code {done.returncode}); see its output above")
    result = json.loads(out.read_text())
    result["found"] = {int(p): np.load(f"{out}.{p}.npy") for p in result["query_s"]}
    result["query_s"] = {int(p): s for p, s in result["query_s"].items()}
    result["wall_s"] = time.perf_counter() - t0
    return result


# -- the run -----------------------------------------------------------------------------------


def recall_at_10(found: np.ndarray, truth: np.ndarray) -> float:
    return float(np.mean([len(set(f.tolist()) & set(t.tolist())) / 10
                          for f, t in zip(found, truth)]))


def mb(n: float) -> str:
    return f"{n / 2**20:,.0f}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="100000,1000000",
                        help="comma-separated numbers of indexed vectors")
    parser.add_argument("--queries", type=int, default=1000, help="held-out query vectors")
    parser.add_argument("--methods", default=",".join(METHODS),
                        help=f"comma-separated subset of {', '.join(METHODS)} (flat always runs)")
    parser.add_argument("--dim", type=int, default=384)
    parser.add_argument("--hnsw-m", type=int, default=16)
    parser.add_argument("--ef-construction", type=int, default=100)
    parser.add_argument("--ef-search", type=int, default=100)
    parser.add_argument("--ivf-nprobe", default="16,64",
                        help="IVF-PQ nprobe values to search with (16 is FaissIndex's default)")
    parser.add_argument("--workdir", default=None, help="scratch folder (default: a temp dir)")
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    parser.add_argument("--data", help=argparse.SUPPRESS)
    parser.add_argument("--query-file", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        args.method = args.child
        child(args)
        return

    sizes = [int(s) for s in args.sizes.split(",")]
    methods = ["flat"] + [m for m in args.methods.split(",") if m and m != "flat"]
    unknown = set(methods) - set(METHODS)
    if unknown:
        raise SystemExit(f"unknown methods {sorted(unknown)}; choose from {', '.join(METHODS)}")
    shown = sys.argv[1:] if argv is None else argv
    command = "python benchmarks/index_bench.py " + " ".join(shown)
    scratch = Path(args.workdir or tempfile.mkdtemp(prefix="ragkit-index-bench-"))
    scratch.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    tables = []
    try:
        for n in sizes:
            print(f"== {n:,} vectors, {args.queries:,} queries, dim {args.dim}", flush=True)
            t0 = time.perf_counter()
            everything = mixture(n + args.queries, d=args.dim)
            work = scratch / f"n{n}"
            work.mkdir(exist_ok=True)
            np.save(work / "vecs.npy", everything[:n])
            np.save(work / "queries.npy", everything[n:])
            del everything
            print(f"  data: {time.perf_counter() - t0:.0f} s", flush=True)
            results = {}
            for method in methods:
                print(f"  {LABELS[method]} ...", flush=True)
                results[method] = run_child(method, work / "vecs.npy", work / "queries.npy",
                                            work, args)
                r = results[method]
                print(f"  {LABELS[method]}: build {r['build_s']:.1f} s, query "
                      f"{min(r['query_s'].values()):.2f} s, RSS +{mb(r['memory'])} MB, "
                      f"child wall {r['wall_s']:.0f} s", flush=True)
            truth = results["flat"]["found"][0]
            tables.append(table(n, args, results, truth))
            shutil.rmtree(work, ignore_errors=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(scratch, ignore_errors=True)

    print()
    print(f"Command: `{command}`  ")
    print(f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python "
          f"{platform.python_version()}, faiss {_version('faiss')}, chromadb "
          f"{_version('chromadb')}; total {time.perf_counter() - started:.0f} s.  ")
    print(f"HNSW (faiss and Chroma): M={args.hnsw_m}, ef_construction={args.ef_construction}, "
          f"ef_search={args.ef_search}. IVF-PQ: FaissIndex defaults (nlist = 4 sqrt(n), "
          "pq_m = dim/8 = 48 bytes, refine_factor = 8 over fp16 vectors), searched at nprobe "
          f"{args.ivf_nprobe}. Load average at the end: "
          f"{', '.join(f'{x:.1f}' for x in os.getloadavg())} (other work shares the CPUs).")
    for t in tables:
        print()
        print(t)


def table(n: int, args, results: dict, truth: np.ndarray) -> str:
    flat = results["flat"]
    lines = [
        f"**{n:,} vectors x {args.dim} dims, {args.queries:,} queries, k=10**",
        "",
        "| index | build (s) | build vs flat | query (ms/query) | query speed-up vs flat "
        "| memory (MB, RSS delta) | memory vs flat | recall@10 |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    flat_q = flat["query_s"][0]
    for method, r in results.items():
        for nprobe, query_s in r["query_s"].items():
            name = LABELS[method] + (f", nprobe={nprobe}" if nprobe else "")
            name += " (untrained: exact)" if r.get("untrained") else ""
            per_query = query_s / args.queries * 1000
            disk = f" (+{mb(r['disk'])} on disk)" if r.get("disk") else ""
            lines.append(
                f"| {name} | {r['build_s']:.1f} | {r['build_s'] / flat['build_s']:.1f}x "
                f"| {per_query:.3f} | {flat_q / query_s:.1f}x "
                f"| {mb(r['memory'])}{disk} | {r['memory'] / flat['memory']:.2f}x "
                f"| {recall_at_10(r['found'][nprobe], truth):.3f} |"
            )
    return "\n".join(lines)


def _version(module: str) -> str:
    try:
        return __import__(module).__version__
    except Exception:  # not installed: the table says so
        return "not installed"


if __name__ == "__main__":
    main()
