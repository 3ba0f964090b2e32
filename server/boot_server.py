"""`photonkick serve`: HTTP (waitress) and TFTP in one process, reloading the spec on change."""

from __future__ import annotations

import errno
import ipaddress
import json
import logging
import secrets
import signal
import socket
import threading
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from waitress import wasyncore

from photonkick.kickstarts.errors import PhotonkickError, SpecError, UsageError
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.spec import Inventory
from photonkick.pxe.dhcp import next_server
from photonkick.server.boot_service import BootService
from photonkick.server.files import read_or_create_secret
from photonkick.server.http import create_app
from photonkick.server.http_server import http_server
from photonkick.server.install_log import InstallLogs
from photonkick.server.loaders import loader_files
from photonkick.server.package_progress import STORE as PACKAGES_STORE
from photonkick.server.package_progress import PackageProgress
from photonkick.server.release_installer import imported_installers
from photonkick.server.state_dir import StateDir
from photonkick.server.tftp import TftpServer
from photonkick.server.timeline import Timeline
from photonkick.server.webhooks import WebhookDispatcher

log = logging.getLogger("photonkick.server")
ADMIN_TOKEN_FILE = "admin-token"


@dataclass(frozen=True)
class Listen:
    """Where to listen: HTTP and TFTP addresses and ports."""

    http_host: str = "0.0.0.0"
    http_port: int = 8080
    tftp_host: str = "0.0.0.0"
    tftp_port: int = 69


def admin_token(state: Path) -> str:
    """The admin token, generated at first start into a 0600 file."""
    return read_or_create_secret(state / ADMIN_TOKEN_FILE, lambda: secrets.token_urlsafe(32))


def server_id(listen: Listen) -> str:
    """How this server names itself in the events it records: machine and HTTP address."""
    return f"{socket.gethostname()}/{listen.http_host}:{listen.http_port}"


class BootServer:
    """The running pair of servers for one spec, with reload and stop."""

    def __init__(
        self, spec: Path, inventory: Inventory, state: StateDir, data_dir: Path, listen: Listen
    ) -> None:
        self.spec = spec
        self.data_dir = data_dir
        self.timeline = Timeline(state.store("timeline"), server_id=server_id(listen))
        self.webhooks = WebhookDispatcher(self.timeline, inventory.server.webhooks)
        self.timeline.subscribe(self.webhooks.offer)
        try:
            self._cache = state.path / "cache"
            self._tftp_server = next_server(inventory)
            loaders = loader_files(self._cache, self._tftp_server)
            self.packages = PackageProgress(state.store(PACKAGES_STORE))
            self.timeline.subscribe(self.packages.on_event)
            state.on_change(self.packages.forget)
            self.service = BootService(
                inventory, state, self.timeline, data_dir, loaders, packages=self.packages
            )
            self.admin_token = admin_token(state.path)
            app = create_app(self.service, self.admin_token)
            self.install_logs: InstallLogs = app.extensions["photonkick.install_log"]
            self._http = _listen_http(listen, app)
            self.tftp = _start_tftp(self.service, listen)
        except BaseException:
            self.webhooks.close()
            self.timeline.close()
            raise
        self._spec_mtime = _mtime(spec)
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self.on_reload: list[Callable[[Inventory], None]] = []
        """Called with each reloaded spec (managed DHCP rewrites its config)."""
        self.on_stop: list[Callable[[], None]] = []
        """Called first when the server stops (managed DHCP stops dnsmasq)."""

    @property
    def http_port(self) -> int:
        """The bound HTTP port."""
        return int(self._http.effective_port)

    def start(self) -> None:
        """Serve in background threads."""
        self._threads = [
            threading.Thread(target=self._serve_http, name="http", daemon=True),
            threading.Thread(target=self._watch_spec, name="spec-watch", daemon=True),
        ]
        for thread in self._threads:
            thread.start()

    def _serve_http(self) -> None:
        # waitress's own run() loops until its socket map is empty; looping here in slices
        # lets stop() end it without writing to its trigger from another thread.
        sockets = self._http._map
        try:
            while not self._stop.is_set():
                wasyncore.loop(timeout=0.1, use_poll=True, map=sockets, count=1)
        finally:
            wasyncore.close_all(sockets, ignore_all=True)

    def reload(self) -> bool:
        """Load the spec again; on errors keep serving the last good one and log them."""
        try:
            inventory = load_inventory(self.spec, imported=imported_installers(self.data_dir))
            self.service.reload(inventory)
            tftp_server = next_server(inventory)
            if tftp_server != self._tftp_server:
                self._tftp_server = tftp_server
                self.service.loaders = loader_files(self._cache, tftp_server)
            self.webhooks.configure(inventory.server.webhooks)
            for hook in self.on_reload:
                hook(inventory)
        except SpecError as exc:
            for problem in exc.problems:
                log.error("spec not reloaded: %s", problem)
            return False
        except Exception as exc:  # a broken template must not stop a serving lab
            log.error("spec not reloaded: %s", exc)
            return False
        return True

    def _watch_spec(self) -> None:
        while not self._stop.wait(1.0):
            mtime = _mtime(self.spec)
            if mtime != self._spec_mtime:
                self._spec_mtime = mtime
                log.info("%s changed; reloading", self.spec)
                self.reload()

    def stop(self) -> None:
        """Stop both servers and close the timeline (once; later calls do nothing)."""
        if self._stop.is_set():
            return
        self._stop.set()
        for hook in self.on_stop:
            hook()
        self.tftp.stop()
        for thread in self._threads:
            thread.join(5)
        if not self._threads:  # never started: the listening socket is still open
            wasyncore.close_all(self._http._map, ignore_all=True)
        self._http.task_dispatcher.shutdown()
        self.install_logs.close()
        self.packages.close()
        self.webhooks.close()
        self.timeline.close()


def running_server(inventory: Inventory) -> bool:
    """Whether a boot server for these hosts already answers at server.url."""
    try:
        with urllib.request.urlopen(f"{inventory.server.url}/api/v1/hosts", timeout=2) as resp:
            served = {h["name"] for h in json.load(resp)["hosts"]}
    except (OSError, ValueError, KeyError, TypeError):
        return False
    return {h.name for h in inventory.hosts} <= served


def listen_for(inventory: Inventory) -> Listen:
    """Where an in-process server listens so that hosts reach it at server.url."""
    parts = urlsplit(inventory.server.url)
    host = parts.hostname or "0.0.0.0"
    try:
        bind = host if ipaddress.ip_address(host).is_loopback else "0.0.0.0"
    except ValueError:
        bind = "0.0.0.0"
    return Listen(bind, parts.port or (443 if parts.scheme == "https" else 80), bind, 69)


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return 0.0


class ListenError(OSError):
    """HTTP or TFTP cannot listen on an address; the message says which and where."""

    def __init__(self, what: str, host: str, port: int, cause: OSError) -> None:
        super().__init__(cause.errno, cause.strerror or str(cause))
        self.message = f"cannot listen for {what} on {host}:{port}: {self.strerror}"
        self.bad_address = isinstance(cause, socket.gaierror) or cause.errno == errno.EADDRNOTAVAIL
        """The address does not resolve or is not this machine's (bad input, not a failure)."""

    def __str__(self) -> str:
        return self.message

    def user_error(self) -> PhotonkickError:
        """The error to report: bad input (exit 2) for a bad address, else a failure (exit 1)."""
        return UsageError(self.message) if self.bad_address else PhotonkickError(self.message)


def _listen_http(listen: Listen, app: Any) -> Any:
    try:
        return http_server(listen.http_host, listen.http_port, app)
    except OSError as exc:
        raise ListenError("HTTP", listen.http_host, listen.http_port, exc) from None


def _start_tftp(service: BootService, listen: Listen) -> TftpServer:
    def resolve(name: str, client: tuple[str, int]) -> bytes | Path | None:
        return service.tftp_file(name, client[0])

    server = TftpServer(resolve, listen.tftp_host, listen.tftp_port)
    try:
        server.start()
    except OSError as exc:
        if listen.tftp_port != 69:
            raise ListenError("TFTP", listen.tftp_host, listen.tftp_port, exc) from None
        server = TftpServer(resolve, listen.tftp_host, 0)
        server.start()
        log.warning(
            "cannot bind TFTP port 69 (%s); TFTP is on port %d instead: point DHCP "
            "clients there or run as root",
            exc.strerror,
            server.port,
        )
    return server


def serve_forever(server: BootServer, on_ready: Callable[[], None]) -> None:
    """Run until SIGINT or SIGTERM; SIGHUP reloads the spec."""
    done = threading.Event()

    def stop(signum: int, frame: FrameType | None) -> None:
        done.set()

    def hup(signum: int, frame: FrameType | None) -> None:
        log.info("SIGHUP: reloading %s", server.spec)
        server.reload()

    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGHUP, hup)
    server.start()
    on_ready()
    done.wait()
    server.stop()
