"""Password hashing: the only passlib user. Salts are parameters, so output is reproducible."""

from __future__ import annotations

import hashlib
import hmac
from functools import lru_cache

from passlib.hash import sha512_crypt

_SALT_ALPHABET = "./0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"


def derived_salt(key: bytes, purpose: str) -> str:
    """A 16-character crypt salt derived from a secret key: stable across renders."""
    digest = hmac.new(key, f"salt:{purpose}".encode(), hashlib.sha256).digest()
    return "".join(_SALT_ALPHABET[b % 64] for b in digest[:16])


@lru_cache(maxsize=1024)
def sha512_crypt_hash(password: str, salt: str) -> str:
    """SHA-512 crypt at passlib's default rounds (656,000), cached per (password, salt)."""
    return str(sha512_crypt.using(salt=salt).hash(password))
