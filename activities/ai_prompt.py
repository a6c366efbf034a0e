"""The ``ai_prompt`` action: one prompt to Claude, answered with its text and token usage."""

from __future__ import annotations

from typing import Any

from activities._action import ActionRun
from activities._claude import complete
from schema.actions import AiPromptConfig


async def prompt(run: ActionRun, config: AiPromptConfig) -> dict[str, Any]:
    """Send the rendered prompt to Claude; return its text, model, stop reason and usage."""
    return await complete(
        run,
        prompt=config.prompt,
        system=config.system,
        model=config.model,
        max_tokens=config.max_tokens,
        temperature=config.temperature,
    )
