"""Recomputing some context tokens through the decoder layers by hand, in place in a KV.

The context KV ``kv`` is ``(layers, 2, kv_heads, capacity, head_dim)`` with positions
``[0, total)`` filled from independently computed chunk KVs (``ragkit.generation.context``). Chunks
after the first miss their attention to earlier chunks; this module recomputes a subset of their
tokens, each through every layer, attending to the whole (partly fused) context at its true
position, and writes their KV over the cached one (CacheBlend's fusion). Which tokens:

- ``boundary``: the first ``k`` tokens of each chunk after the first (EPIC's LegoLink);
- plus ``n_select`` more, ranked by one of ``select``:
  - ``query`` (the default): the attention the question pays to each context token, measured by
    running the question's few tokens through every layer on the approximate cache
    (``query_attention``): the tokens the answer reads most are the ones whose stale KV moves it
    most. Much closer to full prefill than the others at the same count (benchmarks/README.md);
  - ``kv``: deviation of keys and values (each normalised by its mean) at layer 1 between the
    cached KV and an exact recompute of layers 0-1 for every candidate (CacheBlend's criterion);
  - ``stored``: a score kept with each chunk's KV when it was computed (``prefix_attention``, a
    Cache-Craft-style estimate of how much a token depends on what came before its chunk), so no
    pass over every candidate is needed.

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

SELECTS = ("query", "kv", "stored")


def boundary_positions(starts: list[int], lengths: list[int], k: int) -> torch.Tensor:
    """Positions of the first ``k`` tokens of each chunk (given by ``starts``/``lengths``)."""
    parts = [torch.arange(s, s + min(k, n)) for s, n in zip(starts, lengths)]
    return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.long)


def pick(scores: torch.Tensor, n: int, must: torch.Tensor) -> torch.Tensor:
    """Indices into ``scores``: ``must`` (indices) and the ``n`` best of the rest, sorted."""
    scores = scores.clone()
    scores[must] = -math.inf
    n = min(n, scores.numel() - must.numel())
    best = torch.topk(scores, n).indices if n > 0 else must[:0]
    return torch.cat((must, best)).unique(sorted=True)


def recompute(
    lm: Any,
    kv: torch.Tensor,
    ids: list[int],
    first: int,
    total: int,
    *,
    n_select: int,
    must: torch.Tensor,
    select: str = "query",
    stored: torch.Tensor | None = None,
    question: list[int] | None = None,
) -> int:
    """Recompute tokens of positions ``[first, total)`` in place in ``kv``; returns how many.

    ``ids`` are the token ids of positions ``[0, total)``; ``must`` are positions always
    recomputed (boundary tokens); ``stored`` is the per-position score for ``select="stored"``
    (length ``total - first``); ``question`` the ids after the context (``select="query"``).
    """
    n_layers = kv.shape[0]
    cand = torch.arange(first, total)  # (n,)
    must_idx = must - first
    ids_t = torch.tensor(ids, dtype=torch.long)
    embed = lm.model.embed_tokens
    if select in ("stored", "query") or n_select == 0:
        if n_select == 0:
            idx = must_idx
        else:
            score = stored if select == "stored" else query_attention(lm, kv, question, first,
                                                                        total)
            idx = pick(score, n_select, must_idx)
        if idx.numel() == 0:
            return 0
        pos = cand[idx]
        mask = torch.arange(total)[None, :] <= pos[:, None]  # (rows, total): causal by position
        h = embed(ids_t[pos])[None]  # (1, rows, hidden)
        for layer in range(n_layers):
            h = _layer(lm, layer, h, pos, kv, total, mask, last=layer == n_layers - 1)
        return int(pos.numel())
    # deviation: layers 0-1 exact for every candidate, then rank by how far layer 1 moved
    mask = torch.arange(total)[None, :] <= cand[:, None]  # (n, total)
    h = embed(ids_t[cand])[None]  # (1, n, hidden)
    h = _layer(lm, 0, h, cand, kv, total, mask)
    q, k, v = _qkv(lm, 1, h, cand)
    dev = _deviation(k[0], v[0], kv[1], cand)
    kv[1, 0][:, cand] = k[0]  # every candidate's KV at layer 1 is exact now
    kv[1, 1][:, cand] = v[0]
    keep = pick(dev, n_select, must_idx)
    pos, h, q, mask = cand[keep], h[:, keep], q[:, :, keep], mask[keep]
    h = _attend(lm, 1, h, q, kv, total, mask, pos)
    for layer in range(2, n_layers):
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


def _deviation(k: torch.Tensor, v: torch.Tensor, cached: torch.Tensor,
               pos: torch.Tensor) -> torch.Tensor:
    """Per-row squared distance of the recomputed ``k``, ``v`` (kv_heads, n, hd) from the
    cached ``cached`` (2, kv_heads, capacity, hd) at ``pos``: keys and values, each over its
    mean so neither dominates (values alone gave KL 0.116 against 0.080, benchmarks/README)."""
    dv = (v - cached[1][:, pos]).pow(2).sum(dim=(0, 2))  # (n,)
    dk = (k - cached[0][:, pos]).pow(2).sum(dim=(0, 2))
    return dk / dk.mean().clamp_min(1e-12) + dv / dv.mean().clamp_min(1e-12)


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


def prefix_attention(lm: Any, hidden: tuple, kv: torch.Tensor, n_prefix: int) -> torch.Tensor:
    """The ``stored`` score of each chunk token: the attention mass it puts on the prefix
    (positions ``1..n_prefix-1``; position 0, the attention sink, is left out), averaged over
    layers and heads, when the chunk is computed after the prefix alone. A token that looks far
    back is one whose KV changes most when other chunks come before it.

    ``hidden``: the chunk tokens' hidden states entering each layer (``(1, n, hidden)`` each);
    ``kv``: the cache of prefix and chunk ``(layers, 2, kv_heads, P + n, hd)``.
    Returns ``(n,)`` float32.
    """
    n_layers, total = kv.shape[0], kv.shape[3]
    pos = torch.arange(n_prefix, total)
    mass = torch.zeros(pos.numel())
    causal = torch.arange(total)[None, :] <= pos[:, None]  # (n, total)
    for layer in range(n_layers):
        q, _, _ = _qkv(lm, layer, hidden[layer], pos)  # (1, heads, n, hd)
        probs = _probs(lm, layer, q, kv[layer, 0], causal, pos)  # (heads, n, total)
        mass += probs[:, :, 1:n_prefix].sum(-1).mean(0)
    return (mass / n_layers).float()
