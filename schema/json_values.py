"""Checks of parsed JSON values as requests send them: what no JSON store keeps (a NUL
character, a lone UTF-16 surrogate, a number that is not finite), how deep they nest, and
where the bulk of a too-large one lies. Iterative throughout: a hostile nesting cannot
exhaust the stack."""

from __future__ import annotations

import json
import math
import re
from typing import Any

LONE_SURROGATE = re.compile("[\ud800-\udfff]")


def json_value_problem(
    data: Any, max_depth: int | None = None, counted: str = ""
) -> tuple[tuple[str | int, ...], str] | None:
    """Where ``data`` (parsed JSON) nests deeper than ``max_depth`` (when given), or holds
    what JSON stores refuse or cannot write back: a NUL character, a lone UTF-16 surrogate
    (``"\\ud800"``), or a number that is not finite (``NaN``, ``Infinity``). None when it
    holds none. Linear: a path is spelled out only for the problem found."""
    # (node, depth, where): ``where`` links to the parent's, spelled out only when needed.
    stack: list[tuple[Any, int, _Where]] = [(data, 0, None)]
    while stack:
        node, depth, where = stack.pop()
        if max_depth is not None and depth > max_depth:
            return _path(where), f"nested deeper than {max_depth} levels {counted}".rstrip()
        if isinstance(node, dict):
            for key, value in node.items():
                problem = _text_problem(key) if isinstance(key, str) else None
                if problem:
                    return (*_path(where), key), f"a key may not contain {problem}"
                stack.append((value, depth + 1, (str(key), where)))
        elif isinstance(node, list):
            stack.extend((value, depth + 1, (index, where)) for index, value in enumerate(node))
        elif isinstance(node, str):
            problem = _text_problem(node)
            if problem:
                return _path(where), f"may not contain {problem}"
        elif isinstance(node, float) and not math.isfinite(node):
            return _path(where), f"must be a finite number, not {node}"
    return None


_Where = tuple[str | int, "_Where"] | None


def _path(where: _Where) -> tuple[str | int, ...]:
    parts: list[str | int] = []
    while where is not None:
        key, where = where
        parts.append(key)
    return tuple(reversed(parts))


def _text_problem(text: str) -> str | None:
    """What of ``text`` no JSON store keeps, if anything."""
    if "\x00" in text:
        return "a NUL character"
    if not text.isascii() and LONE_SURROGATE.search(text):
        return "a lone UTF-16 surrogate (\\ud800-\\udfff without its pair)"
    return None


def heaviest_part(data: Any) -> tuple[tuple[str | int, ...], int]:
    """The path of the part of ``data`` that holds most of its weight as compact JSON
    (``compact_size``), and that weight: from the top, into the heaviest member as long as
    it weighs more than half of what holds it (a long string, or a long list of small
    items)."""
    weights: dict[int, int] = {}
    stack: list[tuple[Any, bool]] = [(data, False)]
    while stack:  # post-order: a container's weight once its members' are known
        node, ready = stack.pop()
        if isinstance(node, dict | list) and not ready:
            stack.append((node, True))
            stack.extend((child, False) for child in _members(node).values())
            continue
        if isinstance(node, dict):  # {"key":value,...}
            keys = sum(len(json.dumps(str(key), ensure_ascii=False).encode()) for key in node)
            items = sum(weights[id(v)] + 2 for v in node.values())
            weights[id(node)] = 1 + keys + items + (not node)
        elif isinstance(node, list):  # [value,...]
            weights[id(node)] = 1 + sum(weights[id(v)] + 1 for v in node) + (not node)
        else:
            weights[id(node)] = len(json.dumps(node, ensure_ascii=False, default=str).encode())
    path: tuple[str | int, ...] = ()
    node = data
    while isinstance(node, dict | list) and node:
        key, child = max(_members(node).items(), key=lambda item: weights[id(item[1])])
        if weights[id(child)] * 2 <= weights[id(node)]:
            break
        path, node = (*path, key), child
    return path, weights[id(node)]


def _members(node: dict[Any, Any] | list[Any]) -> dict[str | int, Any]:
    if isinstance(node, dict):
        return {str(key): value for key, value in node.items()}
    return dict(enumerate(node))


def compact_size(data: Any) -> int:
    """What ``data`` weighs as compact JSON (no spaces), in UTF-8 bytes."""
    return len(json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str).encode())
