"""The prose corpus the chunking benchmarks share, assembled at run time from text already on the
machine: the GNU info manuals under /usr/share/info, then Python's documentation topics, cut at
a size in MB and repeated if the sources run out.

It must not download anything or write a file; the same size gives the same documents.
"""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path



INFO_DIR = Path("/usr/share/info")


def _sources() -> Iterator[tuple[str, str]]:
    """Prose on the machine, in a fixed order: info manuals, then Python's doc topics."""
    if INFO_DIR.is_dir():
        for path in sorted(INFO_DIR.glob("*.gz")):
            with gzip.open(path) as f:
                # backslashreplace: a stray invalid byte becomes "\\xNN" text
                yield f"info/{path.name[:-3]}", f.read().decode("utf-8", errors="backslashreplace")
    try:
        from pydoc_data.topics import topics
    except ImportError:  # some distributions strip pydoc_data
        return
    for key in sorted(topics):
        yield f"pydoc/{key}", topics[key]


def build_corpus(mb: float) -> list[tuple[str, str]]:
    """``(doc_id, text)`` pairs totalling ``mb`` * 10**6 bytes of UTF-8; the last one is cut."""
    target = int(mb * 1_000_000)
    docs: list[tuple[str, str]] = []
    total, rounds = 0, 0
    while total < target:
        rounds += 1
        before = total
        for doc_id, text in _sources():
            if not text.strip():
                continue
            data = text.encode("utf-8")
            if total + len(data) > target:
                text = data[: target - total].decode("utf-8", errors="ignore")
                data = text.encode("utf-8")
            if text.strip():
                docs.append((doc_id if rounds == 1 else f"{doc_id}#{rounds}", text))
                total += len(data)
            if total >= target:
                break
        if total == before:
            raise SystemExit("no prose found under /usr/share/info or in pydoc_data.topics")
    return docs
