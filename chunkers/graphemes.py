"""Grapheme clusters for the chunkers: where clusters start (found without walking the whole text
cluster by cluster), whether an offset is on a boundary, and trimming a span's whitespace without
splitting a cluster.

Pure functions of the text: nothing here knows about tokens, sizes or chunks.
"""

from __future__ import annotations

import functools

import numpy as np

Span = tuple[int, int]


def trim(text: str, start: int, end: int) -> Span:
    """``[start, end)`` without leading and trailing whitespace (an all-whitespace span collapses
    to an empty one). ``start`` and ``end`` must be grapheme cluster boundaries; so are the
    results: a whitespace character that shares a cluster with a non-space one (a space carrying
    a combining mark, a space after a prepended mark) is kept rather than split off."""
    if start < end and not text[start].isspace() and not text[end - 1].isspace():
        return start, end  # the common case, nothing to trim
    s, e = start, end
    while s < e and text[s].isspace():
        s += 1
    while e > s and text[e - 1].isspace():
        e -= 1
    if start < s < e and not text[s].isascii() and _cluster_end(text, s - 1, e) > s:
        s -= 1  # text[s - 1] is whitespace and opens the cluster of text[s]
    if s < e < end and not text[e - 1].isascii():
        e = _cluster_end(text, e - 1, end)  # text[e - 1] may be a prefix of the space after it
    return s, e


def _cluster_end(text: str, pos: int, endpos: int) -> int:
    import regex

    return regex.match(r"\X", text, pos=pos, endpos=endpos).end()


def grapheme_starts(text: str) -> np.ndarray | None:
    """Char offsets where grapheme clusters start, or ``None`` when every offset is one."""
    inside = inside_clusters(text)
    if len(inside) == 0:
        return None
    return np.setdiff1d(np.arange(len(text), dtype=np.int64), inside, assume_unique=True)


def on_boundary(starts: np.ndarray | None, pos: int) -> bool:
    """Whether ``pos`` (``< len(text)``) starts a grapheme cluster, given ``grapheme_starts``."""
    if starts is None:
        return True
    i = int(np.searchsorted(starts, pos))
    return i < len(starts) and int(starts[i]) == pos


# Characters that can join the character before or after them into one grapheme cluster: every
# rule of UAX #29 that forbids a break has one of these on a side of it (CR LF; Hangul L, V, T,
# LV, LVT; Extend, ZWJ and SpacingMark after; Prepend before; regional indicator pairs; and the
# emoji ZWJ and Indic conjunct sequences, whose joiners are ZWJ and Extend). Between two other
# characters there is always a boundary, so only the neighbourhood of these needs ``\X``.
_GLUE = (
    r"[\r\p{GCB=Extend}\p{GCB=ZWJ}\p{GCB=SpacingMark}\p{GCB=Prepend}\p{GCB=Regional_Indicator}"
    r"\p{GCB=L}\p{GCB=V}\p{GCB=T}\p{GCB=LV}\p{GCB=LVT}]"
)


# Where glue other than CR lives: from U+0300 (the first combining mark) through the SMP, and the
# tags and variation selectors of plane 14 (tests/chunkers/test_chunker_base.py checks all of Unicode).
_GLUE_PLANES = ((0x300, 0x20000), (0xE0000, 0xE1000))


_NO_INSIDE = np.zeros(0, dtype=np.int64)


@functools.cache
def _glue_ranges() -> tuple[np.ndarray, np.ndarray]:
    """Glue code points as sorted half-open ranges ``[lo[i], hi[i])``, read off ``regex`` once."""
    import regex

    los: list[int] = []
    his: list[int] = []
    for first, stop in _GLUE_PLANES:
        chars = "".join(map(chr, range(first, stop)))
        for m in regex.finditer(_GLUE + "+", chars):
            los.append(first + m.start())
            his.append(first + m.end())
    return np.asarray(los, dtype=np.int64), np.asarray(his, dtype=np.int64)


def inside_clusters(text: str) -> np.ndarray:
    """Sorted char offsets that fall inside a grapheme cluster (not at its start): the offsets
    ``grapheme_starts`` leaves out, found without walking the whole text cluster by cluster."""
    if text.isascii():
        if "\r\n" not in text:
            return _NO_INSIDE
        data = np.frombuffer(text.encode("ascii"), dtype=np.uint8)
        return np.flatnonzero((data[:-1] == 13) & (data[1:] == 10)).astype(np.int64) + 1
    import regex

    code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
    maybe = np.flatnonzero((code >= _GLUE_PLANES[0][0]) | (code == 13))
    lo, hi = _glue_ranges()
    cp = code[maybe].astype(np.int64)
    k = np.searchsorted(lo, cp, side="right") - 1
    glue = maybe[(cp == 13) | ((k >= 0) & (cp < hi[np.maximum(k, 0)]))]
    if len(glue) == 0:
        return _NO_INSIDE
    # Regions bounded by sure boundaries: from the char before a run of glue to the char after
    # it, merged when they overlap (glue at most one char apart).
    first = np.flatnonzero(np.diff(glue, prepend=-3) > 2)
    region_lo = np.maximum(glue[first] - 1, 0)
    region_hi = np.minimum(glue[np.append(first[1:], len(glue)) - 1] + 2, len(text))
    inside: list[int] = []
    for a, b in zip(region_lo.tolist(), region_hi.tolist()):
        for m in regex.finditer(r"\X", text, pos=a, endpos=b):
            inside.extend(range(m.start() + 1, m.end()))
    return np.asarray(inside, dtype=np.int64) if inside else _NO_INSIDE
