"""The API docs in a real browser, under their Content-Security-Policy: Swagger UI and ReDoc
render every operation, nothing of theirs is blocked but ReDoc's own third-party logo, and
an inline script that is not theirs cannot run."""

from __future__ import annotations

from playwright.sync_api import Page, expect

from tests.ui.conftest import PageProblems

INJECTED = "document.body.dataset.injected = 'ran'"


def test_swagger_ui_renders_under_its_policy(page: Page) -> None:
    response = page.goto("/docs")
    assert response is not None and response.headers["x-frame-options"] == "DENY"
    assert "script-src 'self' 'sha256-" in response.headers["content-security-policy"]
    expect(page.locator(".opblock-summary-path", has_text="/api/tasks").first).to_be_visible()
    expect(page.get_by_text("Cronpilot", exact=False).first).to_be_visible()


def test_redoc_renders_and_its_third_party_logo_is_blocked(
    page: Page, page_errors: PageProblems
) -> None:
    # ReDoc's footer points an <img> at cdn.redoc.ly: the policy blocks it, so the browser
    # reports the attempt, and nothing leaves.
    page_errors.allow(r"cdn\.redoc\.ly")
    blocked: list[str] = []
    page.on("console", lambda m: blocked.append(m.text) if "cdn.redoc.ly" in m.text else None)
    response = page.goto("/redoc")
    assert (
        response is not None and "default-src 'none'" in response.headers["content-security-policy"]
    )
    expect(page.get_by_role("heading", name="Create Task").first).to_be_visible()
    for _ in range(100):  # the logo loads after the page: its refusal is logged then
        if blocked:
            break
        page.wait_for_timeout(100)
    assert any("Content Security Policy" in line for line in blocked), blocked


def test_an_injected_inline_script_does_not_run(page: Page, page_errors: PageProblems) -> None:
    page_errors.allow(r"Executing inline script violates the following Content Security Policy")
    page.goto("/docs")
    expect(page.locator(".opblock").first).to_be_visible()
    page.evaluate(
        """(code) => { const s = document.createElement('script'); s.textContent = code;
        document.body.appendChild(s); }""",
        INJECTED,
    )
    page.wait_for_timeout(200)
    assert page.evaluate("document.body.dataset.injected") is None
