"""Secrets: passwords (argon2id), API keys and session tokens (random, stored as SHA-256).

A password is low-entropy, so it is stored with a slow, salted hash (argon2id) and checked in a
thread. A key or a session token is 256 random bits: a plain SHA-256 of it cannot be reversed or
guessed, and lets every request be checked with one lookup instead of a slow hash.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import re
import secrets
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

KEY_PREFIX = "cdk_"
_KEY = re.compile(r"cdk_([0-9a-f]{16})_([A-Za-z0-9_-]{43})\Z")
MIN_PASSWORD = 10


def digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


@dataclass(frozen=True, slots=True)
class NewKey:
    key_id: str
    secret_hash: str
    token: str  # shown once to its owner, never stored


def new_api_key() -> NewKey:
    key_id = secrets.token_hex(8)
    secret = secrets.token_urlsafe(32)
    return NewKey(key_id, digest(secret), f"{KEY_PREFIX}{key_id}_{secret}")


def parse_api_key(token: str) -> tuple[str, str] | None:
    """(key id, hash of its secret) of a well-formed key, else None."""
    m = _KEY.match(token)
    return (m.group(1), digest(m.group(2))) if m else None


def new_token() -> str:
    return secrets.token_urlsafe(32)


@functools.cache
def _decoy(time_cost: int, memory_cost: int, parallelism: int) -> str:
    """A hash of a random secret with these parameters, made once per process: a hash takes a
    tenth of a second on purpose, and every app this process builds needs one (tests build
    thousands)."""
    hasher = PasswordHasher(time_cost=time_cost, memory_cost=memory_cost, parallelism=parallelism)
    return hasher.hash(secrets.token_urlsafe(16))


class Passwords:
    """argon2id hashing, off the event loop (a check takes tens of milliseconds on purpose)."""

    def __init__(self) -> None:
        self._hasher = PasswordHasher()
        # Checked against when the account does not exist, so that "no such account" takes as
        # long as "wrong password" and the time of an answer does not tell names apart.
        hasher = self._hasher
        self._decoy = _decoy(hasher.time_cost, hasher.memory_cost, hasher.parallelism)

    @staticmethod
    def check_strength(password: object) -> str:
        if not isinstance(password, str) or len(password) < MIN_PASSWORD:
            raise ValueError(f"a password needs at least {MIN_PASSWORD} characters")
        if len(password) > 1024:
            raise ValueError("a password has at most 1024 characters")
        return password

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, stored_hash: str | None, password: str) -> bool:
        def check() -> bool:
            try:
                return self._hasher.verify(stored_hash or self._decoy, password) and bool(
                    stored_hash
                )
            except (VerifyMismatchError, VerificationError, InvalidHashError):
                return False

        return await asyncio.to_thread(check)
