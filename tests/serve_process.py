"""A real `photonkick serve` process on loopback for fault tests: start, kill -9, restart."""

from __future__ import annotations

import http.client
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

from ports import free_port

from photonkick.kickstarts.host_secrets import secrets_token
from photonkick.kickstarts.tokens import host_token
from photonkick.server.state_dir import SECRET_FILE

BANNER_LINES = 6
"""Lines `photonkick serve` prints at start (its URLs), read before a test talks to it."""
START_TIMEOUT = 30.0
MAC = "00:50:56:00:30:{:02x}"


def spec_text(port: int, hosts: int, address: str = "127.0.0.1") -> str:
    """A lab of ``hosts`` PXE hosts named h00, h01, ... served at loopback ``port``."""
    lines = [f'server: {{url: "http://{address}:{port}"}}', "hosts:"]
    lines += [f'  - {{name: h{i:02d}, mac: "{MAC.format(i)}"}}' for i in range(hosts)]
    return "\n".join(lines) + "\n"


def config_name(host: int) -> str:
    """The pxelinux config file name of host ``host``."""
    return "pxelinux.cfg/01-" + MAC.format(host).replace(":", "-")


class ServeProcess:
    """`photonkick serve SPEC` with its state and releases in given folders."""

    def __init__(
        self,
        root: Path,
        hosts: int,
        state: Path,
        data: Path,
        address: str = "127.0.0.1",
        state_url: str | None = None,
    ) -> None:
        """``address``: the loopback address both servers listen on; ``state_url``: a shared
        PostgreSQL state store."""
        self.root = root
        self.state = state
        self.data = data
        self.address = address
        self.state_url = state_url
        self._shared_secret: bytes | None = None
        self.port = free_port(address=address)
        self.spec = root / "lab.yaml"
        self.spec.write_text(spec_text(self.port, hosts, address))
        self.log = root / "serve.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.tftp_port = 0

    def command(self) -> list[str]:
        exe = Path(sys.executable).parent / "photonkick"
        return [
            str(exe),
            "serve",
            str(self.spec),
            "--http",
            f"{self.address}:{self.port}",
            "--tftp",
            f"{self.address}:0",
            "--state",
            str(self.state),
            "--data",
            str(self.data),
            *(["--state-url", self.state_url] if self.state_url else []),
        ]

    def start(self) -> None:
        """Start and wait until both TFTP and HTTP answer."""
        out = self.root / "serve.out"
        with out.open("wb") as stdout, self.log.open("ab") as stderr:
            self.proc = subprocess.Popen(self.command(), stdout=stdout, stderr=stderr)
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            pattern = rb"TFTP +" + re.escape(self.address.encode()) + rb" port (\d+)"
            found = re.search(pattern, out.read_bytes())
            if found:
                self.tftp_port = int(found.group(1))
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"serve exited {self.proc.returncode}: {self.log_text()}")
            time.sleep(0.05)
        raise AssertionError(f"serve did not start: {self.log_text()}")

    def kill9(self) -> None:
        """SIGKILL: no shutdown code runs."""
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> None:
        """SIGTERM and wait; kill when it does not end."""
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.kill9()

    def log_text(self) -> str:
        """Everything serve logged so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def secret(self) -> bytes:
        """The token secret, from the state directory or the shared database."""
        if self.state_url:
            if self._shared_secret is None:  # read once: the database may be stopped later
                import psycopg

                with psycopg.connect(self.state_url) as conn:
                    row = conn.execute("SELECT value FROM secret").fetchone()
                    assert row is not None
                    self._shared_secret = bytes.fromhex(row[0])
            return self._shared_secret
        return bytes.fromhex((self.state / SECRET_FILE).read_text().strip())

    def token(self, host: str, build: int = 1) -> str:
        """The host's token, from the state's secret."""
        return host_token(self.secret(), host, build)

    def secrets_path(self, host: str, build: int = 1) -> str:
        """The URL path of the build's one-time secrets."""
        return f"/ks/{host}/{secrets_token(self.secret(), host, build)}/secrets"

    def request(
        self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None
    ) -> tuple[int, dict[str, str], bytes]:
        """One HTTP request on a fresh connection: status, headers, body."""
        conn = http.client.HTTPConnection(self.address, self.port, timeout=30)
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, dict(resp.getheaders()), resp.read()
        finally:
            conn.close()

    def callback(
        self, host: str, event: str, body: bytes = b"", build: int = 1
    ) -> tuple[int, dict[str, str]]:
        """POST a callback with the token of the host's build: status and headers."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        path = f"/cb/{host}/{self.token(host, build)}/{event}"
        status, got, _ = self.request("POST", path, body, headers)
        return status, got

    def tftp(self, name: str, source: str = "127.0.0.1") -> bytes:
        """Fetch a file with curl's TFTP client from address ``source``."""
        return curl_tftp(
            self.tftp_port, name, self.root / "tftp.out", "--interface", source, host=self.address
        )


def curl_tftp(port: int, name: str, out: Path, *options: str, host: str = "127.0.0.1") -> bytes:
    """Fetch ``name`` from a TFTP server on loopback ``host:port`` with curl, through ``out``."""
    out.unlink(missing_ok=True)
    url = f"tftp://{host}:{port}/{name}"
    subprocess.run(["curl", "-sS", "--fail", *options, "-o", str(out), url], check=True, timeout=30)
    return out.read_bytes()


def popen_serve(
    spec: Path, port: int, env: dict[str, str]
) -> tuple[subprocess.Popen[str], str, int]:
    """`photonkick serve SPEC` on 127.0.0.1 (HTTP ``port``, TFTP on a free port) with ``env``:
    the process, its start banner and the TFTP port the banner names."""
    exe = Path(sys.executable).parent / "photonkick"
    proc = subprocess.Popen(
        [str(exe), "serve", str(spec), "--http", f"127.0.0.1:{port}", "--tftp", "127.0.0.1:0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    banner = "".join(proc.stdout.readline() for _ in range(BANNER_LINES))
    match = re.search(r"TFTP       127.0.0.1 port (\d+)", banner)
    if match is None:
        proc.kill()
        proc.communicate()
        raise AssertionError(f"no TFTP port in the banner:\n{banner}")
    return proc, banner, int(match.group(1))
