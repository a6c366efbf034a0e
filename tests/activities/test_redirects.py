"""Redirects through the actions' shared HTTP client: a hop to another origin carries none of
the headers the action set, no authentication, no request body and no method but GET, HEAD
or OPTIONS; a hop within the origin keeps them; a cookie one request was given never goes
out with another. Two loopback ports are two origins."""

from __future__ import annotations

import ast
import base64
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from activities._http import OutboundClient, same_origin
from tests.conftest import ApiUser
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.origins import Origin
from tests.fixtures.tasks import recurring

TOKEN = "hdr-token-7f3a9c"
# Headers as a user configures them, each carrying the secret.
HEADERS = {
    "X-Token": "{{ secrets.HDR }}",
    "Authorization": "Bearer {{ secrets.HDR }}",
    "Cookie": "session={{ secrets.HDR }}",
}
CONFIGURED = ("x-token", "authorization", "cookie")


@pytest.fixture(scope="module")
async def origins() -> AsyncIterator[tuple[Origin, Origin]]:
    first, second = Origin(), Origin()
    await first.start()
    await second.start()
    yield first, second
    await first.stop()
    await second.stop()


@pytest.fixture
async def token(harness: ActionHarness) -> str:
    await harness.put_secret("HDR", TOKEN)
    return TOKEN


def _webhook(url: str, method: str, **config: Any) -> dict[str, Any]:
    return {"type": "webhook", "config": {"url": url, "method": method, **config}}


def _logged(lines: list[str], *words: str) -> bool:
    return any(all(word in line for word in words) for line in lines)


@pytest.mark.parametrize(
    ("method", "code"),
    [("GET", 301), ("GET", 302), ("GET", 303), ("GET", 307), ("GET", 308), ("POST", 302)],
)
async def test_a_hop_to_another_origin_carries_none_of_the_configured_headers(
    harness: ActionHarness, origins: tuple[Origin, Origin], token: str, method: str, code: int
) -> None:
    first, second = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"{second.url}/land/{key}", code)
    body = {"body": {"n": 1}} if method == "POST" else {}
    outcome = await harness.run(_webhook(url, method, headers=HEADERS, **body))

    assert outcome.result["status_code"] == 200
    [sent], [landed] = first.requests[key], second.requests[key]
    assert sent["headers"]["x-token"] == token and token in sent["headers"]["cookie"]
    assert not set(CONFIGURED) & set(landed["headers"]), landed["headers"]
    assert token not in str(landed)
    # What the client itself sends still goes.
    assert landed["headers"]["user-agent"] == "Cronpilot/0.1"
    logs = [entry.message for entry in outcome.logs]
    assert _logged(logs, f"HTTP {code}", "another origin", "not sending", *CONFIGURED), logs


@pytest.mark.parametrize("on", ["client", "request"])
@pytest.mark.parametrize("code", [302, 307])
async def test_authentication_goes_with_the_first_request_only(
    origins: tuple[Origin, Origin], on: str, code: int
) -> None:
    """``auth=``, the client's or the request's, authenticates the request it was given: a
    hop to another origin does not get it back; a hop within the origin keeps the header."""
    first, second = origins
    auth = httpx.BasicAuth("user", TOKEN)
    client_auth: dict[str, Any] = {"auth": auth} if on == "client" else {}
    request_auth: dict[str, Any] = {"auth": auth} if on == "request" else {}
    away, home = uuid.uuid4().hex, uuid.uuid4().hex
    async with OutboundClient(follow_redirects=True, **client_auth) as client:
        response = await client.get(
            first.redirect(away, f"{second.url}/land/{away}", code), **request_auth
        )
        assert response.status_code == 200
        response = await client.get(first.redirect(home, f"/land/{home}", code), **request_auth)
        assert response.status_code == 200

    expected = "Basic " + base64.b64encode(f"user:{TOKEN}".encode()).decode()
    [sent], [landed] = first.requests[away], second.requests[away]
    assert sent["headers"]["authorization"] == expected
    assert "authorization" not in landed["headers"] and TOKEN not in str(landed)
    hop, landed_home = first.requests[home]
    assert hop["headers"]["authorization"] == landed_home["headers"]["authorization"] == expected


def test_the_client_imports_nothing_private_to_httpx() -> None:
    """httpx's private modules (``httpx._client``...) change without notice within the
    pinned range: the code may name them for mypy only, under ``TYPE_CHECKING``."""
    private: list[str] = []
    for path in sorted(Path(__file__).parents[2].joinpath("activities").glob("*.py")):
        tree = ast.parse(path.read_text(), str(path))
        for node in tree.body:
            if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
                continue
            for inner in ast.walk(node):
                names = (
                    [inner.module or ""]
                    if isinstance(inner, ast.ImportFrom)
                    else [alias.name for alias in inner.names]
                    if isinstance(inner, ast.Import)
                    else []
                )
                private += [f"{path.name}: {n}" for n in names if n.startswith("httpx._")]
    assert not private


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize("code", [307, 308])
async def test_a_body_is_not_sent_to_another_origin(
    harness: ActionHarness, origins: tuple[Origin, Origin], code: int
) -> None:
    """307 and 308 keep the method and the body: such a hop to another origin is not
    followed, and the redirect is the answer."""
    first, second = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"{second.url}/land/{key}", code)
    action = _webhook(url, "POST", headers=HEADERS, body={"pin": "{{ secrets.HDR }}"})

    failure = await failure_of(harness, action)
    assert (failure.type, failure.non_retryable) == ("HttpStatusError", True)
    assert f"unexpected HTTP {code}" in failure.message
    assert second.hits(key) == 0 and first.hits(key) == 1
    logs = [entry["message"] for entry in failure.details[0]["logs"]]
    assert _logged(logs, f"HTTP {code}", "another origin", "not followed"), logs

    expected = {**action, "config": {**action["config"], "expect_status": [code]}}
    accepted = await harness.run(expected)
    assert accepted.result["status_code"] == code
    assert accepted.result["headers"]["location"] == f"{second.url}/land/{key}"
    assert second.hits(key) == 0


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize(
    ("method", "code"), [("DELETE", 307), ("PUT", 308), ("POST", 307), ("DELETE", 301)]
)
async def test_a_method_that_changes_things_is_not_sent_to_another_origin(
    harness: ActionHarness, origins: tuple[Origin, Origin], method: str, code: int
) -> None:
    """A hop that keeps a method other than GET, HEAD or OPTIONS (307 and 308, and 301 but
    after a POST) is not followed to another origin, even without a body."""
    first, second = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"{second.url}/land/{key}", code)

    failure = await failure_of(harness, _webhook(url, method, headers=HEADERS))
    assert (failure.type, failure.non_retryable) == ("HttpStatusError", True)
    assert second.hits(key) == 0 and first.requests[key][0]["body"] == ""
    logs = [entry["message"] for entry in failure.details[0]["logs"]]
    assert _logged(logs, f"HTTP {code}", "another origin", "not followed", method), logs

    # Within the origin it is followed, method and all.
    home = uuid.uuid4().hex
    url = first.redirect(home, f"/land/{home}", code)
    outcome = await harness.run(_webhook(url, method, headers=HEADERS))
    assert outcome.result["status_code"] == 200
    assert [hit["method"] for hit in first.requests[home]] == [method, method]


@pytest.mark.usefixtures("token")
@pytest.mark.parametrize(("method", "code"), [("DELETE", 302), ("PUT", 303), ("POST", 301)])
async def test_a_redirect_that_turns_the_request_into_a_get_is_followed(
    harness: ActionHarness, origins: tuple[Origin, Origin], method: str, code: int
) -> None:
    first, second = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"{second.url}/land/{key}", code)
    outcome = await harness.run(_webhook(url, method, headers=HEADERS, body={"n": 1}))
    assert outcome.result["status_code"] == 200
    [landed] = second.requests[key]
    assert (landed["method"], landed["body"]) == ("GET", "")


async def test_a_hop_within_the_origin_keeps_every_header_and_the_body(
    harness: ActionHarness, origins: tuple[Origin, Origin], token: str
) -> None:
    first, _ = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"/land/{key}", 307)
    outcome = await harness.run(_webhook(url, "POST", headers=HEADERS, body={"n": 1}))

    assert outcome.result["status_code"] == 200
    hop, landed = first.requests[key]
    assert landed["path"] == f"/land/{key}" and landed["method"] == "POST"
    for name in CONFIGURED:
        assert landed["headers"].get(name) == hop["headers"][name], name
    assert landed["headers"]["cookie"] == f"session={token}"
    assert landed["body"] == hop["body"] == '{"n":1}'
    assert not _logged([entry.message for entry in outcome.logs], "another origin")


async def test_web_scrape_drops_its_headers_on_a_hop_to_another_origin(
    harness: ActionHarness, origins: tuple[Origin, Origin], token: str
) -> None:
    first, second = origins
    key = uuid.uuid4().hex
    url = first.redirect(key, f"{second.url}/land/{key}")
    headers = {"X-Token": "{{ secrets.HDR }}"}
    outcome = await harness.run({"type": "web_scrape", "config": {"url": url, "headers": headers}})

    assert outcome.result["url"] == f"{second.url}/land/{key}"
    assert outcome.result["title"] == "Landed"
    [sent], [landed] = first.requests[key], second.requests[key]
    assert sent["headers"]["x-token"] == token and "text/html" in sent["headers"]["accept"]
    assert "x-token" not in landed["headers"] and token not in str(landed)
    # The scrape's own Accept is the action's choice too: the client's default goes instead.
    assert landed["headers"]["accept"] == "*/*"


async def test_a_cookie_a_target_sets_stays_with_that_request(
    make_user: Any, origins: tuple[Origin, Origin]
) -> None:
    """The worker's client serves every user: a cookie one user's run was given is not sent
    by another user's run. Within one request's redirects, cookies do follow."""
    first, _ = origins
    key = uuid.uuid4().hex
    alice: ApiUser = await make_user()
    bob: ApiUser = await make_user()

    def task(url: str) -> dict[str, Any]:
        return recurring(url, interval_seconds=86400, config={"method": "GET"})

    cookie_url = f"{first.url}/cookie/{key}?set=session=alice-{key}"
    first_run = await alice.run_to_end((await alice.create_task(task(cookie_url)))["id"])
    assert first_run["status"] == "succeeded"
    land_url = f"{first.url}/land/{key}"
    second_run = await bob.run_to_end((await bob.create_task(task(land_url)))["id"])
    assert second_run["status"] == "succeeded"
    landed = first.requests[key][-1]
    assert landed["path"] == f"/land/{key}" and "cookie" not in landed["headers"], landed

    chain = uuid.uuid4().hex
    url = first.redirect(chain, f"/land/{chain}", cookie=f"step={chain}")
    hop_run = await bob.run_to_end((await bob.create_task(task(url)))["id"])
    assert hop_run["status"] == "succeeded"
    assert first.requests[chain][-1]["headers"].get("cookie") == f"step={chain}"


@pytest.mark.parametrize(
    ("url", "other", "same"),
    [
        ("https://a.example/x", "https://a.example:443/y?q", True),
        ("http://a.example/x", "https://a.example/y", True),  # an upgrade, ports 80 -> 443
        ("https://a.example/x", "http://a.example/y", False),  # a downgrade
        ("http://a.example:8080/x", "https://a.example:8443/y", False),
        ("http://a.example/x", "http://b.example/x", False),
        ("http://a.example/x", "http://sub.a.example/x", False),
        ("http://127.0.0.1:8000/x", "http://127.0.0.1:8001/x", False),
    ],
)
def test_what_counts_as_the_same_origin(url: str, other: str, same: bool) -> None:
    assert same_origin(httpx.URL(url), httpx.URL(other)) is same
