"""The context's KV by reuse mode, and the store entries it is made of.

- ``prefill_prefix``: the longest cached exact prefix at segment granularity (keys chained on all
  ids before each segment), the rest computed and stored;
- ``independent_context``: the prefix's KV and each chunk's KV (computed once after the prefix
  alone, stored with its keys rotated back to position 0) written, RoPE-rotated to their places,
  straight into one preallocated buffer; ``blend`` then recomputes some tokens in place
  (``ragkit.generation.blend``);
- ``BufferLayer``/``buffer_cache``: a transformers cache whose layers are views of that buffer, so
  the question prefill and every decoding step write in place instead of concatenating copies;
- ``warm``: chunk KVs computed many per forward (right-padded: under causal attention a real
  token never sees the padding after it).

This module must not decode, sample or build prompts: it returns KV and counts.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from typing import Any

import torch
from transformers.cache_utils import Cache, DynamicLayer

from ragkit.generation.prompt import PromptLayout


class BufferLayer(DynamicLayer):
    """A cache layer over preallocated ``keys``/``values`` buffers ``(1, kv_heads, capacity, hd)``
    holding ``n`` tokens; ``update`` writes after them (doubling the buffer if it is full)."""

    def __init__(self, keys: torch.Tensor, values: torch.Tensor, n: int) -> None:
        super().__init__()
        self.kbuf, self.vbuf, self.n = keys, values, n
        self.device = keys.device
        self.is_initialized = True
        self._view()

    def _view(self) -> None:
        self.keys = self.kbuf[:, :, : self.n]
        self.values = self.vbuf[:, :, : self.n]

    def update(self, key_states: torch.Tensor, value_states: torch.Tensor, *args: Any,
               **kwargs: Any) -> tuple[torch.Tensor, torch.Tensor]:
        m = key_states.shape[-2]
        if self.n + m > self.kbuf.shape[-2]:
            grow = max(2 * self.kbuf.shape[-2], self.n + m)
            self.kbuf = _grow(self.kbuf, grow)
            self.vbuf = _grow(self.vbuf, grow)
        self.kbuf[:, :, self.n : self.n + m] = key_states
        self.vbuf[:, :, self.n : self.n + m] = value_states
        self.n += m
        self._view()
        return self.keys, self.values


def _grow(buf: torch.Tensor, size: int) -> torch.Tensor:
    out = buf.new_empty(*buf.shape[:2], size, buf.shape[3])
    out[:, :, : buf.shape[2]] = buf
    return out


def kv_shape(lm: Any, seq: int) -> tuple[int, int, int, int, int]:
    """``(layers, 2, kv_heads, seq, head_dim)`` of ``lm``."""
    c = lm.config
    head_dim = getattr(c, "head_dim", None) or c.hidden_size // c.num_attention_heads
    return (c.num_hidden_layers, 2, c.num_key_value_heads, seq, head_dim)


def new_buffer(lm: Any, capacity: int) -> torch.Tensor:
    """An empty context buffer ``(layers, 2, kv_heads, capacity, head_dim)`` for ``lm``."""
    return torch.empty(kv_shape(lm, capacity), dtype=next(lm.parameters()).dtype)


def buffer_cache(kv: torch.Tensor, n: int) -> Cache:
    """A cache holding the first ``n`` positions of ``kv``; later tokens are written into it."""
    return Cache(layers=[BufferLayer(kv[i, 0][None], kv[i, 1][None], n)
                         for i in range(kv.shape[0])])


def kv_of(cache: Any, start: int = 0, end: int | None = None) -> torch.Tensor:
    """Positions ``[start, end)`` of ``cache`` as one tensor (layers, 2, kv_heads, seq, hd)."""
    return torch.stack(
        [torch.stack((layer.keys[0, :, start:end], layer.values[0, :, start:end]))
         for layer in cache.layers]
    ).contiguous()


def ids_hash(ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:32]


# -- store entries ------------------------------------------------------------------------------


def key(gen: Any, ids: Sequence[int], prefix_id: str) -> str:
    from ragkit.generation.kv_store import kv_key

    fp = gen.fingerprint
    return kv_key(model=fp["model"], tokenizer=fp["tokenizer"], dtype=fp["dtype"],
                  token_ids=ids, prefix_id=prefix_id)


def chunk_key(gen: Any, prefix: Sequence[int], ids: Sequence[int],
              codec: str | None = None) -> str:
    """A chunk entry's key; entries in another codec than float32 are other entries."""
    codec = codec or gen.kv_codec
    codec = "" if codec == "float32" else f"[{codec}]"
    return key(gen, ids, f"after{codec}:" + ids_hash(prefix))


def prefix_kv(gen: Any, ids: Sequence[int]) -> tuple[torch.Tensor, bool]:
    """KV of ``ids`` at positions 0.. with nothing before (the prefix); from the store if
    there. Returns ``(kv, reused)``."""
    k = key(gen, ids, "")
    store = gen.kv_store
    kv = store.get(k) if store is not None else None
    if kv is not None:
        return kv, True
    cache = gen.new_cache()
    gen.forward_ids(ids, cache, 0)
    kv = kv_of(cache)
    if store is not None:
        store.put(k, kv)
    return kv, False


def chunk_entries(
    gen: Any, prefix: Sequence[int], pkv: torch.Tensor, chunks: Sequence[Sequence[int]]
) -> list[tuple[torch.Tensor, bool]]:
    """``(kv, reused)`` of each chunk: computed after the prefix alone, keys rotated back to
    position 0. Missing entries are computed ``gen.warm_batch`` per forward and stored."""
    from ragkit.generation.kv_codec import decode, encode

    store = gen.kv_store
    codec = gen.kv_codec
    dtype = pkv.dtype
    found: list[Any] = []
    todo = []
    for i, ids in enumerate(chunks):
        kv = store.get(chunk_key(gen, prefix, ids)) if store is not None else None
        if kv is not None:
            kv = decode(kv, codec, kv_shape(gen.lm, len(ids)), dtype)
        elif store is not None and codec != "float32":  # re-encode a float32 entry
            full = store.get(chunk_key(gen, prefix, ids, codec="float32"))
            if full is not None:
                stored = encode(full, codec)
                store.put(chunk_key(gen, prefix, ids), stored)
                kv = decode(stored, codec, tuple(full.shape), dtype)
        if kv is None:
            todo.append(i)
        found.append((kv, True))
    batch = max(1, int(gen.warm_batch))
    order = sorted(todo, key=lambda i: len(chunks[i]))  # similar lengths: little padding
    for b in range(0, len(order), batch):
        group = order[b : b + batch]
        for i, kv in zip(group, _compute_chunks(gen, prefix, pkv, [chunks[i] for i in group])):
            stored = encode(kv, codec)
            kv = decode(stored, codec, tuple(kv.shape), dtype)  # a hit later reads the same
            if store is not None:
                store.put(chunk_key(gen, prefix, chunks[i]), stored)
            found[i] = (kv, False)
    return found


def _compute_chunks(gen: Any, prefix: Sequence[int], pkv: torch.Tensor,
                    chunks: list[Sequence[int]]) -> list[torch.Tensor]:
    from transformers import DynamicCache

    from ragkit.generation.rope import rotate_kv

    n_prefix = len(prefix)
    width = max(len(c) for c in chunks)
    pad = chunks[0][0]  # any id: right padding is never attended by real tokens (causal)
    input_ids = torch.tensor([list(c) + [pad] * (width - len(c)) for c in chunks])  # (B, w)
    b = len(chunks)
    cache = DynamicCache(ddp_cache_data=[
        (pkv[i, 0][None].expand(b, -1, -1, -1), pkv[i, 1][None].expand(b, -1, -1, -1))
        for i in range(pkv.shape[0])])
    gen.lm(
        input_ids=input_ids, position_ids=torch.arange(n_prefix, n_prefix + width)[None],
        **{gen.cache_kw: cache}, use_cache=True, logits_to_keep=1,
    )
    results = []
    for row, ids in enumerate(chunks):
        end = n_prefix + len(ids)
        full = torch.stack([torch.stack((layer.keys[row, :, :end], layer.values[row, :, :end]))
                            for layer in cache.layers])  # (layers, 2, kv_heads, P + n, hd)
        results.append(rotate_kv(full[:, :, :, n_prefix:].contiguous(), -n_prefix,
                                 gen.inv_freq))
    return results


# -- modes --------------------------------------------------------------------------------------


def prefill_prefix(gen: Any, layout: PromptLayout, capacity: int) -> tuple[Any, Any, dict]:
    """``prefix`` mode: exact. Returns ``(first-token logits, cache, stats)``."""
    segments = [layout.prefix, *layout.chunks]
    keys, before = [], []
    for seg in segments:
        keys.append(key(gen, seg, "chain:" + ids_hash(before)))
        before.extend(seg)
    found = []
    store = gen.kv_store
    if store is not None:
        for k in keys:
            kv = store.get(k)
            if kv is None:
                break
            found.append(kv)
    reused = sum(len(s) for s in segments[: len(found)])
    buf = new_buffer(gen.lm, capacity)
    pos = 0
    for kv in found:
        buf[:, :, :, pos : pos + kv.shape[3]] = kv
        pos += kv.shape[3]
    cache = buffer_cache(buf, reused)
    rest = [t for seg in segments[len(found):] for t in seg] + list(layout.question)
    logits = gen.forward_ids(rest, cache, reused)
    if store is not None:  # store the newly computed context segments
        pos = reused
        for seg, k in zip(segments[len(found):], keys[len(found):]):
            store.put(k, buf[:, :, :, pos : pos + len(seg)].clone())
            pos += len(seg)
    return logits, cache, {"computed": len(rest), "reused": reused, "approximate": 0}


def independent_context(gen: Any, layout: PromptLayout,
                        capacity: int) -> tuple[torch.Tensor, dict]:
    """The context KV in a buffer of ``capacity`` positions (prefix + chunks filled) and counts
    of computed/reused tokens."""
    from ragkit.generation.rope import rotate_keys

    pkv, hit = prefix_kv(gen, layout.prefix)
    computed = 0 if hit else len(layout.prefix)
    n_prefix = pkv.shape[3]
    buf = new_buffer(gen.lm, capacity)
    buf[:, :, :, :n_prefix] = pkv
    entries = chunk_entries(gen, layout.prefix, pkv, layout.chunks)
    for (kv, hit), ids, start in zip(entries, layout.chunks, layout.chunk_starts()):
        if not hit:
            computed += len(ids)
        end = start + len(ids)
        buf[:, 0, :, start:end] = rotate_keys(kv[:, 0].to(buf.dtype), start, gen.inv_freq)
        buf[:, 1, :, start:end] = kv[:, 1]
    return buf, {"computed": computed, "reused": layout.context_len - computed}


def blend(gen: Any, buf: torch.Tensor, layout: PromptLayout) -> int:
    """Recompute chunk tokens in place in ``buf`` per the generator's blend settings."""
    from ragkit.generation.blend import recompute

    if len(layout.chunks) < 2:
        return 0  # prefix and first chunk are exact already
    first, total = layout.chunk_starts()[1], layout.context_len
    n_chunk_tokens = total - len(layout.prefix)
    n_select = min(total - first, int(round(gen.blend_ratio * n_chunk_tokens)))
    return recompute(gen.lm, buf, layout.ids[:total], first, total, n_select=n_select,
                     question=list(layout.question))
