"""The chunk view (ragkit.view): the HTML says what the chunks are, and nothing else runs.

The HTML is read back with the standard library's parser: its text is the document's text, one
chunk start per chunk, each segment's title names the chunks covering it. The same page in a
real browser is tests/test_view_browser.py.
"""

from __future__ import annotations

import pickle
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

import ragkit
from ragkit import ConfigError, Document, build
from ragkit.cli import main
from ragkit.view import Chunks, render, show

ROOT = Path(__file__).resolve().parents[2]
CORPUS = ROOT / "ragkit" / "data" / "corpus"
HOSTILE = ('Tom & Jerry <b>bold</b> "quoted" \'single\'\n\n<script>window.rkPwned = 1;</script>\n'
           '<img src=x onerror="window.rkPwned = 2"> a &amp; b &lt;c&gt;\n\n' + "tail words " * 30)
OVERLAP = {"name": "fixed", "chunk_size": 12, "overlap": 4, "tokenizer": "whitespace"}


class _Segments(HTMLParser):
    """Text and chunk segments of one ``rk-doc`` div."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.text: list[str] = []
        self.segments: list[dict] = []  # attrs of each rk-seg span, plus its text
        self.tags: list[str] = []
        self._open: dict | None = None

    def handle_starttag(self, tag, attrs):
        self.tags.append(tag)
        attrs = dict(attrs)
        if tag == "span" and "rk-seg" in attrs.get("class", ""):
            self._open = {**attrs, "text": ""}
            self.segments.append(self._open)

    def handle_endtag(self, tag):
        if tag == "span":
            self._open = None

    def handle_data(self, data):
        self.text.append(data)
        if self._open is not None:
            self._open["text"] += data


def _parse(fragment: str) -> _Segments:
    body = re.search(r'<div class="rk-doc">(.*?)</div>', fragment, re.DOTALL).group(1)
    p = _Segments()
    p.feed(body)
    p.close()
    return p


def test_chunker_results_draw_themselves_over_the_document() -> None:
    doc = Document("hostile.md", HOSTILE)
    chunks = build("chunker", OVERLAP).chunk(doc)
    assert isinstance(chunks, Chunks) and chunks == list(chunks)  # still the list it always was
    html = chunks._repr_html_()
    p = _parse(html)
    assert "".join(p.text) == HOSTILE  # every character, in order, escaped and read back
    assert set(p.tags) == {"span"}  # the document's <b>, <script>, <img> stayed text
    assert "<script>" not in html and "&lt;script&gt;" in html
    starts = [s for s in p.segments if "rk-start" in s["class"]]
    assert [s["data-start"] for s in starts] == [str(c.index) for c in chunks]
    assert sum("rk-end" in s["class"] for s in p.segments) == len(chunks)
    for c in chunks:  # each chunk's segments put together are its text, and say who it is
        mine = [s for s in p.segments if str(c.index) in s["data-chunks"].split()]
        assert "".join(s["text"] for s in mine) == c.text
        assert all(f"{c.id}  {c.metadata['tokens']} tokens" in s["title"] for s in mine)
    shared = [s for s in p.segments if len(s["data-chunks"].split()) == 2]
    assert shared and all("repeating-linear-gradient" in s["style"] for s in shared)  # overlap
    assert len(chunks) >= 3


def test_chunks_pickle_as_a_plain_list() -> None:
    chunks = build("chunker", OVERLAP).chunk(Document("d", HOSTILE))
    back = pickle.loads(pickle.dumps(chunks))
    assert type(back) is list and back == chunks


def test_without_the_text_gaps_are_marked() -> None:
    doc = Document("d", "one two\n\n\nthree four")
    chunks = build("chunker", {"name": "fixed", "chunk_size": 2, "tokenizer": "whitespace"})
    html = Chunks(chunks.chunk(doc)).html()  # no documents given
    assert 'title="3 characters between chunks"' in html and "one two" in html


def test_render_refuses_chunks_of_another_text() -> None:
    chunks = build("chunker", OVERLAP).chunk(Document("d", HOSTILE))
    with pytest.raises(ValueError, match=r"chunk d:0-\d+ is not text\[0:"):
        render(chunks, "something else entirely")


def test_show_puts_chunkers_side_by_side() -> None:
    doc = Document("tcp.md", (CORPUS / "tcp.md").read_text(encoding="utf-8"))
    view = ragkit.show(doc, chunkers=[OVERLAP, "sentence"])
    assert [label for label, _ in view.columns] == [
        "fixed chunk_size=12 overlap=4 tokenizer=whitespace",
        "sentence"]  # as given; an object is labelled with its full config
    assert show(doc, chunkers=[build("chunker", "sentence")]).columns[0][0].startswith(
        "sentence chunk_size=256 overlap=0 tokenizer=cl100k")
    html = view._repr_html_()
    assert html.count('class="rk-doc"') == 2 and "repeat(2,minmax(0,1fr))" in html
    for label, chunks in view.columns:
        assert f"<b>{label}</b> tcp.md: {len(chunks)} chunks" in html
    named = show(HOSTILE, chunkers={"<overlap>": OVERLAP})
    assert "<b>&lt;overlap&gt;</b>" in named.page() and "<overlap>" not in named.page()


def test_show_names_a_bad_chunker() -> None:
    with pytest.raises(ConfigError, match=r"chunkers\[1\]\.name: unknown chunker 'nope'"):
        show("text", chunkers=["fixed", "nope"])
    with pytest.raises(ConfigError, match=r"chunkers\.mine: expected a chunker spec"):
        show("text", chunkers={"mine": 3})
    with pytest.raises(ConfigError, match="chunkers: give at least one"):
        show("text", chunkers=[])


def test_page_is_standalone_and_loads_nothing(tmp_path) -> None:
    page = ragkit.show(HOSTILE, chunkers=[OVERLAP]).page()
    assert page.startswith("<!DOCTYPE html>")
    assert "default-src 'none'" in page  # the CSP: no script, no fetch, even if escaping failed
    assert not re.search(r"<script|<link|<img|https?://|src=\"", page.split("</style>")[1])


def test_cli_writes_the_html_view(tmp_path, capsys) -> None:
    src = tmp_path / "hostile.md"
    src.write_text(HOSTILE, encoding="utf-8")
    out = tmp_path / "page.html"
    args = ["chunk", str(src), "-o", "chunker.name=fixed", "-o", "chunker.chunk_size=12",
            "-o", "chunker.overlap=4", "-o", "chunker.tokenizer=whitespace", "--no-progress"]
    assert main([*args, "--format", "html", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    chunks = build("chunker", OVERLAP).chunk(Document("hostile.md", HOSTILE))
    assert page.count("rk-seg rk-start") == len(chunks)  # one start per chunk
    assert "".join(_parse(page).text) == HOSTILE
    assert f"wrote {len(chunks)} chunks of 1 documents" in capsys.readouterr().err
    assert main([*args, "--format", "html"]) == 0  # no --out: the page on standard output
    assert capsys.readouterr().out == page
    assert main([*args, "--out", str(out)]) == 2
    assert "--out: only with --format html" in capsys.readouterr().err


def test_readme_example_runs(tmp_path, monkeypatch) -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    code = next(b for b in re.findall(r"```python\n(.*?)```", readme, re.DOTALL)
                if "ragkit.show(" in b)
    shutil.copytree(CORPUS, tmp_path / "ragkit" / "data" / "corpus")
    monkeypatch.chdir(tmp_path)
    exec(compile(code, "README.md (chunk view)", "exec"), {})
    assert "rk-start" in (tmp_path / "chunks.html").read_text(encoding="utf-8")


def test_import_ragkit_does_not_load_the_view() -> None:
    code = ("import sys, ragkit; print('ragkit.view' in sys.modules); ragkit.show; "
            "print('ragkit.view' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "True"]
