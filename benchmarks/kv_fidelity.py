"""KV-reuse fidelity against full prefill, and its speed-up: the frontier of every mode/setting.

For each question (spread evenly over ``data/chunking_eval/questions.csv``) and context size, the
context is the question's top chunks by BM25 (ragkit's ``bm25`` index over the three dev-split
corpora, chunked by ``recursive`` at 256 cl100k tokens), in rank order, up to the size in prompt
tokens. Every chunk's KV is warmed first (``warm``; its time is reported), and for ``prefix`` the
same prompt was answered once (its best case: the whole context is a cached exact prefix).
Then, per question, each mode runs interleaved (``--repeat`` times): time to the first token's id
(wall clock and this process's CPU time), and, once, 32 greedy tokens from the same cache.
Fidelity against ``none`` (full prefill) on the same prompt:

- ``kl``: KL(none || mode) of the first-token distribution, nats;
- ``agree``: share of the 32 greedy tokens equal at the same position;
- ``diverge``: position of the first differing greedy token (32 when none differs);
- ``f1``: word-level F1 of the answer (greedy tokens up to the first end-of-turn, decoded)
  against the full-prefill answer.

A mode is ``kv_reuse[:field=value,...]``: generator fields set for that run, e.g.
``blend:blend_ratio=0.15`` (anything the generator's config takes). Speed-ups are medians over
questions of ``median TTFT(none) / median TTFT(mode)`` for that question (wall), and the same for
CPU time. Writes ``results.json``, ``results.md`` and ``frontier.png`` to ``--out``.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/kv_fidelity.py --questions 50 \\
        --contexts 2048,4096 --modes none,prefix,independent,blend:blend_ratio=0.15
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import re
import statistics
import sys
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ragkit.bench import offline  # noqa: E402

offline()  # before anything imports transformers
DATA = ROOT / "data" / "chunking_eval"
N_GREEDY = 32
# warm-up settings: today's (one chunk per forward, float32) first, the others against it
SETTINGS = "1:float32 8:float32 8:int8 8:k8v6 8:k8v4g"
DEFAULT_MODES = "none,prefix,independent,blend:blend_ratio=0.15"


def parse_mode(spec: str) -> tuple[str, dict]:
    """``blend:blend_ratio=0.1,kv_codec=int8`` -> ``("blend", {"blend_ratio": 0.1, ...})``."""
    name, _, rest = spec.partition(":")
    params = {}
    for item in filter(None, rest.split(",")):
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--modes: {item!r} in {spec!r} is not field=value")
        params[key] = json.loads(value) if re.fullmatch(r"[-0-9.eE+]+|true|false|null", value) \
            else value
    return name, params


def questions_of(n: int) -> list[str]:
    """``n`` questions spread evenly over the dev split (every corpus is represented)."""
    with open(DATA / "questions.csv", encoding="utf-8") as f:
        rows = [r["question"] for r in csv.DictReader(f)]
    step = len(rows) / n
    return [rows[int(i * step)] for i in range(min(n, len(rows)))]


def corpus_ranker(index: dict | None = None):
    """``rank(question) -> chunks``, best first: the dev-split corpora chunked by ``recursive``
    (256 cl100k tokens) in ``index`` (default BM25; the ``hash`` embedder feeds vector ones)."""
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.pipeline import RAGPipeline
    from ragkit.types import Document

    paths = sorted((DATA / "corpora").glob("*.md"))
    docs = [Document(p.name, p.read_text(encoding="utf-8")) for p in paths]
    pipe = RAGPipeline(chunker=RecursiveChunker(chunk_size=256), embedder={"name": "hash"},
                       index=index or {"name": "bm25"})
    pipe.add(docs)
    return lambda question: [h.chunk for h in pipe.retrieve(question, k=200)]


def spread(n: int) -> list[int]:
    """``0..n-1`` in an order whose every prefix is spread over the range (bit-reversal-like), so
    a run stopped early has measured questions from every corpus."""
    out, step = [], 1 << max(0, (n - 1).bit_length())
    while step:
        out += [i for i in range(0, n, step) if i not in out]
        step //= 2
    return out


def context_for(gen, question: str, chunks: list, size: int) -> list[str]:
    """The top chunks whose prompt (prefix + chunks + question) stays within ``size`` tokens."""
    base = len(gen.layout(question, []).ids)
    texts, total = [], base
    for c in chunks:
        n = len(gen.layout(question, [c.text]).ids) - base
        if total + n > size:
            continue
        texts.append(c.text)
        total += n
        if total > size - 64:
            break
    return texts


def kl(p_logits, q_logits) -> float:
    """KL(p || q) of the softmax distributions, nats."""
    p, q = p_logits.float().log_softmax(-1), q_logits.float().log_softmax(-1)
    return max(0.0, float((p.exp() * (p - q)).sum()))


def word_f1(a: str, b: str) -> float:
    ta, tb = re.findall(r"\w+", a.lower()), re.findall(r"\w+", b.lower())
    if not ta and not tb:
        return 1.0
    common = sum((Counter(ta) & Counter(tb)).values())
    if common == 0:
        return 0.0
    p, r = common / len(ta), common / len(tb)
    return 2 * p * r / (p + r)


def answer_text(gen, ids: list[int]) -> str:
    eos = gen._eos
    cut = next((i for i, t in enumerate(ids) if t in eos), len(ids))
    return gen.tokenizer.decode(ids[:cut], skip_special_tokens=True)


def run_question(gen, layout, modes, repeat: int) -> dict:
    """Times and greedy outputs of every mode on one prompt (the store already warm)."""
    import torch

    times = {label: ([], []) for label, _, _ in modes}
    outs = {}
    for r in range(repeat):
        for label, name, params in modes:
            with settings(gen, params):
                w0, c0 = time.perf_counter(), time.process_time()
                logits, cache, stats = gen.first_logits(layout, name)
                int(torch.argmax(logits))
                times[label][0].append(time.perf_counter() - w0)
                times[label][1].append(time.process_time() - c0)
                if r == 0:
                    ids = gen.decode_greedy(logits, cache, len(layout.ids), N_GREEDY)
                    outs[label] = (logits, ids, stats)
    return {"times": times, "outs": outs}


def fidelity(gen, ref, out) -> dict:
    ref_logits, ref_ids, _ = ref
    logits, ids, stats = out
    diverge = next((i for i, (a, b) in enumerate(zip(ids, ref_ids)) if a != b), N_GREEDY)
    return {
        "kl": kl(ref_logits, logits),
        "agree": sum(a == b for a, b in zip(ids, ref_ids)) / N_GREEDY,
        "diverge": diverge,
        "f1": word_f1(answer_text(gen, ids), answer_text(gen, ref_ids)),
        "recomputed": int(stats.get("blend_recomputed", 0)),
        "computed": int(stats["computed"]),
    }


def codec_bases(modes) -> dict[str, str]:
    """``label -> base label`` for every mode with a ``kv_codec`` whose same mode without it (the
    float32 entries) is in the run: their first-token KL is what the codec alone costs."""
    plain = {(name, tuple(sorted(p.items()))): label for label, name, p in modes}
    bases = {}
    for label, name, p in modes:
        if p.get("kv_codec", "float32") != "float32":
            rest = tuple(sorted((k, v) for k, v in p.items() if k != "kv_codec"))
            if (name, rest) in plain:
                bases[label] = plain[(name, rest)]
    return bases


def summarize(records: list[dict], labels: list[str]) -> list[dict]:
    rows = []
    for size in sorted({r["context"] for r in records}):
        recs = [r for r in records if r["context"] == size]
        for label in labels:
            ratios_w, ratios_c, fid = [], [], []
            for r in recs:
                t = r["times"]
                ratios_w.append(statistics.median(t["none"][0]) / statistics.median(t[label][0]))
                ratios_c.append(statistics.median(t["none"][1]) / statistics.median(t[label][1]))
                fid.append(r["fidelity"][label])
            mean = lambda key: statistics.mean(f[key] for f in fid)  # noqa: E731
            rows.append({
                "context": size, "mode": label, "questions": len(recs),
                "tokens": statistics.mean(r["tokens"] for r in recs),
                "speedup_wall": statistics.median(ratios_w),
                "speedup_cpu": statistics.median(ratios_c),
                "cpu_fraction": 1 / statistics.median(ratios_c),
                "ttft_s": statistics.median(statistics.median(r["times"][label][0]) for r in recs),
                "kl": mean("kl"), "kl_median": statistics.median(f["kl"] for f in fid),
                "agree": mean("agree"), "diverge": mean("diverge"), "f1": mean("f1"),
                "recomputed": mean("recomputed"),
                "kl_fp32": (statistics.mean(f["kl_fp32"] for f in fid)
                            if all("kl_fp32" in f for f in fid) else None),
            })
    return rows


def markdown(rows: list[dict]) -> str:
    lines = [
        "| context (mean tokens) | mode | speed-up vs none (wall) | CPU time / none | "
        "first-token KL (mean / median, nats) | greedy-32 agreement | first divergence | "
        "answer F1 vs none | tokens recomputed |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['context']} ({r['tokens']:.0f}) | {r['mode']} | {r['speedup_wall']:.1f}x | "
            f"{r['cpu_fraction']:.3f} | {r['kl']:.4f} / {r['kl_median']:.4f} | {r['agree']:.2f} | "
            f"{r['diverge']:.1f} | {r['f1']:.2f} | {r['recomputed']:.0f} |"
        )
    codecs = [r for r in rows if r.get("kl_fp32") is not None]
    if codecs:
        lines += ["", "| context | codec mode | first-token KL against the same mode on float32 "
                  "entries (mean, nats) |", "|---|---|---|"]
        lines += [f"| {r['context']} | {r['mode']} | {r['kl_fp32']:.4f} |" for r in codecs]
    return "\n".join(lines)


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(13, 5))
    markers = "os^Dv<>p*h"
    for i, size in enumerate(sorted({r["context"] for r in rows})):
        pts = [r for r in rows if r["context"] == size and r["mode"] != "none"]
        for ax, key, label in ((axes[0], "kl", "first-token KL vs full prefill (nats)"),
                               (axes[1], "agree", "greedy-32 agreement with full prefill")):
            ax.scatter([p["speedup_wall"] for p in pts], [max(p[key], 1e-4) for p in pts],
                       marker=markers[i % len(markers)], label=f"~{size} tokens")
            for p in pts:
                ax.annotate(p["mode"], (p["speedup_wall"], max(p[key], 1e-4)), fontsize=6,
                            xytext=(3, 3), textcoords="offset points")
            ax.set_xscale("log")
            ax.set_xlabel("TTFT speed-up vs none (wall, median)")
            ax.set_ylabel(label)
    axes[0].set_yscale("log")
    axes[0].legend()
    import textwrap

    fig.suptitle("\n".join(textwrap.wrap(title, 170)), fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=130)


def warm_bench(n: int, params: dict, out: Path, pairs: str = SETTINGS) -> str:
    """Warm the first ``n`` chunks of the corpora into a fresh disk store per setting: seconds,
    bytes on disk per token, and the time to read every entry back (fresh store: disk reads)."""
    import tempfile

    from ragkit.generation import context
    from ragkit.generation.kv_store import DiskKVStore, TieredKVStore
    from ragkit.generation.prompt import chunk_ids
    from ragkit.generation.transformers_backend import TransformersGenerator

    import torch

    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.types import Document

    chunker = RecursiveChunker(chunk_size=256)
    texts = [c.text for p in sorted((DATA / "corpora").glob("*.md"))
             for c in chunker.chunk(Document(p.name, p.read_text(encoding="utf-8")))][:n]
    lines = ["| setting | warm s (wall) | warm s (CPU) | chunks/s (wall) | "
             "vs one-per-forward fp32 (wall / CPU) | bytes per token (all entries / chunk "
             "entries) | read s (all entries, cold) |", "|---|---|---|---|---|---|---|"]
    base = None
    for batch, codec in (pair.split(":") for pair in pairs.split()):
        batch = int(batch)
        with tempfile.TemporaryDirectory() as tmp:
            gen = TransformersGenerator(kv_store=TieredKVStore(path=tmp), warm_batch=batch,
                                        kv_codec=codec, **params)
            gen.lm
            t0, c0 = time.perf_counter(), time.process_time()
            gen.warm(texts)
            secs, cpu = time.perf_counter() - t0, time.process_time() - c0
            files = list(Path(tmp).rglob("*.safetensors"))
            size = sum(f.stat().st_size for f in files)
            prefix = context.prefix_kv(gen, gen.layout("q", []).prefix)[0].shape[3]
            ids = [chunk_ids(gen.tokenizer, t, gen.chunk_format) for t in texts]
            tokens = sum(len(i) for i in ids)
            pre = gen.layout("q", []).prefix
            prefix_file = DiskKVStore(path=tmp).file(context.key(gen, pre, ""))
            chunk_bytes = size - prefix_file.stat().st_size
            fresh = TransformersGenerator(kv_store=TieredKVStore(path=tmp), kv_codec=codec,
                                          **params)
            fresh.__dict__["_loaded"] = gen._loaded
            t0 = time.perf_counter()
            with torch.inference_mode():
                pkv = context.prefix_kv(fresh, pre)[0]
                hits = context.chunk_entries(fresh, pre, pkv, ids)
            read = time.perf_counter() - t0
            if not all(hit for _, hit in hits):
                raise RuntimeError("warm entries were not found again")
        base = base or (secs, cpu)
        lines.append(f"| warm_batch={batch}, kv_codec={codec} | {secs:.1f} | {cpu:.1f} | "
                     f"{len(texts) / secs:.2f} | {base[0] / secs:.2f}x / {base[1] / cpu:.2f}x | "
                     f"{size / (tokens + prefix):,.0f} / {chunk_bytes / tokens:,.0f} | "
                     f"{read:.2f} |")
        print(lines[-1], flush=True)
    table = "\n".join(lines)
    (out / "warm.md").write_text(f"{len(texts)} chunks\n\n{table}\n")
    return table


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--questions", type=int, default=50)
    ap.add_argument("--contexts", default="2048,4096", help="prompt sizes in tokens, comma-separated")
    ap.add_argument("--modes", default=DEFAULT_MODES,
                    help="comma-free specs separated by ';' or ' ': kv_reuse[:field=value,...]; "
                         "'none' is always run first")
    ap.add_argument("--repeat", type=int, default=1, help="timed runs per question and mode")
    ap.add_argument("--model", default=None, help="generator model (default: the packaged SmolLM2)")
    ap.add_argument("--gen", default="{}", help="JSON of generator fields for every mode")
    ap.add_argument("--out", default="runs/kv_fidelity")
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    ap.add_argument("--order", choices=("rank", "reverse"), default="rank",
                    help="chunk order in the prompt: BM25 rank order, or reversed (best last, "
                         "next to the question)")
    ap.add_argument("--warm", type=int, default=0, metavar="N",
                    help="only measure warming the first N corpus chunks (batching, codecs)")
    ap.add_argument("--warm-settings", default=SETTINGS, metavar="'BATCH:CODEC ...'",
                    help="warm_batch:kv_codec pairs for --warm; the first is the baseline")
    args = ap.parse_args()
    cmd = "HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/kv_fidelity.py " + " ".join(
        f"'{a}'" if (" " in a or ";" in a) else a for a in sys.argv[1:])
    print("$ " + cmd, flush=True)

    import torch

    from ragkit.generation.kv_store import TieredKVStore
    from ragkit.generation.transformers_backend import TransformersGenerator

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.warm:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        print(warm_bench(args.warm, json.loads(args.gen), out, args.warm_settings))
        return
    specs = [s for s in re.split(r"[; ]+", args.modes) if s]
    if "none" not in specs:
        specs.insert(0, "none")
    modes = [(s, *parse_mode(s)) for s in specs]
    params = json.loads(args.gen)
    if args.model:
        params["model"] = args.model
    gen = TransformersGenerator(kv_store=TieredKVStore(disk=False, max_memory_bytes=3 << 30),
                                **params)
    gen.lm  # load outside the timed region
    sizes = [int(s) for s in args.contexts.split(",")]
    questions = questions_of(args.questions)
    head = (f"{platform.machine()} {os.cpu_count()} cpu, torch {torch.__version__} "
            f"({torch.get_num_threads()} threads), model {gen.model} {gen.dtype} {gen.attn}, "
            f"{len(questions)} questions, repeat {args.repeat}, load avg "
            f"{os.getloadavg()[0]:.1f} at start")
    print("# " + head, flush=True)
    rank = corpus_ranker()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    note = (f"{head}; contexts: BM25 top chunks (recursive, 256 cl100k tokens) in "
            f"{'rank' if args.order == 'rank' else 'reversed rank'} order")
    records, warm = [], []
    t_start = time.perf_counter()
    order = spread(len(questions))
    for done, qi in enumerate(order):
        question = questions[qi]
        chunks = rank(question)
        for size in sorted(sizes, reverse=True):  # the larger context warms most chunks once
            texts = context_for(gen, question, chunks, size)
            if args.order == "reverse":
                texts = texts[::-1]
            layout = gen.layout(question, texts)
            w0 = time.perf_counter()
            report = gen.warm(texts)
            if report["computed"]:
                warm.append((time.perf_counter() - w0) / report["computed"])
            for _, name, params in modes:  # entries a mode's own config would warm (its codec)
                if params:
                    with settings(gen, {**params, "kv_reuse": name}):
                        gen.warm(texts)
            if "prefix" in specs:
                gen.first_logits(layout, "prefix")  # store the exact prefix chain once
            res = run_question(gen, layout, modes, args.repeat)
            ref = res["outs"]["none"]
            fid = {label: fidelity(gen, ref, res["outs"][label]) for label in res["outs"]}
            for label, base in codec_bases(modes).items():  # the codec's own loss, directly
                fid[label]["kl_fp32"] = kl(res["outs"][base][0], res["outs"][label][0])
            records.append({"question": question, "context": size, "tokens": len(layout.ids),
                            "chunks": len(texts), "times": res["times"], "fidelity": fid,
                            "answer_none": answer_text(gen, ref[1])})
            brief = ", ".join(f"{k} kl={v['kl']:.3f} agree={v['agree']:.2f}"
                              for k, v in fid.items() if k != "none")
            print(f"# q{qi} ({done + 1}/{len(order)}) {size}: {len(layout.ids)} tok, {len(texts)} chunks | {brief} "
                  f"| {time.perf_counter() - t_start:.0f} s", flush=True)
            rows = summarize(records, [label for label, _, _ in modes])
            warm_s = statistics.median(warm) if warm else float("nan")
            write(out, cmd, f"{note}; warm: median {warm_s * 1000:.0f} ms per chunk", rows,
                  records)  # after every question: a stopped run keeps what it measured
    print(markdown(rows))


def write(out: Path, cmd: str, note: str, rows: list[dict], records: list[dict]) -> None:
    table = markdown(rows)
    n = len({r["question"] for r in records})
    note = f"{note}; {n} questions done"
    (out / "results.json").write_text(json.dumps(
        {"command": cmd, "note": note, "rows": rows, "records": records}, indent=1))
    (out / "results.md").write_text(f"    {cmd}\n\n{note}\n\n{table}\n")
    plot(rows, out / "frontier.png", note)


class settings:
    """Generator fields set for a block, restored after it."""

    def __init__(self, gen, params: dict) -> None:
        self.gen, self.params = gen, params

    def __enter__(self):
        self.old = {k: getattr(self.gen, k) for k in self.params}
        for k, v in self.params.items():
            setattr(self.gen, k, v)

    def __exit__(self, *exc) -> None:
        for k, v in self.old.items():
            setattr(self.gen, k, v)


if __name__ == "__main__":
    main()
