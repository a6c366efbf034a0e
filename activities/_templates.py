"""Config templating in Jinja2's sandbox, secrets as a template variable, and redaction.

Every string of an action's config is a template rendered inside the activity just before
the action runs. Undefined names fail (StrictUndefined) and so does anything the sandbox
forbids; a secret that does not exist fails with ``MissingSecret``. Secret values never
leave the activity: ``redact`` replaces each of them with ``***``, in the forms a target or a
library commonly echoes it in (``secret_forms``).
"""

from __future__ import annotations

import base64
import html
import json
import re
from typing import Any
from urllib.parse import quote, quote_plus

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
MASK = "***"
# Encoded forms shorter than this are not redacted: they would mask ordinary text.
MIN_FORM_LENGTH = 4
PERCENT_HEX = re.compile(r"%[0-9A-F]{2}")


class MissingSecret(Exception):
    """A template names a secret the user does not have."""


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


def _is_template(text: str) -> bool:
    return "{{" in text or "{%" in text or "{#" in text


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
        if _is_template(text):
            names |= meta.find_undeclared_variables(ENVIRONMENT.parse(text))
    return names


def render(value: Any, context: dict[str, Any]) -> Any:
    """``value`` with every string (keys included) rendered as a template."""
    if isinstance(value, str):
        return ENVIRONMENT.from_string(value).render(context) if _is_template(value) else value
    if isinstance(value, dict):
        return {render(key, context): render(item, context) for key, item in value.items()}
    if isinstance(value, list):
        return [render(item, context) for item in value]
    return value


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
