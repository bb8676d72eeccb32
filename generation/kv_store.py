"""The chunk-KV store: every layer's keys and values of a token segment, found again by a hash.

A value is one float tensor ``(layers, 2, kv_heads, seq, head_dim)`` (index 0 of dim 1 holds the
keys, 1 the values). A key is the hex sha256 of everything that determines those numbers
(``kv_key``): the model's weights fingerprint, the tokenizer, the dtype, the segment's token ids and
a *prefix id* naming what the segment was computed after (``""`` for a chunk computed alone at
position 0; the hash of all preceding token ids for an exact-prefix entry).

Three stores with the same small interface, ``get/put/contains/close`` plus ``stats``:

- ``MemoryKVStore``: an LRU bounded in bytes.
- ``DiskKVStore``: one safetensors file per key (never pickle), written to a temporary file and
  renamed, so a reader sees no file or a whole one. Each file records its key, shape and a CRC32
  of its bytes; a file that does not parse, names another key or fails its checksum is reported
  (logged, counted in ``stats.corrupt``), deleted and treated as a miss, so the caller recomputes.
- ``TieredKVStore``: the memory tier over the disk tier (a disk hit is promoted to memory).

Values are returned as stored, without a copy: callers must not modify them in place.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import zlib
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

import torch

from ragkit.errors import ConfigError

log = logging.getLogger(__name__)

FORMAT = "ragkit-kv/1"
DEFAULT_MAX_DISK_GB = 20.0  # the disk tier's default size limit (kv_store.max_disk_gb)
_GONE = object()  # _read: the file went away (evicted) before it could be read


def _disk_bytes(path: Path) -> int:
    try:
        return path.stat().st_blocks * 512
    except FileNotFoundError:
        return 0


def kv_key(
    *, model: str, tokenizer: str, dtype: str, token_ids: Sequence[int], prefix_id: str = ""
) -> str:
    """The store key of a segment's KV: hex sha256 of all that determines it."""
    head = json.dumps([FORMAT, model, tokenizer, dtype, prefix_id, len(token_ids)])
    h = hashlib.sha256(head.encode())
    h.update(torch.tensor(list(token_ids), dtype=torch.int64).numpy().tobytes())
    return h.hexdigest()


def nbytes(t: torch.Tensor) -> int:
    return t.numel() * t.element_size()


@dataclass
class StoreStats:
    hits: int = 0
    misses: int = 0
    puts: int = 0
    evictions: int = 0
    corrupt: int = 0  # disk entries found broken or mismatched (then deleted and recomputed)
    bytes_read: int = 0
    bytes_written: int = 0
    memory_bytes: int = 0  # currently held by a memory tier

    def as_dict(self) -> dict[str, int]:
        return dict(self.__dict__)


@runtime_checkable
class KVStore(Protocol):
    stats: StoreStats

    def get(self, key: str) -> torch.Tensor | None: ...

    def put(self, key: str, kv: torch.Tensor) -> None: ...

    def contains(self, key: str) -> bool: ...

    def close(self) -> None: ...


@dataclass(kw_only=True)
class MemoryKVStore:
    """An in-process LRU of KV tensors, at most ``max_bytes`` in total."""

    max_bytes: int = 1 << 30

    def __post_init__(self) -> None:
        value = self.max_bytes
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise ConfigError(f"must be an int >= 0; got {self.max_bytes!r}", path="max_bytes")
        self._items: OrderedDict[str, torch.Tensor] = OrderedDict()
        self.stats = StoreStats()

    def __eq__(self, other: object) -> bool:  # config equality, not contents
        return type(other) is type(self) and other.max_bytes == self.max_bytes

    def get(self, key: str) -> torch.Tensor | None:
        kv = self._items.get(key)
        if kv is None:
            self.stats.misses += 1
            return None
        self._items.move_to_end(key)
        self.stats.hits += 1
        self.stats.bytes_read += nbytes(kv)
        return kv

    def put(self, key: str, kv: torch.Tensor) -> None:
        size = nbytes(kv)
        if size > self.max_bytes:
            return  # larger than the whole tier: keeping it would evict everything else
        old = self._items.pop(key, None)
        if old is not None:
            self.stats.memory_bytes -= nbytes(old)
        self._items[key] = kv.detach()
        self.stats.memory_bytes += size
        self.stats.puts += 1
        self.stats.bytes_written += size
        while self.stats.memory_bytes > self.max_bytes:
            _, evicted = self._items.popitem(last=False)
            self.stats.memory_bytes -= nbytes(evicted)
            self.stats.evictions += 1

    def contains(self, key: str) -> bool:
        return key in self._items

    def clear(self) -> None:
        self._items.clear()
        self.stats.memory_bytes = 0

    def close(self) -> None:
        self.clear()


@dataclass(kw_only=True)
class DiskKVStore:
    """One safetensors file per key under ``path`` (default ``$RAGKIT_CACHE/kv``), at most
    ``max_disk_gb`` of disk (blocks allocated, not nominal sizes; ``null``: no limit). A read
    marks its file used (mtime); when a write takes the folder over the limit, the least recently
    used files go until it is under 90% of it. Several processes may share a folder: each counts
    what it writes and rescans the folder before it evicts."""

    path: str | None = None
    verify: bool = True  # check each file's CRC32 on read
    max_disk_gb: float | None = DEFAULT_MAX_DISK_GB

    def __post_init__(self) -> None:
        if self.path is not None and (not isinstance(self.path, str) or not self.path):
            raise ConfigError(f"must be a folder path or null; got {self.path!r}", path="path")
        m = self.max_disk_gb
        if m is not None and (isinstance(m, bool) or not isinstance(m, int | float) or
                              not 0 < m < float("inf")):
            raise ConfigError(f"must be a number of GB > 0, or null for no limit; got {m!r}",
                              path="max_disk_gb")
        self.stats = StoreStats()
        self._used: int | None = None  # bytes on disk as this process counts them (lazy scan)

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and (other.path, other.verify, other.max_disk_gb) == (
            self.path, self.verify, self.max_disk_gb)

    @property
    def root(self) -> Path:
        if self.path is not None:
            return Path(self.path).expanduser()
        from ragkit.generation.models import cache_root

        return cache_root() / "kv"

    def file(self, key: str) -> Path:
        return self.root / key[:2] / f"{key}.safetensors"

    def get(self, key: str) -> torch.Tensor | None:
        path = self.file(key)
        if not path.is_file():
            self.stats.misses += 1
            return None
        kv = self._read(key, path)
        if kv is _GONE:  # evicted (by another process) between the check and the read
            self.stats.misses += 1
            return None
        if kv is None:
            self.stats.corrupt += 1
            self.stats.misses += 1
            path.unlink(missing_ok=True)
            return None
        self.stats.hits += 1
        self.stats.bytes_read += nbytes(kv)
        try:
            os.utime(path)  # used now: the last to be evicted
        except OSError:
            pass
        return kv

    def _read(self, key: str, path: Path) -> Any:
        from safetensors import safe_open

        try:
            with safe_open(str(path), framework="pt") as f:
                meta = f.metadata() or {}
                kv = f.get_tensor("kv")
        except FileNotFoundError:
            return _GONE
        except Exception as exc:  # any parse failure means a broken file, never a crash
            log.warning("KV store: unreadable entry %s (%s); it will be recomputed", path, exc)
            return None
        problem = None
        if meta.get("format") != FORMAT:
            problem = f"format {meta.get('format')!r}, expected {FORMAT!r}"
        elif meta.get("key") != key:
            problem = f"it holds key {meta.get('key')!r}"
        elif meta.get("shape") != json.dumps(list(kv.shape)):
            problem = f"shape {list(kv.shape)} != recorded {meta.get('shape')}"
        elif self.verify and meta.get("crc32") != str(_crc32(kv)):
            problem = "checksum mismatch"
        if problem:
            log.warning("KV store: corrupt entry %s (%s); it will be recomputed", path, problem)
            return None
        return kv

    def put(self, key: str, kv: torch.Tensor) -> None:
        from safetensors.torch import save_file

        kv = kv.detach().contiguous()
        path = self.file(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        meta = {
            "format": FORMAT,
            "key": key,
            "shape": json.dumps(list(kv.shape)),
            "crc32": str(_crc32(kv)),
        }
        tmp = path.with_name(f"{path.name}.tmp-{os.getpid()}")
        try:
            save_file({"kv": kv}, str(tmp), metadata=meta)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        self.stats.puts += 1
        self.stats.bytes_written += nbytes(kv)
        if self.max_disk_gb is not None:
            if self._used is None:
                self._used = self.usage()[1]
            else:
                self._used += _disk_bytes(path)
            if self._used > self.max_disk_gb * 1e9:
                self.evict(int(0.9 * self.max_disk_gb * 1e9))

    def entries(self) -> list[tuple[float, int, Path]]:
        """``(last used, bytes on disk, file)`` of every entry in the folder."""
        out = []
        root = self.root
        if not root.is_dir():
            return out
        for sub in os.scandir(root):
            if not sub.is_dir():
                continue
            for f in os.scandir(sub.path):
                if f.name.endswith(".safetensors"):
                    try:
                        st = f.stat()
                    except FileNotFoundError:
                        continue
                    out.append((st.st_mtime, st.st_blocks * 512, Path(f.path)))
        return out

    def usage(self) -> tuple[int, int]:
        """``(entries, bytes on disk)`` in the folder now."""
        found = self.entries()
        return len(found), sum(b for _, b, _ in found)

    def evict(self, target: int) -> tuple[int, int]:
        """Delete the least recently used entries until the folder holds at most ``target``
        bytes; returns ``(entries, bytes)`` deleted."""
        found = sorted(self.entries(), key=lambda e: e[0])
        used = sum(b for _, b, _ in found)
        gone = freed = 0
        for _, size, path in found:
            if used - freed <= target:
                break
            path.unlink(missing_ok=True)
            gone, freed = gone + 1, freed + size
        self._used = used - freed
        self.stats.evictions += gone
        if gone:
            log.info("KV store: evicted %d entries (%d bytes) from %s", gone, freed, self.root)
        return gone, freed

    def clear(self) -> tuple[int, int]:
        """Delete every entry; returns ``(entries, bytes)`` deleted."""
        return self.evict(0)

    def contains(self, key: str) -> bool:
        return self.file(key).is_file()

    def close(self) -> None:
        pass


@dataclass(kw_only=True)
class TieredKVStore:
    """A bounded memory LRU over a disk folder; ``disk=False`` keeps memory only."""

    max_memory_bytes: int = 1 << 30
    path: str | None = None  # disk tier folder (default $RAGKIT_CACHE/kv)
    disk: bool = True
    max_disk_gb: float | None = DEFAULT_MAX_DISK_GB  # the disk tier's limit (LRU eviction)
    stats: StoreStats = field(default_factory=StoreStats, init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        self.memory = MemoryKVStore(max_bytes=self.max_memory_bytes)
        self.disk_tier = (DiskKVStore(path=self.path, max_disk_gb=self.max_disk_gb) if self.disk
                          else None)
        self.stats = self.memory.stats  # hits/misses are counted once, at the store's door

    def get(self, key: str) -> torch.Tensor | None:
        kv = self.memory.get(key)
        if kv is not None or self.disk_tier is None:
            return kv
        kv = self.disk_tier.get(key)
        self.stats.corrupt = self.disk_tier.stats.corrupt
        if kv is not None:
            self.stats.misses -= 1  # the memory miss became a (disk) hit
            self.stats.hits += 1
            self.memory.put(key, kv)
        return kv

    def put(self, key: str, kv: torch.Tensor) -> None:
        self.memory.put(key, kv)
        if self.disk_tier is not None:
            self.disk_tier.put(key, kv)

    def contains(self, key: str) -> bool:
        return self.memory.contains(key) or (
            self.disk_tier is not None and self.disk_tier.contains(key)
        )

    def close(self) -> None:
        self.memory.close()
        if self.disk_tier is not None:
            self.disk_tier.close()


def _crc32(kv: torch.Tensor) -> int:
    return zlib.crc32(kv.detach().contiguous().view(torch.uint8).numpy())
