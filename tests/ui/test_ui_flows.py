"""The web UI end to end, in headless Chromium against a real `cronpilot dev`: a recurring
task made through every wizard step (with a validation error fixed in place) that runs and
shows up live, pause and resume, its history and a log line, the calendar, a one-time task,
a webhook trigger task whose URL then takes a signed delivery, bulk pause, delete, keyboard
only, and a 360 px viewport."""

from __future__ import annotations

import json
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from playwright.sync_api import Locator, Page, expect

from api.signatures import sign
from tests.ui.conftest import PageProblems, UiServer, new_task, shot


def _unique(prefix: str) -> str:
    return f"{prefix} {uuid.uuid4().hex[:6]}"


@pytest.fixture
def signed_in(page: Page, ui_server: UiServer) -> Iterator[Page]:
    page.goto(ui_server.sign_in_url)
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
    yield page


def _row(page: Page, name: str) -> Locator:
    return page.get_by_role("row").filter(has_text=name)


def _create_via_api(ui_server: UiServer, name: str, **fields: object) -> dict[str, object]:
    body = {
        "name": name,
        "type": "recurring",
        "schedule": {"cron": "0 3 * * *", "timezone": "UTC"},
        "action": {"type": "webhook", "config": {"url": f"{ui_server.base_url}/healthz"}},
        **fields,
    }
    response = ui_server.api("POST", "/api/tasks", body)
    assert response.status_code == 201, response.text
    task: dict[str, object] = response.json()
    return task


def _tab_to(page: Page, name: str, limit: int = 80) -> None:
    """Press Tab until the focused element's accessible name (label or text) is ``name``."""
    for _ in range(limit):
        focused = page.evaluate(
            """() => {
              const el = document.activeElement;
              if (!el) return "";
              const label = el.labels && el.labels[0] ? el.labels[0].textContent : "";
              return (el.getAttribute("aria-label") || label || el.textContent || "").trim();
            }"""
        )
        if focused == name:
            return
        page.keyboard.press("Tab")
    raise AssertionError(f"Tab never reached {name!r}")


def test_a_recurring_task_through_the_wizard_runs_live_pauses_and_shows_its_history(
    signed_in: Page, ui_server: UiServer, page_errors: PageProblems
) -> None:
    page = signed_in
    page_errors.allow(r"status of 422 .*/api/tasks\)$")  # the invalid URL, on purpose
    name = _unique("Heartbeat")
    page.evaluate("() => { window.__notReloaded = true; }")
    page.get_by_role("button", name="New task", exact=True).click()
    wizard = page.get_by_role("dialog", name="New task")
    expect(wizard.get_by_role("button", name="Basics")).to_have_attribute("aria-current", "step")

    # Basics
    wizard.get_by_label("Name", exact=True).fill(name)
    wizard.get_by_label("Description", exact=True).fill("Pings the API's health check")
    wizard.get_by_label("Tags", exact=True).fill("ui, health")
    wizard.get_by_role("radio", name="Recurring", exact=True).check()
    shot(page, "wizard-basics")
    wizard.get_by_role("button", name="Next", exact=True).click()

    # Schedule: a preset writes the expression; the preview comes from /api/tasks/validate.
    expect(wizard.get_by_role("button", name="Schedule")).to_have_attribute("aria-current", "step")
    wizard.get_by_label("Preset", exact=True).select_option(label="Weekdays at")
    wizard.get_by_label("At", exact=True).fill("07:30")
    expect(wizard.get_by_label("Cron expression", exact=True)).to_have_value("30 7 * * 1-5")
    wizard.get_by_label("Time zone", exact=True).fill("Europe/Berlin")
    preview = wizard.get_by_role("region", name="Schedule preview")
    expect(preview).to_contain_text("Monday through Friday")
    expect(preview.locator("ol.next-runs li")).to_have_count(5)
    # A zone with DST: the preview names the days the change skips or doubles a run.
    wizard.get_by_label("Cron expression", exact=True).fill("30 2 * * *")
    expect(preview).to_contain_text("DST change in Europe/Berlin")
    shot(page, "wizard-schedule")
    # The task itself runs every 2 seconds.
    wizard.get_by_role("radio", name="Interval", exact=True).check()
    wizard.get_by_label("Interval (seconds)", exact=True).fill("2")
    expect(preview).to_contain_text("Next runs")
    wizard.get_by_role("button", name="Next", exact=True).click()

    # Action: the URL left invalid on purpose.
    wizard.get_by_role("radio", name="Webhook", exact=True).check()
    url = wizard.get_by_label("URL", exact=True)
    url.fill("not a url")
    wizard.get_by_label("Method", exact=True).select_option("GET")
    shot(page, "wizard-action")
    wizard.get_by_role("button", name="Next", exact=True).click()

    # Options, and the review of the JSON to be sent.
    wizard.get_by_label("Max attempts", exact=True).fill("2")
    wizard.get_by_label("Timeout (seconds)", exact=True).fill("30")
    wizard.get_by_label("Overlap policy", exact=True).select_option("skip")
    review = wizard.get_by_label("Request JSON")
    sent = json.loads(review.inner_text())
    assert sent["schedule"]["interval_seconds"] == 2
    assert "cron" not in sent["schedule"]
    assert sent["retry"]["max_attempts"] == 2
    assert sent["tags"] == ["ui", "health"]
    shot(page, "wizard-options")
    wizard.get_by_role("button", name="Create task", exact=True).click()

    # The 422 sends the wizard back to the Action step, with the error beside the URL.
    expect(wizard.get_by_role("button", name="Action")).to_have_attribute("aria-current", "step")
    expect(url).to_have_attribute("aria-invalid", "true")
    error_id = url.get_attribute("aria-describedby") or ""
    assert error_id
    expect(page.locator(f"[id='{error_id.split()[0]}']")).to_contain_text("http")
    assert ui_server.api("GET", f"/api/tasks?q={name}").json()["items"] == []
    url.fill(f"{ui_server.base_url}/healthz")
    expect(url).not_to_have_attribute("aria-invalid", "true")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()

    # The list shows it, then its runs, without a reload.
    row = _row(page, name)
    expect(row).to_contain_text("active")
    expect(row).to_contain_text("Recurring")
    expect(row).to_contain_text(re.compile(r"succeeded|running"), timeout=10_000)
    expect(row).to_contain_text(re.compile(r"\d+%"))
    assert page.evaluate("() => window.__notReloaded") is True
    shot(page, "tasks")

    # Pause and resume.
    row.get_by_role("button", name=f"Pause {name}", exact=True).click()
    expect(row).to_contain_text("paused")
    assert ui_server.api("GET", f"/api/tasks?q={name}").json()["items"][0]["status"] == "paused"
    row.get_by_role("button", name=f"Resume {name}", exact=True).click()
    expect(row).to_contain_text("active")

    # Run now: the new run shows in the list within 2 s.
    row.get_by_role("button", name=f"Pause {name}", exact=True).click()
    expect(row).to_contain_text("paused")
    task = ui_server.api("GET", f"/api/tasks?q={name}").json()["items"][0]
    before = task["run_count"]
    row.get_by_role("button", name=f"Run now {name}", exact=True).click()
    deadline = time.monotonic() + 15
    while ui_server.api("GET", f"/api/tasks/{task['id']}").json()["run_count"] == before:
        assert time.monotonic() < deadline, "the run never finished"
        time.sleep(0.2)
    finished = ui_server.api("GET", f"/api/tasks/{task['id']}").json()
    counts = f"{finished['run_count']} runs, {finished['failure_count']} failed"
    # Without a reload (tests assert no timing: the UI polls every second).
    expect(row.locator(f'[title="{counts}"]')).to_be_visible()

    # History: its runs, a run's details with a log line, a link into Temporal.
    row.get_by_role("button", name=f"History {name}", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile(f"^History: {name}"))
    runs = history.get_by_role("list", name=f"Runs of {name}")
    first = runs.get_by_role("listitem").filter(has_text="succeeded").first
    expect(first).to_be_visible()
    expect(first.get_by_role("link", name=re.compile("Open in Temporal"))).to_have_attribute(
        "href", re.compile(r"/namespaces/.+/workflows/")
    )
    details = first.get_by_role("button", name=re.compile("^Details of run"))
    details.click()
    expect(details).to_have_attribute("aria-expanded", "true")
    logs = first.locator(".log-lines li")
    expect(logs.first).to_be_visible()
    expect(first.locator(".log-lines")).to_contain_text("healthz")
    shot(page, "history")
    page.keyboard.press("Escape")
    expect(history).to_be_hidden()

    # The calendar has its runs (past ones today, coloured by status).
    page.get_by_role("link", name="Calendar", exact=True).click()
    now = datetime.now(UTC)
    expect(page.get_by_role("heading", name=now.strftime("%B %Y"))).to_be_visible()
    today = page.locator("[aria-current=date]")
    ran = re.compile(f"{name}.*succeeded")
    more = today.get_by_role("button", name=re.compile(r"^\+\d+ more$"))
    expect(today.get_by_role("button").first).to_be_visible()
    if more.count():
        more.click()
        day = page.get_by_role("dialog")
        expect(day.get_by_role("button", name=ran).first).to_be_visible()
        page.keyboard.press("Escape")
    else:
        expect(today.get_by_role("button", name=ran).first).to_be_visible()
    shot(page, "calendar")
    page.get_by_role("button", name="Next month", exact=True).click()
    following = (now.replace(day=1) + timedelta(days=32)).strftime("%B %Y")
    expect(page.get_by_role("heading", name=following)).to_be_visible()
    page.get_by_role("button", name="Today", exact=True).click()
    expect(page.get_by_role("heading", name=now.strftime("%B %Y"))).to_be_visible()

    # Delete, confirmed.
    page.get_by_role("link", name="Tasks", exact=True).click()
    _row(page, name).get_by_role("button", name=f"Delete {name}", exact=True).click()
    confirm = page.get_by_role("dialog", name=f"Delete {name}?")
    confirm.get_by_role("button", name="Confirm", exact=True).click()
    expect(_row(page, name)).to_have_count(0)
    assert ui_server.api("GET", f"/api/tasks/{task['id']}").status_code == 404


def test_a_one_time_task_and_a_webhook_trigger_task(signed_in: Page, ui_server: UiServer) -> None:
    page = signed_in
    once = _unique("Renewal reminder")
    wizard = new_task(page, once, "One-time")
    wizard.get_by_role("button", name="Next", exact=True).click()
    berlin = ZoneInfo("Europe/Berlin")
    run_at = (datetime.now(berlin) + timedelta(days=3)).replace(
        hour=9, minute=15, second=0, microsecond=0
    )
    wizard.get_by_label("Run at", exact=True).fill(run_at.strftime("%Y-%m-%dT%H:%M"))
    zone = wizard.get_by_label("Time zone", exact=True)
    zone.fill("")
    zone.press_sequentially("Europe/Berlin")  # half-typed zones on the way must not break it
    expect(wizard.get_by_role("region", name="Schedule preview")).to_contain_text("Next runs")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Send email", exact=True).check()
    wizard.get_by_label("To", exact=True).fill("me@example.com, you@example.com")
    wizard.get_by_label("Subject", exact=True).fill("Renew the certificate")
    wizard.get_by_label("Body", exact=True).fill("Due {{ now }}")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()
    expect(_row(page, once)).to_contain_text("One-time")
    saved = ui_server.api("GET", f"/api/tasks?q={once}").json()["items"][0]
    assert datetime.fromisoformat(saved["schedule"]["run_at"]) == run_at
    assert saved["action"]["config"]["to"] == ["me@example.com", "you@example.com"]

    hooked = _unique("Order intake")
    wizard = new_task(page, hooked, "Trigger")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Webhook", exact=True).check()
    wizard.get_by_label("Webhook authentication", exact=True).select_option("hmac")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Webhook", exact=True).check()
    wizard.get_by_label("URL", exact=True).fill(f"{ui_server.base_url}/healthz")
    wizard.get_by_label("Method", exact=True).select_option("GET")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_label("Concurrent runs", exact=True).fill("2")
    wizard.get_by_role("button", name="Create task", exact=True).click()

    shown = page.get_by_role("dialog", name="Webhook created")
    expect(shown).to_be_visible()
    url = shown.get_by_label("Webhook URL", exact=True).input_value()
    secret = shown.get_by_label("Secret", exact=True).input_value()
    expect(shown.get_by_role("button", name="Copy secret", exact=True)).to_be_visible()
    expect(shown.get_by_label("Signing example")).to_contain_text("X-Cronpilot-Signature")
    shot(page, "webhook-created")
    shown.get_by_role("button", name="Done", exact=True).click()
    expect(_row(page, hooked)).to_contain_text("Trigger")

    # The URL and secret shown are the real ones: a signed delivery is accepted and runs.
    body = json.dumps({"order": 42}).encode()
    path = "/" + url.split("/", 3)[3]
    delivered = ui_server.client.post(
        path,
        content=body,
        headers={
            "Content-Type": "application/json",
            "X-Cronpilot-Signature": sign(secret, body, int(time.time())),
        },
    )
    assert delivered.status_code == 202, delivered.text
    expect(_row(page, hooked)).to_contain_text("succeeded", timeout=15_000)


def test_bulk_pause_two_tasks_and_delete_one(signed_in: Page, ui_server: UiServer) -> None:
    page = signed_in
    names = [_unique("Bulk") for _ in range(3)]
    for name in names:
        _create_via_api(ui_server, name)
    page.get_by_label("Search", exact=True).fill("Bulk")
    for name in names:
        expect(_row(page, name)).to_contain_text("active")
    for name in names[:2]:
        page.get_by_role("checkbox", name=f"Select {name}", exact=True).check()
    page.get_by_role("button", name="Pause selected", exact=True).click()
    for name in names[:2]:
        expect(_row(page, name)).to_contain_text("paused")
    expect(_row(page, names[2])).to_contain_text("active")

    page.get_by_role("checkbox", name=f"Select {names[0]}", exact=True).check()
    page.get_by_role("button", name="Delete selected", exact=True).click()
    page.get_by_role("dialog").get_by_role("button", name="Confirm", exact=True).click()
    expect(_row(page, names[0])).to_have_count(0)
    expect(_row(page, names[1])).to_contain_text("paused")
    remaining = {t["name"] for t in ui_server.api("GET", "/api/tasks?q=Bulk").json()["items"]}
    assert names[0] not in remaining and {names[1], names[2]} <= remaining


def test_keyboard_only_creation_and_shortcuts(signed_in: Page, ui_server: UiServer) -> None:
    page = signed_in
    name = _unique("Keyboard")
    page.keyboard.press("?")
    shortcuts = page.get_by_role("dialog", name="Keyboard shortcuts")
    expect(shortcuts).to_be_visible()
    # Tab from a focus lost to the page (its control re-rendered away) goes back into the dialog.
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("Tab")
    expect(shortcuts.get_by_role("button", name="Close", exact=True).first).to_be_focused()
    page.keyboard.press("Escape")
    expect(shortcuts).to_be_hidden()
    page.keyboard.press("/")
    expect(page.get_by_label("Search", exact=True)).to_be_focused()
    page.evaluate("() => document.activeElement.blur()")

    page.keyboard.press("n")
    wizard = page.get_by_role("dialog", name="New task")
    expect(wizard.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.type(name)
    page.keyboard.press("Enter")  # submits the step: Next
    expect(wizard.get_by_role("button", name="Schedule")).to_have_attribute("aria-current", "step")
    _tab_to(page, "Next")
    page.keyboard.press("Enter")
    _tab_to(page, "URL")
    page.keyboard.type(f"{ui_server.base_url}/healthz")
    page.keyboard.press("Enter")
    expect(wizard.get_by_role("button", name="Options")).to_have_attribute("aria-current", "step")
    _tab_to(page, "Create task")
    page.keyboard.press("Enter")
    expect(wizard).to_be_hidden()
    expect(_row(page, name)).to_contain_text("active")

    # A row's quick actions by keyboard; a closed dialog gives the focus back.
    page.get_by_label("Search", exact=True).focus()
    _tab_to(page, f"History {name}", limit=200)
    page.keyboard.press("Enter")
    history = page.get_by_role("dialog", name=re.compile(f"^History: {name}"))
    expect(history).to_be_visible()
    # Escape closes it even while the focus is outside it (as before the focus moved in).
    page.evaluate("() => document.activeElement.blur()")
    page.keyboard.press("Escape")
    expect(history).to_be_hidden()
    expect(page.get_by_role("button", name=f"History {name}", exact=True)).to_be_focused()
    page.evaluate("() => document.activeElement.blur()")

    # The focus stays in a dialog: Tab from its last control comes back to its first.
    page.keyboard.press("c")
    expect(page.get_by_role("button", name="Previous month", exact=True)).to_be_visible()
    page.keyboard.press("t")
    expect(page.get_by_label("Search", exact=True)).to_be_visible()
    page.keyboard.press("n")
    wizard = page.get_by_role("dialog", name="New task")
    expect(wizard.get_by_label("Name", exact=True)).to_be_focused()
    page.keyboard.type("draft")
    for _ in range(60):
        page.keyboard.press("Tab")
        inside = page.evaluate("() => Boolean(document.activeElement.closest('[role=dialog]'))")
        assert inside, "the focus left the dialog"
    # Escape goes to the innermost dialog: it closes the question, not the draft behind it.
    page.keyboard.press("Escape")
    discard = page.get_by_role("dialog", name="Discard your changes?")
    cancel = discard.get_by_role("button", name="Cancel", exact=True)
    expect(cancel).to_be_focused()
    for _ in range(3):  # Confirm, Close, back to Cancel: never into the wizard behind
        page.keyboard.press("Tab")
    expect(cancel).to_be_focused()
    page.keyboard.press("Escape")
    expect(discard).to_be_hidden()
    expect(wizard.get_by_label("Name", exact=True)).to_have_value("draft")
    page.keyboard.press("Escape")
    discard.get_by_role("button", name="Confirm", exact=True).click()
    expect(wizard).to_be_hidden()


def test_a_360_px_viewport(signed_in: Page, ui_server: UiServer) -> None:
    page = signed_in
    name = _unique("Narrow")
    _create_via_api(ui_server, name, tags=["phone"])
    page.set_viewport_size({"width": 360, "height": 740})
    row = _row(page, name)
    expect(row).to_contain_text("active")
    expect(row.get_by_role("button", name=f"Run now {name}", exact=True)).to_be_visible()

    def fits() -> bool:
        width: bool = page.evaluate(
            "() => document.documentElement.scrollWidth <= window.innerWidth"
        )
        return width

    assert fits(), "the task list scrolls sideways at 360 px"
    shot(page, "tasks-360", full_page=True)
    page.get_by_role("button", name="New task", exact=True).click()
    wizard = page.get_by_role("dialog", name="New task")
    expect(wizard.get_by_role("button", name="Next", exact=True)).to_be_in_viewport()
    assert fits(), "the wizard scrolls sideways at 360 px"
    page.keyboard.press("Escape")
    page.get_by_role("link", name="Calendar", exact=True).click()
    expect(page.get_by_role("button", name="Next month", exact=True)).to_be_visible()
    expect(page.get_by_text("Loading runs")).to_have_count(0)
    expect(page.locator(".chip").first).to_be_visible()
    assert fits(), "the calendar scrolls sideways at 360 px"
    shot(page, "calendar-360", full_page=True)


def test_the_list_pages_with_load_more(signed_in: Page, ui_server: UiServer) -> None:
    page = signed_in
    tag = f"paging{uuid.uuid4().hex[:6]}"
    ids = [
        str(_create_via_api(ui_server, f"Page {tag} {n:02d}", tags=[tag])["id"]) for n in range(52)
    ]
    # The newest task, untagged: once it is gone from the list, the Tag filter applies.
    newest = f"Untagged {uuid.uuid4().hex[:6]}"
    ids.append(str(_create_via_api(ui_server, newest)["id"]))
    expect(_row(page, newest)).to_be_visible()
    page.get_by_label("Tag", exact=True).fill(tag)
    expect(_row(page, newest)).to_have_count(0)
    rows = page.get_by_role("row").filter(has_text=tag)
    expect(rows).to_have_count(50)
    page.get_by_role("button", name="Load more tasks", exact=True).click()
    expect(rows).to_have_count(52)
    expect(page.get_by_role("button", name="Load more tasks", exact=True)).to_have_count(0)
    # Newest first; the oldest two came with the second page.
    expect(rows.last).to_contain_text(f"Page {tag} 00")
    page.wait_for_timeout(1500)  # a poll or two later, the loaded page is still there
    expect(rows).to_have_count(52)
    done = ui_server.api("POST", "/api/tasks/bulk-delete", {"ids": ids}).json()["results"]
    assert all(result["ok"] for result in done)
