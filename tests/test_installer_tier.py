"""The installer tier: our kickstarts through the real photon-os-installer code of each tag.

For every installer version a spec may name, each golden kickstart and a set of generated
ones (tests/kickstart_cases.py) go through that tag's own ``$`` substitution, config check,
defaults and package selection (tests/installer_probe.py, one subprocess per tag). The
installer sources are found in ``$PHOTONKICK_POI_DIR/v<version>/photon_installer`` or else in
``../shared/poi`` beside the repository; without them the tier skips and says why, unless
``PHOTONKICK_POI_REQUIRED=1`` (CI) makes that a failure.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from conftest import REPO
from kickstart_cases import Case, cases

from photonkick.kickstarts.installer import INSTALLER_VERSIONS
from photonkick.kickstarts.kickstart import kernel_flavor_of

pytestmark = pytest.mark.installer

PROBE = Path(__file__).with_name("installer_probe.py")
CASES = {version: {c.name: c for c in cases(version)} for version in INSTALLER_VERSIONS}


def poi_dir() -> Path:
    """Where the installer sources are looked for."""
    named = os.environ.get("PHOTONKICK_POI_DIR")
    return Path(named) if named else REPO.parent / "shared" / "poi"


def tag_dir(version: str) -> Path:
    """The installer sources at one tag, or a skip (a failure in CI) saying why."""
    tag = poi_dir() / f"v{version}"
    if not (tag / "photon_installer" / "installer.py").is_file():
        reason = (
            f"installer sources for {version} not found at {tag}/photon_installer: set "
            "PHOTONKICK_POI_DIR to a folder with v<version>/photon_installer from "
            "github.com/vmware/photon-os-installer"
        )
        if os.environ.get("PHOTONKICK_POI_REQUIRED") == "1":
            pytest.fail(reason)
        pytest.skip(reason)
    return tag


def run_probe(version: str, kickstarts: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Run the tag's installer code on the kickstarts, in a process of its own."""
    payload = [{"name": name, "kickstart": ks} for name, ks in kickstarts.items()]
    done = subprocess.run(
        [sys.executable, str(PROBE), str(tag_dir(version))],
        input=json.dumps(payload),
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    results: dict[str, Any] = json.loads(done.stdout)
    return results


@cache
def results_for(version: str) -> dict[str, Any]:
    """The probe's results for every case of one version (one subprocess per version)."""
    return run_probe(version, {name: c.kickstart for name, c in CASES[version].items()})


def needed_packages(case: Case) -> set[str]:
    """What photonkick's own scripts need on the installed system."""
    needed = {"curl", case.host.linux_flavor}
    if case.host.docker:
        needed.add("docker")
    if any(u.sudo for u in case.host.users):
        needed.add("sudo")
    return needed


PARAMS = [(v, name) for v in INSTALLER_VERSIONS for name in CASES[v]]


@pytest.mark.parametrize(("version", "name"), PARAMS, ids=[f"{v}-{n}" for v, n in PARAMS])
def test_installer_accepts_it_and_keeps_what_photonkick_needs(version: str, name: str) -> None:
    case = CASES[version][name]
    result = results_for(version)[name]
    assert result["check"] is None, f"installer {version} refuses {name}: {result['check']}"
    assert result["error"] is None, f"installer {version} fails on {name}: {result['error']}"

    # '$' substitution leaves every value as written and warns about nothing: no crypted
    # password (which starts with '$' and would be logged whole) is in the kickstart.
    assert not result["substitution_changed"]
    assert result["substitution_warnings"] == []

    # Exactly the chosen kernel survives the installer's flavor filter.
    selected = result["packages"]
    assert result["linux_flavor"] == case.host.linux_flavor
    assert [p for p in selected if kernel_flavor_of(p)] == [case.host.linux_flavor]
    # Nothing photonkick listed (or the scripts need) is dropped.
    listed = set(case.kickstart["packages"]) | set(case.kickstart.get("additional_packages", []))
    assert listed | needed_packages(case) <= set(selected)
    assert not [w for w in result["log"] if "deprecated" in w]


def test_the_tier_sees_a_kickstart_without_a_kernel() -> None:
    # The shape photonkick wrote before: linux_flavor 'linux' with the default packages
    # (which list linux-esx). Installer 2.3 keeps no kernel at all.
    ks = dict(CASES["2.3"]["example/web01"].kickstart, linux_flavor="linux")
    result = run_probe("2.3", {"old": ks})["old"]
    assert result["check"] is None
    assert [p for p in result["packages"] if kernel_flavor_of(p)] == []


def test_the_tier_sees_disk_next_to_disks() -> None:
    ks = dict(CASES["2.7"]["example/web01"].kickstart, disk="/dev/sda")
    result = run_probe("2.7", {"both": ks})["both"]
    assert result["check"] == "only one of 'disk' or 'disks' can be set"


def test_the_tier_sees_a_raw_packages_key_drop_curl() -> None:
    # What a raw 'packages' key did before photonkick refused it.
    ks = dict(CASES["2.9"]["example/web01"].kickstart, packages=["minimal"])
    result = run_probe("2.9", {"raw": ks})["raw"]
    assert "curl" not in result["packages"] and "docker" not in result["packages"]
