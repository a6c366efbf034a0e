"""Action configs: one strict model per ``action.type``, joined in a discriminated union.

Adding an action type means a config model, an ``XAction`` wrapper and a route here, a
module in ``activities/`` and one registry entry there.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

HTTP_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


class StrictModel(BaseModel):
    """Unknown fields are an error: a typo in a config must not pass silently."""

    model_config = ConfigDict(extra="forbid")


class WebhookConfig(StrictModel):
    """An outbound HTTP request."""

    url: str = Field(min_length=1, max_length=2048, description="http(s) URL; a template.")
    method: Literal["GET", "POST", "PUT", "PATCH", "DELETE"] = "POST"
    headers: dict[str, str] = Field(default_factory=dict)
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

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        # A template is checked again once rendered, inside the activity.
        if "{{" not in value and not value.lower().startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

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

    to: list[str] = Field(min_length=1, max_length=100)
    cc: list[str] = Field(default_factory=list, max_length=100)
    bcc: list[str] = Field(default_factory=list, max_length=100)
    subject: str = Field(min_length=1, max_length=998)
    text: str | None = None
    html: str | None = None
    reply_to: str | None = None

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
    url: str = Field(min_length=1, max_length=2048)
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

    title: str = Field(min_length=1, max_length=300)
    instructions: str = Field(min_length=1, max_length=50_000)
    sources: list[ReportSource] = Field(default_factory=list, max_length=20)
    format: Literal["markdown", "html"] = "markdown"
    email_to: list[str] = Field(default_factory=list, max_length=100)


class WebScrapeConfig(StrictModel):
    """A page fetched and read with CSS selectors."""

    url: str = Field(min_length=1, max_length=2048)
    selectors: dict[str, str] = Field(default_factory=dict, max_length=100)
    attributes: dict[str, str] = Field(
        default_factory=dict, description="Per selector name: read this attribute, not text."
    )
    all: bool = Field(False, description="Every match as a list, not the first.")
    headers: dict[str, str] = Field(default_factory=dict)
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


class GoogleWorkspaceConfig(StrictModel):
    """A call to a Google Workspace REST API."""

    service: Literal["gmail", "sheets", "drive", "calendar"]
    operation: Literal["send_email", "append_rows", "read_range", "upload_file", "create_event"]
    credentials_secret: str = Field(
        min_length=1, max_length=64, description="Secret holding an access token or SA key JSON."
    )
    params: dict[str, Any] = Field(default_factory=dict)

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


Action = Annotated[
    WebhookAction
    | AiPromptAction
    | SendEmailAction
    | RunCodeAction
    | GenerateReportAction
    | WebScrapeAction
    | FileOperationAction
    | GoogleWorkspaceAction,
    Field(discriminator="type"),
]


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
