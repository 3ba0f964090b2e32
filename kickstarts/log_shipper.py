"""The kickstart's ``preinstall``: a background shipper of the installer's log to photonkick.

photon-os-installer 2.3 and later source the ``preinstall`` lines with ``bash`` (under
``set -a``, then ``env -0``) before they touch the disk, and wait until the script's output
pipes close. So the lines only write the shipper to a file and start it detached, with its
standard streams on /dev/null, and define no shell variable (each would be exported into the
installer's environment and logged).
"""

from __future__ import annotations

from pathlib import Path

from photonkick.templates import render

INSTALLER_LOG = "/var/log/installer.log"
"""Where the installer's logger writes (``log_path`` /var/log, file ``installer.log``)."""
SHIPPER_PATH = "/tmp/photonkick-logship"
INTERVAL = 3
"""Seconds between two sends (each also tells photonkick the installer is alive)."""
MAX_CHUNK = 192 * 1024
"""Bytes sent at most in one POST (below the server's request body limit)."""
LOG_EVENT = "log"
"""The callback path the shipper posts to: ``/cb/<host>/<token>/log``."""


def log_url(callback_base: str) -> str:
    """Where the shipper POSTs the new lines."""
    return f"{callback_base}/{LOG_EVENT}"


def shipper_script(
    url: str,
    *,
    log_path: str = INSTALLER_LOG,
    interval: float = INTERVAL,
    user_dir: Path | None = None,
) -> str:
    """The shipper itself: a POSIX sh script."""
    return render(
        "kickstart/logship.sh.j2",
        user_dir,
        log_url=url,
        log_path=log_path,
        interval=interval,
        max_chunk=MAX_CHUNK,
    )


def preinstall_lines(
    callback_base: str, user_dir: Path | None = None, *, log_path: str = INSTALLER_LOG
) -> list[str]:
    """The ``preinstall`` lines that start the shipper in the background."""
    script = shipper_script(log_url(callback_base), log_path=log_path, user_dir=user_dir)
    return [
        "# photonkick: ship the installer's log while it runs",
        f"cat > {SHIPPER_PATH} <<'PK_END_OF_LOGSHIP'",
        *script.splitlines(),
        "PK_END_OF_LOGSHIP",
        f"sh {SHIPPER_PATH} </dev/null >/dev/null 2>&1 &",
    ]
