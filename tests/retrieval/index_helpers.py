"""What the index tests share: synthetic chunks and vectors, the brute-force reference scores,
recall, corrupting and editing a saved index's files, running code in a fresh Python process,
and a Chroma server on loopback.

Test data and tools only; no tests here. Importable on its own (the fresh-process scripts put
this folder on ``sys.path``), so it imports nothing from a test module.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from ragkit.errors import IndexMismatchError
from ragkit.types import Chunk

ROOT = Path(__file__).parents[2]
CORPUS = ROOT / "ragkit" / "data" / "corpus"


def make_chunks(n: int, doc: str = "d", *, width: int = 5, digits: int = 4,
                **metadata) -> list[Chunk]:
    """``n`` chunks over five documents ``{doc}0`` .. ``{doc}4``, ``width`` chars each, with
    metadata ``n`` and ``parity`` (and ``metadata``)."""
    return [
        Chunk(f"{doc}{i % 5}", 10 * i, 10 * i + width, f"t{i:0{digits}d}", i,
              {"n": i, "parity": i % 2, **metadata})
        for i in range(n)
    ]


def random_data(**chunk_shape) -> tuple[list[Chunk], np.ndarray, np.ndarray]:
    """500 chunks, their (500, 24) float32 vectors and (7, 24) queries, seeded."""
    rng = np.random.default_rng(0)
    return make_chunks(500, **chunk_shape), rng.standard_normal((500, 24)).astype(
        np.float32), rng.standard_normal((7, 24)).astype(np.float32)


def check_doc_hash_and_doc_chunks(index) -> None:
    """An empty ``index`` keeps a document's ``doc_hash`` and gives its chunks in order."""
    a = [Chunk("a", s, s + 1, "x", i, {"doc_hash": "h1"}) for i, s in enumerate((5, 0, 9))]
    index.add(a, np.eye(3, dtype=np.float32))
    assert index.doc_hash("a") == "h1" and index.doc_hash("b") is None
    assert [c.start for c in index.doc_chunks("a")] == [0, 5, 9]


def check_bad_vectors_are_refused(index) -> None:
    """An empty ``index`` refuses vectors of another dim (naming both), misaligned with their
    chunks or NaN, and a failed add changes nothing."""
    index.add(make_chunks(2), np.ones((2, 8), np.float32))
    with pytest.raises(IndexMismatchError, match=r"dim 5 .*dim 8"):
        index.add(make_chunks(1, doc="e"), np.ones((1, 5), np.float32))
    with pytest.raises(IndexMismatchError, match=r"dim 4 .*dim 8"):
        index.search(np.ones((1, 4), np.float32), k=1)
    with pytest.raises(IndexMismatchError, match="3 chunks but 2 vectors"):
        index.add(make_chunks(3, doc="e"), np.ones((2, 8), np.float32))
    with pytest.raises(IndexMismatchError, match="NaN"):
        index.add(make_chunks(1, doc="e"), np.full((1, 8), np.nan, np.float32))
    assert len(index) == 2  # failed adds change nothing


def brute_force(vecs: np.ndarray, queries: np.ndarray, metric: str) -> np.ndarray:
    """Scores (m, n) in float64, the trusted reference."""
    v, q = vecs.astype(np.float64), queries.astype(np.float64)
    if metric == "cosine":
        v = v / np.linalg.norm(v, axis=1, keepdims=True)
        q = q / np.linalg.norm(q, axis=1, keepdims=True)
    return q @ v.T


def clustered(n: int, d: int = 384, clusters: int = 50, seed: int = 0) -> np.ndarray:
    """Unit vectors from a Gaussian mixture, so nearest neighbours mean something."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((clusters, d)).astype(np.float32)  # (c, d)
    x = centres[rng.integers(0, clusters, n)] + 0.8 * rng.standard_normal((n, d), np.float32)
    return x / np.linalg.norm(x, axis=1, keepdims=True)  # (n, d)


def recall_at(hits: list[list], truth: np.ndarray, k: int) -> float:
    return float(np.mean([len({h.chunk.index for h in row[:k]} & set(t[:k].tolist())) / k
                          for row, t in zip(hits, truth)]))


def hits_of(results) -> list[list[tuple[str, float]]]:
    return [[[h.chunk.id, h.score] for h in row] for row in results]  # lists, as JSON has


def flip_byte(file: Path, offset: int = -5) -> None:
    raw = bytearray(file.read_bytes())
    raw[offset] ^= 0x01
    file.write_bytes(bytes(raw))


def edit_json(file: Path, **changes) -> None:
    """Update the keys of a saved index's JSON file (``meta.json``, ``chroma.json``)."""
    meta = json.loads(file.read_text(encoding="utf-8"))
    meta.update(changes)
    file.write_text(json.dumps(meta), encoding="utf-8")


def run_python(code: str, *args, timeout: float = 180) -> str:
    """Run ``code`` in a fresh Python from the repository root; its stdout (it must succeed)."""
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def small_pipeline(index, *, dim: int = 128):
    """A pipeline of the recursive chunker (40 whitespace tokens), the hash embedder and
    ``index`` (a config mapping or an index object)."""
    from ragkit import RAGPipeline

    return RAGPipeline(
        chunker={"name": "recursive", "chunk_size": 40, "tokenizer": "whitespace"},
        embedder={"name": "hash", "dim": dim},
        index=index,
    )


@contextmanager
def chroma_server(folder: Path, port: int, timeout: float = 60.0):
    """``chroma run`` on loopback, storing in ``folder``; stopped (and waited for) on exit."""
    exe = Path(sys.executable).with_name("chroma")
    if not exe.exists():
        pytest.skip("the chroma CLI is not installed next to this Python")
    log = open(folder.parent / f"chroma-{port}.log", "wb")
    proc = subprocess.Popen(
        [str(exe), "run", "--path", str(folder), "--host", "127.0.0.1", "--port", str(port)],
        stdout=log, stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + timeout
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/v2/heartbeat",
                                            timeout=1) as reply:
                    if reply.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                log.flush()
                pytest.fail(f"chroma run did not answer on port {port}: "
                            f"{(folder.parent / f'chroma-{port}.log').read_text()[-2000:]}")
            time.sleep(0.1)
        yield
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=20)
        log.close()
