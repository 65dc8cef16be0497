"""API keys: generation, hashing and parsing (pure; storage lives with the callers).

A key reads ``arbor_<id>_<secret>``: ``id`` is 12 lower-case base-36 characters that find the row,
``secret`` 43 URL-safe characters (256 bits from `secrets`). Only ``sha256(key)`` is stored: a key
of that entropy needs no slow hash, and the comparison is constant-time.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
import string
from dataclasses import dataclass
from enum import StrEnum

__all__ = ["ALL_ROLES", "NewKey", "Role", "generate_key", "hash_key", "key_id_of", "matches"]

_ID_ALPHABET = string.ascii_lowercase + string.digits
_KEY_RE = re.compile(r"^arbor_([a-z0-9]{12})_([A-Za-z0-9_-]{43})$")


class Role(StrEnum):
    """What a key may do; every route lists the roles it admits (docs/api.md has the matrix)."""

    VIEWER = "viewer"
    OPERATOR = "operator"
    ENGINEER = "engineer"
    MAINTENANCE = "maintenance"
    ADMIN = "admin"


ALL_ROLES: frozenset[Role] = frozenset(Role)


@dataclass(frozen=True)
class NewKey:
    """A freshly generated key: `key` is shown once, `key_hash` is what gets stored."""

    key_id: str
    key: str
    key_hash: str


def hash_key(key: str) -> str:
    """Lower-case hex SHA-256 of the whole key."""
    return hashlib.sha256(key.encode("utf-8")).hexdigest()


def generate_key() -> NewKey:
    """A new random key with its id and hash."""
    key_id = "".join(secrets.choice(_ID_ALPHABET) for _ in range(12))
    key = f"arbor_{key_id}_{secrets.token_urlsafe(32)}"
    return NewKey(key_id=key_id, key=key, key_hash=hash_key(key))


def key_id_of(key: str) -> str | None:
    """The id part of a well-formed key, or None when `key` is not shaped like an Arbor key."""
    m = _KEY_RE.match(key)
    return m.group(1) if m else None


def matches(key: str, stored_hash: str) -> bool:
    """Constant-time check of `key` against a stored hash."""
    return hmac.compare_digest(hash_key(key), stored_hash)
