"""The page at ``/`` of ``ragkit serve`` in a real headless browser: Debian's ``chromium`` driven
through ``chromium-driver`` by Selenium (nothing downloads a browser). Under CI (``CI=true``) a
missing browser is a failure, not a skip: CI installs it (``.ci/run``)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

pytest.importorskip("fastapi")
pytest.importorskip("transformers")

from tests.serve_helpers import ServerThread, build_index, tiny_served  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"


def browser():
    """A headless Chromium under Selenium, or a skip (a failure under CI) naming what is missing."""
    missing = [p for p in (CHROMIUM, CHROMEDRIVER) if not shutil.which(p)]
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        missing.append("the selenium package (pip install 'ragkit[dev]')")
    if missing:
        message = ("the browser test needs " + ", ".join(missing) +
                   " (apt-get install chromium chromium-driver)")
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                "--window-size=1200,1250"):
        options.add_argument(arg)
    return webdriver.Chrome(service=Service(executable_path=CHROMEDRIVER), options=options)


def ask_in_page(driver, url: str, question: str, screenshot: Path | None = None,
                timeout: float = 120) -> dict:
    """Type ``question`` into the page, wait for the streamed answer to finish and a citation,
    click the first citation and wait for its highlighted passage; what the page showed."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as ec
    from selenium.webdriver.support.ui import WebDriverWait

    wait = WebDriverWait(driver, timeout)
    driver.get(url + "/")
    wait.until(lambda d: d.find_element(By.ID, "model").text)  # /v1/models answered
    box = driver.find_element(By.ID, "question")
    box.send_keys(question)
    driver.find_element(By.ID, "send").click()
    wait.until(lambda d: d.find_element(By.ID, "timings").text)  # the last event has arrived
    citation = wait.until(ec.element_to_be_clickable((By.CSS_SELECTOR, "#sources a.citation")))
    answer = driver.find_element(By.ID, "answer").text
    label = citation.text
    citation.click()
    mark = wait.until(ec.visibility_of_element_located((By.CSS_SELECTOR, "#passage mark")))
    shown = {"answer": answer, "citation": label, "highlighted": mark.text,
             "passage": driver.find_element(By.ID, "passage").text,
             "error": driver.find_element(By.ID, "error").text,
             "timings": driver.find_element(By.ID, "timings").text}
    if screenshot is not None:
        screenshot.parent.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(screenshot))
    return shown


def test_page_streams_an_answer_and_highlights_a_cited_passage(tmp_path):
    driver = browser()
    folder = build_index(tmp_path / "idx")
    try:
        with ServerThread(tiny_served(folder, max_new_tokens=12), folder) as s:
            shown = ask_in_page(driver, s.url, "Who built the Eiffel Tower?",
                                screenshot=tmp_path / "page.png")
            pieces = driver.execute_script("return document.getElementById('answer').textContent")
    finally:
        driver.quit()
    assert shown["error"] == ""
    assert shown["answer"].strip() and pieces.strip()
    source, span = shown["citation"].rsplit(":", 1)
    start, end = (int(x) for x in span.split("-"))
    text = (Path(__file__).parents[2] / "ragkit" / "data" / "corpus" / source).read_text("utf-8")
    # the highlighted passage is exactly the cited chunk, inside its document
    assert shown["highlighted"] == text[start:end].strip() or shown["highlighted"] == text[start:end]
    assert shown["highlighted"] in shown["passage"]
    assert "prefill_tokens_computed=" in shown["timings"]
    assert (tmp_path / "page.png").stat().st_size > 10_000
