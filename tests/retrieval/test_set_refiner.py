"""set-refine: the best combination of refined passages under a character budget (exact
enumeration, not greedy), redundancy, exact offsets, config."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.pipeline import RAGPipeline
from ragkit.retrieval.base import SelectionContext
from ragkit.retrieval.set_refiner import SetRefiner
from ragkit.types import Chunk, Document, Hit

A = "Alpha arrives with a long and winding story."  # 44 chars
B = "Beta is brief here."  # 19 chars
C = "Gamma is brief too."  # 19 chars
DOC = Document("d", f"{A} {B} {C}")


def hit(text, score):
    start = DOC.text.index(text)
    return Hit(Chunk.of(DOC, start, start + len(text), 0), score, 0)


def axis_embed(groups):
    """Sentence -> the unit vector of the first group whose word it holds."""
    def embed(texts):
        out = np.zeros((len(texts), len(groups)), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, words in enumerate(groups):
                if any(w in t.lower() for w in words):
                    out[i, j] = 1.0
                    break
        return out
    return embed


HITS = [hit(A, 1.0), hit(B, 0.8), hit(C, 0.7)]


def test_the_best_set_beats_the_greedy_one_under_the_budget():
    ctx = SelectionContext(query_vec=np.ones(3, dtype=np.float32) / 3 ** 0.5,
                           embed=axis_embed([["alpha"], ["beta"], ["gamma"]]))
    # greedy by score takes A (44 chars) and then nothing fits in 50: value 1.0;
    # the set {B, C} (38 chars) is worth 0.8 + 0.7 = 1.5
    out = SetRefiner(k=3, budget=50, min_score=None, redundancy=0.5).select("q", HITS, ctx)
    assert [h.chunk.text for h in out] == [B, C]
    for h in out:
        assert DOC.text[h.chunk.start:h.chunk.end] == h.chunk.text
    assert [h.rank for h in out] == [0, 1]
    # everything fits: all three
    out = SetRefiner(k=3, budget=200, min_score=None, redundancy=0.0).select("q", HITS, ctx)
    assert [h.chunk.text for h in out] == [A, B, C]
    # k caps the set
    out = SetRefiner(k=1, budget=200, min_score=None).select("q", HITS, ctx)
    assert [h.chunk.text for h in out] == [A]


def test_redundant_passages_pay_for_saying_the_same_thing():
    # B and C share a vector (both "brief"): the pair costs redundancy * 1
    ctx = SelectionContext(query_vec=np.ones(2, dtype=np.float32) / 2 ** 0.5,
                           embed=axis_embed([["alpha"], ["brief"]]))
    out = SetRefiner(k=3, budget=50, min_score=None, redundancy=0.9).select("q", HITS, ctx)
    assert [h.chunk.text for h in out] == [A]  # 1.0 > 0.8 + 0.7 - 0.9
    out = SetRefiner(k=3, budget=50, min_score=None, redundancy=0.2).select("q", HITS, ctx)
    assert [h.chunk.text for h in out] == [B, C]  # 1.3 > 1.0


def test_passages_are_narrowed_before_the_sets_are_scored():
    whole = Hit(Chunk.of(DOC, 0, len(DOC.text), 0), 1.0, 0)
    ctx = SelectionContext(query_vec=np.array([0, 1, 0], dtype=np.float32),
                           embed=axis_embed([["alpha"], ["beta"], ["gamma"]]))
    out = SetRefiner(k=2, budget=25, min_score=0.5, pad=0).select("beta?", [whole], ctx)
    assert [h.chunk.text for h in out] == [B]  # narrowed to 19 chars, so it fits 25


@pytest.mark.parametrize("seed", range(5))
def test_offsets_stay_exact_through_the_pipeline(seed):
    rng = random.Random(seed)
    words = "cat dog moon sun rain snow bird fish tree rock".split()
    text = " ".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) + "."
                    for _ in range(40))
    emb = {"name": "hash", "dim": 32}
    pipe = RAGPipeline(chunker={"name": "recursive", "chunk_size": 25, "overlap": 8},
                       embedder=emb, k=5, candidates=10,
                       index={"name": "sentence-vectors", "inner": {"name": "memory"},
                              "embedder": emb},
                       selector={"name": "set-refine", "budget": 300, "min_score": 0.2})
    pipe.add([Document("r", text)])
    for q in ("cat moon", "rain snow bird", "rock"):
        hits = pipe.retrieve(q)
        assert 1 <= len(hits) <= 5
        assert sum(len(h.chunk.text) for h in hits) <= 300 or len(hits) == 1
        for h in hits:
            assert text[h.chunk.start:h.chunk.end] == h.chunk.text


@pytest.mark.parametrize("spec,path", [
    ({"budget": 0}, "budget"), ({"k": 0}, "k"), ({"redundancy": -1}, "redundancy"),
    ({"max_candidates": 50}, "max_candidates"), ({"pad": -1}, "pad"),
])
def test_bad_configs_name_the_field(spec, path):
    with pytest.raises(ConfigError, match=path):
        build("selector", {"name": "set-refine", **spec})


def test_config_round_trip():
    sel = build("selector", {"name": "set-refine", "budget": 2500, "redundancy": 0.0})
    assert build("selector", to_config(sel, "selector")) == sel


def test_overlapping_candidates_add_up_as_evidence_for_their_passage():
    # A is met by two overlapping candidates (0.5 + 0.5 = 1.0 once folded); B alone scores 0.8.
    # Only one passage fits the budget: the folded one wins, though each part ranks below B.
    a_start = DOC.text.index(A)
    first = Hit(Chunk.of(DOC, a_start, a_start + 30, 0), 0.5, 0)
    second = Hit(Chunk.of(DOC, a_start + 20, a_start + len(A), 1), 0.5, 1)
    ctx = SelectionContext(query_vec=np.ones(3, dtype=np.float32) / 3 ** 0.5,
                           embed=axis_embed([["alpha"], ["beta"], ["gamma"]]))
    out = SetRefiner(k=2, budget=50, min_score=None, redundancy=0.0).select(
        "q", [hit(B, 0.8), first, second], ctx)
    assert [h.chunk.text for h in out] == [A]
    assert DOC.text[out[0].chunk.start:out[0].chunk.end] == A
