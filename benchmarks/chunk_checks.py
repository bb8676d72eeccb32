"""Checks of a chunker's output against its source text, for the chunking benchmarks: chunks over
the token budget, empty ones, offsets that do not give back the text, non-whitespace characters
no chunk covers, and replacement characters the source does not have.

It times nothing (``traced_checks`` runs one untimed pass, for its memory peak and its output)
and a check never changes the chunks it looks at.
"""

from __future__ import annotations

import gc
import tracemalloc
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np


SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def is_space(text: str) -> np.ndarray:
    """(len(text),) bool: which characters are whitespace."""
    code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return np.isin(code, SPACE_CODES)


def size_counts(pieces: Sequence[Any], enc: Any, budget: int) -> dict[str, int]:
    """Chunks, those over ``budget`` tokens of ``enc``, the largest, and the empty ones."""
    sizes = [len(ids) for ids in enc.encode_ordinary_batch([p.text for p in pieces])]
    return {
        "chunks": len(pieces),
        "over_budget": sum(n > budget for n in sizes),
        "max_tokens": max(sizes, default=0),
        "empty": sum(not p.text for p in pieces),
    }


def traced_checks(contender: Any, docs: Sequence[tuple[str, str]], prepared: Sequence[Any],
                  check_doc: Callable[[str, Sequence[Any]], dict[str, int]]) -> dict[str, Any]:
    """One pass of a fresh chunker (``contender.make()``) over ``prepared`` under tracemalloc;
    ``check_doc(text, pieces)`` of every document summed (``max_tokens``: the largest), with
    the pass's peak traced memory as ``peak_mb``."""
    gc.collect()
    tracemalloc.start()
    chunk = contender.make()
    outputs = [chunk(doc) for doc in prepared]
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    totals: dict[str, int] = {}
    for (_, text), out in zip(docs, outputs):
        for key, value in check_doc(text, contender.pieces(out)).items():
            totals[key] = max(totals.get(key, 0), value) if key == "max_tokens" else \
                totals.get(key, 0) + value
    return {**totals, "peak_mb": peak / 1e6}


def check(text: str, pieces: Sequence[Any], enc: Any, *, budget: int) -> dict[str, int]:
    """Over-budget (more than ``budget`` tokens of ``enc``), empty and badly offset chunks, and
    characters lost, for one document. ``pieces`` have ``text`` and ``start``/``end`` (or None)."""
    covered = np.zeros(len(text) + 1, dtype=np.int64)
    unlocated = bad_offsets = made_fffd = 0
    cursor = 0
    for p in pieces:
        made_fffd += p.text.count("\ufffd")  # less those the source has where the chunk is found
        if p.start is not None:
            if text[p.start : p.end] == p.text:
                covered[p.start] += 1
                covered[p.end] -= 1
                made_fffd -= p.text.count("\ufffd")
                cursor = p.start + 1
                continue
            bad_offsets += 1
        core = p.text.strip("\ufffd")
        if not core.strip():
            continue
        at = text.find(core, cursor)
        if at < 0:
            unlocated += int((~is_space(core)).sum())
            continue
        covered[at] += 1
        covered[at + len(core)] -= 1
        made_fffd -= core.count("\ufffd")
        cursor = at + 1
    uncovered = int((~is_space(text) & (np.cumsum(covered)[:-1] == 0)).sum())
    return {
        **size_counts(pieces, enc, budget),
        "bad_offsets": bad_offsets,
        "chars_lost": uncovered + unlocated,
        "replacement_chars": made_fffd,
    }
