"""A transformers generator that answers over retrieved chunks, reusing their cached KVs.

The prompt is ``[prefix][chunk 1]...[chunk n][question]`` (``ragkit.generation.prompt``). How the KV of the
context (prefix and chunks) is obtained is ``kv_reuse``:

- ``none``: one forward over the whole prompt (the baseline).
- ``prefix``: the longest cached exact prefix, at segment granularity. Each context segment's KV is
  stored under a key chained on all ids before it (vLLM/SGLang-style prefix caching), so entries
  are exact and storage grows linearly with the number of segments.
- ``independent`` (TurboRAG): each chunk's KV is computed once after the instruction prefix only
  (not its neighbours), stored with its keys rotated back to position 0, and at answer time
  rotated (RoPE) to the chunk's place and concatenated after the prefix's KV; only the question
  is prefilled. The first chunk is exact; later ones miss the attention to earlier chunks.
- ``blend`` (CacheBlend): ``independent``, then a fraction ``blend_ratio`` of the chunk tokens is
  recomputed. Layer 0 is run for the tokens of chunks 2..n over the whole context; at layer 1 their
  values are compared with the cached ones, the tokens that deviate most are selected (the rest of
  layer 1's KV, now exact, is fused in), and layers 1..L-1 are recomputed for the selected tokens
  only, attending to the whole (partly fused) context, their KV fused into the cache.

Every mode ends with the same question prefill and decoding loop (greedy, or sampled with
temperature/top-p/seed), stopping at an end-of-turn token, ``max_new_tokens`` or a stop string.
``none`` and ``prefix`` work with any causal LM; ``independent`` rotates keys with Llama's RoPE and
``blend`` re-runs Llama decoder layers by hand, so both need a Llama-architecture model (SmolLM2).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from ragkit._deps import require
from ragkit.config import COMPONENT_KIND, build
from ragkit.errors import ConfigError, RagkitError
from ragkit.types import Answer, Chunk, Hit

from ragkit.generation.models import DEFAULT_MODEL, shared_model
from ragkit.generation.prompt import (
    DEFAULT_CHUNK_FORMAT,
    DEFAULT_INSTRUCTION,
    DEFAULT_QUESTION_FORMAT,
    PromptLayout,
    build_prompt,
    encode,
)

log = logging.getLogger(__name__)

KVReuse = Literal["none", "prefix", "independent", "blend"]
DEFAULT_KV_STORE = "tiered"


@dataclass(kw_only=True)
class TransformersGenerator:
    model: str = DEFAULT_MODEL  # the packaged SmolLM2 (converted once) or a local HF folder
    kv_reuse: KVReuse = "none"
    blend_ratio: float = 0.15  # fraction of chunk tokens recomputed in 'blend'
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # sampling seed (None: a fresh one per call)
    stop: tuple[str, ...] = ()
    system: str | None = None  # None: the chat template's default system message
    instruction: str = DEFAULT_INSTRUCTION
    chunk_format: str = DEFAULT_CHUNK_FORMAT
    question_format: str = DEFAULT_QUESTION_FORMAT
    dtype: Literal["float32", "bfloat16"] = "float32"
    attn: Literal["sdpa", "eager"] = "sdpa"
    kv_store: Any = field(
        default_factory=lambda: {"name": DEFAULT_KV_STORE}, metadata={COMPONENT_KIND: "kv_store"}
    )

    def __post_init__(self) -> None:
        if self.kv_reuse not in ("none", "prefix", "independent", "blend"):
            raise ConfigError(
                f"unknown {self.kv_reuse!r}; choose one of none, prefix, independent, blend",
                path="kv_reuse",
            )
        _check_number(self.blend_ratio, "blend_ratio", 0.0, 1.0)
        _check_number(self.temperature, "temperature", 0.0, math.inf)
        _check_number(self.top_p, "top_p", 0.0, 1.0, low_open=True)
        if isinstance(self.max_new_tokens, bool) or not isinstance(self.max_new_tokens, int) or (
            self.max_new_tokens < 1
        ):
            raise ConfigError(f"must be an int >= 1; got {self.max_new_tokens!r}",
                              path="max_new_tokens")
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(
                f"must be a list of non-empty strings; got {self.stop!r}", path="stop"
            )
        self.stop = tuple(self.stop)
        for name in ("chunk_format", "question_format"):
            key = "{text}" if name == "chunk_format" else "{query}"
            if key not in getattr(self, name):
                raise ConfigError(f"must contain {key}; got {getattr(self, name)!r}", path=name)
        if self.kv_store is not None:
            self.kv_store = build("kv_store", self.kv_store, path="kv_store")

    @classmethod
    def from_model(cls, lm: Any, tok: Any, **params: Any) -> TransformersGenerator:
        """A generator over an already loaded model and tokenizer (tests, notebooks)."""
        gen = cls(**params)
        gen.__dict__["_loaded"] = (tok, lm.eval())
        return gen

    # -- lazy state ----------------------------------------------------------------------------

    @cached_property
    def _loaded(self) -> tuple[Any, Any]:
        return shared_model(self.model, dtype=self.dtype, attn=self.attn)

    @property
    def tokenizer(self) -> Any:
        return self._loaded[0]

    @property
    def lm(self) -> Any:
        return self._loaded[1]

    @cached_property
    def _torch(self) -> Any:
        return require("torch", extra="generate", component="generator 'transformers'")

    @cached_property
    def fingerprint(self) -> dict[str, str]:
        """What, besides token ids, determines a KV: weights, tokenizer, dtype."""
        return {
            "model": weights_fingerprint(self.lm),
            "tokenizer": tokenizer_fingerprint(self.tokenizer),
            "dtype": str(next(self.lm.parameters()).dtype),
        }

    @cached_property
    def _cache_kw(self) -> str:
        return cache_kwarg(self.lm)

    @cached_property
    def _inv_freq(self) -> Any:
        from ragkit.generation.rope import inv_freq_of

        return inv_freq_of(self.lm)

    @cached_property
    def _eos(self) -> frozenset[int]:
        ids = set()
        config_eos = getattr(self.lm.generation_config, "eos_token_id", None)
        for source in (self.tokenizer.eos_token_id, config_eos):
            if isinstance(source, int):
                ids.add(source)
            elif source:
                ids.update(int(i) for i in source)
        return frozenset(ids)

    # -- public verbs --------------------------------------------------------------------------

    def generate(
        self, query: str, hits: Sequence[Hit], stream: Callable[[str], None] | None = None
    ) -> Answer:
        """The answer to ``query`` from ``hits`` (in order); ``stream`` receives text pieces."""
        from ragkit.generation.base import drain

        return drain(self._run(query, hits), stream)

    def stream(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:
        """Text pieces as they are decoded; the iterator's return value is the ``Answer``."""
        return self._run(query, hits)

    def warm(
        self, chunks: Sequence[Chunk | str], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, int]:
        """Precompute and store each chunk's KV (the entries ``independent``/``blend`` read).

        ``progress(done, total)`` is called after each chunk. Returns counts of chunks computed
        and already cached.
        """
        if self.kv_store is None:
            raise RagkitError("generator.kv_store is null: there is no store to warm")
        prefix = encode(self.tokenizer, self._head() + self.instruction)
        computed = cached = 0
        total = len(chunks)
        with self._torch.inference_mode():
            prefix_kv = self._prefix_kv(prefix)[0]
            for i, c in enumerate(chunks):
                text = c.text if isinstance(c, Chunk) else c
                ids = encode(self.tokenizer, self.chunk_format.format(text=text))
                if self.kv_store.contains(self._chunk_key(prefix, ids)):
                    cached += 1
                else:
                    self._chunk_kv(prefix, prefix_kv, ids)
                    computed += 1
                if progress is not None:
                    progress(i + 1, total)
        return {"chunks": total, "computed": computed, "cached": cached}

    def complete(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """The model's reply to ``prompt`` sent as one user message (chat template, ``system``,
        no retrieved context, no KV store): the ``LLM`` ability that the LLM reranker and the
        LLM chunkers use. Decoding follows this generator's settings (greedy by default)."""
        if not isinstance(prompt, str) or not prompt:
            raise RagkitError(f"prompt must be a non-empty string; got {prompt!r}")
        torch = self._torch
        ids = self.chat_ids(prompt)
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        gen = torch.Generator().manual_seed(
            self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        detok = _Detokenizer(self.tokenizer, self.stop)
        out: list[int] = []
        with torch.inference_mode():
            cache = self._new_cache()
            logits = self._forward(ids, cache, 0)
            pos = len(ids)
            while len(out) < limit:
                token = self._pick(logits, gen)
                if token in self._eos:
                    break
                out.append(token)
                detok.add(out)
                if detok.stopped or len(out) >= limit:
                    break
                logits = self._forward([token], cache, pos)
                pos += 1
        detok.flush(out)
        return detok.text

    def score(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        """Log-probability of each option as the start of the reply to ``prompt`` (one user
        message): the ``ScoringLLM`` ability. A multi-token option sums its tokens' log-probs."""
        if not isinstance(prompt, str) or not prompt:
            raise RagkitError(f"prompt must be a non-empty string; got {prompt!r}")
        torch = self._torch
        ids = self.chat_ids(prompt)
        out: dict[str, float] = {}
        with torch.inference_mode():
            cache = self._new_cache()
            first = torch.log_softmax(self._forward(ids, cache, 0).float(), -1)  # (vocab,)
            for option in options:
                tokens = encode(self.tokenizer, option)
                if not tokens:
                    raise RagkitError(f"option {option!r} encodes to no tokens")
                total = float(first[tokens[0]])
                if len(tokens) > 1:  # continue on a copy of the prompt's cache
                    import copy

                    branch = copy.deepcopy(cache)
                    pos = len(ids)
                    for prev, nxt in zip(tokens, tokens[1:]):
                        lp = torch.log_softmax(self._forward([prev], branch, pos).float(), -1)
                        total += float(lp[nxt])
                        pos += 1
                out[option] = total
        return out

    def token_logprobs(
        self,
        segments: Sequence[str],
        *,
        window: int = 1024,
        batch_tokens: int = 512,
        progress: Callable[[int, int], None] | None = None,
    ) -> list[Any]:
        """Natural-log probability of every token of ``segments`` read as one running text, one
        float32 array per segment: the ``TokenLogprobLLM`` ability (``ragkit.generation.base``) that the
        perplexity chunker and the MoC quality metrics use.

        Each segment is tokenized on its own, the text is read after one document-start token
        (``<|endoftext|>`` if the vocabulary has it, else BOS, else EOS), and the tokens are run
        in batches of ``batch_tokens`` (at most ``window // 2``), one forward each on a growing
        DynamicCache, so the running context is never re-encoded. Before a batch the cache is cut
        to its last ``window - batch`` tokens: every token attends to at least ``window // 2``
        and at most ``window`` tokens before it, at exact relative positions. The cached tokens
        keep the KV computed when they were read (with the context they had then, as in
        StreamingLLM-style windows), so past the first window the values approximate, rather
        than equal, a fresh read of the kept context. When positions would pass the model's
        ``max_position_embeddings`` the kept context is re-encoded from position 0.
        ``progress(done, total)`` counts tokens.
        """
        import numpy as np

        for name, value, low in (("window", window, 2), ("batch_tokens", batch_tokens, 1)):
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ConfigError(f"must be an int >= {low}; got {value!r}", path=name)
        torch = self._torch
        per_segment = [list(encode(self.tokenizer, s)) if s else [] for s in segments]
        flat = [t for ids in per_segment for t in ids]
        out = np.zeros(len(flat), dtype=np.float32)
        step = max(1, min(batch_tokens, window // 2))
        limit = int(getattr(self.lm.config, "max_position_embeddings", 0) or 2**31)
        with torch.inference_mode():
            context = [self._doc_start_id]  # the ids held in the cache, oldest first
            cache = self._new_cache()
            prev = self._forward(context, cache, 0)  # (vocab,): predicts the first token
            pos = 1
            done = 0
            while done < len(flat):
                batch = flat[done : done + step]
                keep = window - len(batch)
                if len(context) > keep:  # slide: drop the oldest cached tokens
                    cache = self._new_cache([
                        (layer.keys[:, :, -keep:], layer.values[:, :, -keep:])
                        for layer in cache.layers
                    ])
                    context = context[-keep:]
                if pos + len(batch) > limit:  # re-encode the kept context from position 0
                    cache = self._new_cache()
                    self._forward(context, cache, 0)
                    pos = len(context)
                logits = self.lm(
                    input_ids=torch.tensor([batch], dtype=torch.long),
                    position_ids=torch.arange(pos, pos + len(batch)).unsqueeze(0),
                    **{self._cache_kw: cache}, use_cache=True, logits_to_keep=0,
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

    @cached_property
    def _doc_start_id(self) -> int:
        tok = self.tokenizer
        eot = tok.convert_tokens_to_ids("<|endoftext|>") if "<|endoftext|>" in tok.get_vocab() \
            else None
        for candidate in (eot, tok.bos_token_id, tok.eos_token_id):
            if candidate is not None:
                return int(candidate)
        raise RagkitError("the tokenizer has no <|endoftext|>, BOS or EOS token to start a text")

    def chat_ids(self, prompt: str) -> list[int]:
        """Token ids of ``prompt`` as one user message with the assistant header after it."""
        from ragkit.generation.prompt import chat_frame

        head, tail = chat_frame(self.tokenizer, self.system)
        return list(encode(self.tokenizer, head + prompt + tail))

    def layout(self, query: str, texts: Sequence[str]) -> PromptLayout:
        return build_prompt(
            self.tokenizer, query, texts, system=self.system, instruction=self.instruction,
            chunk_format=self.chunk_format, question_format=self.question_format,
        )

    # -- prefill: the context's KV by mode, then the question ----------------------------------

    def first_logits(
        self, layout: PromptLayout, mode: KVReuse | None = None
    ) -> tuple[Any, Any, dict]:
        """``(logits of the first new token (vocab,), cache, stats)`` for ``layout`` in ``mode``."""
        mode = mode or self.kv_reuse
        torch = self._torch
        with torch.inference_mode():
            if mode == "none":
                cache = self._new_cache()
                logits = self._forward(layout.ids, cache, 0)
                return logits, cache, {"computed": len(layout.ids), "reused": 0}
            if mode == "prefix":
                return self._prefill_prefix(layout)
            kv, stats = self._independent_context(layout)
            if mode == "blend":
                stats["blend_recomputed"] = self._blend(kv, layout)
                stats["computed"] += stats["blend_recomputed"]
                stats["reused"] -= stats["blend_recomputed"]
            cache = self._cache_from(kv)
            logits = self._forward(list(layout.question), cache, layout.context_len)
            stats["computed"] += len(layout.question)
            return logits, cache, stats

    def greedy_ids(
        self, layout: PromptLayout, n: int, mode: KVReuse | None = None
    ) -> tuple[list[int], Any]:
        """``(first n greedy token ids, first-token logits)`` in ``mode``, ignoring stop
        conditions: what equivalence tests and the benchmarks compare across modes."""
        logits, cache, _ = self.first_logits(layout, mode)
        return self.decode_greedy(logits, cache, len(layout.ids), n), logits

    def decode_greedy(self, logits: Any, cache: Any, pos: int, n: int) -> list[int]:
        """``n`` greedy ids from first-token ``logits`` and the ``cache`` of ``pos`` tokens."""
        torch = self._torch
        ids: list[int] = []
        with torch.inference_mode():
            for _ in range(n):
                ids.append(int(torch.argmax(logits).item()))
                if len(ids) < n:
                    logits = self._forward([ids[-1]], cache, pos)
                    pos += 1
        return ids

    def _run(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:
        if not isinstance(query, str) or not query.strip():
            raise RagkitError(f"query must be a non-empty string; got {query!r}")
        torch = self._torch
        t0 = time.perf_counter()
        layout = self.layout(query, [h.chunk.text for h in hits])
        logits, cache, stats = self.first_logits(layout)
        gen = torch.Generator().manual_seed(
            self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        out: list[int] = []
        detok = _Detokenizer(self.tokenizer, self.stop)
        pos = len(layout.ids)
        t_first = None
        with torch.inference_mode():
            while True:
                token = self._pick(logits, gen)
                if t_first is None:
                    t_first = time.perf_counter()
                if token in self._eos:
                    break
                out.append(token)
                piece = detok.add(out)
                if piece:
                    yield piece
                if detok.stopped or len(out) >= self.max_new_tokens:
                    break
                logits = self._forward([token], cache, pos)
                pos += 1
        tail = detok.flush(out)
        if tail:
            yield tail
        t_end = time.perf_counter()
        n = len(out)
        timings = {
            "ttft_s": t_first - t0,
            "generate_s": t_end - t0,
            "new_tokens": float(n),
            "tokens_per_s": (n - 1) / (t_end - t_first) if n > 1 and t_end > t_first else 0.0,
            "prefill_tokens_computed": float(stats["computed"]),
            "prefill_tokens_reused": float(stats["reused"]),
        }
        if "blend_recomputed" in stats:
            timings["blend_tokens_recomputed"] = float(stats["blend_recomputed"])
        return Answer(query, detok.text, list(hits), timings)

    def _pick(self, logits: Any, gen: Any) -> int:
        torch = self._torch
        if self.temperature == 0.0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)  # (vocab,)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < self.top_p  # always keeps the top
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=gen).item())

    # -- model plumbing ------------------------------------------------------------------------

    def _new_cache(self, data: Any = None) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=data) if data is not None else DynamicCache()

    def _cache_from(self, kv: Any) -> Any:
        """A DynamicCache holding ``kv`` (layers, 2, kv_heads, seq, head_dim)."""
        return self._new_cache([(kv[i, 0][None], kv[i, 1][None]) for i in range(kv.shape[0])])

    def _forward(self, ids: Sequence[int], cache: Any, start: int) -> Any:
        """Run ``ids`` at positions ``start...`` on ``cache`` (updated); last position's logits."""
        torch = self._torch
        input_ids = torch.tensor([list(ids)], dtype=torch.long)  # (1, n)
        position_ids = torch.arange(start, start + len(ids)).unsqueeze(0)  # (1, n)
        out = self.lm(
            input_ids=input_ids, position_ids=position_ids, **{self._cache_kw: cache},
            use_cache=True, logits_to_keep=1,
        )
        return out.logits[0, -1]  # (vocab,)

    @staticmethod
    def _kv_of(cache: Any, start: int = 0, end: int | None = None) -> Any:
        """Positions ``[start, end)`` of ``cache`` as one tensor (layers, 2, kv_heads, seq, hd)."""
        import torch

        return torch.stack(
            [torch.stack((layer.keys[0, :, start:end], layer.values[0, :, start:end]))
             for layer in cache.layers]
        ).contiguous()

    def _head(self) -> str:
        from ragkit.generation.prompt import chat_frame

        return chat_frame(self.tokenizer, self.system)[0]

    # -- store keys and entries ----------------------------------------------------------------

    def _key(self, ids: Sequence[int], prefix_id: str) -> str:
        from ragkit.generation.kv_store import kv_key

        fp = self.fingerprint
        return kv_key(model=fp["model"], tokenizer=fp["tokenizer"], dtype=fp["dtype"],
                      token_ids=ids, prefix_id=prefix_id)

    def _chunk_key(self, prefix: Sequence[int], ids: Sequence[int]) -> str:
        return self._key(ids, "after:" + _ids_hash(prefix))

    def _prefix_kv(self, ids: Sequence[int]) -> tuple[Any, bool]:
        """KV of ``ids`` at positions 0.. with nothing before (the prefix); from the store if
        there. Returns ``(kv, reused)``."""
        key = self._key(ids, "")
        kv = self.kv_store.get(key) if self.kv_store is not None else None
        if kv is not None:
            return kv, True
        cache = self._new_cache()
        self._forward(ids, cache, 0)
        kv = self._kv_of(cache)
        if self.kv_store is not None:
            self.kv_store.put(key, kv)
        return kv, False

    def _chunk_kv(
        self, prefix: Sequence[int], prefix_kv: Any, ids: Sequence[int]
    ) -> tuple[Any, bool]:
        """A chunk's KV computed after the prefix alone, keys rotated back to position 0."""
        from ragkit.generation.rope import rotate_kv

        key = self._chunk_key(prefix, ids)
        kv = self.kv_store.get(key) if self.kv_store is not None else None
        if kv is not None:
            return kv, True
        cache = self._cache_from(prefix_kv)
        self._forward(ids, cache, len(prefix))
        kv = rotate_kv(self._kv_of(cache, len(prefix)), -len(prefix), self._inv_freq)
        if self.kv_store is not None:
            self.kv_store.put(key, kv)
        return kv, False

    # -- prefix mode ---------------------------------------------------------------------------

    def _prefill_prefix(self, layout: PromptLayout) -> tuple[Any, Any, dict]:
        torch = self._torch
        segments = [layout.prefix, *layout.chunks]
        keys, before = [], []
        for seg in segments:
            keys.append(self._key(seg, "chain:" + _ids_hash(before)))
            before.extend(seg)
        found = []
        if self.kv_store is not None:
            for key in keys:
                kv = self.kv_store.get(key)
                if kv is None:
                    break
                found.append(kv)
        reused = sum(len(s) for s in segments[: len(found)])
        cache = self._cache_from(torch.cat(found, dim=3)) if found else self._new_cache()
        rest = [t for seg in segments[len(found):] for t in seg] + list(layout.question)
        logits = self._forward(rest, cache, reused)
        if self.kv_store is not None:  # store the newly computed context segments
            pos = reused
            for seg, key in zip(segments[len(found):], keys[len(found):]):
                self.kv_store.put(key, self._kv_of(cache, pos, pos + len(seg)))
                pos += len(seg)
        return logits, cache, {"computed": len(rest), "reused": reused}

    # -- independent and blend -----------------------------------------------------------------

    def _independent_context(self, layout: PromptLayout) -> tuple[Any, dict]:
        """The context KV (layers, 2, kv_heads, prefix + chunks, hd) from per-chunk entries."""
        from ragkit.generation.rope import rotate_keys

        torch = self._torch
        prefix_kv, hit = self._prefix_kv(layout.prefix)
        computed = 0 if hit else len(layout.prefix)
        n_layers, _, n_heads, n_prefix, head_dim = prefix_kv.shape
        # one fresh tensor, written in place (blend may modify it): no intermediate copies
        kv = torch.empty(n_layers, 2, n_heads, layout.context_len, head_dim, dtype=prefix_kv.dtype)
        kv[:, :, :, :n_prefix] = prefix_kv
        for ids, start in zip(layout.chunks, layout.chunk_starts()):
            chunk_kv, hit = self._chunk_kv(layout.prefix, prefix_kv, ids)
            if not hit:
                computed += len(ids)
            end = start + len(ids)
            kv[:, 0, :, start:end] = rotate_keys(chunk_kv[:, 0], start, self._inv_freq)
            kv[:, 1, :, start:end] = chunk_kv[:, 1]
        return kv, {"computed": computed, "reused": layout.context_len - computed}

    def _blend(self, kv: Any, layout: PromptLayout) -> int:
        """Recompute ``blend_ratio`` of the chunk tokens in place in ``kv``; returns how many."""
        torch = self._torch
        if len(layout.chunks) < 2 or self.blend_ratio == 0.0:
            return 0  # prefix and first chunk are exact already
        first = layout.chunk_starts()[1]  # chunks 2..n miss cross-chunk attention
        total = layout.context_len
        n_chunk_tokens = total - len(layout.prefix)
        n_sel = min(total - first, math.ceil(self.blend_ratio * n_chunk_tokens))
        ids = torch.tensor(layout.ids[first:total], dtype=torch.long)
        pos = torch.arange(first, total)  # (n,)
        inner = self.lm.model
        h = inner.embed_tokens(ids)[None]  # (1, n, hidden)
        h = self._blend_layer(0, h, pos, kv)  # layer 0 exact for all candidates
        # layer 1: exact KV for all candidates; select those whose V moved most
        q, k, v = self._qkv(1, h, pos)
        dev = (v[0] - kv[1, 1][:, pos]).pow(2).sum(dim=(0, 2))  # (n,)
        kv[1, 0][:, pos] = k[0]
        kv[1, 1][:, pos] = v[0]
        sel = torch.topk(dev, n_sel).indices.sort().values  # (n_sel,)
        h, pos = h[:, sel], pos[sel]
        h = self._blend_attend(1, h, q[:, :, sel], pos, kv)
        for layer in range(2, kv.shape[0]):
            h = self._blend_layer(layer, h, pos, kv, last=layer == kv.shape[0] - 1)
        return int(n_sel)

    def _qkv(self, layer: int, h: Any, pos: Any) -> tuple[Any, Any, Any]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        block = self.lm.model.layers[layer]
        attn = block.self_attn
        x = block.input_layernorm(h)  # (1, n, hidden)
        shape = (1, h.shape[1], -1, attn.head_dim)
        q = attn.q_proj(x).view(shape).transpose(1, 2)  # (1, heads, n, hd)
        k = attn.k_proj(x).view(shape).transpose(1, 2)  # (1, kv_heads, n, hd)
        v = attn.v_proj(x).view(shape).transpose(1, 2)
        cos, sin = self.lm.model.rotary_emb(x, position_ids=pos[None])
        q, k = apply_rotary_pos_emb(q, k, cos, sin)
        return q, k, v

    def _blend_layer(self, layer: int, h: Any, pos: Any, kv: Any, last: bool = False) -> Any:
        """Recompute tokens ``pos`` at ``layer``: fuse their KV into ``kv``, return their output."""
        q, k, v = self._qkv(layer, h, pos)
        kv[layer, 0][:, pos] = k[0]
        kv[layer, 1][:, pos] = v[0]
        if last:
            return h  # the last layer's output is not needed: only its KV
        return self._blend_attend(layer, h, q, pos, kv)

    def _blend_attend(self, layer: int, h: Any, q: Any, pos: Any, kv: Any) -> Any:
        torch = self._torch
        block = self.lm.model.layers[layer]
        attn = block.self_attn
        n_ctx = kv.shape[3]
        mask = torch.arange(n_ctx)[None, :] <= pos[:, None]  # (n, ctx): causal by position
        o = torch.nn.functional.scaled_dot_product_attention(
            q, kv[layer, 0][None], kv[layer, 1][None], attn_mask=mask, scale=attn.scaling,
            enable_gqa=True,
        )  # (1, heads, n, hd)
        o = o.transpose(1, 2).reshape(1, h.shape[1], -1)  # (1, n, heads * hd)
        h = h + attn.o_proj(o)
        return h + block.mlp(block.post_attention_layernorm(h))


class _Detokenizer:
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


def _ids_hash(ids: Sequence[int]) -> str:
    return hashlib.sha256(json.dumps(list(ids)).encode()).hexdigest()[:32]


def _check_number(
    value: Any, name: str, low: float, high: float, *, low_open: bool = False
) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool)
    if ok:
        ok = (value > low if low_open else value >= low) and value <= high
    if not ok:
        lo = "(" if low_open else "["
        raise ConfigError(f"must be a number in {lo}{low}, {high}]; got {value!r}", path=name)

