"""ragkit.loaders: which files become which documents, and how bad input is reported."""

from __future__ import annotations

import json
import logging
import os
import pickle
import subprocess
import sys
from pathlib import Path

import pytest

from ragkit.errors import ConfigError, DocumentError
from ragkit.loaders import (
    DocumentLoader,
    LoadError,
    LoadProblem,
    iter_documents,
    load_documents,
)


def write(root: Path, rel: str, content: str | bytes) -> Path:
    path = root / rel
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, str):
        content = content.encode("utf-8")
    path.write_bytes(content)
    return path


def jsonl(*records: object) -> str:
    return "".join(json.dumps(r) + "\n" for r in records)


def one_problem(paths, **kwargs) -> LoadProblem:
    """The single problem ``paths`` has, checked to be the whole error message too."""
    with pytest.raises(LoadError) as info:
        load_documents(paths, **kwargs)
    assert len(info.value.problems) == 1, info.value.problems
    assert str(info.value) == str(info.value.problems[0])
    return info.value.problems[0]


# -- folders, ids, metadata -----------------------------------------------------------------------


def test_folder_is_walked_in_sorted_order_with_relative_ids(tmp_path):
    docs_dir = tmp_path / "docs"
    for rel in ["z.md", "b/y.txt", "a.txt", "b/a.markdown", "ab.md"]:  # not written in sorted order
        write(docs_dir, rel, f"text of {rel}")
    docs = load_documents(docs_dir)
    assert [d.id for d in docs] == ["a.txt", "ab.md", "b/a.markdown", "b/y.txt", "z.md"]
    assert [d.text for d in docs] == [f"text of {d.id}" for d in docs]
    y = docs[3]
    assert y.metadata == {"source": "b/y.txt", "path": str(docs_dir / "b" / "y.txt")}


def test_nested_folders_ids_are_relative_to_the_folder_passed(tmp_path):
    write(tmp_path, "corpus/guide/deep/er/intro.md", "hi")
    write(tmp_path, "corpus/top.txt", "top")
    corpus = tmp_path / "corpus"
    assert [d.id for d in load_documents(corpus)] == ["guide/deep/er/intro.md", "top.txt"]
    assert [d.id for d in load_documents(tmp_path / "corpus" / "guide")] == ["deep/er/intro.md"]


def test_folder_order_is_by_path_components(tmp_path):
    for rel in ["a.md", "a/b.md", "a-c.md"]:
        write(tmp_path, rel, rel)
    # components compare "a" < "a-c.md" < "a.md", so the folder "a" comes first
    assert [d.id for d in load_documents(tmp_path)] == ["a/b.md", "a-c.md", "a.md"]


def test_file_passed_directly_has_its_name_as_id_and_given_path_as_source(tmp_path, monkeypatch):
    write(tmp_path, "notes/today.md", "# Today")
    monkeypatch.chdir(tmp_path)
    (doc,) = load_documents("notes/today.md")
    assert doc.id == "today.md"
    assert doc.text == "# Today"
    assert doc.metadata == {"source": "notes/today.md", "path": str(tmp_path / "notes/today.md")}


def test_paths_list_keeps_the_given_order_and_accepts_str_and_path(tmp_path):
    write(tmp_path, "b.txt", "b")
    write(tmp_path, "dir/a.md", "a")
    docs = load_documents([str(tmp_path / "b.txt"), tmp_path / "dir"])
    assert [d.id for d in docs] == ["b.txt", "a.md"]


def test_hidden_files_and_folders_are_skipped_in_a_walk(tmp_path):
    write(tmp_path, "visible.md", "v")
    write(tmp_path, ".hidden.md", "h")
    write(tmp_path, ".git/notes.md", "g")
    write(tmp_path, "sub/.cache/x.txt", "c")
    write(tmp_path, "sub/y.txt", "y")
    assert [d.id for d in load_documents(tmp_path)] == ["sub/y.txt", "visible.md"]


def test_hidden_file_passed_explicitly_is_loaded(tmp_path):
    path = write(tmp_path, ".notes.md", "secret")
    assert [d.text for d in load_documents(path)] == ["secret"]


def test_other_suffixes_in_a_folder_are_ignored_and_suffixes_match_any_case(tmp_path):
    write(tmp_path, "a.MD", "upper")
    write(tmp_path, "b.pdf", b"%PDF")
    write(tmp_path, "c.rst", "rst")
    assert [d.id for d in load_documents(tmp_path)] == ["a.MD"]
    custom = load_documents(tmp_path, suffixes=[".rst"])
    assert [(d.id, d.text) for d in custom] == [("c.rst", "rst")]  # non-JSONL suffixes are text


def test_empty_file_is_a_document_with_empty_text(tmp_path):
    write(tmp_path, "empty.md", b"")
    write(tmp_path, "empty.jsonl", b"")
    assert [(d.id, d.text) for d in load_documents(tmp_path)] == [("empty.md", "")]


# -- text decoding --------------------------------------------------------------------------------


def test_utf8_bom_is_stripped(tmp_path):
    write(tmp_path, "bom.txt", b"\xef\xbb\xbfcaf\xc3\xa9")
    write(tmp_path, "bom.jsonl", b"\xef\xbb\xbf" + jsonl({"text": "x"}).encode())
    docs = load_documents(tmp_path)
    assert [d.text for d in docs] == ["x", "café"]


def test_crlf_and_lone_cr_are_preserved(tmp_path):
    raw = b"line one\r\nline two\rline three\n"
    write(tmp_path, "crlf.txt", raw)
    (doc,) = load_documents(tmp_path)
    assert doc.text == raw.decode()
    assert doc.text.index("line two") == raw.index(b"line two")


def test_jsonl_with_crlf_line_endings_parses(tmp_path):
    write(tmp_path, "a.jsonl", b'{"text": "one"}\r\n{"text": "two\\r\\n"}\r\n')
    assert [d.text for d in load_documents(tmp_path)] == ["one", "two\r\n"]


# -- JSONL ----------------------------------------------------------------------------------------


def test_jsonl_ids_from_the_id_field_or_the_line_number(tmp_path):
    write(
        tmp_path,
        "data/faq.jsonl",
        jsonl({"id": "q1", "text": "first"}, {"text": "second", "lang": "en"})
        + "\n   \n"  # blank lines are skipped but still counted
        + jsonl({"id": 7, "text": "third", "tags": ["a", "b"], "score": 0.5}),
    )
    docs = load_documents(tmp_path)
    assert [d.id for d in docs] == ["q1", "data/faq.jsonl#2", "7"]
    assert [d.text for d in docs] == ["first", "second", "third"]
    path = str(tmp_path / "data" / "faq.jsonl")
    assert docs[0].metadata == {"source": "data/faq.jsonl#1", "path": path}
    assert docs[1].metadata == {"lang": "en", "source": "data/faq.jsonl#2", "path": path}
    assert docs[2].metadata == {
        "tags": ["a", "b"], "score": 0.5, "source": "data/faq.jsonl#5", "path": path
    }


def test_jsonl_passed_directly_bases_ids_on_the_name_and_sources_on_the_given_path(tmp_path):
    path = write(tmp_path, "sub/rows.jsonl", jsonl({"text": "a"}))
    (doc,) = load_documents(str(path))
    assert doc.id == "rows.jsonl#1"
    assert doc.metadata["source"] == f"{path}#1"


def test_custom_text_and_id_fields(tmp_path):
    write(tmp_path, "a.jsonl", jsonl({"key": "k1", "body": "hello", "text": "not this"}))
    (doc,) = load_documents(tmp_path, text_field="body", id_field="key")
    assert (doc.id, doc.text) == ("k1", "hello")
    assert doc.metadata["text"] == "not this"  # other keys, including the default field, stay


def test_loader_source_and_path_win_over_same_named_keys(tmp_path):
    write(tmp_path, "a.jsonl", jsonl({"text": "t", "source": "http://x", "path": "/elsewhere"}))
    (doc,) = load_documents(tmp_path)
    assert doc.metadata == {"source": "a.jsonl#1", "path": str(tmp_path / "a.jsonl")}


def test_jsonl_keeps_unicode_line_separators_inside_strings(tmp_path):
    write(tmp_path, "a.jsonl", '{"text": "a\u2028b"}\n'.encode())
    assert [d.text for d in load_documents(tmp_path)] == ["a\u2028b"]


# -- errors, one by one ---------------------------------------------------------------------------


def test_binary_file_is_named(tmp_path):
    path = write(tmp_path, "img.txt", b"GIF89a\x00\x01")
    problem = one_problem(tmp_path)
    assert problem.path == str(path)
    assert str(problem).startswith(f"{path}: is binary (NUL byte at byte offset 6)")


def test_utf16_file_is_reported_as_binary_with_a_hint(tmp_path):
    write(tmp_path, "u16.txt", "hello".encode("utf-16"))
    assert "looks like UTF-16; convert it to UTF-8" in str(one_problem(tmp_path))


def test_invalid_utf8_gives_the_byte_offset_and_suggests_converting(tmp_path):
    path = write(tmp_path, "latin.md", b"ok\ncaf\xe9\n")
    message = str(one_problem(tmp_path))
    assert message.startswith(f"{path}: is not valid UTF-8")
    assert "byte 0xE9 at byte offset 6, line 2" in message
    assert "convert it to UTF-8" in message


def test_invalid_utf8_offset_counts_the_bom(tmp_path):
    write(tmp_path, "bom.md", b"\xef\xbb\xbfab\xff")
    assert "byte 0xFF at byte offset 5" in str(one_problem(tmp_path))


@pytest.mark.parametrize(
    "line, expected",
    [
        ('{"text": "a",}', "is not valid JSON (Expecting property name enclosed in double quotes"),
        ("[1, 2]", 'is a JSON array, not an object; each line must be an object like {"text": '),
        ('"just text"', "is a JSON string, not an object"),
        ('{"body": "x", "title": "t"}', "has no 'text' field (its keys: 'body', 'title'); set "),
        ("{}", "has no 'text' field (its keys: none)"),
        ('{"text": 42}', "field 'text' must be a string; got number"),
        ('{"text": null}', "field 'text' must be a string; got null"),
        ('{"text": "x", "id": 1.5}', "field 'id' must be a non-empty string or an integer; got n"),
        ('{"text": "x", "id": true}', "got boolean"),
        ('{"text": "x", "id": ""}', "got an empty string"),
        ('{"text": "\\ud800"}', "lone surrogate U+D800"),
    ],
)
def test_bad_jsonl_line_names_file_and_line(tmp_path, line, expected):
    path = write(tmp_path, "rows.jsonl", jsonl({"text": "good"}) + "\n" + line + "\n")
    problem = one_problem(tmp_path)
    assert (problem.path, problem.line) == (str(path), 3)
    assert str(problem).startswith(f"{path} line 3: ")
    assert expected in str(problem)


def test_duplicate_ids_name_both_sources(tmp_path):
    write(tmp_path, "one/a.md", "1")
    write(tmp_path, "two/a.md", "2")
    problem = one_problem([tmp_path / "one", tmp_path / "two"])
    assert problem.path == str(tmp_path / "two" / "a.md")
    first = tmp_path / "one" / "a.md"
    assert f"duplicate document id 'a.md', already used by {first}" in str(problem)


def test_duplicate_jsonl_ids_name_both_lines(tmp_path):
    path = write(tmp_path, "a.jsonl", jsonl({"id": "x", "text": "1"}, {"id": "x", "text": "2"}))
    problem = one_problem(tmp_path)
    assert problem.line == 2
    assert str(problem).startswith(
        f"{path} line 2: duplicate document id 'x', already used by {path} line 1"
    )


def test_same_file_twice_is_reported(tmp_path):
    path = write(tmp_path, "sub/a.md", "x")
    problem = one_problem([tmp_path, path])  # ids differ ("sub/a.md", "a.md"), the file does not
    assert str(problem) == f"{path}: is the same file as {path}; pass it once"


def test_missing_path_is_named(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    problem = one_problem("nope/x.md")
    assert str(problem) == f"nope/x.md: does not exist (looked for {tmp_path / 'nope' / 'x.md'})"


def test_folder_without_matching_files_says_what_it_has(tmp_path):
    write(tmp_path, "docs/a.pdf", b"%PDF")
    write(tmp_path, "docs/b.pdf", b"%PDF")
    write(tmp_path, "docs/.hidden.md", "h")
    message = str(one_problem(tmp_path / "docs"))
    assert message.startswith(
        f"{tmp_path / 'docs'}: folder has no files ending in .txt, .md, .markdown, .jsonl"
    )
    assert ".pdf (2)" in message


def test_empty_folder_is_an_error(tmp_path):
    (tmp_path / "empty").mkdir()
    assert "folder has no files ending in" in str(one_problem(tmp_path / "empty"))


def test_explicit_file_with_other_suffix_names_suffix_and_allowed_ones(tmp_path):
    path = write(tmp_path, "report.pdf", b"%PDF")
    problem = one_problem(path)
    assert str(problem) == (
        f"{path}: has suffix '.pdf'; allowed: .txt, .md, .markdown, .jsonl "
        "(set suffixes= to load other files)"
    )
    assert "has no suffix" in str(one_problem(write(tmp_path, "README", "x")))


def test_load_error_is_a_document_error_and_pickles(tmp_path):
    write(tmp_path, "bad.txt", b"\xff")
    with pytest.raises(DocumentError) as info:
        load_documents(tmp_path)
    copy = pickle.loads(pickle.dumps(info.value))
    assert isinstance(copy, LoadError)
    assert copy.problems == info.value.problems
    assert str(copy) == str(info.value)


# -- raise: everything checked first, everything listed -------------------------------------------


def make_mixed(root: Path) -> dict[str, Path]:
    """Two good files and bad ones spread through the walk order."""
    return {
        "a_good": write(root, "a_good.md", "good a"),
        "b_bad": write(root, "b_bad.txt", b"\xff\xfe\xfd"),
        "c_good": write(root, "c_good.jsonl", jsonl({"text": "good c"})),
        "d_bad": write(root, "d_bad.jsonl", "not json\n" + jsonl({"text": "ok"}) + "[]\n"),
        "z_bad": write(root, "z/z_bad.md", b"\x00binary"),
    }


def test_raise_lists_every_bad_file(tmp_path):
    files = make_mixed(tmp_path)
    with pytest.raises(LoadError) as info:
        load_documents(tmp_path)
    problems = info.value.problems
    assert [(p.path, p.line) for p in problems] == [
        (str(files["b_bad"]), None),
        (str(files["d_bad"]), 1),
        (str(files["d_bad"]), 3),
        (str(files["z_bad"]), None),
    ]
    message = str(info.value)
    assert message.startswith("4 problems in 3 files, nothing was loaded: ")
    for p in problems:
        assert str(p) in message
    assert "\n" not in message
    assert "... and" not in message


def test_raise_message_shows_a_few_then_counts_the_rest(tmp_path):
    for i in range(8):
        write(tmp_path, f"bad{i}.txt", b"\xff")
    with pytest.raises(LoadError) as info:
        load_documents(tmp_path)
    assert len(info.value.problems) == 8
    message = str(info.value)
    assert str(tmp_path / "bad4.txt") in message
    assert str(tmp_path / "bad5.txt") not in message
    assert "; ... and 3 more (pass on_error='skip' to load the rest)" in message


def test_iter_raises_before_yielding_anything(tmp_path):
    files = make_mixed(tmp_path)
    problems: list[LoadProblem] = []
    docs = iter_documents(tmp_path, problems=problems)
    with pytest.raises(LoadError) as info:
        next(docs)  # the first file is good, but the bad ones after it are found first
    assert {p.path for p in info.value.problems} == {
        str(files["b_bad"]), str(files["d_bad"]), str(files["z_bad"])
    }
    assert problems == list(info.value.problems)


def test_iter_yields_everything_when_all_is_well(tmp_path):
    write(tmp_path, "a.md", "a")
    write(tmp_path, "b.jsonl", jsonl({"text": "b1"}, {"text": "b2"}))
    docs = iter_documents(tmp_path)
    assert not isinstance(docs, list)
    assert [d.text for d in docs] == ["a", "b1", "b2"]
    assert [d.text for d in docs] == []  # a one-shot iterator


def test_problems_out_parameter_is_filled_in_raise_mode_too(tmp_path):
    write(tmp_path, "bad.txt", b"\xff")
    problems: list[LoadProblem] = []
    with pytest.raises(LoadError):
        load_documents(tmp_path, problems=problems)
    assert [p.path for p in problems] == [str(tmp_path / "bad.txt")]


# -- skip: the good ones, and a report of the rest ------------------------------------------------


def test_skip_returns_good_docs_and_reports_bad_ones(tmp_path, caplog):
    files = make_mixed(tmp_path)
    problems: list[LoadProblem] = []
    with caplog.at_level(logging.WARNING, logger="ragkit.loaders"):
        docs = load_documents(tmp_path, on_error="skip", problems=problems)
    assert [d.text for d in docs] == ["good a", "good c", "ok"]
    assert [(p.path, p.line) for p in problems] == [
        (str(files["b_bad"]), None),
        (str(files["d_bad"]), 1),
        (str(files["d_bad"]), 3),
        (str(files["z_bad"]), None),
    ]
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warnings == [f"skipped {p}" for p in problems]


def test_skip_drops_the_later_duplicate(tmp_path):
    write(tmp_path, "a.jsonl", jsonl({"id": 1, "text": "first"}, {"id": "1", "text": "second"}))
    problems: list[LoadProblem] = []
    docs = load_documents(tmp_path, on_error="skip", problems=problems)
    assert [(d.id, d.text) for d in docs] == [("1", "first")]
    assert [p.line for p in problems] == [2]


def test_skip_with_iter_reports_as_it_goes(tmp_path):
    write(tmp_path, "a.md", "a")
    write(tmp_path, "b.md", b"\xff")
    write(tmp_path, "c.md", "c")
    problems: list[LoadProblem] = []
    docs = iter_documents(tmp_path, on_error="skip", problems=problems)
    assert next(docs).text == "a"
    assert problems == []  # b.md not read yet: the generator is lazy
    assert next(docs).text == "c"
    assert [p.path for p in problems] == [str(tmp_path / "b.md")]


def test_skip_mode_still_returns_a_list_when_nothing_loads(tmp_path):
    problems: list[LoadProblem] = []
    assert load_documents(tmp_path / "missing", on_error="skip", problems=problems) == []
    assert len(problems) == 1


# -- arguments ------------------------------------------------------------------------------------


def test_unknown_on_error_is_a_config_error_at_call_time(tmp_path):
    expected = "^on_error: unknown 'ignore'; choose one of raise, skip$"
    with pytest.raises(ConfigError, match=expected):
        load_documents(tmp_path, on_error="ignore")
    with pytest.raises(ConfigError, match="on_error"):
        iter_documents(tmp_path, on_error="warn")  # before the first next()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"suffixes": ".md"}, r"^suffixes: got the string '.md'; pass a tuple such as \('.md',\)$"),
        ({"suffixes": ("md",)}, "^suffixes: each must be a string starting with '.'"),
        ({"suffixes": ()}, "^suffixes: each must be"),
        ({"text_field": ""}, "^text_field: must be a non-empty string"),
        ({"text_field": "k", "id_field": "k"}, "^id_field: text_field and id_field are both 'k'"),
    ],
)
def test_bad_settings_are_config_errors(tmp_path, kwargs, match):
    with pytest.raises(ConfigError, match=match):
        load_documents(tmp_path, **kwargs)


@pytest.mark.parametrize(
    "paths, match",
    [
        ([], "^paths: is empty"),
        ([""], r"^paths\[0\]: each must be"),
        (42, "^paths: must be a path"),
    ],
)
def test_bad_paths_argument_is_a_config_error(paths, match):
    with pytest.raises(ConfigError, match=match):
        load_documents(paths)


def test_document_loader_is_the_config_behind_the_functions(tmp_path):
    write(tmp_path, "a.jsonl", jsonl({"body": "x"}))
    loader = DocumentLoader(text_field="body")
    assert [d.text for d in loader.load(tmp_path)] == ["x"]
    assert [d.text for d in loader.iter(tmp_path)] == ["x"]


def test_import_ragkit_does_not_import_loaders():
    code = (
        "import sys, ragkit; assert 'ragkit.loaders' not in sys.modules; "
        "f = ragkit.load_documents; assert f.__module__ == 'ragkit.loaders'"
    )
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    subprocess.run([sys.executable, "-c", code], check=True, env=env)
