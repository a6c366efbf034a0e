"""Webhook request authentication: the three modes, compared in constant time.

- ``hmac``: ``X-Cronpilot-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256(secret,
  "<t>.<raw body>")>``; a timestamp more than ``TOLERANCE_SECONDS`` away is refused, so a
  captured request cannot be replayed later. Several ``v1=`` values may be given (one
  matching is enough), which lets a sender sign with an old and a new secret.
- ``github``: ``X-Hub-Signature-256: sha256=<hex HMAC-SHA256(secret, raw body)>``.
- ``token``: ``X-Cronpilot-Token: <secret>``.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass

TOLERANCE_SECONDS = 300
SIGNATURE_HEADER = "x-cronpilot-signature"
GITHUB_HEADER = "x-hub-signature-256"
TOKEN_HEADER = "x-cronpilot-token"


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str = ""
    # The signed timestamp (hmac mode): part of the default delivery id.
    timestamp: int | None = None
    # The signature that matched (hmac, github): a replay of it is only good for the same
    # delivery.
    signature: str | None = None


def sign(secret: str, body: bytes, timestamp: int) -> str:
    """The ``X-Cronpilot-Signature`` header value of ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"t={timestamp},v1={digest.hexdigest()}"


def verify(auth: str, secret: str, headers: Mapping[str, str], body: bytes, now: float) -> Verdict:
    """Whether the request carries a valid credential for ``auth`` mode (headers by
    lower-case name)."""
    if auth == "hmac":
        return _verify_hmac(secret, headers.get(SIGNATURE_HEADER), body, now)
    if auth == "github":
        given = headers.get(GITHUB_HEADER)
        if not given or not given.startswith("sha256="):
            return Verdict(False, f"missing or malformed {GITHUB_HEADER} header")
        expected = "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()
        if hmac.compare_digest(expected.encode(), given.strip().encode()):
            return Verdict(True, signature=expected)
        return Verdict(False, "signature does not match")
    if auth == "token":
        given = headers.get(TOKEN_HEADER)
        if not given:
            return Verdict(False, f"missing {TOKEN_HEADER} header")
        if hmac.compare_digest(secret.encode(), given.encode()):
            return Verdict(True)
        return Verdict(False, "token does not match")
    return Verdict(False, f"unknown auth mode {auth!r}")


def _verify_hmac(secret: str, header: str | None, body: bytes, now: float) -> Verdict:
    if not header:
        return Verdict(False, f"missing {SIGNATURE_HEADER} header")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        key, _, value = part.strip().partition("=")
        if key == "t" and value.isascii() and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif key == "v1":
            signatures.append(value.strip())
    if timestamp is None or not signatures:
        return Verdict(False, f"malformed {SIGNATURE_HEADER} header: expected t=...,v1=...")
    if abs(now - timestamp) > TOLERANCE_SECONDS:
        return Verdict(
            False, f"timestamp is more than {TOLERANCE_SECONDS} s away from the server's clock"
        )
    expected = sign(secret, body, timestamp).partition("v1=")[2].encode()
    # Compare every candidate, so the time taken does not tell which one was close.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected, candidate.encode())
    if not matched:
        return Verdict(False, "signature does not match")
    return Verdict(True, timestamp=timestamp, signature=expected.decode())
