"""The installer version of each imported release, kept in its manifest.

``import-iso`` calls ``record_installer`` on the release folder: it reads the version from
the copied initrd (see initrd_version) and adds an ``installer`` entry to ``manifest.json``::

    "installer": {"version": "2.7", "member": "usr/lib/python3.11/site-packages/...",
                  "initrd_sha256": "..."}
    "installer": {"version": null, "error": "...", "initrd_sha256": "..."}

``imported_installers`` reads those entries back for the spec loader, which decides
``photon.installer: auto`` with them and refuses an explicit version that disagrees.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from photonkick.kickstarts.installer import ImportedInstaller
from photonkick.server._isofs import write_atomically
from photonkick.server.initrd_version import InitrdError, installer_version
from photonkick.server.iso_import import INITRD, MANIFEST, read_manifest

__all__ = ["imported_installers", "record_installer"]


def record_installer(root: Path) -> ImportedInstaller:
    """Read the installer version from ``root``'s initrd into its manifest (once per initrd).

    An initrd without a readable version is recorded with the reason, not raised: the
    release stays usable with an explicit ``photon.installer``.
    """
    manifest = read_manifest(root)
    if manifest is None:
        raise InitrdError(f"{root}: no import manifest; run photonkick import-iso first")
    initrd_sha256 = manifest["files"].get(INITRD, {}).get("sha256")
    entry = manifest.get("installer")
    if not (isinstance(entry, dict) and entry.get("initrd_sha256") == initrd_sha256):
        try:
            found = installer_version(root / INITRD)
            entry = {"version": found.version, "member": found.member}
        except InitrdError as e:
            entry = {"version": None, "error": str(e)}
        entry["initrd_sha256"] = initrd_sha256
        manifest["installer"] = entry
        _replace_json(root / MANIFEST, manifest)
    return _from_entry(root, manifest)


def imported_installers(data_dir: Path) -> dict[str, ImportedInstaller]:
    """The installer of every release imported under ``data_dir`` that recorded one."""
    found: dict[str, ImportedInstaller] = {}
    try:
        folders = sorted(p for p in data_dir.iterdir() if p.is_dir())
    except OSError:
        return found
    for root in folders:
        manifest = read_manifest(root)
        if manifest is not None and isinstance(manifest.get("installer"), dict):
            found[str(manifest["release"])] = _from_entry(root, manifest)
    return found


def _from_entry(root: Path, manifest: dict[str, Any]) -> ImportedInstaller:
    entry = manifest["installer"]
    source = manifest.get("source")
    iso = source.get("name") if isinstance(source, dict) else None
    where = f"{iso or 'the ISO'} imported in {root}"
    version = entry.get("version")
    if isinstance(version, str):
        return ImportedInstaller(version, where)
    return ImportedInstaller(None, f"{where}: {entry.get('error', 'no version recorded')}")


def _replace_json(path: Path, data: dict[str, Any]) -> None:
    """Rewrite ``path`` whole, so readers see the old or the new manifest, never a part."""
    text = json.dumps(data, indent=2, sort_keys=True) + "\n"
    write_atomically(path, lambda out: out.write(text.encode()))
