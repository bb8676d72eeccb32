"""An on-disk embedding cache: vectors keyed by the embedder's config and the text's sha256.

One SQLite file (stdlib ``sqlite3``, safe across processes) holds every model's vectors; a
re-run of an evaluation or an index build embeds only the texts it has not seen.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.config import model_spec


def default_cache_path() -> Path:
    root = os.environ.get("RAGKIT_CACHE") or Path.home() / ".cache" / "ragkit"
    return Path(root) / "embeddings.sqlite"


def embedder_key(embedder: Any) -> str:
    """A stable key for an embedder: the hash of its config (name and parameters)."""
    spec = model_spec(embedder)
    return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:32]


def text_key(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _open(path: Path, table: str) -> sqlite3.Connection:
    """The sqlite file at ``path`` (its folder made if missing) with ``table`` created."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, timeout=60)
    db.execute(table)
    return db


class EmbeddingCache:
    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else default_cache_path()
        self._db = _open(self.path, "CREATE TABLE IF NOT EXISTS vec (model TEXT, text TEXT, "
                                    "dim INTEGER, data BLOB, PRIMARY KEY (model, text))")
        self.hits = 0
        self.misses = 0

    def get_many(self, model: str, keys: Sequence[str]) -> dict[str, np.ndarray]:
        out: dict[str, np.ndarray] = {}
        for i in range(0, len(keys), 500):
            part = list(keys[i : i + 500])
            marks = ",".join("?" * len(part))
            rows = self._db.execute(
                f"SELECT text, dim, data FROM vec WHERE model = ? AND text IN ({marks})",
                [model, *part],
            )
            for key, dim, data in rows:
                vec = np.frombuffer(data, dtype=np.float32)
                if vec.shape == (dim,):
                    out[key] = vec
        return out

    def put_many(self, model: str, items: Iterable[tuple[str, np.ndarray]]) -> None:
        rows = [
            (model, key, int(v.shape[0]), np.ascontiguousarray(v, dtype=np.float32).tobytes())
            for key, v in items
        ]
        with self._db:
            self._db.executemany("INSERT OR REPLACE INTO vec VALUES (?, ?, ?, ?)", rows)

    def close(self) -> None:
        self._db.close()


def embed_with_cache(
    embedder: Any,
    texts: Sequence[str],
    cache: EmbeddingCache | None,
    *,
    batch_size: int = 32,  # small enough that the bar moves and an interrupted run keeps its work
    progress: Callable[[Iterable[Any], str, int], Iterable[Any]] | None = None,
    desc: str = "embedding",
) -> np.ndarray:
    """Embed ``texts`` (float32 ``(n, d)``), taking cached vectors where the cache has them.

    ``progress(iterable, desc, total)`` wraps the loop over batches still to embed (the CLI and
    notebooks pass a tqdm bar; the library shows none).
    """
    keys = [text_key(t) for t in texts]
    model = embedder_key(embedder)
    found = cache.get_many(model, sorted(set(keys))) if cache is not None else {}
    todo = sorted({k: t for k, t in zip(keys, texts) if k not in found}.items(), key=lambda kv: len(kv[1]))
    if cache is not None:
        cache.hits += len(keys) - sum(1 for k in keys if k not in found)
        cache.misses += sum(1 for k in keys if k not in found)
    batches = [todo[i : i + batch_size] for i in range(0, len(todo), batch_size)]
    loop: Iterable[Any] = progress(batches, desc, len(batches)) if progress and batches else batches
    for batch in loop:
        vecs = np.asarray(embedder.embed([t for _, t in batch]), dtype=np.float32)
        new = [(k, v) for (k, _), v in zip(batch, vecs)]
        found.update(new)
        if cache is not None:
            cache.put_many(model, new)
    if not texts:
        return np.zeros((0, int(embedder.dim)), dtype=np.float32)
    return np.stack([found[k] for k in keys]).astype(np.float32, copy=False)


class GradeCache:
    """An on-disk cache of LLM reranker grades, keyed by the LLM's fingerprint (weights,
    tokenizer, dtype) and the sha256 of the exact prompt. A grade that could not be read is
    stored too (as ``None`` with its raw answer), so a re-run reproduces the first one."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._db = _open(self.path, "CREATE TABLE IF NOT EXISTS grade (llm TEXT, prompt TEXT, "
                                    "value REAL, answer TEXT, PRIMARY KEY (llm, prompt))")
        self.hits = 0
        self.misses = 0

    def get(self, llm: str, prompt: str) -> tuple[float | None, str] | None:
        row = self._db.execute("SELECT value, answer FROM grade WHERE llm = ? AND prompt = ?",
                               (llm, text_key(prompt))).fetchone()
        if row is None:
            self.misses += 1
            return None
        self.hits += 1
        return (None if row[0] is None else float(row[0])), row[1]

    def put(self, llm: str, prompt: str, value: float | None, answer: str) -> None:
        with self._db:
            self._db.execute("INSERT OR REPLACE INTO grade VALUES (?, ?, ?, ?)",
                             (llm, text_key(prompt), value, answer))

    def close(self) -> None:
        self._db.close()
