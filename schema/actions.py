"""Action configs: one strict model per ``action.type``, joined in a discriminated union.

Adding an action type means a config model, an ``XAction`` wrapper and a route here, a
module in ``activities/`` and one registry entry there.

Values that end up in an HTTP request line or header, or in an email header, are checked
when a config is saved, so that a request that cannot be sent is a located 422, not a run
that retries: URLs (http or https, a host, a port from 1 to 65535, no control characters),
header names (RFC 7230 tokens) and values (no CR, LF or other control character), and
single-line email fields (addresses, subject, a report's title, Gmail's ``to`` and
``subject``, a Drive file's ``mime_type``). A value holding template
syntax is checked once rendered: the activity validates the rendered config again with
``RENDERED``, where every value is checked, and fails with ``InvalidConfig``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit
from uuid import UUID

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
# Validation contexts. Without one (a config as the API receives it), a value holding
# template syntax is left for after rendering; RENDERED checks every value; STORED (a config
# saved, or carried by a schedule or a run, before a check existed) skips the checks on
# request values, so that it still reads, and fails as InvalidConfig when its run validates
# it again after rendering, instead of failing to load.
CONFIG_MODE = "cronpilot_config"
RENDERED = {CONFIG_MODE: "rendered"}
STORED = {CONFIG_MODE: "stored"}
# RFC 7230: a header name is a token.
HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
# Tab is allowed in a header value, no other control character.
HEADER_VALUE_FORBIDDEN = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")
URL_FORBIDDEN = re.compile(r"[\x00-\x1f\x7f]")


def is_template(text: str) -> bool:
    """Whether ``text`` holds template syntax (else it is used as it is)."""
    return "{{" in text or "{%" in text or "{#" in text


def _checked(value: str, info: ValidationInfo) -> bool:
    """Whether a request value is checked in this validation (see the contexts above)."""
    mode = info.context.get(CONFIG_MODE) if isinstance(info.context, dict) else None
    if mode == "stored":
        return False
    return mode == "rendered" or not is_template(value)


def _http_url(value: str, info: ValidationInfo) -> str:
    if not _checked(value, info):
        return value
    if not value.lower().startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    if URL_FORBIDDEN.search(value):
        raise ValueError("must not contain line breaks or other control characters")
    try:
        parts = urlsplit(value)
        port = parts.port
    except ValueError as error:
        message = f"is not a valid URL ({error}); a port is a number from 1 to 65535"
        raise ValueError(message) from None
    if not parts.hostname:
        raise ValueError("has no host")
    if port is not None and not 1 <= port <= 65535:
        raise ValueError(f"port {port} is outside 1-65535")
    return value


def _header_name(value: str, info: ValidationInfo) -> str:
    if _checked(value, info) and not HEADER_NAME.fullmatch(value):
        raise ValueError(
            f"{value!r} is not a header name: ASCII letters, digits and !#$%&'*+-.^_`|~ only "
            "(an RFC 7230 token), no spaces"
        )
    return value


def _header_value(value: str, info: ValidationInfo) -> str:
    if _checked(value, info) and HEADER_VALUE_FORBIDDEN.search(value):
        raise ValueError("a header value cannot contain line breaks (CR, LF) or control characters")
    return value


def _single_line(value: str, info: ValidationInfo) -> str:
    if _checked(value, info) and ("\r" in value or "\n" in value):
        raise ValueError("must be a single line (no CR or LF): it goes into a message header")
    return value


HttpUrl = Annotated[str, AfterValidator(_http_url)]
HeaderName = Annotated[str, AfterValidator(_header_name)]
HeaderValue = Annotated[str, AfterValidator(_header_value)]
Headers = dict[HeaderName, HeaderValue]
SingleLine = Annotated[str, AfterValidator(_single_line)]


class StrictModel(BaseModel):
    """Unknown fields are an error: a typo in a config must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class WebhookConfig(StrictModel):
    """An outbound HTTP request."""

    url: HttpUrl = Field(min_length=1, max_length=2048, description="http(s) URL; a template.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: Headers = Field(default_factory=dict)
    query: dict[str, str] = Field(default_factory=dict)
    body: Any = Field(None, description="JSON value, or a string sent as text.")
    timeout_seconds: float = Field(30, gt=0, le=3600)
    expect_status: list[int] | None = Field(
        None,
        description="Statuses that count as success; null means any 2xx.",
    )

    @field_validator("method", mode="before")
    @classmethod
    def _upper_method(cls, value: Any) -> Any:
        return value.upper() if isinstance(value, str) else value

    def accepts(self, status: int) -> bool:
        """Whether a response status counts as success."""
        if self.expect_status is None:
            return 200 <= status <= 299
        return status in self.expect_status

    @model_validator(mode="after")
    def _statuses(self) -> WebhookConfig:
        statuses = self.expect_status
        if statuses is not None and (not statuses or any(not 100 <= s <= 599 for s in statuses)):
            raise ValueError("expect_status must list HTTP statuses between 100 and 599")
        return self


class AiPromptConfig(StrictModel):
    """A prompt to Claude through the Messages API."""

    prompt: str = Field(min_length=1, max_length=200_000)
    system: str | None = Field(None, max_length=100_000)
    model: str | None = Field(None, description="Default: CRONPILOT_ANTHROPIC_MODEL.")
    max_tokens: int = Field(1024, ge=1, le=64_000)
    temperature: float | None = Field(
        None, description="Kept for the contract; the current Messages API refuses it."
    )

    @field_validator("temperature")
    @classmethod
    def _no_temperature(cls, value: float | None) -> float | None:
        if value is not None:
            raise ValueError(
                "the current Anthropic Messages API (and SDK) no longer accept temperature; "
                "leave it out"
            )
        return value


class SendEmailConfig(StrictModel):
    """An email over the configured SMTP server."""

    to: list[SingleLine] = Field(min_length=1, max_length=100)
    cc: list[SingleLine] = Field(default_factory=list, max_length=100)
    bcc: list[SingleLine] = Field(default_factory=list, max_length=100)
    subject: SingleLine = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    reply_to: SingleLine | None = None

    @model_validator(mode="after")
    def _has_body(self) -> SendEmailConfig:
        if self.text is None and self.html is None:
            raise ValueError("give text, html or both")
        return self


class RunCodeConfig(StrictModel):
    """A Python or JavaScript program run in a process sandbox."""

    language: Literal["python", "javascript"]
    code: str = Field(min_length=1, max_length=200_000)
    input: Any = Field(None, description="Sent to the program as JSON on stdin.")
    timeout_seconds: float = Field(30, gt=0, le=3600)
    memory_mb: int = Field(256, ge=16, le=8192)


class UrlSource(StrictModel):
    kind: Literal["url"]
    url: HttpUrl = Field(min_length=1, max_length=2048)
    selector: str | None = None


class TextSource(StrictModel):
    kind: Literal["text"]
    text: str = Field(min_length=1, max_length=200_000)


class TaskHistorySource(StrictModel):
    kind: Literal["task_history"]
    task_id: UUID
    days: int = Field(7, ge=1, le=366)


ReportSource = Annotated[UrlSource | TextSource | TaskHistorySource, Field(discriminator="kind")]


class GenerateReportConfig(StrictModel):
    """A report written by Claude from gathered sources, optionally emailed."""

    title: SingleLine = Field(min_length=1, max_length=300, description="Also the subject.")
    instructions: str = Field(min_length=1, max_length=50_000)
    sources: list[ReportSource] = Field(default_factory=list, max_length=20)
    format: Literal["markdown", "html"] = "markdown"
    email_to: list[SingleLine] = Field(default_factory=list, max_length=100)


class WebScrapeConfig(StrictModel):
    """A page fetched and read with CSS selectors."""

    url: HttpUrl = Field(min_length=1, max_length=2048)
    selectors: dict[str, str] = Field(default_factory=dict, max_length=100)
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Per selector name: read this attribute, not text."
    )
    all: bool = Field(False, description="Every match as a list, not the first.")
    headers: Headers = Field(default_factory=dict)
    timeout_seconds: float = Field(30, gt=0, le=600)
    max_bytes: int = Field(2_000_000, ge=1024, le=50_000_000)

    @model_validator(mode="after")
    def _attributes_name_selectors(self) -> WebScrapeConfig:
        unknown = set(self.attributes) - set(self.selectors)
        if unknown:
            raise ValueError(f"attributes name unknown selectors: {sorted(unknown)}")
        return self


class FileOperationConfig(StrictModel):
    """A file operation inside the user's own folder under CRONPILOT_FILES_ROOT."""

    operation: Literal["read", "write", "append", "copy", "move", "delete", "list", "exists"]
    path: str = Field(min_length=1, max_length=1024)
    destination: str | None = Field(None, max_length=1024)
    content: str | None = Field(None, max_length=10_000_000)

    @model_validator(mode="after")
    def _operands(self) -> FileOperationConfig:
        if self.operation in ("copy", "move") and not self.destination:
            raise ValueError(f"{self.operation} needs a destination")
        if self.operation in ("write", "append") and self.content is None:
            raise ValueError(f"{self.operation} needs content")
        return self


GOOGLE_OPERATIONS = {
    "gmail": ("send_email",),
    "sheets": ("append_rows", "read_range"),
    "drive": ("upload_file",),
    "calendar": ("create_event",),
}
# Params that become a message or MIME part header: single lines.
GOOGLE_HEADER_PARAMS = {
    ("gmail", "send_email"): ("to", "subject"),
    ("drive", "upload_file"): ("mime_type",),
}


class GoogleWorkspaceConfig(StrictModel):
    """A call to a Google Workspace REST API."""

    service: Literal["gmail", "sheets", "drive", "calendar"]
    operation: Literal["send_email", "append_rows", "read_range", "upload_file", "create_event"]
    credentials_secret: str = Field(
        min_length=1, max_length=64, description="Secret holding an access token or SA key JSON."
    )
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("params")
    @classmethod
    def _header_params(cls, params: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        operation = (str(info.data.get("service")), str(info.data.get("operation")))
        for name in GOOGLE_HEADER_PARAMS.get(operation, ()):
            found = params.get(name)
            for value in found if isinstance(found, list) else [found]:
                if isinstance(value, str):
                    try:
                        _single_line(value, info)
                    except ValueError as error:
                        raise ValueError(f"params.{name} {error}") from None
        return params

    @model_validator(mode="after")
    def _operation_of_service(self) -> GoogleWorkspaceConfig:
        if self.operation not in GOOGLE_OPERATIONS[self.service]:
            allowed = ", ".join(GOOGLE_OPERATIONS[self.service])
            raise ValueError(f"{self.service} offers {allowed}, not {self.operation}")
        return self


class WebhookAction(StrictModel):
    type: Literal["webhook"]
    config: WebhookConfig


class AiPromptAction(StrictModel):
    type: Literal["ai_prompt"]
    config: AiPromptConfig


class SendEmailAction(StrictModel):
    type: Literal["send_email"]
    config: SendEmailConfig


class RunCodeAction(StrictModel):
    type: Literal["run_code"]
    config: RunCodeConfig


class GenerateReportAction(StrictModel):
    type: Literal["generate_report"]
    config: GenerateReportConfig


class WebScrapeAction(StrictModel):
    type: Literal["web_scrape"]
    config: WebScrapeConfig


class FileOperationAction(StrictModel):
    type: Literal["file_operation"]
    config: FileOperationConfig


class GoogleWorkspaceAction(StrictModel):
    type: Literal["google_workspace"]
    config: GoogleWorkspaceConfig


# Every action that runs as one activity (a chain's steps are these; see schema.chains).
SingleAction = (
    WebhookAction
    | AiPromptAction
    | SendEmailAction
    | RunCodeAction
    | GenerateReportAction
    | WebScrapeAction
    | FileOperationAction
    | GoogleWorkspaceAction
)
Action = Annotated[SingleAction, Field(discriminator="type")]


ActionQueue = Literal["main", "code"]


@dataclass(frozen=True)
class ActionRoute:
    """Which activity runs an action type, and on which of the worker's queues."""

    activity: str
    queue: ActionQueue = "main"


# The routing table: the workflows start these activities by name, the API accepts only
# these types, and the worker refuses to start unless it has a handler for each.
ACTION_ROUTES: dict[str, ActionRoute] = {
    "webhook": ActionRoute("run_webhook"),
    "ai_prompt": ActionRoute("run_ai_prompt"),
    "send_email": ActionRoute("run_send_email"),
    "web_scrape": ActionRoute("run_web_scrape"),
    "generate_report": ActionRoute("run_generate_report"),
    "google_workspace": ActionRoute("run_google_workspace"),
    "file_operation": ActionRoute("run_file_operation"),
    "run_code": ActionRoute("run_run_code", queue="code"),
}
