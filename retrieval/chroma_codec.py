"""How a ragkit ``Chunk`` and a ragkit filter map onto Chroma: chunk fields and metadata as Chroma
metadata (what Chroma cannot hold as is goes JSON-encoded), and back; a filter as a ``where``.

Pure functions over plain data: no client, no collection, no I/O.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from ragkit.errors import IndexMismatchError
from ragkit.types import Chunk

_INT64 = (-(2**63), 2**63 - 1)
FIELD = "ragkit:"  # chunk fields in Chroma metadata: ragkit:doc_id, ragkit:start, ...
JSON_KEY = "ragkit.json:"  # metadata Chroma cannot hold as is, JSON-encoded
NOTHING = object()  # a filter that no chunk can match


def _native(key: Any, value: Any) -> bool:
    """Whether ``key: value`` can be stored in Chroma metadata as is."""
    if not isinstance(key, str) or not key or key[0] in "$#" or key.startswith("ragkit"):
        return False
    if isinstance(value, str | bool):
        return True
    if isinstance(value, int):
        return _INT64[0] <= value <= _INT64[1]
    return isinstance(value, float) and math.isfinite(value)


def _encode_item(key: str, value: Any) -> tuple[str, Any]:
    if _native(key, value):
        return key, value
    return JSON_KEY + key, json.dumps(value, ensure_ascii=False, allow_nan=False, sort_keys=True)


def encode_chunk(c: Chunk) -> dict[str, Any]:
    meta: dict[str, Any] = {FIELD + "doc_id": c.doc_id, FIELD + "start": c.start,
                            FIELD + "end": c.end, FIELD + "index": c.index}
    for key, value in c.metadata.items():
        if not isinstance(key, str):
            raise IndexMismatchError(f"chunk {c.id!r}: metadata key {key!r} is not a str")
        try:
            ck, cv = _encode_item(key, value)
        except (TypeError, ValueError) as exc:
            raise IndexMismatchError(
                f"chunk {c.id!r}: metadata {key!r} cannot be stored in Chroma: it is not plain "
                f"JSON data ({exc})"
            ) from None
        meta[ck] = cv
    return meta


def decode_metadata(meta: Mapping[str, Any] | None) -> dict[str, Any]:
    out = {}
    for key, value in (meta or {}).items():
        if key.startswith(JSON_KEY):
            out[key[len(JSON_KEY):]] = json.loads(value)
        elif not key.startswith(FIELD):
            out[key] = value
    return out


def decode_chunk(cid: str, text: str | None, meta: Mapping[str, Any]) -> Chunk:
    return Chunk(meta[FIELD + "doc_id"], meta[FIELD + "start"], meta[FIELD + "end"],
                 text or "", meta[FIELD + "index"], decode_metadata(meta))


def where_clause(filter: Mapping[str, Any] | None) -> Any:
    """A Chroma ``where`` for a ragkit filter; ``None`` for no filter, ``NOTHING`` if no chunk
    can match (an empty list of values)."""
    if not filter:
        return None
    if not isinstance(filter, Mapping):
        raise TypeError(f"filter must be a mapping of metadata key -> value; got {filter!r}")
    clauses = []
    for key, wanted in filter.items():
        values = (tuple(wanted) if isinstance(wanted, list | tuple | set | frozenset)
                  else (wanted,))
        groups: dict[tuple[str, type], list[Any]] = {}  # Chroma's $in wants one value type
        for value in values:
            if key == "doc_id":
                if isinstance(value, str):
                    groups.setdefault((FIELD + "doc_id", str), []).append(value)
                continue
            try:
                ck, cv = _encode_item(key, value)
            except (TypeError, ValueError):
                continue  # not JSON data: no stored chunk can hold it
            groups.setdefault((ck, type(cv)), []).append(cv)
        if not groups:
            return NOTHING
        ors = [{ck: {"$in": vals}} for (ck, _), vals in groups.items()]
        clauses.append(ors[0] if len(ors) == 1 else {"$or": ors})
    return clauses[0] if len(clauses) == 1 else {"$and": clauses}
