"""The README's screenshots, over a small realistic set of tasks: the task list, the calendar,
the wizard's Schedule and Action steps, and a run's history. `python scripts/screenshots.py`
runs this with CRONPILOT_UPDATE_DOCS_SCREENSHOTS=1 to refresh docs/screenshots/; in the test
run it checks that each view shows that data."""

from __future__ import annotations

import re
import time
from typing import Any

from playwright.sync_api import Page, expect

from tests.ui.conftest import UiServer, new_task, shot


def _task(ui_server: UiServer, body: dict[str, Any]) -> dict[str, Any]:
    response = ui_server.api("POST", "/api/tasks", body)
    assert response.status_code == 201, response.text
    task: dict[str, Any] = response.json()
    return task


def _run(ui_server: UiServer, task: dict[str, Any], times: int) -> None:
    """Run it now, one run after the other (its overlap policy is skip)."""
    for done in range(1, times + 1):
        assert ui_server.api("POST", f"/api/tasks/{task['id']}/run").status_code == 202
        deadline = time.monotonic() + 30
        while ui_server.api("GET", f"/api/tasks/{task['id']}").json()["run_count"] < done:
            assert time.monotonic() < deadline, f"{task['name']} did not run {done} times"
            time.sleep(0.2)


def test_the_readme_screenshots(page: Page, ui_server: UiServer) -> None:
    health = {"url": f"{ui_server.base_url}/healthz", "method": "GET"}
    backup = _task(
        ui_server,
        {
            "name": "Nightly backup",
            "description": "Copies the reports folder to the archive",
            "type": "recurring",
            "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
            "action": {"type": "webhook", "config": health},
            "tags": ["ops"],
        },
    )
    digest = _task(
        ui_server,
        {
            "name": "Weekday digest",
            "description": "Summarises yesterday's orders for the team",
            "type": "recurring",
            "schedule": {"cron": "0 9 * * 1-5", "timezone": "America/New_York"},
            "action": {"type": "webhook", "config": {**health, "url": health["url"] + "/x"}},
            "retry": {"max_attempts": 1},
            "tags": ["reports"],
        },
    )
    _task(
        ui_server,
        {
            "name": "Order webhook",
            "description": "Runs for every order the shop posts",
            "type": "trigger",
            "trigger": {"kind": "webhook"},
            "action": {"type": "webhook", "config": health},
        },
    )
    _task(
        ui_server,
        {
            "name": "Certificate renewal reminder",
            "type": "one_time",
            "schedule": {"run_at": "2027-01-15T09:00:00", "timezone": "Europe/London"},
            "action": {
                "type": "send_email",
                "config": {"to": ["ops@example.com"], "subject": "Renew", "text": "Due"},
            },
        },
    )
    _run(ui_server, backup, 3)
    _run(ui_server, digest, 1)  # a 404: failed

    page.goto(ui_server.sign_in_url)
    page.get_by_label("Search", exact=True).fill("e")
    expect(page.get_by_role("row").filter(has_text="Nightly backup")).to_contain_text("succeeded")
    expect(page.get_by_role("row").filter(has_text="Weekday digest")).to_contain_text("failed")
    page.get_by_label("Search", exact=True).fill("")
    page.get_by_role("checkbox", name="Select Order webhook", exact=True).check()
    page.get_by_role("checkbox", name="Select Weekday digest", exact=True).check()
    expect(page.get_by_role("button", name="Pause selected", exact=True)).to_be_visible()
    shot(page, "tasks", docs=True)
    page.get_by_role("button", name="Clear selection", exact=True).click()

    wizard = new_task(page, "Month-end invoices")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_label("Preset", exact=True).select_option(label="Monthly")
    wizard.get_by_label("At", exact=True).fill("02:30")
    wizard.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    wizard.get_by_label("Cron expression", exact=True).fill("30 2 * * *")
    preview = wizard.get_by_role("region", name="Schedule preview")
    expect(preview).to_contain_text("DST change in Europe/Berlin")
    preview.scroll_into_view_if_needed()
    shot(page, "wizard-schedule", docs=True)
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Run code", exact=True).check()
    expect(wizard.locator(".CodeMirror")).to_be_visible()
    shot(page, "wizard-action", docs=True)
    page.keyboard.press("Escape")
    page.get_by_role("dialog", name="Discard your changes?").get_by_role(
        "button", name="Confirm", exact=True
    ).click()

    row = page.get_by_role("row").filter(has_text="Nightly backup")
    row.get_by_role("button", name="History Nightly backup", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile("^History"))
    history.get_by_role("button", name=re.compile("^Details of run")).first.click()
    expect(history.locator(".log-lines li").first).to_be_visible()
    shot(page, "history", docs=True)
    page.keyboard.press("Escape")

    page.get_by_role("link", name="Calendar", exact=True).click()
    expect(page.locator("[aria-current=date] .chip").first).to_be_visible()
    shot(page, "calendar", docs=True)
    # March 2027: the night the clocks go forward, 02:30 does not exist in Berlin.
    while not page.get_by_role("heading", name="March 2027").count():
        page.get_by_role("button", name="Next month", exact=True).click()
    expect(page.locator(".dst-mark").first).to_be_visible()
    shot(page, "calendar-dst", docs=True)
