"""How far a long call into a component has got, for whoever is listening (the CLI's bar).

A chunker working on one big document reports ``done(fraction)`` of that document now and then;
``listening(callback)`` around the call receives them. Nothing is listening by default, and then
a report costs one context-variable lookup. Components never draw bars or print (STYLE.md): they
report, and the CLI shows it.

    with progress.listening(lambda f: bar.update_to(start + f * nbytes)):
        chunks = chunker.chunk(doc)

A fraction is the share of the call's work done, as the component estimates it (e.g. the
``recursive`` chunker: tokenizing counts 10%, splitting 45% and packing 45%, each in
proportion to the characters it has passed). It only ever grows within one call.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar

__all__ = ["done", "listening", "listener"]

_LISTENER: ContextVar[Callable[[float], None] | None] = ContextVar("ragkit_progress",
                                                                   default=None)


def listener() -> Callable[[float], None] | None:
    """The callback of the innermost ``listening`` block, or None (check this once per call,
    then report only when it is not None: a loop pays nothing when nobody listens)."""
    return _LISTENER.get()


def done(fraction: float) -> None:
    """Report that ``fraction`` (0 to 1) of the current call's work is done."""
    callback = _LISTENER.get()
    if callback is not None:
        callback(min(1.0, max(0.0, fraction)))


@contextmanager
def listening(callback: Callable[[float], None] | None) -> Iterator[None]:
    """Send the reports made inside this block to ``callback`` (None: to nobody)."""
    token = _LISTENER.set(callback)
    try:
        yield
    finally:
        _LISTENER.reset(token)
