"""Per-host, per-build tokens and the URL shapes that carry them.

A token is an HMAC of the host name and build number under the state directory's secret, so
the server can check one without storing it and a rebuild (new build number) retires the old.
"""

from __future__ import annotations

import base64
import hashlib
import hmac

CALLBACK_EVENTS = ("installed", "firstboot", "ready", "failed")


def host_token(secret: bytes, host: str, build: int) -> str:
    """The token for one build of one host: 26 lower-case base32 characters (130 bits)."""
    digest = hmac.new(secret, f"host:{host}:{build}".encode(), hashlib.sha256).digest()
    return base64.b32encode(digest).decode("ascii").lower()[:26]


def token_matches(secret: bytes, host: str, build: int, token: str) -> bool:
    """Constant-time check of a presented token, whatever characters it holds."""
    return secrets_equal(host_token(secret, host, build), token)


def secrets_equal(expected: str, presented: str) -> bool:
    """Constant-time comparison of a secret with what a client sent, compared as UTF-8 bytes.

    A client may send any character (``%C3%A9``, ``%FF``, Latin-1 header bytes); characters
    that UTF-8 cannot encode (lone surrogates) become ``?`` and simply do not match.
    """
    return hmac.compare_digest(
        expected.encode("utf-8", "replace"), presented.encode("utf-8", "replace")
    )


def kickstart_url(server_url: str, host: str, token: str) -> str:
    """Where the installer fetches the host's kickstart: ``/ks/<host>/<token>.json``."""
    return f"{server_url}/ks/{host}/{token}.json"


def callback_base(server_url: str, host: str, token: str) -> str:
    """Callbacks are POSTed to ``/cb/<host>/<token>/<event>``."""
    return f"{server_url}/cb/{host}/{token}"
