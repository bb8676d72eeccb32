"""BM25Index against the Lucene BM25 formula, HybridIndex fusion by hand, both through save/load
and through a pipeline built from a dict."""

from __future__ import annotations

import math
import pickle
from collections import Counter

import numpy as np
import pytest

from ragkit import Document, RAGPipeline
from ragkit.config import build, to_config
from ragkit.errors import ConfigError, IndexMismatchError, MissingDependencyError
from ragkit.testing import HashEmbedder
from ragkit.types import Chunk, Hit
from ragkit.retrieval.base import Index
from ragkit.retrieval.bm25_index import BM25Index
from ragkit.retrieval.hybrid import HybridIndex
from ragkit.retrieval.memory_index import IndexFileError, MemoryIndex
from tests.retrieval.index_helpers import edit_json

WORDS = "apple banana cherry delta echo foxtrot golf hotel india juliet kilo lima".split()


def chunk(i: int, text: str, doc: str | None = None, **metadata) -> Chunk:
    return Chunk(doc or f"d{i % 4}", 100 * i, 100 * i + len(text), text, i,
                 {"n": i, "parity": i % 2, **metadata})


def random_corpus(n: int, seed: int = 0) -> list[Chunk]:
    rng = np.random.default_rng(seed)
    texts = [" ".join(rng.choice(WORDS, size=rng.integers(0, 12))) for _ in range(n)]
    return [chunk(i, t) for i, t in enumerate(texts)]


def lucene_bm25(corpus: list[list[str]], query: list[str], k1: float, b: float) -> np.ndarray:
    """The Lucene BM25 score of every document, float64 (Kamphuis et al., 2020), the reference."""
    n = len(corpus)
    avgdl = sum(map(len, corpus)) / n
    df = Counter(t for doc in corpus for t in set(doc))
    scores = np.zeros(n)
    for i, doc in enumerate(corpus):
        tf = Counter(doc)
        for t in query:  # a repeated query term counts again, as in bm25s
            if tf[t]:
                idf = math.log(1 + (n - df[t] + 0.5) / (df[t] + 0.5))
                scores[i] += idf * tf[t] / (k1 * (1 - b + b * len(doc) / avgdl) + tf[t])
    return scores


def texts_of(hits: list[Hit]) -> list[str]:
    return [h.chunk.text for h in hits]


# -- BM25Index -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("k1", "b"), [(1.5, 0.75), (0.9, 0.4), (2.0, 1.0)])
def test_bm25_scores_match_the_lucene_formula(k1, b):
    chunks = random_corpus(300)
    index = BM25Index(k1=k1, b=b, stopwords=None)
    index.add(chunks[:120], None)  # two adds, so the lazy rebuild covers both
    index.add(chunks[120:], np.zeros((180, 3)))  # any array is ignored
    assert len(index) == 300 and isinstance(index, Index)
    queries = ["apple", "banana cherry", "golf golf hotel", "kilo lima delta echo", "zulu apple"]
    results = index.search(None, 10, queries=queries)
    corpus = [c.text.split() for c in chunks]
    row = {c.id: i for i, c in enumerate(chunks)}
    for query, hits in zip(queries, results):
        ref = lucene_bm25(corpus, query.split(), k1, b)
        matching = {i for i, doc in enumerate(corpus) if set(doc) & set(query.split())}
        got = [row[h.chunk.id] for h in hits]
        assert len(hits) == min(10, len(matching)) and set(got) <= matching
        np.testing.assert_allclose([h.score for h in hits], ref[got], rtol=1e-5, atol=1e-6)
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        left_out = [ref[i] for i in matching - set(got)]
        assert not left_out or max(left_out) <= hits[-1].score + 1e-5  # the top k, up to float32
        assert [h.rank for h in hits] == list(range(len(hits)))
        assert all(type(h.score) is float for h in hits)


def test_bm25_returns_only_chunks_sharing_a_term_and_breaks_ties_by_insertion():
    index = BM25Index(stopwords=None)
    index.add([chunk(0, "red fox"), chunk(1, "blue whale"), chunk(2, "red fox"),
               chunk(3, "green frog")], None)
    [hits] = index.search(None, 10, queries=["red"])
    assert [h.chunk.index for h in hits] == [0, 2]  # equal scores: insertion order
    assert hits[0].score == hits[1].score > 0
    assert index.search(None, 10, queries=["zebra"]) == [[]]
    assert index.search(None, 0, queries=["red"]) == [[]]
    results = index.search(None, 1, queries=["red", "frog", "whale red"])
    assert [len(r) for r in results] == [1, 1, 1]


def test_bm25_needs_query_texts_and_checks_them():
    index = BM25Index()
    index.add([chunk(0, "some text here")], None)
    with pytest.raises(TypeError, match="queries="):
        index.search(np.zeros((1, 4)), 3)
    with pytest.raises(TypeError, match="single str"):
        index.search(None, 3, queries="some text")
    with pytest.raises(ValueError, match="2 query vectors but 1 queries"):
        index.search(np.zeros((2, 4)), 3, queries=["text"])
    with pytest.raises(ValueError, match="k must be"):
        index.search(None, -1, queries=["text"])
    with pytest.raises(TypeError, match="Chunk"):
        index.add(["not a chunk"], None)


def test_bm25_tokenization_options():
    docs = [chunk(0, "The bees were running to the hive"), chunk(1, "A Bee runs home")]
    plain = BM25Index()
    plain.add(docs, None)
    assert texts_of(plain.search(None, 5, queries=["run"])[0]) == []  # no stemming
    assert plain.search(None, 5, queries=["the to a"]) == [[]]  # English stopwords only
    assert texts_of(plain.search(None, 5, queries=["BEES"])[0]) == [docs[0].text]  # lowercased
    stemmed = BM25Index(stemmer="english")
    stemmed.add(docs, None)
    assert stemmed.tokenize(["running bees"]) == [["run", "bee"]]
    assert {h.chunk.index for h in stemmed.search(None, 5, queries=["run bee"])[0]} == {0, 1}
    cased = BM25Index(lowercase=False, stopwords=None)
    cased.add(docs, None)
    assert texts_of(cased.search(None, 5, queries=["Bee"])[0]) == [docs[1].text]
    assert texts_of(cased.search(None, 5, queries=["The"])[0]) == [docs[0].text]


def test_bm25_missing_stemmer_is_a_clear_error_when_building(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "Stemmer", None)
    with pytest.raises(MissingDependencyError, match="PyStemmer"):
        BM25Index(stemmer="english")
    BM25Index()  # no stemmer, no need


def test_bm25_filters_have_memory_index_semantics():
    chunks = [chunk(i, " ".join(WORDS[i % 5: i % 5 + 3]), source=f"s{i % 3}") for i in range(40)]
    bm25, memory = BM25Index(), MemoryIndex()
    bm25.add(chunks, None)
    memory.add(chunks, np.ones((40, 2), dtype=np.float32))
    [everything] = bm25.search(None, 100, queries=["apple cherry"])
    for flt in ({"parity": 1}, {"doc_id": "d2"}, {"doc_id": ["d1", "d3"], "parity": [0, 1]},
                {"source": ("s0", "s2"), "parity": 0}, {"missing": 1}):
        allowed = {h.chunk.id for h in memory.search(np.ones((1, 2)), 100, filter=flt)[0]}
        [hits] = bm25.search(None, 100, filter=flt, queries=["apple cherry"])
        assert hits == [replace_rank(h, r) for r, h in
                        enumerate(h for h in everything if h.chunk.id in allowed)]
    with pytest.raises(TypeError, match="filter"):
        bm25.search(None, 3, filter=[("parity", 1)], queries=["apple"])


def replace_rank(hit: Hit, rank: int) -> Hit:
    return Hit(hit.chunk, hit.score, rank)


def test_bm25_delete_replace_and_lazy_rebuild(monkeypatch):
    import bm25s

    builds = []
    original = bm25s.BM25.index
    monkeypatch.setattr(bm25s.BM25, "index",
                        lambda self, *a, **kw: builds.append(1) or original(self, *a, **kw))
    index = BM25Index()
    index.add([chunk(0, "alpha beta", doc="a"), chunk(1, "beta gamma", doc="b")], None)
    assert builds == []  # add only tokenizes
    assert len(index.search(None, 5, queries=["beta"])[0]) == 2
    index.search(None, 5, queries=["gamma"])
    assert builds == [1]  # one rebuild serves every search until the next change
    assert index.delete(["a"]) == 1 and index.delete(["zzz"]) == 0
    assert texts_of(index.search(None, 5, queries=["beta"])[0]) == ["beta gamma"]
    assert builds == [1, 1]
    index.add([Chunk("b", 100, 110, "delta only", 1, {"doc_hash": "h2"})], None)  # same id
    assert len(index) == 1 and index.search(None, 5, queries=["gamma"]) == [[]]
    assert index.doc_hash("b") == "h2" and index.doc_hash("a") is None
    with pytest.raises(TypeError, match="single str"):
        index.delete("b")


def test_bm25_contents_and_document_order():
    index = BM25Index()
    parts = [Chunk("doc", 20, 25, "third", 2), Chunk("doc", 0, 5, "first", 0),
             Chunk("doc", 10, 16, "second", 1), Chunk("other", 0, 3, "odd", 0)]
    index.add(parts, None)
    assert [c.text for c in index.chunks()] == ["third", "first", "second", "odd"]
    assert [c.text for c in index.doc_chunks("doc")] == ["first", "second", "third"]
    assert index.doc_chunks("nope") == []


def test_bm25_empty_and_tokenless_indexes_return_nothing():
    index = BM25Index()
    assert index.search(None, 3, queries=["a", "b"]) == [[], []]
    index.add([chunk(0, "a ! ?"), chunk(1, "the of")], None)  # no token survives
    assert index.search(None, 3, queries=["a"]) == [[]]


def test_bm25_bad_config():
    for params, path in [({"k1": -1}, "k1"), ({"b": 1.5}, "b"), ({"method": "okapi"}, "method"),
                         ({"stopwords": "fr"}, "stopwords"), ({"stemmer": "french"}, "stemmer"),
                         ({"lowercase": "yes"}, "lowercase")]:
        with pytest.raises(ConfigError) as err:
            build("index", {"name": "bm25", **params})
        assert err.value.path == f"index.{path}"


def test_bm25_config_round_trip():
    index = BM25Index(k1=1.2, b=0.5, method="bm25+", stemmer="english", stopwords=None)
    assert build("index", to_config(index, "index")) == index


def test_bm25_save_load_round_trip(tmp_path):
    chunks = random_corpus(80, seed=1)
    index = BM25Index(k1=1.2, method="atire", stemmer="english")
    index.add(chunks, None)
    index.info.update({"chunker": {"name": "fixed"}})
    queries = ["apple banana", "hotel", "kilo juliet india"]
    before = index.search(None, 7, queries=queries)
    index.save(tmp_path / "bm25")
    assert sorted(p.name for p in (tmp_path / "bm25").iterdir()) == ["chunks.jsonl", "meta.json"]
    again = BM25Index.load(tmp_path / "bm25")
    assert again == index and again.info == index.info and len(again) == 80
    assert again.search(None, 7, queries=queries) == before
    index.delete(["d0"])
    index.save(tmp_path / "bm25")  # replaces the saved index
    assert len(BM25Index.load(tmp_path / "bm25")) == len(index) < 80


def test_bm25_never_pickles(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("pickle used")

    monkeypatch.setattr(pickle, "dump", refuse)
    monkeypatch.setattr(pickle, "dumps", refuse)
    monkeypatch.setattr(pickle, "load", refuse)
    monkeypatch.setattr(pickle, "loads", refuse)
    index = BM25Index()
    index.add(random_corpus(10), None)
    index.save(tmp_path / "i")
    BM25Index.load(tmp_path / "i").search(None, 3, queries=["apple"])


@pytest.mark.parametrize(
    ("corrupt", "message"),
    [
        (lambda p: (p / "chunks.jsonl").write_text("{}\n", encoding="utf-8"), "checksum"),
        (lambda p: (p / "meta.json").write_text("{not json", encoding="utf-8"), "not valid JSON"),
        (lambda p: (p / "chunks.jsonl").unlink(), "cannot read"),
        (lambda p: edit_json(p / "meta.json", count=99), "meta.json says 99"),
        (lambda p: edit_json(p / "meta.json", version=7), "format version 7"),
        (lambda p: edit_json(p / "meta.json", format="other"), "not a ragkit.bm25_index"),
        (lambda p: edit_json(p / "meta.json", config={"k1": -3}), "invalid index config"),
    ],
)
def test_bm25_corruption_is_detected_with_the_path(tmp_path, corrupt, message):
    index = BM25Index()
    index.add(random_corpus(12), None)
    index.save(tmp_path / "i")
    corrupt(tmp_path / "i")
    with pytest.raises(IndexFileError, match=message) as err:
        BM25Index.load(tmp_path / "i")
    assert str(tmp_path / "i") in str(err.value)


def test_bm25_save_refuses_a_folder_that_is_not_an_index(tmp_path):
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me", encoding="utf-8")
    with pytest.raises(IndexFileError, match="refusing"):
        BM25Index().save(tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text(encoding="utf-8") == "keep me"
    with pytest.raises(IndexFileError, match="not a folder"):
        BM25Index.load(tmp_path / "absent")


# -- HybridIndex ---------------------------------------------------------------------------------


def hits_of(*items: tuple[str, float]) -> list[Hit]:
    return [Hit(Chunk("d", i, i + len(t), t, i), s, r)
            for r, (i, (t, s)) in enumerate(zip(range(0, 100, 10), items))]


def test_rrf_fusion_by_hand():
    a, b, c, d = (Chunk("d", i, i + 1, "abcd"[i], i) for i in range(4))
    dense = [Hit(a, 0.9, 0), Hit(b, 0.8, 1), Hit(c, 0.1, 2)]
    sparse = [Hit(c, 12.0, 0), Hit(d, 3.0, 1)]
    fused = HybridIndex(rrf_k=60).fuse(dense, sparse)
    assert [h.chunk for h in fused] == [c, a, b, d]  # b and d tie: the dense side's comes first
    assert [h.score for h in fused] == pytest.approx([1 / 63 + 1 / 61, 1 / 61, 1 / 62, 1 / 62])
    assert [h.rank for h in fused] == [0, 1, 2, 3]


def test_weighted_fusion_by_hand():
    a, b, c, d = (Chunk("d", i, i + 1, "abcd"[i], i) for i in range(4))
    dense = [Hit(a, 0.9, 0), Hit(b, 0.5, 1), Hit(c, 0.1, 2)]  # -> 1, 0.5, 0
    sparse = [Hit(c, 10.0, 0), Hit(d, 2.0, 1)]  # -> 1, 0
    fused = HybridIndex(fusion="weighted", weight=0.25).fuse(dense, sparse)
    scores = {h.chunk.text: h.score for h in fused}
    assert scores == pytest.approx({"a": 0.25, "b": 0.125, "c": 0.75, "d": 0.0})
    assert [h.chunk.text for h in fused] == ["c", "a", "b", "d"]
    same = HybridIndex(fusion="weighted").fuse([Hit(a, 0.3, 0), Hit(b, 0.3, 1)], [])
    assert [h.score for h in same] == [0.5, 0.5]  # all-equal scores normalise to 1


def hybrid_with(chunks: list[Chunk], **params) -> tuple[HybridIndex, HashEmbedder]:
    emb = HashEmbedder(dim=64)
    index = HybridIndex(**params)
    index.add(chunks, emb.embed([c.text for c in chunks]))
    return index, emb


def test_hybrid_search_fuses_both_sides(monkeypatch):
    chunks = random_corpus(60, seed=3)
    index, emb = hybrid_with(chunks)
    queries = ["apple golf", "kilo"]
    asked = []
    for side in (index.dense, index.sparse):
        original = side.search
        monkeypatch.setattr(
            side, "search", lambda *a, _o=original, **kw: asked.append(a[1]) or _o(*a, **kw)
        )
    results = index.search(emb.embed(queries), 5, queries=queries)
    assert asked == [20, 20]  # fetch defaults to 4 * k on each side
    dense = index.dense.search(emb.embed(queries), 20, queries=queries)
    sparse = index.sparse.search(None, 20, queries=queries)
    assert results == [index.fuse(d, s)[:5] for d, s in zip(dense, sparse)]
    assert all(len(r) == 5 for r in results)
    index.fetch = 7
    asked.clear()
    index.search(emb.embed(queries), 5, queries=queries)
    assert asked == [7, 7]


def test_hybrid_filters_and_contents_delegate():
    chunks = random_corpus(30, seed=4)
    index, emb = hybrid_with(chunks)
    assert len(index) == 30 and isinstance(index, Index)
    [hits] = index.search(emb.embed(["apple"]), 10, filter={"parity": 0}, queries=["apple"])
    assert hits and all(h.chunk.metadata["parity"] == 0 for h in hits)
    assert index.doc_chunks("d1") == index.dense.doc_chunks("d1")
    assert index.info is index.dense.info
    in_d1 = sum(1 for c in chunks if c.doc_id == "d1")
    assert index.delete(["d1"]) == in_d1 > 0
    assert len(index) == len(index.sparse) == 30 - in_d1


def test_hybrid_needs_vectors_and_texts():
    index, emb = hybrid_with(random_corpus(5))
    with pytest.raises(TypeError, match="queries="):
        index.search(emb.embed(["apple"]), 3)
    with pytest.raises(TypeError, match="query_vecs"):
        index.search(None, 3, queries=["apple"])
    with pytest.raises(ValueError, match="1 query vectors but 2 queries"):
        index.search(emb.embed(["apple"]), 3, queries=["apple", "pear"])
    with pytest.raises(IndexMismatchError, match="dim"):
        index.add([chunk(99, "x")], np.ones((1, 3), dtype=np.float32))


def test_hybrid_bad_config_names_the_path():
    for params, path in [({"fusion": "max"}, "index.fusion"), ({"weight": 1.5}, "index.weight"),
                         ({"rrf_k": -1}, "index.rrf_k"), ({"fetch": 0}, "index.fetch"),
                         ({"dense": {"name": "nope"}}, "index.dense.name"),
                         ({"sparse": {"name": "bm25", "k1": "x"}}, "index.sparse.k1")]:
        with pytest.raises(ConfigError) as err:
            build("index", {"name": "hybrid", **params})
        assert err.value.path == path


def test_hybrid_config_round_trip():
    index = build("index", {"name": "hybrid", "dense": {"name": "memory", "metric": "ip"},
                            "sparse": {"name": "bm25", "k1": 1.1}, "fusion": "weighted",
                            "weight": 0.7, "fetch": 30})
    assert build("index", to_config(index, "index")) == index
    assert isinstance(index.dense, MemoryIndex) and index.sparse.k1 == 1.1


def test_hybrid_save_load_round_trip(tmp_path):
    chunks = random_corpus(50, seed=5)
    index, emb = hybrid_with(chunks, fusion="weighted", weight=0.3, fetch=25)
    index.info["embedder"] = {"name": "hash"}
    queries = ["apple hotel", "lima"]
    before = index.search(emb.embed(queries), 6, queries=queries)
    index.save(tmp_path / "h")
    assert sorted(p.name for p in (tmp_path / "h").iterdir()) == ["dense", "meta.json", "sparse"]
    again = HybridIndex.load(tmp_path / "h")
    assert again == index and again.info == {"embedder": {"name": "hash"}}
    assert again.search(emb.embed(queries), 6, queries=queries) == before


def test_hybrid_load_detects_sides_that_disagree(tmp_path):
    index, emb = hybrid_with(random_corpus(10))
    index.dense.add([chunk(77, "only dense")], emb.embed(["only dense"]))
    index.save(tmp_path / "h")
    with pytest.raises(IndexFileError, match="same chunks"):
        HybridIndex.load(tmp_path / "h")
    (tmp_path / "h" / "sparse" / "chunks.jsonl").write_text("", encoding="utf-8")
    with pytest.raises(IndexFileError, match="checksum"):
        HybridIndex.load(tmp_path / "h")


# -- through the pipeline ------------------------------------------------------------------------

DOCS = [
    Document("bees.md", "Honeybees perform a waggle dance to tell foragers where flowers are. "
             "The dance angle points toward the sun. Foragers return with nectar and pollen."),
    Document("tcp.md", "TCP opens a connection with a three-way handshake: SYN, SYN-ACK, ACK. "
             "Lost segments are retransmitted after a timeout."),
    Document("eiffel.md", "The Eiffel Tower was completed in 1889 for the World's Fair in Paris. "
             "It is made of wrought iron and was the tallest structure of its time."),
]


def test_pipeline_with_hybrid_index_and_mmr_from_a_dict(tmp_path):
    config = {
        "chunker": {"name": "recursive", "chunk_size": 12, "tokenizer": "whitespace"},
        "embedder": {"name": "hash", "dim": 128},
        "index": {"name": "hybrid", "sparse": {"name": "bm25", "stemmer": "english"}},
        "selector": {"name": "mmr", "k": 3, "lambda_": 0.7},
        "k": 3,
    }
    pipe = RAGPipeline.from_config(config)
    assert isinstance(pipe.index, HybridIndex)
    report = pipe.add(DOCS)
    assert report.documents == 3 and len(pipe.index) == len(pipe.index.sparse) == report.chunks
    hits = pipe.retrieve("three-way handshake SYN")
    assert len(hits) == 3 and hits[0].chunk.doc_id == "tcp.md"
    assert [h.rank for h in hits] == [0, 1, 2]
    assert pipe.retrieve("waggle dancing foragers")[0].chunk.doc_id == "bees.md"  # stemmed
    assert pipe.add(DOCS).unchanged == 3  # doc_hash from the dense side
    pipe.save(tmp_path / "p")
    again = RAGPipeline.load(tmp_path / "p")
    assert again == pipe and again.to_config() == pipe.to_config()
    for q in ("three-way handshake SYN", "wrought iron tower", "nectar"):
        assert [(h.chunk, round(h.score, 6)) for h in again.retrieve(q)] == [
            (h.chunk, round(h.score, 6)) for h in pipe.retrieve(q)
        ]
