"""Encryption of secrets at rest: Fernet keys derived from ``CRONPILOT_SECRET_KEY`` with HKDF.

Rotation: set the new key as ``CRONPILOT_SECRET_KEY`` and the old one in
``CRONPILOT_SECRET_KEY_PREVIOUS``; values encrypted with either decrypt, and
``cronpilot secrets rotate`` re-encrypts every value with the new key.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import re

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schema.settings import Settings

__all__ = ["InvalidToken", "SecretBox", "read_resume_token", "resume_token"]


def _fernet(secret_key: str) -> Fernet:
    derived = HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"cronpilot-secrets", info=b"fernet-v1"
    ).derive(secret_key.encode())
    return Fernet(base64.urlsafe_b64encode(derived))


class SecretBox:
    """Encrypts with the current key; decrypts with the current or any previous key."""

    def __init__(self, settings: Settings) -> None:
        if not settings.secret_key:
            raise ValueError("CRONPILOT_SECRET_KEY is needed to store secrets")
        keys = [settings.secret_key, *settings.previous_secret_keys]
        self._fernet = MultiFernet([_fernet(key) for key in keys])

    def encrypt(self, value: str) -> str:
        return self._fernet.encrypt(value.encode()).decode()

    def decrypt(self, token: str) -> str:
        return self._fernet.decrypt(token.encode()).decode()

    def rotate(self, token: str) -> str:
        """The same value encrypted with the current key."""
        return self._fernet.rotate(token.encode()).decode()


def _resume_key(secret_key: str) -> bytes:
    return HKDF(
        algorithm=hashes.SHA256(), length=32, salt=b"cronpilot-resume", info=b"resume-v1"
    ).derive(secret_key.encode())


URLSAFE_UNPADDED = re.compile(r"[A-Za-z0-9_-]+")


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strictly: only the URL-safe alphabet, no padding, and the one canonical spelling of
    the bytes (a token with anything appended or changed is not the token)."""
    if not URLSAFE_UNPADDED.fullmatch(text):
        raise ValueError("not unpadded URL-safe base64")
    data = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
    if _b64(data) != text:
        raise ValueError("not the canonical base64 of its bytes")
    return data


def resume_token(settings: Settings, workflow_id: str, step_id: str) -> str:
    """A chain step's resume token: which chain and step, signed with a key derived from
    ``SECRET_KEY`` (HMAC-SHA256). Without the key it can be neither forged nor guessed."""
    if not settings.secret_key:
        raise ValueError("CRONPILOT_SECRET_KEY is needed to sign resume tokens")
    body = _b64(json.dumps([workflow_id, step_id], separators=(",", ":")).encode())
    signature = hmac.new(_resume_key(settings.secret_key), body.encode(), hashlib.sha256)
    return f"{body}.{_b64(signature.digest())}"


def read_resume_token(settings: Settings, token: str) -> tuple[str, str] | None:
    """The (chain workflow id, step id) a token names, when its signature is good under the
    current or a previous key; else None."""
    body, _, signature = token.partition(".")
    if not body or not signature or len(token) > 1000 or not settings.secret_key:
        return None
    try:
        given = _unb64(signature)
    except ValueError:
        return None
    for key in (settings.secret_key, *settings.previous_secret_keys):
        expected = hmac.new(_resume_key(key), body.encode(), hashlib.sha256).digest()
        if hmac.compare_digest(expected, given):
            try:
                workflow_id, step_id = json.loads(_unb64(body))
            except (ValueError, TypeError):
                return None
            if isinstance(workflow_id, str) and isinstance(step_id, str):
                return workflow_id, step_id
            return None
    return None
