"""The DHCP settings a user must make, with dnsmasq and ISC dhcpd examples."""

from __future__ import annotations

from urllib.parse import urlsplit

from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.names import IPXE_CHAIN, UEFI_HTTP_LOADER

BIOS_BOOT_FILE = "lpxelinux.0"
UEFI_BOOT_FILE = "grubx64.efi"
IPXE_NO_PXEDHCP = "dhcp-option=tag:ipxe,encap:175,176,1"
"""iPXE's no-pxedhcp setting (175.176): do not wait about 3 s for proxy-DHCP offers."""


def next_server(inventory: Inventory) -> str:
    """The TFTP server's address: the host of server.url."""
    return urlsplit(inventory.server.boot_base).hostname or ""


def ipxe_chain_url(inventory: Inventory) -> str:
    """The URL iPXE clients are handed: it chains each MAC's own script."""
    return f"{inventory.server.boot_base}/{IPXE_CHAIN}"


def uefi_http_url(inventory: Inventory) -> str:
    """The loader UEFI HTTP-boot clients are handed (an iPXE that chains the per-MAC script)."""
    return f"{inventory.server.boot_base}/{UEFI_HTTP_LOADER}"


def vm_http_boot_settings(inventory: Inventory) -> dict[str, str]:
    """A VM's own EFI HTTP boot (ESXi 7.0 U2+ advanced settings): it loads the UEFI HTTP
    loader from this URL with no DHCP boot options at all."""
    return {"networkBootProtocol": "httpv4", "networkBootUri": uefi_http_url(inventory)}


def dnsmasq_http_boot_lines(inventory: Inventory) -> list[str]:
    """dnsmasq lines answering UEFI HTTP boot (vendor class HTTPClient) with the loader URL.

    They must follow :func:`dnsmasq_boot_lines`: of several matching tagged ``dhcp-boot``
    lines dnsmasq takes the last, and an HTTP-boot client (arch 16) also matches the BIOS rule.
    """
    return [
        "dhcp-vendorclass=set:httpboot,HTTPClient",
        "dhcp-option-force=tag:httpboot,60,HTTPClient",
        f"dhcp-boot=tag:httpboot,{uefi_http_url(inventory)}",
    ]


def dnsmasq_boot_lines(inventory: Inventory) -> list[str]:
    """dnsmasq lines choosing the boot file per client: iPXE, then UEFI x64, else BIOS."""
    server = next_server(inventory)
    chain = ipxe_chain_url(inventory)
    return [
        "dhcp-match=set:efi64,option:client-arch,7",
        "dhcp-match=set:efi64,option:client-arch,9",
        "dhcp-userclass=set:ipxe,iPXE",
        # iPXE drops a proxy-DHCP answer whose next-server (siaddr) is empty, URL or not.
        f"dhcp-boot=tag:ipxe,{chain},,{server}",
        f"dhcp-boot=tag:!ipxe,tag:efi64,{UEFI_BOOT_FILE},,{server}",
        f"dhcp-boot=tag:!ipxe,tag:!efi64,{BIOS_BOOT_FILE},,{server}",
    ]


def dhcp_instructions(inventory: Inventory) -> str:
    """Plain-text DHCP settings: next-server and the boot file per client architecture."""
    server = next_server(inventory)
    chain = ipxe_chain_url(inventory)
    dnsmasq = "".join(f"  {line}\n" for line in [*dnsmasq_boot_lines(inventory), IPXE_NO_PXEDHCP])
    http_boot = "".join(f"  {line}\n" for line in dnsmasq_http_boot_lines(inventory))
    loader = uefi_http_url(inventory)
    return f"""\
DHCP settings for photonkick (TFTP and HTTP on {server}):
  next-server           {server}
  BIOS (arch 0)         {BIOS_BOOT_FILE}   (fetches kernel and initrd over HTTP)
  UEFI x64 (arch 7, 9)  {UEFI_BOOT_FILE}   (network GRUB; kernel and initrd over HTTP)
  iPXE (user-class)     {chain}
  UEFI HTTP boot        {loader}
                        (vendor class HTTPClient, no TFTP: answer with option 60
                        "HTTPClient"; this iPXE chains the iPXE URL)
  iPXE speed-up         option 175.176 (no-pxedhcp) = 1: iPXE skips its ~3 s wait for
                        proxy-DHCP offers (only without a proxy-DHCP server)

dnsmasq:
{dnsmasq}
ISC dhcpd:
  option arch code 93 = unsigned integer 16;
  option space ipxe;
  option ipxe-encap-opts code 175 = encapsulate ipxe;
  option ipxe.no-pxedhcp code 176 = unsigned integer 8;
  next-server {server};
  if substring (option vendor-class-identifier, 0, 10) = "HTTPClient" {{
    option vendor-class-identifier "HTTPClient";
    filename "{loader}";
  }} elsif exists user-class and option user-class = "iPXE" {{
    filename "{chain}";
    option ipxe.no-pxedhcp 1;
  }} elsif option arch = 00:07 or option arch = 00:09 {{
    filename "{UEFI_BOOT_FILE}";
  }} else {{
    filename "{BIOS_BOOT_FILE}";
  }}

dnsmasq, UEFI HTTP boot (after the lines above: of matching dhcp-boot lines the last wins):
{http_boot}"""
