"""Rendered files as data: path -> content, with the files that hold secrets marked private."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import PurePosixPath

from photonkick.kickstarts.kickstart import BuildInfo, build_kickstart, dumps
from photonkick.kickstarts.spec import Inventory


@dataclass(frozen=True)
class Artifact:
    """One rendered file. Private files (kickstarts) are written 0600 and never listed."""

    content: bytes
    private: bool = False


Tree = Mapping[PurePosixPath, Artifact]


def kickstart_path(host_name: str) -> PurePosixPath:
    """Where a host's kickstart lies in a rendered tree."""
    return PurePosixPath("kickstarts") / f"{host_name}.json"


def kickstart_tree(
    inventory: Inventory, build_for: Callable[[str], BuildInfo]
) -> dict[PurePosixPath, Artifact]:
    """Every host's kickstart, as ``kickstarts/<name>.json``."""
    return {
        kickstart_path(host.name): Artifact(
            dumps(build_kickstart(host, inventory, build_for(host.name))).encode(), private=True
        )
        for host in inventory.hosts
    }
