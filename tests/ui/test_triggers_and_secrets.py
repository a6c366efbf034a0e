"""From the browser alone: a secret is stored (and never shown again), an email trigger task
names it, an event trigger task runs when its event is posted, and the history shows the
task's statistics."""

from __future__ import annotations

import re
import uuid

from playwright.sync_api import Page, expect

from tests.ui.conftest import PageProblems, UiServer, new_task


def test_a_secret_then_an_email_trigger_task_that_names_it(page: Page, ui_server: UiServer) -> None:
    secret = f"IMAP_{uuid.uuid4().hex[:6].upper()}"
    value = "hunter2-" + uuid.uuid4().hex
    page.goto(ui_server.sign_in_url)
    page.get_by_role("link", name="Secrets", exact=True).click()
    page.get_by_label("Secret name", exact=True).fill("1 bad name")
    page.get_by_label("Secret value", exact=True).fill(value)
    page.get_by_role("button", name="Save secret", exact=True).click()
    expect(page.get_by_label("Secret name", exact=True)).to_have_attribute("aria-invalid", "true")
    page.get_by_label("Secret name", exact=True).fill(secret)
    page.get_by_role("button", name="Save secret", exact=True).click()
    listed = page.get_by_role("list", name="Your secrets")
    expect(listed).to_contain_text(secret)
    assert value not in page.content()
    names = [item["name"] for item in ui_server.api("GET", "/api/secrets").json()["items"]]
    assert secret in names

    name = f"Inbox {uuid.uuid4().hex[:6]}"
    wizard = new_task(page, name, "Trigger")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Email", exact=True).check()
    wizard.get_by_label("IMAP host", exact=True).fill("127.0.0.1")
    wizard.get_by_label("IMAP port", exact=True).fill("9")
    wizard.get_by_label("IMAP security", exact=True).select_option("none")
    wizard.get_by_label("Username", exact=True).fill("orders@example.com")
    wizard.get_by_label("Password secret", exact=True).fill(secret)
    wizard.get_by_label("Subject contains", exact=True).fill("Order")
    wizard.get_by_label("Poll every (seconds)", exact=True).fill("3600")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_label("URL", exact=True).fill(f"{ui_server.base_url}/healthz")
    wizard.get_by_role("button", name="Options").click()
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()
    task = ui_server.api("GET", f"/api/tasks?q={name}").json()["items"][0]
    assert task["trigger"] == {
        **task["trigger"],
        "kind": "email",
        "imap_host": "127.0.0.1",
        "imap_port": 9,
        "imap_security": "none",
        "password_secret": secret,
        "subject_contains": "Order",
        "poll_seconds": 3600,
    }
    assert ui_server.api("DELETE", f"/api/tasks/{task['id']}").status_code == 204

    page.get_by_role("link", name="Secrets", exact=True).click()
    listed.get_by_role("button", name=f"Delete {secret}", exact=True).click()
    page.get_by_role("dialog", name=f"Delete {secret}?").get_by_role(
        "button", name="Confirm", exact=True
    ).click()
    expect(listed.get_by_text(secret)).to_have_count(0)


def test_an_event_trigger_task_runs_on_its_event_and_shows_its_statistics(
    page: Page, ui_server: UiServer, page_errors: PageProblems
) -> None:
    page_errors.allow(r"status of 422 .*/api/tasks\)$")  # the bad event name, on purpose
    name = f"On order {uuid.uuid4().hex[:6]}"
    event = f"order.created.{uuid.uuid4().hex[:6]}"
    page.goto(ui_server.sign_in_url)
    wizard = new_task(page, name, "Trigger")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_role("radio", name="Event", exact=True).check()
    wizard.get_by_label("Event name", exact=True).fill("not an event name!")
    wizard.get_by_role("button", name="Next", exact=True).click()
    wizard.get_by_label("URL", exact=True).fill(f"{ui_server.base_url}/healthz")
    wizard.get_by_label("Method", exact=True).select_option("GET")
    wizard.get_by_role("button", name="Options").click()
    wizard.get_by_role("button", name="Create task", exact=True).click()
    # The trigger's error lands on its field, on the Schedule step.
    event_name = wizard.get_by_label("Event name", exact=True)
    expect(event_name).to_have_attribute("aria-invalid", "true")
    event_name.fill(event)
    wizard.get_by_role("button", name="Options").click()
    wizard.get_by_role("button", name="Create task", exact=True).click()
    expect(wizard).to_be_hidden()
    row = page.get_by_role("row").filter(has_text=name)
    expect(row).to_contain_text(f"on event {event}")

    posted = ui_server.api("POST", "/api/events", {"name": event, "payload": {"order": 7}})
    assert posted.status_code == 202, posted.text
    assert posted.json()["matched"] == 1
    expect(row).to_contain_text("succeeded", timeout=20_000)
    row.get_by_role("button", name=f"History {name}", exact=True).click()
    history = page.get_by_role("dialog", name=re.compile("^History"))
    stats = history.get_by_label("Statistics")
    expect(stats).to_contain_text("Runs1")
    expect(stats).to_contain_text("Success rate100%")
    runs = history.get_by_role("list", name=f"Runs of {name}")
    expect(runs.get_by_role("listitem").filter(has_text="succeeded").first).to_contain_text("event")
