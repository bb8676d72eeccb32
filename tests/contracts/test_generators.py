"""One contract, every registered generator (the transformers one over a random-init tiny Llama;
vLLM where it is installed): an ``Answer`` for the query with the hits it was given, the streamed
pieces adding up to its text, greedy decoding deterministic, and the optional abilities it
declares (warm the chunk KVs, complete a prompt, token log-probabilities) working."""

from __future__ import annotations

import numpy as np
import pytest

from ragkit.protocols import Completes, StreamsTokens, TokenLogprobLLM, WarmsKV
from ragkit.types import Answer, Chunk, Hit
from tests.contracts.registered import components, runnable

GENERATORS = components("generator")
PASSAGES = ["The Eiffel Tower was completed in 1889.", "Gustave Eiffel's company built it."]


def hits() -> list[Hit]:
    return [Hit(Chunk("d", 100 * i, 100 * i + len(t), t, i), 1.0 - 0.1 * i, i)
            for i, t in enumerate(PASSAGES)]


@pytest.fixture(scope="module", params=GENERATORS)
def generator(request):
    return runnable("generator", request.param)


def test_answers_with_its_hits_and_streams_its_text(generator):
    assert isinstance(generator, StreamsTokens)
    pieces: list[str] = []
    answer = generator.generate("Who built the tower?", hits(), stream=pieces.append)
    assert isinstance(answer, Answer)
    assert answer.query == "Who built the tower?"
    assert list(answer.hits) == hits()
    assert isinstance(answer.text, str) and "".join(pieces) == answer.text
    again = generator.generate("Who built the tower?", hits())
    assert again.text == answer.text  # greedy by default


def test_declared_abilities_work(generator):
    if isinstance(generator, WarmsKV):
        report = generator.warm([h.chunk for h in hits()])
        assert isinstance(report, dict)
    if isinstance(generator, Completes):
        assert isinstance(generator.complete("Say hi."), str)
    if isinstance(generator, TokenLogprobLLM):
        out = generator.token_logprobs(["The tower", " was built."])
        assert len(out) == 2 and all(len(np.asarray(o)) >= 1 for o in out)
        assert all(np.all(np.asarray(o) <= 0) for o in out)
