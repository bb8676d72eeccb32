"""The chunk-KV store: round trips on every tier, LRU bounds, corrupt entries detected."""

from __future__ import annotations

import json
import os

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from ragkit.generation.kv_store import (  # noqa: E402
    DiskKVStore,
    KVStore,
    MemoryKVStore,
    TieredKVStore,
    kv_key,
    nbytes,
)
from ragkit.config import build, to_config  # noqa: E402
from ragkit.errors import ConfigError  # noqa: E402


def _kv(seed: int, seq: int = 7) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(3, 2, 2, seq, 8, generator=g)  # (layers, 2, kv_heads, seq, head_dim)


def _key(ids, prefix_id=""):
    return kv_key(model="m", tokenizer="t", dtype="torch.float32", token_ids=ids,
                  prefix_id=prefix_id)


STORES = {
    "memory": lambda tmp: MemoryKVStore(),
    "disk": lambda tmp: DiskKVStore(path=str(tmp)),
    "tiered": lambda tmp: TieredKVStore(path=str(tmp)),
    "tiered-memory-only": lambda tmp: TieredKVStore(disk=False),
}


@pytest.mark.parametrize("name", STORES)
def test_round_trip_every_tier(name, tmp_path):
    store = STORES[name](tmp_path)
    assert isinstance(store, KVStore)
    a, b = _kv(1), _kv(2, seq=3)
    ka, kb = _key([1, 2, 3]), _key([4, 5])
    assert not store.contains(ka) and store.get(ka) is None
    store.put(ka, a)
    store.put(kb, b)
    assert store.contains(ka) and store.contains(kb)
    assert torch.equal(store.get(ka), a) and torch.equal(store.get(kb), b)
    assert store.stats.hits == 2 and store.stats.misses == 1
    store.close()


def test_disk_tier_survives_a_new_process_store(tmp_path):
    kv = _kv(3)
    TieredKVStore(path=str(tmp_path)).put(_key([9]), kv)
    fresh = TieredKVStore(path=str(tmp_path))  # empty memory tier: read from disk, promoted
    assert torch.equal(fresh.get(_key([9])), kv)
    assert fresh.memory.contains(_key([9]))
    assert fresh.stats.hits == 1 and fresh.stats.misses == 0


def test_key_depends_on_everything_that_determines_the_kv():
    base = dict(model="m", tokenizer="t", dtype="torch.float32", token_ids=[1, 2], prefix_id="")
    keys = {kv_key(**base)}
    for field, value in [("model", "m2"), ("tokenizer", "t2"), ("dtype", "torch.bfloat16"),
                         ("token_ids", [2, 1]), ("prefix_id", "after:x")]:
        keys.add(kv_key(**{**base, field: value}))
    assert len(keys) == 6
    assert kv_key(**base) == kv_key(**base)


def test_memory_lru_is_bounded_in_bytes():
    size = nbytes(_kv(0))
    store = MemoryKVStore(max_bytes=2 * size)
    for i in range(3):
        store.put(_key([i]), _kv(i))
        store.get(_key([0]))  # keep 0 recently used
    assert store.contains(_key([0])) and not store.contains(_key([1])) and store.contains(_key([2]))
    assert store.stats.memory_bytes == 2 * size and store.stats.evictions == 1


def _corrupt(path, how):
    data = bytearray(path.read_bytes())
    if how == "flip":  # a bit flip in the tensor data: only the checksum sees it
        data[-5] ^= 0x40
        path.write_bytes(bytes(data))
    elif how == "truncate":
        path.write_bytes(bytes(data[: len(data) // 2]))
    elif how == "garbage":
        path.write_bytes(b"not a safetensors file")


@pytest.mark.parametrize("how", ["flip", "truncate", "garbage", "other-key"])
def test_corrupt_disk_entry_is_detected_counted_and_dropped(tmp_path, how, caplog):
    store = DiskKVStore(path=str(tmp_path))
    key = _key([1, 2, 3])
    store.put(key, _kv(1))
    if how == "other-key":  # a file renamed into another key's place
        other = _key([7])
        store.put(other, _kv(2))
        store.file(other).replace(store.file(key))
    else:
        _corrupt(store.file(key), how)
    with caplog.at_level("WARNING", logger="ragkit.generation.kv_store"):
        assert store.get(key) is None
    assert store.stats.corrupt == 1 and store.stats.misses == 1
    assert "recomputed" in caplog.text
    assert not store.contains(key)  # deleted, so the next put replaces it
    store.put(key, _kv(1))
    assert torch.equal(store.get(key), _kv(1))


def test_disk_writes_leave_no_temporary_files(tmp_path):
    store = DiskKVStore(path=str(tmp_path))
    for i in range(3):
        store.put(_key([i]), _kv(i))
    files = sorted(p.name for p in tmp_path.rglob("*") if p.is_file())
    assert len(files) == 3 and all(f.endswith(".safetensors") for f in files)


def test_store_config_round_trip_and_validation(tmp_path):
    store = TieredKVStore(max_memory_bytes=1000, path=str(tmp_path))
    spec = to_config(store, "kv_store")
    assert build("kv_store", spec) == store
    with pytest.raises(ConfigError, match="max_bytes"):
        MemoryKVStore(max_bytes=-1)


# -- the disk tier's size limit -------------------------------------------------------------------


def _entry(i: int) -> torch.Tensor:
    return torch.full((2, 2, 1, 64, 8), float(i))  # 8 KB of float32


def test_disk_store_evicts_the_least_recently_used_past_its_limit(tmp_path):
    probe = DiskKVStore(path=str(tmp_path / "probe"), max_disk_gb=None)
    probe.put("00" * 32, _entry(0))
    size = probe.usage()[1]  # one entry's blocks on disk
    store = DiskKVStore(path=str(tmp_path / "kv"), max_disk_gb=5.5 * size / 1e9)  # five entries
    for i in range(5):
        store.put(f"{i:064x}", _entry(i))
        os.utime(store.file(f"{i:064x}"), (1000 + i, 1000 + i))  # put in order, a second apart
    assert store.get(f"{0:064x}") is not None  # read: now the most recently used
    store.put(f"{9:064x}", _entry(9))  # over the limit: down to 90% of it
    kept = {p.stem for _, _, p in store.entries()}
    assert f"{0:064x}" in kept and f"{9:064x}" in kept  # used and new stay
    assert f"{1:064x}" not in kept  # the least recently used went first
    entries, used = store.usage()
    assert used <= 0.9 * store.max_disk_gb * 1e9 and store.stats.evictions == 5 - entries + 1
    assert store.get(f"{1:064x}") is None  # an evicted entry is a plain miss


def test_disk_store_limit_is_validated_and_clear_empties_it(tmp_path):
    for bad in (0, -1, True, "10", float("inf")):
        with pytest.raises(ConfigError, match="max_disk_gb"):
            DiskKVStore(path=str(tmp_path), max_disk_gb=bad)
    store = DiskKVStore(path=str(tmp_path), max_disk_gb=None)
    for i in range(3):
        store.put(f"{i:064x}", _entry(i))
    assert store.usage()[0] == 3
    assert store.clear()[0] == 3 and store.usage() == (0, 0)


def test_cli_cache_stats_and_clear(tmp_path, capsys):
    from ragkit.cli import main

    folder = tmp_path / "idx"
    folder.mkdir()
    kv = tmp_path / "kv"
    (folder / "pipeline.yaml").write_text(
        "chunker: recursive\nembedder: hash\nindex: memory\n"
        f"generator: {{name: transformers, kv_store: {{name: tiered, path: {kv}, "
        "max_disk_gb: 2.5}}\n", encoding="utf-8")
    store = DiskKVStore(path=str(kv))
    store.put("ab" * 32, _entry(1))
    assert main(["cache", "stats", "--index", str(folder), "--json"]) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["path"] == str(kv) and stats["entries"] == 1 and stats["bytes"] > 0
    assert stats["max_bytes"] == 2_500_000_000
    assert main(["cache", "clear", "--index", str(folder)]) == 0
    assert capsys.readouterr().out.startswith("deleted 1 entries (")
    assert store.usage() == (0, 0)
