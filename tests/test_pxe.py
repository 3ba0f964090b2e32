"""Per-MAC boot configs: exact goldens, the names loaders request, netboot-once."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest
from conftest import EXAMPLE, FIXED_SECRET

from photonkick.kickstarts.errors import RenderError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import BuildInfo
from photonkick.kickstarts.spec import Inventory
from photonkick.kickstarts.tokens import host_token
from photonkick.pxe.bootspec import install_bootspec
from photonkick.pxe.dhcp import dhcp_instructions
from photonkick.pxe.names import grub_config, ipxe_script, pxelinux_config
from photonkick.pxe.tree import build_boot_tree

BUILD = BuildInfo(1, FIXED_SECRET)


@pytest.fixture(scope="module")
def example() -> Inventory:
    return load_inventory(EXAMPLE, {})


def text(tree: dict[PurePosixPath, object], path: str) -> str:
    artifact = tree[PurePosixPath(path)]
    return artifact.content.decode()  # type: ignore[attr-defined]


def test_names_are_what_the_loaders_request() -> None:
    mac = "00:50:56:0a:bc:de"
    # pxelinux: "01-" (ARP type Ethernet) + lower-case hex joined by dashes.
    assert str(pxelinux_config(mac)) == "pxelinux.cfg/01-00-50-56-0a-bc-de"
    # network GRUB: grub.cfg-01-<mac> under its prefix folder.
    assert str(grub_config(mac)) == "grub/grub.cfg-01-00-50-56-0a-bc-de"
    # iPXE's ${mac:hexhyp} is lower-case hex with hyphens.
    assert str(ipxe_script(mac)) == "ipxe/00-50-56-0a-bc-de.ipxe"


@pytest.mark.parametrize(
    "path",
    [
        "tftp/pxelinux.cfg/01-00-50-56-00-10-01",
        "tftp/grub/grub.cfg-01-00-50-56-00-10-01",
        "http/ipxe/00-50-56-00-10-01.ipxe",
        "tftp/pxelinux.cfg/01-00-50-56-00-30-01",
        "tftp/pxelinux.cfg/default",
        "tftp/grub/grub.cfg",
        "http/ipxe/boot.ipxe",
    ],
)
def test_golden_boot_configs(
    example: Inventory, path: str, golden: Callable[[str, str], None]
) -> None:
    tree = build_boot_tree(example, lambda name: BUILD)
    golden(f"boot/{path.replace('/', '__')}", text(tree, path))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "path",
    [
        "tftp/pxelinux.cfg/01-00-50-56-00-10-01",
        "tftp/grub/grub.cfg-01-00-50-56-00-10-01",
        "http/ipxe/00-50-56-00-10-01.ipxe",
    ],
)
def test_installed_host_boots_locally(
    example: Inventory, path: str, golden: Callable[[str, str], None]
) -> None:
    tree = build_boot_tree(example, lambda name: BUILD, armed=lambda name: name != "web01")
    config = text(tree, path)  # type: ignore[arg-type]
    golden(f"boot/installed__{path.replace('/', '__')}", config)
    assert "ks=" not in config and "vmlinuz" not in config
    token = host_token(FIXED_SECRET, "web01", 1)
    assert token not in config
    assert not tree[PurePosixPath(path)].private


def test_install_configs_carry_the_token_and_repo(example: Inventory) -> None:
    tree = build_boot_tree(example, lambda name: BUILD)
    token = host_token(FIXED_SECRET, "web01", 1)
    for path in (
        "tftp/pxelinux.cfg/01-00-50-56-00-10-01",
        "tftp/grub/grub.cfg-01-00-50-56-00-10-01",
        "http/ipxe/00-50-56-00-10-01.ipxe",
    ):
        config = text(tree, path)  # type: ignore[arg-type]
        assert f"ks=http://192.0.2.1:8080/ks/web01/{token}.json" in config
        assert "repos=http://192.0.2.1:8080/releases/5.0/RPMS" in config
        assert "root=/dev/ram0 loglevel=3" in config
        assert "insecure_installation=1" in config
        # World-readable like every file TFTP serves (tftpd-hpa serves no other).
        assert not tree[PurePosixPath(path)].private


def test_https_server_needs_no_insecure_flag(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server:
          url: "https://pk.example:8443"
          boot_url: "http://boot.example:8080"
          repo_url: "https://mirror.example/photon/5.0"
        hosts: [{name: a, mac: "00:50:56:00:00:01"}]
        """
    )
    inv = load_inventory(spec, {})
    boot = install_bootspec(inv.hosts[0], inv, "tok")
    assert boot.args == (
        "root=/dev/ram0",
        "loglevel=3",
        "ks=https://pk.example:8443/ks/a/tok.json",
        "repos=https://mirror.example/photon/5.0",
    )
    grub = text(build_boot_tree(inv, lambda n: BUILD), "tftp/grub/grub.cfg-01-00-50-56-00-00-01")  # type: ignore[arg-type]
    assert "linux (http,boot.example:8080)/releases/5.0/isolinux/vmlinuz" in grub
    assert boot.kernel == "http://boot.example:8080/releases/5.0/isolinux/vmlinuz"


def test_only_pxe_hosts_get_configs(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: "https://pk.example"}
        hosts:
          - {name: a, mac: "00:50:56:00:00:01", boot: iso}
          - {name: b, boot: guestinfo}
        """
    )
    inv = load_inventory(spec, {})
    tree = build_boot_tree(inv, lambda n: BUILD)
    assert sorted(str(p) for p in tree) == [
        "http/ipxe/boot.ipxe",
        "kickstarts/a.json",
        "kickstarts/b.json",
        "tftp/grub/grub.cfg",
        "tftp/pxelinux.cfg/default",
    ]


def test_boot_line_refuses_unsafe_characters(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: "http://pk.example", repo_url: "https://m.example/a;reboot"}
        hosts: [{name: a, mac: "00:50:56:00:00:01"}]
        """
    )
    inv = load_inventory(spec, {})
    with pytest.raises(RenderError, match="boot argument 'repos=https://m.example/a;reboot'"):
        build_boot_tree(inv, lambda n: BUILD)


def test_dhcp_instructions_name_each_boot_file(example: Inventory) -> None:
    text_ = dhcp_instructions(example)
    assert "next-server           192.0.2.1" in text_
    assert "dhcp-boot=tag:!ipxe,tag:!efi64,lpxelinux.0,,192.0.2.1" in text_
    assert "dhcp-boot=tag:!ipxe,tag:efi64,grubx64.efi,,192.0.2.1" in text_
    assert "dhcp-boot=tag:ipxe,http://192.0.2.1:8080/ipxe/boot.ipxe,,192.0.2.1" in text_
    assert 'filename "grubx64.efi";' in text_
