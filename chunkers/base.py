"""The chunker protocol and the span machinery the strategies share.

Every chunker returns chunks whose text is exactly ``doc.text[start:end]``, in document order,
with no leading or trailing whitespace, covering every non-whitespace character of the document,
and each at most ``chunk_size`` tokens of its tokenizer. The one exception to the size bound is a
single unbreakable unit that alone is larger than the budget: a token, or a character (an emoji,
a CJK ideograph) whose bytes span several tokens, or a grapheme cluster (a letter with combining
marks, a ZWJ emoji sequence) that no cut may split.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, runtime_checkable

import numpy as np

from ragkit.errors import ConfigError
from ragkit.tokenizers import Tokenizer
from ragkit.types import Chunk, Document

Span = tuple[int, int]


@runtime_checkable
class Chunker(Protocol):
    def chunk(self, doc: Document) -> list[Chunk]: ...


def check_size(chunk_size: int, overlap: int, *, overlap_unit: str = "tokens") -> None:
    """Shared ``__post_init__`` checks of a size budget and its overlap."""
    if isinstance(chunk_size, bool) or not isinstance(chunk_size, int) or chunk_size < 1:
        raise ConfigError(f"must be an int >= 1; got {chunk_size!r}", path="chunk_size")
    if isinstance(overlap, bool) or not isinstance(overlap, int) or overlap < 0:
        raise ConfigError(f"must be an int >= 0 ({overlap_unit}); got {overlap!r}", path="overlap")
    if overlap_unit == "tokens" and overlap >= chunk_size:
        raise ConfigError(
            f"must be smaller than chunk_size={chunk_size}; got {overlap}", path="overlap"
        )


def make_chunks(doc: Document, spans: Sequence[Span], tokens: Sequence[int]) -> list[Chunk]:
    """Chunks for ``spans`` of ``doc``, numbered in order, carrying the document's source."""
    meta = {"source": doc.metadata["source"]} if "source" in doc.metadata else {}
    return [
        Chunk(doc.id, s, e, doc.text[s:e], i, {**meta, "tokens": int(n)})
        for i, ((s, e), n) in enumerate(zip(spans, tokens, strict=True))
    ]


def trim(text: str, start: int, end: int) -> Span:
    """``[start, end)`` without leading and trailing whitespace (an all-whitespace span collapses
    to an empty one). ``start`` and ``end`` must be grapheme cluster boundaries; so are the
    results: a whitespace character that shares a cluster with a non-space one (a space carrying
    a combining mark, a space after a prepended mark) is kept rather than split off."""
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
    """Char offsets where grapheme clusters start, or ``None`` when every offset is one (ASCII)."""
    if text.isascii() and "\r\n" not in text:
        return None
    import regex

    return np.fromiter((m.start() for m in regex.finditer(r"\X", text)), dtype=np.int64)


def on_boundary(starts: np.ndarray | None, pos: int) -> bool:
    """Whether ``pos`` (``< len(text)``) starts a grapheme cluster, given ``grapheme_starts``."""
    if starts is None:
        return True
    i = int(np.searchsorted(starts, pos))
    return i < len(starts) and int(starts[i]) == pos


def cut_points(text: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Where ``text`` may be cut, and how many tokens lie before each cut.

    Returns ``(cuts, before)``: ascending char offsets starting with 0 and ending with
    ``len(text)``, each the start of a token and of a grapheme cluster; ``before[i]`` counts the
    tokens that start before ``cuts[i]``.
    """
    starts = np.asarray(tokenizer.token_starts(text), dtype=np.int64)
    cuts = np.unique(starts)
    graphemes = grapheme_starts(text)
    if graphemes is not None:
        cuts = np.intersect1d(cuts, graphemes, assume_unique=True)
    cuts = cuts[(cuts > 0) & (cuts < len(text))]
    cuts = np.concatenate(([0], cuts, [len(text)])).astype(np.int64)
    before = np.searchsorted(starts, cuts, side="left")
    before[-1] = len(starts)
    return cuts, before


def token_windows(
    text: str, lo: int, hi: int, tokenizer: Tokenizer, size: int, overlap: int = 0
) -> list[tuple[int, int, int]]:
    """Windows of at most ``size`` tokens over ``text[lo:hi]``, consecutive windows sharing up to
    ``overlap`` tokens. Returns trimmed, non-empty ``(start, end, tokens)`` triples in doc offsets.

    Each window is re-counted on its own text (BPE can count a cut-out piece differently) and
    shrunk until it fits; a single unit larger than ``size`` is split further where its own
    tokenization allows, else returned whole (the documented exception).
    """
    sub = text[lo:hi]
    cuts, before = cut_points(sub, tokenizer)
    last = len(cuts) - 1
    out: list[tuple[int, int, int]] = []
    prev_s, prev_e, prev_q = -1, -1, 0  # the last window kept (in ``sub``) and its end cut
    p = 0
    while p < last:
        q = int(np.searchsorted(before, before[p] + size, side="right")) - 1
        q = min(max(q, p + 1), last)
        while True:
            s, e = trim(sub, int(cuts[p]), int(cuts[q]))
            n = tokenizer.count(sub[s:e]) if e > s else 0
            if n <= size or q == p + 1:
                break
            q -= 1
        if s < e <= prev_e and p < prev_q:
            # the overlap left this window nothing new: start it where the last one ended instead
            p = prev_q
            continue
        if e > s:
            inner = _split_unit(sub, s, e, tokenizer, size) if n > size else None
            if inner is None:
                out.append((lo + s, lo + e, n))
            else:  # keep the parts not already inside the previous window
                out.extend((lo + a, lo + b, m) for a, b, m in inner if b > prev_e)
            prev_s, prev_e, prev_q = out[-1][0] - lo, out[-1][1] - lo, q
        if q == last:
            break
        nxt = int(np.searchsorted(before, before[q] - overlap, side="left"))
        after_prev = int(np.searchsorted(cuts, prev_s, side="right"))  # starts must increase
        p = min(max(nxt, after_prev, p + 1), q)
    return out


def _split_unit(
    sub: str, s: int, e: int, tokenizer: Tokenizer, size: int
) -> list[tuple[int, int, int]] | None:
    """An over-budget unit, tokenized on its own, may have cut points it lacked in context."""
    piece = sub[s:e]
    cuts, _ = cut_points(piece, tokenizer)
    if len(cuts) <= 2:
        return None
    return [(s + a, s + b, n) for a, b, n in token_windows(piece, 0, len(piece), tokenizer, size)]


def pack(
    text: str,
    pieces: Sequence[tuple[int, int, int]],
    size: int,
    count: Callable[[str], int],
    *,
    overlap_tokens: int = 0,
    overlap_pieces: int = 0,
) -> list[tuple[int, int, int]]:
    """Greedily merge adjacent ``(start, end, tokens)`` pieces into chunks of at most ``size``
    tokens. The pieces must tile the text (each starts where the previous ends, up to whitespace).

    A new chunk starts with the tail of the previous one: the most trailing pieces that fit in
    ``overlap_tokens`` tokens and number at most ``overlap_pieces`` (when that is > 0), never the
    whole previous chunk. Every chunk is re-counted exactly; one that is over budget gives its last
    pieces back to the next chunk.
    """
    # Trimmed, blank pieces dropped: then every chunk starts after and ends after the one before.
    pieces = [(s, e, k) for a, b, k in pieces for s, e in [trim(text, a, b)] if e > s]
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(pieces)
    carry: list[int] = []  # indices of the overlap pieces that open the next chunk
    while i < n:
        members = list(carry)
        total = sum(pieces[j][2] for j in members)
        while members and total + pieces[i][2] > size:  # room for at least one new piece
            total -= pieces[members.pop(0)][2]
        first_new = i
        while i < n and (i == first_new or total + pieces[i][2] <= size):
            members.append(i)
            total += pieces[i][2]
            i += 1
        while True:
            s, e = trim(text, pieces[members[0]][0], pieces[members[-1]][1])
            exact = count(text[s:e]) if e > s else 0
            if exact <= size:
                break
            if members[-1] > first_new:  # give the last new piece back
                members.pop()
                i -= 1
            elif members[0] < first_new:  # drop the overlap
                members.pop(0)
            else:  # one piece, over budget on its own: an unbreakable unit
                break
        if e > s:
            out.append((s, e, exact))
        carry = _overlap_tail(pieces, members, overlap_tokens, overlap_pieces) if i < n else []
    return out


def _overlap_tail(
    pieces: Sequence[tuple[int, int, int]], members: list[int], tokens: int, count: int
) -> list[int]:
    if tokens <= 0 and count <= 0:
        return []
    tail: list[int] = []
    used = 0
    for j in reversed(members[1:]):  # never the whole chunk, so every chunk makes progress
        if tokens > 0 and used + pieces[j][2] > tokens:
            break
        if count > 0 and len(tail) == count:
            break
        tail.insert(0, j)
        used += pieces[j][2]
    return tail
