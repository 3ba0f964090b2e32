"""Installer phases read from the lines of photon-os-installer's own log.

The installer's logger writes ``YYYY-MM-DD HH:MM:SS,mmm - <message>`` (no level); command
output and tracebacks continue on lines of their own. These rules only read messages the
installer writes in kickstart mode (2.7 and later log every command they run).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

PARTITIONING = "partitioning"
PACKAGES = "packages"
BOOTLOADER = "bootloader"
POSTINSTALL = "postinstall"
INSTALLER_PHASES = (PARTITIONING, PACKAGES, BOOTLOADER, POSTINSTALL)
"""The phases derived from the log, in the order the installer goes through them."""

_STAMP = re.compile(r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} - ")
_PARTITIONING = re.compile(r"^running \[?'?(?:sgdisk|parted|sfdisk)\b")
_TDNF_INSTALL = re.compile(r"^running .*\btdnf\b.*?\binstall\b(?P<packages>.*)$")
_BOOTLOADER = re.compile(r"mk-setup-grub\.sh|\bgrub2?-install\b|^Setting up GRUB")
_POSTINSTALL = re.compile(r"^(?:Run postinstall script|Executing: m_postinstall)\b")
_FAILED = re.compile(r"^(?:Installer failed|Failed to install some packages)\b")
_TRACEBACK = "Traceback (most recent call last):"
_FIRST_PACKAGES = {"filesystem", "rpm"}
"""What the installer installs alone before the package list (the root's skeleton)."""


@dataclass(frozen=True)
class Finding:
    """A phase (or ``failed``) found in the log, with its detail."""

    kind: str
    detail: str


def message(line: str) -> str | None:
    """The message of a logger line, or None for a continuation line."""
    found = _STAMP.match(line)
    return line[found.end() :] if found else None


def meaningful(lines: list[str], count: int = 5) -> list[str]:
    """The last ``count`` logger messages (continuation and blank lines left out)."""
    messages = [m.strip() for m in map(message, lines) if m and m.strip()]
    return messages[-count:]


def findings(new: list[str], before: list[str] | None = None) -> list[Finding]:
    """What the ``new`` lines show: phases reached and an installer failure.

    ``before`` holds earlier lines of the same log, for the message a traceback belongs to.
    """
    found: list[Finding] = []
    seen = list(before or [])
    for line in new:
        text = message(line)
        if text is None:
            if line.strip() == _TRACEBACK:
                found.append(Finding("failed", _failure_reason(seen)))
            seen.append(line)
            continue
        seen.append(line)
        text = text.strip()
        if _PARTITIONING.match(text):
            found.append(Finding(PARTITIONING, ""))
        elif match := _TDNF_INSTALL.match(text):
            names = [p for p in match["packages"].split() if not p.startswith("-")]
            if names and not set(names) <= _FIRST_PACKAGES:
                found.append(Finding(PACKAGES, f"{len(names)} packages"))
        elif _BOOTLOADER.search(text):
            found.append(Finding(BOOTLOADER, ""))
        elif _POSTINSTALL.match(text):
            found.append(Finding(POSTINSTALL, ""))
        elif _FAILED.match(text):
            found.append(Finding("failed", f"installer: {text}"))
    return found


def _failure_reason(lines: list[str]) -> str:
    last = meaningful(lines, 1)
    return f"installer failed: {last[0]}" if last else "installer failed"
