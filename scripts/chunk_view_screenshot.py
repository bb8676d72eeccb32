"""Regenerate docs/chunk_view.png: the chunk view of the bundled tcp.md in headless Chromium.

    python scripts/chunk_view_screenshot.py            # needs chromium, chromium-driver, selenium

Three chunkers side by side (fixed with overlap, so stripes show; recursive; sentence), all at
48 whitespace tokens so the columns have several chunks each. The page is the one
``ragkit.show(...).save()`` writes; the browser loads it from a temporary file, nothing else.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # for tests.browser

import ragkit  # noqa: E402
from tests.browser import chromium, missing  # noqa: E402

CHUNKERS = {
    "fixed, 48 tokens, overlap 12": {"name": "fixed", "chunk_size": 48, "overlap": 12,
                                     "tokenizer": "whitespace"},
    "recursive, 48 tokens": {"name": "recursive", "chunk_size": 48, "tokenizer": "whitespace"},
    "sentence, 48 tokens": {"name": "sentence", "chunk_size": 48, "tokenizer": "whitespace"},
}


def main(out: Path = ROOT / "docs" / "chunk_view.png") -> Path:
    why = missing()
    if why:
        raise SystemExit(f"cannot take the screenshot: {why}")
    doc = ragkit.load_documents(ROOT / "ragkit" / "data" / "corpus" / "tcp.md")[0]
    view = ragkit.show(doc, chunkers=CHUNKERS)
    # a tall window, so each column's scroll pane (80% of the window) holds the whole text
    with tempfile.TemporaryDirectory() as tmp, chromium(width=1400, height=2000) as driver:
        page = Path(tmp) / "chunks.html"
        view.save(page)
        driver.get(page.as_uri())
        driver.find_element("css selector", ".rk-view").screenshot(str(out))
    return out


if __name__ == "__main__":
    print(main())
