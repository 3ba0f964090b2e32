"""Things in a valid spec that a user should know about before booting anything."""

from __future__ import annotations

from photonkick.kickstarts.spec import Inventory


def inventory_warnings(inventory: Inventory) -> list[str]:
    """Human-readable warnings for a spec that is valid but risky."""
    warnings = []
    if inventory.server.url.startswith("http://"):
        warnings.append(
            f"server.url {inventory.server.url} is plain http: the installer refuses ks= over "
            "http unless the kernel command line has insecure_installation=1, so photonkick "
            "adds it to PXE boot lines; it also turns off TLS checks for the installer's repos. "
            "Use an https:// URL to avoid both."
        )
    if inventory.photon.installer_from == "assumed":
        warnings.append(
            f"photon.installer is auto and no Photon {inventory.photon.release} ISO is "
            f"imported: checked as installer {inventory.photon.installer}; run photonkick "
            "import-iso SPEC PHOTON.iso so the ISO's own installer version decides"
        )
    if inventory.vsphere is not None:
        if inventory.vsphere.insecure:
            warnings.append(
                f"vsphere.insecure is set: the certificate of {inventory.vsphere.host} is not "
                "checked, so anyone on the path can read the password; prefer ca_file or "
                "the default trust-on-first-use pinning"
            )
        for host in inventory.hosts:
            if host.mac and not is_vmware_static_mac(host.mac):
                warnings.append(
                    f"{host.name}: MAC {host.mac} is outside VMware's range for manual "
                    "addresses (00:50:56:00:00:00 to 00:50:56:3f:ff:ff); ESXi may refuse it "
                    "or it may collide with generated addresses"
                )
    return warnings


def is_vmware_static_mac(mac: str) -> bool:
    """True for 00:50:56:00:00:00 to 00:50:56:3f:ff:ff, VMware's range for manual MACs."""
    return mac.startswith("00:50:56:") and int(mac[9:11], 16) <= 0x3F
