"""Every view passes axe-core's WCAG 2.1 A and AA rules (accessible names, colour contrast,
ARIA use, labels), in the light and the dark scheme. axe-core is vendored for the tests
(tests/ui/vendor) and evaluated through the DevTools protocol, which the page's CSP does not
govern; the app itself never serves it."""

from __future__ import annotations

import re
import time
import uuid
from pathlib import Path
from typing import Any, Literal

import pytest
from playwright.sync_api import Page, expect

from tests.ui.conftest import UiServer, shot

AXE = (Path(__file__).parent / "vendor" / "axe-core" / "axe.min.js").read_text()
RULES = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa"]


def _violations(page: Page) -> list[dict[str, Any]]:
    if not page.evaluate("() => typeof window.axe !== 'undefined'"):
        page.evaluate(AXE + "\n;0")
    found: list[dict[str, Any]] = page.evaluate(
        """async (tags) => {
          const result = await axe.run(document, {runOnly: {type: "tag", values: tags}});
          return result.violations.map((v) => ({
            id: v.id, impact: v.impact, help: v.help,
            nodes: v.nodes.slice(0, 5).map((n) => n.target.join(" ") + ": " + n.failureSummary),
          }));
        }""",
        RULES,
    )
    return found


def _check(page: Page, view: str, scheme: str, problems: list[str]) -> None:
    for violation in _violations(page):
        nodes = "\n      ".join(violation["nodes"])
        problems.append(
            f"{view} ({scheme}): {violation['id']} [{violation['impact']}] "
            f"{violation['help']}\n      {nodes}"
        )


@pytest.fixture
def a_task_with_a_run(ui_server: UiServer) -> str:
    name = f"Axe {uuid.uuid4().hex[:6]}"
    created = ui_server.api(
        "POST",
        "/api/tasks",
        {
            "name": name,
            "type": "recurring",
            "schedule": {"cron": "30 2 * * *", "timezone": "Europe/Berlin"},
            "action": {
                "type": "webhook",
                "config": {"url": f"{ui_server.base_url}/healthz", "method": "GET"},
            },
        },
    )
    assert created.status_code == 201, created.text
    task_id = created.json()["id"]
    assert ui_server.api("POST", f"/api/tasks/{task_id}/run").status_code == 202
    deadline = time.monotonic() + 20
    while ui_server.api("GET", f"/api/tasks/{task_id}").json()["run_count"] == 0:
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
    return name


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_view_passes_wcag_aa(
    page: Page, ui_server: UiServer, a_task_with_a_run: str, scheme: Literal["light", "dark"]
) -> None:
    name = a_task_with_a_run
    page.emulate_media(color_scheme=scheme)
    problems: list[str] = []

    page.goto("/")
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    _check(page, "sign-in", scheme, problems)

    page.goto(ui_server.sign_in_url)
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text("succeeded")
    _check(page, "task list", scheme, problems)

    page.get_by_role("button", name="New task", exact=True).click()
    wizard = page.get_by_role("dialog", name="New task")
    for step in ("Basics", "Schedule", "Action", "Options"):
        wizard.get_by_role("button", name=step).click()
        if step == "Schedule":
            expect(wizard.get_by_role("region", name="Schedule preview")).to_contain_text(
                "Next runs"
            )
        if step == "Action":
            wizard.get_by_role("radio", name="Run code", exact=True).check()
            expect(wizard.locator(".CodeMirror")).to_be_visible()
        _check(page, f"wizard {step}", scheme, problems)
    page.keyboard.press("Escape")  # with changes made: it asks first
    discard = page.get_by_role("dialog", name="Discard your changes?")
    _check(page, "discard confirmation", scheme, problems)
    discard.get_by_role("button", name="Confirm", exact=True).click()
    expect(wizard).to_be_hidden()

    row.get_by_role("button", name=f"History {name}", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile("^History"))
    history.get_by_role("button", name=re.compile("^Details of run")).first.click()
    expect(history.locator(".log-lines li").first).to_be_visible()
    _check(page, "history", scheme, problems)
    page.keyboard.press("Escape")

    page.get_by_role("link", name="Calendar", exact=True).click()
    expect(page.get_by_role("button", name="Next month", exact=True)).to_be_visible()
    expect(page.locator(".chip").first).to_be_visible()
    _check(page, "calendar", scheme, problems)
    if scheme == "dark":
        shot(page, "calendar-dark")

    assert not problems, "accessibility violations:\n  " + "\n  ".join(problems)
