"""What template values weigh, and what template operations would build: the size limits
of ``activities/_templates.py``, which calls them from its hooks into Jinja.

The invariant they keep:

- every value has a *weight* (``weight``), about the length of its text: a string's length,
  a number's digits, and for a list, tuple, set, dict or namespace its items' weights (keys
  too, an item as often as it occurs) with the quotes and separators its text adds;
- every value a template builds weighs at most ``MAX_RENDERED_CHARS``, whatever builds it
  (``built``): it is weighed as soon as it is built, and refused then. A list, dict or set
  that a method grows is weighed with its growth before it grows (``grow``);
- what could build far more than it is given is estimated from its arguments and refused
  *before* it runs (``refuse``, ``before_call``, ``operated``, ``FILTER_SIZES``): padding and
  repetition, replacement, joining, formatting with widths, ``strftime``, ``int.to_bytes``,
  escaping, encoding, quoting, splitting, and making any value text. The estimate is exact
  where that is cheap (a repetition, an escape, a hex dump); where it is not (the text of a
  list whose strings need escapes, JSON's ``\\u`` escapes, a case conversion, UTF-8) it is
  the weight, and the step builds at most about a dozen times that before its result is
  weighed;
- what a lazy filter yields is weighed as it comes (all it yields weighs at most the
  limit) when it makes new lists (``batch``, ``slice``) or reads a string; other lazy
  filters yield what their value holds, or what a filter built and weighed (``map``);
- everything one config's templates build and output together weighs at most
  ``MAX_RENDER_TOTAL`` (``spend``: characters of text, items of containers). Loop
  iterations and calls count as steps (``step``, at most ``MAX_RENDER_STEPS``) and weighing
  counts the items it visits (at most ``MAX_WEIGHED``): they bound the time rendering takes.
"""

from __future__ import annotations

import codecs
import functools
import re
import string
from collections import deque
from collections.abc import (
    Callable,
    ItemsView,
    Iterable,
    Iterator,
    KeysView,
    Sized,
    ValuesView,
)
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from datetime import date, time
from typing import Any, TypeVar, cast

from jinja2 import TemplateError
from jinja2.runtime import LoopContext
from jinja2.utils import Namespace
from markupsafe import Markup

MAX_RENDERED_CHARS = 1024 * 1024
MAX_RENDER_TOTAL = 8 * 1024 * 1024
# Loop iterations and calls, together, in all of one config's templates: what bounds their time.
MAX_RENDER_STEPS = 1_000_000
# Items visited to weigh values, in all of one config's templates: what bounds weighing's time.
MAX_WEIGHED = 10_000_000
# Integers are for arithmetic: beyond this many bits, they are refused.
MAX_INT_BITS = 64 * 1024
PERCENT_FIELD = re.compile(r"%(?:\(([^)]*)\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)")

# What an item adds to its container's text: quotes around a string, ", " after any item
# (and ": " after a key); what a container's brackets add.
QUOTES = 2
SEPARATOR = 2
BRACKETS = 2
# The text of a float, a date, a macro, a cycler...: at most about this long.
FLOAT_WEIGHT = 24
OTHER_WEIGHT = 80
# What weighs its length; what weighs little (an integer is at most MAX_INT_BITS).
TEXT = (str, bytes)
NUMBERS = frozenset({int, float, bool, type(None)})
# The containers ``_walk`` looks into (their subclasses too, found more slowly).
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
# What is surely not an iterator (told apart without the slower ABC check).
_PLAIN = frozenset({str, bytes, Markup, list, tuple, dict, int, float, bool, type(None)})
# How many results of ``+`` keep their weight known (see ``Budget``).
RECENT_RESULTS = 4
# strftime pads a field as wide as asked; Python stops it at 256 times the format's length.
STRFTIME_GROWTH = 256
# The most characters one character can become: "\N{...}" (namereplace), "\U0010ffff"...
NAME_ESCAPE_GROWTH = 92
ESCAPE_GROWTH = 10
# What HTML escaping adds for each of these characters.
HTML_ESCAPE_GROWTH = {"&": 4, "<": 3, ">": 3, '"': 4, "'": 4}
# What str.split() and str.splitlines() split at (bytes: the ASCII ones, and \n \r).
SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
SPACES += "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# The bytes url quoting leaves alone (the rest become %XX).
URL_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"

_T = TypeVar("_T")


class TemplateTooLarge(TemplateError):
    """A template would build or produce more than rendering allows."""


@dataclass
class Budget:
    """What one config's templates may still build, do and weigh (see ``budgeted``)."""

    left: int = MAX_RENDER_TOTAL
    steps: int = MAX_RENDER_STEPS
    weighed: int = MAX_WEIGHED
    # Lists, dicts and sets that methods grew: their weight as last weighed plus what the
    # methods added since (growing one in a loop does not weigh it again), and whether they
    # hold only strings and integers.
    grown: dict[int, tuple[Any, int, bool]] = field(default_factory=dict)
    # The weights ``weight`` takes as known without looking inside: of containers holding
    # only strings and integers, which nothing but their own methods can change (and these
    # keep the entry up to date, or drop it).
    flat: dict[int, tuple[Any, int]] = field(default_factory=dict)
    # The last flat lists and tuples ``+`` built, also in ``flat`` while here: in a loop that
    # grows a list with `{% set ns.l = ns.l + [x] %}`, each ``+`` finds its left operand's
    # weight. Only a few, since ``flat`` keeps what it holds alive.
    recent: deque[int] = field(default_factory=deque)


_budget: ContextVar[Budget | None] = ContextVar("template_budget", default=None)


@contextmanager
def budgeted() -> Iterator[None]:
    """Count what is built inside against one config's limits (``render`` of a config)."""
    token = _budget.set(Budget())
    try:
        yield
    finally:
        _budget.reset(token)


def refuse(size: int, what: str) -> None:
    """Refuse to build ``what``, estimated at ``size`` characters, over the limit."""
    if size > MAX_RENDERED_CHARS:
        # Weighing stops counting just past the limit: the exact size is not known then.
        amount = f"more than {MAX_RENDERED_CHARS}" if size == MAX_RENDERED_CHARS + 1 else size
        raise TemplateTooLarge(
            f"the template would build {what} of {amount} characters; "
            f"the limit is {MAX_RENDERED_CHARS}"
        )


def spend(size: int) -> None:
    """Count ``size`` characters in what one config's templates build in all."""
    budget = _budget.get()
    if budget is not None:
        budget.left -= max(size, 0)
        if budget.left < 0:
            raise TemplateTooLarge(
                f"the templates would build more than {MAX_RENDER_TOTAL} characters in all"
            )


def step() -> None:
    """Count one loop iteration or call."""
    budget = _budget.get()
    if budget is not None:
        budget.steps -= 1
        if budget.steps < 0:
            raise TemplateTooLarge(
                f"the templates take more than {MAX_RENDER_STEPS} loop iterations and calls"
            )


def _weighed(items: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.weighed -= items
        if budget.weighed < 0:
            raise TemplateTooLarge(
                f"the templates weigh more than {MAX_WEIGHED} items while rendering; simplify them"
            )


# -- Weights


def _digits(number: int) -> int:
    """At least the digits (and sign) of ``number``, without making its text."""
    return (number.bit_length() * 78 >> 8) + 1 + (number < 0)


def weight(value: Any, cap: int = MAX_RENDERED_CHARS) -> int:
    """About the length of ``value``'s text, never making it: strings and bytes count their
    length, numbers their digits, containers their items (each as often as it occurs) with
    quotes and separators. Counting stops past ``cap`` (the result is then over ``cap``)."""
    kind = type(value)
    if kind is str or kind is bytes or kind is Markup:
        return len(value)
    if kind is int:
        return _digits(value)
    if kind is float or kind is bool or value is None:
        return FLOAT_WEIGHT
    return _walk(value, cap)[0]


def _item_weight(value: Any) -> int:
    """What ``value`` adds to the text of a container that holds it."""
    quotes = QUOTES if isinstance(value, TEXT) else 0
    return weight(value) + quotes + SEPARATOR


def _walk(value: Any, cap: int) -> tuple[int, bool]:
    """``value``'s weight (counted up to just past ``cap``), and whether it is a list, tuple,
    set or dict of strings and integers only (a flat one: see ``Budget``)."""
    budget = _budget.get()
    known = budget.flat if budget is not None else None
    total, visited, stack = -SEPARATOR, 0, [value]  # no separator after the value itself
    flat: bool | None = None  # known once the value itself is looked at
    while stack and total <= cap:
        item = stack.pop()
        visited += 1
        if type(item) in _CONTAINERS or isinstance(item, list | tuple | set | frozenset | dict):
            entry = known.get(id(item)) if known else None
            if entry is not None and entry[0] is item:
                total += entry[1] + SEPARATOR
                flat = True if flat is None else flat
                continue
            is_dict = isinstance(item, dict)
            count = 2 * len(item) if is_dict else len(item)
            total += BRACKETS + SEPARATOR + count * SEPARATOR
            if total > cap:  # too many items: no need to look at them
                break
            visited += count
            for child in (*item.keys(), *item.values()) if is_dict else item:
                # Strings and integers, the bulk of most data, counted here; the rest later.
                kind = type(child)
                if kind is str:
                    total += len(child) + QUOTES
                elif kind is int:
                    total += (child.bit_length() * 78 >> 8) + 1 + (child < 0)
                else:
                    stack.append(child)
        else:
            total += _scalar_weight(item, stack) + SEPARATOR
        if flat is None:
            flat = not stack and isinstance(value, list | tuple | set | frozenset | dict)
    _weighed(visited)
    return min(total, cap + 1), bool(flat)


def _scalar_weight(item: Any, stack: list[Any]) -> int:
    """The weight of anything but a list, tuple, set or dict (a view or a namespace puts
    what it holds on ``stack``)."""
    if isinstance(item, TEXT):
        return len(item) + QUOTES
    if isinstance(item, float | bool) or item is None:
        return FLOAT_WEIGHT
    if isinstance(item, int):
        return _digits(item)
    if isinstance(item, KeysView | ValuesView | ItemsView):
        stack.append(list(item))
        return len("dict_items()")
    if isinstance(item, Namespace):
        stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        return len("<Namespace >")
    return OTHER_WEIGHT


def _layout_weight(value: Any, per_level: int) -> int:
    """``value``'s weight plus the indentation of its items, laid out one a line (pprint, or
    JSON with an indent), ``per_level`` characters for each level they are nested at."""
    total, visited, stack = weight(value), 0, [(value, 1)]
    while stack and total <= MAX_RENDERED_CHARS:
        item, depth = stack.pop()
        visited += 1
        total += depth * per_level + 1
        if isinstance(item, dict):
            stack.extend((child, depth + 1) for child in item.values())
        elif isinstance(item, list | tuple | set | frozenset):
            stack.extend((child, depth + 1) for child in item)
    _weighed(visited)
    return total


def built(value: _T, what: str, *given: Any) -> _T:
    """``value``, just built by a template from ``given``: refused over the limit, else
    counted in the total. An iterator is weighed as it yields; what was given back is
    returned as is."""
    kind = type(value)
    if kind is str or kind is bytes or kind is Markup:  # the most frequent: kept short
        size = allocated = len(cast(str, value))
    elif kind in NUMBERS:
        if isinstance(value, int) and value.bit_length() > MAX_INT_BITS:
            raise TemplateTooLarge(f"{what} is too large a number")
        return value
    elif isinstance(value, Iterator) and not isinstance(value, LoopContext):
        return cast(_T, _metered(value, what))
    else:
        size, allocated = weight(value), _allocated(value)
    for item in given:
        if value is item:
            return value
    if size > MAX_RENDERED_CHARS:
        refuse(size, what)
    spend(allocated)
    return value


def _allocated(value: Any) -> int:
    """What building ``value`` took, in characters or slots: a string's length, a
    container's number of items (what they hold was counted when it was built)."""
    if isinstance(value, TEXT):
        return len(value)
    if isinstance(value, dict):
        return 2 * len(value)
    if isinstance(value, list | tuple | set | frozenset):
        return len(value)
    if isinstance(value, Namespace):
        return 2 * len(object.__getattribute__(value, "_Namespace__attrs"))
    return 0


def _metered(items: Iterator[Any], what: str) -> Iterator[Any]:
    """``items``, each weighed as it comes: together they weigh at most the limit."""
    total = BRACKETS
    for item in items:
        total += _item_weight(item)
        refuse(total, what)
        yield item


# -- Estimates: what an operation would build, known from its arguments before it runs


def _int_arg(values: Iterable[Any]) -> int:
    """The largest integer among ``values`` (a width given as an argument)."""
    return max((v for v in values if isinstance(v, int)), default=0)


def _percent_size(text: str | bytes, args: Any) -> int:
    """An upper bound of ``text % args``: each field as long as its value (a named one) or
    the longest argument (a dict given whole to ``%s`` is one), and its widest width."""
    pattern = text if isinstance(text, str) else text.decode("latin-1")
    fields = PERCENT_FIELD.findall(pattern)
    if not fields:
        return len(text)
    values = list(args) if isinstance(args, tuple) else [args]
    longest = max(map(weight, values), default=0)
    widest = _int_arg(values)
    size = len(text)
    for name, width, precision, _ in fields:
        if isinstance(args, dict) and name:
            size += weight(args.get(name))
        else:
            size += longest
        numbers = [widest if n == "*" else int(n) for n in (width, precision) if n]
        size += max(numbers, default=0)
    return size


def _format_size(text: str, args: Iterable[Any], kwargs: dict[str, Any]) -> int:
    """An upper bound of ``text.format(*args, **kwargs)``: each field as long as the longest
    argument and its widest width, and a date's fields as long as strftime can make them."""
    values = [*args, *kwargs.values()]
    longest = max((weight(v) for v in values), default=0)
    widest = _int_arg(values)
    dated = any(isinstance(v, date | time) for v in values)
    size = len(text)
    for _, name, spec, _ in string.Formatter().parse(text):
        if name is None:
            continue
        spec = spec or ""
        nested = "{" in spec  # a width or a whole spec taken from the arguments
        numbers = [int(n) for n in re.findall(r"\d+", spec)] + ([widest] if nested else [])
        size += longest + max(numbers, default=0)
        if dated and ("%" in spec or nested):
            size += STRFTIME_GROWTH * (len(spec) + (longest if nested else 0))
    return size


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


def list_size(value: Any) -> int:
    """The list of ``value``'s items (a string's characters: each its own object)."""
    if isinstance(value, str | bytes):
        return BRACKETS + len(value) * (1 + QUOTES + SEPARATOR)
    if isinstance(value, range):
        return BRACKETS + len(value) * (max(_digits(value.start), _digits(value.stop)) + 2)
    return weight(value)


def _split_size(owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Any) -> int:
    """The list ``owner.split()`` (``rsplit``, ``splitlines``) would make: the text, and
    quotes and a separator for each piece, at most one more than the places it splits at."""
    if name == "splitlines":
        marks = LINE_BREAKS if isinstance(owner, str) else "\n\r"
    else:
        sep = kwargs.get("sep", args[0] if args else None)
        limit = kwargs.get("maxsplit", args[1] if len(args) > 1 else -1)
        if isinstance(limit, int) and 0 <= limit < len(owner):  # no need to count
            return BRACKETS + len(owner) + (limit + 1) * (QUOTES + SEPARATOR)
        if sep is not None:
            pieces = owner.count(sep) + 1
            return BRACKETS + len(owner) + pieces * (QUOTES + SEPARATOR)
        marks = SPACES if isinstance(owner, str) and not owner.isascii() else SPACES[:10]
    if isinstance(owner, bytes):
        pieces = 1 + sum(owner.count(bytes([ord(c)])) for c in marks if c in " \t\n\r\x0b\x0c")
    else:
        pieces = 1 + sum(owner.count(c) for c in marks)
    if name != "splitlines" and isinstance(limit, int) and limit >= 0:
        pieces = min(pieces, limit + 1)
    return BRACKETS + len(owner) + pieces * (QUOTES + SEPARATOR)


def _join_size(items: Any, separator: int) -> int:
    """``items`` joined with a separator of that length (items made text if they are not;
    a string's characters read one by one, each its own object)."""
    if isinstance(items, str):
        return len(items) * (1 + max(separator, QUOTES + SEPARATOR))
    if isinstance(items, dict):
        items = items.keys()
    count, total = 0, 0
    for item in items:
        count += 1
        total += weight(item)
        if total > MAX_RENDERED_CHARS:
            break
    return total + separator * max(count - 1, 0)


def escaped_size(value: Any) -> int:
    """``value`` HTML-escaped: exact for text, its weight otherwise (escaped after, when it is
    text: at most six times that)."""
    if not isinstance(value, str):
        return weight(value)
    return len(value) + sum(value.count(c) * n for c, n in HTML_ESCAPE_GROWTH.items())


def _quoted_size(value: Any, safe: bytes = b"") -> int:
    """``value`` URL-quoted: exact for text and bytes, three times its weight otherwise."""
    if isinstance(value, str):
        value = value.encode()  # the size of what url quoting encodes anyway
    elif not isinstance(value, bytes):
        return 3 * weight(value)
    unsafe = len(value.translate(None, URL_SAFE + safe))
    return len(value) + 2 * unsafe


def _encoded_size(text: str, encoding: str = "utf-8", errors: str = "strict") -> int:
    """``text.encode(encoding, errors)``: exact for ASCII text in most encodings; else the
    most a character can become with that encoding and error handler (UTF-8's four bytes
    counted as three: the rare longer result is weighed once built)."""
    name = codecs.lookup(encoding).name
    if name.startswith(("utf-16", "utf-32")):
        return 4 * len(text) + 4
    plain = len(text) if text.isascii() else len(text.encode("ascii", "ignore"))
    if name in ("unicode-escape", "raw-unicode-escape", "utf-7", "punycode"):
        per_ascii, per_other = (4 if name == "unicode-escape" else 2), ESCAPE_GROWTH
    elif errors == "namereplace":
        per_ascii, per_other = 1, NAME_ESCAPE_GROWTH
    elif errors in ("backslashreplace", "xmlcharrefreplace"):
        per_ascii, per_other = 1, ESCAPE_GROWTH
    else:
        per_ascii, per_other = 1, 3
    return plain * per_ascii + (len(text) - plain) * per_other


def _text_call_size(owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: Any) -> int:
    """What a method of a string or bytes would build, or 0 when it cannot grow much."""
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill"):
        width = kwargs.get("width", first)
        return max(width, len(owner)) if isinstance(width, int) else 0
    if name == "expandtabs":
        tabsize = kwargs.get("tabsize", first if isinstance(first, int) else 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        return len(owner) + tabs * max(int(tabsize), 0)
    if name == "replace" and len(args) >= 2:
        return _replace_size(owner, *args[:3])
    if name == "join" and args:
        return _join_size(first, len(owner))
    if name in ("split", "rsplit", "splitlines"):
        return _split_size(owner, name, args, kwargs)
    if name == "translate" and isinstance(first, dict):
        longest = max((1 if isinstance(v, int) else weight(v) for v in first.values()), default=1)
        return len(owner) * longest
    if name == "translate" and first is not None and isinstance(owner, str):
        return len(owner) * max(weight(first), 1)
    if isinstance(owner, str):
        return _str_call_size(owner, name, args, kwargs)
    if name == "hex":
        return len(owner) * (3 if args or kwargs else 2)
    if name == "decode":
        errors = kwargs.get("errors", args[1] if len(args) > 1 else "strict")
        return len(owner) * (4 if errors == "backslashreplace" else 1)
    return 0


def _str_call_size(owner: str, name: str, args: tuple[Any, ...], kwargs: Any) -> int:
    if name == "format":
        return _format_size(owner, args, kwargs)
    if name == "format_map" and args:
        return _format_size(owner, (), dict(args[0]) if isinstance(args[0], dict) else {})
    if name == "encode":
        encoding = kwargs.get("encoding", args[0] if args else "utf-8")
        errors = kwargs.get("errors", args[1] if len(args) > 1 else "strict")
        return _encoded_size(owner, encoding, errors)
    return 0


# The methods ``_call_size`` estimates (the others build at most a few times their inputs).
_ESTIMATED_METHODS = frozenset(
    {
        *("ljust", "rjust", "center", "zfill", "expandtabs", "replace", "join", "translate"),
        *("split", "rsplit", "splitlines", "format", "format_map", "encode", "hex", "decode"),
        *("strftime", "to_bytes", "fromkeys", "index"),
    }
)


def _call_size(owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> int:
    """What calling ``owner.name`` would build, estimated before the call (0: nothing much)."""
    if isinstance(owner, TEXT):
        return _text_call_size(owner, name, args, kwargs)
    if isinstance(owner, date | time) and name == "strftime":
        fmt = kwargs.get("format", args[0] if args else "")
        return len(fmt) * (STRFTIME_GROWTH if "%" in fmt else 1) if isinstance(fmt, str) else 0
    if isinstance(owner, int) and name == "to_bytes":
        length = kwargs.get("length", args[0] if args else 1)
        return length if isinstance(length, int) else 0
    if name == "index" and args and isinstance(owner, list):
        return weight(args[0])  # what list.index cannot find, its error quotes whole
    if name == "fromkeys" and args and (owner is dict or isinstance(owner, dict)):
        keys = args[0]
        count = len(keys) if isinstance(keys, str | bytes | range | Sized) else 0
        value = args[1] if len(args) > 1 else kwargs.get("value")
        return list_size(keys) + count * (_item_weight(value) + SEPARATOR)
    return 0


def before_call(
    owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    """Refuse a template's call of the method ``name`` of ``owner`` (or of a function,
    ``owner`` None) that would build too much; the arguments to call it with (an iterator
    to join read first, to be measured)."""
    if name in _ESTIMATED_METHODS:
        if name in ("join", "fromkeys") and args:
            args = (materialized(args[0]), *args[1:])
        refuse(_call_size(owner, name, args, kwargs), _result_of(name))
    return args


def after_call(
    result: Any, owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``result`` of a template's call (see ``before_call``), weighed."""
    if name in _SELECTING and owner is not None:
        return result
    return built(result, _result_of(name), owner, *args, *kwargs.values())


@functools.cache
def _result_of(name: str) -> str:
    return f"the result of {name or 'a call'}()"


def materialized(value: Any) -> Any:
    """``value``, read into a list if it is an iterator (to be measured, then used)."""
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Iterator) and not isinstance(value, LoopContext):
        return list(value)
    return value


# -- Growing lists, dicts and sets

# Methods that change a list, dict or set in place.
MUTATING = frozenset(
    {
        *("append", "insert", "extend", "update", "setdefault", "add"),
        *("symmetric_difference_update", "pop", "popitem", "remove", "discard", "clear"),
        *("sort", "reverse", "difference_update", "intersection_update"),
    }
)
# Methods that return what their object already holds (nothing new to weigh).
_SELECTING = frozenset(
    {"get", "pop", "popitem", "setdefault", "index", "count", "keys", "values", "items"}
    | {"next", "current", "reset", "cycle", "changed"}
)
# What a flat list may gain and stay flat (what ``_walk`` counts without looking further).
_SCALARS = frozenset({str, int})


def grows(owner: list[Any] | dict[Any, Any] | set[Any], name: str) -> bool:
    if isinstance(owner, list):
        return name in ("append", "insert", "extend")
    if isinstance(owner, dict):
        return name in ("update", "setdefault")
    return name in ("add", "update", "symmetric_difference_update")


def _additions(
    owner: list[Any] | dict[Any, Any] | set[Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
) -> tuple[list[Any], int, tuple[Any, ...], dict[str, Any]]:
    """What a growing method adds to ``owner``: the new items (a dict's keys and values),
    their weight net of what they replace, and the arguments to call it with (what it would
    read from an iterator, read first to be weighed)."""
    for group in args if name in ("extend", "update", "symmetric_difference_update") else ():
        refuse(list_size(group), f"the items to add to a {type(owner).__name__}")
    if isinstance(owner, list):
        if name == "extend" and args:
            args = (list(args[0]),)
            new = args[0]
        else:
            new = list(args[-1:])  # append(x), insert(i, x)
        return new, sum(_item_weight(x) for x in new), args, kwargs
    if isinstance(owner, dict):
        if name == "setdefault":
            key = args[0] if args else None
            pairs = {} if key in owner else {key: args[1] if len(args) > 1 else None}
        else:
            pairs = dict(*args, **kwargs)
            args, kwargs = (pairs,), {}
        gain = 0
        for key, value in pairs.items():
            replaced = _item_weight(owner[key]) if key in owner else -_item_weight(key)
            gain += _item_weight(value) - replaced
        return [*pairs, *pairs.values()], gain, args, kwargs
    if name == "add":
        new = list(args[:1])
    else:
        new = [x for group in args for x in group]
        args = (new,)
    return new, sum(_item_weight(x) for x in new if x not in owner), args, kwargs


def grow(
    owner: list[Any] | dict[Any, Any] | set[Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: Callable[..., Any],
) -> Any:
    """``call(*args, **kwargs)``, the method ``name`` that adds to ``owner`` (see ``grows``),
    refused when ``owner`` would then weigh over the limit. What it adds is weighed, not
    ``owner`` again, when its weight is known: growing a list in a loop stays linear."""
    size, flat = _owner_weight(owner)
    new, gain, args, kwargs = _additions(owner, name, args, kwargs)
    refuse(size + gain, f"a {type(owner).__name__}")
    spend(len(new))
    result = call(*args, **kwargs)
    _remember(owner, size + gain, flat and all(type(item) in _SCALARS for item in new))
    return result


def _owner_weight(owner: list[Any] | dict[Any, Any] | set[Any]) -> tuple[int, bool]:
    """``owner``'s weight as last known (weighed, plus what methods added since), and whether
    it holds only strings and numbers (then nothing but its own methods can change it)."""
    budget = _budget.get()
    entry = budget.grown.get(id(owner)) if budget is not None else None
    if entry is not None and entry[0] is owner:
        return entry[1], entry[2]
    return _walk(owner, MAX_RENDERED_CHARS)


def _remember(owner: Any, size: int, flat: bool) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.grown[id(owner)] = (owner, size, flat)
        if flat:
            budget.flat[id(owner)] = (owner, size)
        else:
            budget.flat.pop(id(owner), None)


def forget(owner: Any) -> None:
    """``owner`` changed other than by growing (``pop``, ``sort``...): weigh it again."""
    budget = _budget.get()
    if budget is not None:
        budget.grown.pop(id(owner), None)
        budget.flat.pop(id(owner), None)


# Arithmetic whose result has at most one bit more than its operands.
_SMALL_ARITHMETIC = frozenset({"+", "-", "/", "//", "%"})


def operated(operator: str, left: Any, right: Any, apply: Callable[[Any, Any], Any]) -> Any:
    """``apply(left, right)``, a template's binary operator: estimated before, weighed after."""
    if operator in _SMALL_ARITHMETIC and type(left) in NUMBERS and type(right) in NUMBERS:
        return built(apply(left, right), "a number")
    if operator == "+" and isinstance(left, list | tuple) and isinstance(right, list | tuple):
        return _concatenated(left, right)
    refuse(_binop_size(operator, left, right), f"the result of {operator}")
    result = apply(left, right)
    if operator in ("+", "*") and type(result) in (str, bytes, list, tuple):
        # Repeated or joined: as large as estimated, at most (no need to weigh it again).
        spend(_allocated(result))
        return result
    return built(result, f"the result of {operator}", left, right)


def _concatenated(left: Any, right: Any) -> Any:
    """``left + right`` for lists or tuples, weighed from what is known of its operands (a
    flat result is remembered for a while: the next ``+`` of a loop will not weigh it)."""
    left_size, left_flat = _walk(left, MAX_RENDERED_CHARS)
    right_size, right_flat = _walk(right, MAX_RENDERED_CHARS)
    size = left_size + right_size - BRACKETS
    refuse(size, "the result of +")
    result = left + right
    spend(len(result))
    budget = _budget.get()
    if budget is not None and left_flat and right_flat:
        budget.flat[id(result)] = (result, size)
        budget.recent.append(id(result))
        if len(budget.recent) > RECENT_RESULTS:
            old = budget.recent.popleft()
            if old not in budget.grown:
                budget.flat.pop(old, None)
    return result


def _binop_size(operator: str, left: Any, right: Any) -> int:
    """What ``left <operator> right`` would build, estimated before it runs (0: a number, or
    nothing that can outgrow its operands)."""
    if operator == "*":
        return _product_size(left, right)
    if operator == "**" and isinstance(left, int) and isinstance(right, int):
        if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
            raise TemplateTooLarge(f"{left} ** {right} is too large a number")
        return 0
    if operator == "%" and isinstance(left, TEXT):
        return _percent_size(left, right)
    if operator == "+" and not isinstance(left, int | float):
        return weight(left) + weight(right)
    return 0


def _product_size(left: Any, right: Any) -> int:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateTooLarge("the product is too large a number")
        return 0
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, str | bytes | list | tuple) and isinstance(times, int):
            return weight(sequence) * max(times, 0)
    return 0


# -- Filters: every one weighed after; the ones that can build much, estimated before


def _size_of_text(value: Any, *_: Any, **__: Any) -> int:
    """What a filter that makes its value text (then maybe shortens it) would build."""
    return weight(value)


def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    per_line = len(width) if isinstance(width, str) else int(width)
    lines = s.count("\n") + 1 if isinstance(s, str) else weight(s)
    return weight(s) + lines * max(per_line, 0)


def _center_size(value: Any, width: Any = 80) -> int:
    return max(int(width), weight(value))


def _wordwrap_size(
    s: Any, width: Any = 79, _breaks: Any = True, wrapstring: Any = None, *_: Any, **__: Any
) -> int:
    size = weight(s)
    lines = s.count("\n") + 1 if isinstance(s, str) else size
    return size + (size // max(int(width), 1) + lines) * weight(wrapstring or "\n")


def _join_filter_size(value: Any, d: Any = "", *_: Any, **__: Any) -> int:
    return _join_size(value, weight(d))


def _replace_filter_size(s: Any, old: Any, new: Any, count: Any = None) -> int:
    if isinstance(s, str):
        return _replace_size(s, old, new, -1 if count is None else count)
    # Made text first: as many replacements as its weight allows, at most.
    size = weight(s)
    found = size // len(old) if isinstance(old, str) and old else size + 1
    return size + found * max(weight(new) - weight(old), 0)


def _format_filter_size(value: Any, *args: Any, **kwargs: Any) -> int:
    if not isinstance(value, str):
        return weight(value)
    return _percent_size(value, kwargs or args)


def _sum_size(iterable: Any, _attribute: Any = None, start: Any = 0, **__: Any) -> int:
    if isinstance(start, int | float):
        return 0
    return weight(start) + weight(iterable)


def _batch_size(value: Any, linecount: Any, fill_with: Any = None) -> int:
    padding = int(linecount) * _item_weight(fill_with) if fill_with is not None else 0
    return list_size(value) + padding


def _slice_size(value: Any, slices: Any, fill_with: Any = None) -> int:
    return list_size(value) + int(slices) * (BRACKETS + SEPARATOR + _item_weight(fill_with))


def _spread_size(value: Any, *_: Any, **__: Any) -> int:
    """What a filter that makes a list of its value's items (sorted, grouped) would build."""
    return list_size(value)


def _tojson_size(value: Any, indent: Any = None) -> int:
    if indent is not None and int(indent) > 64:
        raise TemplateTooLarge("tojson's indent is at most 64")
    return _layout_weight(value, int(indent)) if indent else weight(value)


def _pprint_size(value: Any) -> int:
    return _layout_weight(value, 1)


def _escape_size(value: Any) -> int:
    return weight(value) if hasattr(value, "__html__") else escaped_size(value)


def _urlencode_size(value: Any) -> int:
    if isinstance(value, str | bytes) or not isinstance(value, Iterable):
        return _quoted_size(value, b"/")
    items = value.items() if isinstance(value, dict) else value
    size = 0
    for pair in items:
        if isinstance(pair, tuple | list) and len(pair) == 2:
            size += _quoted_size(pair[0]) + _quoted_size(pair[1]) + 2
        else:
            size += 3 * weight(pair)
        if size > MAX_RENDERED_CHARS:
            break
    return size


def _xmlattr_size(d: Any, *_: Any, **__: Any) -> int:
    if not isinstance(d, dict):
        return weight(d)
    return sum(weight(k) + escaped_size(v) + 4 for k, v in d.items())


def _urlize_size(
    value: Any,
    _limit: Any = None,
    _nofollow: Any = False,
    target: Any = None,
    rel: Any = None,
    *_: Any,
    **__: Any,
) -> int:
    # A link repeats its address inside markup (a few times its length at most, weighed once
    # built); a `target` or `rel` given goes in every link, one every four characters at most.
    size = weight(value)
    return size + (size // 4 + 1) * sum(weight(a) for a in (target, rel) if a is not None)


FILTER_SIZES: dict[str, Callable[..., int]] = {
    "center": _center_size,
    "indent": _indent_size,
    "wordwrap": _wordwrap_size,
    "join": _join_filter_size,
    "replace": _replace_filter_size,
    "format": _format_filter_size,
    "list": list_size,
    "sort": _spread_size,
    "groupby": _spread_size,
    "sum": _sum_size,
    "batch": _batch_size,
    "slice": _slice_size,
    "tojson": _tojson_size,
    "pprint": _pprint_size,
    "e": _escape_size,
    "escape": _escape_size,
    "forceescape": escaped_size,
    "urlencode": _urlencode_size,
    "xmlattr": _xmlattr_size,
    "urlize": _urlize_size,
    **dict.fromkeys(
        ("string", "safe", "upper", "lower", "capitalize", "title", "trim", "striptags"),
        _size_of_text,
    ),
    **dict.fromkeys(("truncate", "wordcount"), _size_of_text),
}
# Filters that return something their value already holds.
SELECTING_FILTERS = frozenset({"first", "last", "random", "min", "max", "attr", "default", "d"})
# Lazy filters that make new lists as they go: what they yield is weighed (see ``built``).
# Other lazy filters (map, select, unique, items...) yield what their value holds, or what
# a filter built and weighed, except from a string: each of its characters is a new object.
LISTING_FILTERS = frozenset({"batch", "slice"})
