"""Size limits of templates: nothing a template builds weighs more than
``MAX_RENDERED_CHARS``, whatever builds it (an operator, a method, a filter, a literal, a
namespace attribute, output), and what could build far more than it is given is refused
before it runs. Rendered directly, through an action's run, and (the 4 GB hex repro of issue
14) in a process of its own whose memory is measured and capped."""

from __future__ import annotations

import json
import subprocess
import sys
import tracemalloc
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from jinja2 import TemplateError, TemplateSyntaxError

from activities._templates import MAX_RENDERED_CHARS, TemplateTooLarge, render
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.http_target import HttpTarget

ROOT = Path(__file__).resolve().parents[2]
REPRO = (
    "{% set ns = namespace(a='x' * 1000000) %}{% for i in range(12) %}"
    "{% set ns.a = ns.a.encode().hex() %}{% endfor %}{{ ns.a|length }}"
)
# Renders argv[1] and prints what happened and how much the process's peak memory grew.
CHILD = """
import json, sys
from activities._templates import render

def peak_kb():
    status = open("/proc/self/status").read().splitlines()
    return next(int(line.split()[1]) for line in status if line.startswith("VmHWM"))

before = peak_kb()
try:
    render({"body": sys.argv[1]}, {})
    outcome = "rendered"
except Exception as error:
    outcome = f"{type(error).__name__}: {error}"
print(json.dumps({"outcome": outcome, "grew_kb": peak_kb() - before}))
"""
# A list that holds the same list twelve times, which then grows to 1 MB: it weighs 12 MB
# though it takes 1 MB, and making it text would make 12 MB.
ALIASED = (
    "{% set m = [] %}{% set l = [m] * 12 %}{% for i in range(10) %}"
    "{% if m.append('x' * 100000) %}{% endif %}{% endfor %}"
)
# 1.2 MB of text in the run's payload, in twelve references to one 100 KB string.
PAYLOAD = {"items": ["x" * 100_000] * 12}


def _webhook(url: str, body: str) -> dict[str, object]:
    return {"type": "webhook", "config": {"url": url, "method": "POST", "body": body}}


def _peak_while(template: str) -> tuple[BaseException | None, int]:
    """What rendering ``template`` raised, and the most memory Python held meanwhile."""
    tracemalloc.start()
    try:
        render({"body": template}, {"payload": PAYLOAD, "now": datetime.now(UTC)})
    except Exception as error:
        return error, tracemalloc.get_traced_memory()[1]
    else:
        return None, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_the_hex_repro_fails_at_once_and_the_memory_barely_moves() -> None:
    # Capped at 2 GiB of address space: code without the limits fails on it, it does not
    # take the machine's memory.
    command = ["sh", "-c", 'ulimit -v 2097152 && exec "$0" "$@"', sys.executable]
    done = subprocess.run(
        [*command, "-c", CHILD, REPRO], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["outcome"].startswith("TemplateTooLarge: "), report
    assert "hex()" in report["outcome"] and str(MAX_RENDERED_CHARS) in report["outcome"]
    assert report["grew_kb"] < 100 * 1024, report


async def test_a_template_that_would_build_too_much_fails_its_run_as_invalid_config(
    harness: ActionHarness, target: HttpTarget
) -> None:
    key = uuid.uuid4().hex
    for body in (
        REPRO.replace("range(12)", "range(3)"),  # refused at its first hex, as the repro is
        "{% set l = ['x' * 1000000] * 12 %}{{ (l|string)|length }}",
    ):
        action = _webhook(f"{target.url}/ok/{key}", body)
        failure = await failure_of(harness, action, max_attempts=3)
        assert (failure.type, failure.non_retryable) == ("InvalidConfig", True)
        assert "rendering templates: the template would build" in failure.message
        assert str(MAX_RENDERED_CHARS) in failure.message
    assert target.hits(key) == 0, "nothing may be sent when rendering fails"


@pytest.mark.parametrize(
    "template",
    [
        # The issue's: hex, urlencode twice, |e, |string of twelve 1 MB strings.
        REPRO.replace("range(12)", "range(3)"),
        "{% set s = ('&' * 1000000)|urlencode|urlencode %}{{ s|length }}",
        "{% set s = ('&' * 1000000)|e %}{{ s|length }}",
        "{% set l = ['x' * 1000000] * 12 %}{{ (l|string)|length }}",
        # Whatever makes a heavy value text, weighs it first.
        ALIASED + "{{ (l|string)|length }}",
        ALIASED + "{{ (l|tojson)|length }}",
        ALIASED + "{{ (l|pprint)|length }}",
        ALIASED + "{{ (l|upper)|length }}",
        ALIASED + "{{ (l|safe)|length }}",
        ALIASED + "{{ ('%s' % (l,))|length }}",
        "{% set m = [] %}{% set d = dict.fromkeys(range(12), m) %}{% for i in range(10) %}"
        "{% if m.append('x' * 100000) %}{% endif %}{% endfor %}{{ ('%s' % d)|length }}",
        ALIASED + "{{ '{!r}'.format(l)|length }}",
        ALIASED + "{{ (l ~ '')|length }}",
        ALIASED + "{{ l }}",
        ALIASED + "{% set s %}{% filter upper %}{{ l }}{% endfilter %}{% endset %}",
        "{{ (payload['items']|tojson)|length }}",
        "{{ (payload['items']|string)|length }}",
        "{{ ('<' * 1000000)|forceescape|length }}",
        "{% autoescape true %}{{ ('<' * 1000000) ~ '' }}{% endautoescape %}",
        # Literals, namespace attributes, sums and growing lists are weighed.
        ALIASED + "{{ [l, l]|length }}",
        ALIASED + "{% set ns = namespace() %}{% set ns.a = l %}",
        ALIASED + "{{ l|sum(start=[])|length }}",
        "{% set l = ['x' * 1000] %}{% for i in range(12) %}{{ l.extend(l) }}{% endfor %}",
        "{{ dict.fromkeys(range(20), 'x' * 1000000)|length }}",
        # Methods and filters that take a size or a count.
        "{{ (1).to_bytes(20000000, 'big')|length }}",
        "{{ now.strftime('%c' * 100000)|length }}",
        "{{ ('\\u4e00' * 100000).encode('ascii', 'namereplace')|length }}",
        "{{ ('x' * 1000000).encode().decode('ascii', 'backslashreplace')|length }}",
        "{% set l = [20000000, 20000001] %}{{ l.sort(key='x'.ljust) }}",
        ALIASED + "{{ [1].index(l) }}",  # ValueError: <l, whole> is not in list
        # A string read character by character makes an object of each.
        "{{ ('\\u4e00 ' * 400000).split()|length }}",
        "{{ ('\\u4e00' * 250000)|sort|length }}",
        "{{ cycler(*('\\u4e00' * 250000)).next() }}",
        "{{ ('x' * 300000)|batch(1)|list|length }}",
    ],
)
def test_what_would_build_too_much_is_refused_before_it_is_built(template: str) -> None:
    error, peak = _peak_while(template)
    assert isinstance(error, TemplateTooLarge), error
    # The 1 MB strings these templates start from, not the tens of MB they would make.
    assert peak < 8 * MAX_RENDERED_CHARS, f"{peak} bytes held"


@pytest.mark.parametrize(
    "template",
    [
        # Twelve characters of JSON for each of these (a surrogate pair, escaped).
        "{{ ('\\U000e0001' * 1000000)|tojson|length }}",
        # "ß" upper-cased is "SS".
        "{{ ('ß' * 600000).upper()|length }}",
        # A filter's lazy result: what it yields, together, weighs at most the limit.
        "{{ ('x' * 1000000)|map('upper')|list|length }}",
    ],
)
def test_what_outgrows_its_estimate_is_refused_once_built(template: str) -> None:
    with pytest.raises(TemplateTooLarge):
        render({"body": template}, {})


@pytest.mark.parametrize(
    "lookup",
    [
        "{{ {}[l] }}",  # UndefinedError: dict object has no element <l>
        "{% set ns = namespace(l=l) %}{{ {}.pop(ns) }}",  # KeyError(<ns, whole>)
    ],
)
def test_an_error_quotes_no_value_over_the_limit(lookup: str) -> None:
    error, peak = _peak_while(ALIASED + lookup)
    assert isinstance(error, TemplateError), error
    assert len(str(error)) < 1000
    assert peak < 8 * MAX_RENDERED_CHARS, f"{peak} bytes held"


def test_the_inner_iterations_of_a_recursive_loop_are_steps_too() -> None:
    template = (
        "{% for x in range(1000) recursive %}"
        "{% if loop.depth == 1 %}{{ loop(range(1000)) }}{% endif %}{% endfor %}"
    )
    with pytest.raises(TemplateTooLarge, match="loop iterations and calls"):
        render({"body": template}, {})


def test_autoescape_takes_only_a_constant() -> None:
    # Jinja evaluates the value while compiling, outside every check.
    template = (
        "{% autoescape ('x'|center(1048576)) ~ ('x'|center(1048576)) ~ "
        "('x'|center(1048576)) ~ ('x'|center(1048576)) %}x{% endautoescape %}"
    )
    error, peak = _peak_while(template)
    assert isinstance(error, TemplateSyntaxError), error
    assert peak < MAX_RENDERED_CHARS
    assert render({"a": "{% autoescape true %}{{ '<' }}{% endautoescape %}"}, {}) == {"a": "&lt;"}


def test_large_and_common_templates_within_the_limits_render() -> None:
    rows = [{"id": i, "name": f"row {i}", "tags": ["a", "b"]} for i in range(2000)]
    context: dict[str, Any] = {"payload": {"rows": rows, "text": "é" * 500_000}}
    rendered = render(
        {
            "grown with +": "{% set ns = namespace(l=[]) %}{% for r in payload.rows %}"
            "{% set ns.l = ns.l + [r.id] %}{% endfor %}{{ ns.l|length }} {{ ns.l|sum }}",
            "grown with append": "{% set l = [] %}{% for r in payload.rows * 5 %}"
            "{% if l.append({'id': r.id}) %}{% endif %}{% endfor %}{{ l|length }}",
            "counted": "{% set d = {} %}{% for r in payload.rows %}"
            "{% if d.update({r.tags[0]: d.get(r.tags[0], 0) + 1}) %}{% endif %}"
            "{% endfor %}{{ d }}",
            "json": "{{ payload.rows|tojson }}",
            "near the limit": "{{ payload.text|upper|length }} {{ ('x' * 1000000)|length }}",
            "loops": "{% for c in 'abc' %}{{ loop.index }}/{{ loop.length }} {% endfor %}"
            "{% for x in [[1, [2, [3]]], [4]] recursive %}"
            "{{ x if x is number else loop(x) }}{% endfor %}",
            "text": "{{ 'a,b'.split(',') }} {{ 'x'.center(5) }}|{{ cycler(*'ab').next() }} "
            "{{ '%05.1f' % 3.14159 }} {{ '{:>4}'.format(7) }} {{ ['b', 'a']|sort|join }}",
        },
        context,
    )
    assert rendered == {
        "grown with +": f"2000 {sum(range(2000))}",
        "grown with append": "10000",
        "counted": "{'a': 2000}",
        "json": json.dumps(rows),
        "near the limit": "500000 1000000",
        "loops": "1/3 2/3 3/3 1234",
        "text": "['a', 'b']   x  |a 003.1    7 ab",
    }
