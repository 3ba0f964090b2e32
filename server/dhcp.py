"""Managed DHCP: dnsmasq as a supervised child of `serve`, its DHCP log in the timelines.

The config is generated into the state directory (0600) and rewritten on every spec reload
(dnsmasq is restarted when it changed). Each DHCP packet of a spec host becomes a ``dhcp``
event in its timeline, and the addresses dnsmasq leased are kept per MAC.
"""

from __future__ import annotations

import logging
import re
import time
from pathlib import Path

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.dnsmasq_conf import dnsmasq_config, reservations
from photonkick.server.boot_server import BootServer
from photonkick.server.boot_service import BootService
from photonkick.server.dhcp_log import DhcpEvent, DhcpLogParser, Leases
from photonkick.server.dhcp_site import OFF_HINT, DhcpPlan, DhcpSetupError, resolve_site, with_mode
from photonkick.server.files import write_atomic
from photonkick.server.router_advert import RouterSolicitationAnswers
from photonkick.server.supervisor import ChildFailed, Supervisor
from photonkick.server.timeline import Timeline

log = logging.getLogger("photonkick.server.dhcp")
DHCP_PHASE = "dhcp"
_READY = re.compile(r"DHCP, (IP range|proxy on subnet) ")
_TRANSACTION = re.compile(r"dnsmasq-dhcp(?:\[\d+\])?: \d+ ")
_PREFIX = re.compile(r"^dnsmasq(?:-dhcp)?(?:\[\d+\])?: ")


def _why(exc: ChildFailed) -> str:
    said = _PREFIX.sub("", exc.lines[-1]) if exc.lines else f"exit status {exc.status}"
    if "Address already in use" in said:
        return f"dnsmasq cannot start: {said}: another DHCP server runs here; stop it, {OFF_HINT}"
    if "Permission denied" in said or "Operation not permitted" in said:
        return f"dnsmasq cannot start: {said}: run serve as root, {OFF_HINT}"
    return f"dnsmasq cannot start: {said}"


class ManagedDhcp:
    """dnsmasq for one `serve`: start, reload with the spec, stop; events to the timeline."""

    def __init__(
        self, plan: DhcpPlan, inventory: Inventory, service: BootService, timeline: Timeline
    ) -> None:
        self.plan = plan
        self.service = service
        self.timeline = timeline
        self.leases = Leases()
        self._parser = DhcpLogParser()
        self._config = dnsmasq_config(inventory, plan.mode, plan.site)
        self._warn_unreserved(inventory)
        argv = [plan.dnsmasq, "--keep-in-foreground", f"--conf-file={plan.config_file}"]
        self.supervisor = Supervisor(
            "dnsmasq", argv, self._on_line, self._on_idle, lambda line: bool(_READY.search(line))
        )

    @property
    def summary(self) -> str:
        """One line for the startup banner."""
        site = self.plan.site
        what = f"{self.plan.mode} on {site.interface} ({site.address.network})"
        return f"{what}, dnsmasq config {self.plan.config_file}"

    def start(self) -> None:
        """Write the config and start dnsmasq; DhcpSetupError (nothing left running) if it
        does not come up."""
        write_atomic(self.plan.config_file, self._config, mode=0o600)
        try:
            self.leases.load(Path(self.plan.site.lease_file).read_text())
        except OSError:
            pass
        try:
            self.supervisor.start()
        except ChildFailed as exc:
            raise DhcpSetupError(_why(exc)) from None
        except TimeoutError as exc:
            raise DhcpSetupError(str(exc)) from None
        log.info("DHCP %s", self.summary)

    def reload(self, inventory: Inventory) -> None:
        """Follow a reloaded spec: rewrite the config and restart dnsmasq when it changed.

        The mode stays the one `serve` started with; a spec that cannot be served on this
        machine (an interface gone, a range outside the subnet) keeps the running config.
        """
        if inventory.server.dhcp.mode != self.plan.mode:
            log.warning(
                "server.dhcp.mode is now %s; DHCP stays %s until serve restarts",
                inventory.server.dhcp.mode,
                self.plan.mode,
            )
        inventory = with_mode(inventory, self.plan.mode)
        state_dir = self.plan.config_file.parent
        try:
            site = resolve_site(inventory, state_dir)
        except SpecError as exc:
            for problem in exc.problems:
                log.error("DHCP config not changed: %s", problem)
            return
        config = dnsmasq_config(inventory, self.plan.mode, site)
        if config == self._config:
            return
        self._warn_unreserved(inventory)
        write_atomic(self.plan.config_file, config, mode=0o600)
        self._config = config
        self.plan = DhcpPlan(self.plan.mode, site, self.plan.dnsmasq, self.plan.config_file)
        self.supervisor.restart()
        log.info("DHCP config rewritten; restarting dnsmasq")

    def stop(self) -> None:
        """Stop dnsmasq."""
        self.supervisor.stop()

    def _warn_unreserved(self, inventory: Inventory) -> None:
        if self.plan.mode != "full":
            return
        network = self.plan.site.address.network
        for host in reservations(inventory, network)[1]:
            log.warning(
                "%s: static address outside %s; DHCP gives it a pool address", host.name, network
            )

    def _on_line(self, line: str) -> None:
        if _TRANSACTION.search(line):
            log.debug("%s", line)
        elif line.strip():
            log.info("%s", _PREFIX.sub("dnsmasq: ", line))
        for event in self._parser.feed(line, time.monotonic()):
            self._record(event)

    def _on_idle(self) -> None:
        for event in self._parser.flush():
            self._record(event)

    def _record(self, event: DhcpEvent) -> None:
        if event.kind == "DHCPACK" and event.ip:
            self.leases.add(event.mac, event.ip)
        host = self.service.host_by_mac(event.mac)
        if host is None:
            log.debug("DHCP %s from %s: not a spec host", event.kind, event.mac)
            return
        build = self.service.build(host.name)
        # Recorded when its transaction ended, dated when its packet arrived: the loader's
        # first fetch may come between the two.
        ago = 0.0 if event.at is None else time.monotonic() - event.at
        self.timeline.record(host.name, build, DHCP_PHASE, event.detail, event.ip or "", ago=ago)
        log.info("%s: DHCP %s", host.name, event.detail)


def attach_dhcp(server: BootServer, plan: DhcpPlan, inventory: Inventory) -> ManagedDhcp:
    """Start dnsmasq for a constructed (not yet serving) boot server and tie it to the
    server's reload and stop; on failure the server is stopped too, so nothing runs."""
    dhcp = ManagedDhcp(plan, inventory, server.service, server.timeline)
    try:
        dhcp.start()
    except BaseException:
        server.stop()
        raise
    server.on_reload.append(dhcp.reload)
    server.on_stop.append(dhcp.stop)
    if plan.mode == "full":  # proxy mode sees no leases: the addresses are not ours
        server.service.leases = dhcp.leases
    _answer_router_solicitations(server, plan.site.interface)
    return dhcp


def _answer_router_solicitations(server: BootServer, interface: str) -> None:
    """Empty router advertisements on ``interface``; a warning, and booting as before
    (slower for iPXE), when they cannot be sent."""
    answers = RouterSolicitationAnswers(interface)
    try:
        answers.start()
    except OSError as exc:
        log.warning(
            "IPv6 router solicitations on %s not answered (%s): on a network without an "
            "IPv6 router iPXE waits about 16 s before it boots",
            interface,
            exc,
        )
        return
    server.on_stop.append(answers.stop)
