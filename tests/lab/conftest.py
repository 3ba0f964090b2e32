"""The lab tier: real QEMU VMs in private network namespaces.

Every test under tests/lab is skipped, with the reason in the summary, when this process
is not root or cannot create a network namespace with a tap in it; nothing else skips
it. Missing Debian packages make the tests fail with the package to install.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from lab.guest import Guest, build_guest
from lab.netlab import netns_available
from lab.qemu import accelerator

HERE = Path(__file__).resolve().parent
_REPORT: list[str] = []


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test here ``lab`` and skip them all when namespaces are unavailable."""
    mine = [item for item in items if HERE in Path(str(item.path)).resolve().parents]
    if not mine:
        return
    reason = netns_available()
    for item in mine:
        item.add_marker(pytest.mark.lab)
        if reason:
            item.add_marker(pytest.mark.skip(reason=f"lab tier skipped: {reason}"))


@pytest.fixture(scope="session")
def lab_guest() -> Guest:
    """The stand-in guest (kernel, initramfs, bootable disk template), built or cached."""
    return build_guest()


@pytest.fixture(scope="session")
def lab_accel(lab_guest: Guest) -> str:
    """``kvm`` or ``tcg``, whichever can boot the guest's 64-bit kernel here."""
    return accelerator(lab_guest)


@pytest.fixture(scope="session")
def lab_report() -> list[str]:
    """Lines shown in a "lab boot times" section at the end of the run."""
    return _REPORT


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    """Show the boot time tables the lab tests collected."""
    if _REPORT:
        terminalreporter.write_sep("=", "lab boot times")
        for line in _REPORT:
            terminalreporter.write_line(line)
