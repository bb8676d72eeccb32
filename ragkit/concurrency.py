"""Many readers, one writer: the lock every index takes around its public methods.

Why a readers-writer lock and not copy-on-write snapshots: an index is large (vectors, an HNSW
graph, a BM25 matrix) and a write is small (one document's chunks). Copying the index on every
write would cost O(size) per document; a lock costs nothing while no one writes, and a writer
holds it only while it applies an already-embedded document (embedding runs outside it).

The lock prefers writers: once a writer waits, new readers wait behind it, so a steady stream of
queries cannot starve document adds. Both sides are re-entrant in the thread that holds them: a
writer may call other writing or reading methods of the same index (``replace`` is ``delete`` +
``add`` under one write), and a reader may nest reads (``retrieve`` holds a read across search,
rerank and neighbour expansion, which read again). A thread holding a read lock must not ask for
the write lock: that is refused with a RuntimeError, since it would deadlock.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class RWLock:
    """A writer-preferring readers-writer lock, re-entrant on both sides per thread."""

    def __init__(self) -> None:
        self._cond = threading.Condition(threading.Lock())
        self._readers: dict[int, int] = {}  # thread id -> read depth
        self._writer: int | None = None  # thread id holding the write lock
        self._write_depth = 0
        self._writers_waiting = 0

    @contextmanager
    def read(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me or me in self._readers:  # nested: no waiting, no deadlock
                self._readers[me] = self._readers.get(me, 0) + 1
            else:
                while self._writer is not None or self._writers_waiting:
                    self._cond.wait()
                self._readers[me] = 1
        try:
            yield
        finally:
            with self._cond:
                depth = self._readers[me] - 1
                if depth:
                    self._readers[me] = depth
                else:
                    del self._readers[me]
                    self._cond.notify_all()

    @contextmanager
    def write(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._cond:
            if self._writer == me:
                self._write_depth += 1
            else:
                if me in self._readers:
                    raise RuntimeError("a thread holding a read lock cannot take the write lock")
                self._writers_waiting += 1
                try:
                    while self._writer is not None or self._readers:
                        self._cond.wait()
                finally:
                    self._writers_waiting -= 1
                self._writer, self._write_depth = me, 1
        try:
            yield
        finally:
            with self._cond:
                self._write_depth -= 1
                if not self._write_depth:
                    self._writer = None
                    self._cond.notify_all()


def _locked(kind: str) -> Callable[[F], F]:
    def decorate(method: F) -> F:
        @functools.wraps(method)
        def wrapper(self: Any, *args: Any, **kwargs: Any) -> Any:
            with getattr(self.lock, kind)():
                return method(self, *args, **kwargs)

        return wrapper  # type: ignore[return-value]

    return decorate


reads = _locked("read")
"""Decorate a method that only reads ``self``: it runs under ``self.lock.read()``."""

writes = _locked("write")
"""Decorate a method that changes ``self``: it runs under ``self.lock.write()``."""


class Guarded:
    """Mixin for an index: ``self.lock`` (an ``RWLock``, made on first use) and ``replace``, which
    swaps a set of documents' chunks for new ones as one write, so a reader sees every document
    entirely before or entirely after it."""

    @property
    def lock(self) -> RWLock:
        lock = self.__dict__.get("_rwlock")
        if lock is None:  # dataclasses do not call a mixin's __init__; setdefault is race-free
            lock = self.__dict__.setdefault("_rwlock", RWLock())
        return lock

    def replace(self, doc_ids: Any, chunks: Any, vecs: Any) -> int:
        """Delete every chunk of ``doc_ids`` and add ``chunks``/``vecs`` in one write; returns
        how many chunks were removed."""
        with self.lock.write():
            removed = self.delete(list(doc_ids))  # type: ignore[attr-defined]
            if len(chunks):
                self.add(chunks, vecs)  # type: ignore[attr-defined]
            return removed


def exit_with_parent(parent: int, interval: float = 1.0) -> None:
    """In a pool's worker process: exit when ``parent``, the process that started the pool, is gone.

    A ``ProcessPoolExecutor`` worker holds both ends of its call queue's pipe, so it never sees
    EOF when its parent dies without shutting the pool down (``kill -9`` of ``ragkit serve`` or
    ``ragkit index``); it would sleep forever. A daemon thread watches the parent's pid instead.
    The parent passes its own pid (``os.getpid()``, in the pool's ``initargs``): a spawned worker
    still importing when its parent was killed would otherwise take the process it was handed to
    (init) for its parent and never exit."""
    import os

    def watch() -> None:
        while True:
            if os.getppid() != parent:
                os._exit(0)
            threading.Event().wait(interval)

    threading.Thread(target=watch, name="ragkit-exit-with-parent", daemon=True).start()
