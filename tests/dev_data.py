"""Where the data-driven tests find the dev split: the copy shipped in the repository.

``data/chunking_eval`` travels with every clone, so a test that needs it fails loudly when it is
missing (a broken checkout) instead of skipping and hiding that it never ran.
"""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DEV = ROOT / "data" / "chunking_eval"
CORPORA = DEV / "corpora"


def require(path: Path = DEV) -> Path:
    """``path``, or a test failure naming it if it is missing."""
    if not path.exists():
        pytest.fail(f"the dev split is missing: {path} (it ships in the repository; restore it "
                    "with `git checkout -- data/`)", pytrace=False)
    return path
