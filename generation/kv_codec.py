"""How a chunk's KV is stored: in the compute dtype, in 16 bits, or in 8 bits with scales.

``encode(kv, codec)`` turns a chunk KV ``(layers, 2, kv_heads, seq, head_dim)`` into one tensor for
the store; ``decode(stored, codec, shape)`` gives back a float tensor of ``shape``.

- ``float32``: as computed (4 bytes a number);
- ``float16`` / ``bfloat16``: cast (2 bytes);
- ``int8``: symmetric per-channel quantization (as KIVI does for keys): every (layer, key/value,
  head, channel) has one float16 scale, ``absmax / 127`` over the chunk's tokens, and each
  number is ``round(x / scale)`` in int8. Stored as one flat uint8 tensor, the int8 payload then
  the scales, so a store keeps one tensor per entry (1 byte a number, plus
  ``layers * 2 * heads * head_dim * 2`` bytes of scales per chunk).

Only independent chunk entries go through a codec; exact-prefix entries stay in the compute dtype
(``prefix`` mode is exact). This module must not know about stores, keys or models.
"""

from __future__ import annotations

import torch

CODECS = ("float32", "float16", "bfloat16", "int8")


def encode(kv: torch.Tensor, codec: str) -> torch.Tensor:
    if codec == "float32":
        return kv
    if codec in ("float16", "bfloat16"):
        return kv.to(getattr(torch, codec)).contiguous()
    if codec != "int8":
        raise ValueError(f"unknown KV codec {codec!r}; choose one of {', '.join(CODECS)}")
    x = kv.float()
    scale = (x.abs().amax(dim=3, keepdim=True) / 127.0).clamp_min(1e-8).half()  # (L, 2, h, 1, d)
    q = torch.round(x / scale.float()).clamp_(-127, 127).to(torch.int8)
    return torch.cat((q.reshape(-1).view(torch.uint8), scale.reshape(-1).view(torch.uint8)))


def decode(stored: torch.Tensor, codec: str, shape: tuple[int, ...],
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float KV of ``shape`` ``(layers, 2, kv_heads, seq, head_dim)`` from ``encode``."""
    if codec != "int8":
        return stored if stored.dtype == dtype else stored.to(dtype)
    layers, two, heads, seq, dim = shape
    n = layers * two * heads * seq * dim
    if stored.dtype != torch.uint8 or stored.numel() != n + 2 * layers * two * heads * dim:
        raise ValueError(f"an int8 KV entry of {stored.numel()} bytes does not hold {shape}")
    q = stored[:n].view(torch.int8).reshape(shape)
    scale = stored[n:].view(torch.float16).reshape(layers, two, heads, 1, dim)
    return (q.to(dtype) * scale.to(dtype))


def bytes_per_token(codec: str, layers: int, heads: int, dim: int, seq: int) -> float:
    """Stored bytes per token of a ``seq``-token chunk (scales spread over its tokens)."""
    numbers = layers * 2 * heads * dim
    if codec == "float32":
        return 4.0 * numbers
    if codec in ("float16", "bfloat16"):
        return 2.0 * numbers
    return numbers + 2.0 * numbers / seq
