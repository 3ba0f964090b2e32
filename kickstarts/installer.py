"""What each photon-os-installer version accepts, from the installer's own ``known_keys``.

A kickstart key outside the chosen version's set makes the real installer stop with
"Unknown install_config keys", so every key photonkick emits is checked against it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

INSTALLER_VERSIONS = ("2.3", "2.7", "2.8", "2.9")
RELEASES = ("4.0", "5.0")
LINUX_FLAVORS = ("linux", "linux-esx", "linux-aws", "linux-secure", "linux-rt")
KERNEL_SUBPACKAGES = ("devel", "drivers", "docs", "oprofile", "dtb")
"""Suffixes of a flavor's own packages (``linux-esx-devel``), as the installer filters them."""
FILESYSTEMS = ("ext4", "xfs", "btrfs", "vfat", "swap")

_COMMON = frozenset(
    "additional_files additional_packages additional_rpms_path arch autopartition bootmode "
    "disk eject_cdrom hostname linux_flavor live log_level network packagelist_file packages "
    "partition_type partitions password photon_docker_image postinstall postinstallscripts "
    "public_key search_path setup_grub_script shadow_password type ui".split()
)
_SINCE_2_3 = frozenset("preinstall preinstallscripts repos".split())
_SINCE_2_7 = frozenset(
    "insecure_repo ansible disks docker manifest_file no_clean no_unmount packagelist_files "
    "tdnf_cachedir user_grub_cfg_file".split()
)
_SINCE_2_8 = frozenset(
    "build_mounts dps environment firstboot prepkgsinstall prepkgsinstallscripts security".split()
)
_SINCE_2_9 = frozenset("archives grub plugins services".split())
_ARCH_KEYS = frozenset(
    f"{key}_{arch}" for key in ("packages", "linux_flavor") for arch in ("x86_64", "aarch64")
)

KNOWN_KEYS: dict[str, frozenset[str]] = {
    "2.3": _COMMON | _SINCE_2_3 | {"ostree", "install_linux_esx"},
    "2.7": _COMMON | _SINCE_2_3 | _SINCE_2_7 | _ARCH_KEYS | {"ostree"},
    "2.8": _COMMON | _SINCE_2_3 | _SINCE_2_7 | _SINCE_2_8 | _ARCH_KEYS | {"ostree"},
    "2.9": _COMMON | _SINCE_2_3 | _SINCE_2_7 | _SINCE_2_8 | _SINCE_2_9 | _ARCH_KEYS,
}
"""Kickstart keys each installer version accepts (installer.py ``known_keys``)."""

CRYPT_SCHEMES: dict[str, tuple[str, ...]] = {
    "4.0": ("1", "5", "6"),
    "5.0": ("1", "5", "6", "y", "gy", "2a", "2b", "2y", "7"),
}
"""crypt(3) prefixes each release can verify: 4.0's glibc 2.32 has no libxcrypt."""

DISKS_SINCE = ("2.7", "2.8", "2.9")
"""Installer versions that read ``disks`` (and log that ``disk`` will be deprecated)."""

FORBIDDEN_KEYS: dict[str, str] = {
    "public_key": "it adds the key to root and rewrites sshd to 'PermitRootLogin yes'; "
    "give the key to a user under 'users' instead",
    "postinstall": "use the host key 'postinstall'; photonkick adds its own lines around it",
    "hostname": "use the host key 'name'",
    "packages": "it replaces the package list photonkick computes, dropping the kernel flavor "
    "and curl, sudo and docker, which its scripts need; use the host key 'packages' (or "
    "'additional_packages' here)",
    "linux_flavor": "use the host key 'linux_flavor', which also puts that kernel in the packages",
    "linux_flavor_x86_64": "use the host key 'linux_flavor'",
    "linux_flavor_aarch64": "use the host key 'linux_flavor'",
    "disk": "use the host key 'disk'",
}
"""Raw kickstart keys a spec may not set, with the reason."""

# -- installer version from the imported ISO (photon.installer: auto) --

AUTO = "auto"
ASSUMED_WITHOUT_ISO = "2.7"
"""What ``auto`` checks against before an ISO of the release is imported: the installer of
the Photon 4.0 and 5.0 ISOs built since mid-2024, and photonkick's earlier default."""


@dataclass(frozen=True)
class ImportedInstaller:
    """The installer found in an imported release's initrd (``found`` None: unreadable)."""

    found: str | None
    where: str
    """The imported ISO (or why its version could not be read), for messages."""

    @property
    def rules(self) -> str | None:
        """The supported version whose rules apply, or None when none does."""
        return rules_for(self.found) if self.found else None


def rules_for(found: str) -> str | None:
    """The newest supported version not newer than ``found`` (``2.4`` -> 2.3 rules).

    An in-between or newer version is checked with the rules of the supported one before
    it. None for versions older than the oldest supported.
    """
    match = re.match(r"(\d+)\.(\d+)", found)
    if match is None:
        return None
    number = (int(match.group(1)), int(match.group(2)))
    fitting = [v for v in INSTALLER_VERSIONS if _as_tuple(v) <= number]
    return fitting[-1] if fitting else None


def _as_tuple(version: str) -> tuple[int, int]:
    major, minor = version.split(".")
    return int(major), int(minor)
