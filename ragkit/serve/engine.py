"""One model, many requests: how generation requests reach the model.

A generator with a concurrent engine (``StreamsConcurrently``: the ``vllm`` generator's async
engine) gets every request as soon as it arrives, on the event loop: the requests run in the
engine together, so vLLM batches them step by step (continuous batching) and its prefix cache
shares blocks between them. ``pending`` counts the requests in the engine; ``max_queue`` caps it.

Any other generator (the transformers backend: synchronous, one model) gets its requests queued
(FIFO) to a single worker thread and *not* batched: each answer is generated alone, its pieces
handed to the event loop through an ``asyncio.Queue``; since one request runs at a time, a chunk
KV is never read while another request writes it.

Either way every request gets a shallow copy of the served generator with its own sampling
settings (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``, ``stop``, ``kv_reuse``); the
copy shares the loaded model (or engine) and the chunk-KV store, so the store stays warm across
requests. A request whose client went away is cancelled at its next piece: the worker's stream
callback raises ``Cancelled``, or the async stream is closed, which aborts it in vLLM.
"""

from __future__ import annotations

import asyncio
import copy
import dataclasses
import threading
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from functools import partial
from typing import Any

from ragkit.protocols import Fingerprinted, LoadsModel, StreamsConcurrently, provides
from ragkit.types import Answer, Hit


class Cancelled(Exception):
    """Raised inside the generation loop when the client that asked has gone."""


class Busy(Exception):
    """The generation queue is full."""


class GenerationEngine:
    def __init__(self, generator: Any, max_queue: int = 64) -> None:
        self.generator = generator
        self.max_queue = max_queue
        self.pending = 0  # queued or running
        self.cancelled = 0  # generations stopped because their client went away
        self._lock = threading.Lock()
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="ragkit-generate")
        names = {f.name for f in dataclasses.fields(generator)} if dataclasses.is_dataclass(
            generator) else set()
        self.settable = names & {"max_new_tokens", "temperature", "top_p", "seed", "stop",
                                 "kv_reuse"}
        self.concurrent = isinstance(generator, StreamsConcurrently)

    def load(self) -> None:
        """Load the model (and what the KV keys need) on the worker thread, before any request;
        a concurrent generator starts its engine there."""
        load = self.generator.start_async if self.concurrent else partial(_load, self.generator)
        self._pool.submit(load).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    def for_request(self, settings: Mapping[str, Any]) -> Any:
        """A copy of the generator with ``settings`` (only keys it has; others raise KeyError)."""
        unknown = set(settings) - self.settable
        if unknown:
            raise KeyError(sorted(unknown)[0])
        gen = copy.copy(self.generator)  # shares the model, tokenizer and kv_store
        for key, value in settings.items():
            setattr(gen, key, tuple(value) if key == "stop" else value)
        return gen

    async def stream(
        self, gen: Any, query: str, hits: Sequence[Hit], cancel: threading.Event
    ) -> AsyncIterator[str | Answer]:
        """The answer's text pieces as they are generated, then the ``Answer``. Setting
        ``cancel`` (or closing this iterator) stops the generation at its next piece."""
        with self._lock:
            if self.pending >= self.max_queue:
                raise Busy(f"{self.pending} requests are waiting for the model")
            self.pending += 1
        if self.concurrent:
            async for item in self._concurrent(gen, query, hits, cancel):
                yield item
            return
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()

        def put(item: Any) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, item)

        def piece(text: str) -> None:
            if cancel.is_set():
                raise Cancelled()
            put(("piece", text))

        submitted = time.perf_counter()

        def work() -> None:
            try:
                if cancel.is_set():
                    raise Cancelled()
                queue_s = time.perf_counter() - submitted
                answer = gen.generate(query, hits, stream=piece)
                put(("done", replace(answer, timings={**answer.timings, "queue_s": queue_s})))
            except Cancelled as exc:
                with self._lock:
                    self.cancelled += 1
                put(("error", exc))
            except BaseException as exc:  # handed to the request, raised there
                put(("error", exc))
            finally:
                with self._lock:
                    self.pending -= 1

        self._pool.submit(work)
        try:
            while True:
                kind, value = await queue.get()
                if kind == "piece":
                    yield value
                elif kind == "done":
                    yield value
                    return
                else:
                    raise value
        finally:
            cancel.set()  # no-op after "done"; stops the worker if the consumer left early

    async def _concurrent(
        self, gen: Any, query: str, hits: Sequence[Hit], cancel: threading.Event
    ) -> AsyncIterator[str | Answer]:
        """``stream`` on a concurrent engine: this request goes into it right away."""
        pieces = gen.astream(query, hits)
        outcome = "cancelled"  # unless it finishes or fails: its client left, or closed it
        try:
            async for item in pieces:
                if cancel.is_set():
                    raise Cancelled()
                if isinstance(item, Answer):
                    outcome = "done"
                yield item
        except Exception as exc:
            if not isinstance(exc, Cancelled):
                outcome = "error"
            raise
        finally:
            await pieces.aclose()  # aborts the request in the engine if it is not finished
            cancel.set()
            with self._lock:
                self.pending -= 1
                self.cancelled += outcome == "cancelled"


def _load(gen: Any) -> None:
    if isinstance(gen, LoadsModel):
        gen.load_model()  # the transformers backend loads (or converts) its model here
    if provides(gen, Fingerprinted):
        gen.fingerprint  # noqa: B018  KV keys hash the weights once
