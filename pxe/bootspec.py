"""What an armed host boots: kernel, initrd and the installer's command line."""

from __future__ import annotations

from dataclasses import dataclass

from photonkick.kickstarts.errors import RenderError
from photonkick.kickstarts.spec import Host, Inventory
from photonkick.kickstarts.tokens import kickstart_url
from photonkick.pxe.names import initrd_url, kernel_url, repo_url


@dataclass(frozen=True)
class BootSpec:
    """A boot entry as data; each loader's template owns its syntax."""

    kernel: str
    initrd: str
    args: tuple[str, ...]

    @property
    def cmdline(self) -> str:
        """The kernel command line (without the loader's own initrd= argument)."""
        return " ".join(self.args)


def install_bootspec(host: Host, inventory: Inventory, token: str) -> BootSpec:
    """The installer boot for a host; refuses values that would break a boot line."""
    ks = kickstart_url(inventory.server.url, host.name, token)
    args = ["root=/dev/ram0", "loglevel=3", f"ks={ks}", f"repos={repo_url(inventory)}"]
    if ks.startswith("http://"):
        # The installer refuses ks= over plain http without it (it also relaxes repo TLS).
        args.append("insecure_installation=1")
    for arg in args:
        if any(c.isspace() for c in arg) or any(c in arg for c in "\"'`;{}$\\"):
            raise RenderError(
                f"{host.name}: boot argument {arg!r} has characters a boot line cannot carry"
            )
    return BootSpec(kernel_url(inventory), initrd_url(inventory), tuple(args))
