"""The google_workspace action against a fake Google on loopback: the five operations, both
credential forms (a static access token and a service-account key whose JWT the fake
verifies), token caching, error classification and the network guard."""

from __future__ import annotations

import base64
import json
import uuid
from collections.abc import AsyncIterator
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from activities.google_workspace import call
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.fake_google import FakeGoogle

SCOPE = "https://www.googleapis.com/auth/"
REAL_TOKEN_URI = "https://oauth2.googleapis.com/token"


@pytest.fixture
async def google() -> AsyncIterator[FakeGoogle]:
    server = FakeGoogle()
    await server.start()
    yield server
    await server.stop()


@pytest.fixture(scope="module")
def keys() -> list[rsa.RSAPrivateKey]:
    """Two service-account key pairs (the second is never registered with the fake)."""
    return [rsa.generate_private_key(public_exponent=65537, key_size=2048) for _ in range(2)]


def _pem(key: rsa.RSAPrivateKey) -> str:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def _key_file(
    google: FakeGoogle, key: rsa.RSAPrivateKey, token_uri: str = REAL_TOKEN_URI, **extra: str
) -> dict[str, str]:
    """A service-account key file, its public key registered with the fake."""
    email = f"robot-{uuid.uuid4().hex[:8]}@project.iam.gserviceaccount.com"
    google.add_service_account(email, key.public_key())
    return {
        "type": "service_account",
        "project_id": "project",
        "private_key_id": "kid-1",
        "private_key": _pem(key),
        "client_email": email,
        "token_uri": token_uri,
        **extra,
    }


def _action(service: str, operation: str, params: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "google_workspace",
        "config": {
            "service": service,
            "operation": operation,
            "credentials_secret": "GOOGLE",
            "params": params,
        },
    }


def _on(google: FakeGoogle, **overrides: Any) -> dict[str, Any]:
    return {
        "handler": call,
        "google_api_base_url": google.url,
        "google_token_url": google.token_url,
        **overrides,
    }


async def test_gmail_sends_a_raw_rfc822_message_with_an_access_token(
    harness: ActionHarness, google: FakeGoogle
) -> None:
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google.STATIC_TOKEN}))
    params = {"to": ["a@example.com", "b@example.com"], "subject": "Daily report"}
    action = _action("gmail", "send_email", {**params, "text": "All good.", "html": "<b>ok</b>"})
    outcome = await harness.run(action, **_on(google))
    [sent] = google.requests
    assert (sent["method"], sent["path"]) == ("POST", "/gmail/v1/users/me/messages/send")
    assert sent["headers"]["authorization"] == f"Bearer {google.STATIC_TOKEN}"
    assert sent["headers"]["content-type"] == "application/json"
    raw = json.loads(sent["body"])["raw"]
    assert base64.urlsafe_b64decode(raw) and "+" not in raw and "/" not in raw
    message = sent["message"]
    assert message["To"] == "a@example.com, b@example.com"
    assert message["Subject"] == "Daily report"
    assert message.get_content_type() == "multipart/alternative"
    assert message.get_body(("plain",)).get_content().strip() == "All good."
    assert message.get_body(("html",)).get_content().strip() == "<b>ok</b>"
    assert outcome.result["labelIds"] == ["SENT"] and outcome.result["threadId"] == "t1"
    assert google.token_requests == []
    assert google.STATIC_TOKEN not in outcome.model_dump_json()


async def test_sheets_append_then_read_share_one_token_minted_for_a_service_account(
    harness: ActionHarness, google: FakeGoogle, keys: list[rsa.RSAPrivateKey]
) -> None:
    key_file = _key_file(google, keys[0])
    await harness.put_secret("GOOGLE", json.dumps(key_file))
    rows = [["2025-01-01", 3, True], ["=SUM(B1:B1)", 1.5, None]]
    where = {"spreadsheet_id": "1AbC-xyz_9", "range": "'Q1 Sales'!A1:C3"}
    appended = await harness.run(
        _action("sheets", "append_rows", {**where, "values": rows}), **_on(google)
    )
    read = await harness.run(_action("sheets", "read_range", where), **_on(google))

    [grant] = google.token_requests
    assert grant["header"]["alg"] == "RS256" and grant["header"]["kid"] == "kid-1"
    claims = grant["claims"]
    assert claims["iss"] == key_file["client_email"] and "sub" not in claims
    assert (claims["scope"], claims["aud"]) == (SCOPE + "spreadsheets", google.token_url)
    append, get = google.requests
    encoded = "/v4/spreadsheets/1AbC-xyz_9/values/%27Q1%20Sales%27%21A1%3AC3"
    assert (append["method"], append["path"]) == ("POST", encoded + ":append")
    assert append["query"] == {"valueInputOption": "USER_ENTERED"}
    assert json.loads(append["body"]) == {"values": rows}
    assert (get["method"], get["path"], get["query"]) == ("GET", encoded, {})
    for sent in (append, get):
        assert sent["headers"]["authorization"] == f"Bearer {grant['token']}"
    assert appended.result["updates"]["updatedRows"] == 2
    assert read.result["values"] == rows and read.result["range"] == "'Q1 Sales'!A1:C3"
    for outcome in (appended, read):
        dumped = outcome.model_dump_json()
        assert grant["token"] not in dumped and "PRIVATE KEY" not in dumped


async def test_drive_upload_sends_metadata_and_media_as_multipart_related(
    harness: ActionHarness, google: FakeGoogle, keys: list[rsa.RSAPrivateKey]
) -> None:
    key_file = _key_file(google, keys[0], subject="alice@example.com")
    await harness.put_secret("GOOGLE", json.dumps(key_file))
    content = "name,total\r\nalice,3\nbob,4\n"
    params = {"name": "report.csv", "content": content, "mime_type": "text/csv"}
    outcome = await harness.run(
        _action("drive", "upload_file", {**params, "folder_id": "folder-1"}), **_on(google)
    )
    [grant] = google.token_requests
    assert grant["claims"]["sub"] == "alice@example.com"
    assert grant["claims"]["scope"] == SCOPE + "drive.file"
    [sent] = google.requests
    assert (sent["method"], sent["path"]) == ("POST", "/upload/drive/v3/files")
    assert sent["query"]["uploadType"] == "multipart"
    assert sent["query"]["supportsAllDrives"] == "true"
    assert sent["headers"]["content-type"].startswith("multipart/related; boundary=")
    metadata, media = sent["parts"]
    assert metadata.get_content_type() == "application/json"
    assert json.loads(metadata.get_payload(decode=True)) == {
        "name": "report.csv",
        "mimeType": "text/csv",
        "parents": ["folder-1"],
    }
    assert media.get_content_type() == "text/csv"
    assert media.get_payload(decode=True) == content.encode()
    assert outcome.result["name"] == "report.csv" and outcome.result["parents"] == ["folder-1"]
    assert "kind" not in outcome.result


async def test_calendar_events_use_the_keys_token_uri_and_a_cached_token(
    harness: ActionHarness, google: FakeGoogle, keys: list[rsa.RSAPrivateKey]
) -> None:
    key_file = _key_file(google, keys[0], token_uri=google.token_url)
    await harness.put_secret("GOOGLE", json.dumps(key_file))
    params = {
        "summary": "Standup",
        "description": "daily",
        "start": "2025-03-03T09:00:00",
        "end": "2025-03-03T09:15:00",
        "time_zone": "Europe/Paris",
    }
    team = "team@group.calendar.google.com"
    outcome = await harness.run(
        _action("calendar", "create_event", {**params, "calendar_id": team}),
        **_on(google, google_token_url=None),
    )
    await harness.run(
        _action("calendar", "create_event", {"summary": "x", **_utc_hour()}),
        **_on(google, google_token_url=None),
    )
    [grant] = google.token_requests
    assert grant["claims"]["scope"] == SCOPE + "calendar.events"
    first, second = google.requests
    assert first["path"] == "/calendar/v3/calendars/team%40group.calendar.google.com/events"
    assert json.loads(first["body"]) == {
        "summary": "Standup",
        "description": "daily",
        "start": {"dateTime": "2025-03-03T09:00:00", "timeZone": "Europe/Paris"},
        "end": {"dateTime": "2025-03-03T09:15:00", "timeZone": "Europe/Paris"},
    }
    assert second["path"] == "/calendar/v3/calendars/primary/events"
    assert json.loads(second["body"])["start"] == {"dateTime": "2025-03-03T10:00:00+00:00"}
    assert outcome.result["status"] == "confirmed" and outcome.result["summary"] == "Standup"
    assert not {"kind", "etag", "iCalUID", "reminders"} & set(outcome.result)


def _utc_hour() -> dict[str, str]:
    return {"start": "2025-03-03T10:00:00Z", "end": "2025-03-03T11:00:00Z"}


async def test_a_cached_token_is_never_handed_to_another_key(
    harness: ActionHarness, google: FakeGoogle, keys: list[rsa.RSAPrivateKey]
) -> None:
    key_file = _key_file(google, keys[0])
    where = {"spreadsheet_id": "s", "range": "A1"}
    await harness.put_secret("GOOGLE", json.dumps(key_file))
    await harness.run(_action("sheets", "read_range", where), **_on(google))
    impostor = {**key_file, "private_key": _pem(keys[1])}
    await harness.put_secret("GOOGLE", json.dumps(impostor))
    failure = await failure_of(harness, _action("sheets", "read_range", where), **_on(google))
    assert (failure.type, failure.non_retryable) == ("GoogleAuthError", True)
    assert "Invalid JWT Signature" in failure.message
    assert len(google.requests) == 1 and google.token_requests[1]["refused"]


async def test_an_unknown_token_is_a_non_retryable_auth_error(
    harness: ActionHarness, google: FakeGoogle
) -> None:
    await harness.put_secret("GOOGLE", json.dumps({"access_token": "ya29.revoked"}))
    failure = await failure_of(
        harness,
        _action("sheets", "read_range", {"spreadsheet_id": "s", "range": "A1"}),
        **_on(google),
    )
    assert (failure.type, failure.non_retryable) == ("GoogleAuthError", True)
    assert "401" in failure.message and "UNAUTHENTICATED" in failure.message
    assert "ya29.revoked" not in str(failure) + str(failure.details)


def _error(status: int, code: str, reason: str = "") -> dict[str, Any]:
    errors = [{"reason": reason, "domain": "usageLimits"}] if reason else []
    return {"error": {"code": status, "message": "nope", "status": code, "errors": errors}}


@pytest.mark.parametrize(
    ("status", "body", "headers", "error_type", "retryable", "delay"),
    [
        (429, _error(429, "RESOURCE_EXHAUSTED"), {"Retry-After": "7"}, "HttpStatusError",
         True, timedelta(seconds=7)),
        # Drive and Gmail say "rate limited" with a 403 and a reason: retried.
        (403, _error(403, "PERMISSION_DENIED", "userRateLimitExceeded"), {},
         "HttpStatusError", True, None),
        (500, _error(500, "INTERNAL"), {}, "HttpStatusError", True, None),
        (503, _error(503, "UNAVAILABLE"), {"Retry-After": "3"}, "HttpStatusError",
         True, timedelta(seconds=3)),
        (403, _error(403, "PERMISSION_DENIED", "forbidden"), {}, "GoogleAuthError",
         False, None),
        (400, _error(400, "INVALID_ARGUMENT", "badRequest"), {}, "HttpStatusError",
         False, None),
        (404, _error(404, "NOT_FOUND"), {}, "HttpStatusError", False, None),
    ],
)  # fmt: skip
async def test_google_errors_are_classified(
    harness: ActionHarness,
    google: FakeGoogle,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    error_type: str,
    retryable: bool,
    delay: timedelta | None,
) -> None:
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google.STATIC_TOKEN}))
    google.respond_next(status, body, headers)
    failure = await failure_of(
        harness,
        _action("gmail", "send_email", {"to": "a@b.c", "subject": "s", "text": "t"}),
        **_on(google),
    )
    assert (failure.type, failure.non_retryable) == (error_type, not retryable)
    assert f"HTTP {status}" in failure.message and body["error"]["status"] in failure.message
    if delay is not None:
        assert failure.next_retry_delay == delay
    assert len(google.requests) == 1


async def test_a_missing_secret_fails_before_any_request(
    harness: ActionHarness, google: FakeGoogle
) -> None:
    failure = await failure_of(
        harness, _action("drive", "upload_file", {"name": "a", "content": "b"}), **_on(google)
    )
    assert (failure.type, failure.non_retryable) == ("MissingSecret", True)
    assert "GOOGLE" in failure.message
    assert google.requests == [] and google.token_requests == []


@pytest.mark.parametrize(
    "secret",
    [
        "not json at all",
        '["a list"]',
        '{"token": "ya29.wrong-field"}',
        '{"type": "service_account", "client_email": "r@p.iam.gserviceaccount.com"}',
        json.dumps(
            {
                "type": "service_account",
                "client_email": "r@p.iam.gserviceaccount.com",
                "private_key": "-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n",
            }
        ),
    ],
)
async def test_malformed_credentials_are_invalid_credentials(
    harness: ActionHarness, google: FakeGoogle, secret: str
) -> None:
    await harness.put_secret("GOOGLE", secret)
    failure = await failure_of(
        harness, _action("drive", "upload_file", {"name": "a", "content": "b"}), **_on(google)
    )
    assert (failure.type, failure.non_retryable) == ("InvalidCredentials", True)
    assert google.requests == [] and google.token_requests == []


@pytest.mark.parametrize(
    ("service", "operation", "params", "named"),
    [
        ("gmail", "send_email", {"subject": "s", "text": "t"}, "params.to"),
        ("gmail", "send_email", {"to": "a@b.c", "subject": "s", "text": "t", "cc": "x"},
         "params.cc"),
        ("gmail", "send_email", {"to": "a@b.c", "subject": "{{ payload.line }}", "text": "t"},
         "params.subject"),
        ("gmail", "send_email", {"to": "a@b.c", "subject": "s"}, "text or html"),
        ("sheets", "append_rows", {"spreadsheet_id": "s", "range": "A1"}, "params.values"),
        ("sheets", "read_range", {"spreadsheet_id": "s"}, "params.range"),
        ("drive", "upload_file", {"name": "a", "content": "b", "mime_type": "{{ payload.type }}"},
         "params.mime_type"),
        ("calendar", "create_event",
         {"summary": "s", "start": "2025-01-01T10:00:00", "end": "2025-01-01T11:00:00"},
         "time_zone"),
        ("calendar", "create_event", {"summary": "s", "start": "2025-01-01T10:00:00Z"},
         "params.end"),
    ],
)  # fmt: skip
async def test_invalid_params_are_invalid_config_naming_the_param(
    harness: ActionHarness,
    google: FakeGoogle,
    service: str,
    operation: str,
    params: dict[str, Any],
    named: str,
) -> None:
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google.STATIC_TOKEN}))
    # Line breaks written in the config are a 422 at save (tests/schema); these are rendered.
    payload = {"line": "s\r\nBcc: x@y.z", "type": "text/x\r\nX: y"}
    failure = await failure_of(
        harness, _action(service, operation, params), payload=payload, **_on(google)
    )
    assert (failure.type, failure.non_retryable) == ("InvalidConfig", True)
    assert named in failure.message
    assert google.requests == []


async def test_the_network_guard_covers_api_and_token_requests(
    harness: ActionHarness, google: FakeGoogle, keys: list[rsa.RSAPrivateKey]
) -> None:
    action = _action("sheets", "read_range", {"spreadsheet_id": "s", "range": "A1"})
    guarded = _on(google, allow_private_networks=False)
    await harness.put_secret("GOOGLE", json.dumps({"access_token": google.STATIC_TOKEN}))
    blocked_api = await failure_of(harness, action, **guarded)
    await harness.put_secret("GOOGLE", json.dumps(_key_file(google, keys[0])))
    blocked_token = await failure_of(harness, action, **guarded)
    for failure in (blocked_api, blocked_token):
        assert (failure.type, failure.non_retryable) == ("BlockedAddress", True)
    assert google.requests == [] and google.token_requests == []
