"""Process settings, read from the environment with the prefix ``CRONPILOT_``."""

from __future__ import annotations

from functools import lru_cache
from ipaddress import IPv4Network, IPv6Network, ip_network
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

MIN_SECRET_KEY_LENGTH = 32


class Settings(BaseSettings):
    """Every setting Cronpilot reads; each field's description is its documentation."""

    model_config = SettingsConfigDict(
        env_prefix="CRONPILOT_", extra="ignore", env_ignore_empty=True
    )

    env: Literal["dev", "production"] = Field(
        "production",
        description="`dev` relaxes the safety checks (generated secret key, private "
        "networks allowed); `cronpilot dev` sets it. Anything else is production.",
    )
    data_dir: Path = Field(
        Path(".cronpilot"),
        description="Where `cronpilot dev` keeps SQLite, the Temporal dev server file and keys.",
    )
    database_url: str | None = Field(
        None,
        description="SQLAlchemy async URL, e.g. postgresql+psycopg://user@host/db. "
        "Default in dev: sqlite+aiosqlite:///<data-dir>/cronpilot.db.",
    )
    temporal_address: str = Field("localhost:7233", description="Temporal frontend host:port.")
    temporal_namespace: str = Field("default", description="Temporal namespace.")
    task_queue: str = Field(
        "cronpilot",
        description="Task queue of workflows and actions; `run_code` uses `<TASK_QUEUE>-code`.",
    )
    secret_key: str | None = Field(
        None,
        description="Encrypts secrets at rest and signs resume tokens; at least 32 characters. "
        "Required outside dev; dev generates one and keeps it in the data dir.",
    )
    secret_key_previous: str | None = Field(
        None,
        description="Earlier secret keys, comma-separated, still accepted for decryption "
        "while `cronpilot secrets rotate` re-encrypts with the current key.",
    )
    public_url: str = Field(
        "http://localhost:8000", description="Public base URL of webhook and resume URLs."
    )
    temporal_ui_url: str = Field(
        "http://localhost:8233", description="Base URL of the Temporal Web UI, for links."
    )
    api_host: str = Field("127.0.0.1", description="Address `cronpilot api` listens on.")
    api_port: int = Field(8000, ge=1, le=65535, description="Port `cronpilot api` listens on.")
    max_body_bytes: int = Field(
        1_048_576, ge=1024, description="Largest request body the API accepts (413 above)."
    )
    webhook_max_body_bytes: int = Field(
        262_144,
        ge=1024,
        le=1_048_576,
        description="Largest body a webhook delivery may carry (413 above); it travels "
        "through Temporal as the run's payload.",
    )
    webhook_rate_limit_per_minute: int = Field(
        600,
        ge=1,
        description="Deliveries one webhook accepts per minute, per API process (a token "
        "bucket as deep as one minute's worth); 429 with Retry-After above.",
    )
    webhook_replay_days: int = Field(
        30,
        ge=1,
        le=3650,
        description="How long a `github`-mode signature stays claimed by its delivery: the "
        "same signed request sent again with another delivery id within this time is a 401 "
        "(GitHub signs no timestamp, so a captured request stays valid until then). `hmac` "
        "signatures are kept as long as their timestamp is within tolerance.",
    )
    smtp_host: str | None = Field(None, description="SMTP server for email actions and notify.")
    smtp_port: int = Field(25, ge=1, le=65535, description="SMTP port.")
    smtp_username: str | None = Field(None, description="SMTP user name, if it needs one.")
    smtp_password: str | None = Field(None, description="SMTP password.")
    smtp_security: Literal["none", "starttls", "ssl"] = Field(
        "none", description="SMTP transport security."
    )
    smtp_from: str = Field("cronpilot@localhost", description="Sender address of emails.")
    anthropic_api_key: str | None = Field(None, description="API key for Claude actions.")
    anthropic_base_url: str | None = Field(None, description="Override of the Anthropic API URL.")
    anthropic_model: str = Field("claude-sonnet-5-5", description="Default Claude model.")
    google_api_base_url: str = Field(
        "https://www.googleapis.com", description="Base URL of Google's REST APIs."
    )
    google_token_url: str | None = Field(
        None, description="OAuth token endpoint for service-account credentials."
    )
    files_root: Path = Field(
        Path(".cronpilot/files"), description="Root of file operations, one folder per user."
    )
    allow_private_networks: bool | None = Field(
        None,
        description="Let actions reach loopback, private and link-local addresses. "
        "Default: true in dev, false otherwise.",
    )
    allowed_networks: str | None = Field(
        None,
        description="Comma-separated addresses or CIDRs that actions may reach even when "
        "private networks are not allowed (an internal API, say).",
    )
    imap_ca_file: Path | None = Field(
        None,
        description="A PEM file of the CA certificates email triggers trust for IMAP over TLS "
        "(ssl or starttls), instead of the system's trust store: for a mail server with a "
        "private CA or a self-signed certificate. Default: the system's trust store.",
    )
    worker_queues: Literal["all", "main", "code"] = Field(
        "all",
        description="What `cronpilot worker` serves: `main` (workflows, history and actions, "
        "and `<TASK_QUEUE>-wait` where queued runs wait), `code` (only `run_code`, on "
        "`<TASK_QUEUE>-code`, for isolated workers) or `all`.",
    )
    run_code_enabled: bool = Field(True, description="Allow the `run_code` action.")
    run_code_require_isolation: bool = Field(
        True,
        description="Refuse to run `run_code` programs when the kernel cannot give them their "
        "sandbox (new namespaces and a fresh root); false runs them as the worker, seeing what "
        "it sees, with a warning in the run's log.",
    )
    execution_retention_days: int = Field(
        30, ge=1, description="Executions older than this are deleted."
    )

    @model_validator(mode="after")
    def _refuse_unsafe(self) -> Settings:
        if self.allow_private_networks is None:
            self.allow_private_networks = self.env == "dev"
        if self.env != "dev" and not self.secret_key:
            raise ValueError(
                "CRONPILOT_SECRET_KEY is required outside dev "
                "(generate one: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        if self.secret_key is not None and len(self.secret_key) < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"CRONPILOT_SECRET_KEY must be at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        try:
            self.allowed_network_list  # noqa: B018 - parse now, so a typo stops the start
        except ValueError as error:
            raise ValueError(f"CRONPILOT_ALLOWED_NETWORKS: {error}") from None
        if self.env != "dev" and not self.database_url:
            raise ValueError("CRONPILOT_DATABASE_URL is required outside dev")
        return self

    @property
    def allowed_network_list(self) -> list[IPv4Network | IPv6Network]:
        """``ALLOWED_NETWORKS`` parsed."""
        text = self.allowed_networks or ""
        return [ip_network(part.strip(), strict=False) for part in text.split(",") if part.strip()]

    @property
    def previous_secret_keys(self) -> list[str]:
        """``SECRET_KEY_PREVIOUS`` as a list."""
        text = self.secret_key_previous or ""
        return [key.strip() for key in text.split(",") if key.strip()]

    @property
    def resolved_database_url(self) -> str:
        """The database URL, defaulting to SQLite in the data dir."""
        if self.database_url:
            return self.database_url
        return f"sqlite+aiosqlite:///{(self.data_dir / 'cronpilot.db').resolve()}"

    @property
    def dev_key_file(self) -> Path:
        """Where `cronpilot dev` keeps the dev user's API key."""
        return self.data_dir / "dev-api-key"

    @property
    def dev_sign_in_file(self) -> Path:
        """Where `cronpilot dev` keeps its UI link's token (new at every start)."""
        return self.data_dir / "dev-sign-in-token"


@lru_cache
def get_settings() -> Settings:
    """The process-wide settings, read once."""
    return Settings()
