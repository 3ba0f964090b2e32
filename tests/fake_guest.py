"""A fake guest for the vSphere simulator: it plays each VM the way Photon would.

The simulator's VMs never run, so this thread does what the installer and the installed
system do on the network, through the real boot server: fetch the per-MAC config over TFTP
(PXE hosts), fetch the kickstart, report `installed`, then `firstboot` and `ready`. It also
reports VMware Tools and an IP through the simulator's SET.* keys. Named a fake: it stands in
for a real ESXi guest, which cannot run here.
"""

from __future__ import annotations

import json
import re
import ssl
import subprocess
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pyVim.connect import Disconnect, SmartConnect
from pyVim.task import WaitForTask
from pyVmomi import vim

from photonkick.kickstarts.kickstart import build_kickstart
from photonkick.kickstarts.spec import Inventory
from photonkick.kickstarts.tokens import callback_base, kickstart_url
from photonkick.pxe.names import ipxe_script
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import Timeline


@dataclass
class Script:
    """What the fake guest does per host: ``ready`` (default), ``fail``, ``silent``,
    ``stolen`` (someone at 127.0.0.2 fetches the host's secrets first) or ``installed``
    (reports `installed`, then nothing). ``before_installed(name)`` runs just before a host
    reports `installed`. ``channels`` says how the guest reports its phases: ``http`` (the
    callbacks), ``guestinfo`` (only ``guestinfo.photonkick.*`` through the simulator, as
    vmtoolsd would set them; nothing over the network after the kickstart) or ``both``
    (guestinfo first, then HTTP, as the kickstart's scripts do)."""

    default: str = "ready"
    per_host: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    before_installed: Callable[[str], None] | None = None
    channels: str = "http"

    def for_host(self, name: str) -> str:
        return self.per_host.get(name, self.default)


class FakeGuest:
    """Plays every VM of an inventory until stopped."""

    def __init__(
        self,
        inventory: Inventory,
        state: StateDir,
        timeline: Timeline,
        sim: Any,
        tftp_port: int,
        script: Script | None = None,
    ) -> None:
        self.inventory = inventory
        self.state = state
        self.timeline = timeline
        self.sim = sim
        self.tftp_port = tftp_port
        self.script = script or Script()
        self.stop = threading.Event()
        self.errors: list[str] = []
        self._threads: list[threading.Thread] = []
        self._since = time.time()

    def __enter__(self) -> FakeGuest:
        context = ssl.create_default_context(cadata=self.sim.cert_pem)
        self._si = SmartConnect(
            host=self.sim.host,
            port=self.sim.port,
            user=self.sim.user,
            pwd=self.sim.password,
            sslContext=context,
        )
        self._lock = threading.Lock()
        for host in self.inventory.hosts:
            thread = threading.Thread(target=self._play, args=(host,), daemon=True)
            thread.start()
            self._threads.append(thread)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(10)
        Disconnect(self._si)

    def _play(self, host: Any) -> None:
        try:
            while not self.stop.is_set():
                build = self.state.build(host.name).build
                event = self.timeline.wait_for(
                    host.name,
                    build,
                    {"vm_powered_on"},
                    since=self._since,
                    timeout=0.5,
                    stop=self.stop,
                )
                if event is None:
                    continue
                self._since = max(self._since, event.wall)
                self._install(host, build)
                self._since = time.time()
        except Exception as exc:  # reported to the test, which asserts there were none
            self.errors.append(f"{host.name}: {type(exc).__name__}: {exc}")

    def _install(self, host: Any, build: int) -> None:
        action = self.script.for_host(host.name)
        if action == "silent":
            return
        time.sleep(self.script.delay)
        self._act_as_tools(host.name)
        build_info = self.state.build(host.name)
        token = build_info.token(host.name)
        url = self.inventory.server.url
        if host.boot in ("pxe", "http"):
            config = (
                self._http_boot(host.name, host.mac)
                if host.boot == "http"
                else self._tftp(f"pxelinux.cfg/01-{host.mac.replace(':', '-')}")
            )
            match = re.search(r"ks=(\S+)", config)
            assert match and match.group(1) == kickstart_url(url, host.name, token), config
            with urllib.request.urlopen(match.group(1), timeout=10) as resp:
                kickstart = json.load(resp)
            assert kickstart["hostname"] == host.name
        else:  # what the ISO or guestinfo carries
            kickstart = build_kickstart(host, self.inventory, build_info)
        base = callback_base(url, host.name, token)
        if action == "fail":
            self._report(host.name, build, base, "failed", "cannot pull nginx:1.27", "pull: EOF")
            return
        if self.script.channels != "guestinfo":
            refused = self._fetch_secrets(kickstart, stolen=action == "stolen")
            if refused:
                self._report(host.name, build, base, "failed", refused)
                return
        if self.script.before_installed is not None:
            self.script.before_installed(host.name)
        self._report(host.name, build, base, "installed")
        if action == "installed":
            return
        self._report(host.name, build, base, "firstboot")
        self._report(host.name, build, base, "ready")

    def _report(
        self, name: str, build: int, base: str, phase: str, reason: str = "", log: str = ""
    ) -> None:
        """Report a phase through the script's channels (what pk_report does)."""
        if self.script.channels in ("guestinfo", "both"):
            value = f"{build} {reason}" if reason else str(build)
            self._set_extra_config(name, {f"guestinfo.photonkick.{phase}": value})
        if self.script.channels in ("http", "both"):
            form = {k: v for k, v in (("reason", reason), ("log", log)) if v}
            self._post(f"{base}/{phase}", urllib.parse.urlencode(form).encode())

    @staticmethod
    def _fetch_secrets(kickstart: dict[str, Any], *, stolen: bool) -> str | None:
        """Fetch the secrets the way postinstall does; the failure reason when refused."""
        match = re.search(r"'?(http://\S+/secrets)'?", "\n".join(kickstart["postinstall"]))
        if match is None:
            return None
        if stolen:
            subprocess.run(
                ["curl", "-sS", "--interface", "127.0.0.2", "-o", "/dev/null", match.group(1)],
                check=True,
                timeout=20,
            )
        try:
            urllib.request.urlopen(match.group(1), timeout=10).close()
        except urllib.error.HTTPError as err:
            return f"secrets refused (HTTP {err.code}): {err.read().decode().strip()}"
        return None

    def _act_as_tools(self, name: str) -> None:
        self._set_extra_config(
            name,
            {
                "SET.guest.toolsRunningStatus": "guestToolsRunning",
                "SET.guest.ipAddress": "192.0.2.99",
            },
        )

    def _set_extra_config(self, name: str, values: dict[str, str]) -> None:
        """Set ExtraConfig keys of the VM, from the guest's side of the simulator."""
        with self._lock:
            options = [vim.option.OptionValue(key=k, value=v) for k, v in values.items()]
            for vm in self._vms(name):
                WaitForTask(vm.ReconfigVM_Task(spec=vim.vm.ConfigSpec(extraConfig=options)))

    def _vms(self, name: str) -> list[Any]:
        """The simulator's VMs called ``name`` (the caller holds the lock)."""
        content = self._si.RetrieveContent()
        view = content.viewManager.CreateContainerView(
            content.rootFolder, [vim.VirtualMachine], True
        )
        vms = [vm for vm in view.view if vm.name == name]
        view.Destroy()
        return vms

    def _http_boot(self, name: str, mac: str) -> str:
        """What the VM's own EFI HTTP boot does: load the loader its advanced settings name
        (iPXE), which chains the per-MAC iPXE script; that script's text."""
        with self._lock:
            (vm,) = self._vms(name)
            settings = {o.key: o.value for o in vm.config.extraConfig}
        assert settings.get("networkBootProtocol") == "httpv4", settings
        uri = settings["networkBootUri"]
        with urllib.request.urlopen(uri, timeout=10) as resp:
            assert resp.read(2) == b"MZ", f"{uri} is not an EFI executable"
        base = uri.rsplit("/", 2)[0]
        with urllib.request.urlopen(f"{base}/{ipxe_script(mac)}", timeout=10) as resp:
            return str(resp.read().decode())

    def _tftp(self, name: str) -> str:
        out = subprocess.run(
            ["curl", "-sS", "--fail", f"tftp://127.0.0.1:{self.tftp_port}/{name}"],
            capture_output=True,
            check=True,
            timeout=20,
        )
        return out.stdout.decode()

    @staticmethod
    def _post(url: str, data: bytes = b"") -> None:
        req = urllib.request.Request(url, data=data, method="POST")
        urllib.request.urlopen(req, timeout=10).close()


def spec_text(
    sim: Any, http_port: int, hosts: list[dict[str, str]], ca_file: Path, iso: Path | None = None
) -> str:
    """A spec for the simulator: vsphere section, server on loopback, the given hosts."""
    lines = [
        f'server: {{url: "http://127.0.0.1:{http_port}"}}',
        "vsphere:",
        f"  host: {sim.host}",
        f"  port: {sim.port}",
        f"  user: {sim.user}",
        f"  password: {sim.password}",
        f"  ca_file: {ca_file}",
        "  datastore: LocalDS_0",
        "  network: VM Network",
    ]
    if sim.model == "vcenter":
        lines.append("  cluster: DC0_C0")
    if iso is not None:
        lines.append(f"  iso: {iso}")
    lines.append("hosts:")
    for host in hosts:
        lines.append("  - {" + ", ".join(f"{k}: '{v}'" for k, v in host.items()) + "}")
    return "\n".join(lines) + "\n"
