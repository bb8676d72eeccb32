"""What the pipeline needs from a generator, and the optional abilities it may have.

``Generator.generate(query, hits, stream=None) -> Answer`` is the whole contract: the answer's text,
the hits it was given (its citations) and timings. ``stream`` is an optional callable that receives
each new piece of text as soon as it is decoded. A generator that can precompute chunk KVs (for
``ragkit cache warm``) also has ``warm(chunks, progress=None)``; check it with
``isinstance(gen, WarmableGenerator)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any, Protocol, runtime_checkable

from ragkit.types import Answer, Chunk, Hit

StreamCallback = Callable[[str], None]
ProgressCallback = Callable[[int, int], None]  # (done, total)


@runtime_checkable
class Generator(Protocol):
    def generate(
        self, query: str, hits: Sequence[Hit], stream: StreamCallback | None = None
    ) -> Answer: ...


@runtime_checkable
class WarmableGenerator(Protocol):
    def warm(
        self, chunks: Sequence[Chunk | str], progress: ProgressCallback | None = None
    ) -> dict[str, Any]: ...


@runtime_checkable
class TokenLogprobLLM(Protocol):
    """An LLM ability the perplexity-based components need (the ``perplexity`` chunker, the MoC
    chunk-quality metrics of ``ragkit eval chunking``): per-token log-probabilities of a text.

    ``token_logprobs(segments)`` reads ``segments`` in order as one running text and returns, for
    each segment, a float array with the natural-log probability of each of its tokens given
    everything before it: the earlier segments and the segment's own earlier tokens. Each
    segment is tokenized on its own (so a caller that wants natural tokens gives segments that
    start with the whitespace before them), and the text is read after one document-start token,
    so the first token has a probability too. When the text is longer than ``window`` tokens the
    context is a sliding window: every token is predicted from at least ``window // 2`` and at
    most ``window`` tokens before it (a backend may reuse the KV those tokens had when read).
    ``progress(done, total)``, if given, is called with token counts as the work advances.

    The transformers backend computes this with one forward per batch of ``batch_tokens``
    tokens on a growing KV cache (the running context is never re-encoded); any backend that can
    return prompt log-probs can implement it.
    """

    def token_logprobs(
        self,
        segments: Sequence[str],
        *,
        window: int = 1024,
        progress: ProgressCallback | None = None,
    ) -> list[Any]: ...


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
