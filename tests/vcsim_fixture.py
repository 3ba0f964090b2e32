"""The govmomi vSphere simulator (vcsim) as pytest fixtures.

``tests/vcsim/`` is built once per machine from Debian's ``golang-go`` and
``golang-github-vmware-govmomi-dev`` (GOPATH mode, nothing downloaded) into a cache
directory under the system temp dir, keyed by a hash of the sources and the toolchain. Each
test gets its own simulator on a free loopback port. Without Go or the govmomi sources the
tests skip and say why; set ``PHOTONKICK_VCSIM_REQUIRED=1`` to make that a failure, or
``PHOTONKICK_VCSIM_BIN`` to use a binary built elsewhere.

Use it from a test module with ``pytest_plugins = ["vcsim_fixture"]``.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import selectors
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import pytest

SOURCE = Path(__file__).resolve().parent / "vcsim"
GOPATH = Path("/usr/share/gocode")
GOVMOMI = GOPATH / "src/github.com/vmware/govmomi/simulator"
DEBIAN_PACKAGES = "golang-go golang-github-vmware-govmomi-dev"
USER = "photonkick"
PASSWORD = "vcsim-Secret-1"
START_TIMEOUT = 15.0

Model = Literal["esx", "vcenter"]


@dataclass
class Vcsim:
    """One running simulator: where it listens, how to log in, and its TLS certificate."""

    model: Model
    url: str
    host: str
    port: int
    cert_pem: str
    user: str
    password: str
    process: subprocess.Popen[bytes] = field(repr=False)

    @property
    def datacenter(self) -> str:
        """The datacenter the model creates."""
        return "ha-datacenter" if self.model == "esx" else "DC0"

    def stop(self) -> None:
        """Stop the simulator before its test ends (stopping twice is harmless)."""
        _stop(self.process)


def _skip_or_fail(reason: str) -> None:
    if os.environ.get("PHOTONKICK_VCSIM_REQUIRED") == "1":
        pytest.fail(f"vcsim is required: {reason}")
    pytest.skip(f"vcsim tier: {reason} (apt-get install {DEBIAN_PACKAGES})")


def _cache_key(go: str) -> str:
    digest = hashlib.sha256()
    for path in sorted(SOURCE.rglob("*")):
        if path.is_file():
            digest.update(path.relative_to(SOURCE).as_posix().encode() + b"\0")
            digest.update(path.read_bytes() + b"\0")
    version = subprocess.run([go, "version"], capture_output=True, text=True, check=True)
    digest.update(version.stdout.encode())
    # The Debian package's simulator sources: any update changes the build.
    for path in sorted(GOVMOMI.glob("*.go")):
        stat = path.stat()
        digest.update(f"{path.name}:{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def build_vcsim() -> Path:
    """The simulator binary, built on first use and cached for the machine."""
    if override := os.environ.get("PHOTONKICK_VCSIM_BIN"):
        return Path(override)
    go = shutil.which("go")
    if go is None:
        _skip_or_fail("`go` is not installed")
        raise AssertionError("unreachable")
    if not GOVMOMI.is_dir():
        _skip_or_fail(f"the govmomi simulator sources are missing ({GOVMOMI})")
    cache = Path(tempfile.gettempdir()) / f"photonkick-vcsim-{os.getuid()}"
    binary = cache / _cache_key(go) / "vcsim"
    if binary.exists():
        return binary
    binary.parent.mkdir(parents=True, exist_ok=True)
    with (cache / "build.lock").open("w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # parallel test runs build it once
        if binary.exists():
            return binary
        env = dict(os.environ, GO111MODULE="off", GOPATH=str(GOPATH), GOFLAGS="")
        env.setdefault("GOCACHE", str(cache / "go-build"))
        partial = binary.with_name("vcsim.partial")
        result = subprocess.run(
            [go, "build", "-o", str(partial), "."],
            cwd=SOURCE,
            env=env,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            pytest.fail(f"building {SOURCE} failed:\n{result.stdout}{result.stderr}")
        partial.replace(binary)
    return binary


@contextlib.contextmanager
def run_vcsim(
    binary: Path,
    model: Model,
    *,
    listen: str = "127.0.0.1:0",
    disable_methods: tuple[str, ...] = (),
) -> Iterator[Vcsim]:
    """Start a TLS simulator with fixed credentials; stop it (by its own PID) on exit."""
    args = [str(binary), "-l", listen, "-tls", "-auth", f"{USER}:{PASSWORD}"]
    if model == "esx":
        args.append("-esx")
    if disable_methods:
        args += ["-disable-method", ",".join(disable_methods)]
    process = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    try:
        assert process.stdout is not None
        with selectors.DefaultSelector() as selector:
            selector.register(process.stdout, selectors.EVENT_READ)
            if not selector.select(START_TIMEOUT):
                raise AssertionError(f"vcsim printed nothing within {START_TIMEOUT} s")
        line = process.stdout.readline()
        if not line:
            raise AssertionError(f"vcsim exited with status {process.wait()}")
        info = json.loads(line)
        sim = Vcsim(
            model=model,
            url=info["url"],
            host=info["host"],
            port=int(info["port"]),
            cert_pem=info["cert"],
            user=USER,
            password=PASSWORD,
            process=process,
        )
        print(f"vcsim ({model}) listening at {sim.url}")
        yield sim
    finally:
        _stop(process)


def _stop(process: subprocess.Popen[bytes]) -> None:
    # Closing stdin asks the simulator to exit (and removes its temporary datastores).
    if process.stdin is not None:
        process.stdin.close()
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        process.terminate()
        try:
            process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if process.stdout is not None:
        process.stdout.close()


@pytest.fixture(scope="session")
def vcsim_binary() -> Path:
    """The simulator binary (built once per machine); skips when the toolchain is missing."""
    return build_vcsim()


@pytest.fixture(params=["esx", "vcenter"])
def vcsim(request: pytest.FixtureRequest, vcsim_binary: Path) -> Iterator[Vcsim]:
    """A fresh simulator per test, once as a standalone ESXi host and once as a vCenter."""
    with run_vcsim(vcsim_binary, request.param) as sim:
        yield sim


@pytest.fixture
def start_vcsim(vcsim_binary: Path) -> Iterator[Callable[..., Vcsim]]:
    """Start further simulators inside a test: ``start_vcsim(model, listen=..., ...)``.

    Each one is stopped at teardown, or earlier with ``Vcsim.stop()``.
    """
    with contextlib.ExitStack() as stack:

        def start(
            model: Model, *, listen: str = "127.0.0.1:0", disable_methods: tuple[str, ...] = ()
        ) -> Vcsim:
            run = run_vcsim(vcsim_binary, model, listen=listen, disable_methods=disable_methods)
            return stack.enter_context(run)

        yield start
