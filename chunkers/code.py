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

This module holds the component: its config, the choice of language and the parser. The
languages are data in ``code_languages``; the walk from a syntax tree to chunks is
``code_walk``, which this module only calls.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

import numpy as np

from ragkit.chunkers.base import TokenIndex, check_size
from ragkit.chunkers.code_languages import (  # LANGUAGES and Grammar stay importable from here
    LANGUAGE_NAME,
    LANGUAGES,
    Grammar,
    check_language,
    grammar_installed,
)
from ragkit.chunkers.code_walk import Walk
from ragkit import registry
from ragkit._deps import require
from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.tokenizers import Tokenizer, check_tokenizer_name, load_tokenizer
from ragkit.types import Chunk, Document

log = logging.getLogger(__name__)


UNITS = ("tokens", "nws_chars")
DEFAULT_SIZE = {"tokens": 512, "nws_chars": 1500}


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
            known = name in LANGUAGES or (LANGUAGE_NAME.match(name) and grammar_installed(name))
            return name if known else None
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
        walk = Walk(text, data, index, self.resolved_chunk_size, grammar)
        walk.run(tree.root_node)
        if tree.root_node.has_error:
            log.info("document %r: tree-sitter found syntax errors (%s); chunked anyway",
                     doc.id, language)
        return walk.chunks(doc, language, self.unit)
