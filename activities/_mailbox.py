"""Reading a mailbox over IMAP: the unseen messages of a folder, and marking them seen.

`fetch_unseen` opens the folder read-only (EXAMINE) and fetches with ``BODY.PEEK[]``, so it
changes nothing, not even for messages the filters leave out; `mark_seen` is the one call
that writes. Both run stdlib imaplib in a thread and fail with an ``ActionFailure``:
``ImapAuthError`` (login refused), ``ImapTlsError`` (no TLS or a certificate that does not
verify), ``ImapFolderError`` (folder missing or read-only), all three not retryable;
``ImapConnectionError`` and ``ImapCommandError`` (the server refused a command), retryable.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import hashlib
import imaplib
import itertools
import re
import socket
import ssl
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC
from email.message import EmailMessage, MIMEPart
from email.parser import BytesHeaderParser, BytesParser
from email.policy import default as default_policy
from email.utils import parsedate_to_datetime
from typing import Any, Literal

from bs4 import BeautifulSoup

from activities._failure import ActionFailure

Security = Literal["ssl", "starttls", "none"]
Stage = Literal["connect", "starttls", "login", "command"]
# The text of a message is cut to this many bytes of UTF-8, marker included.
TEXT_LIMIT_BYTES = 64 * 1024
TRUNCATED_MARKER = "\n[… text truncated at 64 KiB]"
# HTML beyond this is not parsed: its text would be cut anyway, and parsing is CPU-bound.
HTML_LIMIT_CHARS = 16 * TEXT_LIMIT_BYTES
# Header-only fetches (to filter) and flag stores go this many UIDs per command.
BATCH = 200
HIDDEN = ("script", "style", "head", "title", "template", "noscript")
BLOCKS = frozenset(
    "address article aside blockquote br dd div dl dt figcaption figure footer form h1 h2 h3 "
    "h4 h5 h6 header hr li main nav ol p pre section table tr ul".split()
)
# Marks where a block starts or ends in HTML; newlines there are only whitespace.
BREAK = "\0"
XML_DECLARATION = re.compile(r"^\s*<\?xml\b[^>]*>", re.I)
_UID = re.compile(rb"\bUID (\d+)")


@dataclass(frozen=True)
class Mailbox:
    """Where to read mail: an IMAP server, an account and a folder. TLS is verified against
    the system's trust store, or only against ``ca_file`` when given."""

    host: str
    port: int
    username: str
    password: str = field(repr=False)
    security: Security
    folder: str = "INBOX"
    timeout: float = 30.0
    ca_file: str | None = None
    # Where to connect, in order, instead of looking ``host`` up again (the addresses the
    # outbound network guard checked); TLS still verifies the certificate for ``host``.
    addresses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.security not in ("ssl", "starttls", "none"):
            raise ValueError(f"security must be ssl, starttls or none, not {self.security!r}")


@dataclass(frozen=True)
class Message:
    """One unseen message: its IMAP UID (for `mark_seen`) and what a delivery carries."""

    uid: str
    payload: dict[str, str | None]


async def fetch_unseen(
    box: Mailbox,
    *,
    from_contains: str | None = None,
    subject_contains: str | None = None,
    limit: int = 50,
) -> list[Message]:
    """The folder's unseen messages whose From and decoded Subject contain the given texts
    (ignoring case), oldest first, at most ``limit``; nothing in the mailbox changes."""
    if limit < 1:
        raise ValueError("limit must be at least 1")
    return await asyncio.to_thread(_fetch_unseen, box, from_contains, subject_contains, limit)


async def mark_seen(box: Mailbox, uids: list[str]) -> None:
    """Add the \\Seen flag to exactly these messages of the folder."""
    if any(not uid.isascii() or not uid.isdigit() for uid in uids):
        raise ValueError(f"IMAP UIDs are numbers: {uids!r}")
    if uids:
        await asyncio.to_thread(_mark_seen, box, uids)


def _fetch_unseen(
    box: Mailbox, from_contains: str | None, subject_contains: str | None, limit: int
) -> list[Message]:
    with _session(box) as client:
        _select(client, box, readonly=True)
        status, data = client.uid("SEARCH", "UNSEEN")
        _check(box, "UID SEARCH UNSEEN", status, data)
        # UIDs grow with arrival, so ascending UIDs are oldest first.
        uids = sorted(int(uid) for part in data if isinstance(part, bytes) for uid in part.split())
        if from_contains or subject_contains:
            uids = _matching(client, box, uids, from_contains, subject_contains, limit)
        messages = []
        for uid in uids[:limit]:
            # One at a time: a mailbox can hold messages of many megabytes.
            status, data = client.uid("FETCH", str(uid), "(BODY.PEEK[])")
            _check(box, "UID FETCH", status, data)
            raw = _literals(data).get(uid)
            if raw is not None:  # None: expunged since the search
                messages.append(Message(uid=str(uid), payload=payload_of(raw)))
        return messages


def _matching(
    client: imaplib.IMAP4,
    box: Mailbox,
    uids: list[int],
    from_contains: str | None,
    subject_contains: str | None,
    limit: int,
) -> list[int]:
    # Filtered here, not with SEARCH FROM/SUBJECT: servers differ on how they match (some
    # by whole words, some not decoding RFC 2047), and a missed message is never delivered.
    wanted = [
        (name, text.casefold())
        for name, text in (("From", from_contains), ("Subject", subject_contains))
        if text
    ]
    found: list[int] = []
    for start in range(0, len(uids), BATCH):
        batch = uids[start : start + BATCH]
        status, data = client.uid(
            "FETCH", ",".join(map(str, batch)), "(BODY.PEEK[HEADER.FIELDS (FROM SUBJECT)])"
        )
        _check(box, "UID FETCH", status, data)
        headers = _literals(data)
        for uid in batch:
            if uid not in headers:
                continue
            message = BytesHeaderParser(policy=default_policy).parsebytes(headers[uid])
            assert isinstance(message, EmailMessage)
            if all(text in _header(message, name).casefold() for name, text in wanted):
                found.append(uid)
                if len(found) == limit:
                    return found
    return found


def _mark_seen(box: Mailbox, uids: list[str]) -> None:
    with _session(box) as client:
        _select(client, box, readonly=False)
        for start in range(0, len(uids), BATCH):
            uid_set = ",".join(uids[start : start + BATCH])
            status, data = client.uid("STORE", uid_set, "+FLAGS.SILENT", "(\\Seen)")
            _check(box, "UID STORE", status, data)


@contextlib.contextmanager
def _session(box: Mailbox) -> Iterator[imaplib.IMAP4]:
    """A logged-in connection; whatever imaplib or the socket raises inside becomes the
    ``ActionFailure`` for the stage it happened in."""
    context = _tls_context(box) if box.security != "none" else None
    client: imaplib.IMAP4 | None = None
    stage: Stage = "connect"
    try:
        if box.security == "ssl":
            assert context is not None
            client = _PinnedIMAP4SSL(box, context)
        else:
            client = _PinnedIMAP4(box)
        if box.security == "starttls":
            stage = "starttls"
            if "STARTTLS" not in client.capabilities:
                raise ActionFailure(
                    "ImapTlsError",
                    f"IMAP server {box.host}:{box.port} does not offer STARTTLS",
                    retryable=False,
                )
            client.starttls(ssl_context=context)
        stage = "login"
        _login(client, box)
        stage = "command"
        yield client
    except (imaplib.IMAP4.error, OSError) as error:
        _shutdown(client)
        raise _classified(error, stage, box) from error
    except BaseException:
        _shutdown(client)
        raise
    else:
        client.logout()


class _PinnedIMAP4(imaplib.IMAP4):
    """imaplib's client, connected to ``box.addresses`` when given."""

    def __init__(self, box: Mailbox) -> None:
        self._addresses = box.addresses
        super().__init__(box.host, box.port, timeout=box.timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        return _connect(self.host, self.port, self._addresses, timeout)


class _PinnedIMAP4SSL(imaplib.IMAP4_SSL):
    """imaplib's implicit-TLS client, connected to ``box.addresses`` when given."""

    def __init__(self, box: Mailbox, context: ssl.SSLContext) -> None:
        self._addresses = box.addresses
        self._context = context
        super().__init__(box.host, box.port, ssl_context=context, timeout=box.timeout)

    def _create_socket(self, timeout: float | None) -> socket.socket:
        sock = _connect(self.host, self.port, self._addresses, timeout)
        return self._context.wrap_socket(sock, server_hostname=self.host)


def _connect(
    host: str, port: int, addresses: tuple[str, ...], timeout: float | None
) -> socket.socket:
    """A connection to the first of ``addresses`` that answers (to ``host`` without any)."""
    last_error: OSError | None = None
    for address in addresses or (host,):
        try:
            return socket.create_connection((address, port), timeout)
        except OSError as error:
            last_error = error
    assert last_error is not None
    raise last_error


def _shutdown(client: imaplib.IMAP4 | None) -> None:
    """Close the connection without a LOGOUT, which a broken one would wait for."""
    if client is not None:
        with contextlib.suppress(OSError):  # a failed TLS handshake closed the socket
            client.shutdown()


def _tls_context(box: Mailbox) -> ssl.SSLContext:
    try:
        return ssl.create_default_context(cafile=box.ca_file)
    except OSError as error:  # ssl.SSLError included
        raise ActionFailure(
            "ImapTlsError", f"cannot load ca_file {box.ca_file!r}: {error}", retryable=False
        ) from error


def _login(client: imaplib.IMAP4, box: Mailbox) -> None:
    if _printable_ascii(box.username) and _printable_ascii(box.password):
        client.login(box.username, box.password)
    else:
        # LOGIN takes ASCII only; SASL PLAIN carries UTF-8 (and cannot be broken by CR/LF).
        credentials = f"\0{box.username}\0{box.password}".encode()
        client.authenticate("PLAIN", lambda _challenge: credentials)


def _printable_ascii(text: str) -> bool:
    return all(" " <= char <= "~" for char in text)


def _select(client: imaplib.IMAP4, box: Mailbox, *, readonly: bool) -> None:
    try:
        status, data = client.select(_folder_name(box.folder), readonly=readonly)
    except imaplib.IMAP4.readonly:
        status, data = "NO", [b"the folder is read-only"]
    if status != "OK":
        raise ActionFailure(
            "ImapFolderError",
            f"folder {box.folder!r} on {box.host}:{box.port} cannot be opened: {_reply(data)}",
            retryable=False,
        )


def _folder_name(name: str) -> str:
    """``name`` in IMAP's modified UTF-7 (RFC 3501 5.1.3), quoted."""
    encoded = []
    for printable, run in itertools.groupby(name, key=lambda char: " " <= char <= "~"):
        text = "".join(run)
        if printable:
            encoded.append(text.replace("&", "&-"))
        else:
            utf16 = base64.b64encode(text.encode("utf-16-be")).rstrip(b"=").decode()
            encoded.append("&" + utf16.replace("/", ",") + "-")
    quoted = "".join(encoded).replace("\\", "\\\\").replace('"', '\\"')
    return f'"{quoted}"'


def _check(box: Mailbox, command: str, status: str, data: list[Any]) -> None:
    if status != "OK":
        raise ActionFailure(
            "ImapCommandError",
            f"{command} refused by {box.host}:{box.port}: {_reply(data)}",
            retryable=True,
        )


def _literals(data: list[Any]) -> dict[int, bytes]:
    """The literal of each message in a UID FETCH answer, by UID (which servers put before
    or after the literal)."""
    found: dict[int, bytes] = {}
    for index, item in enumerate(data):
        if not isinstance(item, tuple):
            continue
        prefix, literal = item
        after = data[index + 1] if index + 1 < len(data) else b""
        match = _UID.search(prefix) or _UID.search(after if isinstance(after, bytes) else b"")
        if match is not None:
            found[int(match.group(1))] = literal
    return found


def _classified(error: Exception, stage: Stage, box: Mailbox) -> ActionFailure:
    """The ActionFailure for what imaplib (or the socket or TLS under it) raised at ``stage``."""
    where = f"{box.host}:{box.port}"
    if isinstance(error, ssl.SSLError):
        # A failed certificate check or protocol mismatch will fail the same way again.
        return ActionFailure(
            "ImapTlsError",
            f"TLS with the IMAP server {where}: {error}",
            retryable=isinstance(error, ssl.SSLEOFError),
        )
    reply = _reply(list(error.args[:1])) if isinstance(error, imaplib.IMAP4.error) else str(error)
    if isinstance(error, (OSError, imaplib.IMAP4.abort)):
        return ActionFailure(
            "ImapConnectionError",
            f"IMAP server {where}: {type(error).__name__}: {reply}",
            retryable=True,
        )
    if stage == "starttls":
        return ActionFailure("ImapTlsError", f"STARTTLS with {where}: {reply}", retryable=False)
    if stage == "login" and "[UNAVAILABLE]" in reply.upper():
        return ActionFailure(
            "ImapConnectionError", f"IMAP server {where} unavailable: {reply}", retryable=True
        )
    if stage == "login":
        if box.password:  # a server has no reason to repeat it, but the message must not
            reply = reply.replace(box.password, "***")
        return ActionFailure(
            "ImapAuthError",
            f"IMAP login as {box.username!r} at {where} refused: {reply}",
            retryable=False,
        )
    if stage == "connect":
        return ActionFailure("ImapConnectionError", f"IMAP server {where}: {reply}", retryable=True)
    return ActionFailure("ImapCommandError", f"IMAP server {where}: {reply}", retryable=True)


def _reply(data: list[Any]) -> str:
    parts = [
        part.decode("utf-8", "replace") if isinstance(part, bytes) else str(part)
        for part in data
        if part is not None
    ]
    return " ".join(parts) or "no reason given"


def payload_of(raw: bytes) -> dict[str, str | None]:
    """What a delivery carries for one message: from, to, subject (headers decoded), date
    (ISO 8601 or None), text (plain preferred, else HTML as text; capped) and message_id."""
    message = BytesParser(policy=default_policy).parsebytes(raw)
    assert isinstance(message, EmailMessage)
    return {
        "from": _header(message, "From"),
        "to": _header(message, "To"),
        "subject": _header(message, "Subject"),
        "date": _date(_header(message, "Date")),
        "text": _capped(_text(message)),
        "message_id": _message_id(message, raw),
    }


def _header(message: EmailMessage, name: str) -> str:
    """The header's decoded value, "" when absent."""
    try:
        value = message.get(name)
        return "" if value is None else str(value)
    except Exception:  # the header parser raises assorted errors on odd input
        raw = next((v for k, v in message.raw_items() if k.lower() == name.lower()), "")
        unfolded = " ".join(str(raw).split())
        return unfolded.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def _date(value: str) -> str | None:
    try:
        parsed = parsedate_to_datetime(value)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    # "-0000" (no zone known) parses naive; the time is still UTC.
    return (parsed if parsed.tzinfo is not None else parsed.replace(tzinfo=UTC)).isoformat()


def _message_id(message: EmailMessage, raw: bytes) -> str:
    value = _header(message, "Message-ID").strip().removeprefix("<").removesuffix(">").strip()
    return value or "sha256:" + hashlib.sha256(raw).hexdigest()


def _text(message: EmailMessage) -> str:
    plain = message.get_body(preferencelist=("plain",))
    if plain is not None:
        text = _tidy_plain(_part_text(plain))
        if text:
            return text
    html = message.get_body(preferencelist=("html",))
    return html_text(_part_text(html)) if html is not None else ""


def _part_text(part: MIMEPart) -> str:
    try:
        content = part.get_content()
    except (LookupError, ValueError):  # an unknown or lying charset
        content = None
    if isinstance(content, str):
        return content
    payload = part.get_payload(decode=True)
    return payload.decode("utf-8", "replace") if isinstance(payload, bytes) else ""


def _tidy_plain(text: str) -> str:
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def html_text(html: str) -> str:
    """The text of an HTML body: one line per block, whitespace collapsed, no blank lines."""
    html = XML_DECLARATION.sub("", html[:HTML_LIMIT_CHARS].replace(BREAK, ""), count=1)
    # The spaces keep bs4 from warning that a bare URL or file name looks like a locator.
    soup = BeautifulSoup(f" {html} ", "html.parser")
    for hidden in soup.find_all(HIDDEN):
        hidden.decompose()
    for block in soup.find_all(BLOCKS):
        block.insert_before(BREAK)
        block.insert_after(BREAK)
    for cell in soup.find_all(("td", "th")):
        cell.insert_after(" ")
    lines = (" ".join(piece.split()) for piece in soup.get_text().split(BREAK))
    return "\n".join(line for line in lines if line)


def _capped(text: str) -> str:
    data = text.encode()
    if len(data) <= TEXT_LIMIT_BYTES:
        return text
    room = TEXT_LIMIT_BYTES - len(TRUNCATED_MARKER.encode())
    return data[:room].decode("utf-8", "ignore") + TRUNCATED_MARKER
