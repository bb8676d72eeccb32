"""Pieces of the transformers generator that do not touch the KV cache's assembly: detokenizing
a stream with stop strings, fingerprints of weights and tokenizer (store keys), the model's
cache argument name, value checks, and per-token log-probabilities over a sliding window.

This module must not read or write the KV store nor choose a reuse mode.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from typing import Any

from ragkit.errors import ConfigError
from ragkit.generation.prompt import encode


def token_logprobs(
    gen: Any,
    segments: Sequence[str],
    *,
    window: int,
    batch_tokens: int,
    progress: Callable[[int, int], None] | None,
) -> list[Any]:
    """``TransformersGenerator.token_logprobs`` (documented there), on generator ``gen``."""
    import numpy as np

    for name, value, low in (("window", window, 2), ("batch_tokens", batch_tokens, 1)):
        if isinstance(value, bool) or not isinstance(value, int) or value < low:
            raise ConfigError(f"must be an int >= {low}; got {value!r}", path=name)
    torch = gen.torch
    per_segment = [list(encode(gen.tokenizer, s)) if s else [] for s in segments]
    flat = [t for ids in per_segment for t in ids]
    out = np.zeros(len(flat), dtype=np.float32)
    step = max(1, min(batch_tokens, window // 2))
    limit = int(getattr(gen.lm.config, "max_position_embeddings", 0) or 2**31)
    with torch.inference_mode():
        context = [gen.doc_start_id]  # the ids held in the cache, oldest first
        cache = gen.new_cache()
        prev = gen.forward_ids(context, cache, 0)  # (vocab,): predicts the first token
        pos = 1
        done = 0
        while done < len(flat):
            batch = flat[done : done + step]
            keep = window - len(batch)
            if len(context) > keep:  # slide: drop the oldest cached tokens
                cache = gen.new_cache([
                    (layer.keys[:, :, -keep:], layer.values[:, :, -keep:])
                    for layer in cache.layers
                ])
                context = context[-keep:]
            if pos + len(batch) > limit:  # re-encode the kept context from position 0
                cache = gen.new_cache()
                gen.forward_ids(context, cache, 0)
                pos = len(context)
            logits = gen.lm(
                input_ids=torch.tensor([batch], dtype=torch.long),
                position_ids=torch.arange(pos, pos + len(batch)).unsqueeze(0),
                **{gen.cache_kw: cache}, use_cache=True, logits_to_keep=0,
            ).logits[0].float()  # (n, vocab): row j predicts batch[j + 1]
            scores = torch.cat((prev.float()[None], logits[:-1]))  # (n, vocab)
            target = torch.tensor(batch, dtype=torch.long)[:, None]  # (n, 1)
            picked = scores.gather(1, target)[:, 0] - torch.logsumexp(scores, dim=-1)
            out[done : done + len(batch)] = picked.numpy()
            prev = logits[-1]
            context.extend(batch)
            pos += len(batch)
            done += len(batch)
            if progress is not None:
                progress(done, len(flat))
    bounds = np.cumsum([0] + [len(ids) for ids in per_segment])
    return [out[a:b].copy() for a, b in zip(bounds[:-1], bounds[1:])]


class Detokenizer:
    """Turns the growing list of new ids into text pieces, holding back partial characters and
    anything that could be the start of a stop string."""

    def __init__(self, tok: Any, stop: tuple[str, ...]) -> None:
        self.tok, self.stop = tok, stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.sent = 0
        self.text = ""
        self.stopped = False

    def add(self, ids: list[int]) -> str:
        text = self.tok.decode(ids, skip_special_tokens=True)
        for s in self.stop:
            at = text.find(s)
            if at >= 0:
                text = text[:at]
                self.stopped = True
        self.text = text
        if self.stopped:
            return self._emit(len(text))
        if text.endswith("\ufffd"):
            return ""  # a multi-byte character is not complete yet
        return self._emit(len(text) - self.hold)

    def flush(self, ids: list[int]) -> str:
        return self._emit(len(self.text))

    def _emit(self, upto: int) -> str:
        if upto <= self.sent:
            return ""
        piece = self.text[self.sent:upto]
        self.sent = upto
        return piece


def cache_kwarg(lm: Any) -> str:
    """The name under which ``lm.forward`` takes a KV cache: ``cache`` from transformers 5.24
    (``past_key_values`` is deprecated there and prints a warning into every answer), else
    ``past_key_values``."""
    import inspect

    params = inspect.signature(type(lm).forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def weights_fingerprint(lm: Any) -> str:
    """sha256 of the config and a strided sample (up to 512 values) of every weight tensor."""
    import torch

    h = hashlib.sha256(json.dumps(lm.config.to_dict(), sort_keys=True, default=str).encode())
    for name, p in sorted(lm.state_dict().items()):
        flat = p.detach().reshape(-1)
        step = max(1, flat.numel() // 512)
        h.update(f"{name}:{tuple(p.shape)}:{p.dtype}".encode())
        h.update(flat[::step].to(torch.float32).contiguous().numpy().tobytes())
    return h.hexdigest()[:32]


def tokenizer_fingerprint(tok: Any) -> str:
    backend = getattr(tok, "backend_tokenizer", None)
    text = backend.to_str() if backend is not None else json.dumps(tok.get_vocab(), sort_keys=True)
    h = hashlib.sha256(text.encode())
    h.update(str(getattr(tok, "chat_template", "")).encode())
    return h.hexdigest()[:32]


def check_number(
    value: Any, name: str, low: float, high: float, *, low_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = "(" if low_open else "["
        raise ConfigError(f"must be a number in {lo}{low}, {high}]; got {value!r}", path=name)

