"""Late chunking (Günther et al., 2024): embed the whole document, then pool per chunk.

Chunk boundaries come from any other chunker (``boundary``); the vectors do not come from
embedding each chunk on its own. The encoder reads the whole document (long documents in
overlapping windows), and each chunk's vector is the mean of the contextual vectors of the tokens
inside its character span (mapped through the tokenizer's offsets), L2-normalised. A chunk
therefore "knows" what the rest of the document says: a pronoun in it is read with its antecedent.

It is used through the optional ``chunk_and_embed`` ability: the pipeline stores these vectors,
and queries are embedded normally by the same model.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ragkit.checks import check_int
from ragkit.config import COMPONENT_KIND, build
from ragkit.errors import ConfigError
from ragkit.protocols import ChunksAndEmbeds
from ragkit.types import Chunk, Document

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class LateChunker:
    """``boundary`` supplies the spans; ``embedder`` (a sentence-transformers model) the vectors.

    ``window`` is the encoder's input length in tokens, special tokens included (default: the
    model's ``max_tokens``, 256 for all-MiniLM-L6-v2, whose position table allows 512);
    ``stride`` is the distance between window starts (default: half a window). Each token takes
    its vector from the window where it has the most context on both sides.
    """

    boundary: Any = field(
        default_factory=lambda: {"name": "sentence", "chunk_size": 128,
                                 "tokenizer": "all-MiniLM-L6-v2"},
        metadata={COMPONENT_KIND: "chunker"},
    )
    embedder: Any = field(
        default_factory=lambda: {"name": "sentence-transformers"},
        metadata={COMPONENT_KIND: "embedder"},
    )
    window: int | None = None
    stride: int | None = None

    def __post_init__(self) -> None:
        self.boundary = build("chunker", self.boundary, path="boundary")
        self.embedder = build("embedder", self.embedder, path="embedder")
        if isinstance(self.boundary, ChunksAndEmbeds):
            raise ConfigError("must be a chunker that only places boundaries; got a late chunker",
                              path="boundary")
        check_int(self.window, "window", min=1, null=True)
        check_int(self.stride, "stride", min=1, null=True)

    def chunk(self, doc: Document) -> list[Chunk]:
        return self.boundary.chunk(doc)

    def chunk_and_embed(self, doc: Document) -> tuple[list[Chunk], np.ndarray]:
        """The boundary chunker's chunks and their late-pooled vectors, float32 ``(n, dim)``."""
        chunks = self.boundary.chunk(doc)
        if not chunks:
            return [], np.zeros((0, self.embedder.dim), dtype=np.float32)
        ids, offsets = self.embedder.token_ids(doc.text)
        vecs = token_vectors(self.embedder, ids, self._window_text_tokens(), self.stride)
        return chunks, pool(chunks, offsets, vecs, self.embedder)

    def _window_text_tokens(self) -> int:
        window = self.window or self.embedder.max_tokens
        if window > self.embedder.max_tokens and self.window is not None:
            log.info("late chunking windows of %d tokens exceed the model's max_seq_length %d",
                     window, self.embedder.max_tokens)
        room = window - self.embedder.special_tokens
        if room < 2:
            raise ConfigError(f"a window of {window} tokens leaves no room for text", path="window")
        return room


def windows(n: int, size: int, stride: int | None = None) -> list[tuple[int, int]]:
    """Token ranges ``[a, b)`` of at most ``size`` covering ``[0, n)``, starts ``stride`` apart,
    the last one ending at ``n``."""
    if n <= size:
        return [(0, n)]
    stride = max(1, min(stride or size // 2, size))
    starts = list(range(0, n - size, stride)) + [n - size]
    return [(a, a + size) for a in starts]


def token_vectors(embedder: Any, ids: np.ndarray, size: int, stride: int | None = None) -> np.ndarray:
    """Contextual vectors ``(n, dim)`` for the token ids of a whole document.

    A token in several windows takes the vector from the one where it sits farthest from both
    edges (most context on both sides); ties go to the earlier window.
    """
    spans = windows(len(ids), size, stride)
    outs = embedder.encode_token_windows([ids[a:b] for a, b in spans])
    vecs = np.zeros((len(ids), outs[0].shape[1] if outs else embedder.dim), dtype=np.float32)
    best = np.full(len(ids), -1, dtype=np.int64)
    for (a, b), out in zip(spans, outs):
        pos = np.arange(a, b)
        context = np.minimum(pos - a, b - 1 - pos)  # tokens of context on the thinner side
        take = context > best[a:b]
        vecs[a:b][take] = out[take]
        best[a:b][take] = context[take]
    return vecs


def pool(chunks: list[Chunk], offsets: np.ndarray, vecs: np.ndarray, embedder: Any) -> np.ndarray:
    """Mean of the vectors of the tokens that start inside each chunk, L2-normalised.

    A chunk holding no token of the model (only characters its tokenizer drops) is embedded on
    its own instead, with a warning naming it.
    """
    starts = offsets[:, 0] if len(offsets) else np.zeros(0, dtype=np.int64)
    out = np.zeros((len(chunks), vecs.shape[1]), dtype=np.float32)
    alone = []
    for i, c in enumerate(chunks):
        a, b = np.searchsorted(starts, [c.start, c.end], side="left")
        if b > a:
            out[i] = vecs[a:b].mean(axis=0)
        else:
            alone.append(i)
    if alone:
        log.warning("late chunking: %d chunk(s) hold no model token (first: %s); embedded alone",
                    len(alone), chunks[alone[0]].id)
        out[alone] = embedder.embed([chunks[i].text for i in alone])
    norms = np.linalg.norm(out, axis=1, keepdims=True)
    return out / np.where(norms == 0, 1, norms)
