"""The boot service: what every request gets, decided from the spec, state and timeline.

The HTTP and TFTP front ends only translate requests into calls here; this is where tokens are
checked, netboot-once is applied and the timeline is written.
"""

from __future__ import annotations

import logging
import threading
import time
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Protocol

from photonkick.kickstarts.artifacts import Artifact
from photonkick.kickstarts.kickstart import BuildInfo, build_kickstart, dumps
from photonkick.kickstarts.spec import NETWORK_BOOTS, Host, Inventory
from photonkick.kickstarts.tokens import CALLBACK_EVENTS, token_matches
from photonkick.pxe.names import HTTP, HTTP_LOADERS, TFTP
from photonkick.pxe.tree import UNREADABLE, BootFormat, build_boot_tree, host_boot_files
from photonkick.server.confine import confined_file
from photonkick.server.package_progress import PackageProgress
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import StoreUnavailable, Timeline

log = logging.getLogger("photonkick.server")
MAX_REASON = 2_000
MAX_LOG_TAIL = 64 * 1024
LAST_KNOWN_FOR = 900.0
"""Seconds a host's last known build and netboot state keep answering its boot requests while
the store cannot be read; after that (and with nothing known) the host boots locally."""
RENDER_CHECK = BuildInfo(1, bytes(32))
"""What the boot tree is rendered with when a spec is loaded: it checks the templates; its
kickstarts and per-MAC configs are never served (``boot_file`` and ``kickstart`` render
each host's own), so loading a spec never waits for the state."""


@dataclass(frozen=True)
class _Snapshot:
    """One consistent view of the spec; replaced whole on reload."""

    inventory: Inventory
    tree: dict[PurePosixPath, Artifact]
    by_name: dict[str, Host]
    by_mac: dict[str, Host]
    kickstarts: dict[tuple[str, int, bytes], bytes] = field(default_factory=dict)


class LeaseLookup(Protocol):
    """The addresses a DHCP server leased to a MAC."""

    def ips(self, mac: str) -> tuple[str, ...]:
        """Every address leased to ``mac``."""
        ...


class BootService:
    """Answers the loaders, installers and hosts of one spec."""

    def __init__(
        self,
        inventory: Inventory,
        state: StateDir,
        timeline: Timeline,
        data_dir: Path,
        loaders: dict[str, Path] | None = None,
        packages: PackageProgress | None = None,
    ) -> None:
        self.state = state
        self.timeline = timeline
        self.data_dir = data_dir
        self.loaders = loaders or {}
        self.packages = packages
        """Counts each host's RPM fetches, when given."""
        self._lock = threading.Lock()
        self._snapshot = self._make_snapshot(inventory)
        self._ip_host = {ip: host for host, ip in _boot_ips(timeline).items()}
        self._repo_noted: set[tuple[str, int]] = set()
        # host -> (store versions, build, disarmed, monotonic time read)
        self._state_cache: dict[str, tuple[tuple[object, ...] | None, int, bool, float]] = {}
        self._remember_last_known()
        self._failing: set[str] = set()
        self._stale: set[str] = set()
        self._stale_wake = threading.Event()
        self._refresher: threading.Thread | None = None
        state.on_change(self._changed_elsewhere)
        self.leases: LeaseLookup | None = None
        """Set by managed DHCP in full mode: kickstarts go only to addresses leased to the
        host's MAC."""

    @property
    def inventory(self) -> Inventory:
        """The spec being served."""
        return self._snapshot.inventory

    def _make_snapshot(self, inventory: Inventory) -> _Snapshot:
        tree = build_boot_tree(inventory, lambda name: RENDER_CHECK)
        return _Snapshot(
            inventory,
            tree,
            {h.name: h for h in inventory.hosts},
            {h.mac: h for h in inventory.hosts if h.mac},
        )

    def reload(self, inventory: Inventory) -> None:
        """Serve a new spec; the old one stays if rendering the new one fails."""
        snapshot = self._make_snapshot(inventory)
        with self._lock:
            self._snapshot = snapshot
        log.info("serving %d hosts", len(inventory.hosts))

    def host(self, name: str) -> Host | None:
        """The host of that name in the served spec."""
        return self._snapshot.by_name.get(name)

    def host_by_mac(self, mac: str) -> Host | None:
        """The host with that MAC in the served spec."""
        return self._snapshot.by_mac.get(mac.lower())

    def _remember_last_known(self) -> None:
        """Start from what this machine last read from a shared store (before a restart), as
        if it had been read by this process at the time it was, and keep it up to date."""
        if self.state.last_known is None:
            return
        offset = time.time() - time.monotonic()
        for host, (build, installed, wall) in self.state.last_known.hosts().items():
            self._state_cache[host] = (None, build, installed, wall - offset)
        self.state.last_known.confirm = self._confirm_known

    def _confirm_known(self) -> None:
        """Mark the answers still current as known now, here and in the last-known file: those
        whose store versions did not move since they were read (a shared store's move at every
        call while its notifications do not arrive); read the others again while the store is
        followed."""
        last_known = self.state.last_known
        try:
            stamp: tuple[object, ...] = (self.state.version(), self.timeline.version())
            followed = stamp == (self.state.version(), self.timeline.version())
        except StoreUnavailable:
            return
        for host, cached in list(self._state_cache.items()):
            if last_known is not None and cached[0] == stamp:
                self._state_cache[host] = (*cached[:3], time.monotonic())
                last_known.remember(host, cached[1], cached[2])
            elif followed and host in self._snapshot.by_name:
                self._refresh(host)

    def degraded_at_start(self) -> str | None:
        """What is degraded when the state could not be used at start (None: nothing)."""
        if self.state.start_error is None:
            return None
        now = time.monotonic()
        known = sum(
            now - cached[3] <= LAST_KNOWN_FOR
            for host, cached in self._state_cache.items()
            if host in self._snapshot.by_name
        )
        return (
            f"{self.state.start_error}; serving without it: boot configs and kickstarts of "
            f"{known} of {len(self.inventory.hosts)} hosts from what this server last knew "
            f"(each for {LAST_KNOWN_FOR / 60:.0f} min after it was last known current), local "
            "disk boot for the others; callbacks, rearms, secrets, the API and the dashboard "
            "answer 503 until the database answers (tried again every second)"
        )

    def build(self, host: str) -> int:
        """The host's current build number. Raises StoreUnavailable when the store cannot be
        read and nothing recent is known of the host."""
        return self._current(host)[0]

    def _current(self, host: str) -> tuple[int, bool]:
        """The host's build and whether its install ended.

        Cached until the state or timeline store changes: a commit by any process (a
        `photonkick up` starting a new build) or, on a shared store, any server is seen by the
        next request (staleness: see the store's ``version``). When the store cannot be read,
        the last known answer keeps serving for ``LAST_KNOWN_FOR`` seconds; after that, or
        with none, this raises StoreUnavailable (the host's boot config then boots locally).
        """
        try:
            stamp: tuple[object, ...] | None = (self.state.version(), self.timeline.version())
        except StoreUnavailable:
            stamp = None
        cached = self._state_cache.get(host)
        if cached is not None and stamp is not None and cached[0] == stamp:
            return cached[1], cached[2]
        try:
            build = self.state.build(host).build
            disarmed = self.timeline.is_disarmed(host, build)
        except StoreUnavailable as exc:
            if cached is None or time.monotonic() - cached[3] > LAST_KNOWN_FOR:
                self._log_once(f"read {host}", "cannot read %s's state (%s): local boot", host, exc)
                raise
            self._log_once(f"read {host}", "cannot read %s's state (%s): last known", host, exc)
            return cached[1], cached[2]
        self._log_recovered(f"read {host}", "%s's state can be read again", host)
        self._state_cache[host] = (stamp, build, disarmed, time.monotonic())
        if self.state.last_known is not None:
            self.state.last_known.remember(host, build, disarmed)
        return build, disarmed

    def boot_file(self, fmt: BootFormat, mac: str, client: str) -> bytes | None:
        """A per-MAC loader config: the install while armed, local boot once installed."""
        snap = self._snapshot
        host = snap.by_mac.get(mac)
        if host is None or host.boot not in NETWORK_BOOTS:
            return None
        try:
            build, installed = self._current(host.name)
            info = BuildInfo(build, self.state.secret)
        except StoreUnavailable:  # netboot-once unknown: never risk reinstalling a host
            return fmt.render_local(UNREADABLE, snap.inventory).encode()
        files = host_boot_files(host, snap.inventory, info, armed=not installed)
        kind = "local_boot" if installed else "config"
        self.timeline.record(host.name, build, kind, f"{fmt.value} config", client)
        if client and self._ip_host.get(client) != host.name:
            self.timeline.bind_ip(host.name, client)
            self._ip_host[client] = host.name
        return files[fmt.path(mac)].content

    def tftp_file(self, name: str, client: str) -> bytes | Path | None:
        """What the TFTP server sends for a (normalized, relative) file name."""
        path = PurePosixPath(name)
        for fmt in (BootFormat.PXELINUX, BootFormat.GRUB):
            mac = _mac_from(fmt, path)
            if mac is not None:
                return self.boot_file(fmt, mac, client)
        if name in self.loaders:
            return self.loaders[name]
        artifact = self._snapshot.tree.get(TFTP / path)
        if artifact is not None and not artifact.private:
            return artifact.content
        return self.release_file(path, client)

    def http_file(self, name: str, client: str) -> bytes | Path | None:
        """A file under the HTTP root: iPXE scripts, release files."""
        path = PurePosixPath(name)
        mac = _mac_from(BootFormat.IPXE, path)
        if mac is not None:
            return self.boot_file(BootFormat.IPXE, mac, client)
        if path.parent == PurePosixPath("ipxe") and path.name in HTTP_LOADERS:
            return self.loaders.get(path.name)
        artifact = self._snapshot.tree.get(HTTP / path)
        if artifact is not None and not artifact.private:
            return artifact.content
        return self.release_file(path, client)

    def release_file(self, path: PurePosixPath, client: str) -> Path | None:
        """A file of an imported release (``releases/<release>/...``), confined to data_dir."""
        parts = path.parts
        if len(parts) < 3 or parts[0] != "releases":
            return None
        target = confined_file(self.data_dir, "/".join(parts[1:]))
        if target is None:
            return None
        self._note_release_fetch(parts[2:], client, target)
        return target

    def _note_release_fetch(self, rest: tuple[str, ...], client: str, target: Path) -> None:
        host = self._host_by_ip(client)
        if host is None:
            return
        try:
            build = self.build(host.name)
        except StoreUnavailable:  # the file is served all the same; the fetch is not recorded
            return
        if rest == ("isolinux", "vmlinuz"):
            self.timeline.record(host.name, build, "kernel", "", client)
        elif rest == ("isolinux", "initrd.img"):
            self.timeline.record(host.name, build, "initrd", "", client)
        elif rest[:1] == ("RPMS",):
            if (host.name, build) not in self._repo_noted:
                self._repo_noted.add((host.name, build))
                self.timeline.record_once(host.name, build, "repo", rest[-1], client)
            if self.packages is not None and rest[-1].endswith(".rpm"):
                self.packages.note(host.name, build, rest[-1], _size(target))

    def _host_by_ip(self, client: str) -> Host | None:
        name = self._ip_host.get(client)
        return self._snapshot.by_name.get(name) if name else None

    def kickstart(self, name: str, token: str, client: str) -> bytes | None:
        """The host's kickstart, only for its current token; None looks like an unknown host."""
        snap = self._snapshot
        host = snap.by_name.get(name)
        if host is None:
            return None
        build, disarmed = self._current(name)
        info = BuildInfo(build, self.state.secret)
        if not token_matches(info.secret, name, build, token):
            log.warning("kickstart for %s refused: wrong or old token (from %s)", name, client)
            return None
        server = snap.inventory.server
        if disarmed and not server.kickstart_after_install:
            log.warning(
                "kickstart for %s refused: its install has ended; rearm it (from %s)", name, client
            )
            return None
        bound = self._first_boot_ip(name, build) if server.bind_kickstart_to_boot_ip else None
        if bound and client and bound != client:
            log.warning(
                "kickstart for %s refused: %s fetched its boot config, not %s", name, bound, client
            )
            return None
        if not self._leased_to(host, client):
            return None
        self.timeline.record(name, build, "kickstart", "", client)
        if client:  # its installer's RPM fetches count for this host
            self._ip_host[client] = name
        return self._kickstart_bytes(snap, host, info)

    def _leased_to(self, host: Host, client: str) -> bool:
        """Whether managed DHCP leased ``client`` to the host's MAC (always, without it)."""
        if self.leases is None or host.mac is None or host.boot not in NETWORK_BOOTS:
            return True
        leased = self.leases.ips(host.mac)
        if client in leased:
            return True
        log.warning(
            "kickstart for %s refused: DHCP leased %s to %s, not %s",
            host.name,
            ", ".join(leased) or "nothing",
            host.mac,
            client,
        )
        return False

    def _kickstart_bytes(self, snap: _Snapshot, host: Host, info: BuildInfo) -> bytes:
        """The kickstart of this build (its callbacks carry this build's token)."""
        key = (host.name, info.build, info.secret)
        cached = snap.kickstarts.get(key)
        if cached is None:
            cached = dumps(build_kickstart(host, snap.inventory, info)).encode()
            snap.kickstarts[key] = cached
        return cached

    def _first_boot_ip(self, name: str, build: int) -> str | None:
        """The address of this build's first boot-config fetch (later fetches never rebind)."""
        for event in self.timeline.events(name, build, last_known=True):
            if event.kind == "config" and event.client:
                return event.client
        return None

    def callback_allowed(self, name: str, token: str, event: str, client: str) -> bool:
        """Whether a callback names a known host and event with the host's current token."""
        if event not in CALLBACK_EVENTS or name not in self._snapshot.by_name:
            return False
        if not token_matches(self.state.secret, name, self.build(name), token):
            log.warning(
                "callback %s for %s refused: wrong or old token (from %s)", event, name, client
            )
            return False
        return True

    def callback(
        self, name: str, token: str, event: str, reason: str, log_tail: str, client: str
    ) -> bool:
        """A host reports a phase; False (a 404) for an unknown host, event or token."""
        if not self.callback_allowed(name, token, event, client):
            return False
        build = self.build(name)
        detail = ""
        if event == "failed":
            detail = reason[:MAX_REASON]
            if log_tail:
                detail += "\n--- log tail ---\n" + log_tail[-MAX_LOG_TAIL:]
        key = f"callback {name} {event}"
        try:
            # Stored (with its netboot-once effect) before the host hears back; a finished or
            # failed install must not start over at the next network boot.
            stored = self.timeline.record_callback(name, build, event, detail, client)
        except StoreUnavailable as exc:
            self._log_once(key, "%s: %s not stored, answered 503 until it is: %s", name, event, exc)
            raise
        self._log_recovered(key, "%s: %s stored after the database recovered", name, event)
        self._refresh(name)
        if stored is None:
            log.info("%s: %s again; already recorded", name, event)
        else:
            log.info("%s: %s%s", name, stored.kind, f": {reason[:200]}" if reason else "")
        return True

    def rearm(self, name: str) -> bool:
        """Offer the install again on the host's next network boot (stored before it returns;
        StoreUnavailable when it cannot be)."""
        if name not in self._snapshot.by_name:
            return False
        self.timeline.rearm(name, self.build(name))
        self._refresh(name)
        return True

    def _refresh(self, name: str) -> None:
        """Read a host's state again after it changed, so that what this server last knew
        (what it answers from while the store cannot be read) includes the change."""
        cached = self._state_cache.get(name)
        if cached is not None:  # read again, but keep it as the last known should that fail
            self._state_cache[name] = (None, cached[1], cached[2], cached[3])
        with suppress(StoreUnavailable):  # logged; the next request reads it again
            self._current(name)

    def _changed_elsewhere(self, host: str) -> None:
        """A shared store says a host's state changed (``""``: any host's): read it again
        soon, on a thread of our own, never on the store's."""
        with self._lock:
            self._stale.add(host)
            if self._refresher is None:
                self._refresher = threading.Thread(
                    target=self._refresh_loop, name="state-refresh", daemon=True
                )
                self._refresher.start()
        self._stale_wake.set()

    def _refresh_loop(self) -> None:
        while True:
            self._stale_wake.wait()
            self._stale_wake.clear()
            with self._lock:
                hosts, self._stale = self._stale, set()
            if "" in hosts:
                hosts = set(self._state_cache)
            for name in hosts:
                if name in self._snapshot.by_name:
                    try:
                        self._refresh(name)
                    except Exception:  # the next request reads it again anyway
                        log.exception("cannot read %s's changed state", name)

    def _log_once(self, key: str, message: str, *args: object) -> None:
        """Log a failure the first time only, not at every retry of it."""
        with self._lock:
            if key in self._failing:
                return
            self._failing.add(key)
        log.error(message, *args)

    def _log_recovered(self, key: str, message: str, *args: object) -> None:
        with self._lock:
            if key not in self._failing:
                return
            self._failing.discard(key)
        log.info(message, *args)


def _boot_ips(timeline: Timeline) -> dict[str, str]:
    """Every host's remembered boot address; none while the store cannot be read (the
    addresses are learnt again from the next fetches)."""
    try:
        return timeline.boot_ips()
    except StoreUnavailable:
        return {}


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


def _mac_from(fmt: BootFormat, path: PurePosixPath) -> str | None:
    """The MAC in a per-MAC config name of this loader family, or None."""
    name = path.name
    if fmt is BootFormat.PXELINUX and path.parent == PurePosixPath("pxelinux.cfg"):
        dashed = name[3:] if name.startswith("01-") else ""
    elif fmt is BootFormat.GRUB and path.parent == PurePosixPath("grub"):
        dashed = name.removeprefix("grub.cfg-01-") if name.startswith("grub.cfg-01-") else ""
    elif fmt is BootFormat.IPXE and path.parent == PurePosixPath("ipxe"):
        dashed = name.removesuffix(".ipxe") if name.endswith(".ipxe") else ""
    else:
        return None
    parts = dashed.lower().split("-")
    if len(parts) != 6 or not all(
        len(p) == 2 and all(c in "0123456789abcdef" for c in p) for p in parts
    ):
        return None
    return ":".join(parts)
