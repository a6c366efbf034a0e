"""The send_email action against a real SMTP server on loopback (tests/fixtures/smtp_server.py)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from activities.send_email import build_message, deliver, send
from tests.fixtures.actions import ActionHarness, failure_of
from tests.fixtures.loopback import free_port
from tests.fixtures.smtp_server import SmtpServer

SENDER = "Cronpilot <robot@cron.example>"
ANN, BOB, EVE = "ann@example.com", "bob@example.com", "eve@example.com"

MakeSmtp = Callable[..., SmtpServer]


@pytest.fixture
def make_smtp() -> Iterator[MakeSmtp]:
    """Start SMTP servers for a test (see SmtpServer for options); stop them afterwards."""
    servers: list[SmtpServer] = []

    def make(**options: Any) -> SmtpServer:
        server = SmtpServer(**options)
        server.start()
        servers.append(server)
        return server

    yield make
    for server in servers:
        server.stop()


@pytest.fixture
def smtp(make_smtp: MakeSmtp) -> SmtpServer:
    return make_smtp()


def _email(**config: Any) -> dict[str, Any]:
    return {
        "type": "send_email",
        "config": {"to": [ANN], "subject": "Hello", "text": "Hi there", **config},
    }


async def _send(harness: ActionHarness, smtp: SmtpServer, **config: Any) -> dict[str, Any]:
    outcome = await harness.run(_email(**config), handler=send, smtp_from=SENDER, **smtp.settings())
    result: dict[str, Any] = outcome.result
    return result


async def test_recipients_are_in_the_envelope_and_bcc_is_not_in_the_headers(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    result = await _send(
        harness,
        smtp,
        to=[f"Ann <{ANN}>"],
        cc=[BOB],
        bcc=[EVE],
        reply_to="Help desk <desk@example.com>",
        subject="Weekly numbers for {{ task.name }}: Grüße",
        text="Hi there, Grüße",
    )
    [received] = smtp.received
    assert received.mail_from == "robot@cron.example"
    assert received.rcpt_tos == [ANN, BOB, EVE]
    assert EVE.encode() not in received.content
    message = received.message
    assert "Bcc" not in message
    assert str(message["From"]) == SENDER
    assert str(message["To"]) == f"Ann <{ANN}>"
    assert str(message["Cc"]) == BOB
    assert str(message["Reply-To"]) == "Help desk <desk@example.com>"
    assert str(message["Subject"]) == "Weekly numbers for harness: Grüße"
    assert str(message["Message-ID"]).endswith("@cron.example>")
    assert abs(message["Date"].datetime - datetime.now(UTC)) < timedelta(hours=1)
    assert message.get_content_type() == "text/plain"
    assert message.get_content().strip() == "Hi there, Grüße"
    assert result == {
        "message_id": str(message["Message-ID"]),
        "accepted": [ANN, BOB, EVE],
        "refused": {},
    }


async def test_text_and_html_make_multipart_alternative(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    await _send(harness, smtp, text="Plain words", html="<p>Rich <b>words</b></p>")
    await _send(harness, smtp, text=None, html="<p>Only rich</p>")
    both, html_only = (received.message for received in smtp.received)
    assert both.get_content_type() == "multipart/alternative"
    parts = {part.get_content_type(): part.get_content().strip() for part in both.iter_parts()}
    assert parts == {"text/plain": "Plain words", "text/html": "<p>Rich <b>words</b></p>"}
    assert html_only.get_content_type() == "text/html"
    assert html_only.get_content().strip() == "<p>Only rich</p>"


async def test_a_refused_recipient_is_reported_while_the_others_get_the_message(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    smtp.refuse[BOB] = "550 5.1.1 no such user"
    outcome = await harness.run(_email(to=[ANN, BOB], bcc=[EVE]), handler=send, **smtp.settings())
    assert outcome.result["accepted"] == [ANN, EVE]
    assert outcome.result["refused"] == {BOB: "550 5.1.1 no such user"}
    assert [received.rcpt_tos for received in smtp.received] == [[ANN, EVE]]
    assert any(
        entry.level == "warning" and f"refused {BOB}: 550" in entry.message
        for entry in outcome.logs
    )


async def test_permanent_refusals_are_not_retried(harness: ActionHarness, smtp: SmtpServer) -> None:
    smtp.refuse.update({ANN: "550 5.1.1 no such user", BOB: "553 5.1.3 bad mailbox"})
    everyone = await failure_of(harness, _email(to=[ANN, BOB]), handler=send, **smtp.settings())
    assert (everyone.type, everyone.non_retryable) == ("SmtpRecipientsRefused", True)
    assert f"{ANN}: 550 5.1.1 no such user" in everyone.message
    smtp.refuse.clear()
    smtp.data_reply = "554 5.7.1 message rejected as spam"
    data = await failure_of(harness, _email(), handler=send, **smtp.settings())
    assert (data.type, data.non_retryable) == ("SmtpRejected", True)
    assert "554 5.7.1 message rejected as spam" in data.message
    smtp.data_reply = None
    smtp.mail_reply = "553 5.7.1 sender not allowed"
    sender = await failure_of(harness, _email(), handler=send, **smtp.settings())
    assert (sender.type, sender.non_retryable) == ("SmtpRejected", True)
    assert smtp.received == []


async def test_temporary_refusals_are_retried(harness: ActionHarness, smtp: SmtpServer) -> None:
    smtp.data_reply = "451 4.3.0 try again later"
    data = await failure_of(harness, _email(), handler=send, **smtp.settings())
    assert (data.type, data.non_retryable) == ("SmtpTemporaryError", False)
    assert "451 4.3.0 try again later" in data.message
    smtp.data_reply = None
    smtp.mail_reply = "421 4.3.2 shutting down"
    closing = await failure_of(harness, _email(), handler=send, **smtp.settings())
    assert (closing.type, closing.non_retryable) == ("SmtpTemporaryError", False)
    smtp.mail_reply = None
    smtp.refuse[ANN] = "450 4.2.0 greylisted"
    greylisted = await failure_of(harness, _email(), handler=send, **smtp.settings())
    assert (greylisted.type, greylisted.non_retryable) == ("SmtpTemporaryError", False)
    assert smtp.received == []


async def test_nothing_listening_is_a_retryable_connection_error(harness: ActionHarness) -> None:
    error = await failure_of(
        harness, _email(), handler=send, smtp_host="127.0.0.1", smtp_port=free_port()
    )
    assert (error.type, error.non_retryable) == ("SmtpConnectionError", False)


async def test_without_an_smtp_host_the_action_is_not_configured(harness: ActionHarness) -> None:
    error = await failure_of(harness, _email(), handler=send)
    assert (error.type, error.non_retryable) == ("SmtpNotConfigured", True)
    assert "CRONPILOT_SMTP_HOST" in error.message


async def test_bad_addresses_and_header_injection_are_invalid_config(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    for config in (
        {"to": ["not an address"]},
        {"to": ["ann@"]},
        {"cc": [f"{BOB}, {EVE}"]},
        # A literal line break is a 422 when the task is saved (tests/schema); one that a
        # template renders is refused when the config is validated again.
        {"bcc": ["{{ payload.bcc }}"]},
        {"reply_to": "nobody"},
        {"subject": "{{ payload.subject }}"},
    ):
        error = await failure_of(
            harness,
            _email(**config),
            handler=send,
            payload={
                "subject": "Hello\r\nBcc: victim@example.com",
                "bcc": f"{EVE}\r\nX-Injected: yes",
            },
            **smtp.settings(),
        )
        assert (error.type, error.non_retryable) == ("InvalidConfig", True), config
    bad_sender = await failure_of(
        harness, _email(), handler=send, smtp_from="nobody", **smtp.settings()
    )
    assert (bad_sender.type, bad_sender.non_retryable) == ("SmtpNotConfigured", True)
    assert smtp.received == []


async def test_starttls_with_login(
    harness: ActionHarness, make_smtp: MakeSmtp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("SSL_CERT_FILE", raising=False)
    server = make_smtp(security="starttls", credentials={"robot": "pw-123"}, cert_dir=tmp_path)
    login = {"smtp_username": "robot", **server.settings()}
    untrusted = await failure_of(harness, _email(), handler=send, smtp_password="pw-123", **login)
    assert (untrusted.type, untrusted.non_retryable) == ("SmtpTlsError", True)
    assert server.auth_attempts == 0, "no password may be sent before the certificate checks out"
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_file))
    wrong = await failure_of(harness, _email(), handler=send, smtp_password="nope", **login)
    assert (wrong.type, wrong.non_retryable) == ("SmtpAuthError", True)
    assert server.received == []
    await harness.run(_email(), handler=send, smtp_password="pw-123", **login)
    [received] = server.received
    assert (received.tls, received.login, received.rcpt_tos) == (True, "robot", [ANN])


async def test_starttls_is_never_skipped_when_the_server_does_not_offer_it(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    error = await failure_of(
        harness, _email(), handler=send, **{**smtp.settings(), "smtp_security": "starttls"}
    )
    assert (error.type, error.non_retryable) == ("SmtpTlsError", True)
    assert smtp.received == []


async def test_implicit_tls(
    harness: ActionHarness, make_smtp: MakeSmtp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    server = make_smtp(security="ssl", cert_dir=tmp_path)
    monkeypatch.setenv("SSL_CERT_FILE", str(server.cert_file))
    await harness.run(_email(), handler=send, **server.settings())
    [received] = server.received
    assert received.tls and received.rcpt_tos == [ANN]


async def test_deliver_sends_a_built_message_once_to_each_address(
    harness: ActionHarness, smtp: SmtpServer
) -> None:
    """What other actions (generate_report) use: build a message, deliver it."""
    message = build_message(
        sender=SENDER, to=[ANN, BOB], cc=[ANN], subject="Report", html="<h1>Report</h1>"
    )
    delivery = await deliver(harness.settings.model_copy(update=smtp.settings()), message)
    assert (delivery.accepted, delivery.refused) == ([ANN, BOB], {})
    assert "queued as test" in delivery.response
    [received] = smtp.received
    assert received.rcpt_tos == [ANN, BOB]
    assert received.message["Message-ID"] == message["Message-ID"]
