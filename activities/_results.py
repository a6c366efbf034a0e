"""The one size limit on what an action returns.

A result travels through Temporal (an activity result, then the final execution record) and
is kept in the database, so the runtime bounds it once, after redaction, for every action:
at most ``MAX_RESULT_BYTES`` as compact UTF-8 JSON. A result over it is cut to fit and says
so: members of an object are kept in order, small ones (``SMALL_BYTES`` or less) whole; a
long string keeps its beginning, a list its first items, an object the members that fit;
a member left with no room is dropped. The cut result gains ``result_truncated: true`` and
``result_bytes`` (the size of the whole result); a result that is not an object becomes
``{"result_truncated": true, "result_bytes": n, "value": <cut value>}``.

Caps on what is *read* (a response body, a page, a program's output) stay with each action:
they bound the worker's memory, not the result.
"""

from __future__ import annotations

import json
from typing import Any

MAX_RESULT_BYTES = 256 * 1024
# Members this small are kept whole when a result is cut (status codes, ids, flags).
SMALL_BYTES = 1024
# Room kept for the truncation fields themselves.
RESERVED_BYTES = 128
# A member is not worth keeping with less room than this.
MIN_PART_BYTES = 32


def size_of(value: Any) -> int:
    """``value``'s size as compact UTF-8 JSON."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), default=str)
    return len(text.encode())


def bounded(result: Any) -> Any:
    """``result`` as it is when within MAX_RESULT_BYTES, else cut to fit and marked."""
    size = size_of(result)
    if size <= MAX_RESULT_BYTES:
        return result
    budget = MAX_RESULT_BYTES - RESERVED_BYTES
    marks = {"result_truncated": True, "result_bytes": size}
    if isinstance(result, dict):
        return {**_fit_object(result, budget), **marks}
    return {**marks, "value": _fit(result, budget)}


def _fit(value: Any, budget: int) -> Any:
    if size_of(value) <= budget:
        return value
    if isinstance(value, str):
        return _fit_string(value, budget)
    if isinstance(value, list | tuple):
        return _fit_list(list(value), budget)
    if isinstance(value, dict):
        return _fit_object(value, budget)
    return None  # a scalar never gets here: its budget is always enough


def _fit_string(text: str, budget: int) -> str:
    keep = min(len(text), budget)
    while keep > 0:
        size = size_of(text[:keep])
        if size <= budget:
            return text[:keep]
        # Escapes and multi-byte characters make the JSON longer than the text.
        keep = min(keep - 1, keep * budget // size)
    return ""


def _fit_list(items: list[Any], budget: int) -> list[Any]:
    kept: list[Any] = []
    room = budget - 2  # the brackets
    for item in items:
        size = size_of(item) + 1  # the comma
        if size <= room:
            kept.append(item)
            room -= size
            continue
        if room - 1 >= MIN_PART_BYTES and isinstance(item, str | list | tuple | dict):
            kept.append(_fit(item, room - 1))
        break
    return kept


def _fit_object(members: dict[Any, Any], budget: int) -> dict[Any, Any]:
    """Small members whole first, then the others in order, each in what room is left."""
    sizes = {key: size_of(str(key)) + 1 + size_of(value) + 1 for key, value in members.items()}
    room = budget - 2  # the braces
    kept: dict[Any, Any] = {}
    for key, size in sizes.items():
        if size <= SMALL_BYTES and size <= room:
            kept[key] = members[key]
            room -= size
    for key, size in sizes.items():
        if key in kept:
            continue
        if size <= room:
            kept[key] = members[key]
            room -= size
            continue
        overhead = size_of(str(key)) + 2
        if room - overhead >= MIN_PART_BYTES:
            part = _fit(members[key], room - overhead)
            kept[key] = part
            room -= overhead + size_of(part)
    return {key: kept[key] for key in members if key in kept}
