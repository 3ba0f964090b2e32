"""The host key ``loader``: parsed and checked like every host key, and turned into per-MAC
DHCP answers (managed dnsmasq, and the settings `check` prints for a user's own server)."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.kickstart import BuildInfo
from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.dhcp import dhcp_instructions, dnsmasq_boot_lines
from photonkick.pxe.dnsmasq_conf import DhcpSite, dnsmasq_config
from photonkick.pxe.tree import BootFormat, build_boot_tree

SITE = DhcpSite(
    "eth1", ipaddress.IPv4Interface("192.0.2.1/24"), "/state/dnsmasq.leases", "/state/dnsmasq.pid"
)
CHAIN = "http://192.0.2.1:8080/ipxe/boot.ipxe"
LOADER_LINES = [
    "dhcp-boot=tag:loader-ipxe,tag:!ipxe,tag:efi64,snponly.efi,,192.0.2.1",
    "dhcp-boot=tag:loader-ipxe,tag:!ipxe,tag:!efi64,undionly.kpxe,,192.0.2.1",
    "dhcp-boot=tag:loader-grub,grubx64.efi,,192.0.2.1",
    "dhcp-boot=tag:loader-pxelinux,lpxelinux.0,,192.0.2.1",
]


def problems(path: Path) -> list[str]:
    with pytest.raises(SpecError) as info:
        load_inventory(path, {})
    return [str(p).replace(str(path), "F") for p in info.value.problems]


@pytest.fixture
def lab(write_spec: Callable[[str], Path]) -> Inventory:
    spec = write_spec(
        """
        server:
          url: http://192.0.2.1:8080
          dhcp: {mode: full, range: 192.0.2.100-192.0.2.200}
        defaults:
          loader: ipxe
        profiles:
          old-bios: {firmware: bios, loader: pxelinux}
        hosts:
          - {name: esx01, mac: "00:50:56:00:10:01", network: {address: 192.0.2.21/24}}
          - {name: rom01, mac: "00:50:56:00:10:02", profile: old-bios}
          - {name: grub01, mac: "00:50:56:00:10:03", loader: grub}
          - {name: auto01, mac: "00:50:56:00:10:04", loader: auto}
          - {name: iso01, mac: "00:50:56:00:10:05", boot: iso}
        """
    )
    return load_inventory(spec, {})


def test_loader_defaults_to_auto_and_merges_like_other_keys(
    lab: Inventory, write_spec: Callable[[str], Path]
) -> None:
    loaders = {h.name: h.loader for h in lab.hosts}
    assert loaders == {
        "esx01": "ipxe",  # from defaults
        "rom01": "pxelinux",  # the profile's beats defaults
        "grub01": "grub",  # the host's own beats both
        "auto01": "auto",
        "iso01": "ipxe",
    }
    plain = write_spec(
        "server: {url: http://192.0.2.1:8080}\nhosts: [{name: a, mac: '02:00:00:00:00:01'}]\n"
    )
    assert load_inventory(plain, {}).hosts[0].loader == "auto"


def test_bad_loaders_are_errors_at_the_key(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: http://192.0.2.1:8080}
        profiles:
          legacy: {loader: pxelinux}
        hosts:
          - {name: a, mac: "00:50:56:00:10:01", loader: ipex}
          - {name: b, mac: "00:50:56:00:10:02", firmware: bios, loader: grub}
          - {name: c, mac: "00:50:56:00:10:03", profile: legacy}
          - {name: d, mac: "00:50:56:00:10:04", boot: http, loader: grub}
          - {name: e, mac: "00:50:56:00:10:05", loader: [ipxe]}
        """
    )
    assert problems(spec) == [
        # From the profile: at the profile's value. Problems come in file order.
        "F:3:20: hosts[2].loader: pxelinux needs firmware: bios (this host has firmware: efi) "
        "(use loader: grub or ipxe, or auto)",
        "F:5:49: hosts[0].loader: 'ipex' is not one of: auto, ipxe, grub, pxelinux "
        "(did you mean 'ipxe'?)",
        "F:6:65: hosts[1].loader: grub needs firmware: efi (this host has firmware: bios) "
        "(use loader: pxelinux or ipxe, or auto)",
        "F:8:61: hosts[3].loader: boot: http always loads iPXE (snponly.efi over HTTP), never "
        "grub (use boot: pxe to choose the loader, or leave loader out)",
        "F:9:49: hosts[4].loader: expected a single value, got a list",
    ]


def test_full_mode_tags_each_host_and_its_lines_win(lab: Inventory) -> None:
    lines = dnsmasq_config(lab, "full", SITE).splitlines()
    boot = dnsmasq_boot_lines(lab)
    start = lines.index(boot[0])
    # After the lines by client type (dnsmasq takes the last matching dhcp-boot line), and
    # before UEFI HTTP boot's, which still wins for HTTPClient.
    assert lines[start : start + len(boot) + 4] == boot + LOADER_LINES
    assert lines[start + len(boot) + 4] == "dhcp-vendorclass=set:httpboot,HTTPClient"
    assert [line for line in lines if line.startswith("dhcp-host=")] == [
        "dhcp-host=00:50:56:00:10:01,set:loader-ipxe,192.0.2.21,esx01",
        "dhcp-host=00:50:56:00:10:02,set:loader-pxelinux,rom01",
        "dhcp-host=00:50:56:00:10:03,set:loader-grub,grub01",
        "dhcp-host=00:50:56:00:10:04,auto01",
        "dhcp-host=00:50:56:00:10:05,iso01",  # not a PXE host: its loader plays no part
    ]


def test_proxy_mode_tags_each_host_too(lab: Inventory) -> None:
    lines = dnsmasq_config(lab, "proxy", SITE).splitlines()
    boot = dnsmasq_boot_lines(lab)
    start = lines.index(boot[0])
    assert lines[start:] == boot + LOADER_LINES + [
        "dhcp-host=00:50:56:00:10:01,set:loader-ipxe",
        "dhcp-host=00:50:56:00:10:02,set:loader-pxelinux",
        "dhcp-host=00:50:56:00:10:03,set:loader-grub",
    ]


def test_only_the_loaders_chosen_get_lines(write_spec: Callable[[str], Path]) -> None:
    spec = write_spec(
        """
        server: {url: http://192.0.2.1:8080, dhcp: {mode: proxy}}
        hosts:
          - {name: a, mac: "00:50:56:00:10:01", firmware: bios, loader: pxelinux}
          - {name: b, mac: "00:50:56:00:10:02"}
        """
    )
    inventory = load_inventory(spec, {})
    lines = dnsmasq_config(inventory, "proxy", SITE).splitlines()
    assert [line for line in lines if "loader-" in line] == [
        "dhcp-boot=tag:loader-pxelinux,lpxelinux.0,,192.0.2.1",
        "dhcp-host=00:50:56:00:10:01,set:loader-pxelinux",
    ]
    assert "loader" not in dhcp_instructions(load_inventory(_without_loaders(spec), {}))


def _without_loaders(spec: Path) -> Path:
    spec.write_text(spec.read_text().replace(", firmware: bios, loader: pxelinux", ""))
    return spec


def test_check_prints_the_overrides_for_dnsmasq_and_isc_dhcpd(lab: Inventory) -> None:
    printed = dhcp_instructions(lab)
    dnsmasq = printed.split("\ndnsmasq:\n", 1)[1].split("\n\n", 1)[0].splitlines()
    assert dnsmasq == [
        f"  {line}"
        for line in [
            *dnsmasq_boot_lines(lab),
            *LOADER_LINES,
            "dhcp-host=00:50:56:00:10:01,set:loader-ipxe",
            "dhcp-host=00:50:56:00:10:02,set:loader-pxelinux",
            "dhcp-host=00:50:56:00:10:03,set:loader-grub",
            "dhcp-option=tag:ipxe,encap:175,176,1",
        ]
    ] + ["  (for a MAC that has a dhcp-host line already, add its set: tag to that line)"]
    assert (
        "Hosts that chose their loader (host key loader):\n"
        "  esx01 (00:50:56:00:10:01): undionly.kpxe (BIOS) or snponly.efi (UEFI), then the "
        "iPXE URL\n"
        "  rom01 (00:50:56:00:10:02): lpxelinux.0, also to iPXE\n"
        "  grub01 (00:50:56:00:10:03): grubx64.efi, also to iPXE\n"
    ) in printed
    isc = printed.split("\nISC dhcpd:\n", 1)[1].split("\n  }\n", 1)[1].split("\n\n", 1)[0]
    assert isc == (
        "  host esx01 {\n"
        "    hardware ethernet 00:50:56:00:10:01;\n"
        '    if exists user-class and option user-class = "iPXE" {\n'
        f'      filename "{CHAIN}";\n'
        "    } elsif option arch = 00:07 or option arch = 00:09 {\n"
        '      filename "snponly.efi";\n'
        "    } else {\n"
        '      filename "undionly.kpxe";\n'
        "    }\n"
        "  }\n"
        "  host rom01 {\n"
        "    hardware ethernet 00:50:56:00:10:02;\n"
        '    filename "lpxelinux.0";\n'
        "  }\n"
        "  host grub01 {\n"
        "    hardware ethernet 00:50:56:00:10:03;\n"
        '    filename "grubx64.efi";\n'
        "  }"
    )


def test_every_loader_finds_the_hosts_config(
    lab: Inventory, build1: Callable[[str], BuildInfo]
) -> None:
    """Whatever loader a PXE host chose, its per-MAC config for that loader is in the tree."""
    tree = build_boot_tree(lab, build1)
    for host in lab.hosts:
        assert host.mac is not None
        for fmt in BootFormat:
            assert (fmt.path(host.mac) in tree) == (host.boot == "pxe"), (host.name, fmt)
