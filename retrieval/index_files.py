"""What the saved index formats (memory, faiss, chroma, bm25, hybrid) share on disk: the error a
bad folder raises, putting a finished folder in place atomically, checksums, ``chunks.jsonl``
and ``meta.json`` reading and writing, and the checks of vectors going into an index.

No index lives here and nothing here searches; each index keeps its own format name, version
and file list.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from ragkit.errors import IndexMismatchError, RagkitError
from ragkit.types import Chunk


class IndexFileError(RagkitError, ValueError):
    """A saved index folder is missing, corrupted or inconsistent; the message names the path."""


class StoreDamagedError(IndexFileError):
    """The store a saved index keeps in its folder (embedded Chroma's data, ``store``) cannot be
    opened or read back; the message says how to rebuild it by hand."""

    def __init__(self, message: str, *, store: str | os.PathLike[str]) -> None:
        super().__init__(message)
        self.store = Path(store)


def normalise(vecs: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (a zero row stays zero)."""
    norms = np.linalg.norm(vecs, axis=1, keepdims=True)  # (n, 1)
    return np.divide(vecs, norms, out=np.zeros_like(vecs), where=norms > 0)


def sha256_file(path: Path) -> str:
    """The hex sha256 of a file's bytes; an IndexFileError naming it if it cannot be read."""
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(1 << 20), b""):
                digest.update(block)
    except OSError as exc:
        raise IndexFileError(f"{path}: cannot read ({exc.strerror})") from None
    return digest.hexdigest()


def swap_in(tmp: Path, path: Path) -> None:
    """Put folder ``tmp`` at ``path``; an index already there is replaced only once ``tmp`` is
    complete, so a failed save never leaves a half-written index behind."""
    if not path.exists():
        os.replace(tmp, path)
        return
    old = Path(tempfile.mkdtemp(prefix=f".{path.name}.old-", dir=path.parent))
    os.replace(path, old / path.name)
    try:
        os.replace(tmp, path)
    except BaseException:
        os.replace(old / path.name, path)
        raise
    finally:
        shutil.rmtree(old, ignore_errors=True)


def read_chunks(file: Path) -> list[Chunk]:
    """The chunks of a ``chunks.jsonl`` file (``write_chunks_jsonl`` writes it)."""
    chunks = []
    try:
        # Split on "\n" only: texts may hold U+2028 and friends, which str.splitlines splits on.
        lines = file.read_text(encoding="utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as exc:
        raise IndexFileError(f"{file}: cannot read ({exc})") from None
    if lines and lines[-1] == "":
        lines.pop()
    for lineno, line in enumerate(lines, 1):
        try:
            r = json.loads(line)
            chunks.append(
                Chunk(r["doc_id"], r["start"], r["end"], r["text"], r["index"], r["metadata"])
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise IndexFileError(f"{file}:{lineno}: not a valid chunk record ({exc})") from None
    return chunks


def check_save_target(path: Path) -> None:
    if path.exists() and not path.is_dir():
        raise IndexFileError(f"{path}: exists and is not a folder; cannot save an index there")
    if path.is_dir() and any(path.iterdir()) and not (path / "meta.json").exists():
        raise IndexFileError(
            f"{path}: folder is not empty and holds no saved index (no meta.json); "
            "refusing to overwrite it"
        )


def write_chunks_jsonl(chunks: Iterable[Chunk], file: Path, path: Path) -> None:
    """One JSON record per chunk and line (the format ``read_chunks`` reads), written to ``file``
    as it is made, a few MB at a time: saving a store of a huge corpus holds no second copy of
    its texts (the list of lines, their join and its UTF-8 were three). ``path`` is the index
    folder an error names."""
    with open(file, "wb") as f:
        block: list[bytes] = []
        size = 0
        for line in _jsonl_lines(chunks, path):
            block.append(line)
            size += len(line)
            if size >= _WRITE_BLOCK:
                f.write(b"".join(block))
                block, size = [], 0
        f.write(b"".join(block))


_WRITE_BLOCK = 4 << 20


def _jsonl_lines(chunks: Iterable[Chunk], path: Path) -> Iterator[bytes]:
    for c in chunks:
        record = {"doc_id": c.doc_id, "start": c.start, "end": c.end, "text": c.text,
                  "index": c.index, "metadata": dict(c.metadata)}
        try:
            line = json.dumps(record, ensure_ascii=False, allow_nan=False)
        except (TypeError, ValueError) as exc:
            raise IndexFileError(
                f"{path}: chunk {c.id!r} cannot be saved: its metadata is not plain JSON "
                f"data ({exc})"
            ) from None
        yield (line + "\n").encode("utf-8")


def read_meta(
    path: Path, fmt: str, version: int, *, name: str = "meta.json", kind: str = "meta"
) -> dict[str, Any]:
    """The JSON object in ``path/name``, checked to be a ``fmt`` ``kind`` file of ``version``."""
    file = path / name
    if not path.is_dir():
        raise IndexFileError(f"{path}: no saved index here (not a folder)")
    try:
        meta = json.loads(file.read_text(encoding="utf-8"))
    except OSError as exc:
        raise IndexFileError(f"{file}: cannot read ({exc.strerror})") from None
    except ValueError as exc:
        raise IndexFileError(f"{file}: not valid JSON ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        raise IndexFileError(f"{file}: not a {fmt} {kind} file")
    if meta.get("version") != version:
        raise IndexFileError(
            f"{file}: format version {meta.get('version')!r}; this ragkit reads version {version}"
        )
    return meta


def check_count_dim(meta: dict[str, Any], file: Path) -> None:
    count, dim = meta.get("count"), meta.get("dim")
    if not isinstance(count, int) or count < 0:
        raise IndexFileError(f"{file}: count must be an int >= 0; got {count!r}")
    if not (dim is None and count == 0) and not (isinstance(dim, int) and dim >= 1):
        raise IndexFileError(f"{file}: dim must be an int >= 1; got {dim!r}")


def check_vecs(vecs: Any, dim: int | None, *, what: str) -> np.ndarray:
    """``vecs`` as a float32 ``(n, dim)`` array, or an IndexMismatchError naming what is wrong:
    not 2-D, not numeric, another dimension than the index's ``dim``, NaN or infinite values."""
    vecs = np.asarray(vecs)
    if vecs.ndim != 2:
        raise IndexMismatchError(f"{what} must be a 2-D (n, dim) array; got shape {vecs.shape}")
    if not (np.issubdtype(vecs.dtype, np.floating) or np.issubdtype(vecs.dtype, np.integer)):
        raise IndexMismatchError(f"{what} must be numeric; got dtype {vecs.dtype}")
    if dim is not None and vecs.shape[1] != dim:
        raise IndexMismatchError(
            f"{what} have dim {vecs.shape[1]} but the index holds dim {dim} vectors; "
            "embed with the same model the index was built with"
        )
    vecs = np.ascontiguousarray(vecs, dtype=np.float32)
    if not np.isfinite(vecs).all():
        raise IndexMismatchError(f"{what} contain NaN or infinite values")
    return vecs


def check_k(k: Any) -> int:
    """``k``, the number of hits a search asks for, as an int >= 0; else a ValueError."""
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 0:
        raise ValueError(f"k must be an int >= 0; got {k!r}")
    return int(k)


def query_rows(query_vecs: Any) -> np.ndarray:
    """Query vectors as rows: ``(m, d)`` as given, a single ``(d,)`` vector as ``(1, d)``."""
    q = np.asarray(query_vecs)
    return q[None, :] if q.ndim == 1 else q  # (m, d)


@contextmanager
def saving(path: Path) -> Iterator[Path]:
    """A new folder beside ``path`` to write a saved index into; when the block ends it replaces
    ``path`` whole (``swap_in``), and if the block raises it is removed and nothing changes."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.tmp-", dir=path.parent))
    try:
        yield tmp
        swap_in(tmp, path)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def write_meta(folder: Path, meta: dict[str, Any]) -> None:
    """``folder/meta.json``: ``meta`` as indented JSON."""
    (folder / "meta.json").write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")


def check_chunks(chunks: Iterable[Any]) -> list[Chunk]:
    """``chunks`` as a list, or a TypeError naming the first item that is not a ``Chunk``."""
    chunks = list(chunks)
    for c in chunks:
        if not isinstance(c, Chunk):
            raise TypeError(f"add takes Chunk objects; got {type(c).__name__}")
    return chunks


def check_aligned(chunks: Sequence[Chunk], vecs: Any, dim: int | None) -> np.ndarray:
    """``vecs`` checked by ``check_vecs`` against the index's ``dim``, one per chunk; else an
    IndexMismatchError saying what is wrong (how many of each ``add`` got)."""
    vecs = check_vecs(vecs, dim, what="vectors")
    if vecs.shape[0] != len(chunks):
        raise IndexMismatchError(
            f"add got {len(chunks)} chunks but {vecs.shape[0]} vectors; they must align"
        )
    return vecs
