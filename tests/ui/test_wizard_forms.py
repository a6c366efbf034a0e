"""The wizard's action forms: code typed into the vendored editor runs (and the list shows the
run while it is running), a chain made with the step editor runs with its steps in the
history, the JSON toggle edits the same config as the form, every action type has its form,
and editing goes through the same wizard."""

from __future__ import annotations

import json
import re
import uuid

from playwright.sync_api import Locator, Page, expect

from tests.ui.conftest import UiServer, new_task, shot

ACTIONS = {
    "Webhook": ["URL", "Method", "Headers (JSON)", "Body (JSON)"],
    "AI prompt": ["Prompt", "System prompt", "Model", "Max tokens"],
    "Send email": ["To", "Subject", "Body"],
    "Run code": ["Language", "Code", "Input (JSON)"],
    "Generate report": ["Title", "Instructions", "Sources (JSON)", "Format"],
    "Web scrape": ["URL", "Field name 1", "CSS selector 1"],
    "Task chain": ["Step 1 id", "Step 1 kind", "Step 1 action type"],
    "File operation": ["Operation", "Path"],
    "Google Workspace": ["Service", "Operation", "Credentials secret", "Parameters (JSON)"],
}


def _new_task(page: Page, ui_server: UiServer, name: str) -> Locator:
    page.goto(ui_server.sign_in_url)
    wizard = new_task(page, name)
    wizard.get_by_role("button", name="Action").click()
    return wizard


def _row(page: Page, name: str) -> Locator:
    return page.get_by_role("row").filter(has_text=name)


def test_every_action_type_has_its_form_and_json_edits_the_same_config(
    page: Page, ui_server: UiServer
) -> None:
    wizard = _new_task(page, ui_server, "Forms")
    for choice, fields in ACTIONS.items():
        wizard.get_by_role("radio", name=choice, exact=True).check()
        for label in fields:
            expect(wizard.get_by_label(label, exact=True).first).to_be_visible()
    # The form and the JSON view are one config.
    wizard.get_by_role("radio", name="Webhook", exact=True).check()
    wizard.get_by_label("URL", exact=True).fill("https://example.com/from-the-form")
    wizard.get_by_label("JSON", exact=True).check()
    raw = wizard.get_by_label("Action config (JSON)", exact=True)
    assert json.loads(raw.input_value())["url"] == "https://example.com/from-the-form"
    raw.fill(json.dumps({"url": "https://example.com/from-json", "method": "PUT"}))
    wizard.get_by_label("JSON", exact=True).uncheck()
    expect(wizard.get_by_label("URL", exact=True)).to_have_value("https://example.com/from-json")
    expect(wizard.get_by_label("Method", exact=True)).to_have_value("PUT")
    wizard.get_by_role("button", name="Options").click()
    sent = json.loads(wizard.get_by_label("Request JSON").inner_text())
    assert sent["action"] == {
        "type": "webhook",
        "config": {"url": "https://example.com/from-json", "method": "PUT"},
    }


def test_code_from_the_editor_runs_and_shows_running_then_succeeded(
    page: Page, ui_server: UiServer
) -> None:
    name = f"Code {uuid.uuid4().hex[:6]}"
    wizard = _new_task(page, ui_server, name)
    wizard.get_by_role("radio", name="Run code", exact=True).check()
    editor = wizard.locator(".CodeMirror")
    expect(editor).to_be_visible()
    expect(editor.locator(".cm-keyword").first).to_be_visible()  # highlighted
    editor.click()
    page.keyboard.press("Control+A")
    page.keyboard.press("Delete")
    page.keyboard.type('import time\ntime.sleep(6)\nprint("typed in the editor")\n')
    shot(page, "wizard-code")
    wizard.get_by_role("button", name="Options").click()
    sent = json.loads(wizard.get_by_label("Request JSON").inner_text())
    assert sent["action"]["config"]["code"].startswith("import time\ntime.sleep(6)")
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()
    row = _row(page, name)
    row.get_by_role("button", name=f"Run now {name}", exact=True).click()
    expect(row).to_contain_text("running")  # while it sleeps, without a reload
    expect(row).to_contain_text("succeeded", timeout=20_000)
    row.get_by_role("button", name=f"History {name}", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile("^History"))
    history.get_by_role("button", name=re.compile("^Details of run")).first.click()
    result = history.locator("details.json").filter(has_text="Result").first
    result.locator("summary").click()  # the result viewer starts collapsed
    expect(result.locator("pre")).to_contain_text("typed in the editor")


def test_a_chain_from_the_step_editor_runs_and_its_steps_show(
    page: Page, ui_server: UiServer
) -> None:
    name = f"Chain {uuid.uuid4().hex[:6]}"
    wizard = _new_task(page, ui_server, name)
    wizard.get_by_role("radio", name="Task chain", exact=True).check()
    wizard.get_by_label("Step 1 id", exact=True).fill("ping")
    wizard.get_by_label("Step 1 config (JSON)", exact=True).fill(
        json.dumps({"url": f"{ui_server.base_url}/healthz", "method": "GET"})
    )
    wizard.get_by_role("button", name="Add step", exact=True).click()
    wizard.get_by_label("Step 2 id", exact=True).fill("pause")
    wizard.get_by_label("Step 2 sleep (seconds)", exact=True).fill("1")
    wizard.get_by_role("button", name="Options").click()
    steps = json.loads(wizard.get_by_label("Request JSON").inner_text())["action"]["config"]
    assert [step["id"] for step in steps["steps"]] == ["ping", "pause"]
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()
    row = _row(page, name)
    row.get_by_role("button", name=f"Run now {name}", exact=True).click()
    expect(row).to_contain_text("succeeded", timeout=20_000)
    row.get_by_role("button", name=f"History {name}", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile("^History"))
    history.get_by_role("button", name=re.compile("^Details of run")).first.click()
    for step in ("ping", "pause"):
        expect(history.locator(".run-step").filter(has_text=step)).to_contain_text("succeeded")
    shot(page, "history-chain")


def test_editing_uses_the_same_wizard(page: Page, ui_server: UiServer) -> None:
    name = f"Edit me {uuid.uuid4().hex[:6]}"
    created = ui_server.api(
        "POST",
        "/api/tasks",
        {
            "name": name,
            "type": "recurring",
            "schedule": {"interval_seconds": 3600, "timezone": "Asia/Tokyo"},
            "action": {"type": "webhook", "config": {"url": "https://example.com/"}},
            "notify": {"on": ["failure"], "email": ["ops@example.com"]},
            "tags": ["keep"],
        },
    ).json()
    page.goto(ui_server.sign_in_url)
    _row(page, name).get_by_role("button", name=f"Edit {name}", exact=True).click()
    wizard = page.get_by_role("dialog", name="Edit task")
    expect(wizard.get_by_label("Name", exact=True)).to_have_value(name)
    wizard.get_by_label("Name", exact=True).fill(f"{name} renamed")
    wizard.get_by_role("button", name="Schedule").click()
    expect(wizard.get_by_label("Interval (seconds)", exact=True)).to_have_value("3600")
    expect(wizard.get_by_label("Time zone", exact=True)).to_have_value("Asia/Tokyo")
    wizard.get_by_role("button", name="Options").click()
    expect(wizard.get_by_label("Notify on failure", exact=True)).to_be_checked()
    wizard.get_by_role("button", name="Save task", exact=True).click()
    expect(wizard).to_be_hidden()
    expect(_row(page, f"{name} renamed")).to_be_visible()
    saved = ui_server.api("GET", f"/api/tasks/{created['id']}").json()
    assert saved["name"] == f"{name} renamed"
    assert saved["schedule"]["interval_seconds"] == 3600
    assert saved["schedule"]["timezone"] == "Asia/Tokyo"
    assert saved["notify"]["email"] == ["ops@example.com"]
    assert saved["tags"] == ["keep"]
    assert saved["action"] == created["action"]
