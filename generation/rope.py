"""Moving cached keys to another place in the prompt: Llama's rotary position embedding (RoPE).

RoPE rotates each (i, i + d/2) pair of a key's dimensions by the angle ``pos * inv_freq[i]``.
Rotations compose, ``R(a) R(b) = R(a + b)``, so a key computed at position ``t`` moves to
``t + p`` by one more rotation by ``p * inv_freq``; values carry no position and stay as they are.
This is how a chunk's KV computed alone at position 0 is placed at offset ``p`` (TurboRAG).

The angles are computed in float64 and cast, so a rotated key is at least as exact as one the
model computes at ``t + p`` itself (its angles are float32 products).
"""

from __future__ import annotations

import torch


def inv_freq_of(model: torch.nn.Module) -> torch.Tensor:
    """The model's RoPE inverse frequencies ``(head_dim / 2,)``, from its rotary embedding module;
    ``(layers, 1, 1, head_dim / 2)`` for a model with one RoPE per layer type (Gemma 3).

    Only plain rotary embeddings compose by a second rotation; scaled variants that also scale the
    cos/sin (``attention_scaling != 1``) are refused.
    """
    rotary = model.model.rotary_emb
    kinds = getattr(model.config, "layer_types", None)
    if kinds and hasattr(rotary, f"{kinds[0]}_inv_freq"):  # Gemma 3: one RoPE per layer type
        for kind in set(kinds):
            _check_scaling(getattr(rotary, f"{kind}_attention_scaling", 1.0))
        return torch.stack([getattr(rotary, f"{kind}_inv_freq").detach() for kind in kinds])[
            :, None, None, :]  # (layers, 1, 1, head_dim / 2): broadcasts over (layers, h, seq, d)
    _check_scaling(getattr(rotary, "attention_scaling", 1.0))
    return rotary.inv_freq.detach()


def _check_scaling(scaling: float) -> None:
    if abs(float(scaling) - 1.0) > 1e-12:
        raise ValueError(
            f"RoPE with attention_scaling={scaling} does not compose by rotation; "
            "kv_reuse 'independent'/'blend' needs a plain (or llama3-scaled) rotary embedding"
        )


def _rotate_half(x: torch.Tensor) -> torch.Tensor:
    half = x.shape[-1] // 2
    return torch.cat((-x[..., half:], x[..., :half]), dim=-1)


def rotate_keys(keys: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """``keys`` (..., seq, head_dim), rotated as if every position were ``delta`` further on."""
    if delta == 0:
        return keys
    angles = delta * inv_freq.to(torch.float64)  # (head_dim/2,)
    angles = torch.cat((angles, angles), dim=-1)  # (..., head_dim): dim i pairs with i + hd/2
    cos = angles.cos().to(keys.dtype)
    sin = angles.sin().to(keys.dtype)
    return keys * cos + _rotate_half(keys) * sin


def rotate_kv(kv: torch.Tensor, delta: int, inv_freq: torch.Tensor) -> torch.Tensor:
    """A chunk KV ``(layers, 2, kv_heads, seq, head_dim)`` with its keys moved by ``delta``."""
    if delta == 0:
        return kv
    keys = rotate_keys(kv[:, 0], delta, inv_freq)  # (layers, kv_heads, seq, head_dim)
    return torch.stack((keys, kv[:, 1]), dim=1)
