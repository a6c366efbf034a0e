"""The ``send_email`` action, and the message building and SMTP delivery other actions reuse.

`build_message` makes the message (Bcc stays in it, as with smtplib); `deliver` sends it
through the configured server and never transmits the Bcc header. Both fail with an
``ActionFailure`` (its stable type and whether a retry could help).
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from email.errors import MessageDefect, NonASCIILocalPartDefect
from email.headerregistry import Address
from email.message import EmailMessage
from email.policy import default as default_policy
from email.utils import format_datetime, make_msgid
from typing import Any, Literal

import aiosmtplib

from activities._action import ActionRun
from activities._failure import ActionFailure
from schema.actions import SendEmailConfig
from schema.settings import Settings

SMTP_TIMEOUT_SECONDS = 30.0
NOT_CONFIGURED = "no SMTP server is configured (set CRONPILOT_SMTP_HOST)"
Stage = Literal["connect", "starttls", "login", "send"]


@dataclass(frozen=True)
class Delivery:
    """What the server did with a message: who got it, who was refused and why."""

    accepted: list[str]
    refused: dict[str, str]
    response: str


async def send(run: ActionRun, config: SendEmailConfig) -> dict[str, Any]:
    """Send the configured email over SMTP; return its Message-ID and accepted recipients."""
    settings = run.deps.settings
    if not settings.smtp_host:
        raise ActionFailure("SmtpNotConfigured", NOT_CONFIGURED, retryable=False)
    message = build_message(
        sender=settings.smtp_from,
        to=config.to,
        cc=config.cc,
        bcc=config.bcc,
        subject=config.subject,
        text=config.text,
        html=config.html,
        reply_to=config.reply_to,
    )
    run.log(
        f"sending {message['Message-ID']} to {len(envelope_recipients(message))} "
        f"recipient(s) via {settings.smtp_host}:{settings.smtp_port} "
        f"({settings.smtp_security})"
    )
    delivery = await deliver(settings, message)
    for address, reply in delivery.refused.items():
        run.log(f"refused {address}: {reply}", level="warning")
    run.log(f"accepted for {len(delivery.accepted)} recipient(s): {delivery.response}")
    return {
        "message_id": str(message["Message-ID"]),
        "accepted": delivery.accepted,
        "refused": delivery.refused,
    }


def build_message(
    *,
    sender: str,
    to: Sequence[str],
    subject: str,
    cc: Sequence[str] = (),
    bcc: Sequence[str] = (),
    text: str | None = None,
    html: str | None = None,
    reply_to: str | None = None,
) -> EmailMessage:
    """A message with Message-ID and Date; multipart/alternative when both bodies are given."""
    if text is None and html is None:
        raise ActionFailure("InvalidConfig", "give text, html or both", retryable=False)
    if "\r" in subject or "\n" in subject:
        raise ActionFailure("InvalidConfig", "the subject must be a single line", retryable=False)
    from_address = _address(sender, "CRONPILOT_SMTP_FROM", error_type="SmtpNotConfigured")
    message = EmailMessage()
    message["From"] = from_address
    message["To"] = [_address(value, "to") for value in to]
    if cc:
        message["Cc"] = [_address(value, "cc") for value in cc]
    if bcc:
        message["Bcc"] = [_address(value, "bcc") for value in bcc]
    if reply_to:
        message["Reply-To"] = _address(reply_to, "reply_to")
    message["Subject"] = subject
    message["Date"] = format_datetime(datetime.now(UTC))
    message["Message-ID"] = make_msgid(domain=_id_domain(from_address.domain))
    if text is not None:
        message.set_content(text)
        if html is not None:
            message.add_alternative(html, subtype="html")
    else:
        message.set_content(html, subtype="html")
    return message


def _address(value: str, field: str, *, error_type: str = "InvalidConfig") -> Address:
    """One mailbox (``a@b.c`` or ``Name <a@b.c>``), or an ``ActionFailure`` naming the field."""
    addresses: list[Address] = []
    defects: list[MessageDefect] = []
    try:
        header = default_policy.header_factory("To", value)
        addresses, defects = list(header.addresses), list(header.defects)
    except Exception:  # the header parser raises assorted errors on odd input
        defects = [MessageDefect(value)]
    # A non-ASCII local part is legal (SMTPUTF8); any other defect means no clean address.
    defects = [d for d in defects if not isinstance(d, NonASCIILocalPartDefect)]
    if len(addresses) != 1 or defects or not addresses[0].username or not addresses[0].domain:
        raise ActionFailure(
            error_type, f"{field}: {value!r} is not one email address", retryable=False
        )
    return addresses[0]


def _id_domain(domain: str) -> str:
    try:
        return domain.encode("idna").decode("ascii")
    except UnicodeError:
        return "localhost"


def envelope_recipients(message: EmailMessage) -> list[str]:
    """Every To, Cc and Bcc address of ``message``, once each, in that order."""
    found: list[str] = []
    for name in ("To", "Cc", "Bcc"):
        header = message[name]
        if header is not None:
            found.extend(address.addr_spec for address in header.addresses)
    return list(dict.fromkeys(found))


async def deliver(settings: Settings, message: EmailMessage) -> Delivery:
    """Send ``message`` through the configured SMTP server, or raise a classified ActionFailure.

    Succeeds when the server takes the message for at least one recipient; the others are
    in ``Delivery.refused`` and are not retried, since a retry would repeat the message
    for those who already have it.
    """
    if not settings.smtp_host:
        raise ActionFailure("SmtpNotConfigured", NOT_CONFIGURED, retryable=False)
    recipients = envelope_recipients(message)
    sender = message["From"].addresses[0].addr_spec
    client = aiosmtplib.SMTP(
        hostname=settings.smtp_host,
        port=settings.smtp_port,
        use_tls=settings.smtp_security == "ssl",
        start_tls=False,
        timeout=SMTP_TIMEOUT_SECONDS,
    )
    stage: Stage = "connect"
    try:
        await client.connect()
        if settings.smtp_security == "starttls":
            stage = "starttls"
            await client.starttls()
        if settings.smtp_username:
            stage = "login"
            await client.login(settings.smtp_username, settings.smtp_password or "")
        stage = "send"
        # send_message leaves the Bcc header out of what it transmits.
        refused, response = await client.send_message(message, sender=sender, recipients=recipients)
    except Exception as error:
        client.close()
        raise _classified(error, stage) from error
    # The message is already accepted: a failed QUIT must not turn into a resend.
    with contextlib.suppress(aiosmtplib.SMTPException, OSError):
        await client.quit()
    client.close()
    return Delivery(
        accepted=[address for address in recipients if address not in refused],
        refused={address: f"{reply.code} {reply.message}" for address, reply in refused.items()},
        response=response,
    )


def _classified(error: Exception, stage: Stage) -> ActionFailure:
    """The ActionFailure for what aiosmtplib (or the socket under it) raised at ``stage``."""
    tls_error = error if isinstance(error, ssl.SSLError) else error.__cause__
    if isinstance(tls_error, ssl.SSLError):
        # A failed certificate check or protocol mismatch will fail the same way again.
        retryable = isinstance(tls_error, ssl.SSLEOFError)
        return ActionFailure(
            "SmtpTlsError", f"TLS with the SMTP server: {tls_error}", retryable=retryable
        )
    if isinstance(error, aiosmtplib.SMTPRecipientsRefused):
        replies = "; ".join(f"{r.recipient}: {r.code} {r.message}" for r in error.recipients)
        if any(400 <= r.code < 500 for r in error.recipients):
            return ActionFailure(
                "SmtpTemporaryError", f"recipients refused for now: {replies}", retryable=True
            )
        return ActionFailure(
            "SmtpRecipientsRefused", f"every recipient was refused: {replies}", retryable=False
        )
    if isinstance(error, aiosmtplib.SMTPResponseException):
        reply = f"{error.code} {error.message}"
        if 400 <= error.code < 500:
            return ActionFailure("SmtpTemporaryError", f"{stage}: {reply}", retryable=True)
        if isinstance(error, aiosmtplib.SMTPAuthenticationError):
            return ActionFailure("SmtpAuthError", f"login refused: {reply}", retryable=False)
        return ActionFailure("SmtpRejected", f"{stage}: {reply}", retryable=False)
    if isinstance(error, (ConnectionError, TimeoutError, OSError)):
        return ActionFailure(
            "SmtpConnectionError", f"{type(error).__name__}: {error}", retryable=True
        )
    if isinstance(error, aiosmtplib.SMTPException) and stage in ("starttls", "login"):
        # The server does not offer STARTTLS or AUTH; sending without would be worse.
        error_type = "SmtpTlsError" if stage == "starttls" else "SmtpAuthError"
        return ActionFailure(error_type, str(error), retryable=False)
    if isinstance(error, aiosmtplib.SMTPException):
        return ActionFailure("SmtpRejected", f"{stage}: {error}", retryable=False)
    if isinstance(error, ValueError):
        return ActionFailure("InvalidConfig", f"{stage}: {error}", retryable=False)
    return ActionFailure(type(error).__name__, f"{stage}: {error}", retryable=True)
