"""The sentence refiner: exact offsets, hand-made cases with known answers, merging, config."""

from __future__ import annotations

import random

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.pipeline import RAGPipeline
from ragkit.retrieval.base import SelectionContext
from ragkit.retrieval.refiners import SentenceRefiner, sentence_spans, sub_chunk, union_chunk
from ragkit.retrieval.selectors import SelectionError
from ragkit.types import Chunk, Document, Hit

DOC = Document("d", "Cats purr loudly. Dogs bark at night. The moon is full. Birds sing at dawn.")


def sents(text):
    return [text[a:b] for a, b in sentence_spans(text)]


def test_sentence_spans_known_answers():
    assert sents(DOC.text) == ["Cats purr loudly.", "Dogs bark at night.", "The moon is full.",
                               "Birds sing at dawn."]
    assert sents('He said "stop." Then left!\n\nA list\n- item one\n- item two') == [
        'He said "stop."', "Then left!", "A list", "- item one", "- item two"]
    assert sents("pi is 3.14 exactly. wiki style . next") == ["pi is 3.14 exactly.",
                                                             "wiki style .", "next"]
    assert sents("no end") == ["no end"] and sents("") == [] and sents("  \n ") == []


def axis_embed(words):
    """An embedder giving sentence i the unit vector of the first listed word it holds."""
    def embed(texts):
        out = np.zeros((len(texts), len(words)), dtype=np.float32)
        for i, t in enumerate(texts):
            for j, w in enumerate(words):
                if w in t.lower():
                    out[i, j] = 1.0
                    break
        return out
    return embed


def test_narrows_a_hit_to_the_matching_sentence_with_exact_offsets():
    chunk = Chunk.of(DOC, 0, len(DOC.text), 0)
    embed = axis_embed(["cats", "dogs", "moon", "birds"])
    ctx = SelectionContext(query_vec=np.array([0, 0, 1, 0.2], dtype=np.float32), embed=embed)
    out = SentenceRefiner(k=5, keep=0.1, min_score=None).select("moon?", [Hit(chunk, 0.7, 0)], ctx)
    assert len(out) == 1
    c = out[0].chunk
    assert c.text == "The moon is full." == DOC.text[c.start:c.end]
    assert c.metadata["refined_from"] == chunk.id and out[0].score == 0.7
    # a looser keep takes the window from the best down to the second sentence within reach
    out = SentenceRefiner(keep=0.9, min_score=None).select("moon?", [Hit(chunk, 0.7, 0)], ctx)
    assert out[0].chunk.text == "The moon is full. Birds sing at dawn."
    # pad widens by whole sentences, never past the hit
    out = SentenceRefiner(keep=0.1, min_score=None, pad=1).select("moon?", [Hit(chunk, 0.7, 0)], ctx)
    assert out[0].chunk.text == "Dogs bark at night. The moon is full. Birds sing at dawn."
    out = SentenceRefiner(keep=0.1, min_score=None, pad=5).select("moon?", [Hit(chunk, 0.7, 0)], ctx)
    assert out[0].chunk == chunk  # nothing cut: the same chunk comes back


def test_whole_keeps_the_top_hits_untouched_and_k_caps_the_count():
    a = Chunk.of(DOC, 0, 37, 0)  # "Cats purr loudly. Dogs bark at night."
    b = Chunk.of(DOC, 38, len(DOC.text), 1)  # "The moon is full. Birds sing at dawn."
    other = Chunk("e", 0, 5, "Other", 0)
    embed = axis_embed(["cats", "dogs", "moon", "birds"])
    ctx = SelectionContext(query_vec=np.array([0, 1, 0, 1], dtype=np.float32), embed=embed)
    hits = [Hit(a, 0.9, 0), Hit(b, 0.8, 1), Hit(other, 0.1, 2)]
    out = SentenceRefiner(k=2, whole=1, keep=0.1).select("q", hits, ctx)
    assert [h.chunk.text for h in out] == [a.text, "Birds sing at dawn."]
    assert [h.rank for h in out] == [0, 1]
    out = SentenceRefiner(k=2, whole=2, keep=0.1).select("q", hits, ctx)
    assert [h.chunk for h in out] == [a, b]
    out = SentenceRefiner(k=2, keep=None, min_score=None).select("q", hits, ctx)
    assert [h.chunk for h in out] == [a, b]


def test_merge_folds_overlapping_hits_and_frees_the_slot():
    text = DOC.text
    first = Chunk.of(DOC, 0, 37, 0)  # sentences 1-2
    overlapping = Chunk.of(DOC, 18, 55, 1)  # sentences 2-3
    last = Chunk.of(DOC, 56, len(text), 2)  # sentence 4
    hits = [Hit(first, 0.9, 0), Hit(overlapping, 0.8, 1), Hit(last, 0.5, 2)]
    out = SentenceRefiner(k=2, keep=None, min_score=None, merge=True).select("q", hits, None)
    assert [h.chunk.text for h in out] == [text[0:55], text[56:]]
    assert out[0].chunk.metadata["merged"] == [first.id, overlapping.id]
    assert all(text[h.chunk.start:h.chunk.end] == h.chunk.text for h in out)
    out = SentenceRefiner(k=2, keep=None, min_score=None, merge=False).select("q", hits, None)
    assert [h.chunk for h in out] == [first, overlapping]
    # a hit arriving later that overlaps two kept ones joins them into one
    a, b = Chunk.of(DOC, 0, 17, 0), Chunk.of(DOC, 38, 55, 2)
    bridge = Chunk.of(DOC, 10, 45, 1)
    out = SentenceRefiner(k=3, keep=None, min_score=None).select("q", [Hit(a, 0.9), Hit(b, 0.8), Hit(bridge, 0.7)],
                                                 None)
    assert [h.chunk.text for h in out] == [text[0:55]]


def test_lexical_scorer_needs_no_model():
    chunk = Chunk.of(DOC, 0, len(DOC.text), 0)
    out = SentenceRefiner(scorer="lexical", keep=0.0).select(
        "When do the birds sing?", [Hit(chunk, 1.0, 0)], None)
    assert out[0].chunk.text == "Birds sing at dawn."


def test_dense_scorer_needs_an_embedder():
    chunk = Chunk.of(DOC, 0, len(DOC.text), 0)
    with pytest.raises(SelectionError, match="context.embed"):
        SentenceRefiner().select("q", [Hit(chunk, 1.0, 0)], SelectionContext())


@pytest.mark.parametrize("seed", range(20))
def test_offsets_stay_exact_on_random_text(seed):
    rng = random.Random(seed)
    words = ["alpha", "beta", "gamma", "x.y", "3.5", "«quote»", "naïve", "日本語", "e.g.", ""]
    seps = [" ", ". ", "! ", "\n", "\n\n", "? ", '." ', " \t"]
    text = "".join(rng.choice(words) + rng.choice(seps) for _ in range(rng.randint(1, 80)))
    doc = Document("r", text)
    cuts = sorted({0, len(text), *(rng.randint(0, len(text)) for _ in range(6))})
    chunks = [Chunk.of(doc, a, b, i) for i, (a, b) in enumerate(zip(cuts, cuts[1:]))]
    # overlapping extra chunks so merging is exercised
    chunks += [Chunk.of(doc, max(0, c.start - 7), min(len(text), c.end + 7), 100 + i)
               for i, c in enumerate(chunks[:3])]
    hits = [Hit(c, rng.random(), i) for i, c in enumerate(chunks)]
    ctx = SelectionContext(query_vec=np.ones(8, np.float32),
                           embed=lambda ts: np.array([[hash(t) % 7 + j for j in range(8)]
                                                      for t in ts], np.float32))
    for refiner in (SentenceRefiner(k=3, keep=0.2, pad=1), SentenceRefiner(scorer="lexical", keep=0),
                    SentenceRefiner(k=4, merge=False, whole=1, keep=0.05)):
        out = refiner.select("alpha gamma", hits, ctx)
        assert len(out) <= refiner.k and [h.rank for h in out] == list(range(len(out)))
        for h in out:
            assert doc.text[h.chunk.start:h.chunk.end] == h.chunk.text
            assert any(c.start <= h.chunk.start and h.chunk.end <= c.end for c in chunks) or \
                "merged" in h.chunk.metadata


def test_union_and_sub_chunk_refuse_what_they_cannot_make_exact():
    a, b = Chunk.of(DOC, 0, 10, 0), Chunk.of(DOC, 20, 30, 1)
    with pytest.raises(ValueError, match="do not overlap"):
        union_chunk(a, b)
    with pytest.raises(ValueError, match="cannot narrow"):
        sub_chunk(a, 5, 20)
    assert union_chunk(a, Chunk.of(DOC, 10, 30, 1)).text == DOC.text[0:30]  # touching joins


@pytest.mark.parametrize(
    "spec, path",
    [
        ({"k": 0}, "k"),
        ({"keep": -0.1}, "keep"),
        ({"pad": -1}, "pad"),
        ({"whole": "all"}, "whole"),
        ({"merge": "yes"}, "merge"),
        ({"scorer": "bm25"}, "scorer"),
        ({"min_score": "high"}, "min_score"),
    ],
)
def test_bad_configs_name_the_field(spec, path):
    with pytest.raises(ConfigError) as err:
        build("selector", {"name": "sentence-refine", **spec})
    assert err.value.path.endswith(path)


def test_config_round_trip_and_pipeline_retrieve_keeps_offsets():
    spec = {"name": "sentence-refine", "k": 3, "whole": 1, "keep": 0.15, "pad": 1,
            "merge": False, "scorer": "dense"}
    refiner = build("selector", spec)
    assert build("selector", to_config(refiner, "selector")) == refiner
    docs = [Document("a", DOC.text * 3), Document("b", "Nothing about animals here. Just text.")]
    pipe = RAGPipeline(chunker={"name": "fixed", "chunk_size": 12, "tokenizer": "whitespace"},
                       embedder={"name": "hash"}, index={"name": "memory"},
                       selector=spec, candidates=10)
    pipe.add(docs)
    text = {d.id: d.text for d in docs}
    hits = pipe.retrieve("When does the moon look full?", k=3)
    assert 0 < len(hits) <= 3
    for h in hits:
        assert text[h.chunk.doc_id][h.chunk.start:h.chunk.end] == h.chunk.text
    assert RAGPipeline.from_config(pipe.to_config()).selector == refiner


def test_best_retrieval_config_builds_with_one_path_named_best():
    from pathlib import Path

    from ragkit.config import load_yaml
    from ragkit.evaluation.retrieval import RetrievalEval

    path = Path(__file__).resolve().parents[2] / "configs" / "eval" / "best_retrieval.yaml"
    spec = load_yaml(path)
    ev = RetrievalEval(paths=spec["paths"], ks=tuple(spec["ks"]))
    assert list(ev.paths) == ["best"] and ev.ks == (5,)
    assert type(ev.paths["best"].selector) is SentenceRefiner


def test_min_score_is_an_absolute_floor_and_the_best_sentence_always_stays():
    chunk = Chunk.of(DOC, 0, len(DOC.text), 0)
    embed = axis_embed(["cats", "dogs", "moon", "birds"])
    q = np.array([0.1, 0.6, 0.1, 0.5], dtype=np.float32)  # cosines ~0.13, 0.77, 0.13, 0.64
    ctx = SelectionContext(query_vec=q, embed=embed)
    out = SentenceRefiner(min_score=0.5).select("q", [Hit(chunk, 1.0, 0)], ctx)
    # dogs and birds clear the floor: the window runs from the first to the last of them
    assert out[0].chunk.text == "Dogs bark at night. The moon is full. Birds sing at dawn."
    out = SentenceRefiner(min_score=0.7).select("q", [Hit(chunk, 1.0, 0)], ctx)
    assert out[0].chunk.text == "Dogs bark at night."
    out = SentenceRefiner(min_score=0.99).select("q", [Hit(chunk, 1.0, 0)], ctx)
    assert out[0].chunk.text == "Dogs bark at night."  # nothing clears it: the best stays
    out = SentenceRefiner(min_score=0.1).select("q", [Hit(chunk, 1.0, 0)], ctx)
    assert out[0].chunk == chunk
    # both floors: a sentence must clear both (dogs 0.76, birds 0.63; keep 0.2 -> 0.56)
    out = SentenceRefiner(min_score=0.1, keep=0.05).select("q", [Hit(chunk, 1.0, 0)], ctx)
    assert out[0].chunk.text == "Dogs bark at night."
    out = SentenceRefiner(min_score=None, keep=None).select("q", [Hit(chunk, 1.0, 0)], ctx)
    assert out[0].chunk == chunk
