"""Run one photon-os-installer tag's own code on kickstarts; report what it did with each.

Used by tests/test_installer_tier.py in a subprocess per tag, because every tag's modules
have the same top-level names (``installer``, ``commandutils``, ...):

    python installer_probe.py POI_TAG_DIR < cases.json > results.json

``cases.json`` is ``[{"name": ..., "kickstart": {...}}, ...]``. For each case a fresh
``Installer`` of that tag runs, in the order its ``configure()`` uses:

- its ``$`` substitution (``_fill_dynamic_conf``) under an installer-like environment;
- its config check (``_check_install_config``) and defaults (``_add_defaults``);
- its package selection (``_adjust_packages_based_on_selected_flavor``, which the install
  runs right before tdnf).

Nothing of the installer that touches disks, mounts or the network is called. Third-party
modules the installer imports but these steps never use (requests, jc, pyOpenSSL, and crypt
on newer Pythons) are replaced by inert stand-ins when they are not installed.
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import inspect
import json
import logging
import os
import sys
import tempfile
import types
from collections.abc import Iterator
from typing import Any

INSTALLER_ENVIRON = {
    "HOME": "/root",
    "LANG": "en_US.UTF-8",
    "LOGNAME": "root",
    "PATH": "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
    "PWD": "/installer",
    "SHELL": "/bin/bash",
    "TERM": "linux",
    "USER": "root",
}
"""Roughly what the installer's login shell on the ISO has: ``$NAME`` values resolve from it."""


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.messages: list[tuple[str, str]] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append((record.levelname, record.getMessage()))


class _InstallerLogger(logging.Logger):
    def warn(self, msg: object, *args: Any, **kwargs: Any) -> None:  # type: ignore[override]
        # Some tags call the alias Python 3.13 removed.
        self.warning(msg, *args, **kwargs)


class _NoCommands:
    """Stands in for the installer's command runner: these steps must not run commands."""

    def __getattr__(self, name: str) -> Any:
        raise RuntimeError(f"installer tried CommandUtils.{name} during config handling")


def _stand_in(name: str, **attrs: Any) -> None:
    module = types.ModuleType(name)
    module.__dict__.update(attrs)
    sys.modules[name] = module


def _unused(*_args: Any, **_kwargs: Any) -> Any:
    raise RuntimeError("a stand-in module was called: the probe does not support this path")


def _import_installer(tag_dir: str) -> tuple[Any, Any]:
    package = os.path.join(tag_dir, "photon_installer")
    for name, attrs in (
        ("requests", {"get": _unused}),
        ("jc", {"parse": _unused}),
        ("crypt", {"crypt": _unused}),
    ):
        try:
            importlib.import_module(name)
        except ImportError:
            _stand_in(name, **attrs)
    try:
        importlib.import_module("OpenSSL.crypto")
    except ImportError:
        _stand_in("OpenSSL")
        _stand_in("OpenSSL.crypto", load_certificate=_unused, FILETYPE_PEM=1)
        sys.modules["OpenSSL"].crypto = sys.modules["OpenSSL.crypto"]  # type: ignore[attr-defined]
    sys.path[:0] = [package, os.path.join(package, "modules")]
    installer = importlib.import_module("installer")
    commandutils = importlib.import_module("commandutils")
    return installer.Installer, commandutils.CommandUtils


def _defaults_first(installer_cls: Any) -> bool:
    """Whether this tag's configure() adds defaults before it checks (2.3 does)."""
    source = inspect.getsource(installer_cls.configure)
    return source.find("_add_defaults(") < source.find("_check_install_config(")


@contextlib.contextmanager
def _environ(values: dict[str, str]) -> Iterator[None]:
    saved = dict(os.environ)
    os.environ.clear()
    os.environ.update(values)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def _new_installer(installer_cls: Any, workdir: str) -> tuple[Any, _Records]:
    logging.setLoggerClass(_InstallerLogger)
    logger = logging.getLogger(f"installer-probe-{len(logging.root.manager.loggerDict)}")
    logging.setLoggerClass(logging.Logger)
    logger.propagate = False
    records = _Records()
    logger.handlers = [records]
    logger.setLevel(logging.DEBUG)
    params = inspect.signature(installer_cls.__init__).parameters
    kwargs = {"working_directory": workdir, "log_path": workdir}
    inst = installer_cls(**{k: v for k, v in kwargs.items() if k in params})
    inst.logger = logger
    inst.cmd = _NoCommands()
    return inst, records


def _check(inst: Any, config: dict[str, Any]) -> str | None:
    try:
        issue = inst._check_install_config(config)
    except Exception as exc:  # 2.8 and later raise InstallerConfigError
        return f"{type(exc).__name__}: {exc}"
    return str(issue) if issue else None


def probe(installer_cls: Any, kickstart: dict[str, Any], workdir: str) -> dict[str, Any]:
    """What the tag's config handling makes of one kickstart."""
    inst, records = _new_installer(installer_cls, workdir)
    config = copy.deepcopy(kickstart)
    result: dict[str, Any] = {"check": None, "error": None}
    with _environ(INSTALLER_ENVIRON):
        for _ in inst._fill_dynamic_conf(config):
            pass
    result["substitution_changed"] = config != kickstart
    result["substitution_warnings"] = [m for level, m in records.messages if level == "WARNING"]
    inst.install_config = config
    try:
        if _defaults_first(installer_cls):
            inst._add_defaults(config)
            result["check"] = _check(inst, config)
        else:
            result["check"] = _check(inst, config)
            if result["check"] is None:
                inst._add_defaults(config)
        if result["check"] is None:
            inst.install_config = config
            inst._adjust_packages_based_on_selected_flavor()
            result["linux_flavor"] = config.get("linux_flavor")
            result["packages"] = sorted(config["packages"])
    except Exception as exc:
        result["error"] = f"{type(exc).__name__}: {exc}"
    result["log"] = [f"{level}: {m}" for level, m in records.messages]
    return result


def main() -> int:
    """Read cases from stdin, write one result per case to stdout as JSON."""
    installer_cls, _ = _import_installer(sys.argv[1])
    cases = json.load(sys.stdin)
    results = {}
    with tempfile.TemporaryDirectory(prefix="installer-probe-") as tmp:
        for i, case in enumerate(cases):
            workdir = os.path.join(tmp, str(i))
            os.mkdir(workdir)
            results[case["name"]] = probe(installer_cls, case["kickstart"], workdir)
    json.dump(results, sys.stdout, indent=1, sort_keys=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
