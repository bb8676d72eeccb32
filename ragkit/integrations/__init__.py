"""ragkit inside other frameworks: chunkers as splitters, saved indexes as retrievers.

``ragkit.integrations.langchain`` (``pip install 'ragkit[langchain]'``) and
``ragkit.integrations.llamaindex`` (``pip install 'ragkit[llamaindex]'``) each hold a splitter
(``RagkitTextSplitter``, ``RagkitNodeParser``) and a ``RagkitRetriever``. This module holds what
the two share; it imports neither framework.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ragkit.errors import ConfigError
from ragkit.types import Chunk, Hit

# chunk metadata that stays inside ragkit (the framework documents carry their own)
_INTERNAL = ("source", "doc_hash")


def build_chunker(spec: Any) -> Any:
    """A chunker from a spec (``{"name": ...}`` or a name) or an object with ``chunk(doc)``."""
    from ragkit.chunkers.base import Chunker
    from ragkit.config import build

    chunker = build("chunker", spec, path="chunker") if isinstance(spec, (str, Mapping)) else spec
    if not isinstance(chunker, Chunker):
        raise ConfigError(f"expected a chunker spec (a name or a mapping with 'name') or an object "
                          f"with chunk(doc); got {type(spec).__name__}", path="chunker")
    return chunker


def load_pipeline(index: Any, overrides: Sequence[str] = ()) -> Any:
    """The ``RAGPipeline`` saved in folder ``index`` (or ``index`` itself if it is a pipeline)."""
    from ragkit.pipeline import RAGPipeline

    if isinstance(index, RAGPipeline):
        if overrides:
            raise ConfigError("overrides apply to a saved index folder, not to a pipeline object",
                              path="overrides")
        return index
    if not isinstance(index, (str, Path)):
        raise ConfigError(f"expected a saved index folder (str or Path) or a RAGPipeline; got "
                          f"{type(index).__name__}", path="index")
    return RAGPipeline.load(index, list(overrides))


def check_k(k: Any) -> None:
    """``k`` is ``None`` (the saved pipeline's ``k``) or an int >= 1."""
    if k is not None and (isinstance(k, bool) or not isinstance(k, int) or k < 1):
        raise ConfigError(f"must be an int >= 1 or None; got {k!r}", path="k")


def chunk_metadata(chunk: Chunk) -> dict[str, Any]:
    """What a chunk adds to its framework document: offsets, order, id and its own metadata."""
    extra = {k: v for k, v in chunk.metadata.items() if k not in _INTERNAL}
    return {"chunk_id": chunk.id, "chunk_index": chunk.index, **extra}


def hit_metadata(hit: Hit) -> dict[str, Any]:
    """What a retrieved chunk's framework document carries: score, rank, source and offsets."""
    c = hit.chunk
    return {"score": float(hit.score), "rank": hit.rank,
            "source": c.metadata.get("source", c.doc_id), "doc_id": c.doc_id, "start": c.start, "end": c.end, **chunk_metadata(c)}
