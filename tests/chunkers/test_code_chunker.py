"""The code chunker on real tree-sitter grammars: languages, budgets, scopes, errors, odd text.

The contract itself (exact offsets, coverage, budget, graphemes) is checked with the helper of
tests/contracts/test_chunkers.py, which also runs this chunker over its prose samples.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ragkit.chunkers.code import LANGUAGES, CodeChunker, Grammar
from ragkit.chunkers.recursive import RecursiveChunker
from ragkit.config import build, to_config
from ragkit.errors import ConfigError, MissingDependencyError
from ragkit.types import Document
from tests.chunkers.code_samples import (
    GO,
    PY,
    RUST,
    SAMPLES,
    C,
    assert_contract,
    assert_nws_contract,
    chunk,
)

pytest.importorskip("tree_sitter")


# -- languages ----------------------------------------------------------------------------------


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_each_language_is_parsed_with_its_grammar(language):
    name, source, scope = SAMPLES[language]
    doc = Document(name, source, {"source": f"src/{name}"})
    chunks = CodeChunker(chunk_size=40).chunk(doc)
    assert_contract(doc, chunks, size=40)
    assert len(chunks) >= 3
    assert {c.metadata["language"] for c in chunks} == {language}
    assert not any(c.metadata["syntax_error"] for c in chunks)  # a real grammar parsed it
    assert all(c.metadata["source"] == f"src/{name}" for c in chunks)
    assert scope in [c.metadata["scope"] for c in chunks]
    whole = CodeChunker(chunk_size=4000).chunk(doc)  # fits: one chunk, listing the top nodes
    assert len(whole) == 1 and whole[0].text == source.strip()
    assert whole[0].metadata["scope"] == ""
    types = whole[0].metadata["node_types"]
    assert types and len(types) == len(set(types))


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_split_happens_between_statements(language):
    """At a budget that holds a few statements, every chunk starts at the start of a line
    (after indentation) and ends at the end of one: no statement is cut in two."""
    name, source, *_ = SAMPLES[language]
    doc = Document(name, source)
    chunks = CodeChunker(chunk_size=60).chunk(doc)
    assert_contract(doc, chunks, size=60)
    assert len(chunks) >= 2
    for c in chunks:
        assert source[: c.start].rstrip(" \t").endswith("\n") or c.start == 0, c.text
        assert source[c.end :].startswith("\n"), c.text


@pytest.mark.parametrize("language", sorted(SAMPLES))
def test_a_header_opens_the_chunk_of_its_body(language):
    name, source, *_ = SAMPLES[language]
    chunks = CodeChunker(chunk_size=60).chunk(Document(name, source))
    head = next(c for c in chunks if re.search(r"describe|Describe", c.text))
    assert not re.search(r"(describe|Describe)\([^\n]*\n?\s*\Z", head.text), head.text
    assert len(head.text.splitlines()) >= 2  # the header and at least its first statement


def test_languages_come_from_metadata_then_suffix_then_config():
    c = CodeChunker(language="go", extensions={".pyx": "python", ".H": "cpp"})
    plain = CodeChunker()
    for language, grammar in LANGUAGES.items():
        for suffix in grammar.extensions:
            assert plain.language_of(Document(f"dir/file{suffix}", "x")) == language
            assert plain.language_of(Document(f"FILE{suffix.upper()}", "x")) == language
    assert c.language_of(Document("a.pyx", "x")) == "python"
    assert c.language_of(Document("a.h", "x")) == "cpp"
    assert CodeChunker().language_of(Document("a.h", "x")) == "c"
    assert c.language_of(Document("notes.txt", "x")) == "go"  # the configured language
    assert c.language_of(Document("README", "x")) == "go"
    assert c.language_of(Document("a.py", "x", {"language": "Rust"})) == "rust"
    assert c.language_of(Document("d#3", "x", {"path": "/abs/a.java"})) == "java"
    assert c.language_of(Document("data.jsonl#3", "x", {"source": "data.jsonl#3"})) == "go"
    assert CodeChunker().language_of(Document("notes.txt", "x")) is None
    assert CodeChunker().language_of(Document("a.py", "x", {"language": "klingon"})) is None


def test_unknown_language_is_an_error_naming_the_document_and_the_fix():
    with pytest.raises(ConfigError) as info:
        chunk("some notes", "notes.txt")
    message = str(info.value)
    assert info.value.path == "language"
    assert "'notes.txt'" in message and "'.txt'" in message and ".py" in message
    assert "fallback" in message and "language:" in message
    with pytest.raises(ConfigError, match="no file suffix"):
        chunk("x = 1", "README")
    with pytest.raises(ConfigError, match="'klingon', which has no grammar"):
        CodeChunker().chunk(Document("a.py", "x = 1", {"language": "klingon"}))
    assert chunk("   \n", "notes.txt") == []  # blank documents never need a language


def test_fallback_chunks_documents_in_no_known_language():
    code = CodeChunker(chunk_size=24, fallback="recursive")
    assert code.fallback_chunker == RecursiveChunker(chunk_size=24, tokenizer="cl100k")
    assert build("chunker", {"name": "code", "chunk_size": 24, "fallback": "recursive"}) == code
    prose = Document("notes.md", "First paragraph here.\n\n" + "Another sentence. " * 20)
    assert code.chunk(prose) == RecursiveChunker(chunk_size=24).chunk(prose)
    py = code.chunk(Document("a.py", PY))
    assert py and all(c.metadata["language"] == "python" for c in py)
    own = CodeChunker(fallback={"name": "fixed", "chunk_size": 7, "tokenizer": "whitespace"})
    assert own.fallback_chunker.chunk_size == 7 and own.fallback_chunker.tokenizer == "whitespace"
    obj = CodeChunker(fallback=RecursiveChunker(chunk_size=9))  # an object is kept as its spec
    assert obj.fallback["chunk_size"] == 9 and obj.fallback_chunker == RecursiveChunker(chunk_size=9)
    assert CodeChunker(fallback="recursive").fallback_chunker.chunk_size == 512
    assert CodeChunker(unit="nws_chars", fallback="recursive").fallback_chunker.chunk_size == 256
    for chunker in (code, own, obj):
        spec = to_config(chunker, "chunker")
        assert build("chunker", json.loads(json.dumps(spec))) == chunker
    with pytest.raises(ConfigError, match=r"^fallback\.name: unknown chunker 'nope'"):
        CodeChunker(fallback="nope")


# -- budgets ------------------------------------------------------------------------------------


@pytest.mark.parametrize("tokenizer", ["cl100k", "whitespace", "character", "all-MiniLM-L6-v2"])
@pytest.mark.parametrize("size", [1, 5, 17, 64, 300])
def test_token_budget_is_never_exceeded(tokenizer, size):
    for language, (name, source, *_) in sorted(SAMPLES.items()):
        doc = Document(name, source)
        chunks = CodeChunker(chunk_size=size, tokenizer=tokenizer).chunk(doc)
        assert_contract(doc, chunks, tokenizer, size)


@pytest.mark.parametrize("size", [1, 9, 40, 200])
def test_nws_chars_budget_is_never_exceeded(size):
    for language, (name, source, *_) in sorted(SAMPLES.items()):
        doc = Document(name, source)
        assert_nws_contract(doc, CodeChunker(chunk_size=size, unit="nws_chars").chunk(doc), size)


def test_default_sizes():
    assert CodeChunker().resolved_chunk_size == 512
    assert CodeChunker(unit="nws_chars").resolved_chunk_size == 1500
    assert CodeChunker(unit="nws_chars").resolved_tokenizer == "nws_chars"
    assert CodeChunker(chunk_size=77).resolved_chunk_size == 77


def _statements(depth: int) -> st.SearchStrategy[str]:
    """Python-like source (not always valid): assignments, calls, strings with odd characters,
    and, while ``depth`` allows, nested defs, classes and ifs."""
    ident = st.from_regex(r"[a-zA-Z_\u00e9\u00fc\u4e00-\u4e0f][a-zA-Z0-9_\u00e9\u0301]{0,11}",
                          fullmatch=True)
    odd = st.sampled_from(["", "é", "e\u0301", "日本", "👍🏽", "👨\u200d👩\u200d👧", "\t", "\\n",
                           "<|endoftext|>", "x" * 300, "\u3000", "\ufeff"])
    string = st.builds(lambda a, b: f'"{a}{b}"', st.text(max_size=20).map(
        lambda s: s.replace('"', "").replace("\\", "").replace("\n", "")), odd)
    simple = st.one_of(
        st.builds(lambda a, b: f"{a} = {b}", ident, string),
        st.builds(lambda a, b, c: f"{a}({b}, {c})", ident, string, ident),
        st.builds(lambda a: f"# {a}", st.text(max_size=30).map(lambda s: s.replace("\n", " "))),
        st.just("pass"),
    )
    if depth == 0:
        return simple.map(lambda s: [s])
    inner = st.lists(_statements(depth - 1), min_size=1, max_size=4).map(
        lambda blocks: [line for block in blocks for line in block])
    nested = st.builds(
        lambda head, body: [head] + ["    " + line for line in body],
        st.one_of(st.builds(lambda n: f"def {n}(self, x):", ident),
                  st.builds(lambda n: f"class {n}:", ident),
                  st.builds(lambda n: f"if {n}:", ident)),
        inner,
    )
    return st.one_of(simple.map(lambda s: [s]), nested)


python_like = st.lists(_statements(3), min_size=1, max_size=6).map(
    lambda blocks: "\n".join(line for block in blocks for line in block) + "\n")


@settings(max_examples=120, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(source=python_like, size=st.integers(1, 120),
       tokenizer=st.sampled_from(["cl100k", "whitespace", "character"]),
       crlf=st.booleans(), damage=st.integers(0, 3), where=st.integers(0, 10**6))
def test_budget_holds_on_generated_code(source, size, tokenizer, crlf, damage, where):
    if crlf:
        source = source.replace("\n", "\r\n")
    for _ in range(damage):  # cut a few characters out: syntax errors
        at = where % (len(source) + 1)
        source = source[:at] + source[at + 3 :]
        where = where * 31 + 7
    doc = Document("gen.py", source)
    chunks = CodeChunker(chunk_size=size, tokenizer=tokenizer).chunk(doc)
    assert_contract(doc, chunks, tokenizer, size)
    nws = CodeChunker(chunk_size=size, unit="nws_chars").chunk(doc)
    assert_nws_contract(doc, nws, size)


# -- scopes, syntax errors, odd text -----------------------------------------------------------


def test_scopes_name_the_enclosing_definitions():
    source = (
        "import os\n\n\nclass Foo:\n    x = 1\n\n    def bar(self, a):\n"
        + "".join(f"        v{i} = a + {i}\n" for i in range(30))
        + "        def inner(b):\n"
        + "".join(f"            w{i} = b * {i}\n" for i in range(30))
        + "            return w0\n        return inner\n\n\ndef top():\n    return 1\n"
    )
    doc = Document("scopes.py", source)
    chunks = CodeChunker(chunk_size=48).chunk(doc)
    assert_contract(doc, chunks, size=48)
    scopes = [c.metadata["scope"] for c in chunks]
    assert "class Foo > def bar" in scopes
    assert "class Foo > def bar > def inner" in scopes
    assert scopes[-1] == "" and chunks[-1].text.endswith("return 1")
    for c in chunks:  # a chunk inside inner's statements says so
        if re.fullmatch(r"(\s*w\d+ = b \* \d+)+", c.text):
            assert c.metadata["scope"] == "class Foo > def bar > def inner"
        if re.fullmatch(r"(\s*v\d+ = a \+ \d+)+", c.text):
            assert c.metadata["scope"] == "class Foo > def bar"


def test_syntax_errors_are_chunked_and_marked():
    good = "".join(f"def f{i}(x):\n    return x + {i}\n\n\n" for i in range(12))
    broken = "def broken(x:\n    return (x +\n\n\n"  # an unclosed parenthesis
    source = good + broken + good.replace("def f", "def g")
    doc = Document("broken.py", source)
    chunks = CodeChunker(chunk_size=40).chunk(doc)
    assert_contract(doc, chunks, size=40)  # still covered, still within the budget
    flagged = [c for c in chunks if c.metadata["syntax_error"]]
    assert flagged and any("broken" in c.text for c in flagged)
    clean = [c for c in chunks if c.end <= len(good)]
    assert clean and not any(c.metadata["syntax_error"] for c in clean)
    garbage = Document("garbage.py", "}{ ))) def def class ::: \"unterminated\n" * 50)
    chunks = CodeChunker(chunk_size=16).chunk(garbage)
    assert_contract(garbage, chunks, size=16)
    assert any(c.metadata["syntax_error"] for c in chunks)


def test_crlf_files_chunk_like_lf_files():
    """``\\r`` is whitespace: counted in non-whitespace characters, a CRLF file gives the same
    chunks as its LF twin, and no cut falls between ``\\r`` and ``\\n``."""
    for name, source, *_ in SAMPLES.values():
        lf = CodeChunker(chunk_size=60, unit="nws_chars").chunk(Document(name, source))
        crlf_doc = Document(name, source.replace("\n", "\r\n"))
        crlf = CodeChunker(chunk_size=60, unit="nws_chars").chunk(crlf_doc)
        assert [c.text.replace("\r\n", "\n") for c in crlf] == [c.text for c in lf]
        assert [c.metadata["scope"] for c in crlf] == [c.metadata["scope"] for c in lf]
        tokens = CodeChunker(chunk_size=30).chunk(crlf_doc)
        assert_contract(crlf_doc, tokens, size=30)  # checks grapheme (CR LF) boundaries too


def test_non_ascii_identifiers_strings_and_offsets():
    source = (
        "# -*- coding: utf-8 -*-\n"
        "class Größe:\n"
        '    """Maße und Gewichte 📏 — ünïcödé."""\n\n'
        "    def 计算(self, café, nai\u0308ve):\n"
        + "".join(f"        値{i} = café + '👨\u200d👩\u200d👧 {i} e\u0301' \n" for i in range(12))
        + "        return 値0\n\n\n"
        "def ƒ():\n    return '🇫🇷' * 3\n"
    )
    doc = Document("unicode.py", source)
    for tokenizer in ("cl100k", "character", "all-MiniLM-L6-v2"):
        chunks = CodeChunker(chunk_size=30, tokenizer=tokenizer).chunk(doc)
        assert_contract(doc, chunks, tokenizer, 30)
    chunks = CodeChunker(chunk_size=30).chunk(doc)
    assert "class Größe > def 计算" in {c.metadata["scope"] for c in chunks}
    assert not any(c.metadata["syntax_error"] for c in chunks)
    js = Document("u.js", "const naïve = 'é';\nfunction 变量(ß) {\n" + "  ß += '🙂';\n" * 20 + "}\n")
    chunks = CodeChunker(chunk_size=20).chunk(js)
    assert_contract(js, chunks, size=20)
    assert "function 变量" in {c.metadata["scope"] for c in chunks}


def test_pathological_shapes_stay_within_budget():
    deep = "x = " + " + ".join(f"v{i}" for i in range(3000)) + "\n"  # 3000 nested binary nodes
    minified = "var a=" + ";".join(f"f{i}(x,{i})" for i in range(8000)) + ";"  # one 100k line
    long_string = 's = """' + "lorem ipsum " * 4000 + '"""\n'
    comments = "".join(f"# comment line {i}\n" for i in range(500))
    long_word = "x = " + "a" * 20_000 + "\n"
    for name, source in [("deep.py", deep), ("min.js", minified), ("s.py", long_string),
                         ("c.py", comments), ("w.py", long_word)]:
        doc = Document(name, source)
        chunks = CodeChunker(chunk_size=64).chunk(doc)
        assert_contract(doc, chunks, size=64)
        assert chunks == CodeChunker(chunk_size=64).chunk(doc)  # deterministic


def test_real_standard_library_files_keep_the_contract():
    import inspect
    import json as json_module
    import textwrap

    for module in (json_module.decoder, textwrap, inspect):
        source = inspect.getsource(module)
        doc = Document(module.__file__, source)
        for size in (50, 512):
            chunks = CodeChunker(chunk_size=size).chunk(doc)
            assert_contract(doc, chunks, size=size)
            assert chunks[0].metadata["language"] == "python"


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(("spec", "path", "needle"), [
    ({"unit": "lines"}, "chunker.unit", "'tokens', 'nws_chars'"),
    ({"language": "klingon"}, "chunker.language", "tree_sitter_klingon"),
    ({"language": "Py thon"}, "chunker.language", "a language name"),
    ({"extensions": {"pyx": "python"}}, "chunker.extensions", "'.pyx'"),
    ({"extensions": {".pyx": "klingon"}}, "chunker.extensions..pyx", "klingon"),
    ({"chunk_size": 0}, "chunker.chunk_size", "got 0"),
    ({"tokenizer": "nope"}, "chunker.tokenizer", "cl100k"),
    ({"languag": "python"}, "chunker.languag", "did you mean 'language'"),
])
def test_bad_configs_name_the_field(spec, path, needle):
    with pytest.raises(ConfigError) as info:
        build("chunker", {"name": "code", **spec})
    assert str(info.value).startswith(f"{path}:")
    assert needle in str(info.value)


def test_config_round_trip_and_yaml_shapes():
    spec = {"name": "code", "chunk_size": 300, "unit": "nws_chars", "language": "rust",
            "extensions": {".RS2": "rust"}, "fallback": {"name": "fixed", "chunk_size": 64}}
    chunker = build("chunker", spec)
    assert chunker.extensions == {".rs2": "rust"}
    again = build("chunker", to_config(chunker, "chunker"))
    assert again == chunker and again != CodeChunker()


def test_missing_grammar_package_names_the_extra(monkeypatch):
    monkeypatch.setitem(LANGUAGES, "python", Grammar("tree_sitter_not_installed", "language",
                                                     (".py",)))
    with pytest.raises(MissingDependencyError, match=r"pip install 'ragkit\[code\]'"):
        chunk("x = 1", "a.py")


def test_file_suffixes_for_loaders():
    assert ".py" in CodeChunker().file_suffixes and ".md" not in CodeChunker().file_suffixes
    assert ".md" in CodeChunker(fallback="recursive").file_suffixes
    assert ".pyx" in CodeChunker(extensions={".pyx": "python"}).file_suffixes


def test_cli_chunks_a_source_tree(tmp_path, capsys):
    from ragkit.cli import main

    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "a.py").write_text(PY, encoding="utf-8")
    (tmp_path / "pkg" / "b.go").write_text(GO, encoding="utf-8")
    (tmp_path / "notes.md").write_text("# Notes\n\nSome prose.\n", encoding="utf-8")
    args = ["chunk", str(tmp_path), "-o", "chunker.name=code", "-o", "chunker.chunk_size=60",
            "--format", "jsonl", "--no-progress"]
    assert main(args) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert {r["doc_id"] for r in rows} == {"pkg/a.py", "pkg/b.go"}  # the .md is not code
    assert {r["metadata"]["language"] for r in rows} == {"python", "go"}
    assert main(args + ["-o", "chunker.fallback=recursive"]) == 0
    rows = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert "notes.md" in {r["doc_id"] for r in rows}


def test_cli_indexes_a_source_tree(tmp_path, capsys):
    from ragkit.cli import main
    from ragkit.pipeline import RAGPipeline

    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "shapes.rs").write_text(RUST, encoding="utf-8")
    (tmp_path / "src" / "shapes.c").write_text(C, encoding="utf-8")
    out = tmp_path / "index"
    assert main(["index", str(tmp_path / "src"), "-o", "chunker.name=code", "-o",
                 "chunker.chunk_size=40", "-o", "embedder.name=hash", "--out", str(out),
                 "--no-progress"]) == 0
    assert "indexed 2 documents" in capsys.readouterr().out
    pipe = RAGPipeline.load(out)
    hits = pipe.retrieve("describe circle area verbose", k=3)
    assert hits and {h.chunk.metadata["language"] for h in hits} <= {"rust", "c"}
    assert all(isinstance(h.chunk.metadata["scope"], str) for h in hits)
