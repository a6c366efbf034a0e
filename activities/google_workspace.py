"""The ``google_workspace`` action: Gmail, Sheets, Drive and Calendar over Google's REST APIs.

Every path is relative to ``GOOGLE_API_BASE_URL`` (default ``https://www.googleapis.com``).
Sheets is the exception Google makes: its API lives on ``sheets.googleapis.com``, so with the
default base URL Sheets requests go there, and with any other base URL (a proxy, a test
server) its ``/v4/spreadsheets/...`` paths are relative to that base like every other path.

``credentials_secret`` names a user secret holding JSON, either ``{"access_token": "..."}``
or a service-account key file (``"type": "service_account"``, with ``client_email``,
``private_key`` and ``token_uri``; an optional ``"subject"`` is the user to impersonate
through domain-wide delegation, which Gmail needs). For a key, the action signs a
JWT-bearer assertion with google-auth's signer and exchanges it at the token endpoint
(``GOOGLE_TOKEN_URL``, else the key's ``token_uri``) through the guarded HTTP client:
google-auth's own refresh is synchronous and would bypass the network guard. Minted
tokens are cached per key, scope and token endpoint until shortly before they expire.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from email.message import EmailMessage
from typing import Any
from urllib.parse import quote

import httpx
from google.auth import crypt, jwt
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from activities._action import ActionRun
from activities._failure import ActionFailure
from activities._http import classified, read_capped, status_failure, text_of, where
from schema.actions import GoogleWorkspaceConfig

GOOGLE_API_BASE_URL = "https://www.googleapis.com"
SHEETS_BASE_URL = "https://sheets.googleapis.com"
GOOGLE_TOKEN_URI = "https://oauth2.googleapis.com/token"
JWT_BEARER_GRANT = "urn:ietf:params:oauth:grant-type:jwt-bearer"
SCOPES = {
    "gmail": "https://www.googleapis.com/auth/gmail.send",
    "sheets": "https://www.googleapis.com/auth/spreadsheets",
    "drive": "https://www.googleapis.com/auth/drive.file",
    "calendar": "https://www.googleapis.com/auth/calendar.events",
}
ASSERTION_LIFETIME_SECONDS = 3600
# A token this close to its expiry is minted again rather than sent and rejected.
TOKEN_REFRESH_MARGIN_SECONDS = 300
MAX_CACHED_TOKENS = 1024
REQUEST_TIMEOUT_SECONDS = 60.0
# What is read of an answer (memory); the result is bounded by the runtime.
MAX_RESPONSE_BYTES = 8 * 1024 * 1024
NOISY_FIELDS = frozenset({"kind", "etag", "iCalUID", "sequence", "reminders", "eventType"})
RATE_LIMIT_REASONS = frozenset(
    {"rateLimitExceeded", "userRateLimitExceeded", "RATE_LIMIT_EXCEEDED"}
)
MIME_TYPE = re.compile(r"[\w.+-]+/[\w.+-]+( *;[^\r\n]*)?")
# An access token goes into the Authorization header: printable ASCII, no spaces.
TOKEN = re.compile(r"[\x21-\x7e]+")

# (sha256 of the private key, client_email, subject, scope, token URL) -> (token, good until).
# The key's hash is part of the key so a token is only ever handed to a holder of that key.
_tokens: dict[tuple[str, str, str, str, str], tuple[str, float]] = {}

Scalar = str | int | float | bool | None


class _Params(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _one_line(value: str) -> str:
    if "\r" in value or "\n" in value:
        raise ValueError("must not contain line breaks")
    return value


class SendEmailParams(_Params):
    """``gmail/send_email``: a text and/or HTML message, sent as the authorised user."""

    to: list[str] = Field(min_length=1)
    subject: str
    text: str | None = None
    html: str | None = None

    @field_validator("to", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("to")
    @classmethod
    def _addresses(cls, value: list[str]) -> list[str]:
        for address in value:
            if "@" not in _one_line(address):
                raise ValueError(f"{address!r} is not an email address")
        return value

    @field_validator("subject")
    @classmethod
    def _subject(cls, value: str) -> str:
        return _one_line(value)

    @model_validator(mode="after")
    def _has_body(self) -> SendEmailParams:
        if self.text is None and self.html is None:
            raise ValueError("text or html is required")
        return self


class AppendRowsParams(_Params):
    """``sheets/append_rows``: rows appended after the table found in ``range``."""

    spreadsheet_id: str = Field(min_length=1)
    range: str = Field(min_length=1)
    values: list[list[Scalar]] = Field(min_length=1)


class ReadRangeParams(_Params):
    """``sheets/read_range``: the values of one A1 range."""

    spreadsheet_id: str = Field(min_length=1)
    range: str = Field(min_length=1)


class UploadFileParams(_Params):
    """``drive/upload_file``: a text file created in My Drive or in ``folder_id``."""

    name: str = Field(min_length=1)
    content: str
    mime_type: str = "text/plain"
    folder_id: str | None = None

    @field_validator("mime_type")
    @classmethod
    def _mime_type(cls, value: str) -> str:
        if not MIME_TYPE.fullmatch(value):
            raise ValueError(f"{value!r} is not a MIME type")
        return value


class CreateEventParams(_Params):
    """``calendar/create_event``: a timed event (``start``/``end`` are ISO 8601 times)."""

    calendar_id: str = Field("primary", min_length=1)
    summary: str
    description: str | None = None
    start: datetime
    end: datetime
    time_zone: str | None = None

    @model_validator(mode="after")
    def _times(self) -> CreateEventParams:
        naive = [t for t in (self.start, self.end) if t.tzinfo is None]
        if naive and self.time_zone is None:
            raise ValueError("start and end need a UTC offset, or time_zone must be given")
        if len(naive) in (0, 2) and self.end <= self.start:
            raise ValueError("end must be after start")
        return self


@dataclass(frozen=True)
class ApiRequest:
    """One request to a Google API, its path relative to the service's base URL."""

    method: str
    path: str
    query: dict[str, str] = field(default_factory=dict)
    json: dict[str, Any] | None = None
    content: bytes | None = None
    content_type: str | None = None


@dataclass(frozen=True)
class ServiceAccount:
    """The parts of a service-account key file that minting a token needs."""

    client_email: str
    private_key: str
    token_uri: str
    subject: str | None
    signer: crypt.Signer


def _segment(value: str) -> str:
    return quote(value, safe="")


def _send_email(params: SendEmailParams) -> ApiRequest:
    message = EmailMessage()
    message["To"] = ", ".join(params.to)
    message["Subject"] = params.subject
    if params.text is not None:
        message.set_content(params.text)
        if params.html is not None:
            message.add_alternative(params.html, subtype="html")
    elif params.html is not None:
        message.set_content(params.html, subtype="html")
    raw = base64.urlsafe_b64encode(message.as_bytes()).decode()
    return ApiRequest("POST", "/gmail/v1/users/me/messages/send", json={"raw": raw})


def _append_rows(params: AppendRowsParams) -> ApiRequest:
    path = (
        f"/v4/spreadsheets/{_segment(params.spreadsheet_id)}/values/{_segment(params.range)}:append"
    )
    return ApiRequest(
        "POST", path, query={"valueInputOption": "USER_ENTERED"}, json={"values": params.values}
    )


def _read_range(params: ReadRangeParams) -> ApiRequest:
    path = f"/v4/spreadsheets/{_segment(params.spreadsheet_id)}/values/{_segment(params.range)}"
    return ApiRequest("GET", path)


def _upload_file(params: UploadFileParams) -> ApiRequest:
    metadata: dict[str, Any] = {"name": params.name, "mimeType": params.mime_type}
    if params.folder_id:
        metadata["parents"] = [params.folder_id]
    media = params.content.encode()
    boundary = f"cronpilot-{uuid.uuid4().hex}"
    while boundary.encode() in media:
        boundary = f"cronpilot-{uuid.uuid4().hex}"
    body = b"".join(
        [
            f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
            json.dumps(metadata).encode(),
            f"\r\n--{boundary}\r\nContent-Type: {params.mime_type}\r\n\r\n".encode(),
            media,
            f"\r\n--{boundary}--\r\n".encode(),
        ]
    )
    return ApiRequest(
        "POST",
        "/upload/drive/v3/files",
        # Without supportsAllDrives, uploads into a shared drive's folder are refused.
        query={
            "uploadType": "multipart",
            "supportsAllDrives": "true",
            "fields": "id,name,mimeType,parents,webViewLink",
        },
        content=body,
        content_type=f"multipart/related; boundary={boundary}",
    )


def _create_event(params: CreateEventParams) -> ApiRequest:
    def moment(at: datetime) -> dict[str, str]:
        when = {"dateTime": at.isoformat()}
        if params.time_zone is not None:
            when["timeZone"] = params.time_zone
        return when

    event: dict[str, Any] = {
        "summary": params.summary,
        "start": moment(params.start),
        "end": moment(params.end),
    }
    if params.description is not None:
        event["description"] = params.description
    return ApiRequest(
        "POST", f"/calendar/v3/calendars/{_segment(params.calendar_id)}/events", json=event
    )


OPERATIONS: dict[str, tuple[type[_Params], Callable[[Any], ApiRequest]]] = {
    "send_email": (SendEmailParams, _send_email),
    "append_rows": (AppendRowsParams, _append_rows),
    "read_range": (ReadRangeParams, _read_range),
    "upload_file": (UploadFileParams, _upload_file),
    "create_event": (CreateEventParams, _create_event),
}


async def call(run: ActionRun, config: GoogleWorkspaceConfig) -> dict[str, Any]:
    """Call one Google Workspace operation; return the API's response without noisy fields."""
    model, build = OPERATIONS[config.operation]
    try:
        params = model.model_validate(config.params)
    except ValidationError as error:
        problems = "; ".join(
            f"params.{'.'.join(str(p) for p in e['loc']) or '(root)'}: {e['msg']}"
            for e in error.errors()
        )
        message = f"{config.operation}: {problems}"
        raise ActionFailure("InvalidConfig", message, retryable=False) from None
    request = build(params)
    credentials = _credentials(
        run, config.credentials_secret, await run.secret(config.credentials_secret)
    )
    token = await _access_token(run, credentials, SCOPES[config.service])
    response, body = await _send(run, _api_request(run, config.service, request, token))
    run.log(f"HTTP {response.status_code}")
    if not response.is_success:
        raise _status_failure(response, body, token_endpoint=False)
    answer = _without_noise(_decoded(response, body))
    return answer if isinstance(answer, dict) else {"response": answer}


def _credentials(run: ActionRun, name: str, value: str) -> str | ServiceAccount:
    expected = 'expected {"access_token": "..."} or a service-account key file'
    try:
        data = json.loads(value)
    except ValueError:
        run.fail("InvalidCredentials", f"secret {name!r} is not JSON; {expected}", retryable=False)
    if not isinstance(data, dict):
        run.fail("InvalidCredentials", f"secret {name!r}: {expected}", retryable=False)
    for key in ("access_token", "private_key"):
        if isinstance(data.get(key), str):
            run.hide(data[key])
    if data.get("type") == "service_account":
        return _service_account(run, name, data)
    token = data.get("access_token")
    if not isinstance(token, str) or not token:
        run.fail("InvalidCredentials", f"secret {name!r}: {expected}", retryable=False)
    if not TOKEN.fullmatch(token):
        run.fail(
            "InvalidCredentials",
            f"secret {name!r}: the access_token has spaces, line breaks or non-ASCII characters",
            retryable=False,
        )
    return token


def _service_account(run: ActionRun, name: str, data: dict[str, Any]) -> ServiceAccount:
    missing = [k for k in ("client_email", "private_key") if not isinstance(data.get(k), str)]
    if missing:
        run.fail(
            "InvalidCredentials",
            f"service-account key {name!r} lacks {', '.join(missing)}",
            retryable=False,
        )
    subject = data.get("subject")
    token_uri = data.get("token_uri") or GOOGLE_TOKEN_URI
    if not isinstance(token_uri, str) or not isinstance(subject, str | None):
        run.fail(
            "InvalidCredentials",
            f"service-account key {name!r}: token_uri and subject must be strings",
            retryable=False,
        )
    try:
        # google-auth ships py.typed but leaves its signer and JWT functions unannotated.
        signer = crypt.RSASigner.from_service_account_info(data)  # type: ignore[no-untyped-call]
    except ValueError as error:
        run.fail(
            "InvalidCredentials",
            f"service-account key {name!r}: bad private_key ({error})",
            retryable=False,
        )
    return ServiceAccount(data["client_email"], data["private_key"], token_uri, subject, signer)


async def _access_token(run: ActionRun, credentials: str | ServiceAccount, scope: str) -> str:
    if isinstance(credentials, str):
        return credentials
    token_url = run.deps.settings.google_token_url or credentials.token_uri
    key = (
        hashlib.sha256(credentials.private_key.encode()).hexdigest(),
        credentials.client_email,
        credentials.subject or "",
        scope,
        token_url,
    )
    cached = _tokens.get(key)
    if cached is not None and cached[1] > time.monotonic():
        run.log(f"using a cached access token for {credentials.client_email}")
        run.hide(cached[0])
        return cached[0]
    token, expires_in = await _mint(run, credentials, scope, token_url)
    now = time.monotonic()
    for stale in [k for k, (_, until) in _tokens.items() if until <= now]:
        del _tokens[stale]
    if expires_in > TOKEN_REFRESH_MARGIN_SECONDS and len(_tokens) < MAX_CACHED_TOKENS:
        _tokens[key] = (token, now + expires_in - TOKEN_REFRESH_MARGIN_SECONDS)
    return token


async def _mint(
    run: ActionRun, credentials: ServiceAccount, scope: str, token_url: str
) -> tuple[str, float]:
    now = int(time.time())
    claims: dict[str, Any] = {
        "iss": credentials.client_email,
        "scope": scope,
        "aud": token_url,
        "iat": now,
        "exp": now + ASSERTION_LIFETIME_SECONDS,
    }
    if credentials.subject:
        claims["sub"] = credentials.subject
    assertion: bytes = jwt.encode(credentials.signer, claims)  # type: ignore[no-untyped-call]
    run.log(f"minting an access token for {credentials.client_email} ({scope})")
    request = run.deps.http.build_request(
        "POST",
        token_url,
        data={"grant_type": JWT_BEARER_GRANT, "assertion": assertion.decode()},
        timeout=REQUEST_TIMEOUT_SECONDS,
    )
    response, body = await _send(run, request)
    if not response.is_success:
        raise _status_failure(response, body, token_endpoint=True)
    answer = _decoded(response, body)
    token = answer.get("access_token") if isinstance(answer, dict) else None
    if not isinstance(token, str) or not token:
        run.fail("GoogleAuthError", "the token endpoint returned no access_token", retryable=False)
    run.hide(token)
    expires_in = answer.get("expires_in", 0)
    return token, float(expires_in) if isinstance(expires_in, int | float) else 0.0


def _api_request(run: ActionRun, service: str, request: ApiRequest, token: str) -> httpx.Request:
    base = run.deps.settings.google_api_base_url.rstrip("/")
    if service == "sheets" and base == GOOGLE_API_BASE_URL:
        base = SHEETS_BASE_URL
    run.log(f"{request.method} {request.path}")
    headers = {"Authorization": f"Bearer {token}"}
    if request.content_type is not None:
        headers["Content-Type"] = request.content_type
    return run.deps.http.build_request(
        request.method,
        base + request.path,
        params=request.query,
        headers=headers,
        json=request.json,
        content=request.content,
        timeout=REQUEST_TIMEOUT_SECONDS,
    )


async def _send(run: ActionRun, request: httpx.Request) -> tuple[httpx.Response, bytes]:
    with classified(where(request), REQUEST_TIMEOUT_SECONDS):
        response = await run.deps.http.send(request, stream=True)
        body, too_large = await read_capped(response, MAX_RESPONSE_BYTES)
    if too_large:
        raise ActionFailure(
            "HttpResponseTooLarge",
            f"{where(request)} answered more than {MAX_RESPONSE_BYTES} bytes",
            retryable=False,
        )
    return response, body


def _decoded(response: httpx.Response, body: bytes) -> Any:
    text = text_of(response, body)
    try:
        return json.loads(text)
    except ValueError:
        return {"text": text}


def _status_failure(
    response: httpx.Response, body: bytes, *, token_endpoint: bool
) -> ActionFailure:
    """The shared ``HttpStatusError``, but ``GoogleAuthError`` for a refused token or grant,
    and retryable for a 403 that Drive or Gmail use to say "rate limited"."""
    status = response.status_code
    reasons, detail = _error_detail(_decoded(response, body))
    if status in (429, 408) or status >= 500 or reasons & RATE_LIMIT_REASONS:
        return status_failure(response, body, retryable=True, detail=detail)
    if status in (401, 403) or token_endpoint:
        return status_failure(response, body, error_type="GoogleAuthError", detail=detail)
    return status_failure(response, body, detail=detail)


def _error_detail(answer: Any) -> tuple[set[str], str]:
    """The reasons and a readable message of a Google error body (API or OAuth shape)."""
    if not isinstance(answer, dict):
        return set(), ""
    error = answer.get("error")
    if isinstance(error, str):  # OAuth: {"error": "invalid_grant", "error_description": ...}
        return {error}, f"{error}: {answer.get('error_description', '')}".rstrip(": ")
    if not isinstance(error, dict):
        return set(), str(answer.get("text", answer))
    reasons = {
        str(item.get("reason"))
        for item in [*error.get("errors", []), *error.get("details", [])]
        if isinstance(item, dict) and item.get("reason")
    }
    text = f"{error.get('status', '')} {error.get('message', '')}".strip()
    return reasons, text


def _without_noise(value: Any) -> Any:
    """The answer without fields that only say how Google keeps it (kind, etag, ...)."""
    if isinstance(value, dict):
        return {k: _without_noise(v) for k, v in value.items() if k not in NOISY_FIELDS}
    if isinstance(value, list):
        return [_without_noise(item) for item in value]
    return value
