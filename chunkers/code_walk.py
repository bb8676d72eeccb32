"""The tree walk of the ``code`` chunker (cAST): from a tree-sitter syntax tree to pieces that
tile the text within the budget, the forced cuts between them, and the final chunks with their
``scope``/``node_types``/``syntax_error`` metadata. The rules it follows are in the module
docstring of ``ragkit.chunkers.code``.

It must not choose a language, load a parser or read the chunker's config: ``CodeChunker``
hands it the text, its UTF-8 bytes, a ``TokenIndex``, the budget and the language's ``Grammar``.
"""

from __future__ import annotations

import bisect
import re
from typing import Any

import numpy as np

from ragkit.chunkers.base import TokenIndex, doc_metadata, pack_indexed, token_windows, trim
from ragkit.chunkers.code_languages import Grammar
from ragkit.chunkers.recursive import after_each
from ragkit.types import Chunk, Document

GLUE = 4  # a run of code under 1/GLUE of the budget stays with the split node next to it
LEAF_SEPARATORS = ("\n\n", "\n", " ")
_GENERIC_SCOPE = re.compile(r"(.+)_(definition|declaration|item)\Z")  # other grammars' scopes
# statement and member lists: a cut between two of their children splits no statement
_LISTY = re.compile(r"(block|body|_list|^module|^program|^source_file|^translation_unit|"
                    r"compound_statement|^preproc_if|^preproc_ifdef)$")
_GLUE_TYPES = frozenset({"attribute_item", "decorator", "annotation", "marker_annotation"})
_NAME_CHARS = 120  # a scope label's name is cut to this many characters


class _Frame:
    """A node being walked: its children, the next one, and where its next piece starts."""

    __slots__ = ("children", "i", "lo", "pos", "hi", "size", "listy", "first", "scope", "error",
                 "glue_run", "fill")

    def __init__(self, children: list, lo: int, hi: int, size: int, listy: bool, first: int,
                 scope: tuple[str, ...], error: bool):
        self.children = children
        self.i = 0
        self.lo = lo
        self.pos = lo  # the next piece starts here (the gap before a child goes with it)
        self.hi = hi
        self.size = size  # its tokens (in context)
        self.listy = listy  # a list of statements or members (a block, a class body, a file)
        self.first = first  # the index of its first piece (or of the comments just before it)
        self.scope = scope
        self.error = error
        self.glue_run = 0  # comments/decorators just emitted at this level, which a cut keeps
        self.fill = False  # its first statement may be walked to fill the chunk of its header


class Walk:
    """One document's pieces (tiling the text, each within the budget) and forced cuts."""

    def __init__(self, text: str, data: bytes, index: TokenIndex, size: int, grammar: Grammar):
        self.text, self.data, self.index, self.size, self.grammar = text, data, index, size, grammar
        self.small = max(size // GLUE, 1)
        # byte offset -> char offset (None: ASCII, the same); a memoryview indexes to plain ints
        if len(data) == len(text):
            self.char = None
        else:
            code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
            width = 1 + (code >= 0x80) + (code >= 0x800) + (code >= 0x10000)
            b2c = np.repeat(np.arange(len(text), dtype=np.int32 if len(data) < 2**31 else
                                      np.int64), width)
            self.char = memoryview(np.append(b2c, len(text)))
        self.inside = set(index.inside.tolist()) if len(index.inside) else None
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.types: list[str | None] = []
        self.scopes: list[tuple[str, ...]] = []
        self.errors: list[bool] = []
        self.cuts: list[int] = [0]  # piece indices where a forced segment begins

    # -- offsets and sizes ------------------------------------------------------------------------

    def _at(self, byte: int) -> int:
        """The char offset of ``byte``, moved back to the start of its grapheme cluster."""
        pos = byte if self.char is None else self.char[byte]
        if self.inside is not None:
            while pos in self.inside:
                pos -= 1
        return pos

    def _fits(self, lo: int, hi: int) -> bool:
        """Whether ``text[lo:hi]`` (trimmed) is within the budget, counted on its own. The
        in-context count rules out big spans cheaply; the exact count decides the rest."""
        if self.index.tokens_between(lo, hi) > self.size:
            return False
        s, e = trim(self.text, lo, hi)
        return self.index.at_most(s, e, self.size)

    def _add(self, lo: int, hi: int, kind: str | None, frame: _Frame, error: bool) -> None:
        self.starts.append(lo)
        self.ends.append(hi)
        self.types.append(kind)
        self.scopes.append(frame.scope)
        self.errors.append(error)

    def _cut(self, at: int) -> None:
        if at > self.cuts[-1]:
            self.cuts.append(at)

    # -- the walk ---------------------------------------------------------------------------------

    def run(self, root: Any) -> None:
        n = len(self.text)
        tokens = self.index.tokens_between
        # the root is always walked, so a file that fits whole still lists its node types
        stack = [_Frame(root.children, 0, n, tokens(0, n), True, 0, (), root.is_error)]
        while stack:
            f = stack[-1]
            if f.i == len(f.children):  # the node is done: its tail, then back to its parent
                if f.pos < f.hi:
                    self._leaf(f.pos, f.hi, None, f, f.error)
                stack.pop()
                if stack and tokens(f.hi, stack[-1].hi) >= self.small:
                    self._cut(len(self.starts))  # the parent goes on with a fresh chunk
                continue
            child = f.children[f.i]
            f.i += 1
            lo = f.pos
            hi = min(self._at(child.end_byte), f.hi)
            if hi <= lo:  # zero-width (MISSING) or inside the previous piece's cluster
                if child.has_error and self.errors:
                    self.errors[-1] = True
                continue
            f.pos = hi
            kind = child.type if child.is_named else None
            error = f.error or child.has_error  # for a piece: the node holds an error
            size = tokens(lo, hi)
            listy = kind is not None and _LISTY.search(kind) is not None
            # Inside a node over the budget, the body that holds all of it but a header of less
            # than half the budget (the block of `def f(x):`, the members of `class A {`), or
            # the statement that holds all of a block but a small rest, is walked even when it
            # fits, so the rest opens a chunk with its first statements instead of being alone.
            rest = f.size - size
            body = (f.size > self.size and child.child_count > 0
                    and ((listy and 2 * rest < self.size) or (f.listy and rest < self.small)))
            if f.fill and kind is not None:
                # The first statement of a body: when it does not fit in the chunk its header
                # opened (and that chunk is under half full), it is walked to fill that chunk.
                f.fill = False
                if not body and child.child_count > 0:
                    begin = self.starts[self.cuts[-1]] if self.cuts[-1] < len(self.starts) else lo
                    pending = tokens(begin, lo)
                    body = 0 < 2 * pending < self.size and pending + size > self.size
            if not body and self._fits(lo, hi):
                self._add(lo, hi, kind, f, error)
                glue = kind is not None and ("comment" in kind or kind in _GLUE_TYPES)
                f.glue_run = f.glue_run + 1 if glue else 0
                continue
            if child.child_count == 0:
                self._leaf(lo, hi, kind, f, error)
                f.glue_run = 0
                continue
            first = len(self.starts) - f.glue_run
            if not body:
                self._cut_before(stack, first, lo)
            f.glue_run = 0
            stack.append(_Frame(child.children, lo, hi, max(size, f.size if body else 0), listy,
                                first, f.scope + self._scope(child), f.error or child.is_error))
            stack[-1].fill = body

    def _cut_before(self, stack: list[_Frame], at: int, lo: int) -> None:
        """Close the chunk before a node over the budget that starts at piece ``at`` (char
        ``lo``), unless what the chunk holds is small. Inside a statement (not a list of
        them), the cut goes before the statement's own small head (``x =``, ``if cond:``,
        ``foo(``), which then opens the chunk with the node."""
        seg = self.cuts[-1]
        if at <= seg:
            return
        begin = self.starts[seg]
        tokens = self.index.tokens_between
        if tokens(begin, self.starts[at] if at < len(self.starts) else lo) < self.small:
            return
        for f in reversed(stack):
            if f.listy or tokens(max(begin, f.lo), lo) >= self.small:
                break
            at = f.first
        self._cut(at)

    def _scope(self, node: Any) -> tuple[str, ...]:
        """``("def bar",)`` when ``node`` is a named definition, else ``()``."""
        kind = self.grammar.scopes.get(node.type)
        if kind is None:
            if self.grammar.scopes:
                return ()
            m = _GENERIC_SCOPE.match(node.type)  # a grammar without a table: *_definition etc.
            if m is None or node.child_by_field_name("name") is None:
                return ()
            kind = m.group(1)
        name = self._name(node)
        return (f"{kind} {name}" if name else kind,)

    def _name(self, node: Any) -> str:
        t = node.type
        if t == "impl_item":  # rust: impl Trait for Type
            ty, tr = node.child_by_field_name("type"), node.child_by_field_name("trait")
            name = self._text(ty) if ty is not None else ""
            return f"{self._text(tr)} for {name}" if tr is not None else name
        if t == "method_declaration" and node.child_by_field_name("receiver") is not None:
            receiver = self._text(node.child_by_field_name("receiver"))  # go: func (r *T) Name
            return f"{receiver} {self._text(node.child_by_field_name('name'))}"
        name = node.child_by_field_name("name")
        if name is None and t == "function_definition":  # c: the declarator's identifier
            d = node.child_by_field_name("declarator")
            while d is not None and d.child_by_field_name("declarator") is not None:
                d = d.child_by_field_name("declarator")
            name = d
        return self._text(name) if name is not None else ""

    def _text(self, node: Any) -> str:
        raw = self.data[node.start_byte : node.end_byte].decode("utf-8", errors="replace")
        return " ".join(raw.split())[:_NAME_CHARS]

    def _leaf(self, lo: int, hi: int, kind: str | None, f: _Frame, error: bool) -> None:
        """Pieces within the budget for ``[lo, hi)``, a span with no children to split it at:
        blank lines, lines, spaces, then token windows."""
        for a, b in self._split_text(lo, hi, 0):
            self._add(a, b, kind, f, error)

    def _split_text(self, lo: int, hi: int, level: int) -> list[tuple[int, int]]:
        if self._fits(lo, hi):
            return [(lo, hi)]
        while level < len(LEAF_SEPARATORS):
            bounds = after_each(self.text, lo, hi, LEAF_SEPARATORS[level], self.index)
            level += 1
            if len(bounds) > 2:
                out: list[tuple[int, int]] = []
                for a, b in zip(bounds, bounds[1:]):
                    out.extend(self._split_text(a, b, level))
                return out
        # windows are trimmed: give the whitespace between them to the next one, to keep tiling
        windows = token_windows(self.text, lo, hi, self.index.tokenizer, self.size)
        out = []
        pos = lo
        for i, (_, e, _) in enumerate(windows):
            end = hi if i == len(windows) - 1 else e
            out.append((pos, end))
            pos = end
        return out or [(lo, hi)]

    # -- chunks -----------------------------------------------------------------------------------

    def chunks(self, doc: Document, language: str, unit: str) -> list[Chunk]:
        index, text = self.index, self.text
        spans: list[tuple[int, int, int]] = []
        bounds = [*self.cuts, len(self.starts)]
        for a, b in zip(bounds, bounds[1:]):
            pieces = [(self.starts[i], self.ends[i], index.tokens_between(self.starts[i],
                                                                           self.ends[i]))
                      for i in range(a, b)]
            spans.extend(pack_indexed(index, pieces, self.size))
        meta = doc_metadata(doc)
        out = []
        for i, (s, e, n) in enumerate(spans):
            first = bisect.bisect_right(self.ends, s)
            last = bisect.bisect_left(self.starts, e, lo=first)  # pieces [first, last) meet it
            types = list(dict.fromkeys(t for t in self.types[first:last] if t is not None))
            scope = _common_prefix(self.scopes[first:last])
            out.append(Chunk(doc.id, s, e, text[s:e], i, {
                **meta, unit: int(n), "language": language, "scope": " > ".join(scope),
                "node_types": types, "syntax_error": any(self.errors[first:last]),
            }))
        return out


def _common_prefix(scopes: list[tuple[str, ...]]) -> tuple[str, ...]:
    if not scopes:
        return ()
    first = scopes[0]
    n = len(first)
    for s in scopes[1:]:
        if len(s) < n:
            n = len(s)
        while n and s[:n] != first[:n]:
            n -= 1
        if not n:
            break
    return first[:n]
