"""One model, many requests: generation runs on one worker thread, one request at a time.

The transformers backend is synchronous and holds one model, so requests are queued (FIFO) to a
single worker thread and are *not* batched: each answer is generated alone, its pieces handed to
the event loop through an ``asyncio.Queue``. Every request gets a shallow copy of the served
generator with its own sampling settings (``max_new_tokens``, ``temperature``, ``top_p``, ``seed``,
``stop``, ``kv_reuse``); the copy shares the loaded model and the chunk-KV store, so the store
stays warm across requests, and since one request runs at a time, a chunk KV is never read while
another request writes it. A request whose client went away is cancelled: its stream callback
raises ``Cancelled`` at the next piece, which ends the generation loop.
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
from typing import Any

from ragkit.protocols import Fingerprinted, LoadsModel, provides
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

    def load(self) -> None:
        """Load the model (and what the KV keys need) on the worker thread, before any request."""
        self._pool.submit(_load, self.generator).result()

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
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue = asyncio.Queue()
        with self._lock:
            if self.pending >= self.max_queue:
                raise Busy(f"{self.pending} requests are waiting for the model")
            self.pending += 1

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


def _load(gen: Any) -> None:
    if isinstance(gen, LoadsModel):
        gen.load_model()  # the transformers backend loads (or converts) its model here
    if provides(gen, Fingerprinted):
        gen.fingerprint  # noqa: B018  KV keys hash the weights once
