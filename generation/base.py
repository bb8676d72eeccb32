"""What the pipeline needs from a generator, and the optional abilities it may have.

``Generator.generate(query, hits, stream=None) -> Answer`` is the whole contract: the answer's text,
the hits it was given (its citations) and timings. ``stream`` is an optional callable that receives
each new piece of text as soon as it is decoded. A generator that can precompute chunk KVs (for
``ragkit cache warm``) also has ``warm(chunks, progress=None)``; check it with
``isinstance(gen, WarmableGenerator)``.
"""

from __future__ import annotations

from collections.abc import Iterator

# The abilities live in the kernel (ragkit.protocols); these are their names in generation.
from ragkit.protocols import ProgressCallback, StreamCallback, TokenLogprobLLM
from ragkit.protocols import StreamsTokens as Generator
from ragkit.protocols import WarmsKV as WarmableGenerator
from ragkit.types import Answer

__all__ = ["Generator", "ProgressCallback", "StreamCallback", "TokenLogprobLLM",
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
