"""A host's secrets, kept out of its kickstart and fetched once by its postinstall script.

Installer 2.7 and later copy the whole kickstart onto the installed disk
(``/var/log/poi/manifest.json.gz``, world-readable) and log parts of it, so a kickstart must
carry no secret. The postinstall script fetches them instead, from a single-use URL of their
own, as a small text document::

    photonkick-secrets 1
    hash:ops <base64 of the crypt hash>
    file:/etc/photonkick/registry-1.password <base64 of the file>

Keys are ``hash:<user>`` (``root`` included) and ``file:<path>``; values are base64, so a
document is plain ASCII with one item a line. The kickstart names the keys it expects (not
their values), so a document cannot add a user or a file on its own.
"""

from __future__ import annotations

import base64
import binascii
from dataclasses import dataclass
from typing import Any, Literal

from photonkick.kickstarts.passwords import derived_salt, sha512_crypt_hash
from photonkick.kickstarts.secrets import REDACTED, reveal
from photonkick.kickstarts.spec import Host, User
from photonkick.kickstarts.tokens import derived_token, same_token

DOCUMENT_HEADER = "photonkick-secrets 1"
SECRETS_DIR = "/etc/photonkick"


@dataclass(frozen=True)
class SecretItem:
    """One secret a host needs: a user's password hash or the content of a private file."""

    kind: Literal["hash", "file"]
    target: str
    """The user name (``hash``) or the absolute file path (``file``)."""
    value: str
    mode: str = "0600"

    @property
    def key(self) -> str:
        """The item's key in the document: ``hash:<user>`` or ``file:<path>``."""
        return f"{self.kind}:{self.target}"


def secrets_token(secret: bytes, host: str, build: int) -> str:
    """The single-use secrets token of one build of a host (not its kickstart token)."""
    return derived_token(secret, f"secrets:{host}:{build}")


def secrets_token_matches(secret: bytes, host: str, build: int, token: str) -> bool:
    """Constant-time check of a presented secrets token."""
    return same_token(secrets_token(secret, host, build), token)


def secrets_url(server_url: str, host: str, token: str) -> str:
    """Where the postinstall script fetches the secrets: ``/ks/<host>/<token>/secrets``."""
    return f"{server_url}/ks/{host}/{token}/secrets"


def registry_password_path(index: int) -> str:
    """The file holding the password of the host's ``index``-th registry (from 1)."""
    return f"{SECRETS_DIR}/registry-{index}.password"


def container_env_path(container: str) -> str:
    """The env file (``--env-file``) of one container."""
    return f"{SECRETS_DIR}/containers/{container}.env"


def user_hash(user: User, salt_key: bytes) -> str | None:
    """The crypt hash a user's password becomes, or None for a user without a password.

    A plain ``password`` is hashed with one salt per user name for the whole fleet, derived
    from ``salt_key``: hashed once, the same on every host and every render.
    """
    if user.password_hash is not None:
        return user.password_hash.reveal()
    if user.password is not None:
        return sha512_crypt_hash(user.password.reveal(), derived_salt(salt_key, user.name))
    return None


def secret_items(host: Host, salt_key: bytes) -> list[SecretItem]:
    """Everything secret the host's install needs, in the order the script applies it."""
    items: list[SecretItem] = []
    if host.root.allow_login and host.root.password_hash is not None:
        items.append(SecretItem("hash", "root", host.root.password_hash.reveal()))
    for user in host.users:
        crypted = user_hash(user, salt_key)
        if crypted is not None:
            items.append(SecretItem("hash", user.name, crypted))
    for i, registry in enumerate(host.registries, start=1):
        items.append(
            SecretItem("file", registry_password_path(i), _line(reveal(registry.password)))
        )
    for c in host.containers:
        if c.env:
            env = "".join(f"{k}={reveal(v)}\n" for k, v in c.env)
            items.append(SecretItem("file", container_env_path(c.name), env))
    return items


def secrets_document(items: list[SecretItem]) -> bytes:
    """The document the secrets URL answers with (or that an embedded kickstart carries)."""
    lines = [DOCUMENT_HEADER]
    for item in items:
        if any(c.isspace() for c in item.key):
            raise ValueError(f"secret key {item.key!r} has white space")
        lines.append(f"{item.key} {base64.b64encode(item.value.encode()).decode('ascii')}")
    return ("\n".join(lines) + "\n").encode("ascii")


def parse_secrets_document(document: bytes) -> dict[str, str]:
    """The items of a document by key; ValueError when it is not one."""
    lines = document.decode("ascii").splitlines()
    if not lines or lines[0] != DOCUMENT_HEADER:
        raise ValueError("not a photonkick secrets document")
    items: dict[str, str] = {}
    for number, line in enumerate(lines[1:], start=2):
        key, _, value = line.partition(" ")
        try:
            items[key] = base64.b64decode(value, validate=True).decode()
        except (binascii.Error, UnicodeDecodeError) as exc:
            raise ValueError(f"line {number}: {exc}") from None
    return items


def _line(value: str) -> str:
    return value if value.endswith("\n") else value + "\n"


def secrets_fragment(
    host: Host, server_url: str, key: bytes, build: int, *, embed: bool, redact: bool
) -> dict[str, Any] | None:
    """What ``kickstart/secrets.sh.j2`` needs: the URL to fetch (or, with ``embed``, the
    document itself) and the expected items without their values. None: nothing secret.

    ``key`` is the state directory's secret (for the token and the password salts).
    """
    items = secret_items(host, key)
    if not items:
        return None
    url = embedded = None
    if embed:
        embedded = REDACTED if redact else base64.b64encode(secrets_document(items)).decode()
    else:
        token = REDACTED if redact else secrets_token(key, host.name, build)
        url = secrets_url(server_url, host.name, token)
    return {
        "header": DOCUMENT_HEADER,
        "url": url,
        "embedded": embedded,
        "expected": [
            {"key": i.key, "kind": i.kind, "target": i.target, "mode": i.mode} for i in items
        ],
    }
