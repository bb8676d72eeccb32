"""The chunker protocol and the span machinery the strategies share: cut points, the token index
of a text, token windows and packing units into chunks. Grapheme clusters are in
``ragkit.chunkers.graphemes``, chunking many documents on many cores in ``ragkit.chunkers.parallel``
(both re-exported here). No strategy lives here.

Every chunker returns chunks whose text is exactly ``doc.text[start:end]``, in document order,
with no leading or trailing whitespace, covering every non-whitespace character of the document,
and each at most ``chunk_size`` tokens of its tokenizer. The one exception to the size bound is a
single unbreakable unit that alone is larger than the budget: a token, or a character (an emoji,
a CJK ideograph) whose bytes span several tokens, or a grapheme cluster (a letter with combining
marks, a ZWJ emoji sequence) that no cut may split.
"""

from __future__ import annotations

import array
import functools
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any

import numpy as np

from ragkit.checks import check_int
from ragkit.errors import ConfigError
from ragkit.protocols import Chunker  # noqa: F401  (the role, defined in the kernel; re-exported)
from ragkit.protocols import ChunksBySpans, SplitsAtAsciiEdges, SplitsAtWordEnds, provides
from ragkit.tokenizers import (
    ASCII_EDGE,
    LAST_ASCII_EDGE,
    Tokenizer,
    ascii_edge,
    load_tokenizer,
    offset_dtype,
)
from ragkit.types import Chunk, Document
from ragkit.view import Chunks
from ragkit.chunkers.graphemes import inside_clusters, trim
# re-exported: strategies and callers import these from here
from ragkit.chunkers.graphemes import grapheme_starts, on_boundary  # noqa: F401
from ragkit.chunkers.parallel import (  # noqa: F401
    ChunkMany,
    check_workers,
    chunk_many,
    cpu_count,
    iter_chunk_many,
)

Span = tuple[int, int]


def check_size(chunk_size: int, overlap: int, *, overlap_unit: str = "tokens") -> None:
    """Shared ``__post_init__`` checks of a size budget and its overlap."""
    check_int(chunk_size, "chunk_size", min=1)
    check_int(overlap, "overlap", min=0, hint=overlap_unit)
    if overlap_unit == "tokens" and overlap >= chunk_size:
        raise ConfigError(
            f"must be smaller than chunk_size={chunk_size}; got {overlap}", path="overlap"
        )


def doc_metadata(doc: Document) -> dict[str, Any]:
    """The metadata every chunk of ``doc`` starts from: all of the document's (its ``source``
    and whatever the caller gave it), so hits show it and index filters can use it. A chunker
    adds its own keys (``tokens``, a code chunk's ``scope``...) over these."""
    return dict(doc.metadata)


def make_chunks(doc: Document, spans: Sequence[Span], tokens: Sequence[int]) -> list[Chunk]:
    """Chunks for ``spans`` of ``doc``, numbered in order, carrying the document's metadata
    (``doc_metadata``); a ``Chunks`` list, which draws itself over ``doc``'s text in Jupyter."""
    return chunks_of(doc, ((s, e, n) for (s, e), n in zip(spans, tokens, strict=True)))


def chunks_of(doc: Document, triples: Iterable[tuple[int, int, int]]) -> list[Chunk]:
    """``make_chunks`` from ``(start, end, tokens)`` triples (what ``chunk_spans`` returns)."""
    return Chunks(_span_chunks(doc, triples), [doc])


def span_rows(doc: Document,
              triples: Iterable[tuple[int, int, int]]) -> Iterator[tuple[int, int, int, dict]]:
    """``(start, end, index, metadata)`` of the chunks of ``(start, end, tokens)`` triples: what
    a chunk is made of but its text (chunking workers send these back)."""
    meta = doc_metadata(doc)
    for i, (s, e, n) in enumerate(triples):
        yield s, e, i, {**meta, "tokens": int(n)}


def _span_chunks(doc: Document, triples: Iterable[tuple[int, int, int]]) -> Iterator[Chunk]:
    for s, e, i, meta in span_rows(doc, triples):
        yield Chunk(doc.id, s, e, doc.text[s:e], i, meta)


def iter_chunks(chunker: Any, doc: Document) -> Iterable[Chunk]:
    """``chunker.chunk(doc)``, but made one chunk at a time as they are taken when the chunker
    gives spans (``ChunksBySpans``): the chunks of a huge document are then never all held (their
    texts are copies: ~115 MB for a 50 MB file). The chunking itself, and any error it raises,
    happens here, before the first chunk is taken."""
    if not provides(chunker, ChunksBySpans):
        return chunker.chunk(doc)
    return _span_chunks(doc, chunker.chunk_spans(doc))


def cut_points(text: str, tokenizer: Tokenizer) -> tuple[np.ndarray, np.ndarray]:
    """Where ``text`` may be cut, and how many tokens lie before each cut.

    Returns ``(cuts, before)``: ascending char offsets starting with 0 and ending with
    ``len(text)``, each the start of a token and of a grapheme cluster; ``before[i]`` counts the
    tokens that start before ``cuts[i]``.
    """
    index = TokenIndex(text, tokenizer)
    return index.cuts, index.before


# A word end: an ASCII letter or digit followed by ASCII whitespace (see ragkit.tokenizers).
_WORD_END = re.compile(r"[A-Za-z0-9](?=[\t\n\x0b\x0c\r ])")
_LAST_WORD_END = re.compile(r".*[A-Za-z0-9](?=[\t\n\x0b\x0c\r ])", re.DOTALL)
_SHORT = 128  # chars: a span this short is simply tokenized


def find(arr: np.ndarray, x: int, side: str = "left") -> int:
    """``arr.searchsorted(x, side)`` for one Python int, as an int. The key is given in
    ``arr``'s own dtype (clamped to its range): numpy would otherwise convert a whole int32 array
    to int64 on every call (34 ms for 10 M offsets)."""
    try:
        key = arr.dtype.type(x)
    except OverflowError:  # beyond every offset the array can hold
        key = np.iinfo(arr.dtype).max if x > 0 else np.iinfo(arr.dtype).min
    return int(arr.searchsorted(key, side=side))


class TokenizerByName:
    """Mixin for a chunker with a ``tokenizer`` field (a name): ``self._tok``, the tokenizer it
    names, loaded on first use and kept."""

    tokenizer: str

    @functools.cached_property
    def _tok(self) -> Tokenizer:
        return load_tokenizer(self.tokenizer)


class TokenIndex:
    """``text`` tokenized once: where it may be cut, and the token count of any span of it.

    ``cuts`` and ``before`` are those of ``cut_points``. ``count(start, end)`` is the size of
    ``text[start:end]`` tokenized on its own, which is what a chunk's size means. When the
    tokenizer ``splits_at_word_ends`` it is assembled from this one tokenization: the whole
    text's tokens between two split points inside the span, plus the two short edges outside
    them tokenized alone. For a tokenizer that ``splits_at_ascii_edges`` the split points are
    the span's own ends when they are ASCII edges (no edge to tokenize), else the first and last
    ASCII edges inside it (an edge is then mostly one word); for one that only splits at word
    ends, the first and last word ends. Otherwise the span is tokenized again.
    """

    def __init__(self, text: str, tokenizer: Tokenizer) -> None:
        self.text = text
        self.tokenizer = tokenizer
        # int32 offsets below 2**31 chars: a 50 MB text has ~12 M tokens (48 MB, not 96)
        self.starts = np.asarray(tokenizer.token_starts(text), dtype=offset_dtype(len(text)))
        self.inside = inside_clusters(text)
        self._additive = (isinstance(tokenizer, SplitsAtWordEnds)
                          and tokenizer.splits_at_word_ends is True)
        self._edges = self._additive and (isinstance(tokenizer, SplitsAtAsciiEdges)
                                          and tokenizer.splits_at_ascii_edges is True)

    @property
    def cuts(self) -> np.ndarray:
        return self._cut_table[0]

    @property
    def before(self) -> np.ndarray:
        return self._cut_table[1]

    @functools.cached_property
    def _cut_table(self) -> tuple[np.ndarray, np.ndarray]:
        """``cuts`` and ``before``, built on first use (the chunkers that only count spans never
        need them)."""
        starts, inside, n = self.starts, self.inside, len(self.text)
        dt = starts.dtype  # offsets and counts both fit it: a text has no more tokens than chars
        if len(starts) == 0:
            return np.array([0, n], dtype=dt), np.array([0, 0], dtype=dt)
        # the first token starting at each distinct offset (starts ascend)
        new = np.empty(len(starts), dtype=bool)
        new[0] = True
        np.not_equal(starts[1:], starts[:-1], out=new[1:])
        lo, hi = find(starts, 1), find(starts, n)  # inner offsets only
        if len(inside) == 0 and new[lo:hi].all():  # every inner start is a new offset, and a cut
            cuts = np.empty(hi - lo + 2, dtype=dt)
            cuts[0], cuts[-1] = 0, n
            cuts[1:-1] = starts[lo:hi]
            before = np.arange(lo - 1, hi + 1, dtype=dt)
            before[0], before[-1] = 0, len(starts)
            return cuts, before
        first = np.flatnonzero(new)
        at = starts[first]
        lo, hi = find(at, 1), find(at, n)
        at, first = at[lo:hi], first[lo:hi]
        if len(inside) and len(at):  # drop the offsets inside a grapheme cluster
            pos = at.searchsorted(inside.astype(dt))
            found = pos < len(at)
            pos = pos[found]
            drop = pos[at[pos] == inside[found]]
            at, first = np.delete(at, drop), np.delete(first, drop)
        cuts = np.concatenate(([0], at, [n])).astype(dt, copy=False)
        before = np.concatenate(([0], first, [len(starts)])).astype(dt, copy=False)
        return cuts, before

    @property
    def has_clusters(self) -> bool:
        """Whether the text has a grapheme cluster of more than one char (else every offset is
        a cluster boundary)."""
        return len(self.inside) > 0

    def sure_fit(self, size: int) -> int:
        """A span of at most this many chars has at most ``size`` tokens, known without counting
        (``at_most``'s first bound: a char is at most four UTF-8 bytes, a token at least one);
        0 when the tokenizer gives no such bound."""
        return size // 4 if self._additive else 0

    def on_boundary(self, pos: int) -> bool:
        """Whether ``pos`` starts a grapheme cluster (or is the end of the text)."""
        if len(self.inside) == 0:
            return True
        i = int(np.searchsorted(self.inside, pos))
        return i == len(self.inside) or int(self.inside[i]) != pos

    def tokens_between(self, start: int, end: int) -> int:
        """Tokens of the whole text that start in ``[start, end)``: the span's size in context."""
        return find(self.starts, end) - find(self.starts, start)

    def count(self, start: int, end: int) -> int:
        """Tokens of ``text[start:end]`` tokenized on its own."""
        if end <= start:
            return 0
        a, b = self._split_points(start, end)
        if a < 0:
            return self.tokenizer.count(self.text[start:end])
        return self._edge(start, a) + self.tokens_between(a, b) + self._edge(b, end)

    def at_most(self, start: int, end: int, size: int) -> bool:
        """Whether ``count(start, end) <= size``, deciding from cheap bounds when they agree (a
        token holds at least one byte, a char at most four)."""
        if end <= start or (self._additive and 4 * (end - start) <= size):
            return True
        a, b = self._split_points(start, end)
        if a < 0:
            return self.tokenizer.count(self.text[start:end]) <= size
        inner = self.tokens_between(a, b)
        if inner + 4 * ((a - start) + (end - b)) <= size:
            return True
        if inner > size:
            return False
        return inner + self._edge(start, a) + self._edge(b, end) <= size

    def _edge(self, start: int, end: int) -> int:
        return self.tokenizer.count(self.text[start:end]) if end > start else 0

    def _split_points(self, start: int, end: int) -> tuple[int, int]:
        """Two points ``a <= b`` in ``[start, end]`` where the whole text splits as the span does:
        ``start`` and ``end`` themselves when they split the text (its ends, or ASCII edges),
        else the first and last ASCII edges (or word ends, for a tokenizer that only splits at
        those) inside; ``(-1, -1)`` when there are none or counting by them does not apply."""
        if not self._additive:
            return -1, -1
        text, n = self.text, len(self.text)
        a = start if start == 0 or (self._edges and ascii_edge(text, start)) else -1
        b = end if end == n or (self._edges and ascii_edge(text, end)) else -1
        if a >= 0 and b >= 0:
            return a, b
        if end - start < _SHORT:
            return -1, -1
        first, last = (ASCII_EDGE, LAST_ASCII_EDGE) if self._edges else (_WORD_END, _LAST_WORD_END)
        if a < 0:
            m = first.search(text, start, end + 1)  # the lookahead may read text[end]
            if m is None:
                return -1, -1
            a = m.end()
        if b < 0:
            m = last.match(text, a, end + 1)  # backtracks from the end: cheap near it
            b = m.end() if m is not None else a
        return a, b


def token_windows(
    text: str, lo: int, hi: int, tokenizer: Tokenizer, size: int, overlap: int = 0,
    report: Callable[[int], None] | None = None,
) -> list[tuple[int, int, int]]:
    """Windows of at most ``size`` tokens over ``text[lo:hi]``, consecutive windows sharing up to
    ``overlap`` tokens. Returns trimmed, non-empty ``(start, end, tokens)`` triples in doc offsets.

    Each window is counted as its own text (BPE can count a cut-out piece differently) and
    shrunk until it fits; a single unit larger than ``size`` is split further where its own
    tokenization allows, else returned whole (the documented exception). ``report``, if given,
    hears ``0`` once the text is tokenized, then the offset (in ``sub``) reached by each window.
    """
    sub = text[lo:hi]
    index = TokenIndex(sub, tokenizer)
    if report is not None:
        report(0)
    return [(lo + s, lo + e, n) for s, e, n in _windows(index, size, overlap, report)]


def _windows(index: TokenIndex, size: int, overlap: int,
             report: Callable[[int], None] | None = None) -> list[tuple[int, int, int]]:
    sub, cuts, before = index.text, index.cuts, index.before
    count = index.count
    last = len(cuts) - 1
    out: list[tuple[int, int, int]] = []
    prev_s, prev_e, prev_q = -1, -1, 0  # the last window kept and its end cut
    p = 0
    while p < last:
        q = find(before, int(before[p]) + size, "right") - 1
        q = min(max(q, p + 1), last)
        while True:
            s, e = trim(sub, int(cuts[p]), int(cuts[q]))
            n = count(s, e)
            if n <= size or q == p + 1:
                break
            q -= 1
        if s < e <= prev_e and p < prev_q:
            # the overlap left this window nothing new: start it where the last one ended instead
            p = prev_q
            continue
        if e > s:
            inner = _split_unit(sub, s, e, index.tokenizer, size) if n > size else None
            if inner is None:
                out.append((s, e, n))
            else:  # keep the parts not already inside the previous window
                out.extend((a, b, m) for a, b, m in inner if b > prev_e)
            prev_s, prev_e, prev_q = out[-1][0], out[-1][1], q
            if report is not None:
                report(prev_e)
        if q == last:
            break
        nxt = find(before, int(before[q]) - overlap)
        after_prev = find(cuts, prev_s, "right")  # starts must increase
        p = min(max(nxt, after_prev, p + 1), q)
    return out


def _split_unit(
    sub: str, s: int, e: int, tokenizer: Tokenizer, size: int
) -> list[tuple[int, int, int]] | None:
    """An over-budget unit, tokenized on its own, may have cut points it lacked in context."""
    piece = sub[s:e]
    index = TokenIndex(piece, tokenizer)
    if len(index.cuts) <= 2:
        return None
    return [(s + a, s + b, n) for a, b, n in _windows(index, size, 0)]


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
    return _pack(
        text, pieces, size, lambda s, e: count(text[s:e]), overlap_tokens, overlap_pieces
    )


def pack_indexed(
    index: TokenIndex,
    pieces: Sequence[tuple[int, int, int]],
    size: int,
    *,
    overlap_tokens: int = 0,
    overlap_pieces: int = 0,
    report: Callable[[int], None] | None = None,
) -> list[tuple[int, int, int]]:
    """``pack`` over ``index.text``, counting each chunk with ``index.count``; ``report``, if
    given, hears the offset reached after each chunk. ``pieces`` may also be three integer
    arrays ``(starts, ends, tokens)`` (``Columns``), which hold a huge document's pieces in 24
    bytes each instead of ~150 as tuples."""
    return _pack(index.text, pieces, size, index.count, overlap_tokens, overlap_pieces, report)


class Columns(tuple):
    """Pieces as three aligned sequences of Python ints ``(starts, ends, tokens)``, for
    ``pack_indexed`` (``Columns.of`` makes them ``array('q')`` from integer numpy arrays)."""

    __slots__ = ()

    def __new__(cls, starts: Any, ends: Any, tokens: Any) -> Columns:
        return super().__new__(cls, (starts, ends, tokens))

    @classmethod
    def of(cls, *arrays: np.ndarray) -> Columns:
        cols = []
        for x in arrays:
            col = array.array("q")
            col.frombytes(np.ascontiguousarray(x, dtype=np.int64).tobytes())
            cols.append(col)
        return cls(*cols)


def _columns(text: str, pieces: Any) -> tuple[array.array, array.array, array.array]:
    """The non-blank pieces as three ``array('q')`` (8 bytes a value, no int objects)."""
    cols = tuple(zip(*pieces)) if not isinstance(pieces, Columns) else pieces
    starts, ends, tokens = array.array("q"), array.array("q"), array.array("q")
    if not cols:
        return starts, ends, tokens
    for a, b, k in zip(*cols):
        if b > a and not text[a:b].isspace():
            starts.append(a)
            ends.append(b)
            tokens.append(k)
    return starts, ends, tokens


def _pack(
    text: str,
    pieces: Sequence[tuple[int, int, int]],
    size: int,
    count: Callable[[int, int], int],
    overlap_tokens: int,
    overlap_pieces: int,
    report: Callable[[int], None] | None = None,
) -> list[tuple[int, int, int]]:
    # Blank pieces dropped: then every chunk (trimmed) starts after and ends after the one before.
    first, last, sizes = _columns(text, pieces)
    out: list[tuple[int, int, int]] = []
    i, n = 0, len(first)
    carry: list[int] = []  # indices of the overlap pieces that open the next chunk
    while i < n:
        members = list(carry)
        total = sum(sizes[j] for j in members)
        while members and total + sizes[i] > size:  # room for at least one new piece
            total -= sizes[members.pop(0)]
        first_new = i
        while i < n and (i == first_new or total + sizes[i] <= size):
            members.append(i)
            total += sizes[i]
            i += 1
        while True:
            s, e = trim(text, first[members[0]], last[members[-1]])
            exact = count(s, e) if e > s else 0
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
            if report is not None:
                report(e)
        carry = _overlap_tail(sizes, members, overlap_tokens, overlap_pieces) if i < n else []
    return out


def _overlap_tail(
    sizes: Sequence[int], members: list[int], tokens: int, count: int
) -> list[int]:
    if tokens <= 0 and count <= 0:
        return []
    tail: list[int] = []
    used = 0
    for j in reversed(members[1:]):  # never the whole chunk, so every chunk makes progress
        if tokens > 0 and used + sizes[j] > tokens:
            break
        if count > 0 and len(tail) == count:
            break
        tail.insert(0, j)
        used += sizes[j]
    return tail
