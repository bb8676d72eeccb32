"""MoC's chunk-quality metrics (boundary clarity, chunk stickiness) on hand-made chunks whose
answers follow from FakeLM's rule (a word already in the context has probability 0.5), and
their place in ``ragkit eval chunking``."""

from __future__ import annotations

import math

import numpy as np
import pytest

from ragkit.config import build_dataclass
from ragkit.errors import ConfigError
from ragkit.evaluation.chunking import ChunkingEval, evaluate_chunking
from ragkit.evaluation.data import EvalDataset, Question
from ragkit.evaluation.quality import (
    Perplexities,
    boundary_clarity,
    chunk_quality,
    stickiness,
    structural_entropy,
)
from ragkit.evaluation.report import markdown, to_json
from ragkit.testing import FakeLM, ScriptedLLM
from ragkit.types import Document

FRUIT = "apple banana cherry"
GAS = "xenon krypton argon"


def ppl_alone(text: str) -> float:
    (lp,) = FakeLM().token_logprobs([text])
    return math.exp(-float(np.mean(lp)))


def test_boundary_clarity_by_hand():
    ppl = Perplexities([FRUIT, FRUIT, GAS, GAS], FakeLM())
    bc = boundary_clarity(ppl)
    # a repeated chunk: every word seen, ppl(q|d) = 1 / 0.5 = 2; unrelated chunks: d changes nothing
    assert bc == pytest.approx([2 / ppl_alone(FRUIT), 1.0, 2 / ppl_alone(GAS)])
    assert ppl_alone(FRUIT) > 100  # unseen words have probability <= 1e-2
    assert ppl.passes == 4  # three pairs, plus the last chunk alone


def test_structural_entropy_by_hand():
    assert structural_entropy(np.array([2, 1, 1])) == pytest.approx(1.5)
    assert structural_entropy(np.array([1, 1, 1, 1])) == pytest.approx(2.0)
    assert structural_entropy(np.array([0, 0, 0])) == 0.0


def test_stickiness_graphs_by_hand():
    texts = [FRUIT, FRUIT, GAS, GAS, FRUIT]
    # adjacent pairs only: edges 0-1 and 2-3 (weights ~0.99), degrees 1,1,1,1,0
    assert stickiness(Perplexities(texts, FakeLM())) == (pytest.approx(2.0), 2)
    # all pairs: also 0-4 and 1-4; degrees 2,2,1,1,2 of 2m = 8
    cs, edges = stickiness(Perplexities(texts, FakeLM()), max_distance=None)
    assert edges == 4
    assert cs == pytest.approx(-3 * 0.25 * math.log2(0.25) - 2 * 0.125 * math.log2(0.125))
    # a higher threshold than any weight: no edge, entropy 0
    assert stickiness(Perplexities(texts, FakeLM()), k=0.999) == (0.0, 0)


def test_complete_graph_also_reads_the_later_chunk_first():
    # "apple" after the long chunk: all seen (weight > 0.98); the long chunk after "apple": only
    # one word of four seen (weight well under 0.95)
    texts = ["apple", "apple banana cherry durian"]
    assert stickiness(Perplexities(texts, FakeLM()), k=0.95, graph="incomplete")[1] == 0
    assert stickiness(Perplexities(texts, FakeLM()), k=0.95, graph="complete")[1] == 1


def test_chunk_quality_summary_per_corpus():
    result = chunk_quality({"a": [FRUIT, FRUIT], "b": [GAS, FRUIT, GAS]}, FakeLM())
    s = result.summary()
    assert s["boundary_clarity"]["n"] == 3
    assert s["boundary_clarity"]["per_corpus"]["b"]["mean"] == pytest.approx(1.0)
    assert s["stickiness"]["per_corpus"]["a"]["mean"] == pytest.approx(1.0)  # one edge: 2 x 1/2
    assert s["stickiness"]["edges"] == 1
    with pytest.raises(ValueError, match="unknown quality metric"):
        chunk_quality({"a": [FRUIT]}, FakeLM(), ["clarity"])


DOC = (f"{FRUIT} grow on trees. " * 6 + f"{GAS} are noble gases. " * 6).strip()


def _dataset() -> EvalDataset:
    start = DOC.index("xenon")
    return EvalDataset({"c": Document("c", DOC)},
                       (Question("Which gases are noble?", "c", ((start, start + 40),)),), "tiny")


def test_eval_chunking_reports_quality_metrics():
    config = build_dataclass(ChunkingEval, {
        "chunkers": {"rec": {"name": "recursive", "chunk_size": 12, "tokenizer": "whitespace"}},
        "embedder": "hash", "ks": [1],
        "quality_metrics": ["boundary_clarity", "stickiness"], "llm": "ragkit.testing:FakeLM",
    })
    (result,) = evaluate_chunking(_dataset(), config)
    assert result.quality["boundary_clarity"]["n"] == result.n_chunks - 1
    assert 0 < result.quality["boundary_clarity"]["mean"] <= 1.0
    assert "quality" in result.seconds
    table = markdown([result], config)
    assert "Chunk quality (MoC)" in table and "| rec |" in table.split("Chunk quality")[1]
    data = to_json([result], config, "tiny", _dataset().questions)
    assert data["quality_metrics"] == ["boundary_clarity", "stickiness"]
    assert data["runs"][0]["quality"]["stickiness"]["edges"] >= 0


def test_eval_chunking_reports_the_llm_chunkers_counts():
    """An LLM chunker's unreadable answers reach the evaluation's table and JSON, per run."""
    from ragkit.chunkers.lumber import LumberChunker
    from ragkit.testing import ScriptedLLM

    text = "\n".join(f"Paragraph {i} says something about topic {i % 3} here." for i in range(12))
    doc = Document("c", text)
    dataset = EvalDataset({"c": doc}, (Question("topic 1?", "c", ((0, 40),)),), "tiny")
    chunker = LumberChunker(llm=ScriptedLLM(answers=lambda prompt: "no idea"), chunk_size=40,
                            window=24, tokenizer="whitespace")
    chunker.chunk(doc)  # an earlier run: the evaluation counts only its own
    before = dict(chunker.stats)
    config = ChunkingEval(chunkers={"lumber": chunker, "rec": {"name": "recursive"}},
                          embedder="hash", ks=(1,))
    results = evaluate_chunking(dataset, config)
    stats = results[0].chunker_stats
    assert stats["documents"] == 1 and stats["unparsed"] == before["unparsed"] > 0
    assert stats["llm_calls"] == before["llm_calls"] and results[1].chunker_stats is None
    table = markdown(results, config)
    assert f"- lumber: documents 1, llm_calls {stats['llm_calls']}" in table
    assert to_json(results, config, "tiny", dataset.questions)["runs"][0]["chunker_stats"] == stats


def test_eval_chunking_quality_config_errors():
    base = {"chunkers": {"rec": {"name": "recursive"}}, "embedder": "hash"}
    with pytest.raises(ConfigError, match="quality_metrics"):
        build_dataclass(ChunkingEval, {**base, "quality_metrics": ["clarity"]})
    with pytest.raises(ConfigError, match=r"llm.*token_logprobs"):
        ChunkingEval(**base, quality_metrics=("boundary_clarity",), llm=ScriptedLLM(answers=[]))
    with pytest.raises(ConfigError, match="stickiness_k"):
        build_dataclass(ChunkingEval, {**base, "stickiness_k": 1.5})
    with pytest.raises(ConfigError, match="stickiness_max_distance"):
        build_dataclass(ChunkingEval, {**base, "stickiness_max_distance": 0})
    # no metrics asked: no LM is built
    assert build_dataclass(ChunkingEval, base).llm is None
