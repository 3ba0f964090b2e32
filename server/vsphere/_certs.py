"""TLS trust for vSphere connections: a CA file, a certificate pinned on first use, or none.

Every call builds a new ``ssl.SSLContext``: a context handed to a library can be changed in
place (pyVmomi's thumbprint fallback switches it to ``CERT_NONE``), so none is ever reused.
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
from dataclasses import dataclass
from pathlib import Path

from photonkick.server.files import write_atomic
from photonkick.server.vsphere import DriverError

log = logging.getLogger("photonkick.server.vsphere")

_UNSAFE = re.compile(r"[^A-Za-z0-9.-]")


def fingerprint(pem: str) -> str:
    """The SHA-256 fingerprint of a PEM certificate as colon-separated upper-case hex."""
    digest = hashlib.sha256(ssl.PEM_cert_to_DER_cert(pem)).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def pin_path(pin_dir: Path, host: str, port: int) -> Path:
    """Where the certificate of ``host:port`` is pinned inside ``pin_dir``."""
    return pin_dir / f"{_UNSAFE.sub('_', host)}_{port}.pem"


def handshake_eof(where: str) -> DriverError:
    """The error for a server that hangs up during the TLS handshake (not a vSphere port)."""
    return DriverError(
        f"{where} closed the connection during the TLS handshake: is it an ESXi host or "
        "vCenter, and vsphere.port the right port?"
    )


def fetch_certificate(host: str, port: int, timeout: float) -> str:
    """The certificate the server presents, unverified, normalized to one PEM block."""
    try:
        pem = ssl.get_server_certificate((host, port), timeout=timeout)
    except (ssl.SSLEOFError, ConnectionResetError) as exc:
        raise handshake_eof(f"{host}:{port}") from exc
    except OSError as exc:
        raise DriverError(f"cannot fetch the TLS certificate of {host}:{port}: {exc}") from exc
    return ssl.DER_cert_to_PEM_cert(ssl.PEM_cert_to_DER_cert(pem))


@dataclass(frozen=True)
class Trust:
    """How to verify one server: ``ca_file``, else ``pin_dir`` (pin on first use), else the
    system's CA store. ``insecure`` turns verification off and must be asked for explicitly."""

    host: str
    port: int
    ca_file: Path | None = None
    pin_dir: Path | None = None
    insecure: bool = False
    timeout: float = 30.0

    def __post_init__(self) -> None:
        if self.insecure and (self.ca_file or self.pin_dir):
            raise DriverError("insecure=True cannot be combined with ca_file or pin_dir")

    @property
    def pin_file(self) -> Path | None:
        """The pinned certificate's file, when pinning is the trust policy in use."""
        if self.ca_file is None and self.pin_dir is not None and not self.insecure:
            return pin_path(self.pin_dir, self.host, self.port)
        return None

    def context(self) -> ssl.SSLContext:
        """A fresh context for one connection; pins the server's certificate on first use."""
        if self.insecure:
            log.warning(
                "TLS certificate verification is OFF for %s:%s: anyone on the path can "
                "read the credentials",
                self.host,
                self.port,
            )
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            return ctx
        if self.ca_file is not None:
            try:
                return ssl.create_default_context(cafile=str(self.ca_file))
            except (OSError, ssl.SSLError) as exc:
                raise DriverError(f"cannot load CA file {self.ca_file}: {exc}") from exc
        pin_file = self.pin_file
        if pin_file is None:
            return ssl.create_default_context()
        # The pinned certificate itself is the only trust anchor: any chain ending in it is
        # accepted, whatever names it carries (ESXi's default certificate rarely names the
        # address it is reached by).
        try:
            ctx = ssl.create_default_context(cadata=self._pinned_pem(pin_file))
        except ssl.SSLError as exc:
            raise DriverError(f"the pinned certificate {pin_file} is unusable: {exc}") from exc
        ctx.check_hostname = False
        ctx.verify_flags |= ssl.VERIFY_X509_PARTIAL_CHAIN
        return ctx

    def explain(self, exc: ssl.SSLError) -> DriverError:
        """A clear error for a failed handshake; names a changed pinned certificate."""
        where = f"{self.host}:{self.port}"
        if isinstance(exc, ssl.SSLEOFError) or "EOF" in str(exc):
            return handshake_eof(where)
        pin_file = self.pin_file
        if pin_file is not None and pin_file.exists():
            pinned = pin_file.read_text()
            try:
                presented = fetch_certificate(self.host, self.port, self.timeout)
            except DriverError:
                presented = pinned
            if fingerprint(presented) != fingerprint(pinned):
                return DriverError(
                    f"the TLS certificate of {where} changed since it was pinned: pinned "
                    f"SHA-256 {fingerprint(pinned)}, presented {fingerprint(presented)}. "
                    f"Refusing to connect. If the host's certificate was replaced on purpose, "
                    f"delete {pin_file} to pin the new one."
                )
        hint = ""
        if self.ca_file is None and pin_file is None:
            hint = " (give a CA file, or a state directory to pin the host's certificate)"
        return DriverError(f"TLS verification of {where} failed: {exc}{hint}")

    def _pinned_pem(self, pin_file: Path) -> str:
        try:
            return pin_file.read_text()
        except FileNotFoundError:
            pass
        pem = fetch_certificate(self.host, self.port, self.timeout)
        pin_file.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
        write_atomic(pin_file, pem, 0o600)
        log.warning(
            "pinned the TLS certificate of %s:%s on first use (SHA-256 %s) in %s",
            self.host,
            self.port,
            fingerprint(pem),
            pin_file,
        )
        return pem
