"""Config templating in Jinja2's sandbox, and secrets as a template variable.

Every string of an action's config is a template rendered inside the activity just before
the action runs. Undefined names fail (StrictUndefined) and so does anything the sandbox
forbids; a secret that does not exist fails with ``MissingSecret``. Secret values never
leave the activity: ``activities/_redaction.py`` masks them in whatever is kept.

Rendering is bounded (``TemplateTooLarge``): ``BoundedEnvironment`` hooks every way a
template builds a value (operators, calls, filters, literals, ``~``, slices, namespace
attributes, ``str.format``'s fields, output, blocks) into the limits of
``activities/_template_sizes.py``, which weigh it before it is built when it could be far
larger than what it is built from, and after otherwise; and every way it compares values
(comparisons, tests, sorting) and steps through them (loops, calls, filters, tests). Each
loop's iterable, and each ``*args`` of a call, goes through ``_Bounds``; Jinja's
compile-time constant folding is off, since it would run operations outside these hooks.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from types import BuiltinMethodType, MethodType
from typing import Any, cast

from jinja2 import StrictUndefined, TemplateError, TemplateSyntaxError, meta, nodes
from jinja2.compiler import CodeGenerator, Frame, optimizeconst
from jinja2.environment import Environment
from jinja2.ext import Extension
from jinja2.filters import make_attrgetter, sync_do_join
from jinja2.nodes import EvalContext
from jinja2.runtime import BlockReference, Context, LoopContext, Macro, markup_join
from jinja2.sandbox import SandboxedEnvironment, SandboxedFormatter
from jinja2.utils import (
    Namespace,
    _PassArg,
    object_type_repr,
    pass_environment,
    pass_eval_context,
)
from markupsafe import Markup, escape

from activities._template_sizes import (
    FILTER_SIZES,
    LISTING_FILTERS,
    MUTATING,
    NUMBERS,
    SELECTING_FILTERS,
    TEXT,
    after_call,
    assigned,
    before_call,
    budgeted,
    built,
    comparable,
    compared,
    compared_chain,
    contained,
    converted_size,
    counted,
    escaped_size,
    field_size,
    filter_steps,
    forget,
    grow,
    grows,
    join_size,
    list_size,
    materialized,
    operated,
    reachable,
    refuse,
    sliced,
    spend,
    step,
    stepped,
    summed,
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


class _Bounds(Extension):
    """What ``BoundedEnvironment._parse`` wraps around parts of a template: every loop's
    iterable (``counted``), every ``*args`` of a call (``spread``)."""

    def counted(self, iterable: Iterable[Any]) -> Iterable[Any]:
        """Each item a step."""
        return counted(iterable)

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
    """Jinja's code generator, with ``~`` (concatenation), list, tuple and dict literals made
    of variables, slices and comparisons going through the environment's checks."""

    def visit_Getitem(self, node: nodes.Getitem, frame: Frame) -> None:
        if not isinstance(node.arg, nodes.Slice):
            super().visit_Getitem(node, frame)
            return
        # Jinja writes `a[i:j]` as Python's, outside the environment: through getitem here.
        self.write("environment.getitem(")
        self.visit(node.node, frame)
        self.write(", slice(")
        for index, part in enumerate((node.arg.start, node.arg.stop, node.arg.step)):
            self.write(", " if index else "")
            if part is None:
                self.write("None")
            else:
                self.visit(part, frame)
        self.write("))")

    def visit_Compare(self, node: nodes.Compare, frame: Frame) -> None:
        if len(node.ops) == 1:
            self.write(f"environment.compare({node.ops[0].op!r}, ")
            self.visit(node.expr, frame)
            self.write(", ")
            self.visit(node.ops[0].expr, frame)
            self.write(")")
            return
        # `a < b < c`: each operand after the first evaluated only when needed, as in Python.
        self.write("environment.compare_chain(")
        self.visit(node.expr, frame)
        for operand in node.ops:
            self.write(f", {operand.op!r}, lambda: ")
            self.visit(operand.expr, frame)
        self.write(")")

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
    first, and so is every grown list that holds the namespace."""

    def __setitem__(self, name: str, value: Any) -> None:
        assigned(self, name, value)
        super().__setitem__(name, value)


class _BoundedFormatter(SandboxedFormatter):
    """``str.format`` and ``format_map`` in templates (Markup's too, ``escaping`` its
    values): each field, conversion and nested field is weighed before it is formatted,
    with its final width and precision and the value its lookups reached; all of them
    together (and the literal text) at most the limit."""

    def __init__(self, environment: Environment, escaping: Callable[[Any], Markup] | None) -> None:
        super().__init__(environment)
        self.escaping = escaping
        self.size = 0

    def vformat(self, format_string: str, args: Sequence[Any], kwargs: Mapping[str, Any]) -> str:
        self.size = len(format_string)
        return super().vformat(format_string, args, kwargs)

    def convert_field(self, value: Any, conversion: str | None) -> Any:
        if conversion is not None:
            refuse(self.size + converted_size(value, conversion), _FORMATTED)
        return super().convert_field(value, conversion)

    def format_field(self, value: Any, format_spec: str) -> str:
        step()  # Python's Formatter reads each field in Python
        if self.escaping is None:
            refuse(self.size + field_size(value, format_spec), _FORMATTED)
            return self._counted(format(value, format_spec))
        # markupsafe's EscapeFormatter, the text weighed before it is escaped.
        if hasattr(value, "__html_format__"):
            text = value.__html_format__(format_spec)
        elif hasattr(value, "__html__"):
            if format_spec:
                raise ValueError(
                    f"Format specifier {format_spec} given, but {type(value)} does not define"
                    " __html_format__. A class that defines __html__ must define"
                    " __html_format__ to work with format specifiers."
                )
            text = value.__html__()
        else:
            refuse(self.size + field_size(value, format_spec), _FORMATTED)
            text = format(value, str(format_spec))
            refuse(self.size + escaped_size(text), _FORMATTED)
        return self._counted(str(self.escaping(text)))

    def _counted(self, text: str) -> str:
        self.size += len(text)
        refuse(self.size, _FORMATTED)
        return text


_FORMATTED = "the result of format()"


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

    def compare(self, operation: str, left: Any, right: Any) -> Any:
        """``left == right``, ``left in right``...: refused when it could read too much."""
        return compared(operation, left, right)

    def compare_chain(self, first: Any, *rest: Any) -> Any:
        """``a < b < c``, each comparison as ``compare``."""
        return compared_chain(first, *rest)

    def getitem(self, obj: Any, argument: Any) -> Any:
        """``obj[argument]``; a slice (``obj[i:j]``) is weighed as it is built."""
        if type(argument) is slice:
            return sliced(obj, argument)
        return super().getitem(obj, argument)

    def wrap_str_format(self, value: Any) -> Callable[..., str] | None:
        """``str.format`` and ``format_map`` (of a string or Markup), wherever a template
        reaches them: formatted by ``_BoundedFormatter``."""
        if not isinstance(value, MethodType | BuiltinMethodType) or value.__name__ not in (
            "format",
            "format_map",
        ):
            return None
        text = value.__self__
        if not isinstance(text, str):
            return None
        escaping = text.escape if isinstance(text, Markup) else None
        is_format_map = value.__name__ == "format_map"

        def wrapper(*args: Any, **kwargs: Any) -> str:
            if is_format_map:
                if kwargs:
                    raise TypeError("format_map() takes no keyword arguments")
                if len(args) != 1:
                    raise TypeError(f"format_map() takes exactly one argument ({len(args)} given)")
                kwargs, args = args[0], ()
            formatter = _BoundedFormatter(self, escaping)
            return type(text)(formatter.vformat(text, args, kwargs))

        return functools.update_wrapper(wrapper, value)

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
            args = (counted(args[0]),)
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
        if name == "sort" and isinstance(owner, list):
            kwargs = self._sort_keys(context, owner, kwargs)
        elif name == "remove" and args and isinstance(owner, list):
            contained(args[0], owner)
        forget(owner, name)
        return super().call(context, method, *args, **kwargs)

    def _sort_keys(
        self, context: Context, owner: list[Any], kwargs: dict[str, Any]
    ) -> dict[str, Any]:
        """``list.sort``'s arguments, its keys made first (through the environment, each
        key a call) and weighed: sorting compares them (the items, without a key)."""
        key = kwargs.get("key")
        if key is None:
            comparable(owner, owner)
            return kwargs
        keys = [self.call(context, key, item) for item in owner]
        comparable(keys, keys)
        # list.sort calls its key once for each item, in order: it gets the keys made here.
        made = iter(keys)
        return {**kwargs, "key": lambda _: next(made)}


def _bounded_filter(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a filter), a step and one per item or word it goes through, estimated
    before it runs when it can build much (an iterator it is given is read into a list
    first, to be measured), weighed after."""
    size = FILTER_SIZES.get(name)
    first = 1 if _PassArg.from_obj(original) is not None else 0  # after the context, if any
    what = f"the result of |{name}"
    selecting = name in SELECTING_FILTERS
    listing = name in LISTING_FILTERS

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        if len(args) <= first:
            step()
            return original(*args, **kwargs)
        if size is not None:
            value = materialized(args[first])
            if value is not args[first]:
                args = (*args[:first], value, *args[first + 1 :])
            estimate = size(*args[first:], **kwargs)
            if estimate > MAX_RENDERED_CHARS:
                refuse(estimate, what)
        step(filter_steps(name, *args[first:]))
        result = original(*args, **kwargs)
        if selecting:
            return result
        if type(result) is not str and isinstance(result, Iterator) and not listing:
            if not isinstance(args[first], TEXT):
                return stepped(result)  # see LISTING_FILTERS
        return built(result, what, *args[first:])

    return bounded


@pass_eval_context
def _join(eval_ctx: EvalContext, value: Iterable[Any], d: str = "", attribute: Any = None) -> str:
    """``|join``; with an ``attribute``, what it looks up in each item is what is estimated
    (a cycler's items, not the cycler), looked up once more to be joined."""
    if attribute is None:
        return cast(str, _bounded_join(eval_ctx, value, d))
    value = materialized(value)
    step(filter_steps("join", value))
    getter = make_attrgetter(eval_ctx.environment, attribute)
    refuse(join_size(map(getter, value), weight(d)), "the result of |join")
    return built(sync_do_join(eval_ctx, value, d, attribute), "the result of |join")


@pass_environment
def _sum(
    environment: Environment, iterable: Iterable[Any], attribute: Any = None, start: Any = 0
) -> Any:
    """``|sum``: lists and tuples joined in one pass, each item a step (see ``summed``)."""
    if attribute is not None:
        iterable = map(make_attrgetter(environment, attribute), iterable)
    return summed(iterable, start)


_COMPARING_TESTS = frozenset(
    {"eq", "equalto", "==", "ne", "!=", "lt", "lessthan", "<", "le", "<=", "gt"}
    | {"greaterthan", ">", "ge", ">="}
)


def _bounded_test(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
    """``original`` (a test), a step; one that compares its value refused as comparisons are
    (see ``BoundedEnvironment.compare``)."""
    first = 1 if _PassArg.from_obj(original) is not None else 0
    comparing = name in _COMPARING_TESTS

    @functools.wraps(original)
    def bounded(*args: Any, **kwargs: Any) -> Any:
        step()
        if len(args) > first + 1:
            if comparing:
                comparable(args[first], args[first + 1])
            elif name == "in":
                contained(args[first], args[first + 1])
        return original(*args, **kwargs)

    return bounded


ENVIRONMENT = BoundedEnvironment(
    undefined=_Undefined,
    autoescape=False,
    keep_trailing_newline=True,
    extensions=[_Bounds],
    finalize=_finalize,
    optimized=False,  # constant folding runs operations while compiling, outside the checks
)
_bounded_join = _bounded_filter("join", sync_do_join)
ENVIRONMENT.filters.update(join=_join, sum=_sum)
for _name, _filter in list(ENVIRONMENT.filters.items()):
    if _filter is not _join:
        ENVIRONMENT.filters[_name] = _bounded_filter(_name, _filter)
for _name, _test in list(ENVIRONMENT.tests.items()):
    ENVIRONMENT.tests[_name] = _bounded_test(_name, cast(Callable[..., Any], _test))


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


reachable(SecretValues, SecretValues.values)


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
