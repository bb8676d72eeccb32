"""Code chunking on the syntax tree (cAST, Zhang et al., 2025): split big nodes, merge small ones.

A document is parsed with tree-sitter (grammars from PyPI wheels such as ``tree-sitter-python``;
nothing is downloaded). A node whose text fits the budget is one piece; a node over it is
replaced by its children, recursively; a leaf over it (a long string or comment) is cut at blank
lines, then lines, then spaces, then into token windows. Adjacent pieces are then merged
greedily up to the budget, and each merged chunk is counted again on its own text, so no chunk
is ever over ``chunk_size`` (the one exception every ragkit chunker shares: a single token or
grapheme cluster that alone is larger).

Where a chunk may end. Pieces merge freely except across the edges of a node that was split:

- after a split node (a class, a function, a big ``if``) the next chunk starts afresh, unless
  what is left of its parent is small (under a quarter of the budget: a closing ``}``, a final
  ``return``), which then stays with the split node's last chunk;
- before a split node the current chunk is closed, unless what it holds is small (under a
  quarter of the budget): then it opens the split node's first chunk. A split node's header
  (``def f(x):``, ``class Foo {``) is kept with the start of its body: the body is walked even
  when it would fit whole, and its first statement is split to fill the header's chunk when it
  does not fit beside it. (On the standard library at 512 tokens, 3 of 2,976 chunks still end on
  a ``def``/``class`` line, where the code before it had filled the chunk.);
- comments, decorators and attributes directly before a split node go with it.

Sizes are ``chunk_size`` tokens of ``tokenizer`` (``unit: tokens``, default 512 cl100k tokens) or
non-whitespace characters (``unit: nws_chars``, the unit of the cAST paper, default 1,500: the
Python standard library and npm's JavaScript have about 2.9-3.0 of them per cl100k token, so
about the same amount of code). Each node is counted from one tokenization of the whole file;
only the merged chunks are counted again.

Which language. In order: the document's ``language`` metadata, its file extension (``path`` or
``source`` metadata, else its id; ``extensions`` adds or overrides suffixes), then the configured
``language``. A document with none of these is chunked by ``fallback`` (any other chunker) if one
is configured, and is an error otherwise. Built in: Python, JavaScript, TypeScript, TSX, Java,
Go, Rust, C and C++ (``pip install 'ragkit[code]'``; ``.h`` is C, map it to C++ with
``extensions: {".h": cpp}``); any other language works by name when its grammar package
``tree_sitter_<name>`` is installed.

Syntax errors. tree-sitter always returns a tree, wrapping what it cannot parse in ``ERROR``
nodes (and inserting zero-width ``MISSING`` ones). Those are chunked like any other node, so the
whole text is still covered and within budget; chunks that hold any of it carry
``syntax_error: True``.

Chunk metadata: ``language``; ``scope``, the definitions enclosing the chunk
(``"class Foo > def bar"``, ``""`` at the top level); ``node_types``, the named node types the
chunk is made of, in order, each once; ``syntax_error``; ``tokens`` (or ``nws_chars``); and the
document's ``source``.
"""

from __future__ import annotations

import bisect
import dataclasses
import functools
import importlib.util
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ragkit.chunkers.base import TokenIndex, check_size, pack_indexed, token_windows, trim
from ragkit.chunkers.recursive import after_each
from ragkit import registry
from ragkit._deps import require
from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.tokenizers import Tokenizer, check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Document

log = logging.getLogger(__name__)

UNITS = ("tokens", "nws_chars")
DEFAULT_SIZE = {"tokens": 512, "nws_chars": 1500}
GLUE = 4  # a run of code under 1/GLUE of the budget stays with the split node next to it
LEAF_SEPARATORS = ("\n\n", "\n", " ")


@dataclass(frozen=True)
class Grammar:
    """Where a language's tree-sitter grammar lives, and which of its nodes are named scopes."""

    module: str  # the grammar package's import name
    function: str  # the function returning the language pointer
    extensions: tuple[str, ...] = ()
    scopes: Mapping[str, str] = field(default_factory=dict)  # node type -> label keyword


_JS_SCOPES = {
    "class_declaration": "class", "class": "class", "function_declaration": "function",
    "generator_function_declaration": "function*", "method_definition": "method",
}
_TS_SCOPES = {
    **_JS_SCOPES, "abstract_class_declaration": "class", "interface_declaration": "interface",
    "enum_declaration": "enum", "internal_module": "namespace", "module": "module",
}
LANGUAGES: dict[str, Grammar] = {
    "python": Grammar("tree_sitter_python", "language", (".py", ".pyi", ".pyw"),
                      {"class_definition": "class", "function_definition": "def"}),
    "javascript": Grammar("tree_sitter_javascript", "language", (".js", ".mjs", ".cjs", ".jsx"),
                          _JS_SCOPES),
    "typescript": Grammar("tree_sitter_typescript", "language_typescript", (".ts", ".mts", ".cts"),
                          _TS_SCOPES),
    "tsx": Grammar("tree_sitter_typescript", "language_tsx", (".tsx",), _TS_SCOPES),
    "java": Grammar("tree_sitter_java", "language", (".java",), {
        "class_declaration": "class", "interface_declaration": "interface",
        "enum_declaration": "enum", "record_declaration": "record",
        "annotation_type_declaration": "@interface", "method_declaration": "method",
        "constructor_declaration": "constructor"}),
    "go": Grammar("tree_sitter_go", "language", (".go",), {
        "function_declaration": "func", "method_declaration": "func", "type_spec": "type"}),
    "rust": Grammar("tree_sitter_rust", "language", (".rs",), {
        "function_item": "fn", "impl_item": "impl", "trait_item": "trait", "mod_item": "mod",
        "struct_item": "struct", "enum_item": "enum", "union_item": "union",
        "macro_definition": "macro_rules!"}),
    "c": Grammar("tree_sitter_c", "language", (".c", ".h"), {
        "function_definition": "function", "struct_specifier": "struct",
        "union_specifier": "union", "enum_specifier": "enum"}),
    "cpp": Grammar("tree_sitter_cpp", "language",
                   (".cpp", ".cc", ".cxx", ".c++", ".hpp", ".hh", ".hxx", ".h++", ".cuh", ".cu"), {
        "function_definition": "function", "class_specifier": "class",
        "struct_specifier": "struct", "union_specifier": "union", "enum_specifier": "enum",
        "namespace_definition": "namespace"}),
}
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")
_GENERIC_SCOPE = re.compile(r"(.+)_(definition|declaration|item)\Z")  # other grammars' scopes
# statement and member lists: a cut between two of their children splits no statement
_LISTY = re.compile(r"(block|body|_list|^module|^program|^source_file|^translation_unit|"
                    r"compound_statement|^preproc_if|^preproc_ifdef)$")
_GLUE_TYPES = frozenset({"attribute_item", "decorator", "annotation", "marker_annotation"})
_NAME_CHARS = 120  # a scope label's name is cut to this many characters


@functools.cache
def _installed(name: str) -> bool:
    return importlib.util.find_spec(f"tree_sitter_{name}") is not None


def check_language(name: Any, *, path: str) -> str:
    """``name`` if it is a built-in language or one whose grammar package is installed."""
    if isinstance(name, str) and name in LANGUAGES:
        return name
    known = ", ".join(sorted(LANGUAGES))
    if not isinstance(name, str) or not _NAME.match(name):
        raise ConfigError(f"must be a language name such as 'python' ({known}); got {name!r}",
                          path=path)
    if not _installed(name):
        raise ConfigError(
            f"unknown language {name!r}; choose one of {known}, or install the grammar package "
            f"that provides the Python module tree_sitter_{name}",
            path=path,
        )
    return name


class NonWhitespaceCounter:
    """The ``nws_chars`` unit as a tokenizer: every non-whitespace character is one token."""

    name = "nws_chars"
    splits_at_word_ends = True  # any cut splits the count exactly

    _SPACE = re.compile(r"\s")
    _SPACE_CODES = np.array([c for c in range(0x3001) if chr(c).isspace()], dtype=np.uint32)

    def count(self, text: str) -> int:
        return len(text) - len(self._SPACE.findall(text))

    def token_starts(self, text: str) -> np.ndarray:
        code = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        return np.flatnonzero(~np.isin(code, self._SPACE_CODES)).astype(np.int64)


@dataclass(kw_only=True)
class CodeChunker:
    """Syntax-aware code chunks of at most ``chunk_size`` ``unit``s; see the module docstring.

    ``chunk_size``: default 512 for ``unit: tokens``, 1500 for ``unit: nws_chars``.
    ``tokenizer`` counts tokens (unused with ``nws_chars``). ``language``: the language of
    documents whose metadata and extension do not say. ``extensions``: more suffixes, e.g.
    ``{".pyx": "python"}``. ``fallback``: the chunker for documents in no known language (a
    spec without ``chunk_size``/``tokenizer`` gets this chunker's, when ``unit`` is tokens; the
    built chunker is ``fallback_chunker``).
    """

    chunk_size: int | None = None
    unit: Literal["tokens", "nws_chars"] = "tokens"
    tokenizer: str = "cl100k"
    language: str | None = None
    extensions: dict[str, str] = field(default_factory=dict)
    # A chunker spec, kept as given (plain data) because a spec without a budget inherits this
    # chunker's when it is built (so it cannot be built beforehand like a nested component).
    fallback: str | dict[str, Any] | None = None

    def __post_init__(self) -> None:
        if self.chunk_size is not None:
            check_size(self.chunk_size, 0)
        if self.unit not in UNITS:
            raise ConfigError(f"must be one of {', '.join(UNITS)}; got {self.unit!r}", path="unit")
        check_tokenizer_name(self.tokenizer)
        if self.language is not None:
            check_language(self.language, path="language")
        if not isinstance(self.extensions, Mapping):
            raise ConfigError(f"must be a mapping of suffix to language; got {self.extensions!r}",
                              path="extensions")
        exts = {}
        for suffix, lang in self.extensions.items():
            if not isinstance(suffix, str) or not re.fullmatch(r"\.[^./\\]+", suffix):
                raise ConfigError(f"keys must be file suffixes such as '.pyx'; got {suffix!r}",
                                  path="extensions")
            exts[suffix.lower()] = check_language(lang, path=f"extensions.{suffix}")
        self.extensions = exts
        self._fallback = None
        if self.fallback is not None:
            spec = self.fallback
            if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
                spec = to_config(spec, "chunker")  # a chunker object: kept as its spec
            elif isinstance(spec, str):
                spec = {"name": spec}
            elif not isinstance(spec, Mapping):
                raise ConfigError(f"must be a chunker name or spec; got {spec!r}", path="fallback")
            self.fallback = dict(spec)
            self._fallback = build("chunker", self._inherit(self.fallback), path="fallback")

    def _inherit(self, spec: dict[str, Any]) -> dict[str, Any]:
        """A fallback spec given without a budget counts it as this chunker does (tokens)."""
        spec = dict(spec)
        if self.unit != "tokens" or not isinstance(spec.get("name"), str):
            return spec  # build reports it
        try:
            fields = {f.name for f in dataclasses.fields(registry.resolve("chunker", spec["name"]))}
        except (ConfigError, TypeError):
            return spec
        if "chunk_size" in fields:
            spec.setdefault("chunk_size", self.resolved_chunk_size)
        if "tokenizer" in fields:
            spec.setdefault("tokenizer", self.tokenizer)
        return spec

    @property
    def fallback_chunker(self) -> Any:
        """The chunker built from ``fallback`` (``None`` without one)."""
        return self._fallback

    @property
    def resolved_chunk_size(self) -> int:
        return self.chunk_size if self.chunk_size is not None else DEFAULT_SIZE[self.unit]

    @property
    def resolved_tokenizer(self) -> str:
        """The unit chunk sizes are counted in, as a tokenizer name (``nws_chars`` or a name)."""
        return self.tokenizer if self.unit == "tokens" else "nws_chars"

    @property
    def file_suffixes(self) -> tuple[str, ...]:
        """File suffixes this chunker can take from a folder (the loaders' ``suffixes``): code
        files, plus plain text ones when ``language`` or ``fallback`` can handle them."""
        out = [s for g in LANGUAGES.values() for s in g.extensions] + list(self.extensions)
        if self.language is not None or self.fallback is not None:
            from ragkit.loaders import DEFAULT_SUFFIXES

            out += DEFAULT_SUFFIXES
        return tuple(dict.fromkeys(out))

    @cached_property
    def _counter(self) -> Tokenizer:
        return load_tokenizer(self.tokenizer) if self.unit == "tokens" else NonWhitespaceCounter()

    @cached_property
    def _parsers(self) -> dict[str, Any]:
        return {}

    # -- which language ---------------------------------------------------------------------------

    def language_of(self, doc: Document) -> str | None:
        """The language ``doc`` is parsed as, or ``None`` when nothing says (see the module
        docstring for the order)."""
        meta = doc.metadata
        declared = meta.get("language")
        if isinstance(declared, str) and declared:
            name = declared.lower()
            return name if name in LANGUAGES or (_NAME.match(name) and _installed(name)) else None
        where = meta.get("path") or meta.get("source") or doc.id
        suffix = os.path.splitext(str(where))[1].lower()
        if suffix:
            if suffix in self.extensions:
                return self.extensions[suffix]
            for name, grammar in LANGUAGES.items():
                if suffix in grammar.extensions:
                    return name
        return self.language

    def _no_language(self, doc: Document) -> ConfigError:
        declared = doc.metadata.get("language")
        where = doc.metadata.get("path") or doc.metadata.get("source") or doc.id
        suffix = os.path.splitext(str(where))[1]
        if isinstance(declared, str) and declared:
            why = f"its metadata says language {declared!r}, which has no grammar here"
        elif suffix:
            why = f"its suffix {suffix!r} is not a known code file suffix"
        else:
            why = "it has no file suffix and no 'language' metadata"
        known = ", ".join(sorted({s for g in LANGUAGES.values() for s in g.extensions}))
        return ConfigError(
            f"document {doc.id!r}: no language to parse it as: {why} (known: {known}); set "
            "language: (for such documents), extensions: {'<suffix>': <language>}, or "
            "fallback: (another chunker for them, e.g. recursive)",
            path="language",
        )

    def _parser(self, language: str) -> tuple[Any, Grammar]:
        if language not in self._parsers:
            ts = require("tree_sitter", extra="code", component="chunker 'code'")
            grammar = LANGUAGES.get(language) or Grammar(f"tree_sitter_{language}", "language")
            module = require(grammar.module, extra="code",
                             component=f"chunker 'code' for language {language!r}")
            self._parsers[language] = (ts.Parser(ts.Language(getattr(module, grammar.function)())),
                                       grammar)
        return self._parsers[language]

    # -- chunking ---------------------------------------------------------------------------------

    def chunk(self, doc: Document) -> list[Chunk]:
        text = doc.text
        if not text.strip():
            return []
        language = self.language_of(doc)
        if language is None:
            if self.fallback is None:
                raise self._no_language(doc)
            return self._fallback.chunk(doc)
        parser, grammar = self._parser(language)
        data = text.encode("utf-8")
        tree = parser.parse(data)
        index = TokenIndex(text, self._counter)
        walk = _Walk(text, data, index, self.resolved_chunk_size, grammar)
        walk.run(tree.root_node)
        if tree.root_node.has_error:
            log.info("document %r: tree-sitter found syntax errors (%s); chunked anyway",
                     doc.id, language)
        return walk.chunks(doc, language, self.unit)


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


class _Walk:
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
        meta = {"source": doc.metadata["source"]} if "source" in doc.metadata else {}
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
