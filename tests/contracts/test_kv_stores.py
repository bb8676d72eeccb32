"""One contract, every registered chunk-KV store: put/get/contains give back the tensor put,
a missing key is ``None``, the stats count hits and misses, and a store whose config names a
folder keeps its entries for the next store opened on it."""

from __future__ import annotations

import pytest

from ragkit.config import build, to_config
from ragkit.protocols import CachesKV
from tests.contracts.registered import components, spec

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

STORES = components("kv_store")


def kv(seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(2, 2, 2, 5, 4, generator=g)  # (layers, k/v, kv_heads, seq, head_dim)


@pytest.mark.parametrize("name", STORES)
def test_put_get_contains(name):
    store = build("kv_store", spec("kv_store", name))
    assert isinstance(store, CachesKV)
    assert store.get("missing") is None and not store.contains("missing")
    store.put("a", kv(1))
    assert store.contains("a")
    torch.testing.assert_close(store.get("a"), kv(1), rtol=0, atol=0)
    store.put("a", kv(2))  # a key's value is replaced
    torch.testing.assert_close(store.get("a"), kv(2), rtol=0, atol=0)
    assert store.stats.hits >= 2 and store.stats.misses >= 1
    store.close()


@pytest.mark.parametrize("name", STORES)
def test_a_store_on_a_folder_persists(name):
    config = to_config(build("kv_store", spec("kv_store", name)), "kv_store")
    if config.get("path") is None or config.get("disk") is False:
        pytest.skip(f"kv_store {name!r} keeps entries in memory only")
    store = build("kv_store", config)
    store.put("k", kv(3))
    store.close()
    reopened = build("kv_store", config)
    torch.testing.assert_close(reopened.get("k"), kv(3), rtol=0, atol=0)
    reopened.close()
