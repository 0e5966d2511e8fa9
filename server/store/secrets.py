"""Secrets at rest (DESIGN.md invariant 5): channel credentials and webhook secrets are stored sealed.

A `SecretBox` seals a value (a string or a string map) into Fernet text
(AES-128-CBC + HMAC-SHA256, authenticated) and opens it again. The key comes
from `CONVHUB_SECRET_KEY`, a comma-separated list of Fernet keys: the first
seals, every one opens (MultiFernet), so a key is rotated by putting the new
one first and keeping the old one after it. A value that no key opens raises
`SecretUnreadable`: a wrong key fails loudly, it never yields garbage.

Without the setting, an embedded (SQLite) install generates a key into its
data directory on first start; PostgreSQL replicas must share one key, so
there the setting is required.

cryptography (~7 MB resident) is imported on the first seal or open, not at
start: keys are checked and generated with Fernet's own rules (32 url-safe
base64 bytes) here, so a server with nothing sealed never loads it.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from cryptography.fernet import MultiFernet

SETTING = "CONVHUB_SECRET_KEY"
KEY_FILE = "secret.key"
MAKE_ONE = "python -c 'from cryptography.fernet import Fernet; print(Fernet.generate_key().decode())'"

SecretValue = str | dict[str, str]


class SecretKeyError(Exception):
    """The key setting (or the generated key file) is missing or malformed; the message names it."""


class SecretUnreadable(Exception):
    """A stored secret that none of the configured keys opens (a wrong key, or a damaged value)."""


class SecretBox:
    """Seals secrets for storage with the first key; opens them with any key."""

    def __init__(self, keys: Sequence[bytes | str]) -> None:
        if not keys:
            raise SecretKeyError(f"{SETTING}: no key given")
        self._keys = [key.encode() if isinstance(key, str) else key for key in keys]
        for key in self._keys:
            if not is_fernet_key(key):
                raise ValueError("Fernet key must be 32 url-safe base64-encoded bytes.")  # as Fernet(key) says
        self._first = self._keys[0]
        self._multi: MultiFernet | None = None

    @property
    def _fernet(self) -> MultiFernet:
        if self._multi is None:
            from cryptography.fernet import Fernet, MultiFernet

            self._multi = MultiFernet([Fernet(key) for key in self._keys])
        return self._multi

    def derived_key(self, purpose: str) -> bytes:
        """A key for `purpose` (e.g. signing media links) derived from the sealing key, so replicas share it."""
        return hmac.new(self._first, b"convhub:" + purpose.encode(), hashlib.sha256).digest()

    def seal(self, value: SecretValue) -> str:
        """Fernet text for `value`; sealing the same value twice gives different text."""
        return self._fernet.encrypt(json.dumps(value, separators=(",", ":")).encode()).decode("ascii")

    def open(self, sealed: str) -> SecretValue:
        """The value `seal` was given; SecretUnreadable when no key opens it."""
        from cryptography.fernet import InvalidToken

        try:
            plain = self._fernet.decrypt(sealed.encode("ascii"))
        except (InvalidToken, UnicodeEncodeError):
            raise SecretUnreadable(
                f"a stored secret does not open with {SETTING} (a wrong key? when rotating, "
                "list the new key first and keep the old ones after it)"
            ) from None
        value: SecretValue = json.loads(plain)
        return value

    def open_mapping(self, sealed: str) -> dict[str, str]:
        """`open` for values sealed from a string map (channel credentials)."""
        value = self.open(sealed)
        if not isinstance(value, dict):
            raise SecretUnreadable("a stored secret is not a string map")
        return value


def parse_keys(setting: str) -> list[bytes]:
    """The keys in a comma-separated `CONVHUB_SECRET_KEY` value; SecretKeyError names a bad one (not its text)."""
    parts = [part.strip() for part in setting.split(",")]
    keys = [part.encode() for part in parts if part]
    if not keys:
        raise SecretKeyError(f"{SETTING}: no key given; make one with {MAKE_ONE}")
    for n, key in enumerate(keys, 1):
        if not is_fernet_key(key):
            raise SecretKeyError(
                f"{SETTING}: key {n} of {len(keys)} is not a Fernet key "
                f"(32 url-safe base64-encoded bytes); make one with {MAKE_ONE}"
            )
    return keys


def is_fernet_key(key: bytes) -> bool:
    """What `Fernet(key)` accepts: 32 bytes in url-safe base64 (its own check, without importing cryptography)."""
    try:
        return len(base64.urlsafe_b64decode(key)) == 32
    except (binascii.Error, ValueError):
        return False


def generate_key() -> bytes:
    """A new key, made as `Fernet.generate_key()` makes one."""
    return base64.urlsafe_b64encode(os.urandom(32))


def load_secret_box(setting: str, *, backend: str, data_dir: Path) -> SecretBox:
    """The process's SecretBox: from the setting, else (SQLite only) from a key file generated once in data_dir."""
    if setting.strip():
        return SecretBox(parse_keys(setting))
    if backend != "sqlite":
        raise SecretKeyError(
            f"{SETTING} is required with {backend}: every replica must seal and open secrets with one "
            f"shared key; make one with {MAKE_ONE}"
        )
    path = data_dir / KEY_FILE
    key = _read_key_file(path) if path.exists() else _create_key_file(path)
    return SecretBox([key])


def _read_key_file(path: Path) -> bytes:
    try:
        return parse_keys(path.read_text())[0]
    except SecretKeyError:
        raise SecretKeyError(
            f"{SETTING} is unset and {path} holds no Fernet key: restore it, or set {SETTING}"
        ) from None


def _create_key_file(path: Path) -> bytes:
    """Write a new key readable by this user only (0600); a concurrent first start keeps the other's key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    key = generate_key()
    staging = path.with_name(f".{path.name}.{os.getpid()}")
    fd = os.open(staging, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, key + b"\n")
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(staging, path)  # atomic, and never replaces a key another process just wrote
    except FileExistsError:
        return _read_key_file(path)
    finally:
        staging.unlink()
    return key
