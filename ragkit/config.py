"""Build components from plain data and back: ``build(kind, to_config(x)) == x``.

A component is a dataclass whose constructor signature is its config. A spec is a mapping with a
``name`` (a registered name or ``"pkg.mod:Class"``) and the constructor's keyword arguments, or just
the name as a string. Specs are validated against the dataclass fields before the component is
constructed: unknown keys, wrong types and unknown names are ``ConfigError``s that name the config
path, the value and what is allowed.

A field that holds another component says so in its metadata, ``field(metadata={"kind": "chunker"})``,
and is built recursively.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import string
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ragkit import registry
from ragkit.errors import ConfigError

COMPONENT_KIND = "kind"  # dataclass field metadata key marking a nested component


def build(kind: str, spec: Any, *, path: str | None = None) -> Any:
    """Build a ``kind`` component from ``spec`` (``{"name": ..., **params}`` or a name string).

    An object that is already built is returned as is, so Python users can pass instances.
    """
    path = kind if path is None else path
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        if dataclasses.is_dataclass(spec) and not isinstance(spec, type):
            return spec
        raise ConfigError(
            f"expected a mapping with a 'name' key or a {kind} name; got {spec!r}", path=path
        )
    if "name" not in spec:
        raise ConfigError(
            f"missing 'name'; choose one of {', '.join(registry.names(kind, peers=True))}", path=path
        )
    name = spec["name"]
    if not isinstance(name, str):
        raise ConfigError(f"expected a {kind} name (str); got {name!r}", path=f"{path}.name")
    try:
        cls = registry.resolve(kind, name)
    except ConfigError as exc:
        raise exc.under(f"{path}.name") from None
    params = {k: v for k, v in spec.items() if k != "name"}
    return build_dataclass(cls, params, path=path)


def build_dataclass(cls: type, params: Mapping[str, Any], *, path: str = "") -> Any:
    """Validate ``params`` against the fields of dataclass ``cls`` and construct it."""
    if not dataclasses.is_dataclass(cls):
        raise ConfigError(f"{cls.__module__}:{cls.__qualname__} is not a dataclass", path=path)
    fields = {f.name: f for f in dataclasses.fields(cls) if f.init}
    where = (lambda key: f"{path}.{key}" if path else key)
    for key in params:
        if key not in fields:
            hint = difflib.get_close_matches(str(key), fields, n=1)
            did_you_mean = f"did you mean {hint[0]!r}? " if hint else ""
            raise ConfigError(
                f"unknown key; {did_you_mean}allowed keys: {', '.join(fields) or '(none)'}",
                path=where(key),
            )
    hints = _type_hints(cls)
    kwargs: dict[str, Any] = {}
    for name, f in fields.items():
        if name not in params:
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise ConfigError("required key is missing", path=where(name))
            continue
        value = params[name]
        kind = f.metadata.get(COMPONENT_KIND)
        if kind is not None:
            kwargs[name] = None if value is None else build(kind, value, path=where(name))
        else:
            kwargs[name] = _check_type(value, hints[name], where(name))
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        raise exc.under(path) from None


def to_config(obj: Any, kind: str | None = None) -> dict[str, Any]:
    """The plain-data spec of a component: YAML- and JSON-safe, and ``build`` turns it back."""
    if not dataclasses.is_dataclass(obj) or isinstance(obj, type):
        raise TypeError(f"to_config needs a component (dataclass instance); got {obj!r}")
    out: dict[str, Any] = {}
    if kind is not None:
        out["name"] = registry.name_of(kind, type(obj))
    for f in dataclasses.fields(obj):
        if not f.init:
            continue
        value = getattr(obj, f.name)
        nested = f.metadata.get(COMPONENT_KIND)
        if nested is not None and value is not None:
            out[f.name] = to_config(value, nested)
        else:
            out[f.name] = _plain(value)
    return out


def model_spec(embedder: Any) -> dict[str, Any]:
    """An embedder's config without the fields that never change a vector (its
    ``cache_key_ignores``): equal specs embed a text to the same vector."""
    spec = to_config(embedder, "embedder")
    for name in getattr(embedder, "cache_key_ignores", ()):
        spec.pop(name, None)
    return spec


def load_yaml(path: str | Path, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """Read a YAML config file and apply dotted overrides such as ``chunker.chunk_size=256``."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file: {exc.strerror}", path=str(path)) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(exc, "problem", None) or str(exc).replace("\n", " ")
        context = getattr(exc, "context", None)
        detail = f"{problem} ({context})" if context else problem
        raise ConfigError(f"invalid YAML{where}: {detail}", path=str(path)) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(
            f"the top level must be a mapping of keys to values; got {type(data).__name__}",
            path=str(path),
        )
    return apply_overrides(data, overrides)


def apply_overrides(data: dict[str, Any], overrides: list[str] | tuple[str, ...]) -> dict[str, Any]:
    """Return a copy of ``data`` with ``key.sub=value`` overrides applied (values parsed as YAML)."""
    import copy

    import yaml

    data = copy.deepcopy(data)
    for item in overrides:
        key, sep, raw = item.partition("=")
        if not sep or not key or any(not part for part in key.split(".")):
            raise ConfigError(
                f"override {item!r} must look like 'key.subkey=value' (e.g. chunker.chunk_size=256)"
            )
        try:
            value = yaml.safe_load(raw) if raw else ""
        except yaml.YAMLError:
            value = raw
        node = data
        parts = key.split(".")
        for i, part in enumerate(parts[:-1]):
            child = node.get(part)
            if isinstance(child, str):  # shorthand `embedder: hash` -> {name: hash}
                child = node[part] = {"name": child}
            elif child is None:
                child = node[part] = {}
            elif not isinstance(child, dict):
                where = ".".join(parts[: i + 1])
                raise ConfigError(f"override {item!r}: {where} is {child!r}, not a mapping")
            node = child
        node[parts[-1]] = value
    return data


# -- type checking ------------------------------------------------------------------------------


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _adapter(tp: Any) -> Any:
    from pydantic import TypeAdapter

    return TypeAdapter(tp)


def _check_type(value: Any, tp: Any, where: str) -> Any:
    from pydantic import ValidationError

    try:
        return _adapter(tp).validate_python(_tuples(value, tp), strict=True)
    except ValidationError:
        raise ConfigError(
            f"expected {_describe(tp)}; got {value!r} ({type(value).__name__})", path=where
        ) from None
    except TypeError:  # pydantic cannot check this annotation: accept the value as given
        return value


def _tuples(value: Any, tp: Any) -> Any:
    """YAML has lists, not tuples: turn a list into a tuple where the field wants a tuple."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        for arg in typing.get_args(tp):
            if typing.get_origin(arg) is tuple or arg is tuple:
                return _tuples(value, arg)
        return value
    if (origin is tuple or tp is tuple) and isinstance(value, list):
        return tuple(value)
    return value


def _describe(tp: Any) -> str:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        parts = [_describe(a) for a in args if a is not type(None)]
        text = " or ".join(parts)
        return f"{text} or null" if type(None) in args else text
    if origin in (tuple, list) and (len(args) == 1 or (len(args) == 2 and args[1] is Ellipsis)):
        return f"a list of {_describe(args[0])}"
    if origin is not None:
        inner = ", ".join("..." if a is Ellipsis else _describe(a) for a in args)
        name = getattr(origin, "__name__", str(origin))
        name = {"tuple": "list", "Mapping": "mapping", "dict": "mapping"}.get(name, name)
        return f"{name}[{inner}]" if inner else name
    return getattr(tp, "__name__", str(tp))


def _plain(value: Any) -> Any:
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    return value


def check_template(template: Any, want: set[str], *, path: str) -> None:
    """A ``str.format`` template (a prompt) with exactly the placeholders ``want``; otherwise a
    ConfigError at ``path`` naming what it has."""
    if not isinstance(template, str):
        raise ConfigError(f"must be a str; got {template!r}", path=path)
    try:
        names = {f for _, f, _, _ in string.Formatter().parse(template) if f is not None}
    except ValueError as exc:
        raise ConfigError(f"not a valid format string ({exc}); write a literal brace as '{{{{' or "
                          "'}}}}'", path=path) from None
    if names != want:
        listed = " and ".join("{" + w + "}" for w in sorted(want))
        raise ConfigError(f"must contain the placeholder{'s' if len(want) > 1 else ''} {listed} "
                          f"and no others; got {sorted(names)}", path=path)
