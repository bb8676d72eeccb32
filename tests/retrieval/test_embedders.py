"""Embedders: the sha256 fake (fast) and the real MiniLM from its PyPI package (slow)."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.testing import HashEmbedder
from ragkit.retrieval.base import Embedder
from ragkit.retrieval.embedders import SentenceTransformerEmbedder


def cos(a: np.ndarray, b: np.ndarray) -> float:
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


# -- HashEmbedder -------------------------------------------------------------------------------


def test_hash_embedder_is_deterministic_across_instances_and_processes():
    texts = ["The quick brown fox", "jumps over the lazy dog", "ÜBER naïve café 東京"]
    a = HashEmbedder(dim=64).embed(texts)
    b = HashEmbedder(dim=64).embed(list(reversed(texts)))[::-1]
    np.testing.assert_array_equal(a, b)
    code = (
        "from ragkit.testing import HashEmbedder; import sys; "
        f"sys.stdout.write(HashEmbedder(dim=64).embed({texts!r}).tobytes().hex())"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    np.testing.assert_array_equal(np.frombuffer(bytes.fromhex(out), np.float32).reshape(3, 64), a)


def test_hash_embedder_shape_dtype_and_unit_norm():
    e = HashEmbedder(dim=32)
    vecs = e.embed(["one two three", "four", "four four FOUR", "", "  ...  "])
    assert vecs.shape == (5, 32) and vecs.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(vecs[:3], axis=1), 1.0, rtol=1e-6)
    np.testing.assert_array_equal(vecs[3:], 0.0)  # no word -> zero vector
    np.testing.assert_allclose(vecs[1], vecs[2], rtol=1e-6)  # case-folded, counts then normalised
    assert e.embed([]).shape == (0, 32)
    assert e.max_tokens is None and e.dim == 32
    assert isinstance(e, Embedder)


def test_hash_embedder_texts_sharing_words_are_closer():
    e = HashEmbedder()
    q, near, far = e.embed(
        [
            "how tall is the eiffel tower in paris",
            "the eiffel tower in paris is 330 metres tall",
            "bananas are rich in potassium and fibre",
        ]
    )
    assert cos(q, near) > 0.5 > cos(q, far) + 0.3


def test_hash_embedder_follows_its_spec_sha256_seeded_bag_of_words():
    def token_vec(token: str) -> np.ndarray:  # the documented recipe, written out independently
        seed = int.from_bytes(hashlib.sha256(token.encode()).digest(), "little")
        return np.random.default_rng(seed).standard_normal(16)

    total = 2 * token_vec("beta") + token_vec("alpha")
    (got,) = HashEmbedder(dim=16).embed(["beta, Alpha! BETA"])
    np.testing.assert_allclose(got, total / np.linalg.norm(total), rtol=1e-5, atol=1e-6)


def test_hash_embedder_rejects_bad_dim_and_single_string():
    for bad in (0, -3, True, 2.5):
        with pytest.raises(ConfigError, match="dim"):
            HashEmbedder(dim=bad)
    with pytest.raises(TypeError, match="single str"):
        HashEmbedder().embed("a text")


def test_hash_embedder_config_round_trip_and_cache_does_not_affect_equality():
    e = build("embedder", {"name": "hash", "dim": 64})
    assert isinstance(e, HashEmbedder) and e.dim == 64
    e.embed(["fill the token cache"])
    assert to_config(e, "embedder") == {"name": "hash", "dim": 64}
    assert build("embedder", to_config(e, "embedder")) == e
    assert e != HashEmbedder(dim=32)


def test_import_ragkit_stays_light():
    code = (
        "import sys, ragkit; "
        "print(*(m in sys.modules for m in ('ragkit.testing', 'torch', 'sentence_transformers')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False", "False"]


# -- SentenceTransformerEmbedder: cheap checks ------------------------------------------------


def test_sentence_transformer_config_round_trip_without_loading():
    spec = {
        "name": "sentence-transformers",
        "model": "all-MiniLM-L6-v2",
        "device": "cpu",
        "batch_size": 8,
        "normalize": False,
        "truncate": True,
        "cache": None,
        "backend": "torch",
        "export_dir": None,
        "threads": None,
    }
    e = build("embedder", spec)
    assert isinstance(e, SentenceTransformerEmbedder)
    assert to_config(e, "embedder") == spec
    assert build("embedder", to_config(e, "embedder")) == e
    assert "_model" not in e.__dict__  # building loads nothing


@pytest.mark.parametrize(
    "params, path",
    [({"batch_size": 0}, "batch_size"), ({"model": ""}, "model"), ({"device": ""}, "device")],
)
def test_sentence_transformer_rejects_bad_params(params, path):
    with pytest.raises(ConfigError) as info:
        SentenceTransformerEmbedder(**params)
    assert info.value.path == path


def test_bogus_model_gives_config_error_naming_it(tmp_path):
    bogus = str(tmp_path / "no-such-model")
    with pytest.raises(ConfigError) as info:
        SentenceTransformerEmbedder(model=bogus).embed(["hello"])
    message = str(info.value)
    assert bogus in message and "offline" in message and "all-MiniLM-L6-v2" in message


def test_folder_that_is_not_a_model_gives_config_error(tmp_path):
    (tmp_path / "readme.txt").write_text("not a model")
    with pytest.raises(ConfigError, match="cannot load sentence-transformers model"):
        SentenceTransformerEmbedder(model=str(tmp_path)).dim


def test_packaged_model_tokenizer_path_without_loading():
    e = SentenceTransformerEmbedder()
    folder = e.tokenizer_path
    assert (Path(folder) / "tokenizer.json").is_file()
    assert "_model" not in e.__dict__


class RecordingModel:
    """Stands in for a loaded SentenceTransformer: records encode's arguments."""

    max_seq_length = 7

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def get_embedding_dimension(self) -> int:
        return 3

    def encode(self, texts, **kwargs):
        self.calls.append(kwargs)
        return np.array([[len(t), 1.0, 0.0] for t in texts], dtype=np.float64)


@pytest.mark.parametrize("normalize", [True, False])
def test_sentence_transformer_passes_its_settings_to_encode(normalize):
    e = SentenceTransformerEmbedder(batch_size=5, normalize=normalize, truncate=True)
    fake = e.__dict__["_model"] = RecordingModel()
    vecs = e.embed(["abc", "a", "abcdef"])
    assert vecs.dtype == np.float32 and vecs[:, 0].tolist() == [3, 1, 6]
    (kwargs,) = fake.calls
    assert kwargs["batch_size"] == 5 and kwargs["normalize_embeddings"] is normalize
    assert kwargs["show_progress_bar"] is False
    assert e.embed([]).shape == (0, 3) and len(fake.calls) == 1  # no model call for []
    assert e.dim == 3 and e.max_tokens == 7
    with pytest.raises(TypeError, match="single str"):
        e.embed("one text")


# -- SentenceTransformerEmbedder: the real model --------------------------------------------


@pytest.fixture(scope="module")
def minilm() -> SentenceTransformerEmbedder:
    return SentenceTransformerEmbedder(batch_size=4)


@pytest.mark.slow
def test_minilm_loads_from_package_with_its_dims(minilm):
    assert minilm.dim == 384
    assert minilm.max_tokens == 256
    assert isinstance(minilm, Embedder)
    assert SentenceTransformerEmbedder(model="sentence-transformers/all-MiniLM-L6-v2").dim == 384


@pytest.mark.slow
def test_minilm_model_loads_once(minilm):
    minilm.embed(["warm up"])
    model = minilm._model
    minilm.embed(["again"])
    assert minilm.dim == 384 and minilm._model is model


@pytest.mark.slow
def test_embedders_naming_one_model_share_it_while_one_holds_it(minilm):
    """An evaluation of twelve chunkers builds twelve embedders: one copy of the weights."""
    import gc

    from ragkit.retrieval.embedders import _SHARED

    model = minilm._model
    other = SentenceTransformerEmbedder(model="sentence-transformers/all-MiniLM-L6-v2", batch_size=8)
    assert other._model is model  # another name for the packaged model, other settings
    assert np.allclose(other.embed(["shared"]), minilm.embed(["shared"]))
    key = next(k for k, ref in _SHARED.items() if ref() is model)
    del model, other
    gc.collect()
    assert _SHARED[key]() is minilm._model  # still held by the fixture
    lone = SentenceTransformerEmbedder(device="cpu:0")  # another device string: its own copy
    assert lone._model is not minilm._model and _SHARED[(key[0], "cpu:0")]() is lone._model
    del lone
    gc.collect()
    assert _SHARED[(key[0], "cpu:0")]() is None  # freed with its last holder


@pytest.mark.slow
def test_minilm_paraphrase_is_closer_than_unrelated(minilm):
    q, para, other = minilm.embed(
        [
            "How do I reset my password?",
            "What are the steps to change a forgotten login password?",
            "The stock market fell sharply on Tuesday afternoon.",
        ]
    )
    assert cos(q, para) > cos(q, other) + 0.3


@pytest.mark.slow
def test_minilm_output_is_normalised_float32_and_empty_input_works(minilm):
    vecs = minilm.embed(["a short text", "another one"])
    assert vecs.dtype == np.float32 and vecs.shape == (2, 384)
    np.testing.assert_allclose(np.linalg.norm(vecs, axis=1), 1.0, rtol=1e-5)
    empty = minilm.embed([])
    assert empty.shape == (0, 384) and empty.dtype == np.float32


@pytest.mark.slow
def test_minilm_keeps_input_order_with_mixed_lengths(minilm):
    texts = [
        "word " * 200,
        "hi",
        "A medium length sentence about rivers and mountains.",
        "x",
        "Tokyo " * 40 + "is a large city.",
        "The cat sat on the mat.",
    ]
    batch = minilm.embed(texts)  # batch_size 4: several length-sorted batches
    one_by_one = np.vstack([minilm.embed([t]) for t in texts])
    np.testing.assert_allclose(batch, one_by_one, atol=1e-5)
    assert len({row.tobytes() for row in batch}) == len(texts)


@pytest.mark.slow
def test_minilm_local_folder_path_works(minilm):
    e = SentenceTransformerEmbedder(model=minilm.tokenizer_path)
    np.testing.assert_allclose(e.embed(["same model"]), minilm.embed(["same model"]), atol=1e-6)


# -- refusing over-long input, the cache, token vectors -----------------------------------------


@pytest.mark.slow
def test_minilm_refuses_text_longer_than_it_reads_unless_truncate(minilm):
    from ragkit.retrieval.embedders import EmbeddingInputError

    long_text = "word " * 300
    with pytest.raises(EmbeddingInputError, match=r"1 of 2 texts are longer than model "
                       r"'all-MiniLM-L6-v2' reads \(256 tokens with its 2 special tokens\)"):
        minilm.embed(["short", long_text])
    fits = "word " * 254
    assert minilm.embed([fits]).shape == (1, 384)
    cut = SentenceTransformerEmbedder(truncate=True).embed([long_text])
    assert np.allclose(cut, SentenceTransformerEmbedder(truncate=True).embed(["word " * 400]), atol=1e-6)
    assert minilm.special_tokens == 2 and minilm.max_text_tokens == 254


@pytest.mark.slow
def test_minilm_cache_serves_repeats_without_the_model(minilm, tmp_path):
    cached = SentenceTransformerEmbedder(cache=str(tmp_path / "e.sqlite"))
    first = cached.embed(["alpha beta", "gamma delta"])
    assert np.allclose(first, minilm.embed(["alpha beta", "gamma delta"]), atol=1e-6)
    again = SentenceTransformerEmbedder(cache=str(tmp_path / "e.sqlite"))
    again._uncached.__dict__["_model"] = None  # any model call would now fail
    assert np.array_equal(again.embed(["gamma delta", "alpha beta"]), first[::-1])


@pytest.mark.slow
def test_minilm_token_windows_equal_the_models_own_token_embeddings(minilm):
    text = "Late chunking pools token vectors computed over the whole document."
    ids, offsets = minilm.token_ids(text)
    (vecs,) = minilm.encode_token_windows([ids])
    direct = minilm._model.encode([text], output_value="token_embeddings")[0]  # with [CLS]/[SEP]
    assert vecs.shape == (len(ids), 384)
    assert np.allclose(vecs, np.asarray(direct)[1:-1], atol=1e-5)
    assert [text[s:e] for s, e in offsets[:2]] == ["Late", "chunk"]
