"""Config templating in Jinja2's sandbox, secrets as a template variable, and redaction.

Every string of an action's config is a template rendered inside the activity just before
the action runs. Undefined names fail (StrictUndefined) and so does anything the sandbox
forbids; a secret that does not exist fails with ``MissingSecret``. Secret values never
leave the activity: ``redact`` replaces each of them with ``***``.
"""

from __future__ import annotations

from typing import Any

from jinja2 import StrictUndefined, meta
from jinja2.sandbox import SandboxedEnvironment

ENVIRONMENT = SandboxedEnvironment(undefined=StrictUndefined, autoescape=False)
MASK = "***"


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
