"""Provider secrets at rest: sealed with Fernet when SECRET_ENCRYPTION_KEY is set.

Sealed values are stored as ``fernet:<token>``; plain values (no key configured, or rows
written before a key was set) are read as they are, so a key can be introduced at any time
and rows are sealed as they are next written.
"""

from __future__ import annotations

from cryptography.fernet import Fernet, InvalidToken

PREFIX = "fernet:"


class SecretError(ValueError):
    pass


class SecretBox:
    def __init__(self, key: str | None) -> None:
        self.fernet = Fernet(key.encode()) if key else None

    def seal(self, secret: str | None) -> str | None:
        if secret is None or self.fernet is None:
            return secret
        return PREFIX + self.fernet.encrypt(secret.encode()).decode()

    def reveal(self, stored: str | None) -> str | None:
        if stored is None or not stored.startswith(PREFIX):
            return stored
        if self.fernet is None:
            raise SecretError("a provider secret is encrypted but SECRET_ENCRYPTION_KEY is unset")
        try:
            return self.fernet.decrypt(stored[len(PREFIX) :].encode()).decode()
        except InvalidToken:
            raise SecretError("a provider secret does not decrypt with SECRET_ENCRYPTION_KEY") from None
