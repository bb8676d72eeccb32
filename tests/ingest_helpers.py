"""Shared by the ingestion tests (local and Ray): a generated corpus, a slow embedder and a
chunker that refuses some documents. Importable by Ray workers (the tests' working directory is
on their path), which is why these live in a module and not in a test file."""

from __future__ import annotations

import json
import random
import time
from dataclasses import dataclass
from pathlib import Path

from ragkit.errors import DocumentError
from ragkit.testing import HashEmbedder

WORDS = (
    "tower iron lattice engineer paris exhibition bees hive nectar waggle dance forager "
    "chlorophyll light sugar leaf carbon planet orbit comet jupiter saturn press movable type "
    "gutenberg ink paper packet window handshake congestion acknowledgement river mountain "
    "glacier valley harbour bridge railway signal cipher garden orchard mill copper"
).split()

CONFIG = {
    "chunker": {"name": "recursive", "chunk_size": 24, "overlap": 4, "tokenizer": "whitespace"},
    "embedder": {"name": "hash", "dim": 32},
    "index": {"name": "memory"},
}


def text(rng: random.Random, sentences: int) -> str:
    out = []
    for _ in range(sentences):
        words = [rng.choice(WORDS) for _ in range(rng.randint(4, 14))]
        out.append(" ".join(words).capitalize() + rng.choice([".", "!", "?", ". Ünïcödé 东京 ✓."]))
        if rng.random() < 0.2:
            out.append("\n\n")
    return " ".join(out)


def make_corpus(root: Path, *, md: int = 40, jsonl_shards: int = 4, per_shard: int = 40,
                seed: int = 0) -> int:
    """Write ``md`` Markdown/text files in nested folders and ``jsonl_shards`` JSONL files of
    ``per_shard`` records (some with ids and extra fields, some blank lines, one empty text).
    Returns the number of documents."""
    rng = random.Random(seed)
    for i in range(md):
        folder = root / f"part{i % 3}" / ("deep" if i % 5 == 0 else "")
        folder.mkdir(parents=True, exist_ok=True)
        suffix = ".txt" if i % 4 == 0 else ".md"
        body = text(rng, rng.randint(1, 12))
        (folder / f"doc{i:03d}{suffix}").write_text(f"# Title {i}\n\n{body}", encoding="utf-8")
    for s in range(jsonl_shards):
        lines = []
        for j in range(per_shard):
            rec = {"text": "" if (s, j) == (0, 3) else text(rng, rng.randint(1, 10))}
            if j % 2:
                rec |= {"id": f"s{s}-r{j}", "topic": rng.choice(WORDS), "rank": j}
            lines.append(json.dumps(rec, ensure_ascii=False))
            if j == 5:
                lines.append("")
        (root / f"shard{s:02d}.jsonl").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return md + jsonl_shards * per_shard


@dataclass(kw_only=True)
class SlowHashEmbedder(HashEmbedder):
    """``HashEmbedder`` that sleeps ``delay`` seconds per call: a run long enough to kill."""

    delay: float = 0.05

    def embed(self, texts):
        time.sleep(self.delay)
        return super().embed(texts)


@dataclass(kw_only=True)
class PickyChunker:
    """Whitespace windows of ``size`` words; refuses a document containing ``poison``."""

    size: int = 20
    poison: str = "POISON"

    def chunk(self, doc):
        from ragkit.types import Chunk

        if self.poison in doc.text:
            raise DocumentError(f"document {doc.id!r} contains {self.poison!r}")
        import re

        spans = [m.span() for m in re.finditer(r"\S+", doc.text)]
        out = []
        for i in range(0, len(spans), self.size):
            start, end = spans[i][0], spans[min(i + self.size, len(spans)) - 1][1]
            out.append(Chunk.of(doc, start, end, len(out), tokens=min(self.size, len(spans) - i)))
        return out
