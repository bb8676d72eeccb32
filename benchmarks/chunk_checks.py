"""Checks of a chunker's output against its source text, for the chunking benchmarks: chunks over
the token budget, empty ones, offsets that do not give back the text, non-whitespace characters
no chunk covers, and replacement characters the source does not have.

It measures nothing and times nothing; a check never changes the chunks it looks at.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np


_SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)


def _non_space(text: str) -> np.ndarray:
    code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    return ~np.isin(code, _SPACE_CODES)


def check(text: str, pieces: Sequence[Any], enc: Any, *, budget: int) -> dict[str, int]:
    """Over-budget (more than ``budget`` tokens of ``enc``), empty and badly offset chunks, and
    characters lost, for one document. ``pieces`` have ``text`` and ``start``/``end`` (or None)."""
    sizes = [len(ids) for ids in enc.encode_ordinary_batch([p.text for p in pieces])]
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
            unlocated += int(_non_space(core).sum())
            continue
        covered[at] += 1
        covered[at + len(core)] -= 1
        made_fffd -= core.count("\ufffd")
        cursor = at + 1
    uncovered = int((_non_space(text) & (np.cumsum(covered)[:-1] == 0)).sum())
    return {
        "chunks": len(pieces),
        "over_budget": sum(n > budget for n in sizes),
        "max_tokens": max(sizes, default=0),
        "empty": sum(not p.text for p in pieces),
        "bad_offsets": bad_offsets,
        "chars_lost": uncovered + unlocated,
        "replacement_chars": made_fffd,
    }
