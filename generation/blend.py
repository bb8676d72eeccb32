"""Recomputing some context tokens through the decoder layers by hand, in place in a KV.

The context KV ``kv`` is ``(layers, 2, kv_heads, capacity, head_dim)`` with positions
``[0, total)`` filled from independently computed chunk KVs (``ragkit.generation.context``). Chunks
after the first miss their attention to earlier chunks; this module recomputes a subset of their
tokens, each through every layer, attending to the whole (partly fused) context at its true
position, and writes their KV over the cached one (CacheBlend's fusion). Which tokens:

the ``n_select`` tokens the question attends to most, measured by running the question's few
tokens through every layer on the approximate cache (``query_attention``): the tokens the answer
reads most are the ones whose stale KV moves it most.

Three other choices were measured on the same frontier and deleted, each dominated by this one
(benchmarks/README.md, "KV reuse fidelity"): CacheBlend's deviation of keys and values at layer 1
after recomputing layers 0-1 for every token; a Cache-Craft-style score stored with each chunk's
KV (the attention its tokens paid to the instruction): over 50 questions at ~4k tokens KL 0.233
at 4.1x where this ranking gives 0.080 at 5.4x (10%); and EPIC's LegoLink, the first k tokens of
each chunk (50 questions at ~4k: k = 8, KL 0.458 at 13.7x, no closer than ``independent``;
k = 32, 0.395 at 5.1x).

Llama layers and Gemma 3 layers (per-head q/k norms, sandwich norms, sliding-window layers, a RoPE
base per layer type) are supported. Attention of the selected rows is one
``scaled_dot_product_attention`` over ``[0, total)`` with a boolean ``(rows, total)`` mask built
once (narrowed per sliding-window layer). This module must not read or write the KV store,
tokenize, or decode: it only does arithmetic on a model and a KV tensor.
"""

from __future__ import annotations

import math
from typing import Any

import torch

SELECTS = ("query",)


def pick(scores: torch.Tensor, n: int) -> torch.Tensor:
    """Indices of the ``n`` best ``scores``, sorted."""
    return torch.topk(scores, min(n, scores.numel())).indices.sort().values


def recompute(
    lm: Any,
    kv: torch.Tensor,
    ids: list[int],
    first: int,
    total: int,
    *,
    n_select: int,
    question: list[int],
) -> int:
    """Recompute ``n_select`` tokens of positions ``[first, total)`` in place in ``kv``, those
    the ``question`` (the ids after the context) attends to most; returns how many.

    ``ids`` are the token ids of positions ``[0, total)``.
    """
    n_layers = kv.shape[0]
    if n_select <= 0:
        return 0
    pos = first + pick(query_attention(lm, kv, question, first, total), n_select)
    mask = torch.arange(total)[None, :] <= pos[:, None]  # (rows, total): causal by position
    h = lm.model.embed_tokens(torch.tensor(ids, dtype=torch.long)[pos])[None]  # (1, rows, hidden)
    for layer in range(n_layers):
        h = _layer(lm, layer, h, pos, kv, total, mask, last=layer == n_layers - 1)
    return int(pos.numel())


def query_attention(lm: Any, kv: torch.Tensor, question: list[int], first: int,
                    total: int) -> torch.Tensor:
    """Attention mass each context position ``[first, total)`` receives from the ``question``
    tokens (placed after the context, on the approximate cache), summed over layers, heads and
    question tokens: the positions the answer reads most, whose stale KV matters most. The
    question's KV is written at ``[total, total + len(question))`` (the question prefill
    overwrites it). Returns ``(total - first,)``."""
    n_layers = kv.shape[0]
    end = total + len(question)
    pos = torch.arange(total, end)
    h = lm.model.embed_tokens(torch.tensor(question, dtype=torch.long))[None]
    causal = torch.arange(end)[None, :] <= pos[:, None]  # (q, end)
    mass = torch.zeros(total - first)
    for layer in range(n_layers):
        q, k, v = _qkv(lm, layer, h, pos)
        kv[layer, 0][:, pos] = k[0]
        kv[layer, 1][:, pos] = v[0]
        probs = _probs(lm, layer, q, kv[layer, 0, :, :end], causal, pos)  # (heads, q, end)
        mass += probs[:, :, first:total].sum((0, 1))
        if layer == n_layers - 1:
            break
        values = kv[layer, 1, :, :end]  # (kv_heads, end, hd)
        o = (probs.reshape(values.shape[0], -1, end) @ values).view(probs.shape[0], -1,
                                                                    values.shape[2])  # (heads, q, hd)
        h = _residual(lm.model.layers[layer], h, o.transpose(0, 1).reshape(1, len(question), -1))
    return mass


def _qkv(lm: Any, layer: int, h: torch.Tensor, pos: torch.Tensor):
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    block = lm.model.layers[layer]
    attn = block.self_attn
    x = block.input_layernorm(h)  # (1, n, hidden)
    shape = (1, h.shape[1], -1, attn.head_dim)
    q = attn.q_proj(x).view(shape).transpose(1, 2)  # (1, heads, n, hd)
    k = attn.k_proj(x).view(shape).transpose(1, 2)  # (1, kv_heads, n, hd)
    v = attn.v_proj(x).view(shape).transpose(1, 2)
    if hasattr(attn, "q_norm"):  # Gemma 3: per-head norms before RoPE
        q, k = attn.q_norm(q), attn.k_norm(k)
    kind = getattr(attn, "layer_type", None)
    if kind is not None and hasattr(lm.model.rotary_emb, f"{kind}_inv_freq"):  # per layer type
        cos, sin = lm.model.rotary_emb(x, position_ids=pos[None], layer_type=kind)
    else:
        cos, sin = lm.model.rotary_emb(x, position_ids=pos[None])
    q, k = apply_rotary_pos_emb(q, k, cos, sin)
    return q, k, v


def _window(lm: Any, layer: int, mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    """``mask`` (rows, keys) narrowed to the layer's sliding window, if it has one (Gemma 3)."""
    window = getattr(lm.model.layers[layer].self_attn, "sliding_window", None)
    if not window:
        return mask
    return mask & (torch.arange(mask.shape[1])[None, :] > pos[:, None] - window)


def _residual(block: Any, h: torch.Tensor, o: torch.Tensor) -> torch.Tensor:
    """The decoder block after attention: ``o`` (1, rows, heads * hd) added, then the MLP."""
    if hasattr(block, "pre_feedforward_layernorm"):  # Gemma 3: sandwich norms
        h = h + block.post_attention_layernorm(block.self_attn.o_proj(o))
        return h + block.post_feedforward_layernorm(block.mlp(block.pre_feedforward_layernorm(h)))
    h = h + block.self_attn.o_proj(o)
    return h + block.mlp(block.post_attention_layernorm(h))


def _layer(lm: Any, layer: int, h: torch.Tensor, pos: torch.Tensor, kv: torch.Tensor, total: int,
           mask: torch.Tensor, last: bool = False) -> torch.Tensor:
    """Rows ``pos`` through ``layer``: their KV written into ``kv``, their output returned."""
    q, k, v = _qkv(lm, layer, h, pos)
    kv[layer, 0][:, pos] = k[0]
    kv[layer, 1][:, pos] = v[0]
    if last:
        return h  # the last layer's output is not needed: only its KV
    return _attend(lm, layer, h, q, kv, total, mask, pos)


def _attend(lm: Any, layer: int, h: torch.Tensor, q: torch.Tensor, kv: torch.Tensor, total: int,
            mask: torch.Tensor, pos: torch.Tensor) -> torch.Tensor:
    block = lm.model.layers[layer]
    o = torch.nn.functional.scaled_dot_product_attention(
        q, kv[layer, 0, :, :total][None], kv[layer, 1, :, :total][None],
        attn_mask=_window(lm, layer, mask, pos), scale=block.self_attn.scaling, enable_gqa=True,
    )  # (1, heads, rows, hd)
    return _residual(block, h, o.transpose(1, 2).reshape(1, h.shape[1], -1))


def _probs(lm: Any, layer: int, q: torch.Tensor, keys: torch.Tensor, mask: torch.Tensor,
           pos: torch.Tensor) -> torch.Tensor:
    """Attention probabilities ``(heads, rows, keys)`` of ``q`` (1, heads, rows, hd) over ``keys``
    (kv_heads, n, hd) under ``mask`` (and the layer's sliding window)."""
    heads, rows, hd = q.shape[1:]
    kv_heads = keys.shape[0]  # query head h reads kv head h // group: group the queries, no copy
    scores = (q[0].reshape(kv_heads, -1, hd) @ keys.transpose(1, 2)).view(heads, rows, -1)
    scores = scores * lm.model.layers[layer].self_attn.scaling
    return scores.masked_fill(~_window(lm, layer, mask, pos), -math.inf).softmax(-1)
