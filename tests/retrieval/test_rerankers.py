"""Rerankers: a random-init tiny cross-encoder (no download) and the LLM reranker with a
scripted LLM."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from ragkit.config import build, to_config
from ragkit.errors import ConfigError, RagkitError
from ragkit.testing import ScriptedLLM
from ragkit.types import Chunk, Hit
from ragkit.retrieval.base import Reranker
from ragkit.retrieval.rerankers import (
    DEFAULT_TEMPLATE,
    GRADES,
    LLM,
    CrossEncoderReranker,
    LLMReranker,
    ScoringLLM,
    parse_grade,
)
from tests.contracts.registered import cross_encoder_dir

TEXTS = [
    "Honeybees dance to show where the flowers are.",
    "TCP opens connections with a three-way handshake.",
    "The Eiffel Tower was finished in 1889.",
    "Photosynthesis turns light into chemical energy.",
    "Bees carry pollen between flowers.",
    "A handshake starts every TCP session.",
    "Paris hosted the World's Fair in 1889.",
    "Chlorophyll absorbs red and blue light.",
    "x",
    "A much longer passage about bees, flowers, pollen and nectar, which goes on for a while "
    "so that the batch has inputs of very different lengths and needs padding.",
]


def first_stage(texts=TEXTS) -> list[Hit]:
    return [Hit(Chunk("d", 100 * i, 100 * i + len(t), t, i), 1.0 - 0.05 * i, i)
            for i, t in enumerate(texts)]


@pytest.fixture(scope="module")
def tiny_cross_encoder() -> str:
    """A random-init 2-layer BERT cross-encoder (num_labels=1) with MiniLM's tokenizer, the
    one the reranker contract suite uses (read only)."""
    return cross_encoder_dir()


# -- cross-encoder -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def reranker(tiny_cross_encoder) -> CrossEncoderReranker:
    return CrossEncoderReranker(model=tiny_cross_encoder)


def sharing(reranker: CrossEncoderReranker, **params) -> CrossEncoderReranker:
    """Another reranker on the same loaded model (loading costs a second per test)."""
    other = CrossEncoderReranker(model=reranker.model, **params)
    other.__dict__["_model"] = reranker._model
    return other


def test_cross_encoder_order_follows_its_scores(reranker):
    assert isinstance(reranker, Reranker)
    hits = first_stage()
    scores = reranker.scores("where do bees find flowers?", hits)
    assert scores.shape == (len(hits),) and scores.dtype == np.float32
    assert len(set(scores.round(6).tolist())) > len(hits) // 2  # not all tied
    out = reranker.rerank("where do bees find flowers?", hits)
    assert [h.rank for h in out] == list(range(len(hits)))
    assert sorted(h.chunk.id for h in out) == sorted(h.chunk.id for h in hits)
    expected = sorted(range(len(hits)), key=lambda i: -scores[i])
    assert [h.chunk for h in out] == [hits[i].chunk for i in expected]
    assert [h.score for h in out] == [float(scores[i]) for i in expected]
    assert all(0.0 < h.score < 1.0 for h in out)  # sigmoid of one logit


def test_cross_encoder_is_deterministic_and_batch_consistent(reranker):
    query = "three-way handshake"
    a = reranker.scores(query, first_stage())
    np.testing.assert_array_equal(reranker.scores(query, first_stage()), a)  # same call again
    reloaded = CrossEncoderReranker(model=reranker.model)  # a second load of the saved folder
    np.testing.assert_allclose(reloaded.scores(query, first_stage()), a, rtol=1e-6, atol=1e-7)
    for batch_size in (1, 4):
        other = sharing(reranker, batch_size=batch_size)
        np.testing.assert_allclose(other.scores(query, first_stage()), a, rtol=1e-5, atol=1e-6)
    # a hit's score does not depend on the other hits in the call
    np.testing.assert_allclose(reranker.scores(query, first_stage()[3:5]), a[3:5], rtol=1e-5,
                               atol=1e-6)
    assert reranker.rerank(query, []) == [] and reranker.scores(query, []).shape == (0,)


def test_cross_encoder_max_length_truncates(reranker):
    short = CrossEncoderReranker(model=reranker.model, max_length=8)
    hits = first_stage()
    # the long last passage is cut to 8 tokens; the one-letter passage fits either way
    cut, full = short.scores("bees", hits), reranker.scores("bees", hits)
    assert cut[9] != pytest.approx(full[9], abs=1e-7)
    assert cut[8] == pytest.approx(full[8], abs=1e-6)


@pytest.mark.parametrize("model", [None, "", "   "])
def test_cross_encoder_without_a_model_explains_what_is_needed(model):
    with pytest.raises(ConfigError, match="local cross-encoder folder") as err:
        build("reranker", {"name": "cross-encoder", "model": model})
    assert err.value.path == "reranker.model"


def test_cross_encoder_bad_model_path_fails_on_first_use(tmp_path):
    reranker = CrossEncoderReranker(model=str(tmp_path / "absent"))  # building is cheap
    with pytest.raises(ConfigError, match="cannot load cross-encoder") as err:
        reranker.rerank("q", first_stage()[:2])
    assert err.value.path == "model"


def test_cross_encoder_bad_config_and_round_trip(tmp_path):
    for params, path in [({"batch_size": 0}, "batch_size"), ({"max_length": 1}, "max_length"),
                         ({"device": ""}, "device")]:
        with pytest.raises(ConfigError) as err:
            CrossEncoderReranker(model=str(tmp_path), **params)
        assert err.value.path == path
    reranker = CrossEncoderReranker(model=str(tmp_path), batch_size=4, max_length=64)
    assert build("reranker", to_config(reranker, "reranker")) == reranker


# -- LLM reranker --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "grade"),
    [
        ("7", 7.0), (" 10\n", 10.0), ("0", 0.0), ("Relevance: 8", 8.0), ("**9**", 9.0),
        ("8/10", 8.0), ("I'd rate it 6 out of 10.", 6.0), ("On a scale of 0-10: 3", 3.0),
        ("On a scale from 0 to 10, I give it 4.", 4.0), ("7.5", 7.5), ("Score:5.", 5.0),
        ("The 2023 study is relevant: 8", 8.0), ("out of 10, a 2", 2.0), ("10/10!", 10.0),
        ("-3, no wait, 2", 2.0), ("Relevance: 11... no, 9", 9.0),
        ("", None), ("highly relevant", None), ("42", None), ("twelve", None), ("v2x", None),
    ],
)
def test_parse_grade_reads_sloppy_answers(answer, grade):
    assert parse_grade(answer) == grade


def by_text(grades: dict[str, str]):
    """A script answering by which passage the prompt holds."""

    def answer(prompt: str) -> str:
        return next(a for text, a in grades.items() if f"Passage: {text}\n" in prompt)

    return answer


def test_llm_reranker_sorts_by_grade_and_records_prompts():
    hits = first_stage(["alpha", "beta", "gamma", "delta"])
    llm = ScriptedLLM(answers=by_text({"alpha": "2", "beta": "Relevance: 9", "gamma": "5/10",
                                       "delta": "9"}))
    reranker = LLMReranker(llm=llm)
    out = reranker.rerank("which is best?", hits)
    assert [h.chunk.text for h in out] == ["beta", "delta", "gamma", "alpha"]  # 9 ties: 1st stage
    assert [h.score for h in out] == [9.0, 9.0, 5.0, 2.0]
    assert [h.rank for h in out] == [0, 1, 2, 3]
    assert len(llm.prompts) == 4 and llm.prompts[0] == DEFAULT_TEMPLATE.format(
        query="which is best?", text="alpha")
    assert reranker.stats == {"graded": 4, "unparsed": 0, "cached": 0}
    assert isinstance(reranker, Reranker) and isinstance(llm, LLM)


def test_llm_reranker_unparsable_answers_keep_their_first_stage_place(caplog):
    hits = first_stage(["a1", "b2", "c3", "d4", "e5"])
    llm = ScriptedLLM(answers=["1", "I cannot tell", "8", "5", "n/a"])
    reranker = LLMReranker(llm=llm)
    with caplog.at_level(logging.WARNING, logger="ragkit.retrieval.rerankers"):
        out = reranker.rerank("q", hits)
    # b2 (slot 1) and e5 (slot 4) stay; a1, c3, d4 are sorted by grade into slots 0, 2, 3
    assert [h.chunk.text for h in out] == ["c3", "b2", "d4", "a1", "e5"]
    assert [h.score for h in out] == [8.0, 8.0, 5.0, 1.0, 1.0]  # unparsed copy the one before
    assert reranker.stats["unparsed"] == 2
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2 and "I cannot tell" in warnings[0] and "d:100-102" in warnings[0]


def test_llm_reranker_unparsed_first_hit_copies_the_next_grade():
    reranker = LLMReranker(llm=ScriptedLLM(answers=["?", "3", "6"]))
    out = reranker.rerank("q", first_stage(["a", "b", "c"]))
    assert [(h.chunk.text, h.score) for h in out] == [("a", 6.0), ("c", 6.0), ("b", 3.0)]


def test_llm_reranker_with_no_parsable_answer_returns_the_first_stage(caplog):
    hits = first_stage(["a", "b", "c"])
    reranker = LLMReranker(llm=ScriptedLLM(answers=["no", "idea", "sorry"]))
    with caplog.at_level(logging.WARNING, logger="ragkit.retrieval.rerankers"):
        assert reranker.rerank("q", hits) == hits
    assert reranker.stats == {"graded": 3, "unparsed": 3, "cached": 0} and len(caplog.records) == 3
    assert reranker.rerank("q", []) == []


class LogprobLLM:
    """A scoring LLM: log-probabilities over the options, by passage."""

    def __init__(self, dists):
        self.dists = dists

    def score(self, prompt, options):
        assert list(options) == [str(i) for i in range(11)]
        return next(d for text, d in self.dists.items() if f"Passage: {text}\n" in prompt)


def test_llm_reranker_scores_with_expected_grade_when_the_llm_can():
    llm = LogprobLLM({
        "a": {"2": np.log(0.5), "4": np.log(0.5)},  # expected grade 3
        "b": {"9": 0.0, "10": -np.inf},  # 9
        "c": {"5": np.log(0.2), "8": np.log(0.6), "nonsense": 0.0},  # (1 + 4.8) / 0.8 = 7.25
        "d": {"x": 0.0},  # no option: unparsed
    })
    assert isinstance(llm, ScoringLLM) and not isinstance(llm, LLM)
    reranker = LLMReranker(llm=llm)
    out = reranker.rerank("q", first_stage(["a", "b", "c", "d"]))
    assert [h.chunk.text for h in out] == ["b", "c", "a", "d"]
    assert [h.score for h in out] == pytest.approx([9.0, 7.25, 3.0, 3.0])
    assert reranker.stats["unparsed"] == 1


def test_llm_reranker_custom_template():
    llm = ScriptedLLM(answers=["4", "6"])
    reranker = LLMReranker(llm=llm, template="Q={query} P={text} {{0-10}}?")
    assert [h.chunk.text for h in reranker.rerank("why", first_stage(["a", "b"]))] == ["b", "a"]
    assert llm.prompts == ["Q=why P=a {0-10}?", "Q=why P=b {0-10}?"]


def test_llm_reranker_bad_config():
    cases = [
        ({}, "llm", "an LLM is required"),
        ({"llm": object()}, "llm", "no complete"),
        ({"llm": ScriptedLLM(), "mode": "score"}, "llm", "no score"),
        ({"llm": ScriptedLLM(), "mode": "greedy"}, "mode", "unknown mode"),
        ({"llm": ScriptedLLM(), "template": "Rate {query}"}, "template", "{text}"),
        ({"llm": ScriptedLLM(), "template": "{query} {text} {extra}"}, "template", "extra"),
        ({"llm": ScriptedLLM(), "template": "{query} {text"}, "template", "format string"),
    ]
    for params, path, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            LLMReranker(**params)
        assert err.value.path == path
    with pytest.raises(ConfigError, match="unknown generator 'nope'") as err:
        build("reranker", {"name": "llm", "llm": {"name": "nope"}})
    assert err.value.path == "reranker.llm.name"
    with pytest.raises(ConfigError, match="HashEmbedder has no complete") as err:
        build("reranker", {"name": "llm", "llm": {"name": "ragkit.testing:HashEmbedder"}})
    assert err.value.path == "reranker.llm"


def test_llm_reranker_config_round_trip_with_a_scripted_llm():
    reranker = LLMReranker(llm=ScriptedLLM(answers=["3", "7"]), mode="complete")
    config = to_config(reranker, "reranker")
    assert config["llm"] == {"name": "ragkit.testing:ScriptedLLM", "answers": ["3", "7"]}
    assert build("reranker", config) == reranker


class FingerprintedLLM(ScriptedLLM):
    """A scripted LLM with a fingerprint, as the generation backends have."""

    def __init__(self, answers, weights="v1"):
        super().__init__(answers=answers)
        self.fingerprint = {"model": weights}


def test_llm_reranker_grade_cache_asks_each_prompt_once_across_rerankers(tmp_path):
    path = tmp_path / "grades.sqlite"
    script = by_text({"alpha": "2", "beta": "9", "gamma": "no idea"})
    first = LLMReranker(llm=FingerprintedLLM(script), cache=str(path))
    out1 = first.rerank("q", first_stage(["alpha", "beta", "gamma"]))
    assert len(first.llm.prompts) == 3 and first.stats["cached"] == 0

    # another reranker on the same file and LLM (another eval path, a re-run): only new prompts
    second = LLMReranker(llm=FingerprintedLLM(by_text({"delta": "5"})), cache=str(path))
    out2 = second.rerank("q", first_stage(["alpha", "beta", "gamma", "delta"]))
    assert [p.split("Passage: ")[1].split("\n")[0] for p in second.llm.prompts] == ["delta"]
    assert second.stats == {"graded": 4, "unparsed": 1, "cached": 3}  # the unread grade too
    assert [h.chunk.text for h in out1] == ["beta", "alpha", "gamma"]
    assert [h.chunk.text for h in out2] == ["beta", "delta", "gamma", "alpha"]

    # other weights, or another question: asked again
    other = LLMReranker(llm=FingerprintedLLM(by_text({"alpha": "4"}), weights="v2"),
                        cache=str(path))
    other.rerank("q", first_stage(["alpha"]))
    again = LLMReranker(llm=FingerprintedLLM(by_text({"alpha": "4"})), cache=str(path))
    again.rerank("another q", first_stage(["alpha"]))
    assert len(other.llm.prompts) == 1 and len(again.llm.prompts) == 1
    assert other.stats["cached"] == again.stats["cached"] == 0


def test_llm_reranker_grade_cache_needs_a_fingerprint(tmp_path):
    with pytest.raises(ConfigError, match="ScriptedLLM has none") as err:
        LLMReranker(llm=ScriptedLLM(answers=["1"]), cache=str(tmp_path / "g.sqlite"))
    assert err.value.path == "cache"
    with pytest.raises(ConfigError, match="file path or null") as err:
        LLMReranker(llm=FingerprintedLLM(["1"]), cache=3)
    assert err.value.path == "cache"


def test_scripted_llm_runs_out_loudly():
    llm = ScriptedLLM(answers=["only one"])
    assert llm.complete("first") == "only one"
    with pytest.raises(RagkitError, match="1 scripted answers but got prompt number 2"):
        llm.complete("second")
    assert llm.prompts == ["first", "second"]
    assert ScriptedLLM(answers=str.upper).complete("hi") == "HI"
    with pytest.raises(ConfigError, match="list of answers"):
        ScriptedLLM(answers="not a list")


@pytest.mark.slow
def test_llm_reranker_on_the_packaged_smollm2():
    """The generation backend is an LLM and a ScoringLLM: built from a spec, SmolLM2 grades each
    passage with the expected value of the options 0..10 under its log-probabilities, and the
    hits come back sorted by that grade. (Quality is not asserted: a 135M model is a weak judge;
    benchmarks/README.md measures what it buys on the dev split.)"""
    pytest.importorskip("transformers")
    reranker = build("reranker", {"name": "llm", "llm": {"name": "transformers", "kv_store": None}})
    assert isinstance(reranker.llm, LLM) and isinstance(reranker.llm, ScoringLLM)
    query = "When was the Eiffel Tower finished?"
    hits = first_stage(TEXTS[:4])
    out = reranker.rerank(query, hits)
    want = {}
    for h in hits:
        lp = reranker.llm.score(DEFAULT_TEMPLATE.format(query=query, text=h.chunk.text), GRADES)
        w = np.exp(np.array(list(lp.values())) - max(lp.values()))
        want[h.chunk.text] = float(np.array([float(g) for g in lp]) @ w / w.sum())
    assert [h.chunk.text for h in out] == sorted(want, key=lambda t: -want[t])
    assert [h.score for h in out] == pytest.approx([want[h.chunk.text] for h in out], abs=1e-6)
    assert reranker.stats == {"graded": 4, "unparsed": 0, "cached": 0}
    assert isinstance(reranker.llm.complete("Reply with one word.", max_new_tokens=4), str)


# -- query likelihood -----------------------------------------------------------------------------


def test_query_likelihood_prefers_the_passage_that_predicts_the_query():
    """FakeLM gives a word already in the context a high probability: the passage holding the
    query's words makes the query likeliest."""
    from ragkit.testing import FakeLM
    from ragkit.retrieval.rerankers import QueryLikelihoodReranker

    hits = first_stage(["cats purr and sleep all day", "the eiffel tower stands in paris",
                        "tower of paris: the eiffel tower", "bread needs flour and water"])
    reranker = QueryLikelihoodReranker(llm=FakeLM())
    out = reranker.rerank("where is the eiffel tower", hits)
    assert [h.chunk.text for h in out][:2] == ["the eiffel tower stands in paris",
                                               "tower of paris: the eiffel tower"]
    assert [h.rank for h in out] == [0, 1, 2, 3]
    assert out[0].score == pytest.approx(reranker.score("where is the eiffel tower", hits[1].chunk.text))
    assert out[0].score > out[2].score and reranker.stats["scored"] == 5
    assert isinstance(reranker, Reranker)


def test_query_likelihood_reads_the_query_after_the_filled_template():
    from ragkit.retrieval.rerankers import QueryLikelihoodReranker

    class Recorder:
        def __init__(self):
            self.calls = []

        def token_logprobs(self, segments, *, window=1024):
            self.calls.append((list(segments), window))
            return [np.zeros(3), np.array([-1.0, -2.0, -3.0])]

    llm = Recorder()
    reranker = QueryLikelihoodReranker(llm=llm, template="P: {text} Q:", window=64)
    assert reranker.score("  why?  ", "alpha") == pytest.approx(-2.0)  # the mean over the query
    assert llm.calls == [(["P: alpha Q:", " why?"], 64)]


def test_query_likelihood_cache_and_config_errors(tmp_path):
    from ragkit.testing import FakeLM
    from ragkit.retrieval.rerankers import QueryLikelihoodReranker

    class Fingerprinted(FakeLM):
        fingerprint = {"model": "fake-v1"}

    path = str(tmp_path / "scores.sqlite")
    first = QueryLikelihoodReranker(llm=Fingerprinted(), cache=path)
    value = first.score("eiffel tower", "the eiffel tower")
    again = QueryLikelihoodReranker(llm=Fingerprinted(), cache=path)
    assert again.score("eiffel tower", "the eiffel tower") == value
    assert again.stats == {"scored": 0, "cached": 1}
    other = QueryLikelihoodReranker(llm=Fingerprinted(), cache=path, window=99)
    assert other.score("eiffel tower", "the eiffel tower") == value
    assert other.stats == {"scored": 1, "cached": 0}  # another window is another key
    cases = [
        ({}, "llm", "token_logprobs"),
        ({"llm": ScriptedLLM()}, "llm", "no token_logprobs"),
        ({"llm": FakeLM(), "template": "{text} {query}"}, "template", "placeholder {text}"),
        ({"llm": FakeLM(), "window": 1}, "window", "int >= 2"),
        ({"llm": FakeLM(), "cache": path}, "cache", "FakeLM has none"),
    ]
    for params, field, message in cases:
        with pytest.raises(ConfigError, match=message) as err:
            QueryLikelihoodReranker(**params)
        assert err.value.path == field
    with pytest.raises(ConfigError, match="non-empty") as err:
        QueryLikelihoodReranker(llm=FakeLM()).score(" ", "text")
    built = build("reranker", {"name": "query-likelihood", "llm": "ragkit.testing:FakeLM"})
    assert isinstance(built, QueryLikelihoodReranker)
    assert to_config(built, "reranker")["llm"] == {"name": "ragkit.testing:FakeLM", "seen": 0.5}


@pytest.mark.slow
def test_query_likelihood_on_the_packaged_smollm2():
    """SmolLM2 finds the question likeliest after the one passage about its subject."""
    pytest.importorskip("transformers")
    reranker = build("reranker", {"name": "query-likelihood",
                                  "llm": {"name": "transformers", "kv_store": None}})
    hits = first_stage(TEXTS[:4])
    out = reranker.rerank("When was the Eiffel Tower finished?", hits)
    assert out[0].chunk.text == "The Eiffel Tower was finished in 1889."
    assert all(np.isfinite(h.score) and h.score < 0 for h in out)
    assert reranker.stats["scored"] == 4
