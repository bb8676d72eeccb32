"""ragkit.protocols: abilities are declared and checked with isinstance, and ``provides`` checks
the same members without running a property."""

from __future__ import annotations

from dataclasses import dataclass
from functools import cached_property

from ragkit import protocols as P
from ragkit.testing import FakeLM, HashEmbedder, ScriptedLLM


def test_the_test_doubles_have_the_abilities_they_claim():
    assert isinstance(HashEmbedder(dim=8), P.Embeds)
    lm = FakeLM()
    assert all(isinstance(lm, p) for p in (P.Completes, P.ScoresOptions, P.TokenLogprobLLM))
    scripted = ScriptedLLM(answers=["x"])
    assert isinstance(scripted, P.Completes)
    assert not isinstance(scripted, P.ScoresOptions)
    assert not isinstance(scripted, P.TokenLogprobLLM)


class Costly:
    loads = 0

    @property
    def fingerprint(self) -> str:
        Costly.loads += 1
        return "weights"

    @cached_property
    def max_text_tokens(self) -> int:
        Costly.loads += 1
        return 128


@dataclass
class NoLimit:
    max_tokens: int | None = None


def test_provides_reads_nothing():
    obj = Costly()
    assert P.provides(obj, P.Fingerprinted) and P.provides(obj, P.LimitsTextTokens)
    assert Costly.loads == 0
    assert not P.provides(ScriptedLLM(answers=[]), P.Fingerprinted)
    assert not P.provides(NoLimit(), P.LimitsTokens)  # declared as None: no limit declared
    assert P.provides(NoLimit(max_tokens=5), P.LimitsTokens)


def test_members_and_describe():
    assert P.members(P.CachesKV) == ["get", "put", "contains", "close"]
    assert P.members(P.Embeds) == ["dim", "embed"]
    assert P.describe(P.Completes) == "complete()"


def test_old_names_are_the_kernel_protocols():
    from ragkit.retrieval.rerankers import LLM, ScoringLLM
    from ragkit.tokenizers import Tokenizer

    assert (LLM, ScoringLLM, Tokenizer) == (P.Completes, P.ScoresOptions, P.Tokenizer)
