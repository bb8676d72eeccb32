"""What the ``ragkit`` commands share: reading the config and the input files from the parsed
arguments, progress bars on stderr, size statistics, JSON output, and a hit as a source dict.

Holds no command and no argument parsing (``ragkit.cli``); it must not build a pipeline.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Iterable, Iterator, Sequence
from typing import Any


def source_dict(hit: Any) -> dict[str, Any]:
    """A hit as the CLI's --json and the server's ``ragkit.sources`` show it."""
    c = hit.chunk
    return {"id": c.id, "doc_id": c.doc_id, "source": c.metadata.get("source", c.doc_id),
            "start": c.start, "end": c.end, "score": hit.score, "text": c.text}


def print_json(data: Any) -> None:
    print(json.dumps(data, ensure_ascii=False, indent=2))


def tqdm_bar(items: Iterable[Any], desc: str, total: int) -> Iterator[Any]:
    from tqdm import tqdm

    yield from tqdm(items, desc=desc, total=total, file=sys.stderr)


DEFAULT_NAMES = {"chunker": "recursive", "embedder": "sentence-transformers", "index": "memory",
                 "generator": "transformers"}


def args_config(args: argparse.Namespace) -> dict[str, Any]:
    """The config file (or an empty one) with the overrides applied. An override of a section the
    file does not have (``-o chunker.chunk_size=64`` with no config) starts from the default
    component of that section."""
    from ragkit.config import apply_overrides, load_yaml

    data = load_yaml(args.config) if args.config else {}
    for item in args.override:
        section = item.partition("=")[0].split(".")[0]
        if section in DEFAULT_NAMES and "." in item.partition("=")[0] and section not in data:
            data[section] = {"name": DEFAULT_NAMES[section]}
    return apply_overrides(data, args.override)


def args_documents(args: argparse.Namespace, chunker: Any = None) -> list:
    """The documents under ``args.paths``: the files the chunker takes (its ``file_suffixes``,
    e.g. source files for the code chunker), else .txt/.md/.jsonl."""
    from ragkit.loaders import DEFAULT_SUFFIXES, load_documents

    problems: list = []
    docs = load_documents(
        args.paths, text_field=args.text_field,
        suffixes=args.suffixes or getattr(chunker, "file_suffixes", DEFAULT_SUFFIXES),
        on_error="skip" if args.skip_bad_files else "raise",
        **({"problems": problems} if args.skip_bad_files else {}),
    )
    if args.skip_bad_files and problems:
        print(f"ragkit: skipped {len(problems)} bad file(s) or line(s); see warnings above",
              file=sys.stderr)
    return docs


def progress(items: Sequence[Any], args: argparse.Namespace, desc: str, *, unit: str,
              total: int, weight=None) -> Iterator[Any]:
    if args.no_progress:
        yield from items
        return
    from tqdm import tqdm

    with tqdm(total=total, desc=desc, unit=unit, unit_scale=unit == "B", file=sys.stderr,
              disable=False) as bar:
        for item in items:
            yield item
            bar.update(weight(item) if weight else 1)


def describe_sizes(values: Iterable[int], unit: str) -> str:
    vals = sorted(values)
    p95 = vals[min(len(vals) - 1, int(0.95 * len(vals)))]
    return (f"min {vals[0]}  mean {statistics.fmean(vals):.1f}  median {statistics.median(vals):g}  "
            f"p95 {p95}  max {vals[-1]}  ({unit})")
