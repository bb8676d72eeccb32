"""The contract every registered component keeps, whatever its kind (scikit-learn's
``check_estimator`` idea): it builds from plain data, plays its kind's role (a protocol),
``build(to_config(x)) == x``, and a bad key or a wrongly typed value is a ConfigError that names
the field's config path. The per-kind suites beside this file check what each kind does.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Literal

import pytest

from ragkit import protocols, registry
from ragkit.config import COMPONENT_KIND, build, to_config
from ragkit.errors import ConfigError
from tests.contracts.registered import components, spec


def _role(kind: str) -> type | None:
    from ragkit.chunkers.base import Chunker
    from ragkit.retrieval.base import Index, Reranker, Selector

    return {
        "chunker": Chunker,
        "embedder": protocols.Embeds,
        "index": Index,
        "reranker": Reranker,
        "selector": Selector,
        "kv_store": protocols.CachesKV,
        "generator": protocols.StreamsTokens,
    }.get(kind)


EVERY = [pytest.param(kind, p.values[0], id=f"{kind}-{p.values[0]}", marks=p.marks)
         for kind in registry.kinds() for p in components(kind, run=False)]
PLAIN = (int, float, str, bool)


def test_the_suite_covers_every_kind_and_name():
    kinds = {p.values[0] for p in EVERY}
    assert kinds == set(registry.kinds())
    assert len(EVERY) == sum(len(registry.names(k, peers=True)) for k in registry.kinds())


@pytest.mark.parametrize(("kind", "name"), EVERY)
def test_builds_plays_its_role_and_round_trips(kind, name):
    x = build(kind, spec(kind, name))
    role = _role(kind)
    if role is not None:
        assert isinstance(x, role), f"{kind} {name!r} is not a {role.__name__}"
    config = to_config(x, kind)
    assert config["name"] == name
    assert build(kind, config) == x
    assert to_config(build(kind, config), kind) == config


@pytest.mark.parametrize(("kind", "name"), EVERY)
def test_an_unknown_key_names_its_path(kind, name):
    with pytest.raises(ConfigError) as info:
        build(kind, {**spec(kind, name), "no_such_key": 1})
    assert info.value.path == f"{kind}.no_such_key"
    assert "unknown key" in str(info.value)


def _plain_field(cls: type) -> str | None:
    """The first constructor field typed as a plain value (int, float, str, bool, a Literal of
    them, or one of these or None): a list is wrong for all of them."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if not f.init or f.metadata.get(COMPONENT_KIND):
            continue
        tp = hints[f.name]
        args = typing.get_args(tp) if typing.get_origin(tp) in (typing.Union, types.UnionType) \
            else (tp,)
        if all(a in PLAIN or a is type(None) or typing.get_origin(a) is Literal for a in args):
            return f.name
    return None


@pytest.mark.parametrize(("kind", "name"), EVERY)
def test_a_wrongly_typed_value_names_its_path(kind, name):
    base = spec(kind, name)
    field = _plain_field(registry.resolve(kind, name))
    if field is None:
        pytest.skip(f"{kind} {name!r} has no plain-valued field to get wrong")
    with pytest.raises(ConfigError) as info:
        build(kind, {**base, field: ["not", "a", "plain", "value"]})
    assert info.value.path == f"{kind}.{field}"
    assert field in str(info.value)


@pytest.mark.parametrize("kind", registry.kinds())
def test_an_unknown_name_lists_the_registered_ones(kind):
    with pytest.raises(ConfigError) as info:
        build(kind, {"name": "no-such-component"})
    assert info.value.path == f"{kind}.name"
    for name in registry.names(kind):
        assert name in str(info.value)
