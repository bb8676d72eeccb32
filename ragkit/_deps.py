"""Optional dependencies: import them inside the component that needs them, with a clear error."""

from __future__ import annotations

import importlib
from types import ModuleType

from ragkit.errors import MissingDependencyError


def require(module: str, *, extra: str, component: str) -> ModuleType:
    """Import ``module`` or raise ``MissingDependencyError`` naming the extra that provides it.

    >>> np = require("numpy", extra="core", component="index 'memory'")
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        raise MissingDependencyError(
            f"{component} needs the Python module {module!r} ({exc}); "
            f"install it with: pip install 'ragkit[{extra}]'"
        ) from exc
