"""What template values weigh, and what template operations would build: the size limits
of ``activities/_templates.py``, which calls them from its hooks into Jinja.

The invariant they keep:

- every value has a *weight* (``weight``), about the length of its text: a string's length,
  a number's digits, and for a list, tuple, set, dict or namespace its items' weights (keys
  too, an item as often as it occurs) with the quotes and separators its text adds. What a
  template can reach inside another object is part of that object's weight: a cycler's
  items, a joiner's separator, a loop's items, the secrets; an object of any other kind
  (not a date, a range, a function, an iterator, a macro...) weighs more than the limit;
- every value a template builds weighs at most ``MAX_RENDERED_CHARS``, whatever builds it
  (``built``): it is weighed as soon as it is built, and refused then. A slice is built
  too (``sliced``). A list, dict or set that a method grows is weighed with its growth
  before it grows (``grow``), and so is every list, dict or set a method grew that holds
  it, however deep (``Budget.grown``, kept exact as what they hold grows: ``_ancestors``);
- what could build far more than it is given is estimated from its arguments and refused
  *before* it runs (``refuse``, ``before_call``, ``operated``, ``FILTER_SIZES``): padding and
  repetition, replacement, joining, ``%`` formatting field by field (``_percent_size``),
  ``str.format`` field by field as it formats (``field_size``, from the formatter of
  ``_templates.py``), ``strftime``, ``int.to_bytes``, escaping, encoding, quoting,
  splitting, indenting, wrapping, and making any value text. The estimate is exact where
  that is cheap (a repetition, an escape, a hex dump); where it is not (the text of a list
  whose strings need escapes, JSON's ``\\u`` escapes, a case conversion, UTF-8) it is the
  weight, and the step builds at most about a dozen times that before its result is
  weighed;
- what a lazy filter yields is weighed as it comes (all it yields weighs at most the
  limit) when it makes new lists (``batch``, ``slice``) or reads a string; other lazy
  filters yield what their value holds, or what a filter built and weighed (``map``), each
  item a step;
- two values are compared (``==``, ``<``, ``in``, sorting, the tests) only when one of
  them weighs at most the limit (``comparable``, ``contained``): a comparison takes at most
  about as long as reading the lighter one;
- everything one config's templates build and output together weighs at most
  ``MAX_RENDER_TOTAL`` (``spend``: characters of text, items of containers, and what a
  method adds to a list, dict or set). Loop iterations, calls, filter and test calls and
  the items filters go through count as steps (``step``, at most ``MAX_RENDER_STEPS``) and
  weighing counts the items it visits (at most ``MAX_WEIGHED``): they bound the time
  rendering takes.
"""

from __future__ import annotations

import codecs
import functools
import operator
import re
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
from datetime import date, time, timedelta, tzinfo
from typing import Any, TypeVar, cast

from jinja2 import TemplateError
from jinja2.runtime import BlockReference, LoopContext, Macro, TemplateReference, Undefined
from jinja2.utils import Cycler, Joiner, Namespace
from markupsafe import Markup

MAX_RENDERED_CHARS = 1024 * 1024
MAX_RENDER_TOTAL = 8 * 1024 * 1024
# Loop iterations, calls, filter and test calls, and the items filters go through, together,
# in all of one config's templates: what bounds their time.
MAX_RENDER_STEPS = 1_000_000
# Items visited to weigh values, in all of one config's templates: what bounds weighing's time.
MAX_WEIGHED = 10_000_000
# Integers are for arithmetic: beyond this many bits, they are refused.
MAX_INT_BITS = 64 * 1024
# What keeps grown containers' weights exact (see ``Budget``): at most this many links from
# a list, dict, set or namespace to the grown containers that hold it. Past it, a grown
# container is weighed again each time it grows.
MAX_LINKS = 100_000
# At most this many grown containers hold one list, dict, set or namespace with a known weight
# (each is updated when it grows); a container grown to hold it beyond that is weighed again
# each time it grows.
MAX_HOLDERS = 16

# What an item adds to its container's text: quotes around a string, ", " after any item
# (and ": " after a key); what a container's brackets add.
QUOTES = 2
SEPARATOR = 2
BRACKETS = 2
# The text of a float, a date, a macro, a cycler...: at most about this long.
FLOAT_WEIGHT = 24
OTHER_WEIGHT = 80
# The weight of what a template could reach nothing of, or too much: over every limit.
HEAVY = 1 << 40
# What weighs its length; what weighs little (an integer is at most MAX_INT_BITS).
TEXT = (str, bytes)
NUMBERS = frozenset({int, float, bool, type(None)})
# Compared or looked for in constant time or in one pass over them.
_SHALLOW = frozenset({str, bytes, Markup, int, float, bool, type(None)})
# What finds an item by its hash, or searches text.
_HASHED = (str, bytes, dict, set, frozenset, range, KeysView, ItemsView)
# The containers ``_walk`` looks into (their subclasses too, found more slowly); those of
# them that methods change; dict views.
_CONTAINERS = frozenset({list, tuple, dict, set, frozenset})
_CONTAINER_TYPES = (list, tuple, set, frozenset, dict)
_MUTABLE_TYPES = (list, dict, set)
_VIEWS = (KeysView, ValuesView, ItemsView)
# What is surely not an iterator (told apart without the slower ABC check).
_PLAIN = frozenset({str, bytes, Markup, list, tuple, dict, int, float, bool, type(None)})
# What templates reach that is text of its own, short (``OTHER_WEIGHT``) and holds nothing.
_SMALL: tuple[type, ...] = (date, time, timedelta, tzinfo, range, Undefined, Macro)
_SMALL += (BlockReference, TemplateReference)
# How many results of ``+`` keep their weight known (see ``Budget``).
RECENT_RESULTS = 4
# strftime pads a field as wide as asked; Python stops it at 256 times the format's length.
STRFTIME_GROWTH = 256
# The most characters one character can become: "\N{...}" (namereplace), "\U0010ffff"...
NAME_ESCAPE_GROWTH = 92
ESCAPE_GROWTH = 10
# The longest text of a float formatted with "f" (1e308 has 309 digits) or "e"/"g", and its
# sign, point, exponent and thousands separators; a precision adds as many digits.
FLOAT_DIGITS = 420
# What |urlize makes a link of (besides "://", "www." and "@"), and the markup it adds.
URLIZE_DOMAINS = (".com", ".net", ".int", ".edu", ".gov", ".org", ".info", ".mil")
URLIZE_MARKUP = len('<a href="https://" rel="nofollow noopener" target=""></a>')
# What HTML escaping adds for each of these characters.
HTML_ESCAPE_GROWTH = {"&": 4, "<": 3, ">": 3, '"': 4, "'": 4}
# What str.split() and str.splitlines() split at (bytes: the ASCII ones, and \n \r).
SPACES = "\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005"
SPACES += "\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
LINE_BREAKS = "\n\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029"
# The bytes url quoting leaves alone (the rest become %XX).
URL_SAFE = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~"
# A format spec of str.format: [[fill]align][sign][z][#][0][width][grouping][.precision][type]
FORMAT_SPEC = re.compile(r"(?:.?[<>=^])?[-+ ]?z?#?0?(\d*)[,_]?(?:\.(\d+))?([a-zA-Z%]?)\Z", re.S)
_DIGITS = re.compile(r"\d*")

_T = TypeVar("_T")


class TemplateTooLarge(TemplateError):
    """A template would build or produce more than rendering allows."""


@dataclass(eq=False)
class Tracked:
    """A list, dict or set a method grew: its weight, kept exact (see ``Budget.grown``)."""

    value: Any
    size: int
    # Whether it holds only strings and integers: then nothing but its own methods changes it.
    flat: bool


@dataclass
class Budget:
    """What one config's templates may still build, do and weigh (see ``budgeted``)."""

    left: int = MAX_RENDER_TOTAL
    steps: int = MAX_RENDER_STEPS
    weighed: int = MAX_WEIGHED
    # Lists, dicts and sets that methods grew, by id: their weight, kept exact as they grow,
    # and as what they hold grows (growing one in a loop does not weigh it again).
    grown: dict[int, Tracked] = field(default_factory=dict)
    # For each list, dict, set or namespace inside grown containers (by id): itself, then
    # the entries of those that hold it, each followed by how many times (counting every
    # path); an entry no longer in ``grown`` was dropped (weighed anew, linked anew). When it
    # grows, they grow as much, times that; when it shrinks, they are weighed anew.
    holders: dict[int, list[Any]] = field(default_factory=dict)
    links: int = 0
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


def step(count: int = 1) -> None:
    """Count ``count`` steps: a loop iteration, a call, the items a filter goes through."""
    budget = _budget.get()
    if budget is not None:
        budget.steps -= count
        if budget.steps < 0:
            raise TemplateTooLarge(
                f"the templates take more than {MAX_RENDER_STEPS} loop iterations and calls "
                "(filter and test calls, and the items filters go through, count too)"
            )


def _weighed(items: int) -> None:
    budget = _budget.get()
    if budget is not None:
        budget.weighed -= items
        if budget.weighed < 0:
            raise TemplateTooLarge(
                f"the templates weigh more than {MAX_WEIGHED} items while rendering; simplify them"
            )


# -- Steps


class Counted:
    """A loop's items, each a step."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self.iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        for item in self.iterable:
            step()
            yield item


class CountedSized(Counted):
    """A loop's items, each a step, as many as its iterable's: ``loop.length`` need not read
    them all ahead (a long string read ahead makes an object of each character)."""

    def __init__(self, iterable: Sized) -> None:
        super().__init__(iterable)  # type: ignore[arg-type]
        self._length = len(iterable)

    def __len__(self) -> int:
        return self._length


def counted(iterable: Iterable[Any]) -> Counted:
    """``iterable``'s items, each a step (a loop's, a recursive loop's children)."""
    return CountedSized(iterable) if isinstance(iterable, Sized) else Counted(iterable)


def stepped(items: Iterator[_T]) -> Iterator[_T]:
    """What a lazy filter yields, each item a step."""
    for item in items:
        step()
        yield item


# -- Weights


def _digits(number: int) -> int:
    """At least the digits (and sign) of ``number``, without making its text."""
    return (number.bit_length() * 78 >> 8) + 1 + (number < 0)


def weight(value: Any, cap: int = MAX_RENDERED_CHARS) -> int:
    """About the length of ``value``'s text, never making it: strings and bytes count their
    length, numbers their digits, containers their items (each as often as it occurs) with
    quotes and separators, other objects what a template can reach inside them. Counting
    stops past ``cap`` (the result is then over ``cap``)."""
    kind = type(value)
    if kind is str or kind is bytes or kind is Markup:
        return len(value)
    if kind is int:
        return _digits(value)
    if kind is float or kind is bool or value is None:
        return FLOAT_WEIGHT
    return _walk(value, cap)[0]


def _item_weight(value: Any, found: dict[int, tuple[Any, int]] | None = None) -> int:
    """What ``value`` adds to the text of a container that holds it (the lists, dicts, sets
    and namespaces it is or holds put in ``found``, if given: see ``_walk``)."""
    quotes = QUOTES if isinstance(value, TEXT) else 0
    if found is None or type(value) in _SHALLOW:
        return weight(value) + quotes + SEPARATOR
    return _walk(value, MAX_RENDERED_CHARS, found)[0] + quotes + SEPARATOR


# What a template can reach inside objects of these kinds: weighed as part of them.
_REACHABLE: dict[type, Callable[[Any], Any]] = {
    Cycler: lambda cycler: cycler.items,
    Joiner: lambda joiner: joiner.sep,
}
# The key, in what ``_walk`` finds, of a value whose weight can change with no method of its
# own called (a dict's view): what holds it cannot keep a known weight.
_VOLATILE = -1


def reachable(kind: type, reach: Callable[[Any], Any]) -> None:
    """Weigh objects of ``kind`` as what ``reach`` gives of them (what templates can reach)."""
    _REACHABLE[kind] = reach


def _walk(
    value: Any, cap: int, found: dict[int, tuple[Any, int]] | None = None
) -> tuple[int, bool]:
    """``value``'s weight (counted up to just past ``cap``), and whether it is a list, tuple,
    set or dict of strings and integers only (a flat one: see ``Budget``). With ``found``,
    each list, dict, set and namespace met (``value`` too) is put there, by id, with how
    many times it was met."""
    budget = _budget.get()
    known = budget.flat if budget is not None else None
    total, visited, stack = -SEPARATOR, 0, [value]  # no separator after the value itself
    flat: bool | None = None  # known once the value itself is looked at
    while stack and total <= cap:
        item = stack.pop()
        visited += 1
        if type(item) in _CONTAINERS or isinstance(item, _CONTAINER_TYPES):
            if found is not None and isinstance(item, _MUTABLE_TYPES):
                _meet(found, item)
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
            if found is not None:
                if isinstance(item, Namespace):
                    _meet(found, item)
                elif isinstance(item, _VIEWS):
                    found[_VOLATILE] = (None, 1)
            total += _scalar_weight(item, stack) + SEPARATOR
        if flat is None:
            flat = not stack and isinstance(value, _CONTAINER_TYPES)
    _weighed(visited)
    return min(total, cap + 1), bool(flat)


def _meet(found: dict[int, tuple[Any, int]], item: Any) -> None:
    met = found.get(id(item))
    found[id(item)] = (item, 1 if met is None else met[1] + 1)


def _scalar_weight(item: Any, stack: list[Any]) -> int:
    """The weight of anything but a list, tuple, set or dict (what it holds, that a template
    can reach, goes on ``stack``)."""
    if isinstance(item, TEXT):
        return len(item) + QUOTES
    if isinstance(item, float | bool) or item is None:
        return FLOAT_WEIGHT
    if isinstance(item, int):
        return _digits(item)
    reach = _REACHABLE.get(type(item))
    if reach is not None:
        stack.append(reach(item))
        return OTHER_WEIGHT
    if isinstance(item, KeysView | ValuesView | ItemsView):
        stack.append(list(item))
        return len("dict_items()")
    if isinstance(item, Namespace):
        stack.append(object.__getattribute__(item, "_Namespace__attrs"))
        return len("<Namespace >")
    if isinstance(item, LoopContext):
        # It reaches its iterable's items (previtem, nextitem...), as the loop goes on. An
        # iterator's are not known ahead.
        source = item._iterable
        if not isinstance(source, CountedSized):
            return HEAVY
        stack.append(source.iterable)
        return OTHER_WEIGHT
    if isinstance(item, _SMALL) or callable(item) or isinstance(item, Iterator):
        # Short text; an iterator's items are weighed by whatever reads them.
        return OTHER_WEIGHT
    return HEAVY


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
    if isinstance(value, Cycler):
        return len(value.items)
    return 0


def _metered(items: Iterator[Any], what: str) -> Iterator[Any]:
    """``items``, each weighed as it comes (and a step): together they weigh at most the
    limit."""
    total = BRACKETS
    for item in items:
        step()
        total += _item_weight(item)
        refuse(total, what)
        yield item


def sliced(value: Any, index: slice) -> Any:
    """``value[index]`` (``a[i:j]`` in a template): a slice of text refused before it is
    built, any slice weighed once built."""
    if isinstance(value, TEXT):
        start, stop, stride = index.indices(len(value))
        refuse(len(range(start, stop, stride)), "a slice")
    return built(value[index], "a slice", value)


# -- Comparisons: what takes as long as the values compared


def comparable(left: Any, right: Any) -> None:
    """Refuse to compare (``==``, ``<``...) two values that both weigh over the limit: a
    comparison reads at most about the lighter one."""
    if type(left) in _SHALLOW or type(right) in _SHALLOW:
        return  # a string, a number: one pass over it at most
    if weight(left) <= MAX_RENDERED_CHARS or weight(right) <= MAX_RENDERED_CHARS:
        return
    raise TemplateTooLarge(
        f"the template would compare two values of more than {MAX_RENDERED_CHARS} characters each"
    )


def contained(item: Any, values: Any) -> None:
    """Refuse to look for ``item`` in ``values`` (``in``, ``list.index``...) when that could
    read more than the limit: each of ``values`` compared with a heavy ``item``."""
    if type(item) in _SHALLOW or isinstance(values, _HASHED):
        return  # one comparison per element at most as long as the element; or a hash
    heavy = weight(item)
    if not isinstance(values, Sized):
        if heavy <= MAX_RENDERED_CHARS:
            return  # an iterator: each item it yields is a step
    elif heavy * len(values) <= MAX_RENDERED_CHARS or weight(values) <= MAX_RENDERED_CHARS:
        return
    raise TemplateTooLarge(
        f"the template would look for a value of {heavy} characters in values of more than "
        f"{MAX_RENDERED_CHARS} characters"
    )


_COMPARISONS: dict[str, Callable[[Any, Any], Any]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "lt": operator.lt,
    "lteq": operator.le,
    "gt": operator.gt,
    "gteq": operator.ge,
}


def compared(operation: str, left: Any, right: Any) -> Any:
    """``left <operation> right``, a template's comparison (Jinja's names: eq, lt, in, notin...),
    refused when it could read more than the limit."""
    if operation == "in" or operation == "notin":
        contained(left, right)
        return (left in right) is (operation == "in")
    comparable(left, right)
    return _COMPARISONS[operation](left, right)


def compared_chain(first: Any, *rest: Any) -> Any:
    """``a < b < c``: ``rest`` alternates operations and functions giving the next operand
    (evaluated only when needed, once, as Python does)."""
    left, result = first, True
    for index in range(0, len(rest), 2):
        right = rest[index + 1]()
        result = compared(rest[index], left, right)
        if not result:
            return result
        left = right
    return result


# -- Estimates: what an operation would build, known from its arguments before it runs


def _percent_size(text: str | bytes, args: Any, escaping: bool = False) -> int:
    """An upper bound of ``text % args``, field by field as Python reads them (a key in
    parentheses, flags, a width and a precision, ``*`` taken from the arguments): each field
    as long as its value's text, padded to its width; ``escaping`` (``Markup % args``) HTML
    escapes the values. Counting stops where Python would fail, or past the limit."""
    pattern = text if isinstance(text, str) else text.decode("latin-1")
    if "%" not in pattern:
        return len(text)
    positional = args if isinstance(args, tuple) else (args,)
    keyed = not isinstance(args, tuple | str | bytes) and hasattr(type(args), "__getitem__")
    size, taken, pos, end, fields = len(pattern), 0, 0, len(pattern), 0
    while size <= MAX_RENDERED_CHARS and (pos := pattern.find("%", pos) + 1) > 0:
        fields += 1
        value: Any = None
        found = False
        if pattern.startswith("(", pos):
            # The key ends at the ")" that balances its "(" (Python counts nested ones).
            depth, key_start, pos = 1, pos + 1, pos + 1
            while depth and (close := pattern.find(")", pos)) != -1:
                depth += pattern.count("(", pos, close) - 1
                pos = close + 1
            if depth or not keyed:
                break  # "incomplete format key", "format requires a mapping"
            key = pattern[key_start : pos - 1]
            if isinstance(args, dict):
                if key not in args:
                    break  # KeyError
                value = args[key]
            else:
                value = args  # another mapping: what it holds, at most
            found = True
        while pattern.startswith(("-", "+", " ", "#", "0"), pos):
            pos += 1
        width, precision = 0, None
        if pattern.startswith("*", pos):
            pos += 1
            if taken >= len(positional) or not isinstance(positional[taken], int):
                break
            width, taken = abs(positional[taken]), taken + 1
        else:
            digits = _DIGITS.match(pattern, pos).group()  # type: ignore[union-attr]
            pos += len(digits)
            width = int(digits or 0) if len(digits) < 20 else HEAVY
        if pattern.startswith(".", pos):
            pos += 1
            if pattern.startswith("*", pos):
                pos += 1
                if taken >= len(positional) or not isinstance(positional[taken], int):
                    break
                precision, taken = max(positional[taken], 0), taken + 1
            else:
                digits = _DIGITS.match(pattern, pos).group()  # type: ignore[union-attr]
                pos += len(digits)
                precision = int(digits or 0) if len(digits) < 20 else HEAVY
        if pattern.startswith(("h", "l", "L"), pos):
            pos += 1
        if pos >= end:
            break
        conversion, pos = pattern[pos], pos + 1
        if conversion == "%" and pattern[pos - 2] == "%":
            continue  # "%%"
        if not found:
            if taken >= len(positional):
                break  # "not enough arguments"
            value, taken = positional[taken], taken + 1
        size += max(width, _conversion_size(conversion, value, precision, escaping))
    step(fields)  # each field read here, in Python
    return size


def _conversion_size(conversion: str, value: Any, precision: int | None, escaping: bool) -> int:
    """The text of ``value`` converted by ``%<conversion>`` with that precision (unpadded)."""
    if conversion in "sbra":
        if conversion in "ra":
            size = repr_size(value)
        elif isinstance(value, TEXT):
            html = escaping and not hasattr(value, "__html__")
            size = escaped_size(value) if html else len(value)
        else:
            size = weight(value)
        return size if precision is None else min(size, precision)
    if conversion in "diuoxX":
        digits = _number_digits(value)
        return max(digits, precision or 0) + 3
    if conversion in "eEfFgG":
        return FLOAT_DIGITS + (6 if precision is None else precision)
    return 1  # %c, or what Python refuses


def _number_digits(value: Any) -> int:
    """The digits of ``value`` as an integer in any base (octal's are the most)."""
    if isinstance(value, int):
        return max(_digits(value), value.bit_length() // 3 + 1)
    return FLOAT_DIGITS if isinstance(value, float) else weight(value)


def repr_size(value: Any) -> int:
    """About the length of ``repr(value)`` (or ``ascii``): a string's escapes counted."""
    if isinstance(value, str):
        if value.isascii() and value.isprintable():
            return len(value) + QUOTES + value.count("\\") + value.count("'")
        return ESCAPE_GROWTH * len(value) + QUOTES
    if isinstance(value, bytes):
        return 4 * len(value) + QUOTES + 1
    return weight(value)


def converted_size(value: Any, conversion: str) -> int:
    """The text ``str.format`` makes of a field's value for ``!s``, ``!r`` or ``!a``."""
    return weight(value) if conversion == "s" else repr_size(value)


def field_size(value: Any, spec: str) -> int:
    """The text ``format(value, spec)`` would make (``str.format``'s field, its nested
    fields filled in): the value's text, cut to a string's precision or with a number's
    digits, padded to the width; a date's strftime format at its longest."""
    if isinstance(value, date | time):
        return STRFTIME_GROWTH * len(spec) if spec else OTHER_WEIGHT
    if not spec:
        return weight(value)
    match = FORMAT_SPEC.match(spec)
    if match is None:  # Python refuses it, for all but dates
        numbers = [int(n) if len(n) < 20 else HEAVY for n in re.findall(r"\d+", spec)]
        return weight(value) + sum(numbers)
    width_digits, precision_digits, kind = match.groups()
    width = int(width_digits or 0) if len(width_digits) < 20 else HEAVY
    precision = None
    if precision_digits is not None:
        precision = int(precision_digits) if len(precision_digits) < 20 else HEAVY
    if isinstance(value, str):
        size = len(value) if precision is None else min(len(value), precision)
    elif isinstance(value, float) or (isinstance(value, int) and kind and kind in "eEfFgG%"):
        size = FLOAT_DIGITS + (6 if precision is None else precision)
    elif isinstance(value, int):
        size = _number_digits(value) * 4 // 3 + 5  # thousands separators, a sign, "0x"...
    else:
        size = weight(value)
    return max(width, size)


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    # Markup's replace escapes what it puts in.
    added = escaped_size(new) if isinstance(text, Markup) else len(new)
    return len(text) + found * max(added - len(old), 0)


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


def join_size(items: Any, separator: int, escaping: bool = False) -> int:
    """``items`` joined with a separator of that length (items made text if they are not;
    a string's characters read one by one, each its own object); ``escaping``
    (``Markup.join``) HTML escapes them."""
    if isinstance(items, str):
        return len(items) * (1 + max(separator, QUOTES + SEPARATOR))
    if isinstance(items, dict):
        items = items.keys()
    count, total = 0, 0
    for item in items:
        count += 1
        total += escaped_size(item) if escaping and not hasattr(item, "__html__") else weight(item)
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
        return join_size(first, len(owner), isinstance(owner, Markup))
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
    if name == "encode":
        encoding = kwargs.get("encoding", args[0] if args else "utf-8")
        errors = kwargs.get("errors", args[1] if len(args) > 1 else "strict")
        return _encoded_size(owner, encoding, errors)
    return 0


# The methods ``_call_size`` estimates (the others build at most a few times their inputs;
# ``str.format`` and ``format_map`` are weighed field by field as they format).
_ESTIMATED_METHODS = frozenset(
    {
        *("ljust", "rjust", "center", "zfill", "expandtabs", "replace", "join", "translate"),
        *("split", "rsplit", "splitlines", "encode", "hex", "decode"),
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
    if name in _SEARCHING and args and isinstance(owner, list | tuple):
        contained(args[0], owner)
    elif name == "changed" and isinstance(owner, LoopContext):
        comparable(args, args)  # compared with the previous call's values
    return args


def after_call(
    result: Any, owner: Any, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """``result`` of a template's call (see ``before_call``), weighed."""
    if name in _SELECTING and owner is not None:
        return result
    return built(result, _result_of(name), owner, *args, *kwargs.values())


# Methods of lists and tuples that compare their argument with each item.
_SEARCHING = frozenset({"index", "count", "remove"})


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
# Methods that only reorder: what their list weighs and holds stays as it was.
_REORDERING = frozenset({"sort", "reverse"})
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
    found: dict[int, tuple[Any, int]],
) -> tuple[list[Any], int, bool, tuple[Any, ...], dict[str, Any]]:
    """What a growing method adds to ``owner``: the new items (a dict's keys and values),
    their weight net of what they replace (the lists, dicts, sets and namespaces they are or
    hold put in ``found``), whether they replace a value that could hold any, and the
    arguments to call it with (what it would read from an iterator, read first to be
    weighed)."""
    for group in args if name in ("extend", "update", "symmetric_difference_update") else ():
        refuse(list_size(group), f"the items to add to a {type(owner).__name__}")
    if isinstance(owner, list):
        if name == "extend" and args:
            args = (list(args[0]),)
            new = args[0]
        else:
            new = list(args[-1:])  # append(x), insert(i, x)
        return new, sum(_item_weight(x, found) for x in new), False, args, kwargs
    if isinstance(owner, dict):
        if name == "setdefault":
            key = args[0] if args else None
            pairs = {} if key in owner else {key: args[1] if len(args) > 1 else None}
        else:
            pairs = dict(*args, **kwargs)
            args, kwargs = (pairs,), {}
        gain, replaced = 0, False
        for key, value in pairs.items():
            if key in owner:
                old = owner[key]
                replaced = replaced or type(old) not in _SHALLOW
                gain -= _item_weight(old)
            else:
                gain += _item_weight(key, found)
            gain += _item_weight(value, found)
        return [*pairs, *pairs.values()], gain, replaced, args, kwargs
    if name == "add":
        new = list(args[:1])
    else:
        new = [x for group in args for x in group]
        args = (new,)
    gain = sum(_item_weight(x, found) for x in new if x not in owner)
    return new, gain, False, args, kwargs


def grow(
    owner: list[Any] | dict[Any, Any] | set[Any],
    name: str,
    args: tuple[Any, ...],
    kwargs: dict[str, Any],
    call: Callable[..., Any],
) -> Any:
    """``call(*args, **kwargs)``, the method ``name`` that adds to ``owner`` (see ``grows``),
    refused when ``owner``, or a grown list, dict or set that holds it, would then weigh over
    the limit. What it adds is weighed, not ``owner`` again: growing a list in a loop stays
    linear, and so does growing lists held in a dict (their holders' weights follow)."""
    budget = _budget.get()
    entry = _tracked(owner)
    holders = _ancestors(owner) if budget is not None and id(owner) in budget.holders else []
    found: dict[int, tuple[Any, int]] = {}
    new, gain, replaced, args, kwargs = _additions(owner, name, args, kwargs, found)
    if entry.size + gain > MAX_RENDERED_CHARS:
        refuse(entry.size + gain, f"a {type(owner).__name__}")
    for holder, times in holders:
        refuse(holder.size + times * gain, f"a {type(holder.value).__name__} that holds it")
    spend(gain if gain > len(new) else len(new))
    result = call(*args, **kwargs)
    entry.size += gain
    if entry.flat:
        entry.flat = all(type(item) in _SCALARS for item in new)
    for holder, times in holders:
        holder.size += times * gain
    if budget is not None and budget.grown.get(id(owner)) is entry:
        if entry.flat:
            budget.flat[id(owner)] = (owner, entry.size)
        else:
            budget.flat.pop(id(owner), None)
        holders.append((entry, 1))
    if replaced or not _link(found, holders):
        forget(owner)
    return result


def assigned(namespace: Namespace, name: str, value: Any) -> None:
    """Before ``{% set namespace.name = value %}``: the value is weighed, and so is every
    grown list, dict or set that holds the namespace, with the value in it."""
    refuse(weight(value), f"a namespace attribute ({name})")
    holders = _ancestors(namespace)
    if not holders:
        return
    attributes = object.__getattribute__(namespace, "_Namespace__attrs")
    found: dict[int, tuple[Any, int]] = {}
    gain = _item_weight(value, found)
    if name in attributes:
        gain -= _item_weight(attributes[name])
    else:
        gain += _item_weight(name)
    for holder, times in holders:
        refuse(holder.size + times * gain, f"a {type(holder.value).__name__} that holds it")
    for holder, times in holders:
        holder.size += times * gain
    if type(attributes.get(name)) not in _SHALLOW or not _link(found, holders):
        forget(namespace)


def _tracked(owner: Any) -> Tracked:
    """``owner``'s entry in ``Budget.grown`` (weighed, and what it holds linked to it, the
    first time); a new entry, not kept, when it cannot be kept exact."""
    budget = _budget.get()
    if budget is not None:
        entry = budget.grown.get(id(owner))
        if entry is not None and entry.value is owner:
            return entry
    found: dict[int, tuple[Any, int]] = {}
    size, flat = _walk(owner, MAX_RENDERED_CHARS, found)
    entry = Tracked(owner, size, flat)
    found.pop(id(owner), None)
    if budget is None or size > MAX_RENDERED_CHARS or _VOLATILE in found:
        return entry
    if _link(found, [(entry, 1)]):
        budget.grown[id(owner)] = entry
        if flat:
            budget.flat[id(owner)] = (owner, size)
    return entry


def _link(found: dict[int, tuple[Any, int]], holders: list[tuple[Tracked, int]]) -> bool:
    """Link each list, dict, set and namespace ``found`` inside them to ``holders`` (each
    holding it that many times over); False when there would be too many links (in all, or
    to one of them), or what was found can change unseen (a dict's view)."""
    budget = _budget.get()
    if budget is None or not found or not holders:
        return budget is not None
    links = len(found) * len(holders)
    if _VOLATILE in found or budget.links + links > MAX_LINKS:
        return False
    budget.links += links
    budget.weighed -= links  # checked by the next weighing
    for key, (item, times) in found.items():
        held = budget.holders.get(key)
        if held is None or held[0] is not item:
            if len(holders) == 1:  # the most frequent: kept short
                budget.holders[key] = [item, holders[0][0], times * holders[0][1]]
                continue
            held = budget.holders[key] = [item]
        elif len(held) // 2 + len(holders) > MAX_HOLDERS:
            _ancestors(item)  # leaves only the holders still grown, once each
            if len(held) // 2 + len(holders) > MAX_HOLDERS:
                return False
        for holder, multiple in holders:
            held += (holder, times * multiple)
    return True


def _ancestors(value: Any) -> list[tuple[Tracked, int]]:
    """The grown containers that hold ``value`` (however deep), each with how many times."""
    budget = _budget.get()
    held = budget.holders.get(id(value)) if budget is not None else None
    if budget is None or held is None or held[0] is not value:
        return []
    _weighed(len(held))
    merged: dict[int, list[Any]] = {}
    for index in range(1, len(held), 2):
        entry: Tracked = held[index]
        if budget.grown.get(id(entry.value)) is entry:
            known = merged.get(id(entry))
            if known is None:
                merged[id(entry)] = [entry, held[index + 1]]
            else:
                known[1] += held[index + 1]
    if len(merged) < len(held) // 2:  # linked more than once, or dropped since
        held[1:] = [part for pair in merged.values() for part in pair]
    return [(entry, times) for entry, times in merged.values()]


def forget(owner: Any, name: str = "") -> None:
    """``owner`` changed other than by growing (``pop``, ``remove``...): weigh it, and what
    holds it, again when they next grow (reordering, ``sort``, changes nothing)."""
    budget = _budget.get()
    if budget is None or name in _REORDERING:
        return
    for holder, _ in _ancestors(owner):
        _drop(budget, holder.value)
    _drop(budget, owner)


def _drop(budget: Budget, owner: Any) -> None:
    entry = budget.grown.get(id(owner))
    if entry is not None and entry.value is owner:
        del budget.grown[id(owner)]
    known = budget.flat.get(id(owner))
    if known is not None and known[0] is owner:
        del budget.flat[id(owner)]


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
        return _percent_size(left, right, isinstance(left, Markup))
    if operator == "+" and not isinstance(left, int | float):
        # Markup escapes what is added to it.
        if isinstance(left, Markup) and not hasattr(right, "__html__"):
            return len(left) + escaped_size(right)
        if isinstance(right, Markup) and not hasattr(left, "__html__"):
            return escaped_size(left) + len(right)
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


def _lines(text: Any) -> int:
    """How many lines ``str.splitlines`` finds in ``text``, at most (each break counted)."""
    if not isinstance(text, str):
        return weight(text) + 1
    breaks = text.count("\n") + text.count("\r")
    if not text.isascii() or "\x0b" in text or "\x0c" in text or "\x1c" in text:
        breaks += sum(text.count(mark) for mark in LINE_BREAKS[2:])
    return breaks + 1


def _words(text: Any) -> int:
    """About how many words ``text`` has (what filters reading it word by word loop over)."""
    if not isinstance(text, str):
        return 1
    return text.count(" ") + text.count("\n") + text.count("\t") + text.count("-") + 1


def _indent_size(s: Any, width: Any = 4, *_: Any, **__: Any) -> int:
    # Every line (as splitlines finds them, and one more) starts with a newline and the indent.
    per_line = len(width) if isinstance(width, str) else int(width)
    return weight(s) + (_lines(s) + 1) * (max(per_line, 0) + 1)


def _center_size(value: Any, width: Any = 80) -> int:
    return max(int(width), weight(value))


def _wordwrap_size(
    s: Any, width: Any = 79, long_words: Any = True, wrapstring: Any = None, *_: Any, **__: Any
) -> int:
    # Each line (as splitlines finds them) is wrapped into pieces of at most ``width``
    # characters (a word longer, unbroken, on a piece of its own), joined with ``wrapstring``.
    size = weight(s)
    pieces = _lines(s) + size // max(int(width), 1) * (1 if long_words else 2) + 1
    return size + pieces * weight("\n" if wrapstring is None else wrapstring)


def _join_filter_size(value: Any, d: Any = "", *_: Any, **__: Any) -> int:
    return join_size(value, weight(d))


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
    return _percent_size(value, kwargs or args, isinstance(value, Markup))


def _batch_size(value: Any, linecount: Any, fill_with: Any = None) -> int:
    padding = int(linecount) * _item_weight(fill_with) if fill_with is not None else 0
    return list_size(value) + padding


def _slice_size(value: Any, slices: Any, fill_with: Any = None) -> int:
    return list_size(value) + int(slices) * (BRACKETS + SEPARATOR + _item_weight(fill_with))


def _spread_size(value: Any, *_: Any, **__: Any) -> int:
    """What a filter that makes a list of its value's items (sorted, grouped) would build,
    or compares them (the attributes it compares by are part of them)."""
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
    extra_schemes: Any = None,
    *_: Any,
    **__: Any,
) -> int:
    # The text is escaped, and each link put in markup (with `target` and `rel`, and its
    # address once more: at most the text's length again, weighed once built). A link is a
    # word with "://", "www.", "@", a ".com"... or an extra scheme in it.
    size = escaped_size(value)
    if not isinstance(value, str):
        return size
    text = value.lower()
    marks = ("://", "www.", "@", *URLIZE_DOMAINS, *(extra_schemes or ()))
    links = min(_words(value), sum(text.count(str(mark)) for mark in marks))
    extra = sum(weight(a) for a in (target, rel) if a is not None)
    return size + links * (URLIZE_MARKUP + extra)


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
    "unique": _spread_size,
    "min": _spread_size,
    "max": _spread_size,
    "dictsort": _spread_size,
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
# Filters that go through their value's items at once (each a step; lazy filters' items are
# steps as they are yielded); filters that read text word by word (each word a step).
ITEMWISE_FILTERS = frozenset(
    {"batch", "dictsort", "groupby", "join", "list", "max", "min", "sort", "unique", "slice"}
    | {"urlencode", "xmlattr"}
)
WORDWISE_FILTERS = frozenset({"urlize", "wordwrap", "title", "wordcount"})
# Lazy filters that make new lists as they go: what they yield is weighed (see ``built``).
# Other lazy filters (map, select, unique, items...) yield what their value holds, or what
# a filter built and weighed, except from a string: each of its characters is a new object.
LISTING_FILTERS = frozenset({"batch", "slice"})


def filter_steps(name: str, value: Any, *args: Any) -> int:
    """The steps the filter ``name`` takes over ``value``: one, and one per item or word it
    goes through."""
    if name in ITEMWISE_FILTERS and isinstance(value, Sized):
        return 1 + len(value)
    if name in WORDWISE_FILTERS:
        width = args[0] if name == "wordwrap" and args and isinstance(args[0], int) else 0
        return 1 + _words(value) + weight(value) // max(width, 1) * (width > 0)
    return 1


def summed(items: Iterable[Any], start: Any) -> Any:
    """``sum(items, start)`` (``|sum``), each item a step; lists or tuples joined in one
    pass (Python's sum copies the result at each item), weighed as they are added."""
    if not isinstance(start, list | tuple):
        return sum(stepped(iter(items)), start)
    kind: type[list[Any]] | type[tuple[Any, ...]] = list if isinstance(start, list) else tuple
    pieces, size, added = list(start), weight(start), False
    iterator = iter(items)
    for item in iterator:
        step()
        if not isinstance(item, kind):
            # What Python's sum does with it (TypeError but for an odd type), then the rest.
            return sum(stepped(iterator), kind(pieces) + item)
        size += weight(item) - BRACKETS
        refuse(size, "the result of |sum")
        pieces.extend(item)
        added = True
    return kind(pieces) if added else start
