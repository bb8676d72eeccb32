"""The pipeline end to end with the hash embedder, and once with the real MiniLM model."""

from __future__ import annotations

from pathlib import Path

import pytest

from ragkit import Document, RAGPipeline, load_documents
from ragkit.errors import RagkitError

CORPUS = Path(__file__).parents[2] / "ragkit" / "data" / "corpus"


def _hash_pipe(**kw):
    return RAGPipeline(
        chunker={"name": "recursive", "chunk_size": 40, "tokenizer": "whitespace"},
        embedder={"name": "hash", "dim": 128},
        index={"name": "memory"},
        **kw,
    )


def test_add_retrieve_answer_cites_the_right_document():
    pipe = _hash_pipe(k=3)
    docs = load_documents(CORPUS)
    report = pipe.add(docs)
    assert report.documents == len(docs) == 6
    assert report.chunks == len(pipe.index) > report.documents
    hits = pipe.retrieve("waggle dance of honeybees foragers")
    assert len(hits) == 3
    assert hits[0].chunk.doc_id == "honeybees.md"
    assert [h.rank for h in hits] == [0, 1, 2]
    assert hits[0].score >= hits[1].score >= hits[2].score
    doc = next(d for d in docs if d.id == hits[0].chunk.doc_id)
    assert doc.text[hits[0].chunk.start:hits[0].chunk.end] == hits[0].chunk.text
    assert hits[0].citation == f"honeybees.md:{hits[0].chunk.start}-{hits[0].chunk.end}"
    answer = pipe.answer("waggle dance of honeybees foragers")
    assert answer.text is None and list(answer.hits) == hits


def test_re_adding_a_document_replaces_its_chunks():
    pipe = _hash_pipe()
    pipe.add([Document("a", "alpha beta gamma. " * 30)])
    before = len(pipe.index)
    pipe.add([Document("a", "delta only")])
    assert len(pipe.index) == 1 < before
    assert pipe.retrieve("alpha")[0].chunk.text == "delta only"


def test_save_load_gives_identical_results(tmp_path):
    pipe = _hash_pipe()
    pipe.add(load_documents(CORPUS))
    pipe.save(tmp_path / "idx")
    again = RAGPipeline.load(tmp_path / "idx")
    assert again == pipe
    q = "three-way handshake SYN"
    assert [(h.chunk, round(h.score, 6)) for h in again.retrieve(q)] == [
        (h.chunk, round(h.score, 6)) for h in pipe.retrieve(q)
    ]


def test_load_of_a_folder_that_is_no_index_says_so(tmp_path):
    with pytest.raises(RagkitError, match="is not a saved ragkit index"):
        RAGPipeline.load(tmp_path)


def test_empty_query_is_refused():
    with pytest.raises(RagkitError, match="query must be a non-empty string"):
        _hash_pipe().retrieve("   ")


@pytest.mark.slow
def test_quickstart_config_answers_with_minilm():
    from ragkit import load_yaml

    pipe = RAGPipeline.from_config(load_yaml(Path(__file__).parents[2] / "configs" / "quickstart.yaml"))
    pipe.add(load_documents(CORPUS))
    hits = pipe.retrieve("When was the Eiffel Tower completed?")
    assert {h.chunk.doc_id for h in hits} == {"eiffel-tower.md"}
    assert any("completed on 31 March 1889" in h.chunk.text for h in hits)
    # every chunk fits the embedder's window: counted in its own tokenizer
    assert max(c.metadata["tokens"] for c in pipe.index.chunks()) <= 96
    hits = pipe.retrieve("How do bees tell each other where flowers are?")
    assert {h.chunk.doc_id for h in hits} == {"honeybees.md"}
    assert any("waggle dance" in h.chunk.text for h in hits)


def test_unchanged_document_is_a_no_op_and_changed_one_is_replaced():
    pipe = _hash_pipe()
    first = pipe.add([Document("a", "alpha beta. " * 40), Document("b", "gamma delta")])
    assert first.documents == 2 and first.unchanged == 0
    n = len(pipe.index)
    again = pipe.add([Document("a", "alpha beta. " * 40), Document("b", "gamma delta")])
    assert again.unchanged == 2 and again.documents == 0 and len(pipe.index) == n
    changed = pipe.add([Document("b", "epsilon zeta")])
    assert changed.documents == 1 and len(pipe.index) == n
    assert pipe.retrieve("epsilon", k=1)[0].chunk.text == "epsilon zeta"
    assert all("doc_hash" in c.metadata for c in pipe.index.chunks())


def test_index_refuses_a_pipeline_with_another_embedder_or_chunker(tmp_path):
    from ragkit.errors import IndexMismatchError

    pipe = _hash_pipe()
    pipe.add([Document("a", "alpha beta gamma")])
    pipe.save(tmp_path / "idx")
    from ragkit.config import build

    other = RAGPipeline.load(tmp_path / "idx")  # load itself refuses such overrides: see below
    other.embedder = build("embedder", {"name": "hash", "dim": 64})
    assert other.index.info["embedder"] == {"name": "hash", "dim": 128}
    with pytest.raises(IndexMismatchError, match=r"the index was built with embedder \{'name': 'hash', 'dim': 128\}"):
        other.retrieve("alpha")
    rechunked = RAGPipeline.load(tmp_path / "idx")
    rechunked.chunker = build("chunker", {"name": "recursive", "chunk_size": 7,
                                          "tokenizer": "whitespace"})
    rechunked.retrieve("alpha")  # querying is fine: same embedder
    with pytest.raises(IndexMismatchError, match="the index was built with chunker"):
        rechunked.add([Document("b", "new text")])
    assert len(rechunked.index) == 1  # nothing stored was lost


def _saved(tmp_path, index):
    pipe = RAGPipeline(
        chunker={"name": "recursive", "chunk_size": 40, "tokenizer": "whitespace"},
        embedder={"name": "hash", "dim": 64}, index=index, k=3,
    )
    pipe.add(load_documents(CORPUS))
    pipe.save(tmp_path / "ix")
    return pipe, tmp_path / "ix"


def test_load_applies_query_time_overrides(tmp_path):
    pytest.importorskip("faiss")
    pipe, path = _saved(tmp_path, {"name": "faiss", "kind": "hnsw", "ef_search": 16})
    loaded = RAGPipeline.load(path, ["index.ef_search=300", "k=2", "selector.name=mmr"])
    assert loaded.index.ef_search == 300 and loaded.index.hnsw_m == pipe.index.hnsw_m
    assert loaded.k == 2 and type(loaded.selector).__name__ == "MMR"
    assert len(loaded.index) == len(pipe.index)
    assert [h.chunk.id for h in loaded.retrieve("honeybees waggle dance")][:1] == [
        h.chunk.id for h in pipe.retrieve("honeybees waggle dance")][:1]
    assert RAGPipeline.load(path).index.ef_search == 16  # nothing was written back


@pytest.mark.parametrize("override, where, message", [
    ("index.hnsw_m=8", "index.hnsw_m", "saved: 32.*can change on a saved FaissIndex: ef_search, nprobe"),
    ("index.kind=flat", "index.kind", "saved: 'hnsw'"),
    ("chunker.chunk_size=10", "chunker", "fixed when the index was built"),
    ("embedder.dim=32", "embedder", "fixed when the index was built"),
    ("index.ef_search=0", "index.ef_search", "must be an int >= 1"),
])
def test_load_refuses_overrides_of_build_time_keys(tmp_path, override, where, message):
    pytest.importorskip("faiss")
    from ragkit.errors import ConfigError

    _, path = _saved(tmp_path, {"name": "faiss", "kind": "hnsw"})
    with pytest.raises(ConfigError, match=message) as err:
        RAGPipeline.load(path, [override])
    assert err.value.path == where


def test_load_overrides_reach_a_nested_index(tmp_path):
    pytest.importorskip("bm25s")
    from ragkit.errors import ConfigError

    _, path = _saved(tmp_path, {"name": "hybrid"})
    loaded = RAGPipeline.load(path, ["index.fusion=weighted", "index.weight=0.8"])
    assert (loaded.index.fusion, loaded.index.weight) == ("weighted", 0.8)
    with pytest.raises(ConfigError, match="can change on a saved MemoryIndex: none") as err:
        RAGPipeline.load(path, ["index.dense.metric=ip"])
    assert err.value.path == "index.dense.metric"
