"""The one confinement for client-named files (TFTP and HTTP): names that cannot even be looked
up are refused like any other outside name, never raised."""

from __future__ import annotations

from pathlib import Path

from photonkick.server.confine import confined_file


def test_names_the_file_system_refuses_are_none(tmp_path: Path) -> None:
    (tmp_path / "vmlinuz").write_bytes(b"k")
    assert confined_file(tmp_path, "vmlinuz") == tmp_path / "vmlinuz"
    for name in [
        "a" * 8192,  # ENAMETOOLONG for one component
        "b" * 200_000,
        "/".join(["c" * 255] * 40),  # ENAMETOOLONG for the whole path
        "vmlinuz\0",
        "\udcff",  # a lone surrogate cannot be encoded for the file system
        "vmlinuz/x",  # ENOTDIR
    ]:
        assert confined_file(tmp_path, name) is None, name[:20]


def test_a_missing_root_is_none(tmp_path: Path) -> None:
    assert confined_file(tmp_path / "missing", "vmlinuz") is None
