"""How a chunk's KV is stored: in the compute dtype, in 16 bits, or in 8 bits with scales.

``encode(kv, codec)`` turns a chunk KV ``(layers, 2, kv_heads, seq, head_dim)`` into one tensor for
the store; ``decode(stored, codec, shape)`` gives back a float tensor of ``shape``.

- ``float32``: as computed (4 bytes a number);
- ``float16`` / ``bfloat16``: cast (2 bytes);
- ``k8v4``: keys as ``int8`` below, values in 4 bits per token (as KIVI does for values): every
  (layer, head, token) has one float16 scale, ``absmax / 7`` over its channels, each number is
  ``round(x / scale)`` in [-7, 7], two to a byte. About 0.19 of float32's bytes per token.
- ``k8v4g``: keys as ``int8`` below, values in 4 bits as KIVI stores them: asymmetric, in groups
  of 32 channels of a (layer, head, token) (the whole head when its size is not a multiple of
  32), each group with a float16 minimum and step ``(max - min) / 15``, each number
  ``round((x - min) / step)`` in [0, 15]. Sixteen levels over the group's own range instead of
  fifteen over twice its largest magnitude: about half ``k8v4``'s step, for 4 more bytes per
  (layer, head, token) with 64-channel heads. About 0.20 of float32's bytes per token.
- ``k8v6``: as ``k8v4g`` with 6-bit values (64 levels, four numbers in three bytes): a quarter of
  ``k8v4g``'s step. About 0.235 of float32's bytes per token.
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

CODECS = ("float32", "float16", "bfloat16", "int8", "k8v4", "k8v4g", "k8v6")
GROUP = 32  # channels per value group in k8v4g and k8v6
GROUPED = {"k8v4g": 4, "k8v6": 6}  # codec -> bits per value


def encode(kv: torch.Tensor, codec: str) -> torch.Tensor:
    if codec == "float32":
        return kv
    if codec in ("float16", "bfloat16"):
        return kv.to(getattr(torch, codec)).contiguous()
    if codec == "k8v4":
        return torch.cat((_int8(kv[:, :1]), _int4(kv[:, 1])))
    if codec in GROUPED:
        return torch.cat((_int8(kv[:, :1]), _grouped(kv[:, 1], GROUPED[codec])))
    if codec != "int8":
        raise ValueError(f"unknown KV codec {codec!r}; choose one of {', '.join(CODECS)}")
    return _int8(kv)


def _int8(kv: torch.Tensor) -> torch.Tensor:
    x = kv.float()
    scale = (x.abs().amax(dim=3, keepdim=True) / 127.0).clamp_min(1e-8).half()  # (L, 2, h, 1, d)
    q = torch.round(x / scale.float()).clamp_(-127, 127).to(torch.int8)
    return torch.cat((q.reshape(-1).view(torch.uint8), scale.reshape(-1).view(torch.uint8)))


def _int4(v: torch.Tensor) -> torch.Tensor:
    """Values ``(L, h, seq, d)`` (d even): per-token scales, two 4-bit numbers a byte."""
    x = v.float()
    scale = (x.abs().amax(dim=-1, keepdim=True) / 7.0).clamp_min(1e-8).half()  # (L, h, seq, 1)
    q = torch.round(x / scale.float()).clamp_(-7, 7) + 8
    return torch.cat((_pack(q.to(torch.int32), 4), scale.reshape(-1).view(torch.uint8)))


def _group(dim: int) -> int:
    return GROUP if dim % GROUP == 0 else dim


def _grouped(v: torch.Tensor, bits: int) -> torch.Tensor:
    """Values ``(L, h, seq, d)``: asymmetric ``bits``-bit numbers in groups of ``_group(d)``
    channels, packed (two 4-bit numbers a byte; four 6-bit numbers in three bytes), then every
    group's float16 minimum, then its float16 step."""
    layers, heads, seq, dim = v.shape
    if dim % (2 if bits == 4 else 4):
        raise ValueError(f"{bits}-bit values need a head size divisible by {2 if bits == 4 else 4}; "
                         f"got {dim}")
    levels = (1 << bits) - 1
    x = v.float().reshape(layers, heads, seq, dim // _group(dim), _group(dim))
    low = x.amin(dim=-1, keepdim=True).half()
    step = ((x.amax(dim=-1, keepdim=True) - low.float()) / levels).clamp_min(1e-8).half()
    q = torch.round((x - low.float()) / step.float()).clamp_(0, levels).to(torch.int32)
    return torch.cat((_pack(q, bits), low.reshape(-1).view(torch.uint8),
                      step.reshape(-1).view(torch.uint8)))


def _pack(q: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned ``bits``-bit numbers (int32) as bytes: two 4-bit numbers a byte, or four 6-bit
    numbers in three bytes."""
    if bits == 4:
        q = q.reshape(-1, 2)
        return (q[:, 0] | (q[:, 1] << 4)).to(torch.uint8)
    q = q.reshape(-1, 4)
    word = q[:, 0] | (q[:, 1] << 6) | (q[:, 2] << 12) | (q[:, 3] << 18)
    return torch.stack((word & 255, (word >> 8) & 255, word >> 16), dim=1).to(torch.uint8).reshape(-1)


def _unpack(packed: torch.Tensor, bits: int) -> torch.Tensor:
    """The numbers ``_pack`` stored, flat, as uint8 (4 bits) or int32 (6 bits)."""
    if bits == 4:
        return torch.stack((packed & 15, packed >> 4), dim=1).reshape(-1)
    b = packed.reshape(-1, 3).to(torch.int32)
    word = b[:, 0] | (b[:, 1] << 8) | (b[:, 2] << 16)
    return torch.stack([(word >> s) & 63 for s in (0, 6, 12, 18)], dim=1).reshape(-1)


def _ungrouped(stored: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype,
               bits: int) -> torch.Tensor:
    layers, heads, seq, dim = shape
    values, groups = layers * heads * seq * dim, layers * heads * seq * (dim // _group(dim))
    n = values * bits // 8
    q = _unpack(stored[:n], bits).reshape(layers, heads, seq, dim // _group(dim), _group(dim))
    low = stored[n : n + 2 * groups].view(torch.float16).reshape(*q.shape[:-1], 1)
    step = stored[n + 2 * groups :].view(torch.float16).reshape(*q.shape[:-1], 1)
    return (q.to(dtype) * step.to(dtype) + low.to(dtype)).reshape(shape)


def _unint4(stored: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    layers, heads, seq, dim = shape
    n = layers * heads * seq * dim // 2
    q = _unpack(stored[:n], 4).reshape(shape).to(dtype) - 8
    scale = stored[n:].view(torch.float16).reshape(layers, heads, seq, 1)
    return q * scale.to(dtype)


def decode(stored: torch.Tensor, codec: str, shape: tuple[int, ...],
           dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """The float KV of ``shape`` ``(layers, 2, kv_heads, seq, head_dim)`` from ``encode``."""
    if codec not in ("int8", "k8v4", *GROUPED):
        return stored if stored.dtype == dtype else stored.to(dtype)
    layers, two, heads, seq, dim = shape
    if stored.dtype != torch.uint8 or stored.numel() != _nbytes(codec, shape):
        raise ValueError(f"an {codec} KV entry of {stored.numel()} bytes does not hold {shape}")
    if codec == "k8v4" or codec in GROUPED:
        n = _nbytes("int8", (layers, 1, heads, seq, dim))
        keys = _unint8(stored[:n], (layers, 1, heads, seq, dim), dtype)
        if codec == "k8v4":
            values = _unint4(stored[n:], (layers, heads, seq, dim), dtype)
        else:
            values = _ungrouped(stored[n:], (layers, heads, seq, dim), dtype, GROUPED[codec])
        return torch.cat((keys, values[:, None]), dim=1)
    return _unint8(stored, shape, dtype)


def _unint8(stored: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    layers, two, heads, seq, dim = shape
    n = layers * two * heads * seq * dim
    q = stored[:n].view(torch.int8).reshape(shape)
    scale = stored[n:].view(torch.float16).reshape(layers, two, heads, 1, dim)
    return q.to(dtype) * scale.to(dtype)


def _nbytes(codec: str, shape: tuple[int, ...]) -> int:
    layers, two, heads, seq, dim = shape
    if codec == "int8":
        return layers * two * heads * (seq + 2) * dim
    keys = layers * heads * (seq + 2) * dim  # int8 keys and their per-channel scales
    if codec in GROUPED:  # packed values, a minimum and a step per group
        return keys + layers * heads * seq * (dim * GROUPED[codec] // 8 + 4 * (dim // _group(dim)))
    return keys + layers * heads * seq * (dim // 2 + 2)  # 4-bit values, a scale per token


def bytes_per_token(codec: str, layers: int, heads: int, dim: int, seq: int) -> float:
    """Stored bytes per token of a ``seq``-token chunk (scales spread over its tokens)."""
    numbers = layers * 2 * heads * dim
    if codec == "float32":
        return 4.0 * numbers
    if codec in ("float16", "bfloat16"):
        return 2.0 * numbers
    return _nbytes(codec, (layers, 2, heads, seq, dim)) / seq
