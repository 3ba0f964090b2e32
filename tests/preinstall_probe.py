"""Runs a kickstart's ``preinstall`` through one installer tag's own code, as the installer does.

Usage: ``preinstall_probe.py TAG_DIR LOG_DIR`` with the ``preinstall`` lines as JSON on stdin.
The tag's real logger (``logger.py``) writes ``LOG_DIR/installer.log``, its real command runner
(``commandutils.py``) and pre-install module (``m_preinstall.py``) run the lines; then a few
more messages are logged, as the installer goes on. Prints the seconds the module took.
"""

from __future__ import annotations

import importlib
import json
import sys
import time

from installer_probe import _import_installer


def main() -> int:
    tag_dir, log_dir = sys.argv[1], sys.argv[2]
    lines = json.load(sys.stdin)
    _, command_utils = _import_installer(tag_dir)
    logger = importlib.import_module("logger").Logger.get_logger(log_dir, "info", False)
    m_preinstall = importlib.import_module("m_preinstall")

    class StandIn:
        """The installer attributes m_preinstall reads."""

        install_config = {"preinstall": lines}
        cmd = command_utils(logger)

    StandIn.logger = logger  # type: ignore[attr-defined]
    started = time.monotonic()
    m_preinstall.execute(StandIn)
    took = time.monotonic() - started
    logger.info("running ['sgdisk', '-Z', '/dev/sda']")
    print(json.dumps({"seconds": took}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
