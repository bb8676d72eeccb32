"""The languages the ``code`` chunker parses: where each tree-sitter grammar lives (a PyPI
wheel such as ``tree-sitter-python``), which file suffixes it takes, and which of its node
types are named scopes (``class``, ``def``...). Add a language here.

Holds data and the name check only: it must not parse, walk or chunk anything (that is
``code_walk``) and must not import tree-sitter (a grammar is imported when first used).
"""

from __future__ import annotations

import functools
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from ragkit.errors import ConfigError


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
LANGUAGE_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


@functools.cache
def grammar_installed(name: str) -> bool:
    return importlib.util.find_spec(f"tree_sitter_{name}") is not None


def check_language(name: Any, *, path: str) -> str:
    """``name`` if it is a built-in language or one whose grammar package is installed."""
    if isinstance(name, str) and name in LANGUAGES:
        return name
    known = ", ".join(sorted(LANGUAGES))
    if not isinstance(name, str) or not LANGUAGE_NAME.match(name):
        raise ConfigError(f"must be a language name such as 'python' ({known}); got {name!r}",
                          path=path)
    if not grammar_installed(name):
        raise ConfigError(
            f"unknown language {name!r}; choose one of {known}, or install the grammar package "
            f"that provides the Python module tree_sitter_{name}",
            path=path,
        )
    return name
