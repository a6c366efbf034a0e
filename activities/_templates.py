"""Config templating in Jinja2's sandbox, secrets as a template variable, and redaction.

Every string of an action's config is a template rendered inside the activity just before
the action runs. Undefined names fail (StrictUndefined) and so does anything the sandbox
forbids; a secret that does not exist fails with ``MissingSecret``. Secret values never
leave the activity: ``redact`` replaces each of them with ``***``, in the forms a target or a
library commonly echoes it in (``secret_forms``).

Rendering is bounded (``TemplateTooLarge``, a ``TemplateError``): a rendered string is at
most ``MAX_RENDERED_CHARS`` characters, and so is every value a template builds on the way
(strings, lists); everything one config's templates build and output together is at most
``MAX_RENDER_TOTAL``. The operations that can make big values from small ones (``*``, ``+``,
``%``, ``**``, ``~``, string methods such as ``ljust``, ``center``, ``format``, ``join``,
``replace``, list growth, the filters ``indent``, ``center``, ``wordwrap``, ``join``,
``replace``, ``format``, ``list``, ``sum``, ``batch``, ``slice``, ``tojson``, macros and
``{% set %}`` blocks) check the size of what they would build *before* building it. Loop
iterations and calls count as steps, at most ``MAX_RENDER_STEPS`` in all: that bounds the
time rendering takes.
"""

from __future__ import annotations

import base64
import functools
import html
import json
import re
import string
from collections.abc import Callable, Iterable, Iterator, Sized
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, quote_plus

from jinja2 import StrictUndefined, TemplateError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.ext import Extension
from jinja2.runtime import Context, markup_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import _PassArg

from schema.actions import is_template

MAX_RENDERED_CHARS = 1024 * 1024
MAX_RENDER_TOTAL = 8 * 1024 * 1024
# Loop iterations and calls, together, in all of one config's templates: what bounds their time.
MAX_RENDER_STEPS = 1_000_000
# Integers are for arithmetic: beyond this many bits, they are refused.
MAX_INT_BITS = 64 * 1024
MASK = "***"
# Encoded forms shorter than this are not redacted: they would mask ordinary text.
MIN_FORM_LENGTH = 4
PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")
PERCENT_FIELD = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(\*|\d+)?(?:\.(\*|\d+))?[hlL]?(.)")


class MissingSecret(Exception):
    """A template names a secret the user does not have."""


class TemplateTooLarge(TemplateError):
    """A template would build or produce more than rendering allows."""


@dataclass
class _Budget:
    left: int = MAX_RENDER_TOTAL
    steps: int = MAX_RENDER_STEPS


_budget: ContextVar[_Budget | None] = ContextVar("template_budget", default=None)


def _spend(size: int, what: str = "a value") -> None:
    """Refuse a value of ``size`` characters (or items) before it is built."""
    if size > MAX_RENDERED_CHARS:
        raise TemplateTooLarge(
            f"the template would build {what} of {size} characters or items; "
            f"the limit is {MAX_RENDERED_CHARS}"
        )
    budget = _budget.get()
    if budget is not None:
        budget.left -= max(size, 0)
        if budget.left < 0:
            raise TemplateTooLarge(
                f"the templates would build more than {MAX_RENDER_TOTAL} characters in all"
            )


def _step() -> None:
    """Count one loop iteration or call."""
    budget = _budget.get()
    if budget is not None:
        budget.steps -= 1
        if budget.steps < 0:
            raise TemplateTooLarge(
                f"the templates take more than {MAX_RENDER_STEPS} loop iterations and calls"
            )


def _text_size(value: Any) -> int:
    return len(value) if isinstance(value, str | bytes) else len(str(value))


def _largest_text(values: Iterable[Any]) -> int:
    return max((_text_size(v) for v in values), default=0)


def _int_arg(values: Iterable[Any]) -> int:
    """The largest integer among ``values`` (a width given as an argument)."""
    return max((v for v in values if isinstance(v, int)), default=0)


def _percent_size(text: str | bytes, args: Any) -> int:
    """An upper bound of ``text % args``."""
    if isinstance(args, dict):
        values = list(args.values())
    else:
        values = list(args) if isinstance(args, tuple) else [args]
    pattern = text if isinstance(text, str) else text.decode("latin-1")
    longest, widest = _largest_text(values), _int_arg(values)
    size = len(text)
    for field in PERCENT_FIELD.finditer(pattern):
        width, precision = field.group(1), field.group(2)
        numbers = [widest if n == "*" else int(n) for n in (width, precision) if n]
        size += longest + max(numbers, default=0)
    return size


def _format_size(text: str, args: Iterable[Any], kwargs: dict[str, Any]) -> int:
    """An upper bound of ``text.format(*args, **kwargs)``."""
    values = [*args, *kwargs.values()]
    longest, widest = _largest_text(values), _int_arg(values)
    size = len(text)
    for _, field, spec, _ in string.Formatter().parse(text):
        if field is None:
            continue
        numbers = [int(n) for n in re.findall(r"\d+", spec or "")]
        if "{" in (spec or ""):  # a nested field: its width comes from the arguments
            numbers.append(widest)
        size += longest + max(numbers, default=0)
    return size


def _replace_size(text: str | bytes, old: Any, new: Any, count: Any = -1) -> int:
    if not isinstance(old, str | bytes) or not isinstance(new, str | bytes):
        return len(text)
    found = text.count(old) if old else len(text) + 1  # type: ignore[arg-type]
    if isinstance(count, int) and count >= 0:
        found = min(found, count)
    return len(text) + found * max(len(new) - len(old), 0)


class _LoopSteps(Extension):
    """Every loop's iterable is wrapped in ``counted``: each item a step."""

    def counted(self, iterable: Iterable[Any]) -> Iterator[Any]:
        for item in iterable:
            _step()
            yield item


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` (concatenation) going through a size check."""

    @optimizeconst
    def visit_Concat(self, node: nodes.Concat, frame: Frame) -> None:
        escaping = (
            "context.eval_ctx.autoescape"
            if frame.eval_ctx.volatile
            else repr(bool(frame.eval_ctx.autoescape))
        )
        self.write("environment.joined((")
        for arg in node.nodes:
            self.visit(arg, frame)
            self.write(", ")
        self.write(f"), {escaping})")


class BoundedEnvironment(SandboxedEnvironment):
    """Jinja2's sandbox, with every operation that can blow a small value up checked first."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "*", "%", "**"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        counted = nodes.ExtensionAttribute(_LoopSteps.identifier, "counted")
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        return tree

    def concat(self, pieces: Iterable[str]) -> str:
        """Joins the output of macros, call blocks and ``{% set %}`` blocks."""
        pieces = list(pieces)
        _spend(sum(len(piece) for piece in pieces), "a block's output")
        return "".join(pieces)

    def joined(self, values: Iterable[Any], autoescape: bool) -> str:
        """``a ~ b``: checked, then joined as Jinja joins them."""
        values = list(values)
        _spend(sum(_text_size(value) for value in values), "a joined string")
        return markup_join(values) if autoescape else "".join(str(value) for value in values)

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        if operator == "+" and isinstance(left, Sized) and isinstance(right, Sized):
            _spend(len(left) + len(right))
        elif operator == "*":
            _check_product(left, right)
        elif operator == "%" and isinstance(left, str | bytes):
            _spend(_percent_size(left, right), "a formatted string")
        elif operator == "**" and isinstance(left, int) and isinstance(right, int):
            if abs(left) > 1 and right > 0 and left.bit_length() * right > MAX_INT_BITS:
                raise TemplateTooLarge(f"{left} ** {right} is too large a number")
        return super().call_binop(context, operator, left, right)

    def call(
        __self,  # Jinja's own signature: any keyword passes through to the callee
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call from a template (a step), refusing calls that would build too large a value."""
        _step()
        args = _checked_call(__obj, args, kwargs)
        return super().call(__context, __obj, *args, **kwargs)


def _check_product(left: Any, right: Any) -> None:
    if isinstance(left, int) and isinstance(right, int):
        if left.bit_length() + right.bit_length() > MAX_INT_BITS:
            raise TemplateTooLarge("the product is too large a number")
        return
    for sequence, times in ((left, right), (right, left)):
        if isinstance(sequence, Sized) and isinstance(times, int):
            _spend(len(sequence) * max(times, 0))


def _checked_call(target: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, ...]:
    """Check a method call that could build a large value; returns the arguments to use
    (an iterator argument is read into a list first, to be measured)."""
    method = getattr(target, "__wrapped__", target)  # Jinja wraps str.format for the sandbox
    owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
    if isinstance(owner, str | bytes):
        return _checked_text_method(owner, name, args, kwargs)
    if isinstance(owner, list) and name in ("append", "insert"):
        _spend(len(owner) + 1, "a list")
    elif isinstance(owner, list) and name == "extend" and args:
        args = (list(args[0]), *args[1:])
        _spend(len(owner) + len(args[0]), "a list")
    return args


def _checked_text_method(
    owner: str | bytes, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[Any, ...]:
    first = args[0] if args else None
    if name in ("ljust", "rjust", "center", "zfill") and isinstance(first, int):
        _spend(max(first, len(owner)))
    elif name == "expandtabs":
        tabsize = first if isinstance(first, int) else kwargs.get("tabsize", 8)
        tabs = owner.count("\t" if isinstance(owner, str) else b"\t")  # type: ignore[arg-type]
        _spend(len(owner) + tabs * max(int(tabsize), 0))
    elif name == "replace" and len(args) >= 2:
        _spend(_replace_size(owner, *args[:3]))
    elif name == "join" and args:
        items = list(first or ())
        _spend(sum(_text_size(i) for i in items) + len(owner) * max(len(items) - 1, 0))
        args = (items, *args[1:])
    elif name == "format" and isinstance(owner, str):
        _spend(_format_size(owner, args, kwargs), "a formatted string")
    elif name == "format_map" and isinstance(owner, str) and isinstance(first, dict):
        _spend(_format_size(owner, (), first), "a formatted string")
    elif name == "translate" and isinstance(first, dict):
        _spend(len(owner) * max(_largest_text(first.values()), 1))
    return args


def _filter_check(name: str, check: Callable[..., Any]) -> None:
    """Run ``check`` on a filter's arguments (after the context Jinja passes it, if any)
    before the filter itself; what ``check`` returns, unless None, replaces the filter's
    first argument (an iterator read into a list to be measured)."""
    original = ENVIRONMENT.filters[name]
    passes = _PassArg.from_obj(original) is not None

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        passed, own = (args[:1], args[1:]) if passes else ((), args)
        replaced = check(*own, **kwargs)
        if replaced is not None:
            own = (replaced, *own[1:])
        return original(*passed, *own, **kwargs)

    ENVIRONMENT.filters[name] = checked


def _lines(text: Any) -> int:
    return str(text).count("\n") + 1


def _check_indent(s: Any, width: Any = 4, *_: Any, **kwargs: Any) -> None:
    width = kwargs.get("width", width)
    per_line = len(width) if isinstance(width, str) else int(width)
    _spend(_text_size(s) + _lines(s) * max(per_line, 0))


def _check_center(value: Any, width: Any = 80, **kwargs: Any) -> None:
    _spend(max(int(kwargs.get("width", width)), _text_size(value)))


def _check_wordwrap(s: Any, width: Any = 79, *args: Any, **kwargs: Any) -> None:
    width = max(int(kwargs.get("width", width)), 1)
    wrapstring = kwargs.get("wrapstring", args[1] if len(args) > 1 else None) or "\n"
    size = _text_size(s)
    _spend(size + (size // width + _lines(s)) * len(str(wrapstring)))


def _check_join(value: Any, d: Any = "", *_: Any, **kwargs: Any) -> list[Any]:
    items = list(value)
    d = kwargs.get("d", d)
    _spend(sum(_text_size(i) for i in items) + _text_size(d) * max(len(items) - 1, 0))
    return items


def _check_replace(s: Any, old: Any, new: Any, count: Any = None) -> None:
    _spend(_replace_size(str(s), old, new, -1 if count is None else count))


def _check_format(value: Any, *args: Any, **kwargs: Any) -> None:
    _spend(_percent_size(str(value), kwargs or args), "a formatted string")


def _check_list(value: Any) -> list[Any]:
    items: list[Any] = []
    for item in value:  # counted while read: an iterator may be endless
        items.append(item)
        if len(items) > MAX_RENDERED_CHARS:
            _spend(len(items), "a list")
    _spend(len(items), "a list")
    return items


def _check_sum(iterable: Any, attribute: Any = None, start: Any = 0, **kwargs: Any) -> list[Any]:
    items = list(iterable)
    start = kwargs.get("start", start)
    if not isinstance(start, int | float) and kwargs.get("attribute", attribute) is None:
        _spend(_text_size(start) + sum(len(i) for i in items if isinstance(i, Sized)))
    return items


def _check_batch(_: Any, linecount: Any, *args: Any, **kwargs: Any) -> None:
    if kwargs.get("fill_with", args[0] if args else None) is not None:
        _spend(int(linecount), "a batch")


def _check_slice(_: Any, slices: Any, *__: Any, **___: Any) -> None:
    _spend(int(slices), "a list of slices")


def _check_tojson(_: Any, indent: Any = None, **kwargs: Any) -> None:
    indent = kwargs.get("indent", indent)
    if indent is not None and int(indent) > 64:
        raise TemplateTooLarge("tojson's indent is at most 64")


def _check_range(*args: Any) -> None:
    _spend(len(range(*args)), "a range")


def _check_lipsum(n: Any = 5, *args: Any, **kwargs: Any) -> None:
    words = kwargs.get("max", args[2] if len(args) > 2 else 100)
    _spend(int(kwargs.get("n", n)) * int(words) * 16, "lorem ipsum")


ENVIRONMENT = BoundedEnvironment(
    undefined=StrictUndefined, autoescape=False, keep_trailing_newline=True, extensions=[_LoopSteps]
)
_FILTER_CHECKS: dict[str, Callable[..., Any]] = {
    "indent": _check_indent,
    "center": _check_center,
    "wordwrap": _check_wordwrap,
    "join": _check_join,
    "replace": _check_replace,
    "format": _check_format,
    "list": _check_list,
    "sum": _check_sum,
    "batch": _check_batch,
    "slice": _check_slice,
    "tojson": _check_tojson,
}
for _name, _check in _FILTER_CHECKS.items():
    _filter_check(_name, _check)


def _global_check(name: str, check: Callable[..., None]) -> None:
    original: Callable[..., Any] = ENVIRONMENT.globals[name]  # type: ignore[assignment]

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    ENVIRONMENT.globals[name] = checked


_global_check("range", _check_range)
_global_check("lipsum", _check_lipsum)


class SecretValues:
    """``secrets.NAME`` in templates; an unknown name raises MissingSecret, not undefined."""

    def __init__(self, values: dict[str, str]) -> None:
        self._values = values

    def __getattr__(self, name: str) -> str:
        if name.startswith("_"):
            raise AttributeError(name)
        try:
            return self._values[name]
        except KeyError:
            raise MissingSecret(
                f"no secret named {name!r}; create it with PUT /api/secrets/{name}"
            ) from None

    __getitem__ = __getattr__

    def values(self) -> list[str]:
        return list(self._values.values())


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, dict):
        return [s for key, item in value.items() for s in (*_strings(key), *_strings(item))]
    if isinstance(value, list):
        return [s for item in value for s in _strings(item)]
    return []


def referenced_names(value: Any) -> set[str]:
    """Top-level names the templates in ``value`` use (to load secrets only when needed)."""
    names: set[str] = set()
    for text in _strings(value):
        if is_template(text):
            names |= meta.find_undeclared_variables(ENVIRONMENT.parse(text))
    return names


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every string (keys included) rendered as a template, within the
    limits above (``TemplateTooLarge`` beyond them)."""
    token = _budget.set(_Budget())
    try:
        return _render(value, context)
    finally:
        _budget.reset(token)


def _render(value: Any, context: dict[str, Any]) -> Any:
    if isinstance(value, str):
        return _render_text(value, context) if is_template(value) else value
    if isinstance(value, dict):
        return {_render(key, context): _render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [_render(item, context) for item in value]
    return value


def _render_text(text: str, context: dict[str, Any]) -> str:
    pieces: list[str] = []
    size = 0
    for piece in _generate(text, context):
        size += len(piece)
        if size > MAX_RENDERED_CHARS:
            raise TemplateTooLarge(
                f"a template renders to more than {MAX_RENDERED_CHARS} characters"
            )
        pieces.append(piece)
    _spend(size, "a rendered string")
    return "".join(pieces)


def _generate(text: str, context: dict[str, Any]) -> Iterator[str]:
    return ENVIRONMENT.from_string(text).generate(context)


def redact(value: Any, secrets: list[str]) -> Any:
    """``value`` with every occurrence of every secret replaced by ``***``."""
    if not secrets:
        return value
    if isinstance(value, str):
        for secret in secrets:
            value = value.replace(secret, MASK)
        return value
    if isinstance(value, dict):
        return {redact(key, secrets): redact(item, secrets) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [redact(item, secrets) for item in value]
    return value


def secret_forms(secret: str) -> set[str]:
    """The secret and the ways it commonly comes back encoded: URL quoting (``%20`` and
    ``+`` for spaces, upper- and lower-case hex), JSON string escaping (also with ``\\/``),
    Python's repr, HTML entities (named and numeric), and base64 (standard and URL-safe) at
    each of the three alignments it can have inside a longer base64 text (a Basic
    ``Authorization`` header, say)."""
    if not secret:
        return set()
    forms = {
        quote(secret, safe=""),
        quote(secret),
        quote_plus(secret),
        quote_plus(secret, safe="/"),
        json.dumps(secret)[1:-1],
        json.dumps(secret, ensure_ascii=False)[1:-1],
        json.dumps(secret)[1:-1].replace("/", "\\/"),
        repr(secret)[1:-1],
        html.escape(secret),
        html.escape(secret, quote=False),
        html.escape(secret).encode("ascii", "xmlcharrefreplace").decode(),
    }
    forms |= {PERCENT_HEX.sub(lambda m: m.group().lower(), form) for form in set(forms)}
    raw = secret.encode()
    for encode in (base64.b64encode, base64.urlsafe_b64encode):
        for shift in range(3):
            encoded = encode(b"\0" * shift + raw).decode()
            # Only the characters that depend on the secret's bytes alone.
            start, end = -(-shift * 8 // 6), (shift + len(raw)) * 8 // 6
            forms.add(encoded[start:end])
    forms = {form for form in forms if len(form) >= MIN_FORM_LENGTH}
    forms.add(secret)
    return forms
