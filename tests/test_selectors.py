"""Selectors on hand-made score lists with known answers; the knapsack against brute force."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from ragkit import registry
from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.types import Chunk, Document, Hit
from ragkit.retrieval.base import SelectionContext, Selector
from ragkit.retrieval.memory_index import MemoryIndex
from ragkit.retrieval.selectors import (
    MMR,
    Neighbours,
    ScoreGap,
    SelectionError,
    TokenBudget,
    TopK,
    knapsack,
)


def hits_with(scores, tokens=None, doc="d") -> list[Hit]:
    """Hits in the given order with the given scores; chunk i has text 't<i>'."""
    out = []
    for i, s in enumerate(scores):
        meta = {} if tokens is None else {"tokens": tokens[i]}
        text = f"t{i}"
        out.append(Hit(Chunk(doc, 10 * i, 10 * i + len(text), text, i, meta), s, i))
    return out


def texts(hits):
    return [h.chunk.text for h in hits]


# -- every registered selector -------------------------------------------------------------------

SELECTORS = registry.names("selector")


@pytest.mark.parametrize("name", SELECTORS)
def test_every_selector_builds_round_trips_and_keeps_its_contract(name):
    selector = build("selector", name)
    assert isinstance(selector, Selector)
    assert build("selector", to_config(selector, "selector")) == selector
    doc = Document("d", " ".join(f"w{i}" for i in range(20)))
    chunks = [Chunk.of(doc, 3 * i, 3 * i + 2, i) for i in range(7)]  # "w0", "w1", ... with gaps
    index = MemoryIndex()
    index.add(chunks, np.eye(7, 8, dtype=np.float32))
    scores = [0.9, 0.8, 0.75, 0.3, 0.2, 0.1, 0.05]
    hits = [Hit(c, s, r) for r, (c, s) in enumerate(zip(chunks, scores))]

    def embed(texts):
        return np.stack([np.eye(8, dtype=np.float32)[int(t[1:]) % 8] for t in texts])

    context = SelectionContext(query_vec=np.ones(8, dtype=np.float32), embed=embed, index=index)
    out = selector.select("query", hits, context)
    assert [h.rank for h in out] == list(range(len(out)))
    if name != "neighbours":  # the one selector that adds chunks
        assert 0 < len(out) <= len(hits)
        assert len({h.chunk.id for h in out}) == len(out)
        assert {h.chunk for h in out} <= {h.chunk for h in hits}
    assert selector.select("query", [], context) == []


# -- top-k ---------------------------------------------------------------------------------------


def test_top_k_takes_the_best_in_score_order():
    hits = hits_with([0.2, 0.9, 0.5, 0.9, 0.1])
    assert texts(TopK(k=3).select("q", hits, SelectionContext())) == ["t1", "t3", "t2"]
    assert texts(TopK(k=10).select("q", hits[:2], SelectionContext())) == ["t1", "t0"]
    ranked = hits_with([0.9, 0.5])
    assert TopK(k=1).select("q", ranked, SelectionContext()) == ranked[:1]


# -- score gap -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("scores", "params", "keep"),
    [
        ([0.9, 0.85, 0.4, 0.38], {}, 2),
        ([0.9, 0.85, 0.4, 0.38], {"min_k": 3}, 3),  # the cut must keep 3: next largest gap
        ([0.9, 0.85, 0.4, 0.38], {"max_k": 1}, 1),
        ([0.9, 0.2, 0.19, 0.18], {}, 1),
        ([0.9, 0.2, 0.19, 0.18], {"min_k": 2}, 2),  # gaps .01, .01: the earliest
        ([0.5, 0.5, 0.5], {"max_k": 2}, 2),  # no drop at all: max_k
        ([0.9, 0.89, 0.88, 0.2], {"max_k": 3}, 3),  # the sharpest drop is right after max_k
        ([0.9, 0.8, 0.7, 0.6], {"min_gap": 0.2}, 4),  # no drop is sharp enough
        ([0.9, 0.8, 0.7, 0.3], {"min_gap": 0.2}, 3),
        ([10.0, 8.0, 0.2, 0.1], {}, 2),  # gaps 2, 7.8, 0.1
        ([1.0, 0.5, 0.02, 0.01], {}, 1),  # gaps 0.5, 0.48, 0.01
        ([1.0, 0.5, 0.02, 0.01], {"relative": True}, 2),  # 0.5/1, 0.48/0.5, 0.01/0.02
        ([1.0, 0.9, 0.1, 0.01], {"relative": True}, 3),  # 0.1, 0.89, 0.9
        ([1.0, 0.9, 0.1, 0.09], {"relative": True}, 2),  # 0.1, 0.89, 0.1
        ([0.7], {}, 1),
    ],
)
def test_score_gap_cuts_at_the_sharpest_drop(scores, params, keep):
    hits = hits_with(scores)
    out = ScoreGap(**params).select("q", hits, SelectionContext())
    assert out == sorted(hits, key=lambda h: -h.score)[:keep]


def test_score_gap_known_cuts_by_hand():
    # [1.0, 0.5, 0.02, 0.01]: gaps 0.5, 0.48, 0.01 -> keep 1 (absolute); not 2
    assert ScoreGap().cut([1.0, 0.5, 0.02, 0.01]) == 1
    # [10, 8, 0.2, 0.1]: gaps 2, 7.8, 0.1 -> keep 2
    assert ScoreGap().cut([10.0, 8.0, 0.2, 0.1]) == 2
    assert ScoreGap(relative=True).cut([1.0, 0.5, 0.02, 0.01]) == 2  # 0.5, 0.96, 0.5
    assert ScoreGap().cut([]) == 0


def test_score_gap_sorts_its_input():
    hits = hits_with([0.38, 0.9, 0.4, 0.85])
    assert texts(ScoreGap().select("q", hits, SelectionContext())) == ["t1", "t3"]


# -- MMR -----------------------------------------------------------------------------------------


def mmr_context(vectors: dict[str, list[float]], query_vec):
    def embed(texts):
        return np.array([vectors[t] for t in texts], dtype=np.float32)

    return SelectionContext(query_vec=np.array(query_vec, dtype=np.float32), embed=embed)


def test_mmr_picks_a_diverse_second_item():
    # a and its near-duplicate b are the most relevant; c is less relevant but different
    vectors = {"a": [1.0, 0.0, 0.0], "b": [0.99, 0.14, 0.0], "c": [0.6, 0.0, 0.8]}
    hits = [Hit(Chunk("d", i, i + 1, t, i), s, i) for i, (t, s) in enumerate(
        [("a", 0.9), ("b", 0.89), ("c", 0.5)])]
    context = mmr_context(vectors, [1.0, 0.0, 0.0])
    # 2nd pick, lambda 0.3: b 0.3 * 0.99 - 0.7 * 0.99 = -0.40; c 0.3 * 0.6 - 0.7 * 0.6 = -0.24
    assert texts(MMR(k=2, lambda_=0.3).select("q", hits, context)) == ["a", "c"]
    assert texts(MMR(k=2, lambda_=1.0).select("q", hits, context)) == ["a", "b"]  # relevance only
    assert texts(MMR(k=3, lambda_=0.3).select("q", hits, context)) == ["a", "c", "b"]
    out = MMR(k=2, lambda_=0.3).select("q", hits, context)
    assert [h.score for h in out] == [0.9, 0.5] and [h.rank for h in out] == [0, 1]


def test_mmr_by_hand():
    # relevance: a 1.0, b 0.8, c 0.6; similarity to a: b 0.8, c 0.6
    vectors = {"a": [1.0, 0.0], "b": [0.8, 0.6], "c": [0.6, 0.8]}
    hits = [Hit(Chunk("d", i, i + 1, t, i), 1.0, i) for i, t in enumerate("abc")]
    context = mmr_context(vectors, [1.0, 0.0])
    # lambda 0.7, 2nd pick: b 0.7*0.8 - 0.3*0.8 = 0.32; c 0.7*0.6 - 0.3*0.6 = 0.24 -> b
    assert texts(MMR(k=2, lambda_=0.7).select("q", hits, context)) == ["a", "b"]
    # lambda 0.4: b 0.32 - 0.48 = -0.16; c 0.24 - 0.36 = -0.12 -> c
    assert texts(MMR(k=2, lambda_=0.4).select("q", hits, context)) == ["a", "c"]


def test_mmr_embeds_the_query_when_no_vector_is_given_and_needs_an_embedder():
    vectors = {"a": [1.0, 0.0], "b": [0.0, 1.0], "query": [0.0, 2.0]}
    hits = [Hit(Chunk("d", i, i + 1, t, i), 0.5, i) for i, t in enumerate("ab")]
    context = mmr_context(vectors, [0.0, 1.0])
    context.query_vec = None
    assert texts(MMR(k=1).select("query", hits, context)) == ["b"]
    with pytest.raises(SelectionError, match="context.embed"):
        MMR().select("q", hits, SelectionContext())


# -- token budget --------------------------------------------------------------------------------


def brute_force(values, weights, capacity) -> float:
    best = 0.0
    for r in range(len(values) + 1):
        for subset in itertools.combinations(range(len(values)), r):
            if sum(weights[i] for i in subset) <= capacity:
                best = max(best, sum(values[i] for i in subset))
    return best


@pytest.mark.parametrize("seed", range(40))
def test_knapsack_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 11))
    values = rng.normal(0.5, 0.5, n).round(3).tolist()  # some negative
    weights = rng.integers(0, 40, n).tolist()
    capacity = int(rng.integers(1, 120))
    chosen = knapsack(values, weights, capacity)
    assert chosen == sorted(set(chosen))
    assert sum(weights[i] for i in chosen) <= capacity
    assert all(values[i] > 0 for i in chosen)
    assert sum(values[i] for i in chosen) == pytest.approx(brute_force(values, weights, capacity))


def test_token_budget_known_answer():
    # budget 10: {a(6), b(5)} do not fit together; b + c (5 + 5) = 1.3 beats a alone (1.0)
    hits = hits_with([1.0, 0.7, 0.6, -0.5, 0.9], tokens=[6, 5, 5, 1, 11])
    out = TokenBudget(budget=10, tokenizer=None).select("q", hits, SelectionContext())
    assert texts(out) == ["t1", "t2"] and [h.rank for h in out] == [0, 1]
    out = TokenBudget(budget=11, tokenizer=None).select("q", hits, SelectionContext())
    assert texts(out) == ["t0", "t1"]  # 1.7; the negative one is never taken, 11 > budget - 0
    everything = TokenBudget(budget=100, tokenizer=None).select("q", hits, SelectionContext())
    assert texts(everything) == ["t0", "t4", "t1", "t2"]  # all positive ones fit: score order


def test_token_budget_counts_with_a_tokenizer():
    doc = Document("d", "one two three four five six seven")
    hits = [Hit(Chunk.of(doc, 0, 13, 0), 0.9, 0),  # "one two three": 3 words
            Hit(Chunk.of(doc, 14, 23, 1), 0.8, 1),  # "four five": 2
            Hit(Chunk.of(doc, 24, 33, 2), 0.5, 2)]  # "six seven": 2
    selector = TokenBudget(budget=4, tokenizer="whitespace")
    assert selector.tokens(hits[0].chunk) == 3
    assert [h.chunk.index for h in selector.select("q", hits, SelectionContext())] == [1, 2]


def test_token_budget_needs_token_counts():
    with pytest.raises(SelectionError, match="tokens"):
        TokenBudget(tokenizer=None).select("q", hits_with([0.5]), SelectionContext())
    with pytest.raises(ConfigError) as err:
        build("selector", {"name": "token-budget", "tokenizer": "nonsense-tokenizer"})
    assert err.value.path == "selector.tokenizer"


# -- neighbours ----------------------------------------------------------------------------------

TEXT = "Alpha one. Beta two. Gamma three. Delta four. Epsilon five. Zeta six."


def indexed(chunks: list[Chunk]) -> SelectionContext:
    index = MemoryIndex()
    index.add(chunks, np.ones((len(chunks), 2), dtype=np.float32))
    return SelectionContext(index=index)


def touching() -> tuple[Document, list[Chunk]]:
    """Chunks that cover the text exactly: each starts where the last ended."""
    doc = Document("doc", TEXT)
    cuts = [0, 11, 21, 34, 46, 60, len(TEXT)]
    return doc, [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]


def test_neighbours_merge_touching_chunks_into_the_exact_span():
    doc, chunks = touching()
    context = indexed(chunks)
    out = Neighbours(n=1).select("q", [Hit(chunks[2], 0.8, 0)], context)
    assert len(out) == 1
    merged = out[0].chunk
    assert (merged.start, merged.end) == (chunks[1].start, chunks[3].end)
    assert merged.text == doc.text[merged.start:merged.end] == "Beta two. Gamma three. Delta four. "
    assert merged.index == 1 and merged.metadata["merged"] == [c.id for c in chunks[1:4]]
    assert out[0].score == 0.8 and out[0].rank == 0
    edge = Neighbours(n=2).select("q", [Hit(chunks[0], 0.5, 0)], context)[0].chunk
    assert edge.text == doc.text[0:chunks[2].end]  # no chunk before the first


def test_neighbours_join_runs_of_several_hits_and_order_runs_by_score():
    doc, chunks = touching()
    context = indexed(chunks)
    hits = [Hit(chunks[5], 0.9, 0), Hit(chunks[1], 0.4, 1), Hit(chunks[3], 0.6, 2)]
    out = Neighbours(n=0).select("q", hits, context)  # n=0: only hits that touch merge
    assert [h.chunk for h in out] == [chunks[5], chunks[3], chunks[1]]
    out = Neighbours(n=1).select("q", hits, context)  # 0..2 and 2..4 and 4..5 form one run
    assert len(out) == 1 and out[0].chunk.text == TEXT and out[0].score == 0.9
    far = [Hit(chunks[0], 0.3, 0), Hit(chunks[5], 0.7, 1)]
    out = Neighbours(n=1).select("q", far, context)
    assert [h.chunk.text for h in out] == [TEXT[46:], TEXT[:21]]  # best run first
    assert [h.score for h in out] == [0.7, 0.3] and [h.rank for h in out] == [0, 1]
    for h in out:
        assert doc.text[h.chunk.start:h.chunk.end] == h.chunk.text


def test_neighbours_merge_overlapping_chunks():
    doc = Document("doc", TEXT)
    spans = [(0, 15), (10, 28), (21, 40), (34, 55)]  # each overlaps the next
    chunks = [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(spans)]
    out = Neighbours(n=1).select("q", [Hit(chunks[1], 0.5, 0)], indexed(chunks))
    assert len(out) == 1 and out[0].chunk.text == doc.text[0:40]
    out = Neighbours(n=1).select("q", [Hit(chunks[3], 0.5, 0)], indexed(chunks))
    assert out[0].chunk.text == doc.text[21:55]


def test_neighbours_keep_chunks_with_a_gap_as_separate_hits_side_by_side():
    doc = Document("doc", TEXT)
    spans = [(0, 10), (11, 20), (21, 34), (35, 46)]  # whitespace between chunks dropped
    chunks = [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(spans)]
    other = Chunk("other", 0, 5, "Other", 0)
    context = indexed([*chunks, other])
    hits = [Hit(chunks[1], 0.6, 0), Hit(other, 0.4, 1)]
    out = Neighbours(n=1).select("q", hits, context)
    assert [h.chunk for h in out] == [chunks[0], chunks[1], chunks[2], other]  # document order
    assert [h.score for h in out] == [0.6, 0.6, 0.6, 0.4] and [h.rank for h in out] == [0, 1, 2, 3]


def test_neighbours_inner_selector_and_unknown_chunks():
    doc, chunks = touching()
    context = indexed(chunks[:4])
    stray = Hit(Chunk("elsewhere", 0, 3, "abc", 0), 0.95, 0)
    hits = [stray, Hit(chunks[2], 0.9, 1), Hit(chunks[5], 0.1, 2)]
    out = Neighbours(n=1, inner={"name": "top-k", "k": 2}).select("q", hits, context)
    assert out[0] == Hit(stray.chunk, 0.95, 0)  # not in the index: unchanged
    assert out[1].chunk.text == doc.text[chunks[1].start:chunks[3].end] and len(out) == 2
    assert build("selector", to_config(Neighbours(inner={"name": "top-k", "k": 2}), "selector")) \
        == Neighbours(inner=TopK(k=2))
    with pytest.raises(SelectionError, match="doc_chunks"):
        Neighbours().select("q", hits, SelectionContext())


# -- config --------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        ({"name": "top-k", "k": 0}, "selector.k"),
        ({"name": "score-gap", "max_k": 2, "min_k": 3}, "selector.max_k"),
        ({"name": "score-gap", "min_gap": -1}, "selector.min_gap"),
        ({"name": "mmr", "lambda_": 1.5}, "selector.lambda_"),
        ({"name": "mmr", "lambda": 0.5}, "selector.lambda"),
        ({"name": "token-budget", "budget": 0}, "selector.budget"),
        ({"name": "neighbours", "n": -1}, "selector.n"),
        ({"name": "neighbours", "inner": {"name": "top-k", "k": "3"}}, "selector.inner.k"),
    ],
)
def test_bad_selector_configs_name_the_path(spec, path):
    with pytest.raises(ConfigError) as err:
        build("selector", spec)
    assert err.value.path == path


# -- every registered selector: what comes back is exact text of the document ---------------------


@pytest.mark.parametrize("name", SELECTORS)
def test_every_selector_returns_exact_spans_of_the_documents(name):
    """Selectors that change spans (neighbours merges, sentence-refine narrows and merges) must
    keep ``doc.text[start:end] == text``, inside the text the given hits (or the index) hold."""
    doc = Document("d", "One fish. Two fish! Red fish? Blue fish.\nOld fish. New fish. " * 3)
    spans = [(0, 19), (10, 40), (41, 61), (61, 100), (90, 130), (130, len(doc.text))]
    chunks = [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(spans)]
    index = MemoryIndex()
    index.add(chunks, np.eye(len(chunks), 8, dtype=np.float32))
    hits = [Hit(c, 1.0 - 0.1 * i, i) for i, c in enumerate(chunks)]

    def embed(texts):
        return np.stack([np.eye(8, dtype=np.float32)[sum(map(ord, t)) % 8] for t in texts])

    context = SelectionContext(query_vec=np.ones(8, dtype=np.float32), embed=embed, index=index)
    out = build("selector", name).select("red fish", hits, context)
    assert out and [h.rank for h in out] == list(range(len(out)))
    covered = set().union(*(range(c.start, c.end) for c in chunks))
    for h in out:
        assert doc.text[h.chunk.start:h.chunk.end] == h.chunk.text
        assert set(range(h.chunk.start, h.chunk.end)) <= covered
