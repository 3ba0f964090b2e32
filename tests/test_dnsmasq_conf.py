"""The dnsmasq configuration managed DHCP runs, compared whole."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from collections.abc import Callable
from pathlib import Path

import pytest

from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.dhcp import IPXE_NO_PXEDHCP, dhcp_instructions
from photonkick.pxe.dnsmasq_conf import DhcpSite, dnsmasq_config, reservations

SITE = DhcpSite(
    "eth1", ipaddress.IPv4Interface("192.0.2.1/24"), "/state/dnsmasq.leases", "/state/dnsmasq.pid"
)


@pytest.fixture
def lab(write_spec: Callable[[str], Path]) -> Inventory:
    spec = write_spec(
        """
        server:
          url: http://192.0.2.1:8080
          dhcp: {mode: full, range: 192.0.2.100-192.0.2.200}
        hosts:
          - {name: web01, mac: "00:50:56:00:10:01", network: {address: 192.0.2.21/24}}
          - {name: dhcp01, mac: "00:50:56:00:10:02"}
          - {name: far01, mac: "00:50:56:00:10:03", network: {address: 198.51.100.5/24}}
          - {name: iso01, boot: iso, network: {address: 192.0.2.22/24}}
        """
    )
    return load_inventory(spec, {})


BOOT = """\
dhcp-match=set:efi64,option:client-arch,7
dhcp-match=set:efi64,option:client-arch,9
dhcp-userclass=set:ipxe,iPXE
dhcp-boot=tag:ipxe,http://192.0.2.1:8080/ipxe/boot.ipxe,,192.0.2.1
dhcp-boot=tag:!ipxe,tag:efi64,grubx64.efi,,192.0.2.1
dhcp-boot=tag:!ipxe,tag:!efi64,lpxelinux.0,,192.0.2.1
"""


def test_full_mode_config(lab: Inventory) -> None:
    assert dnsmasq_config(lab, "full", SITE) == (
        f"# photonkick serve {lab.source}: DHCP full on eth1\n"
        """\
port=0
interface=eth1
bind-interfaces
pid-file=/state/dnsmasq.pid
dhcp-leasefile=/state/dnsmasq.leases
log-dhcp
log-facility=-
dhcp-range=192.0.2.100,192.0.2.200,255.255.255.0,1h
dhcp-authoritative
dhcp-ignore-clid
no-ping
"""
        + BOOT
        + """\
dhcp-vendorclass=set:httpboot,HTTPClient
dhcp-option-force=tag:httpboot,60,HTTPClient
dhcp-boot=tag:httpboot,http://192.0.2.1:8080/ipxe/snponly.efi
dhcp-option=tag:ipxe,encap:175,176,1
dhcp-host=00:50:56:00:10:01,192.0.2.21,web01
dhcp-host=00:50:56:00:10:02,dhcp01
dhcp-host=00:50:56:00:10:03,far01
"""
    )


def test_proxy_mode_config(lab: Inventory) -> None:
    site = DhcpSite("br0", ipaddress.IPv4Interface("10.1.2.3/16"), "/s/l", "/s/p")
    assert dnsmasq_config(lab, "proxy", site) == (
        f"# photonkick serve {lab.source}: DHCP proxy on br0\n"
        """\
port=0
interface=br0
bind-interfaces
pid-file=/s/p
dhcp-leasefile=/s/l
log-dhcp
log-facility=-
dhcp-range=10.1.0.0,proxy,255.255.0.0
pxe-prompt="photonkick",0
""" + BOOT
    )


def test_boot_answers_are_the_ones_check_prints(lab: Inventory) -> None:
    printed = dhcp_instructions(lab)
    for line in BOOT.splitlines():
        assert f"  {line}\n" in printed


def test_check_advises_uefi_http_boot_for_users_servers(lab: Inventory) -> None:
    printed = dhcp_instructions(lab)
    block = printed.split("\ndnsmasq, UEFI HTTP boot", 1)[1]
    assert block.splitlines()[1:] == [
        "  dhcp-vendorclass=set:httpboot,HTTPClient",
        "  dhcp-option-force=tag:httpboot,60,HTTPClient",
        "  dhcp-boot=tag:httpboot,http://192.0.2.1:8080/ipxe/snponly.efi",
    ]
    assert '    filename "http://192.0.2.1:8080/ipxe/snponly.efi";\n' in printed  # ISC dhcpd
    assert "HTTPClient" not in dnsmasq_config(lab, "proxy", SITE)


def test_check_advises_the_ipxe_speed_up_for_users_servers(lab: Inventory) -> None:
    printed = dhcp_instructions(lab)
    assert f"  {IPXE_NO_PXEDHCP}\n" in printed  # dnsmasq
    assert "    option ipxe.no-pxedhcp 1;\n" in printed  # ISC dhcpd, for iPXE clients
    assert IPXE_NO_PXEDHCP not in dnsmasq_config(lab, "proxy", SITE)  # iPXE must wait there


def test_reservations_only_inside_the_subnet(lab: Inventory) -> None:
    inside, outside = reservations(lab, SITE.address.network)
    assert [(h.name, str(ip)) for h, ip in inside] == [("web01", "192.0.2.21")]
    assert [h.name for h in outside] == ["far01"]


def test_off_mode_has_no_config(lab: Inventory) -> None:
    with pytest.raises(ValueError, match="'off'"):
        dnsmasq_config(lab, "off", SITE)


@pytest.mark.parametrize("mode", ["proxy", "full"])
def test_dnsmasq_accepts_the_config(lab: Inventory, tmp_path: Path, mode: str) -> None:
    dnsmasq = shutil.which("dnsmasq") or shutil.which("dnsmasq", path="/usr/sbin:/sbin")
    if dnsmasq is None:
        pytest.skip("dnsmasq is not installed (Debian package dnsmasq-base)")
    conf = tmp_path / "dnsmasq.conf"
    conf.write_text(dnsmasq_config(lab, mode, SITE))
    result = subprocess.run(
        [dnsmasq, "--test", f"--conf-file={conf}"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    assert "syntax check OK" in result.stderr
