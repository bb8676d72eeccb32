"""The ragkit error hierarchy.

Every error a user can cause is a ``RagkitError``. Messages name the parameter (or file), the bad
value and what is allowed, so the one line a CLI prints is enough to fix the problem.
"""

from __future__ import annotations


class RagkitError(Exception):
    """Base class of every error ragkit raises on purpose."""


class ConfigError(RagkitError, ValueError):
    """A component spec or YAML config is invalid; raised while building, before any work starts.

    ``path`` is where in the config the problem is (``"chunker.overlap"``); the message reads
    ``"<path>: <reason>"``. Builders prefix the path of the enclosing component as they unwind.
    """

    def __init__(self, reason: str, *, path: str = "") -> None:
        self.reason = reason
        self.path = path
        super().__init__(f"{path}: {reason}" if path else reason)

    def under(self, prefix: str) -> ConfigError:
        """The same error, located under ``prefix`` (a component's config path)."""
        if not prefix:
            return self
        path = f"{prefix}.{self.path}" if self.path else prefix
        return ConfigError(self.reason, path=path)


class MissingDependencyError(RagkitError, ImportError):
    """A component needs an optional dependency that is not installed."""


class DocumentError(RagkitError, ValueError):
    """A document or input file cannot be used (not UTF-8, binary, missing text field, ...)."""


class IndexMismatchError(RagkitError, ValueError):
    """Vectors or queries do not match what an index was built with (dimension, model)."""


class IndexExistsError(RagkitError):
    """The output folder already holds a finished index and no --append/--replace was given."""


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message (``"no message"`` if it has none), for one-line
    errors that wrap a library's multi-line one."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else "no message"
