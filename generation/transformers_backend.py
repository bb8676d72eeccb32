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
- ``blend`` (CacheBlend): ``independent``, then some chunk tokens are recomputed through every
  layer at their true positions, attending to the whole context, their KV fused into the cache
  (``ragkit.generation.blend``): ``blend_ratio`` of the chunk tokens, those the question
  attends to most on the reused cache (``blend_select: query``).

``none`` and ``prefix`` are exact; ``independent`` and ``blend`` are approximations whose answers can
differ from a full prefill's: each answer's timings count the context tokens whose KV is
approximate (``prefill_tokens_approximate``; 0 means exact) and those recomputed
(``blend_tokens_recomputed``). Measured fidelity per setting: benchmarks/README.md ("KV reuse
fidelity"). Context KV assembly and store entries live in ``ragkit.generation.context``.

Every mode ends with the same question prefill and decoding loop (greedy, or sampled with
temperature/top-p/seed), stopping at an end-of-turn token, ``max_new_tokens`` or a stop string.
``none`` and ``prefix`` work with any causal LM; ``independent`` rotates keys with the model's RoPE
and ``blend`` re-runs its decoder layers by hand, so both need a Llama-architecture model (SmolLM2)
or Gemma 3.
"""

from __future__ import annotations

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
from ragkit.generation.base import AnswersFromRun
from ragkit.types import Answer, Chunk, Hit

from ragkit.generation.decoding import (  # noqa: F401  (cache_kwarg: public, used by tests)
    Detokenizer,
    cache_kwarg,
    check_number,
    tokenizer_fingerprint,
    weights_fingerprint,
)
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
class TransformersGenerator(AnswersFromRun):
    model: str = DEFAULT_MODEL  # the packaged SmolLM2 (converted once) or a local HF folder
    kv_reuse: KVReuse = "none"
    blend_ratio: float = 0.15  # fraction of chunk tokens recomputed in 'blend' (by blend_select)
    blend_select: Literal["query"] = "query"  # how 'blend' ranks tokens (the others were dominated)
    warm_batch: int = 8  # chunk KVs computed per forward when missing
    kv_codec: Literal["float32", "float16", "bfloat16", "int8", "k8v4", "k8v4g", "k8v6"] = "float32"  # chunk entries
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
        check_number(self.blend_ratio, "blend_ratio", 0.0, 1.0)
        from ragkit.generation.blend import SELECTS

        if self.blend_select not in SELECTS:
            raise ConfigError(f"unknown {self.blend_select!r}; choose one of "
                              f"{', '.join(SELECTS)}", path="blend_select")
        if isinstance(self.warm_batch, bool) or not isinstance(self.warm_batch, int) or (
                self.warm_batch < 1):
            raise ConfigError(f"must be an int >= 1; got {self.warm_batch!r}", path="warm_batch")
        from ragkit.generation.kv_codec import CODECS

        if self.kv_codec not in CODECS:
            raise ConfigError(f"unknown {self.kv_codec!r}; choose one of {', '.join(CODECS)}",
                              path="kv_codec")
        check_number(self.temperature, "temperature", 0.0, math.inf)
        check_number(self.top_p, "top_p", 0.0, 1.0, low_open=True)
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

    def load_model(self) -> None:
        """Load (or convert, the first time) the model now instead of on first use."""
        self._loaded  # noqa: B018

    @cached_property
    def torch(self) -> Any:
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
    def cache_kw(self) -> str:
        return cache_kwarg(self.lm)

    @cached_property
    def inv_freq(self) -> Any:
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


    def warm(
        self, chunks: Sequence[Chunk | str], progress: Callable[[int, int], None] | None = None
    ) -> dict[str, int]:
        """Precompute and store each chunk's KV (the entries ``independent``/``blend`` read).

        Missing entries are computed ``warm_batch`` chunks per forward (right-padded), in the
        ``kv_codec`` the generator reads. ``progress(done, total)`` is called after each batch.
        Returns counts of chunks computed and already cached.
        """
        if self.kv_store is None:
            raise RagkitError("generator.kv_store is null: there is no store to warm")
        from ragkit.generation import context

        prefix = encode(self.tokenizer, self._head() + self.instruction)
        computed = cached = 0
        total = len(chunks)
        step = max(1, self.warm_batch)
        with self.torch.inference_mode():
            pkv = context.prefix_kv(self, prefix)[0]
            for at in range(0, total, step):
                ids = [encode(self.tokenizer, self.chunk_format.format(
                    text=c.text if isinstance(c, Chunk) else c)) for c in chunks[at : at + step]]
                for _, hit in context.chunk_entries(self, prefix, pkv, ids):
                    cached += hit
                    computed += not hit
                if progress is not None:
                    progress(min(at + step, total), total)
        return {"chunks": total, "computed": computed, "cached": cached}

    def complete(self, prompt: str, max_new_tokens: int | None = None) -> str:
        """The model's reply to ``prompt`` sent as one user message (chat template, ``system``,
        no retrieved context, no KV store): the ``LLM`` ability that the LLM reranker and the
        LLM chunkers use. Decoding follows this generator's settings (greedy by default)."""
        if not isinstance(prompt, str) or not prompt:
            raise RagkitError(f"prompt must be a non-empty string; got {prompt!r}")
        torch = self.torch
        ids = self.chat_ids(prompt)
        limit = self.max_new_tokens if max_new_tokens is None else max_new_tokens
        gen = torch.Generator().manual_seed(
            self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        detok = Detokenizer(self.tokenizer, self.stop)
        out: list[int] = []
        with torch.inference_mode():
            cache = self.new_cache()
            logits = self.forward_ids(ids, cache, 0)
            pos = len(ids)
            while len(out) < limit:
                token = self._pick(logits, gen)
                if token in self._eos:
                    break
                out.append(token)
                detok.add(out)
                if detok.stopped or len(out) >= limit:
                    break
                logits = self.forward_ids([token], cache, pos)
                pos += 1
        detok.flush(out)
        return detok.text

    def score(self, prompt: str, options: Sequence[str]) -> dict[str, float]:
        """Log-probability of each option as the start of the reply to ``prompt`` (one user
        message): the ``ScoringLLM`` ability. A multi-token option sums its tokens' log-probs."""
        if not isinstance(prompt, str) or not prompt:
            raise RagkitError(f"prompt must be a non-empty string; got {prompt!r}")
        torch = self.torch
        ids = self.chat_ids(prompt)
        out: dict[str, float] = {}
        with torch.inference_mode():
            cache = self.new_cache()
            first = torch.log_softmax(self.forward_ids(ids, cache, 0).float(), -1)  # (vocab,)
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
                        lp = torch.log_softmax(self.forward_ids([prev], branch, pos).float(), -1)
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
        from ragkit.generation.decoding import token_logprobs

        return token_logprobs(self, segments, window=window, batch_tokens=batch_tokens,
                              progress=progress)

    @cached_property
    def doc_start_id(self) -> int:
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
        from ragkit.generation import context

        mode = mode or self.kv_reuse
        torch = self.torch
        capacity = len(layout.ids) + self.max_new_tokens
        with torch.inference_mode():
            if mode == "none":
                cache = context.buffer_cache(context.new_buffer(self.lm, capacity), 0)
                logits = self.forward_ids(layout.ids, cache, 0)
                return logits, cache, {"computed": len(layout.ids), "reused": 0, "approximate": 0}
            if mode == "prefix":
                return context.prefill_prefix(self, layout, capacity)
            kv, stats = context.independent_context(self, layout, capacity)
            # chunks 2..n miss their attention to earlier chunks unless recomputed; with a lossy
            # codec every reused chunk token's KV differs from the full prefill's
            exact_upto = layout.chunk_starts()[1] if len(layout.chunks) > 1 else layout.context_len
            if self.kv_codec != "float32":
                exact_upto = len(layout.prefix)
            stats["approximate"] = layout.context_len - exact_upto
            if mode == "blend":
                stats["blend_recomputed"] = context.blend(self, kv, layout)
                stats["computed"] += stats["blend_recomputed"]
                stats["reused"] -= stats["blend_recomputed"]
                stats["approximate"] -= stats["blend_recomputed"]
            cache = context.buffer_cache(kv, layout.context_len)
            logits = self.forward_ids(list(layout.question), cache, layout.context_len)
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
        torch = self.torch
        ids: list[int] = []
        with torch.inference_mode():
            for _ in range(n):
                ids.append(int(torch.argmax(logits).item()))
                if len(ids) < n:
                    logits = self.forward_ids([ids[-1]], cache, pos)
                    pos += 1
        return ids

    def _run(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:
        if not isinstance(query, str) or not query.strip():
            raise RagkitError(f"query must be a non-empty string; got {query!r}")
        torch = self.torch
        t0 = time.perf_counter()
        layout = self.layout(query, [h.chunk.text for h in hits])
        logits, cache, stats = self.first_logits(layout)
        gen = torch.Generator().manual_seed(
            self.seed if self.seed is not None else int(torch.randint(0, 2**62, (1,)).item())
        )
        out: list[int] = []
        detok = Detokenizer(self.tokenizer, self.stop)
        pos = len(layout.ids)
        t_first = None
        # inference mode is entered per step, never held across a ``yield``: it is thread-local,
        # and a server may resume (or close) this iterator from another thread than the one that
        # started it, which would then decode outside it and write to inference tensors
        while True:
            with torch.inference_mode():
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
            with torch.inference_mode():
                logits = self.forward_ids([token], cache, pos)
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
            # context tokens whose KV differs from a full prefill's (0: the answer is exact)
            "prefill_tokens_approximate": float(stats["approximate"]),
        }
        if "blend_recomputed" in stats:
            timings["blend_tokens_recomputed"] = float(stats["blend_recomputed"])
        return Answer(query, detok.text, list(hits), timings)

    def _pick(self, logits: Any, gen: Any) -> int:
        torch = self.torch
        if self.temperature == 0.0:
            return int(torch.argmax(logits).item())
        probs = torch.softmax(logits.float() / self.temperature, dim=-1)  # (vocab,)
        if self.top_p < 1.0:
            sorted_p, order = torch.sort(probs, descending=True)
            keep = torch.cumsum(sorted_p, dim=-1) - sorted_p < self.top_p  # always keeps the top
            probs = torch.zeros_like(probs).scatter_(0, order[keep], sorted_p[keep])
        return int(torch.multinomial(probs, 1, generator=gen).item())

    # -- model plumbing (public: context.py and decoding.py run the model through these) ---------

    def new_cache(self, data: Any = None) -> Any:
        from transformers import DynamicCache

        return DynamicCache(ddp_cache_data=data) if data is not None else DynamicCache()

    def forward_ids(self, ids: Sequence[int], cache: Any, start: int) -> Any:
        """Run ``ids`` at positions ``start...`` on ``cache`` (updated); last position's logits."""
        torch = self.torch
        input_ids = torch.tensor([list(ids)], dtype=torch.long)  # (1, n)
        position_ids = torch.arange(start, start + len(ids)).unsqueeze(0)  # (1, n)
        out = self.lm(
            input_ids=input_ids, position_ids=position_ids, **{self.cache_kw: cache},
            use_cache=True, logits_to_keep=1,
        )
        return out.logits[0, -1]  # (vocab,)

    def _head(self) -> str:
        from ragkit.generation.prompt import chat_frame

        return chat_frame(self.tokenizer, self.system)[0]
