"""Semantic and cluster chunkers: breakpoint rules, hard sizes, the DP's optimality, configs.

Fast tests use the ``hash`` embedder (a bag of words: sentences that share words are similar) and
the whitespace tokenizer; the ``slow`` ones run all-MiniLM-L6-v2 on the evaluation corpora.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pytest

from ragkit.chunkers.cluster import ClusterChunker, matrix_rewards, optimal_segmentation, vector_rewards
from ragkit.chunkers.semantic import BREAKPOINTS, SemanticChunker, boundary_distances, breakpoints
from ragkit.chunkers.sentence import sentence_spans
from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.testing import HashEmbedder
from ragkit.tokenizers import load_tokenizer
from ragkit.types import Document
from ragkit.retrieval.embedders import SentenceTransformerEmbedder
from tests.contracts.test_chunkers import contract_violations

from tests.dev_data import CORPORA, require

# Two topics with disjoint vocabularies; sentences of a topic share most of their words.
BEES = ["bees", "hive", "honey", "queen", "pollen", "nectar", "wax", "drones", "comb", "swarm"]
PORTS = ["tcp", "packet", "port", "socket", "handshake", "ack", "router", "latency", "header",
         "checksum"]


def topic_sentences(words: list[str], n: int, length: int = 8, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        picked = rng.choice(words, size=length, replace=False)
        out.append(" ".join(picked).capitalize() + ".")
    return out


def two_topics(n: int = 10) -> tuple[str, int]:
    """``n`` sentences about bees, then ``n`` about TCP; returns the text and where TCP starts."""
    first = " ".join(topic_sentences(BEES, n, seed=1))
    second = " ".join(topic_sentences(PORTS, n, seed=2))
    return f"{first} {second}", len(first) + 1


def fast(**params) -> SemanticChunker:
    spec = {"embedder": "hash", "tokenizer": "whitespace", "chunk_size": 1000, **params}
    return build("chunker", {"name": "semantic", **spec})


def topic_of(text: str) -> set[str]:
    words = set(text.lower().replace(".", "").split())
    return {name for name, vocab in (("bees", BEES), ("tcp", PORTS)) if words & set(vocab)}


def check(chunker, doc: Document, size: int | None = None):
    chunks = chunker.chunk(doc)
    tok = getattr(chunker, "tokenizer", None) or chunker.resolved_tokenizer
    problems = contract_violations(doc, chunks, tok, size, 0)
    assert not problems, "\n".join(problems[:10])
    return chunks


# -- breakpoint rules ---------------------------------------------------------------------------


@pytest.mark.parametrize("rule", BREAKPOINTS)
def test_each_rule_cuts_exactly_at_the_topic_change(rule):
    text, switch = two_topics()
    doc = Document("two", text)
    chunks = check(fast(breakpoint=rule), doc, 1000)
    assert [c.start for c in chunks] == [0, switch]
    assert [topic_of(c.text) for c in chunks] == [{"bees"}, {"tcp"}]


def test_gradient_rule_cuts_on_the_peak_not_one_sentence_before():
    dist = np.array([0.3, 0.32, 0.31, 0.95, 0.3, 0.29, 0.33, 0.3])
    assert breakpoints(dist, "gradient") == [4]  # boundary 3 (after unit 3) -> unit 4 starts
    assert breakpoints(dist, "percentile") == [4]


def test_thresholds_change_how_many_cuts():
    text = " ".join(topic_sentences(BEES, 8, seed=3) + topic_sentences(PORTS, 8, seed=4)
                    + topic_sentences(BEES, 8, seed=5))
    doc = Document("three", text)
    strict = check(fast(breakpoint="percentile", threshold=99), doc, 1000)
    loose = check(fast(breakpoint="percentile", threshold=50), doc, 1000)
    assert len(strict) < len(loose)
    # two topic changes: the 92nd percentile of 23 distances keeps the two largest
    chunks = check(fast(breakpoint="percentile", threshold=92), doc, 1000)
    assert [topic_of(c.text) for c in chunks] == [{"bees"}, {"tcp"}, {"bees"}]
    assert [topic_of(c.text) for c in check(fast(breakpoint="std", threshold=1.5), doc, 1000)] \
        == [{"bees"}, {"tcp"}, {"bees"}]


def test_window_compares_groups_on_each_side():
    vecs = np.eye(4)[[0, 0, 1, 0, 2, 2]]  # unit vectors: a a b a c c
    prefix = np.vstack([np.zeros(4), np.cumsum(vecs, axis=0)])
    one = boundary_distances(prefix, 1)
    assert np.allclose(one, [0, 1, 1, 1, 0])
    two = boundary_distances(prefix, 2)  # [a a | b a], [a b | a c], [b a | c c], [a c | c]
    left = np.array([[2, 0, 0], [1, 1, 0], [1, 1, 0], [1, 0, 1]], dtype=float)
    right = np.array([[1, 1, 0], [1, 0, 1], [0, 0, 2], [0, 0, 1]], dtype=float)
    cos = (left * right).sum(1) / np.linalg.norm(left, axis=1) / np.linalg.norm(right, axis=1)
    assert np.allclose(two[1:], 1 - cos)


def test_each_unit_is_embedded_once_in_one_call():
    calls: list[list[str]] = []

    @dataclasses.dataclass(kw_only=True)
    class Counting(HashEmbedder):
        def embed(self, texts):
            calls.append(list(texts))
            return super().embed(texts)

    text, _ = two_topics()
    text = text + " " + text  # every sentence twice: still embedded once
    chunker = SemanticChunker(embedder=Counting(), tokenizer="whitespace", chunk_size=1000)
    chunker.chunk(Document("d", text))
    assert len(calls) == 1
    sentences = {text[s:e].strip() for s, e in sentence_spans(text)}
    assert sorted(calls[0]) == sorted(sentences)


# -- hard sizes ---------------------------------------------------------------------------------


def test_no_cut_rule_still_keeps_the_budget_and_splits_at_the_topic_change():
    text, switch = two_topics()  # 20 sentences of 6 words: 120 tokens
    doc = Document("two", text)
    chunker = fast(breakpoint="percentile", threshold=100, chunk_size=100)
    chunks = check(chunker, doc, 100)
    assert [c.start for c in chunks] == [0, switch]  # the largest distance inside, not the middle


@pytest.mark.parametrize("rule", BREAKPOINTS)
@pytest.mark.parametrize("size", [5, 13, 40])
def test_max_size_is_hard(rule, size):
    long_sentence = " ".join(["swarm"] * 50) + "."
    text = " ".join(topic_sentences(BEES, 6) + [long_sentence] + topic_sentences(PORTS, 6))
    doc = Document("d", text)
    chunks = check(fast(breakpoint=rule, chunk_size=size), doc, size)
    assert max(c.metadata["tokens"] for c in chunks) <= size


def test_min_size_merges_into_the_more_similar_neighbour():
    text = " ".join(topic_sentences(BEES, 6, seed=7) + topic_sentences(PORTS, 6, seed=8))
    doc = Document("d", text)
    every = check(fast(breakpoint="percentile", threshold=0), doc, 1000)
    assert len(every) >= 10  # nearly every boundary is a cut
    merged = check(fast(breakpoint="percentile", threshold=0, min_size=18), doc, 1000)
    assert all(c.metadata["tokens"] >= 18 for c in merged)
    assert all(len(topic_of(c.text)) == 1 for c in merged)  # never across the topic change


def test_the_budget_wins_over_min_size():
    text = " ".join(topic_sentences(BEES, 6) + topic_sentences(PORTS, 6))
    chunks = check(fast(chunk_size=10, min_size=50), Document("d", text), 10)
    assert all(c.metadata["tokens"] <= 10 for c in chunks)


def test_short_and_blank_documents():
    chunker = fast()
    assert chunker.chunk(Document("e", "")) == []
    assert chunker.chunk(Document("w", " \n\t ")) == []
    one = check(chunker, Document("o", "Just one sentence here."), 1000)
    assert [c.text for c in one] == ["Just one sentence here."]
    two = check(chunker, Document("t", "First one. Second one."), 1000)
    assert "".join(c.text for c in two).replace(" ", "") == "Firstone.Secondone."


# -- config -------------------------------------------------------------------------------------


def test_unknown_breakpoint_rule_names_the_field_and_the_choices():
    with pytest.raises(ConfigError) as err:
        build("chunker", {"name": "semantic", "embedder": "hash", "tokenizer": "whitespace",
                          "chunk_size": 10, "breakpoint": "kmeans"})
    msg = str(err.value)
    assert msg.startswith("chunker.breakpoint:") and "'kmeans'" in msg
    assert all(rule in msg for rule in BREAKPOINTS)
    with pytest.raises(ConfigError, match=r"breakpoint: unknown rule 'kmeans'; choose one of "
                                          r"percentile, std, iqr, gradient"):
        SemanticChunker(embedder=HashEmbedder(), tokenizer="whitespace", chunk_size=10,
                        breakpoint="kmeans")


@pytest.mark.parametrize(
    ("params", "where"),
    [
        ({"threshold": 120}, "threshold"),
        ({"breakpoint": "gradient", "threshold": -1}, "threshold"),
        ({"breakpoint": "std", "threshold": -0.5}, "threshold"),
        ({"threshold": "high"}, "threshold"),
        ({"window": 0}, "window"),
        ({"min_size": -1}, "min_size"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"tokenizer": "no-such-tokenizer"}, "tokenizer"),
    ],
)
def test_bad_values_name_their_field(params, where):
    for name in ("semantic", "cluster"):
        spec = {"name": name, "embedder": "hash", "tokenizer": "whitespace", "chunk_size": 10,
                **params}
        if name == "cluster" and where in ("threshold", "window", "min_size"):
            continue
        with pytest.raises(ConfigError, match=rf"^chunker\.{where}: "):
            build("chunker", spec)


@pytest.mark.parametrize("name", ["semantic", "cluster"])
def test_an_embedder_without_tokenizer_or_limit_needs_both_set(name):
    with pytest.raises(ConfigError, match=r"^chunker\.tokenizer: embedder 'hash' has no tokenizer"):
        build("chunker", {"name": name, "embedder": "hash", "chunk_size": 10})
    with pytest.raises(ConfigError, match=r"^chunker\.chunk_size: embedder 'hash' declares no"):
        build("chunker", {"name": name, "embedder": "hash", "tokenizer": "whitespace"})


@pytest.mark.parametrize("name", ["semantic", "cluster"])
def test_config_round_trip(name):
    spec = {"name": name, "embedder": {"name": "hash", "dim": 64}, "tokenizer": "whitespace",
            "chunk_size": 40}
    if name == "semantic":
        spec |= {"breakpoint": "iqr", "threshold": 2, "window": 2, "min_size": 8}
    else:
        spec |= {"piece_size": 10}
    chunker = build("chunker", spec)
    config = to_config(chunker, "chunker")
    assert config["embedder"] == {"name": "hash", "dim": 64}
    assert build("chunker", config) == chunker
    assert build("chunker", config) != build("chunker", {**config, "chunk_size": 41})
    default = build("chunker", name)  # no model is loaded to build or compare
    assert build("chunker", to_config(default, "chunker")) == default
    assert to_config(default)["chunk_size"] is None and to_config(default)["tokenizer"] is None


# -- cluster ------------------------------------------------------------------------------------


def brute_force(rewards: np.ndarray, fits=None) -> float:
    n, k = rewards.shape
    best = -np.inf
    for cuts in itertools.product([False, True], repeat=n - 1):
        bounds = [0, *[i + 1 for i, c in enumerate(cuts) if c], n]
        segs = list(zip(bounds, bounds[1:]))
        if any(b - a > k or (b - a > 1 and fits is not None and not fits(a, b)) for a, b in segs):
            continue
        best = max(best, sum(rewards[a, b - a - 1] for a, b in segs))
    return best


def total(rewards, segments) -> float:
    return sum(rewards[a, b - a - 1] for a, b in segments)


def test_dp_on_a_hand_made_similarity_matrix():
    # pieces 0-2 talk about one thing, 3-4 another, 5 a third
    sim = np.array([
        [1.0, 0.9, 0.8, 0.1, 0.2, 0.1],
        [0.9, 1.0, 0.9, 0.2, 0.1, 0.0],
        [0.8, 0.9, 1.0, 0.1, 0.1, 0.2],
        [0.1, 0.2, 0.1, 1.0, 0.7, 0.1],
        [0.2, 0.1, 0.1, 0.7, 1.0, 0.3],
        [0.1, 0.0, 0.2, 0.1, 0.3, 1.0],
    ])
    rewards = matrix_rewards(sim, 3)
    segments = optimal_segmentation(rewards)
    assert segments == [(0, 3), (3, 5), (5, 6)]
    assert total(rewards, segments) == pytest.approx(brute_force(rewards))
    # at most two pieces per chunk: the first cluster has to be broken
    two = optimal_segmentation(matrix_rewards(sim, 2))
    assert total(matrix_rewards(sim, 2), two) == pytest.approx(brute_force(matrix_rewards(sim, 2)))
    assert all(b - a <= 2 for a, b in two)


@pytest.mark.parametrize("seed", range(12))
def test_dp_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n, k = int(rng.integers(1, 11)), int(rng.integers(1, 5))
    vecs = rng.standard_normal((n, 8))
    vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
    rewards = matrix_rewards(vecs @ vecs.T, k)
    assert np.allclose(vector_rewards(vecs, k), rewards)  # same rewards without the matrix
    segments = optimal_segmentation(rewards)
    assert [a for a, _ in segments[1:]] == [b for _, b in segments[:-1]]
    assert segments[0][0] == 0 and segments[-1][1] == n
    assert total(rewards, segments) == pytest.approx(brute_force(rewards))
    forbidden = {(a, b) for a in range(n) for b in range(a + 2, n + 1) if rng.random() < 0.4}
    fits = lambda a, b: (a, b) not in forbidden  # noqa: E731 (a token budget, in the chunker)
    constrained = optimal_segmentation(rewards, fits)
    assert all(b - a == 1 or fits(a, b) for a, b in constrained)
    assert total(rewards, constrained) == pytest.approx(brute_force(rewards, fits))


def test_cluster_groups_by_topic_within_the_budget():
    text = " ".join(topic_sentences(BEES, 9, length=7, seed=11)
                    + topic_sentences(PORTS, 9, length=7, seed=12))
    doc = Document("d", text)
    chunker = ClusterChunker(embedder=HashEmbedder(), tokenizer="whitespace", chunk_size=24,
                             piece_size=7)  # a sentence a piece, 3 per chunk
    chunks = check(chunker, doc, 24)
    assert all(len(topic_of(c.text)) == 1 for c in chunks)
    assert max(c.metadata["tokens"] for c in chunks) <= 24
    assert len(chunks) == 6


def test_cluster_enforces_the_token_budget_on_merged_text():
    # pieces of 7 words; chunk_size 20 allows 20 // 7 = 2 pieces by count, not 3 (21 words)
    text = " ".join(topic_sentences(BEES, 12, length=7, seed=13))
    chunker = ClusterChunker(embedder=HashEmbedder(), tokenizer="whitespace", chunk_size=20,
                             piece_size=7)
    chunks = check(chunker, Document("d", text), 20)
    assert max(c.metadata["tokens"] for c in chunks) <= 14
    budget = ClusterChunker(embedder=HashEmbedder(), tokenizer="character", chunk_size=40,
                            piece_size=20)
    check(budget, Document("d", text), 40)  # the joining spaces count: 20 + 1 + 20 > 40


# -- the real model -----------------------------------------------------------------------------


@dataclasses.dataclass(kw_only=True)
class RecordingEmbedder(SentenceTransformerEmbedder):
    """all-MiniLM-L6-v2 that records every text it is asked to embed."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.calls: list[list[str]] = []

    def embed(self, texts):
        self.calls.append(list(texts))
        return super().embed(texts)


@pytest.fixture(scope="module")
def minilm() -> RecordingEmbedder:
    return RecordingEmbedder()


def corpora() -> list[Path]:
    paths = sorted(require(CORPORA).glob("*.md"))
    return paths


@pytest.mark.slow
def test_semantic_with_minilm_never_exceeds_the_model_and_embeds_each_sentence_once(minilm):
    chunker = SemanticChunker(embedder=minilm)
    assert chunker.resolved_chunk_size == 254
    model_tok = minilm._model.tokenizer
    for path in corpora():
        text = path.read_text(encoding="utf-8")
        minilm.calls.clear()
        chunks = check(chunker, Document(path.stem, text), 254)
        with_specials = [len(ids) for ids in model_tok([c.text for c in chunks])["input_ids"]]
        assert max(with_specials) <= 256  # what the model reads, [CLS] and [SEP] included
        assert max(c.metadata["tokens"] for c in chunks) <= 254
        units = chunker._budget.cut(text, sentence_spans(text))
        assert len(minilm.calls) == 1
        embedded = minilm.calls[0]
        assert len(embedded) == len(set(embedded))  # nothing embedded twice
        assert set(embedded) == {text[s:e] for s, e in units}  # every sentence, nothing else


@pytest.mark.slow
def test_cluster_with_minilm_never_exceeds_the_model(minilm):
    chunker = ClusterChunker(embedder=minilm)
    model_tok = minilm._model.tokenizer
    for path in corpora():
        text = path.read_text(encoding="utf-8")
        minilm.calls.clear()
        chunks = check(chunker, Document(path.stem, text), 254)
        with_specials = [len(ids) for ids in model_tok([c.text for c in chunks])["input_ids"]]
        assert max(with_specials) <= 256
        assert len(minilm.calls) == 1 and len(set(minilm.calls[0])) == len(minilm.calls[0])


@pytest.mark.slow
def test_other_tokenizer_still_keeps_the_embedders_limit(minilm):
    # 250 cl100k tokens can be more than 254 MiniLM tokens: both limits hold
    text = "日本語のテキストです。これは二番目の文です！" * 60 + " 👨‍👩‍👧 " * 200
    chunker = SemanticChunker(embedder=minilm, tokenizer="cl100k", chunk_size=250)
    chunks = check(chunker, Document("cjk", text), 250)
    mini = load_tokenizer("all-MiniLM-L6-v2")
    assert max(mini.count(c.text) for c in chunks) <= 254


@pytest.mark.slow
def test_chunk_size_over_the_models_limit_is_refused(minilm):
    chunker = SemanticChunker(chunk_size=300)  # the registered embedder, by its name
    with pytest.raises(ConfigError, match=r"^chunk_size: 300 is more than embedder "
                                          r"'sentence-transformers' reads without cutting \(254"):
        chunker.chunk(Document("d", "Some text. More text."))
    same_by_name = SemanticChunker(embedder=minilm, tokenizer="all-MiniLM-L6-v2")
    assert same_by_name.resolved_chunk_size == 254
