"""Reading a mailbox (activities/_mailbox.py) against a real IMAP server on loopback
(tests/fixtures/imap_server.py); every test has a mailbox of its own."""

from __future__ import annotations

import base64
import hashlib
import socket
import uuid
from email.message import EmailMessage
from typing import Any

import pytest

from activities._failure import ActionFailure
from activities._mailbox import (
    TEXT_LIMIT_BYTES,
    TRUNCATED_MARKER,
    Mailbox,
    Message,
    fetch_unseen,
    mark_seen,
)
from tests.fixtures.imap_server import ImapServer, LoginAttempt, Security
from tests.fixtures.loopback import free_port

ALICE = "Alice Example <alice@example.com>"
BOB = "Bob <bob@example.org>"
BOT = "bot@example.com"
MÄRZ = "Rechnung für März"


@pytest.fixture
def user(imap_server: ImapServer) -> str:
    """A user with an empty INBOX, for this test only."""
    name = f"user-{uuid.uuid4().hex[:8]}"
    imap_server.add_user(name, f"pw-{uuid.uuid4().hex}")
    return name


def mailbox(
    server: ImapServer, user: str, security: Security = "none", **overrides: Any
) -> Mailbox:
    settings = server.mailbox_settings(security, username=user)
    return Mailbox(**{**settings, "timeout": 5.0, **overrides})


def raw_message(
    *,
    sender: str | None = ALICE,
    subject: str | None = "Invoice 42",
    date: str | None = "Tue, 01 Apr 2025 09:30:00 +0200",
    message_id: str | None = "<invoice-42@example.com>",
    body: str = "Hello,\n\nthe invoice is attached.\n",
) -> bytes:
    headers = {
        "From": sender,
        "To": BOT,
        "Subject": subject,
        "Date": date,
        "Message-ID": message_id,
        "MIME-Version": "1.0",
        "Content-Type": "text/plain; charset=utf-8",
        "Content-Transfer-Encoding": "8bit",
    }
    lines = [f"{name}: {value}" for name, value in headers.items() if value is not None]
    return ("\r\n".join([*lines, "", *body.splitlines()]) + "\r\n").encode()


def encoded_word(text: str) -> str:
    return f"=?utf-8?b?{base64.b64encode(text.encode()).decode()}?="


def failure(error: pytest.ExceptionInfo[ActionFailure]) -> tuple[str, str, bool]:
    return error.value.type, error.value.message, error.value.retryable


INVOICE_PAYLOAD: dict[str, str | None] = {
    "from": ALICE,
    "to": BOT,
    "subject": "Invoice 42",
    "date": "2025-04-01T09:30:00+02:00",
    "text": "Hello,\n\nthe invoice is attached.",
    "message_id": "invoice-42@example.com",
}


@pytest.mark.parametrize("security", ["ssl", "starttls", "none"])
async def test_each_security_reads_the_unseen_message(
    imap_server: ImapServer, user: str, security: Security
) -> None:
    uid = imap_server.append(raw_message(), username=user)

    messages = await fetch_unseen(mailbox(imap_server, user, security))

    assert messages == [Message(uid=uid, payload=INVOICE_PAYLOAD)]
    logins = [login for login in imap_server.logins if login.username == user]
    assert logins == [LoginAttempt(user, tls=security != "none", ok=True)]


@pytest.mark.parametrize("security", ["ssl", "starttls"])
async def test_an_untrusted_certificate_is_refused(
    imap_server: ImapServer, user: str, security: Security
) -> None:
    imap_server.append(raw_message(), username=user)
    box = mailbox(imap_server, user, security, ca_file=None)

    with pytest.raises(ActionFailure) as error:
        await fetch_unseen(box)

    assert error.value.type == "ImapTlsError"
    assert error.value.retryable is False
    assert error.value.message.startswith(
        f"TLS with the IMAP server 127.0.0.1:{box.port}: [SSL: CERTIFICATE_VERIFY_FAILED]"
    )
    assert [login for login in imap_server.logins if login.username == user] == []


async def test_starttls_is_required_when_asked_for(imap_server: ImapServer, user: str) -> None:
    port = imap_server.ports["none"]  # this listener does not offer STARTTLS
    box = mailbox(imap_server, user, "starttls", port=port)

    with pytest.raises(ActionFailure) as error:
        await fetch_unseen(box)

    assert failure(error) == (
        "ImapTlsError",
        f"IMAP server 127.0.0.1:{port} does not offer STARTTLS",
        False,
    )
    assert [login for login in imap_server.logins if login.username == user] == []


@pytest.mark.parametrize(("security", "host"), [("none", "imap.invalid"), ("ssl", "localhost")])
async def test_given_addresses_are_connected_to_and_tls_verifies_the_host(
    imap_server: ImapServer, user: str, security: Security, host: str
) -> None:
    """The addresses the network guard checked are used, not a new lookup of the host
    (`.invalid` never resolves); TLS checks the certificate for the host's name."""
    uid = imap_server.append(raw_message(), username=user)
    box = mailbox(imap_server, user, security, host=host, addresses=("::1", "127.0.0.1"))

    assert [m.uid for m in await fetch_unseen(box)] == [uid]
    await mark_seen(box, [uid])
    assert imap_server.flags(username=user) == {uid: {"\\Seen"}}


async def test_filters_match_from_and_decoded_subject_ignoring_case(
    imap_server: ImapServer, user: str
) -> None:
    invoice = imap_server.append(raw_message(subject="Invoice 1"), username=user)
    from_bob = imap_server.append(raw_message(sender=BOB, subject="Invoice 2"), username=user)
    german = imap_server.append(raw_message(subject=encoded_word(MÄRZ)), username=user)
    box = mailbox(imap_server, user)

    async def uids(**filters: Any) -> list[str]:
        return [message.uid for message in await fetch_unseen(box, **filters)]

    assert await uids(from_contains="ALICE@example") == [invoice, german]
    assert await uids(subject_contains="FÜR MÄRZ") == [german]
    assert await uids(subject_contains="invoice") == [invoice, from_bob]
    assert await uids(from_contains="alice", subject_contains="INVOICE") == [invoice]
    assert await uids(from_contains="carol") == []
    [message] = await fetch_unseen(box, subject_contains="märz")
    assert message.payload["subject"] == MÄRZ
    # What the filters left out is as untouched as what they returned.
    assert imap_server.flags(username=user) == {invoice: set(), from_bob: set(), german: set()}


async def test_oldest_first_and_at_most_limit(imap_server: ImapServer, user: str) -> None:
    first, second, third = (
        imap_server.append(raw_message(subject=f"Invoice {n}"), username=user) for n in (1, 2, 3)
    )
    imap_server.append(raw_message(sender=BOB), username=user)
    box = mailbox(imap_server, user)

    assert [m.uid for m in await fetch_unseen(box, limit=2)] == [first, second]
    assert [m.uid for m in await fetch_unseen(box, from_contains="alice", limit=3)] == [
        first,
        second,
        third,
    ]
    assert [m.uid for m in await fetch_unseen(box, from_contains="alice", limit=1)] == [first]
    with pytest.raises(ValueError, match="limit must be at least 1"):
        await fetch_unseen(box, limit=0)


async def test_seen_messages_are_skipped_and_nothing_is_marked_seen(
    imap_server: ImapServer, user: str
) -> None:
    read = imap_server.append(raw_message(subject="Old"), flags=["\\Seen"], username=user)
    flagged = imap_server.append(raw_message(), flags=["\\Flagged"], username=user)
    plain = imap_server.append(raw_message(), username=user)
    box = mailbox(imap_server, user)

    assert [m.uid for m in await fetch_unseen(box)] == [flagged, plain]
    assert [m.uid for m in await fetch_unseen(box)] == [flagged, plain]
    assert imap_server.flags(username=user) == {
        read: {"\\Seen"},
        flagged: {"\\Flagged"},
        plain: set(),
    }


async def test_mark_seen_marks_exactly_the_given_uids(imap_server: ImapServer, user: str) -> None:
    first = imap_server.append(raw_message(), flags=["\\Flagged"], username=user)
    second = imap_server.append(raw_message(), username=user)
    third = imap_server.append(raw_message(), username=user)
    box = mailbox(imap_server, user, "ssl")

    await mark_seen(box, [first, third])

    assert imap_server.flags(username=user) == {
        first: {"\\Flagged", "\\Seen"},
        second: set(),
        third: {"\\Seen"},
    }
    assert [m.uid for m in await fetch_unseen(box)] == [second]
    await mark_seen(box, [])
    with pytest.raises(ValueError, match="IMAP UIDs are numbers"):
        await mark_seen(box, ["1:*"])
    assert imap_server.flags(username=user)[second] == set()


async def test_plain_text_is_preferred_over_html(imap_server: ImapServer, user: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ALICE, BOT, "Both"
    message.set_content("The plain  text.\n")
    message.add_alternative("<p>The <b>HTML</b> text.</p>", subtype="html")
    imap_server.append(message, username=user)

    [fetched] = await fetch_unseen(mailbox(imap_server, user))

    assert fetched.payload["text"] == "The plain  text."


async def test_html_only_is_converted_to_tidy_text(imap_server: ImapServer, user: str) -> None:
    message = EmailMessage()
    message["From"], message["To"], message["Subject"] = ALICE, BOT, "HTML only"
    html = (
        "<html><head><title>Ignored</title><style>p { color: red }</style></head><body>"
        "<h1>Weekly   report</h1><p>Line one<br>line\n   two with <b>bold</b> text</p>"
        "<ul><li>first</li><li>second &amp; last</li></ul><script>track()</script>"
        "<table><tr><td>a</td><td>b</td></tr></table></body></html>"
    )
    message.set_content(html, subtype="html")
    imap_server.append(message, username=user)

    [fetched] = await fetch_unseen(mailbox(imap_server, user))

    assert fetched.payload["text"] == (
        "Weekly report\nLine one\nline two with bold text\nfirst\nsecond & last\na b"
    )


async def test_long_text_is_capped_with_a_marker(imap_server: ImapServer, user: str) -> None:
    line = "äbc " * 24 + "\n"  # 100 characters, 124 bytes of UTF-8
    imap_server.append(raw_message(body=line * 1000), username=user)

    [fetched] = await fetch_unseen(mailbox(imap_server, user))

    text = fetched.payload["text"]
    assert text is not None
    assert len(text.encode()) == TEXT_LIMIT_BYTES
    assert text.endswith(TRUNCATED_MARKER)
    full = (line.rstrip() + "\n") * 1000
    assert full.startswith(text.removesuffix(TRUNCATED_MARKER))


async def test_message_id_is_the_header_or_a_hash_of_the_message(
    imap_server: ImapServer, user: str
) -> None:
    with_id = raw_message(message_id="  <abc.123@mail.example.com>")
    without_id = raw_message(message_id=None)
    imap_server.append(with_id, username=user)
    imap_server.append(without_id, username=user)
    box = mailbox(imap_server, user)

    first, second = await fetch_unseen(box)
    again = await fetch_unseen(box)

    assert first.payload["message_id"] == "abc.123@mail.example.com"
    assert second.payload["message_id"] == "sha256:" + hashlib.sha256(without_id).hexdigest()
    assert [m.payload["message_id"] for m in again] == [
        "abc.123@mail.example.com",
        "sha256:" + hashlib.sha256(without_id).hexdigest(),
    ]


async def test_headers_are_decoded_and_dates_normalised(imap_server: ImapServer, user: str) -> None:
    jürgen = f"{encoded_word('Jürgen Groß')} <jg@example.de>"
    imap_server.append(
        raw_message(sender=jürgen, subject=None, date="Wed, 2 Apr 2025 23:05:09 -0000"),
        username=user,
    )
    imap_server.append(raw_message(date="next Tuesday"), username=user)
    imap_server.append(raw_message(date=None), username=user)

    decoded, unparseable, missing = await fetch_unseen(mailbox(imap_server, user))

    assert decoded.payload == {
        **INVOICE_PAYLOAD,
        "from": "Jürgen Groß <jg@example.de>",
        "subject": "",
        "date": "2025-04-02T23:05:09+00:00",
    }
    assert unparseable.payload["date"] is None
    assert missing.payload["date"] is None


async def test_a_non_ascii_password_logs_in(imap_server: ImapServer) -> None:
    name = f"üser-{uuid.uuid4().hex[:8]}"
    imap_server.add_user(name, "pässwörd-€")
    uid = imap_server.append(raw_message(), username=name)

    messages = await fetch_unseen(mailbox(imap_server, name, "ssl"))

    assert messages == [Message(uid=uid, payload=INVOICE_PAYLOAD)]


async def test_a_wrong_password_is_an_auth_error_without_the_password(
    imap_server: ImapServer, user: str
) -> None:
    password = "wrong-Secret-9f2c"
    box = mailbox(imap_server, user, "starttls", password=password)

    with pytest.raises(ActionFailure) as error:
        await fetch_unseen(box)

    assert failure(error) == (
        "ImapAuthError",
        f"IMAP login as {user!r} at 127.0.0.1:{box.port} refused: "
        "[AUTHENTICATIONFAILED] Invalid authentication credentials.",
        False,
    )
    assert password not in repr(error.value)
    assert password not in repr(box)
    assert [login for login in imap_server.logins if login.username == user] == [
        LoginAttempt(user, tls=True, ok=False)
    ]


async def test_a_missing_folder_is_a_folder_error(imap_server: ImapServer, user: str) -> None:
    box = mailbox(imap_server, user, folder="Entwürfe")

    with pytest.raises(ActionFailure) as error:
        await fetch_unseen(box)

    assert failure(error) == (
        "ImapFolderError",
        f"folder 'Entwürfe' on 127.0.0.1:{box.port} cannot be opened: "
        "[NONEXISTENT] Mailbox does not exist.",
        False,
    )


async def test_nothing_listening_is_a_retryable_connection_error(
    imap_server: ImapServer, user: str
) -> None:
    port = free_port()
    box = mailbox(imap_server, user, "ssl", port=port)

    with pytest.raises(ActionFailure) as error:
        await fetch_unseen(box)
    assert failure(error) == (
        "ImapConnectionError",
        f"IMAP server 127.0.0.1:{port}: ConnectionRefusedError: [Errno 111] Connection refused",
        True,
    )
    with pytest.raises(ActionFailure) as error:
        await mark_seen(box, ["1"])
    assert error.value.type == "ImapConnectionError"


async def test_a_silent_server_times_out_as_a_retryable_connection_error(
    imap_server: ImapServer, user: str
) -> None:
    with socket.socket() as silent:  # accepts connections (the backlog), never greets
        silent.bind(("127.0.0.1", 0))
        silent.listen()
        port = silent.getsockname()[1]
        box = mailbox(imap_server, user, port=port, timeout=0.3)

        with pytest.raises(ActionFailure) as error:
            await fetch_unseen(box)

    assert failure(error) == (
        "ImapConnectionError",
        f"IMAP server 127.0.0.1:{port}: TimeoutError: timed out",
        True,
    )
