"""The LLM-driven chunkers (lumber, perplexity) and token_logprobs: hand-made cases with known
answers on fakes, exact equivalence of the batched/windowed KV path on a random-init tiny Llama,
and one slow run of each chunker with the real SmolLM2."""

from __future__ import annotations

import logging
import re

import numpy as np
import pytest

from ragkit.chunkers.lumber import LumberChunker, parse_paragraph_id
from ragkit.chunkers.perplexity import PerplexityChunker, local_minima, minima_depth
from ragkit.config import build, to_config
from ragkit.errors import ConfigError
from ragkit.testing import FakeLM, ScriptedLLM
from ragkit.types import Document
from tests.contracts.test_chunkers import contract_violations

# Three sentences per topic, each re-using more of its topic's words: log-perplexity under
# FakeLM falls within a topic and jumps at the next one.
TOPIC_A = ("Apples pears plums grow. Apples pears plums ripen slowly. "
           "Apples pears plums ripen slowly.")
TOPIC_B = (" Xenon krypton argon glow. Xenon krypton argon glow brightly. "
           "Xenon krypton argon glow brightly.")


def sentences(text: str) -> list[str]:
    return [s for s in re.split(r"(?<=\.)\s+", text.strip()) if s]


# -- token_logprobs on the tiny model -------------------------------------------------------------


@pytest.fixture(scope="module")
def tiny():
    pytest.importorskip("torch")
    from ragkit.generation.testing import tiny_generator

    return tiny_generator()


def _reference(gen, ids):
    """Log-probs of ids[1:] from one plain forward over ids (positions 0..)."""
    import torch

    with torch.inference_mode():
        logits = gen.lm(input_ids=torch.tensor([ids])).logits[0].float()
    lp = torch.log_softmax(logits[:-1], -1)
    return lp.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].numpy()


SEGMENTS = ["Hello world.", " This is a test of token log-probs.", "",
            " Another sentence, with more words in it."] * 5


def test_token_logprobs_match_one_full_forward_for_any_batch(tiny):
    ids = [tiny.doc_start_id] + [t for s in SEGMENTS for t in
                                  tiny.tokenizer.encode(s, add_special_tokens=False)]
    ref = _reference(tiny, ids)
    for batch in (1, 7, 64, 4096):
        got = tiny.token_logprobs(SEGMENTS, window=100_000, batch_tokens=batch)
        assert [len(g) for g in got] == [len(tiny.tokenizer.encode(s, add_special_tokens=False))
                                         for s in SEGMENTS]
        assert np.allclose(np.concatenate(got), ref, atol=1e-4), batch


def test_token_logprobs_window_changes_nothing_until_the_context_is_cut(tiny):
    window, batch = 40, 8
    got = np.concatenate(tiny.token_logprobs(SEGMENTS, window=window, batch_tokens=batch))
    full = np.concatenate(tiny.token_logprobs(SEGMENTS, window=100_000))
    # the cache first holds more than window - batch tokens after 4 batches (1 + 32 tokens);
    # up to then (and for the first token of the next batch, from the batch before) all is exact
    exact = 4 * batch + 1
    assert np.allclose(got[:exact], full[:exact], atol=1e-4)
    assert not np.allclose(got[exact:], full[exact:], atol=1e-3)  # the window did cut context
    assert np.isfinite(got).all()


def test_token_logprobs_rebase_keeps_positions_below_the_model_limit(tiny, monkeypatch):
    positions = []

    def record(module, args, kwargs):
        positions.append(int(kwargs["position_ids"].max()))

    monkeypatch.setattr(tiny.lm.config, "max_position_embeddings", 60)
    handle = tiny.lm.register_forward_pre_hook(record, with_kwargs=True)
    try:
        rebased = np.concatenate(tiny.token_logprobs(SEGMENTS, window=40, batch_tokens=8))
    finally:
        handle.remove()
    assert max(positions) < 60 and len(rebased) > 60  # more tokens than positions: rebased
    slid = np.concatenate(tiny.token_logprobs(SEGMENTS, window=40, batch_tokens=8))
    exact = 4 * 8 + 1
    assert np.allclose(rebased[:exact], slid[:exact], atol=1e-4) and np.isfinite(rebased).all()


def test_token_logprobs_reports_progress_and_checks_args(tiny):
    seen = []
    tiny.token_logprobs(["one two three four five six"], batch_tokens=2,
                        progress=lambda d, t: seen.append((d, t)))
    assert seen[-1][0] == seen[-1][1] and len(seen) >= 3
    with pytest.raises(ConfigError, match="window"):
        tiny.token_logprobs(["x"], window=1)


# -- perplexity chunker ---------------------------------------------------------------------------


def test_local_minima_follow_the_reference_rule():
    v = np.array([5.0, 3.0, 4.0, 4.0, 2.0, 2.0, 6.0, np.nan, 1.0, 3.0])
    assert local_minima(v, 0.0) == [1, 4]  # 4: a plateau's first point; 8: NaN before it
    assert local_minima(v, 1.5) == [1, 4]  # 1 drops by 2 on the left: 2 >= 1.5
    assert local_minima(v, 2.5) == []  # no drop reaches 2.5
    assert local_minima(np.array([5.0, 3.0, 4.0]), 2.0) == [1]
    assert local_minima(np.array([5.0, 3.5, 4.0]), 2.0) == []
    d = minima_depth(np.array([5.0, 3.0, 4.0]))
    assert d.tolist() == [-2.0, 2.0]  # unit 0 is no minimum; unit 1 lies 2 below unit 0


def test_ppl_cuts_where_the_topic_changes():
    chunker = PerplexityChunker(llm=FakeLM(), chunk_size=200, tokenizer="whitespace")
    doc = Document("d", TOPIC_A + TOPIC_B)
    chunks = chunker.chunk(doc)
    assert [c.text for c in chunks] == [TOPIC_A, TOPIC_B.strip()]
    assert chunker.stats["llm_calls"] == 1
    assert chunker.stats["tokens_scored"] == len(doc.text.split())


def test_ppl_respects_chunk_size_and_min_size():
    text = (TOPIC_A + TOPIC_B) * 3
    doc = Document("d", text)
    small = PerplexityChunker(llm=FakeLM(), chunk_size=10, tokenizer="whitespace").chunk(doc)
    assert not contract_violations(doc, small, "whitespace", 10, 0)
    assert max(c.metadata["tokens"] for c in small) <= 10
    merged = PerplexityChunker(llm=FakeLM(), chunk_size=40, min_size=25,
                               tokenizer="whitespace").chunk(doc)
    assert not contract_violations(doc, merged, "whitespace", 40, 0)
    assert len(merged) < len(PerplexityChunker(llm=FakeLM(), chunk_size=40,
                                               tokenizer="whitespace").chunk(doc))
    assert all(c.metadata["tokens"] >= 25 for c in merged[:-1])


class OverlapScorer:
    """score(): "1" (split) when the two passages share no word, "2" (keep) when they do."""

    def __init__(self, unreadable: bool = False):
        self.calls = 0
        self.unreadable = unreadable

    def score(self, prompt, options):
        self.calls += 1
        if self.unreadable:
            return {"maybe": -1.0}
        first = re.search(r"Passage 1: (.*?)\n\nPassage 2:", prompt, re.S).group(1)
        second = re.search(r"Passage 2: (.*?)\n\n", prompt, re.S).group(1)
        words = lambda s: {w.lower() for w in re.findall(r"\w+", s)}  # noqa: E731
        shared = words(first) & words(second)
        return {"1": -3.0 if shared else -0.1, "2": -0.1 if shared else -3.0}


def test_margin_sampling_cuts_where_the_model_says_split():
    llm = OverlapScorer()
    chunker = PerplexityChunker(llm=llm, method="margin", chunk_size=200, tokenizer="whitespace")
    doc = Document("d", TOPIC_A + TOPIC_B)
    assert [c.text for c in chunker.chunk(doc)] == [TOPIC_A, TOPIC_B.strip()]
    assert llm.calls == 5 == chunker.stats["llm_calls"]  # one question per sentence boundary


def test_margin_unreadable_scores_keep_the_boundary_and_are_counted(caplog):
    chunker = PerplexityChunker(llm=OverlapScorer(unreadable=True), method="margin",
                                chunk_size=200, tokenizer="whitespace")
    with caplog.at_level(logging.WARNING, logger="ragkit.chunkers.perplexity"):
        chunks = chunker.chunk(Document("d", TOPIC_A + TOPIC_B))
    assert len(chunks) == 1
    assert chunker.stats["unparsed"] == 5
    assert "keeping the boundary" in caplog.text


def test_perplexity_config_errors_name_the_field():
    with pytest.raises(ConfigError, match="method"):
        PerplexityChunker(llm=FakeLM(), method="entropy")
    with pytest.raises(ConfigError, match=r"threshold.*\[-1.0, 1.0\]"):
        PerplexityChunker(llm=FakeLM(), method="margin", threshold=2)
    with pytest.raises(ConfigError, match="threshold"):
        PerplexityChunker(llm=FakeLM(), threshold=-0.5)
    with pytest.raises(ConfigError, match=r"llm.*token_logprobs"):
        PerplexityChunker(llm=ScriptedLLM(answers=["x"]))
    with pytest.raises(ConfigError, match=r"prompt.*\{first\}"):
        PerplexityChunker(llm=FakeLM(), method="margin", prompt="no placeholders")
    with pytest.raises(ConfigError, match="chunker.min_size"):
        build("chunker", {"name": "perplexity", "llm": "ragkit.testing:FakeLM", "min_size": -1})


def test_default_llm_is_the_transformers_generator_without_a_kv_store():
    chunker = build("chunker", "perplexity")
    spec = to_config(chunker, "chunker")
    assert spec["llm"]["name"] == "transformers" and spec["llm"]["kv_store"] is None
    assert build("chunker", spec) == chunker


def test_perplexity_runs_on_the_tiny_model(tiny):
    doc = Document("d", (TOPIC_A + TOPIC_B) * 4)
    for method in ("ppl", "margin"):
        chunker = PerplexityChunker(llm=tiny, method=method, chunk_size=30, tokenizer="cl100k")
        seen = []
        chunks = chunker.chunk(doc, progress=lambda d, t: seen.append((d, t)))
        assert not contract_violations(doc, chunks, "cl100k", 30, 0)
        assert chunks == chunker.chunk(doc)
        assert seen and seen[-1][0] == seen[-1][1]


# -- lumber chunker -------------------------------------------------------------------------------


def test_parse_paragraph_id_reads_sloppy_answers():
    cases = {"Answer: ID 0003": 3, "ID: 4": 4, "id#5 because": 5, "It is paragraph 6.": 6,
             "7": 7, "**8**": 8, "The shift is at 9.": 9, "none": None, "": None, None: None,
             "v2.5 then ID 3": 3, "1.5 times": None}
    assert {a: parse_paragraph_id(a) for a in cases} == cases


LINES = [f"Line {i} about topic {'A' if i < 6 else 'B'} with some words." for i in range(12)]


def test_lumber_cuts_before_the_named_paragraph_and_continues_from_it():
    text = "\n".join(LINES)
    # every line is 8 whitespace tokens: a window of 32 holds 4 lines, plus the one overflowing
    llm = ScriptedLLM(answers=["Answer: ID 3", "ID 4", "ID 2", "ID 2", "ID 2", "ID 3"])
    chunker = LumberChunker(llm=llm, chunk_size=40, window=32, tokenizer="whitespace")
    chunks = chunker.chunk(Document("d", text))
    # groups: lines 0-4 -> cut before line 2; 2-6 -> before 5; 5-9 -> before 6; 6-10 -> before 7;
    # 7-11 -> before 8; 8-11 is the last group (it fits): cut before 10, and 10-11 is the last
    starts = [text.index(c.text.split("\n")[0]) for c in chunks]
    assert starts == [text.index(LINES[i]) for i in (0, 2, 5, 6, 7, 8, 10)]
    assert "ID 1: Line 0" in llm.prompts[0] and "ID 5: Line 4" in llm.prompts[0]
    assert "ID 6" not in llm.prompts[0]
    assert chunker.stats == {"documents": 1, "llm_calls": 6, "unparsed": 0, "invalid": 0}


def test_lumber_fallbacks_are_the_window_rule_and_are_counted(caplog):
    text = "\n".join(LINES)
    llm = ScriptedLLM(answers=["I am not sure", "ID 1", "ID 99"])
    chunker = LumberChunker(llm=llm, chunk_size=40, window=32, tokenizer="whitespace")
    with caplog.at_level(logging.WARNING, logger="ragkit.chunkers.lumber"):
        chunks = chunker.chunk(Document("d", text))
    # each fallback cuts before the group's overflow line: groups 0-4, 4-8, 8-11 (last, no cut)
    assert [c.text.split("\n")[0] for c in chunks] == [LINES[0], LINES[4], LINES[8]]
    assert chunker.stats["unparsed"] == 1 and chunker.stats["invalid"] == 2
    assert caplog.text.count("fallback") == 3


def test_lumber_score_mode_takes_the_likeliest_valid_id():
    class Scorer:
        def __init__(self):
            self.options = []

        def score(self, prompt, options):
            self.options.append(list(options))
            return {o: (-1.0 if o == "3" else -5.0) for o in options}

    llm = Scorer()
    chunker = LumberChunker(llm=llm, chunk_size=40, window=32, tokenizer="whitespace",
                            calibrate=False)
    chunks = chunker.chunk(Document("d", "\n".join(LINES)))
    assert llm.options[0] == ["2", "3", "4", "5"]  # never "1"
    assert [c.text.split("\n")[0] for c in chunks][:3] == [LINES[0], LINES[2], LINES[4]]
    assert chunker.stats["unparsed"] == chunker.stats["invalid"] == 0


def test_lumber_calibration_divides_out_the_models_preference_for_an_id():
    class Biased:
        """Always likes "2"; the text itself points at "4"."""

        def __init__(self):
            self.prompts = []

        def score(self, prompt, options):
            self.prompts.append(prompt)
            text_says = 0.0 if "N/A" in prompt else 1.0
            return {o: -5.0 + 3.0 * (o == "2") + text_says * (o == "4") for o in options}

    doc = Document("d", "\n".join(LINES[:5]))  # one group of five lines: the last group
    raw = LumberChunker(llm=Biased(), chunk_size=40, window=64, tokenizer="whitespace",
                        calibrate=False)
    assert [c.text.split("\n")[0] for c in raw.chunk(doc)] == [LINES[0], LINES[1]]
    llm = Biased()
    calibrated = LumberChunker(llm=llm, chunk_size=40, window=64, tokenizer="whitespace")
    assert [c.text.split("\n")[0] for c in calibrated.chunk(doc)] == [LINES[0], LINES[3]]
    assert calibrated.stats["llm_calls"] == 2 and "ID 3: N/A" in llm.prompts[-1]
    calibrated.chunk(doc)
    assert len(llm.prompts) == 3  # the content-free scores are cached per group size


def test_lumber_keeps_the_budget_when_the_window_is_larger():
    text = "\n".join(LINES * 3)
    doc = Document("d", text)
    chunker = LumberChunker(llm=FakeLM(), chunk_size=16, window=60, min_size=10,
                            tokenizer="whitespace")
    chunks = chunker.chunk(doc)
    assert not contract_violations(doc, chunks, "whitespace", 16, 0)
    assert chunker.stats["llm_calls"] > 0


def test_lumber_splits_long_lines_into_sentences():
    line = " ".join(f"Sentence number {i} is here." for i in range(20))
    chunker = LumberChunker(llm=FakeLM(), chunk_size=12, tokenizer="whitespace")
    units = chunker.paragraphs(line + "\nshort line")
    assert len(units) == 21
    assert line[units[1][0]:units[1][1]].strip() == "Sentence number 1 is here."


def test_lumber_config_errors_name_the_field():
    with pytest.raises(ConfigError, match=r"prompt.*\{paragraphs\}"):
        LumberChunker(llm=FakeLM(), prompt="Where does it change?")
    with pytest.raises(ConfigError, match="mode"):
        LumberChunker(llm=FakeLM(), mode="guess")
    with pytest.raises(ConfigError, match=r"llm.*score"):
        LumberChunker(llm=ScriptedLLM(answers=[]), mode="score")
    with pytest.raises(ConfigError, match="window"):
        LumberChunker(llm=FakeLM(), window=0)


def test_lumber_runs_on_the_tiny_model(tiny):
    doc = Document("d", "\n".join(LINES))
    for mode in ("score", "complete"):
        chunker = LumberChunker(llm=tiny, mode=mode, chunk_size=30, window=30,
                                max_answer_tokens=4, tokenizer="cl100k")
        chunks = chunker.chunk(doc)
        assert not contract_violations(doc, chunks, "cl100k", 30, 0)
        assert chunker.stats["llm_calls"] > 0


# -- the real model -------------------------------------------------------------------------------

REAL_TEXT = (
    "The Eiffel Tower is a wrought-iron lattice tower in Paris. It was designed by the company "
    "of Gustave Eiffel and completed in 1889. It was the tallest structure in the world until "
    "1930.\nPhotosynthesis is the process by which plants turn light into chemical energy. It "
    "takes place in the chloroplasts. Oxygen is released as a by-product.\nTCP is a transport "
    "protocol of the internet. It gives a reliable, ordered byte stream between two hosts. "
    "Lost packets are sent again."
)


@pytest.mark.slow
def test_real_smollm2_runs_both_chunkers_and_reads_text_better_than_shuffled_words():
    gen = build("generator", {"name": "transformers", "kv_store": None})
    words = REAL_TEXT.split()
    shuffled = " ".join(words[i] for i in np.random.default_rng(0).permutation(len(words)))
    natural, scrambled = gen.token_logprobs([REAL_TEXT]), gen.token_logprobs([shuffled])
    assert -np.mean(natural[0]) < -np.mean(scrambled[0]) - 1.0  # nats per token
    doc = Document("d", REAL_TEXT)
    for spec in ({"name": "perplexity", "chunk_size": 40},
                 {"name": "lumber", "chunk_size": 60, "window": 60}):
        chunker = build("chunker", {**spec, "llm": gen})
        chunks = chunker.chunk(doc)
        assert not contract_violations(doc, chunks, "cl100k", spec["chunk_size"], 0)
        assert len(chunks) >= 2 and chunker.stats["llm_calls"] >= 1
