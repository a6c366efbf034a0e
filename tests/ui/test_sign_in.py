"""Signing in: `cronpilot dev`'s link signs the dev user in (its token leaves the address
bar, the key stays in the tab's sessionStorage), the form takes a key and refuses a wrong one,
and the sign-in exchange and the page's policy hold over plain HTTP."""

from __future__ import annotations

import re

import httpx
from playwright.sync_api import Page, expect

from tests.ui.conftest import PageProblems, UiServer, shot

STORED_KEY = "() => sessionStorage.getItem('cronpilot.apiKey')"


def test_the_dev_link_signs_in_and_sign_out_forgets_the_key(
    page: Page, ui_server: UiServer
) -> None:
    page.goto(ui_server.sign_in_url)
    sign_out = page.get_by_role("button", name="Sign out", exact=True)
    expect(sign_out).to_be_visible()
    expect(page).not_to_have_url(re.compile("token"))
    assert "token" not in page.url
    assert page.evaluate(STORED_KEY) == ui_server.api_key
    shot(page, "signed-in")

    sign_out.click()
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    assert page.evaluate(STORED_KEY) is None


def test_the_form_refuses_a_wrong_key_and_takes_the_right_one(
    page: Page, ui_server: UiServer, page_errors: PageProblems
) -> None:
    page_errors.allow(r"status of 401 .*/api/me")  # the refused key's GET /api/me
    page.goto("/")
    key = page.get_by_label("API key", exact=True)
    sign_in = page.get_by_role("button", name="Sign in", exact=True)
    sign_out = page.get_by_role("button", name="Sign out", exact=True)
    shot(page, "sign-in")

    key.fill("cp_not-a-key-of-anyone")
    sign_in.click()
    expect(page.get_by_role("alert")).to_be_visible()
    expect(key).to_be_visible()
    expect(sign_out).to_have_count(0)
    assert page.evaluate(STORED_KEY) is None

    key.fill(ui_server.api_key)
    sign_in.click()
    expect(sign_out).to_be_visible()
    tasks = page.get_by_role("link", name="Tasks", exact=True).or_(
        page.get_by_role("tab", name="Tasks", exact=True)
    )
    expect(tasks).to_be_visible()
    assert page.evaluate(STORED_KEY) == ui_server.api_key


def test_the_sign_in_exchange_and_the_pages_policy(ui_server: UiServer) -> None:
    token = (ui_server.data_dir / "dev-sign-in-token").read_text().strip()
    assert ui_server.sign_in_url == f"{ui_server.base_url}/#token={token}"
    with httpx.Client(base_url=ui_server.base_url, timeout=30) as anonymous:
        wrong = anonymous.post("/api/dev/sign-in", json={"token": "not-the-token"})
        assert wrong.status_code == 401, wrong.text
        right = anonymous.post("/api/dev/sign-in", json={"token": token})
        assert right.status_code == 200, right.text
        assert right.json() == {"api_key": ui_server.api_key}

        home = anonymous.get("/")
        assert home.status_code == 200
        policy = home.headers.get("content-security-policy")
        assert policy, "/ has no Content-Security-Policy"
        directives = {
            parts[0]: parts[1:]
            for parts in (directive.split() for directive in policy.split(";"))
            if parts
        }
        scripts = directives.get("script-src", directives.get("default-src"))
        assert scripts is not None, policy
        assert "'unsafe-inline'" not in scripts and "'unsafe-eval'" not in scripts, policy

    me = ui_server.api("GET", "/api/me")
    assert me.status_code == 200, me.text
    assert me.json()["name"] == "dev"


def test_a_refused_key_returns_to_sign_in(
    page: Page, ui_server: UiServer, page_errors: PageProblems
) -> None:
    page_errors.allow(r"status of 401 ")  # the list's next poll with the revoked key
    page.goto(ui_server.sign_in_url)
    expect(page.get_by_role("button", name="Sign out", exact=True)).to_be_visible()
    page.evaluate("() => sessionStorage.setItem('cronpilot.apiKey', 'cp_revoked-meanwhile')")
    expect(page.get_by_label("API key", exact=True)).to_be_visible()
    expect(page.get_by_role("alert")).to_contain_text("Sign in again")
    assert page.evaluate(STORED_KEY) is None
