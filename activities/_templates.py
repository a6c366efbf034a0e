"""Config templating in Jinja2's sandbox, and secrets as a template variable.

Every string of an action's config is a template rendered inside the activity just before
the action runs. Undefined names fail (StrictUndefined) and so does anything the sandbox
forbids; a secret that does not exist fails with ``MissingSecret``. Secret values never
leave the activity: ``activities/_redaction.py`` masks them in whatever is kept.

Rendering is bounded (``TemplateTooLarge``): ``BoundedEnvironment`` hooks every way a
template builds a value (operators, calls, filters, literals, ``~``, namespace attributes,
output, blocks) into the limits of ``activities/_template_sizes.py``, which weigh it before
it is built when it could be far larger than what it is built from, and after otherwise.
Each loop's iterable, and each ``*args`` of a call, goes through ``_Bounds``; Jinja's
compile-time constant folding is off, since it would run operations outside these hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Sized
from types import BuiltinMethodType
from typing import Any

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.ext import Extension
from jinja2.nodes import EvalContext
from jinja2.runtime import BlockReference, Context, LoopContext, Macro, markup_join
from jinja2.sandbox import SandboxedEnvironment
from jinja2.utils import Namespace, _PassArg, object_type_repr, pass_eval_context
from markupsafe import escape

from activities._template_sizes import (
    FILTER_SIZES,
    LISTING_FILTERS,
    MUTATING,
    NUMBERS,
    SELECTING_FILTERS,
    TEXT,
    after_call,
    before_call,
    budgeted,
    built,
    escaped_size,
    forget,
    grow,
    grows,
    list_size,
    materialized,
    operated,
    refuse,
    spend,
    step,
    weight,
)
from activities._template_sizes import MAX_RENDERED_CHARS as MAX_RENDERED_CHARS
from activities._template_sizes import TemplateTooLarge as TemplateTooLarge
from schema.actions import is_template


class MissingSecret(Exception):
    """A template names a secret the user does not have."""


# A key a missing element is looked up by is quoted in the error when its text is this short.
SHORT_REPR = 200


class _Undefined(StrictUndefined):
    """StrictUndefined, naming a missing key briefly: the repr of a key made of a list (an
    element looked up by it) is as large as the list."""

    __slots__ = ()

    @property
    def _undefined_message(self) -> str:
        name = self._undefined_name
        if self._undefined_hint or isinstance(name, str) or weight(name) <= SHORT_REPR:
            return super()._undefined_message
        element = f"<a {type(name).__name__} of more than {SHORT_REPR} characters>"
        return f"{object_type_repr(self._undefined_obj)} has no element {element}"


class _Counted:
    """A loop's items, each a step."""

    def __init__(self, iterable: Iterable[Any]) -> None:
        self._iterable = iterable

    def __iter__(self) -> Iterator[Any]:
        for item in self._iterable:
            step()
            yield item


class _CountedSized(_Counted):
    """A loop's items, each a step, as many as its iterable's: ``loop.length`` need not read
    them all ahead (a long string read ahead makes an object of each character)."""

    def __init__(self, iterable: Sized) -> None:
        super().__init__(iterable)  # type: ignore[arg-type]
        self._length = len(iterable)

    def __len__(self) -> int:
        return self._length


def _counted(iterable: Iterable[Any]) -> _Counted:
    return _CountedSized(iterable) if isinstance(iterable, Sized) else _Counted(iterable)


class _Bounds(Extension):
    """What ``BoundedEnvironment._parse`` wraps around parts of a template: every loop's
    iterable (``counted``), every ``*args`` of a call (``spread``)."""

    def counted(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """Each item a step."""
        return _counted(iterable)

    def spread(self, value: Any) -> Any:
        """A string spread into arguments makes an object of each character: weighed first."""
        if isinstance(value, TEXT):
            refuse(list_size(value), "the arguments of a call")
        return value


def _constant(node: nodes.Node) -> bool:
    if isinstance(node, nodes.Const):
        return True
    if isinstance(node, nodes.List | nodes.Tuple):
        return all(_constant(item) for item in node.items)
    if isinstance(node, nodes.Dict):
        return all(_constant(pair.key) and _constant(pair.value) for pair in node.items)
    return False


class _BoundedCodeGenerator(CodeGenerator):
    """Jinja's code generator, with ``~`` (concatenation) and list, tuple and dict literals
    made of variables going through the environment's checks."""

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

    def _literal(self, visit: Callable[[], None], node: nodes.Expr) -> None:
        if _constant(node):  # as large as the template's own text at most
            visit()
            return
        self.write("environment.literal(")
        visit()
        self.write(")")

    def visit_List(self, node: nodes.List, frame: Frame) -> None:
        self._literal(functools.partial(super().visit_List, node, frame), node)

    def visit_Dict(self, node: nodes.Dict, frame: Frame) -> None:
        self._literal(functools.partial(super().visit_Dict, node, frame), node)

    def visit_Tuple(self, node: nodes.Tuple, frame: Frame) -> None:
        visit = functools.partial(super().visit_Tuple, node, frame)
        if node.ctx == "load":
            self._literal(visit, node)
        else:  # a target: `{% for a, b in ... %}`
            visit()


class BoundedNamespace(Namespace):
    """``namespace()`` in templates: a value set on it (``{% set ns.a = v %}``) is weighed
    first."""

    def __setitem__(self, name: str, value: Any) -> None:
        refuse(weight(value), f"a namespace attribute ({name})")
        super().__setitem__(name, value)


@pass_eval_context
def _finalize(eval_ctx: EvalContext, value: Any) -> Any:
    """What ``{{ value }}`` outputs, as text: made here, weighed before and after (Jinja
    would make it with ``str()``, or ``escape()`` where autoescaping is on)."""
    if eval_ctx.autoescape:
        if hasattr(value, "__html__"):
            return value
        refuse(escaped_size(value), "output")
        return built(escape(value), "output", value)
    if isinstance(value, str) or type(value) in NUMBERS:
        return value  # a number's text is short: integers are bounded
    refuse(weight(value), "output")
    return built(str(value), "output")


class BoundedEnvironment(SandboxedEnvironment):
    """Jinja2's sandbox, where everything a template builds is weighed (see the module)."""

    code_generator_class = _BoundedCodeGenerator
    intercepted_binops = frozenset({"+", "-", "*", "/", "//", "%", "**"})

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        counted = nodes.ExtensionAttribute(_Bounds.identifier, "counted")
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Call(counted, [loop.iter], [], None, None, lineno=loop.lineno)
        spread = nodes.ExtensionAttribute(_Bounds.identifier, "spread")
        for call in list(tree.find_all((nodes.Call, nodes.Filter, nodes.Test))):
            if isinstance(call, nodes.Call | nodes.Filter | nodes.Test) and call.dyn_args:
                call.dyn_args = nodes.Call(spread, [call.dyn_args], [], None, None)
        for modifier in tree.find_all(nodes.EvalContextModifier):
            # Jinja evaluates these while compiling, outside every check.
            if not all(isinstance(option.value, nodes.Const) for option in modifier.options):
                raise TemplateSyntaxError(
                    "autoescape takes true or false", modifier.lineno, name, filename
                )
        return tree

    def concat(self, pieces: Iterable[str]) -> str:
        """Joins the output of macros, call blocks and ``{% set %}`` blocks."""
        pieces = list(pieces)
        size = sum(len(piece) for piece in pieces)
        refuse(size, "a block's output")
        spend(size)
        return "".join(pieces)

    def joined(self, values: tuple[Any, ...], autoescape: bool) -> str:
        """``a ~ b``: estimated, joined as Jinja joins them, weighed."""
        refuse(sum(weight(value) for value in values), "a joined string")
        text = markup_join(values) if autoescape else "".join([str(v) for v in values])
        return built(text, "a joined string")

    def literal(self, value: Any) -> Any:
        """A list, tuple or dict literal of variables, weighed."""
        return built(value, f"a {type(value).__name__}")

    def call_binop(self, context: Context, operator: str, left: Any, right: Any) -> Any:
        return operated(operator, left, right, self.binop_table[operator])

    def call(
        __self,  # Jinja's own signature: any keyword passes through to the callee
        __context: Context,
        __obj: Any,
        *args: Any,
        **kwargs: Any,
    ) -> Any:
        """Call from a template (a step): estimated before, weighed after."""
        step()
        if isinstance(__obj, LoopContext) and args:  # `loop(children)` in a recursive loop
            args = (_counted(args[0]),)
        if isinstance(__obj, Macro | BlockReference | LoopContext):
            # They render template code: their output is weighed where it is joined.
            return super().call(__context, __obj, *args, **kwargs)
        # Jinja wraps str.format for the sandbox (a builtin method is never wrapped).
        method = __obj if type(__obj) is BuiltinMethodType else getattr(__obj, "__wrapped__", __obj)
        owner, name = getattr(method, "__self__", None), getattr(method, "__name__", "")
        if isinstance(owner, _Bounds):
            return super().call(__context, __obj, *args, **kwargs)
        # Jinja adds these to every call made in a loop or a block; Context.call drops them
        # for all but context functions. They are not arguments to weigh.
        scope = {k: kwargs.pop(k) for k in ("_loop_vars", "_block_vars") if k in kwargs}
        if isinstance(owner, list | dict | set) and name in MUTATING:
            return __self._mutate(__context, __obj, owner, name, args, kwargs)
        args = before_call(owner, name, args, kwargs)
        result = super().call(__context, __obj, *args, **kwargs, **scope)
        return after_call(result, owner, name, args, kwargs)

    def _mutate(
        self,
        context: Context,
        method: Any,
        owner: list[Any] | dict[Any, Any] | set[Any],
        name: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
    ) -> Any:
        """A method that changes a list, dict or set: one that adds to it is refused when the
        result would weigh over the limit."""
        if grows(owner, name):
            return grow(owner, name, args, kwargs, functools.partial(super().call, context, method))
        forget(owner)
        if name == "sort" and kwargs.get("key") is not None:
            # Python calls the key itself: through the environment, it is checked too.
            kwargs["key"] = functools.partial(self.call, context, kwargs["key"])
        return super().call(context, method, *args, **kwargs)


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a filter), estimated before it runs when it can build much (an iterator
    it is given is read into a list first, to be measured), weighed after."""
    size = FILTER_SIZES.get(name)
    first = 1 if _PassArg.from_obj(original) is not None else 0  # after the context, if any
    what = f"the result of |{name}"
    selecting = name in SELECTING_FILTERS
    listing = name in LISTING_FILTERS

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if size is not None and len(args) > first:
            value = materialized(args[first])
            if value is not args[first]:
                args = (*args[:first], value, *args[first + 1 :])
            estimate = size(*args[first:], **kwargs)
            if estimate > MAX_RENDERED_CHARS:
                refuse(estimate, what)
        result = original(*args, **kwargs)
        if selecting:
            return result
        if type(result) is not str and isinstance(result, Iterator) and not listing:
            if not (len(args) > first and isinstance(args[first], TEXT)):
                return result  # see LISTING_FILTERS
        return built(result, what, *args[first:])

    return bounded


ENVIRONMENT = BoundedEnvironment(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=[_Bounds],
    finalize=_finalize,
    optimized=False,  # constant folding runs operations while compiling, outside the checks
)
for _name, _filter in list(ENVIRONMENT.filters.items()):
    ENVIRONMENT.filters[_name] = _bounded_filter(_name, _filter)


def _check_range(*args: Any) -> None:
    refuse(len(range(*args)), "a range")


def _check_lipsum(n: Any = 5, *args: Any, **kwargs: Any) -> None:
    words = kwargs.get("max", args[2] if len(args) > 2 else 100)
    refuse(int(kwargs.get("n", n)) * int(words) * 16, "lorem ipsum")


def _global_check(name: str, check: Callable[..., None]) -> None:
    original: Callable[..., Any] = ENVIRONMENT.globals[name]  # type: ignore[assignment]

    @functools.wraps(original)
    def checked(*args: Any, **kwargs: Any) -> Any:
        check(*args, **kwargs)
        return original(*args, **kwargs)

    ENVIRONMENT.globals[name] = checked


_global_check("range", _check_range)
_global_check("lipsum", _check_lipsum)
ENVIRONMENT.globals["namespace"] = BoundedNamespace


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
    limits of ``activities/_template_sizes.py`` (``TemplateTooLarge`` beyond them)."""
    with budgeted():
        try:
            return _render(value, context)
        except TemplateError:
            raise
        except Exception as error:
            # Its message is made when shown: from a key or a value the template made, it
            # could be as large as that (a KeyError quotes its key whole).
            if weight(error.args) <= MAX_RENDERED_CHARS:
                raise
            name = type(error).__name__
            raise TemplateError(f"{name}, whose message would be too large to show") from None


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
    spend(size)
    return "".join(pieces)


def _generate(text: str, context: dict[str, Any]) -> Iterator[str]:
    return ENVIRONMENT.from_string(text).generate(context)
