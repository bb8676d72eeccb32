"""The chunker protocol and the span machinery the strategies share.

Every chunker returns chunks whose text is exactly ``doc.text[start:end]``, in document order,
with no leading or trailing whitespace, covering every non-whitespace character of the document,
and each at most ``chunk_size`` tokens of its tokenizer. The one exception to the size bound is a
single unbreakable unit that alone is larger than the budget: a token, or a character (an emoji,
a CJK ideograph) whose bytes span several tokens, or a grapheme cluster (a letter with combining
marks, a ZWJ emoji sequence) that no cut may split.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from ragkit.checks import check_int
from ragkit.errors import ConfigError
from ragkit.protocols import SplitsAtAsciiEdges, SplitsAtWordEnds
from ragkit.tokenizers import ASCII_EDGE, LAST_ASCII_EDGE, Tokenizer, ascii_edge
from ragkit.types import Chunk, Document
from ragkit.view import Chunks

Span = tuple[int, int]


@runtime_checkable
class Chunker(Protocol):
    def chunk(self, doc: Document) -> list[Chunk]: ...


# -- many documents, on every core ------------------------------------------------------------


class ChunkMany:
    """Mixin giving a chunker ``chunk_many(docs, workers=N)``: see ``chunk_many``."""

    def chunk_many(self, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
        return chunk_many(self, docs, workers=workers)


def chunk_many(chunker: Chunker, docs: Iterable[Document], *, workers: int = 1) -> list[list[Chunk]]:
    """Every document's chunks, one list per document in input order, on ``workers`` processes.

    ``workers=1`` chunks in this process. More workers start that many processes (``spawn``, so
    it works wherever Python runs and never forks a process holding Rust thread pools); each
    builds its own chunker from the chunker's config (``to_config``), not from a pickled object,
    so a chunker whose tokenizer or model is loaded lazily loads it once per worker. Documents go
    out in batches of roughly equal size and the chunks come back as spans rebuilt against the
    parent's documents, so the result is exactly ``[chunker.chunk(d) for d in docs]``: the same
    chunks, ids, offsets and metadata.

    A worker costs its start-up: ~1-2.5 s on a 2-core machine for the imports and the cl100k
    tokenizer's tables, while one process chunks 20 MB in ~2 s (benchmarks/chunk_workers.py: 2
    workers were 0.3-0.5x of 1 on 20 MB). So ``workers`` is an upper bound: a batch holds at
    least ``MIN_BATCH_CHARS`` (25 M chars), and a corpus of one batch (or one document: a
    document is never split) is chunked in this process.
    """
    return list(iter_chunk_many(chunker, docs, workers=workers))


def iter_chunk_many(
    chunker: Chunker, docs: Iterable[Document], *, workers: int = 1
) -> Iterator[list[Chunk]]:
    """``chunk_many`` lazily: each document's chunks as soon as its batch is done, in order."""
    check_workers(workers)
    docs = list(docs)
    batches = _batches(docs, workers)
    if len(batches) <= 1:
        for doc in docs:
            yield chunker.chunk(doc)
        return
    import concurrent.futures
    import multiprocessing

    from ragkit.config import to_config

    try:
        spec = to_config(chunker, "chunker")
    except TypeError:
        raise ConfigError(
            f"workers={workers} needs a chunker that is a config dataclass (a registered "
            f"chunker or a 'module:Class' one); got {type(chunker).__qualname__}; use workers=1",
            path="workers",
        ) from None
    with concurrent.futures.ProcessPoolExecutor(
        max_workers=min(workers, len(batches)),
        mp_context=multiprocessing.get_context("spawn"),
        initializer=_start_worker,
        initargs=(spec,),
    ) as pool:
        for batch, spans in zip(batches, pool.map(_chunk_batch, batches)):
            for doc, rows in zip(batch, spans, strict=True):
                yield [Chunk(doc.id, s, e, doc.text[s:e], i, meta) for s, e, i, meta in rows]


def check_workers(workers: Any, *, path: str = "workers") -> None:
    if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
        raise ConfigError(f"must be an int >= 1 (processes); got {workers!r}", path=path)


def cpu_count() -> int:
    """The cores this process may run on (its affinity where the OS tells it), at least 1."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


_BATCHES_PER_WORKER = 4  # several batches each, so one long document does not leave a core idle
MIN_BATCH_CHARS = 25_000_000  # from the 20 MB measurement; where 2 workers start to win is unmeasured
_MAX_BATCH_CHARS = 50_000_000


def _batches(docs: list[Document], workers: int) -> list[list[Document]]:
    """Consecutive runs of documents of about equal total length (all in one for one worker)."""
    if workers == 1:
        return [docs]
    total = sum(len(d.text) for d in docs)
    target = min(max(total // (workers * _BATCHES_PER_WORKER), MIN_BATCH_CHARS), _MAX_BATCH_CHARS)
    out: list[list[Document]] = [[]]
    size = 0
    for doc in docs:
        if out[-1] and size + len(doc.text) > target:
            out.append([])
            size = 0
        out[-1].append(doc)
        size += len(doc.text)
    return out


_WORKER_CHUNKER: Any = None


def _start_worker(spec: dict[str, Any]) -> None:
    global _WORKER_CHUNKER
    from ragkit.config import build

    _WORKER_CHUNKER = build("chunker", spec)


def _chunk_batch(batch: list[Document]) -> list[list[tuple[int, int, int, Any]]]:
    """Each document's chunks as ``(start, end, index, metadata)``: the text goes back only once,
    in the parent's copy of the document."""
    out = []
    for doc in batch:
        chunks = _WORKER_CHUNKER.chunk(doc)
        if any(c.doc_id != doc.id for c in chunks):
            raise RuntimeError(f"chunker returned chunks of another document than {doc.id!r}")
        out.append([(c.start, c.end, c.index, c.metadata) for c in chunks])
    return out


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
    meta = doc_metadata(doc)
    return Chunks((
        Chunk(doc.id, s, e, doc.text[s:e], i, {**meta, "tokens": int(n)})
        for i, ((s, e), n) in enumerate(zip(spans, tokens, strict=True))
    ), [doc])


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
    inside = _inside_clusters(text)
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


def _inside_clusters(text: str) -> np.ndarray:
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
        self.starts = np.asarray(tokenizer.token_starts(text), dtype=np.int64)
        self.inside = _inside_clusters(text)
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
        if len(starts) == 0:
            return np.array([0, n], dtype=np.int64), np.array([0, 0], dtype=np.int64)
        # the first token starting at each distinct offset (starts ascend)
        new = np.empty(len(starts), dtype=bool)
        new[0] = True
        np.not_equal(starts[1:], starts[:-1], out=new[1:])
        lo, hi = int(starts.searchsorted(1)), int(starts.searchsorted(n))  # inner offsets only
        if len(inside) == 0 and new[lo:hi].all():  # every inner start is a new offset, and a cut
            cuts = np.empty(hi - lo + 2, dtype=np.int64)
            cuts[0], cuts[-1] = 0, n
            cuts[1:-1] = starts[lo:hi]
            before = np.arange(lo - 1, hi + 1, dtype=np.int64)
            before[0], before[-1] = 0, len(starts)
            return cuts, before
        first = np.flatnonzero(new)
        at = starts[first]
        lo, hi = int(at.searchsorted(1)), int(at.searchsorted(n))
        at, first = at[lo:hi], first[lo:hi]
        if len(inside) and len(at):  # drop the offsets inside a grapheme cluster
            pos = at.searchsorted(inside)
            found = pos < len(at)
            pos = pos[found]
            drop = pos[at[pos] == inside[found]]
            at, first = np.delete(at, drop), np.delete(first, drop)
        cuts = np.concatenate(([0], at, [n])).astype(np.int64, copy=False)
        before = np.concatenate(([0], first, [len(starts)])).astype(np.int64, copy=False)
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
        return int(self.starts.searchsorted(end)) - int(self.starts.searchsorted(start))

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
    text: str, lo: int, hi: int, tokenizer: Tokenizer, size: int, overlap: int = 0
) -> list[tuple[int, int, int]]:
    """Windows of at most ``size`` tokens over ``text[lo:hi]``, consecutive windows sharing up to
    ``overlap`` tokens. Returns trimmed, non-empty ``(start, end, tokens)`` triples in doc offsets.

    Each window is counted as its own text (BPE can count a cut-out piece differently) and
    shrunk until it fits; a single unit larger than ``size`` is split further where its own
    tokenization allows, else returned whole (the documented exception).
    """
    sub = text[lo:hi]
    return [(lo + s, lo + e, n) for s, e, n in _windows(TokenIndex(sub, tokenizer), size, overlap)]


def _windows(index: TokenIndex, size: int, overlap: int) -> list[tuple[int, int, int]]:
    sub, cuts, before = index.text, index.cuts, index.before
    count = index.count
    last = len(cuts) - 1
    out: list[tuple[int, int, int]] = []
    prev_s, prev_e, prev_q = -1, -1, 0  # the last window kept and its end cut
    p = 0
    while p < last:
        q = int(before.searchsorted(before[p] + size, side="right")) - 1
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
        if q == last:
            break
        nxt = int(before.searchsorted(before[q] - overlap, side="left"))
        after_prev = int(cuts.searchsorted(prev_s, side="right"))  # starts must increase
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
) -> list[tuple[int, int, int]]:
    """``pack`` over ``index.text``, counting each chunk with ``index.count``."""
    return _pack(index.text, pieces, size, index.count, overlap_tokens, overlap_pieces)


def _pack(
    text: str,
    pieces: Sequence[tuple[int, int, int]],
    size: int,
    count: Callable[[int, int], int],
    overlap_tokens: int,
    overlap_pieces: int,
) -> list[tuple[int, int, int]]:
    # Blank pieces dropped: then every chunk (trimmed) starts after and ends after the one before.
    pieces = [p for p in pieces if p[1] > p[0] and not text[p[0] : p[1]].isspace()]
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
