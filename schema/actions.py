"""Action configs: one strict model per ``action.type``, joined in a discriminated union.

Adding an action type means a config model and an ``XAction`` wrapper here, a module in
``activities/`` and one registry entry there.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

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


class WebhookAction(StrictModel):
    type: Literal["webhook"]
    config: WebhookConfig


Action = Annotated[WebhookAction, Field(discriminator="type")]
ACTION_TYPES: tuple[str, ...] = ("webhook",)
