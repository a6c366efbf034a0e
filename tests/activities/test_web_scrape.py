"""The web_scrape action against a real page server on loopback: selectors, main text,
charsets, size limits, redirects, classified failures and the network guard."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest

from activities.web_scrape import scrape
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.pages import PageServer


@pytest.fixture(scope="module")
async def pages() -> AsyncIterator[PageServer]:
    server = PageServer()
    await server.start()
    yield server
    await server.stop()


def _scrape(url: str, **config: Any) -> dict[str, Any]:
    return {"type": "web_scrape", "config": {"url": url, **config}}


async def _result(harness: ActionHarness, url: str, **config: Any) -> dict[str, Any]:
    outcome = await harness.run(_scrape(url, **config), handler=scrape)
    result: dict[str, Any] = outcome.result
    return result


async def test_selectors_read_text_attributes_and_every_match(
    harness: ActionHarness, pages: PageServer
) -> None:
    result = await _result(
        harness,
        f"{pages.url}/article",
        selectors={
            "headline": "h1.headline",
            "intro": "p.intro",
            "first_link": "#links a.item",
            "missing": "table.prices td",
            "json_ld": 'script[type="application/ld+json"]',
        },
        attributes={"first_link": "href"},
    )
    assert result["url"] == f"{pages.url}/article" and result["status_code"] == 200
    assert result["title"] == "Café Müller"
    assert result["data"] == {
        "headline": "Grüße aus Köln",
        "intro": "First bold paragraph.",
        "first_link": f"{pages.url}/one",
        "missing": None,
        "json_ld": '{"@type": "Article"}',
    }
    assert result["text"] is None

    every = await _result(
        harness,
        f"{pages.url}/article",
        selectors={"names": "#links a.item", "links": "#links a.item", "none": "table td"},
        attributes={"links": "href"},
        all=True,
    )
    assert every["data"] == {
        "names": ["One", "Two", "No link"],
        "links": [f"{pages.url}/one", f"{pages.url}/two?x=1", None],
        "none": [],
    }


async def test_without_selectors_the_main_text_leaves_out_scripts_and_furniture(
    harness: ActionHarness, pages: PageServer
) -> None:
    result = await _result(harness, f"{pages.url}/article")
    text = result["text"]
    assert text.splitlines()[:3] == ["Grüße aus Köln", "First bold paragraph.", "One"]
    assert "Second paragraph, café included." in text
    for hidden in ("MARKER", "SITE HEADER", "NAV LINK", "SITE FOOTER", ".hidden", "@type"):
        assert hidden not in text
    assert result["data"] == {}


@pytest.mark.parametrize(
    ("path", "selector", "title", "value"),
    [
        ("/article", "h1", "Café Müller", "Grüße aus Köln"),
        ("/latin1", "#name", "Café", "Müller – “quoted” €5"),
        ("/http-equiv", "#place", "Fußgängerzone", "Straße in Köln"),
        ("/conflict", "p", "Müller", "Müller"),
        ("/undeclared", "p", "café", "café \ufffd broken"),
    ],
)
async def test_charset_from_header_then_meta_then_utf8(
    harness: ActionHarness, pages: PageServer, path: str, selector: str, title: str, value: str
) -> None:
    result = await _result(harness, pages.url + path, selectors={"value": selector})
    assert (result["title"], result["data"]["value"]) == (title, value)


async def test_max_bytes_is_enforced_while_streaming_and_from_content_length(
    harness: ActionHarness, pages: PageServer
) -> None:
    fits = await _result(harness, f"{pages.url}/big?kb=1500", selectors={"end": "#end"})
    assert fits["data"]["end"] == "THE END"
    for url in (f"{pages.url}/big?kb=4000", f"{pages.url}/big?kb=4000&length=1"):
        error = await failure_of(harness, _scrape(url, max_bytes=1_000_000), handler=scrape)
        assert (error.type, error.non_retryable) == ("HttpResponseTooLarge", True)
        assert "1000000" in error.message


async def test_redirects_are_followed_to_the_final_url(
    harness: ActionHarness, pages: PageServer
) -> None:
    hop = f"{pages.url}/redirect?to=/article"
    result = await _result(harness, f"{pages.url}/redirect?to={hop}", selectors={"h": "h1"})
    assert result["url"] == f"{pages.url}/article"
    assert result["data"]["h"] == "Grüße aus Köln"
    loop = await failure_of(harness, _scrape(f"{pages.url}/loop"), handler=scrape)
    assert (loop.type, loop.non_retryable) == ("TooManyRedirects", True)


@pytest.mark.parametrize(
    ("code", "retryable"), [(404, False), (403, False), (500, True), (503, True), (408, True)]
)
async def test_error_statuses_are_classified(
    harness: ActionHarness, pages: PageServer, code: int, retryable: bool
) -> None:
    error = await failure_of(harness, _scrape(f"{pages.url}/status/{code}"), handler=scrape)
    assert (error.type, error.non_retryable) == ("HttpStatusError", not retryable)
    assert str(code) in error.message


async def test_429_honours_retry_after(harness: ActionHarness, pages: PageServer) -> None:
    error = await failure_of(
        harness, _scrape(f"{pages.url}/status/429?retry_after=7"), handler=scrape, max_attempts=3
    )
    assert (error.type, error.non_retryable) == ("HttpStatusError", False)
    assert error.next_retry_delay is not None and error.next_retry_delay.total_seconds() == 7


async def test_a_page_slower_than_the_timeout_is_a_retryable_timeout(
    harness: ActionHarness, pages: PageServer
) -> None:
    # Every chunk arrives well within the timeout; the whole page does not.
    url = f"{pages.url}/slow?every=0.1&chunks=100"
    error = await failure_of(harness, _scrape(url, timeout_seconds=0.5), handler=scrape)
    assert (error.type, error.non_retryable) == ("HttpTimeout", False)


async def test_connection_refused_is_retryable(harness: ActionHarness, pages: PageServer) -> None:
    closed = PageServer()  # a free port nobody listens on
    error = await failure_of(harness, _scrape(f"{closed.url}/article"), handler=scrape)
    assert (error.type, error.non_retryable) == ("HttpConnectionError", False)
    assert pages.url != closed.url


async def test_an_invalid_selector_fails_before_any_request(
    harness: ActionHarness, pages: PageServer
) -> None:
    before = len(pages.paths)
    error = await failure_of(
        harness,
        _scrape(f"{pages.url}/article", selectors={"ok": "h1", "broken": "a[href"}),
        handler=scrape,
    )
    assert (error.type, error.non_retryable) == ("InvalidSelector", True)
    assert "broken" in error.message
    assert len(pages.paths) == before


async def test_non_html_is_refused_but_xml_feeds_are_read(
    harness: ActionHarness, pages: PageServer
) -> None:
    error = await failure_of(harness, _scrape(f"{pages.url}/json"), handler=scrape)
    assert (error.type, error.non_retryable) == ("NotHtml", True)
    feed = await _result(
        harness, f"{pages.url}/feed.xml", selectors={"t": "item > title"}, all=True
    )
    assert feed["data"]["t"] == ["First post", "Café post"]


async def test_headers_are_sent_and_deep_pages_do_not_overflow(
    harness: ActionHarness, pages: PageServer
) -> None:
    await harness.put_secret("SCRAPE_TOKEN", "tok-5f3a9c")
    result = await _result(
        harness,
        f"{pages.url}/headers",
        headers={"X-Token": "{{ secrets.SCRAPE_TOKEN }}", "User-Agent": "scraper/1"},
        selectors={"token": "#x-token", "agent": "#user-agent", "accept": "#accept"},
    )
    assert result["data"]["token"] == "***", "the echoed secret is redacted"
    assert result["data"]["agent"] == "scraper/1" and "text/html" in result["data"]["accept"]
    deep = await _result(harness, f"{pages.url}/deep?levels=3000")
    assert deep["text"] == "deep text"


async def test_the_network_guard_refuses_the_loopback_page_server(
    harness: ActionHarness, pages: PageServer
) -> None:
    before = len(pages.paths)
    error = await failure_of(
        harness, _scrape(f"{pages.url}/article"), handler=scrape, allow_private_networks=False
    )
    assert (error.type, error.non_retryable) == ("BlockedAddress", True)
    assert len(pages.paths) == before
