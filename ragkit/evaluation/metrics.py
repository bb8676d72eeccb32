"""Chroma's chunking metrics over character (or token) spans.

From "Evaluating Chunking Strategies for Retrieval" (Smith & Troynikov, Chroma, 2024). For a
question with reference excerpts R_j and retrieved chunks C_i (spans in the question's corpus;
chunks of other corpora add only to the denominators):

- covered   = the union over i, j of C_i intersect R_j
- recall    = |covered| / sum_j |R_j|
- precision = |covered| / sum_i |C_i|          (a sum: overlapping chunks count twice)
- IoU       = |covered| / (sum_i |C_i| + |R left uncovered|)
- precision_omega: over every chunk of the corpus that meets an excerpt,
  |covered| / |union(those chunks) + R left uncovered|: the best precision possible at full recall.

``touching=True`` reproduces the reference code, where a chunk that ends exactly where an excerpt
starts (an empty intersection) "meets" it: such a chunk counts towards precision_omega's chunk set
and towards the number retrieved at ``k=min``. ragkit's default is ``touching=False``.
"""

from __future__ import annotations

from collections.abc import Sequence

Span = tuple[int, int]


def union(spans: Sequence[Span]) -> list[Span]:
    """Merge overlapping or contiguous spans."""
    out: list[Span] = []
    for s, e in sorted(spans):
        if out and s <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], e))
        else:
            out.append((s, e))
    return out


def total(spans: Sequence[Span]) -> int:
    return sum(e - s for s, e in spans)


def intersect(a: Span, b: Span, touching: bool) -> Span | None:
    s, e = max(a[0], b[0]), min(a[1], b[1])
    if s < e or (touching and s == e):
        return (s, e)
    return None


def subtract(spans: Sequence[Span], cut: Span) -> list[Span]:
    """``spans`` minus ``cut`` (each span keeps the parts outside it)."""
    out: list[Span] = []
    cs, ce = cut
    for s, e in spans:
        if e <= cs or s >= ce:
            out.append((s, e))
            continue
        if s < cs:
            out.append((s, cs))
        if e > ce:
            out.append((ce, e))
    return out


def _cover(chunks: Sequence[Span], refs: Sequence[Span], touching: bool):
    """(covered spans, uncovered reference parts, chunks that meet a reference)."""
    covered: list[Span] = []
    unused = list(refs)
    meeting: list[Span] = []
    for c in chunks:
        met = False
        for r in refs:
            x = intersect(c, r, touching)
            if x is not None:
                met = True
                covered.append(x)
                if x[0] < x[1]:
                    unused = subtract(unused, x)
        if met:
            meeting.append(c)
    return union(covered), unused, meeting


def retrieval_scores(
    refs: Sequence[Span],
    retrieved_own: Sequence[Span],
    retrieved_sizes: Sequence[int],
    touching: bool = False,
) -> tuple[float, float, float]:
    """``(recall, precision, iou)`` for one question.

    ``retrieved_own`` are the retrieved chunks from the question's own corpus; ``retrieved_sizes``
    the sizes of *all* retrieved chunks (any corpus), which make up the precision denominator.
    """
    covered, unused, _ = _cover(retrieved_own, refs, touching)
    num = total(covered)
    recall_den = total(refs)
    precision_den = sum(retrieved_sizes)
    iou_den = precision_den + total(unused)
    return (
        num / recall_den if recall_den else 0.0,
        num / precision_den if precision_den else 0.0,
        num / iou_den if iou_den else 0.0,
    )


def omega(refs: Sequence[Span], corpus_chunks: Sequence[Span], touching: bool = False) -> tuple[float, int]:
    """``(precision_omega, n_meeting)``: the best precision at full recall, and how many chunks of
    the corpus meet an excerpt (the number retrieved at ``k=min``)."""
    covered, unused, meeting = _cover(corpus_chunks, refs, touching)
    if not covered:
        return 0.0, len(meeting)
    den = total(union(list(meeting) + unused))
    return (total(covered) / den if den else 0.0), len(meeting)
