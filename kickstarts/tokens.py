"""Per-host, per-build tokens and the URL shapes that carry them.

A token is an HMAC of the host name and build number under the state directory's secret, so
the server can check one without storing it and a rebuild (new build number) retires the old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

CALLBACK_EVENTS = ("installed", "firstboot", "ready", "failed")


def derived_token(secret: bytes, label: str) -> str:
    """A token for one purpose: 26 lower-case base32 characters (130 bits) of an HMAC."""
    digest = hmac.new(secret, label.encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:26]


def same_token(expected: str, presented: str) -> bool:
    """Constant-time comparison that accepts any presented text (even non-ASCII)."""
    return hmac.compare_digest(expected.encode(), presented.encode("utf-8", "replace"))


def host_token(secret: bytes, host: str, build: int) -> str:
    """The token for one build of one host (kickstart and callbacks)."""
    return derived_token(secret, f"host:{host}:{build}")


def token_matches(secret: bytes, host: str, build: int, token: str) -> bool:
    """Constant-time check of a presented token."""
    return same_token(host_token(secret, host, build), token)


def kickstart_url(server_url: str, host: str, token: str) -> str:
    """Where the installer fetches the host's kickstart: ``/ks/<host>/<token>.json``."""
    return f"{server_url}/ks/{host}/{token}.json"


def callback_base(server_url: str, host: str, token: str) -> str:
    """Callbacks are POSTed to ``/cb/<host>/<token>/<event>``."""
    return f"{server_url}/cb/{host}/{token}"
