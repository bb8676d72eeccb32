"""What the pipeline needs from a generator, and the optional abilities it may have.

``Generator.generate(query, hits, stream=None) -> Answer`` is the whole contract: the answer's text,
the hits it was given (its citations) and timings. ``stream`` is an optional callable that receives
each new piece of text as soon as it is decoded. A generator that can precompute chunk KVs (for
``ragkit cache warm``) also has ``warm(chunks, progress=None)``; check it with
``isinstance(gen, WarmableGenerator)``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
