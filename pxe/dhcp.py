"""The DHCP settings a user must make, with dnsmasq and ISC dhcpd examples."""

from __future__ import annotations

from urllib.parse import urlsplit

from photonkick.kickstarts.spec import BOOT_LOADERS, BootLoader, Host, Inventory
from photonkick.pxe.names import IPXE_CHAIN, UEFI_HTTP_LOADER

BIOS_BOOT_FILE = "lpxelinux.0"
UEFI_BOOT_FILE = "grubx64.efi"
IPXE_BIOS_BOOT_FILE = "undionly.kpxe"
IPXE_UEFI_BOOT_FILE = "snponly.efi"
"""iPXE on the UEFI firmware's own NIC driver: it runs wherever the firmware's PXE did."""
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


def loader_hosts(inventory: Inventory) -> list[Host]:
    """PXE hosts whose ``loader`` overrides the choice by client type."""
    return [h for h in inventory.hosts if h.mac and h.boot == "pxe" and h.loader != "auto"]


def loader_tag(loader: BootLoader) -> str:
    """The dnsmasq tag a host's ``dhcp-host`` line sets for its loader."""
    return f"loader-{loader}"


def dnsmasq_loader_lines(inventory: Inventory) -> list[str]:
    """dnsmasq ``dhcp-boot`` lines for the loaders hosts chose, by tag.

    They must follow :func:`dnsmasq_boot_lines` (of matching lines dnsmasq takes the last)
    and precede :func:`dnsmasq_http_boot_lines`, so UEFI HTTP boot still gets its URL.
    An iPXE host's iPXE matches none of them and gets the chain URL as before.
    """
    server = next_server(inventory)
    chosen = {h.loader for h in loader_hosts(inventory)}
    files: dict[BootLoader, list[tuple[str, str]]] = {
        "ipxe": [
            ("tag:!ipxe,tag:efi64,", IPXE_UEFI_BOOT_FILE),
            ("tag:!ipxe,tag:!efi64,", IPXE_BIOS_BOOT_FILE),
        ],
        "grub": [("", UEFI_BOOT_FILE)],
        "pxelinux": [("", BIOS_BOOT_FILE)],
    }
    return [
        f"dhcp-boot=tag:{loader_tag(loader)},{tags}{boot_file},,{server}"
        for loader in BOOT_LOADERS
        if loader in chosen
        for tags, boot_file in files[loader]
    ]


def loader_host_blocks(inventory: Inventory) -> str:
    """ISC dhcpd ``host`` blocks for the hosts that chose a loader (empty when none did)."""
    blocks = []
    for host in loader_hosts(inventory):
        if host.loader == "ipxe":
            choose = f"""    if exists user-class and option user-class = "iPXE" {{
      filename "{ipxe_chain_url(inventory)}";
    }} elsif option arch = 00:07 or option arch = 00:09 {{
      filename "{IPXE_UEFI_BOOT_FILE}";
    }} else {{
      filename "{IPXE_BIOS_BOOT_FILE}";
    }}
"""
        else:
            boot_file = UEFI_BOOT_FILE if host.loader == "grub" else BIOS_BOOT_FILE
            choose = f'    filename "{boot_file}";\n'
        blocks.append(f"  host {host.name} {{\n    hardware ethernet {host.mac};\n{choose}  }}\n")
    return "".join(blocks)


def dnsmasq_loader_tags(inventory: Inventory) -> list[str]:
    """``dhcp-host`` lines tagging each host that chose a loader (for a user's own dnsmasq;
    full mode adds the tag to its reservation lines instead)."""
    return [f"dhcp-host={h.mac},set:{loader_tag(h.loader)}" for h in loader_hosts(inventory)]


LOADER_MEANING: dict[BootLoader, str] = {
    "ipxe": f"{IPXE_BIOS_BOOT_FILE} (BIOS) or {IPXE_UEFI_BOOT_FILE} (UEFI), then the iPXE URL",
    "grub": f"{UEFI_BOOT_FILE}, also to iPXE",
    "pxelinux": f"{BIOS_BOOT_FILE}, also to iPXE",
}


def dhcp_instructions(inventory: Inventory) -> str:
    """Plain-text DHCP settings: next-server, the boot file per client architecture, and the
    boot file of each host that chose its loader."""
    server = next_server(inventory)
    chain = ipxe_chain_url(inventory)
    overrides = dnsmasq_loader_lines(inventory) + dnsmasq_loader_tags(inventory)
    dnsmasq = "".join(
        f"  {line}\n" for line in [*dnsmasq_boot_lines(inventory), *overrides, IPXE_NO_PXEDHCP]
    )
    http_boot = "".join(f"  {line}\n" for line in dnsmasq_http_boot_lines(inventory))
    loader = uefi_http_url(inventory)
    per_host = "".join(
        f"  {h.name} ({h.mac}): {LOADER_MEANING[h.loader]}\n" for h in loader_hosts(inventory)
    )
    if per_host:
        per_host = f"\nHosts that chose their loader (host key loader):\n{per_host}"
        dnsmasq += (
            "  (for a MAC that has a dhcp-host line already, add its set: tag to that line)\n"
        )
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
{per_host}
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
{loader_host_blocks(inventory)}
dnsmasq, UEFI HTTP boot (after the lines above: of matching dhcp-boot lines the last wins):
{http_boot}"""
