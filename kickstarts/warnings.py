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
    return warnings
