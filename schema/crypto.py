"""Encryption of secrets at rest: Fernet keys derived from ``CRONPILOT_SECRET_KEY`` with HKDF.

Rotation: set the new key as ``CRONPILOT_SECRET_KEY`` and the old one in
``CRONPILOT_SECRET_KEY_PREVIOUS``; values encrypted with either decrypt, and
``cronpilot secrets rotate`` re-encrypts every value with the new key.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from schema.settings import Settings

__all__ = ["InvalidToken", "SecretBox"]


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
