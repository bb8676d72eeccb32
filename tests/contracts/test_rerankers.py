"""One contract, every registered reranker (built offline: a random-init cross-encoder, a fake
LM for the LLM ones): the same hits come back, each once, ranked 0..n-1, deterministically;
no hits give no hits."""

from __future__ import annotations

import pytest

from ragkit.retrieval.base import Reranker
from ragkit.types import Chunk, Hit
from tests.contracts.registered import components, runnable

RERANKERS = components("reranker")
PASSAGES = ["The Eiffel Tower was completed in 1889 for the World's Fair.",
            "Honeybees dance to tell each other where flowers are.",
            "Gustave Eiffel's company designed and built the tower.",
            "Bread needs flour, water, salt and yeast."]


def hits() -> list[Hit]:
    return [Hit(Chunk("d", 100 * i, 100 * i + len(t), t, i), 1.0 - 0.1 * i, i)
            for i, t in enumerate(PASSAGES)]


@pytest.mark.parametrize("name", RERANKERS)
def test_reranks_the_same_hits(name):
    reranker = runnable("reranker", name)
    assert isinstance(reranker, Reranker)
    out = reranker.rerank("Who built the Eiffel Tower?", hits())
    assert sorted(h.chunk.id for h in out) == sorted(h.chunk.id for h in hits())
    assert [h.rank for h in out] == list(range(len(out)))
    assert all(isinstance(h.score, float) for h in out)
    again = reranker.rerank("Who built the Eiffel Tower?", hits())
    assert [(h.chunk, h.score) for h in again] == [(h.chunk, h.score) for h in out]
    assert reranker.rerank("Who built the Eiffel Tower?", []) == []
