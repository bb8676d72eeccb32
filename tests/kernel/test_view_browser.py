"""The chunk view's standalone page in a real headless browser (Debian's Chromium via Selenium).

What the browser shows: one coloured span per chunk start with a dark bar, hover titles with
each chunk's id and token count, overlaps striped, the whole text readable, and a document full
of HTML and script tags shown as text with none of its script run. Locally the test skips when
Chromium is missing; in CI (``CI=true``, or ``RAGKIT_REQUIRE_BROWSER=1`` as .ci/run sets after
installing it) that is a failure.
"""

from __future__ import annotations

import json
import os

import pytest

from ragkit import Document, build
from ragkit.view import PALETTE, Chunks
from tests.browser import chromium, missing

HOSTILE = ('Tom & Jerry <b>bold</b> "quoted"\n\n<script>window.rkPwned = 1;</script>\n'
           '<img src=x onerror="window.rkPwned = 2"> a &amp; b\n\n' + "tail words " * 40)
OVERLAP = {"name": "fixed", "chunk_size": 12, "overlap": 4, "tokenizer": "whitespace"}


@pytest.fixture(scope="module")
def browser():
    why = missing()
    if why:
        if os.environ.get("CI") == "true" or os.environ.get("RAGKIT_REQUIRE_BROWSER") == "1":
            pytest.fail(f"CI needs the browser test: {why}", pytrace=False)
        pytest.skip(why)
    with chromium() as driver:
        yield driver


def _rgb(hex_colour: str) -> str:
    r, g, b = (int(hex_colour[i:i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r}, {g}, {b}, 1)"  # how WebDriver reports computed colours


def test_page_in_chromium(browser, tmp_path) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    doc = Document("hostile.md", HOSTILE)
    chunks = build("chunker", OVERLAP).chunk(doc)
    page = tmp_path / "page.html"
    page.write_text(Chunks(chunks, [doc]).page(), encoding="utf-8")
    browser.get(page.as_uri())

    # the document's tags are text: no element made from them, no script run
    assert browser.execute_script("return typeof window.rkPwned") == "undefined"
    counts = browser.execute_script(
        "return ['script', 'img', 'b'].map(t => document.getElementsByTagName(t).length)")
    assert counts == [0, 0, 0]
    view = browser.find_element(By.CSS_SELECTOR, ".rk-doc")
    assert browser.execute_script("return arguments[0].textContent", view) == HOSTILE
    shown = view.text  # what a reader sees, as rendered
    assert '<script>window.rkPwned = 1;</script>' in shown and "Tom & Jerry <b>bold</b>" in shown

    # one visible start per chunk, in order, with a bar; titles name id and tokens
    starts = browser.find_elements(By.CSS_SELECTOR, ".rk-seg.rk-start")
    assert [s.get_attribute("data-start") for s in starts] == [str(c.index) for c in chunks]
    for s in starts:
        assert s.is_displayed() and s.size["width"] > 0
        assert s.value_of_css_property("border-left-width") == "2px"
    first = starts[0]
    assert first.value_of_css_property("background-color") == _rgb(PALETTE[0])
    ActionChains(browser).move_to_element(first).perform()
    hovered = browser.execute_script("return document.querySelector('.rk-seg:hover')")
    assert hovered is not None and hovered.get_attribute("data-start") == "0"
    c0 = chunks[0]
    assert hovered.get_attribute("title").startswith(
        f"chunk 0  {c0.id}  {c0.metadata['tokens']} tokens  {len(c0.text)} chars")

    # overlaps: striped in both chunks' colours, both named on hover
    shared = [s for s in browser.find_elements(By.CSS_SELECTOR, ".rk-seg")
              if len(s.get_attribute("data-chunks").split()) == 2]
    assert shared
    for s in shared:
        assert "repeating-linear-gradient" in s.value_of_css_property("background-image")
        a, b = (chunks[int(i)] for i in s.get_attribute("data-chunks").split())
        assert a.id in s.get_attribute("title") and b.id in s.get_attribute("title")

    # what each chunk covers, read back from the rendered page, is its text
    covered = json.loads(browser.execute_script("""
        const out = {};
        for (const s of document.querySelectorAll('.rk-seg'))
            for (const i of s.dataset.chunks.split(' ')) out[i] = (out[i] || '') + s.textContent;
        return JSON.stringify(out);"""))
    assert covered == {str(c.index): c.text for c in chunks}
