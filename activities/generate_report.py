"""The ``generate_report`` action: gather sources, have Claude write the report, email it."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta
from typing import Any

from activities._action import ActionRun
from activities._claude import complete
from activities._failure import ActionFailure
from activities.send_email import build_message, deliver
from activities.web_scrape import extract, fetch_page, main_text
from schema import crud
from schema.actions import GenerateReportConfig, TaskHistorySource, TextSource, UrlSource

MAX_SOURCE_CHARS = 30_000
REPORT_MAX_TOKENS = 4096
HISTORY_ROWS = 200
SYSTEM = (
    "You write clear, accurate reports for the person who scheduled them. Use only the "
    "sources given; say so when they do not support a point. Answer with the report in "
    "{format} and nothing else, starting with its title as a heading."
)


async def generate(run: ActionRun, config: GenerateReportConfig) -> dict[str, Any]:
    """Write the report from the sources and return it; email it when ``email_to`` is set."""
    sections: list[str] = []
    used: list[dict[str, Any]] = []
    for number, source in enumerate(config.sources, start=1):
        label, text = await _gather(run, source)
        sections.append(f"## Source {number}: {label}\n\n{text[:MAX_SOURCE_CHARS]}")
        used.append(
            {"kind": source.kind, "label": label, "chars": min(len(text), MAX_SOURCE_CHARS)}
        )
    prompt = "\n\n".join([f"# {config.title}", f"Instructions:\n{config.instructions}", *sections])
    answer = await complete(
        run,
        prompt=prompt,
        system=SYSTEM.format(format="HTML" if config.format == "html" else "Markdown"),
        model=None,
        max_tokens=REPORT_MAX_TOKENS,
        temperature=None,
    )
    result: dict[str, Any] = {
        "title": config.title,
        "content": answer["text"],
        "format": config.format,
        "sources_used": used,
        "model": answer["model"],
        "usage": answer["usage"],
    }
    if config.email_to:
        result["email"] = await _email(run, config, answer["text"])
    return result


async def _gather(
    run: ActionRun, source: UrlSource | TextSource | TaskHistorySource
) -> tuple[str, str]:
    if isinstance(source, TextSource):
        return "text", source.text
    if isinstance(source, UrlSource):
        return source.url, await _page_text(run, source)
    return f"history of task {source.task_id}", await _history(run, source)


async def _page_text(run: ActionRun, source: UrlSource) -> str:
    page = await fetch_page(run, source.url)
    if source.selector is None:
        return await asyncio.to_thread(main_text, page, max_chars=MAX_SOURCE_CHARS)
    found = await asyncio.to_thread(extract, page, {"s": source.selector}, every=True)
    matches = [text for text in found["s"] if text]
    if not matches:
        run.log(f"selector {source.selector!r} matched nothing on {source.url}", "warning")
    return "\n".join(matches)


async def _history(run: ActionRun, source: TaskHistorySource) -> str:
    since = datetime.now(UTC) - timedelta(days=source.days)
    async with run.deps.sessions() as session:
        task = await crud.get_task(session, user_id=run.input.user_id, task_id=source.task_id)
        if task is None:  # another user's task is as absent as a missing one
            raise ActionFailure("SourceNotFound", f"no task {source.task_id}", retryable=False)
        rows = await crud.executions_since(
            session, user_id=run.input.user_id, task_id=task.id, since=since, limit=HISTORY_ROWS
        )
    counts: dict[str, int] = {}
    for row in rows:
        counts[row.status] = counts.get(row.status, 0) + 1
    by_status = ", ".join(f"{k} {v}" for k, v in sorted(counts.items())) or "none"
    lines = [
        f"Task {task.name!r} ({task.type}, status {task.status}); runs in the last "
        f"{source.days} days: {len(rows)} ({by_status})",
    ]
    for row in rows:
        error = f" error {row.error['type']}: {row.error['message']}" if row.error else ""
        duration = f" {row.duration_ms} ms" if row.duration_ms is not None else ""
        lines.append(f"- {row.started_at.isoformat()} {row.trigger} {row.status}{duration}{error}")
    return "\n".join(lines)


async def _email(run: ActionRun, config: GenerateReportConfig, content: str) -> dict[str, Any]:
    settings = run.deps.settings
    message = build_message(
        sender=settings.smtp_from,
        to=config.email_to,
        subject=config.title,
        text=content if config.format == "markdown" else None,
        html=content if config.format == "html" else None,
    )
    delivery = await deliver(settings, message)
    run.log(f"emailed to {', '.join(delivery.accepted)}")
    return {
        "message_id": message["Message-ID"],
        "accepted": delivery.accepted,
        "refused": delivery.refused,
    }
