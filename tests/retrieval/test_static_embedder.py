"""The model2vec embedder on a tiny static model built here (MiniLM's tokenizer, random vectors)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.retrieval.static import Model2VecEmbedder
from tests.contracts.registered import tiny_static_dir


@pytest.fixture(scope="module")
def tiny_static() -> Path:
    return Path(tiny_static_dir())


def test_embeds_normalised_float32_in_order(tiny_static):
    emb = build("embedder", {"name": "model2vec", "model": str(tiny_static)})
    texts = ["The Eiffel Tower", "bees dance", "caf\u00e9 \U0001F44D", "The Eiffel Tower"]
    vecs = emb.embed(texts)
    assert vecs.shape == (4, 8) and vecs.dtype == np.float32 and emb.dim == 8
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-6)
    assert np.array_equal(vecs[0], vecs[3]) and not np.allclose(vecs[0], vecs[1])
    assert np.array_equal(emb.embed(texts[1:2])[0], vecs[1])  # batch-independent
    assert emb.embed([]).shape == (0, 8)
    assert build("embedder", to_config(emb, "embedder")) == emb


def test_missing_model_says_how_to_make_one(tmp_path):
    emb = Model2VecEmbedder(model=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="model: no model2vec model.*distill_model2vec.sh"):
        emb.embed(["x"])


@pytest.mark.parametrize("field, value", [("model", ""), ("max_tokens", 0), ("batch_size", True),
                                          ("normalize", "yes")])
def test_bad_fields_named(field, value):
    params = {"model": "x", field: value}
    with pytest.raises(ConfigError, match=f"^{field}: "):
        Model2VecEmbedder(**params)
