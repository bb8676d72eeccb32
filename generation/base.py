"""What the pipeline needs from a generator, and the optional abilities it may have.

``Generator.generate(query, hits, stream=None) -> Answer`` is the whole contract: the answer's text,
the hits it was given (its citations) and timings. ``stream`` is an optional callable that receives
each new piece of text as soon as it is decoded. A generator that can precompute chunk KVs (for
``ragkit cache warm``) also has ``warm(chunks, progress=None)``; check it with
``isinstance(gen, WarmableGenerator)``.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

# The abilities live in the kernel (ragkit.protocols); these are their names in generation.
from ragkit.protocols import ProgressCallback, StreamCallback, TokenLogprobLLM
from ragkit.protocols import StreamsTokens as Generator
from ragkit.protocols import WarmsKV as WarmableGenerator
from ragkit.types import Answer, Hit

__all__ = ["AnswersFromRun", "Generator", "ProgressCallback", "StreamCallback", "TokenLogprobLLM",
           "WarmableGenerator", "drain"]


def drain(run: Iterator[str], stream: StreamCallback | None) -> Answer:
    """Run a generator's piece iterator to its end, passing each piece to ``stream``; return the
    ``Answer`` it returns (the shared body of every backend's ``generate``)."""
    while True:
        try:
            piece = next(run)
        except StopIteration as done:
            return done.value
        if stream is not None:
            stream(piece)


class AnswersFromRun:
    """Mixin for a backend with ``_run(query, hits)``, an iterator of text pieces that returns
    the ``Answer``: gives it the generator role's ``generate`` and ``stream`` on top of it."""

    def _run(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:  # pragma: no cover
        raise NotImplementedError

    def generate(self, query: str, hits: Sequence[Hit],
                 stream: StreamCallback | None = None) -> Answer:
        """The answer to ``query`` from ``hits`` (in order); ``stream`` receives text pieces."""
        return drain(self._run(query, hits), stream)

    def stream(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:
        """Text pieces as they are decoded; the iterator's return value is the ``Answer``."""
        return self._run(query, hits)
