"""See the chunks: a document's text with each chunk as a coloured span, as HTML.

``Chunks`` is a list of chunks that knows the text they were cut from; in Jupyter it renders
itself (``_repr_html_``). ``show(doc, chunkers=[...])`` puts several chunkers side by side on one
text, and ``page`` wraps either in a standalone HTML file (``ragkit chunk FILE --format html``).

How it is drawn: the text is cut at every chunk start and end into segments; a segment covered by
one chunk takes that chunk's colour, one covered by several (chunkers with ``overlap``) is striped
in their colours, one covered by none (whitespace between chunks) stays plain. Each chunk starts
with a dark bar and its number and ends with a thin bar; hovering a segment shows the id, token
count and length of every chunk that covers it (the ``title`` attribute). Everything from the
document, chunk ids included, is escaped with ``html.escape``, so a text holding HTML or script
tags shows them as text; the page itself has no script and loads nothing (its
Content-Security-Policy forbids both).

Pure standard library: nothing here is imported by ``import ragkit`` until used.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from html import escape
from typing import Any

from ragkit.errors import ConfigError
from ragkit.protocols import Chunker
from ragkit.types import Chunk, Document

# Pastel backgrounds, far enough apart that neighbours are told apart (chunk i takes i % 8).
PALETTE = ("#ffd8a8", "#b2f2bb", "#a5d8ff", "#fcc2d7", "#ffec99", "#d0bfff", "#99e9f2", "#e9ecef")

CSS = """
.rk-view{font:13px/1.55 ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;color:#212529}
.rk-view .rk-doc{white-space:pre-wrap;overflow-wrap:anywhere;border:1px solid #dee2e6;
  border-radius:4px;padding:8px;margin:0 0 12px 0;background:#fff}
.rk-view .rk-head{font-family:system-ui,sans-serif;font-size:12px;color:#495057;margin:0 0 4px 0}
.rk-view .rk-head b{color:#212529}
.rk-view .rk-seg{border-radius:2px}
.rk-view .rk-start{border-left:2px solid #343a40;padding-left:1px}
.rk-view .rk-start::before{content:attr(data-start);font-size:9px;vertical-align:super;
  color:#495057;margin-right:1px}
.rk-view .rk-end{border-right:1px solid #868e96}
.rk-view .rk-gap{color:#adb5bd}
.rk-view .rk-cols{display:grid;gap:12px;align-items:start}
.rk-view .rk-cols .rk-doc{max-height:80vh;overflow:auto}
"""


class Chunks(list):
    """A list of chunks plus the texts of their documents, so it can draw itself.

    ``Chunks(chunks, docs)``: ``docs`` are the ``Document``s (or a ``{doc_id: text}`` mapping)
    the chunks come from. Without a document's text the view shows the chunks' own text, with
    what lies between them marked as a gap of so many characters. It compares equal to the plain
    list of the same chunks and pickles as one (the texts stay behind).
    """

    def __init__(self, chunks: Iterable[Chunk] = (), docs: Iterable[Document] | Mapping[str, str]
                 = ()) -> None:
        super().__init__(chunks)
        if isinstance(docs, Mapping):
            self.texts = dict(docs)
        else:
            self.texts = {d.id: d.text for d in docs}

    def __reduce__(self):  # noqa: D105 - pickle as a plain list: never ship the texts twice
        return list, (list(self),)

    def _repr_html_(self) -> str:
        return f"<style>{CSS}</style><div class=\"rk-view\">{self.html()}</div>"

    def html(self) -> str:
        """The chunks of each document over its text, as an HTML fragment (needs ``CSS``)."""
        by_doc: dict[str, list[Chunk]] = {}
        for c in self:
            by_doc.setdefault(c.doc_id, []).append(c)
        return "".join(
            _head(doc_id, chunks) + render(chunks, self.texts.get(doc_id))
            for doc_id, chunks in by_doc.items()
        )

    def page(self, title: str = "ragkit chunks") -> str:
        """A standalone HTML page of ``html()``."""
        return page(self.html(), title)


def render(chunks: Sequence[Chunk], text: str | None = None) -> str:
    """``<div class="rk-doc">`` with the chunks of one document drawn over ``text``.

    ``text`` is the document's text; ``None`` draws the chunks' own texts, gaps marked.
    """
    if text is not None:
        for c in chunks:
            if c.end > len(text) or text[c.start:c.end] != c.text:
                raise ValueError(f"chunk {c.id} is not text[{c.start}:{c.end}] of the text given")
    order = sorted(range(len(chunks)), key=lambda i: (chunks[i].start, chunks[i].end))
    ends = {0, len(text)} if text else set()
    cuts = sorted({p for c in chunks for p in (c.start, c.end)} | ends)
    out = ['<div class="rk-doc">']
    active: list[int] = []  # chunks covering the current segment, in start order
    nxt = 0
    for a, b in zip(cuts, cuts[1:]):
        while nxt < len(order) and chunks[order[nxt]].start <= a:
            active.append(order[nxt])
            nxt += 1
        active = [i for i in active if chunks[i].end > a]
        cover = [i for i in active if chunks[i].end >= b]  # all of them: b is the next cut
        if not cover:
            if text is not None:
                out.append(escape(text[a:b]))
            else:
                out.append(f'<span class="rk-gap" title="{b - a} characters between chunks">'
                           " \u2026 </span>")
            continue
        first = chunks[cover[0]]
        piece = first.text[a - first.start:b - first.start]
        out.append(_segment(piece, [chunks[i] for i in cover], a, b))
    out.append("</div>")
    return "".join(out)


def _segment(piece: str, cover: list[Chunk], a: int, b: int) -> str:
    colours = [PALETTE[c.index % len(PALETTE)] for c in cover]
    if len(colours) == 1:
        style = f"background:{colours[0]}"
    else:  # overlap: stripes of every covering chunk's colour
        step = 5
        stops = ",".join(f"{col} {k * step}px {(k + 1) * step}px" for k, col in enumerate(colours))
        style = f"background:repeating-linear-gradient(135deg,{stops})"
    classes = ["rk-seg"]
    attrs = [f'data-chunks="{" ".join(str(c.index) for c in cover)}"']
    begun = [c for c in cover if c.start == a]
    if begun:
        classes.append("rk-start")
        attrs.append(f'data-start="{"/".join(str(c.index) for c in begun)}"')
    if any(c.end == b for c in cover):
        classes.append("rk-end")
    title = "\n".join(_describe(c) for c in cover)
    return (f'<span class="{" ".join(classes)}" style="{style}" title="{escape(title)}" '
            f'{" ".join(attrs)}>{escape(piece)}</span>')


def _describe(c: Chunk) -> str:
    size = c.metadata.get("tokens")
    size = f"{size} tokens" if size is not None else (
        f"{c.metadata['nws_chars']} non-whitespace chars" if "nws_chars" in c.metadata
        else "tokens not counted")
    return f"chunk {c.index}  {c.id}  {size}  {c.end - c.start} chars"


def _head(doc_id: str, chunks: Sequence[Chunk], label: str | None = None) -> str:
    tokens = [c.metadata["tokens"] for c in chunks if "tokens" in c.metadata]
    mean = f", mean {sum(tokens) / len(tokens):.0f} tokens" if tokens else ""
    name = f"<b>{escape(label)}</b> " if label else ""
    return (f'<div class="rk-head">{name}{escape(doc_id)}: {len(chunks)} chunks{mean}</div>')


@dataclass
class ChunkView:
    """Several chunkers' chunks of one document side by side (what ``show`` returns)."""

    doc: Document
    columns: list[tuple[str, list[Chunk]]]

    def html(self) -> str:
        cols = "".join(
            f"<div>{_head(self.doc.id, chunks, label)}{render(chunks, self.doc.text)}</div>"
            for label, chunks in self.columns
        )
        width = f"grid-template-columns:repeat({len(self.columns)},minmax(0,1fr))"
        return f'<div class="rk-cols" style="{width}">{cols}</div>'

    def _repr_html_(self) -> str:
        return f"<style>{CSS}</style><div class=\"rk-view\">{self.html()}</div>"

    def page(self, title: str | None = None) -> str:
        return page(self.html(), title or f"ragkit chunks: {self.doc.id}")

    def save(self, path: Any) -> None:
        """Write the standalone page to ``path``."""
        from pathlib import Path

        Path(path).write_text(self.page(), encoding="utf-8")


def show(doc: Document | str, chunkers: Sequence[Any] | Mapping[str, Any]) -> ChunkView:
    """Chunk ``doc`` with each of ``chunkers`` and view the results side by side.

    ``doc`` is a ``Document`` or a text. ``chunkers`` is a list of specs (``{"name": ...}`` or a
    name) or chunker objects, or a ``{label: spec}`` mapping to name the columns.
    """
    from ragkit.config import build, to_config

    if isinstance(doc, str):
        doc = Document("text", doc)
    elif not isinstance(doc, Document):
        raise TypeError(f"show takes a Document or a str; got {type(doc).__name__}")
    items = list(chunkers.items()) if isinstance(chunkers, Mapping) else [
        (None, spec) for spec in chunkers]
    if not items:
        raise ConfigError("give at least one chunker", path="chunkers")
    columns = []
    for n, (label, spec) in enumerate(items):
        path = f"chunkers.{label}" if label is not None else f"chunkers[{n}]"
        chunker = build("chunker", spec, path=path) if isinstance(spec, (str, Mapping)) else spec
        if not isinstance(chunker, Chunker):
            raise ConfigError(f"expected a chunker spec or an object with chunk(doc); got "
                              f"{type(spec).__name__}", path=path)
        if label is None and isinstance(spec, (str, Mapping)):
            label = _label({"name": spec} if isinstance(spec, str) else spec)  # as written
        elif label is None:
            try:
                label = _label(to_config(chunker, "chunker"))
            except (ConfigError, TypeError):
                label = type(chunker).__name__
        columns.append((str(label), list(chunker.chunk(doc))))
    return ChunkView(doc, columns)


def _label(spec: Mapping[str, Any]) -> str:
    rest = " ".join(f"{k}={v}" for k, v in spec.items() if k != "name")
    return f"{spec['name']} {rest}".strip()


def page(body: str, title: str = "ragkit chunks") -> str:
    """A standalone HTML page around a ``Chunks.html()`` or ``ChunkView.html()`` fragment: the
    style inline, no script, and a Content-Security-Policy that lets the page load nothing."""
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n"
        "<meta http-equiv=\"Content-Security-Policy\" "
        "content=\"default-src 'none'; style-src 'unsafe-inline'\">\n"
        f"<title>{escape(title)}</title>\n<style>body{{margin:16px}}{CSS}</style></head>\n"
        f"<body><div class=\"rk-view\">{body}</div></body></html>\n"
    )
