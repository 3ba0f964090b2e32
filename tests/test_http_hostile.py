"""Hostile HTTP against a real `photonkick serve`: raw requests over raw sockets.

Every answer must be below 500, no token or secret may reach any log line, and the server must
keep serving. The probe test prints its counts: probes, 5xx, leaks, crashes.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from test_server import SECRETS, SPEC, _free_port

ENV = {"PK_TEST_REG": SECRETS[0], "PK_TEST_KEY": SECRETS[1]}
KERNEL = bytes(range(256)) * 1024


@dataclass(frozen=True)
class Answer:
    """What came back on one connection: the status (None for no answer) and the bytes."""

    status: int | None
    raw: bytes

    @property
    def body(self) -> bytes:
        return self.raw.partition(b"\r\n\r\n")[2]


class Served:
    """A `photonkick serve` process on loopback, its log files and the hosts' tokens."""

    def __init__(self, root: Path) -> None:
        self.port = _free_port()
        spec = root / "lab.yaml"
        spec.write_text(SPEC.format(port=self.port))
        data = root / "releases"
        (data / "5.0" / "isolinux").mkdir(parents=True)
        (data / "5.0" / "isolinux" / "vmlinuz").write_bytes(KERNEL)
        (root / "outside.txt").write_text("private")
        (data / "5.0" / "escape").symlink_to(root / "outside.txt")
        self.state = root / ".photonkick"
        self.out, self.err = root / "serve.out", root / "serve.err"
        exe = Path(sys.executable).parent / "photonkick"
        command = [str(exe), "serve", str(spec), "--data", str(data)]
        command += ["--http", f"127.0.0.1:{self.port}", "--tftp", "127.0.0.1:0"]
        with self.out.open("wb") as out, self.err.open("wb") as err:
            self.proc = subprocess.Popen(command, stdout=out, stderr=err, env={**os.environ, **ENV})
        self.tftp_port = self._wait_for_banner()
        self.tokens = {name: self._token(mac) for name, mac in (("web01", "10"), ("db01", "20"))}
        self.admin_token = (self.state / "admin-token").read_text().strip()

    def _wait_for_banner(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            found = re.search(r"TFTP +127\.0\.0\.1 port (\d+)", self.out.read_text())
            if found:
                return int(found.group(1))
            assert self.proc.poll() is None, self.err.read_text()
            time.sleep(0.05)
        raise AssertionError("photonkick serve never printed its banner")

    def _token(self, mac_byte: str) -> str:
        """The host's token, as a machine learns it: from its boot config over real TFTP."""
        url = f"tftp://127.0.0.1:{self.tftp_port}/pxelinux.cfg/01-00-50-56-00-{mac_byte}-01"
        config = subprocess.run(
            ["curl", "-sS", "--fail", url], capture_output=True, check=True, timeout=20
        ).stdout
        found = re.search(rb"/ks/[^/]+/([a-z2-7]+)\.json", config)
        assert found, config
        return found.group(1).decode()

    def request(self, raw: bytes, timeout: float = 10.0) -> Answer:
        """Send raw bytes on a new connection; read until the server closes or goes quiet."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=timeout) as sock:
            sock.sendall(raw)
            return Answer(*_read_answer(sock))

    def get(self, path: bytes, headers: bytes = b"") -> Answer:
        return self.request(_raw(b"GET", path, headers))

    def post(self, path: bytes, body: bytes = b"", headers: bytes = b"") -> Answer:
        return self.request(_post(path, body, headers))

    def kickstart_path(self, name: str = "web01") -> bytes:
        return f"/ks/{name}/{self.tokens[name]}.json".encode()

    def callback_path(self, event: str, name: str = "db01") -> bytes:
        return f"/cb/{name}/{self.tokens[name]}/{event}".encode()

    def stop(self) -> str:
        """Stop the server with SIGTERM; everything it wrote to stdout and stderr."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=20)
        return self.out.read_text(errors="replace") + self.err.read_text(errors="replace")


_CLOSE = b"Connection: close\r\n\r\n"


def _raw(method: bytes, path: bytes, headers: bytes = b"", body: bytes = b"") -> bytes:
    """A request that asks the server to close the connection after its answer."""
    return method + b" " + path + b" HTTP/1.1\r\nHost: x\r\n" + headers + _CLOSE + body


def _post(path: bytes, body: bytes, headers: bytes = b"") -> bytes:
    return _raw(b"POST", path, b"Content-Length: %d\r\n" % len(body) + headers, body)


_STATUS = re.compile(rb"HTTP/1\.[01] (\d{3}) ")


def _read_answer(sock: socket.socket) -> tuple[int | None, bytes]:
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (TimeoutError, ConnectionResetError):
        pass
    found = _STATUS.match(data)
    return (int(found.group(1)) if found else None), data


@pytest.fixture
def served(tmp_path: Path) -> Iterator[Served]:
    server = Served(tmp_path)
    yield server
    server.stop()


def _nested(depth: int) -> bytes:
    return b"[" * depth + b"]" * depth


def _probes(s: Served) -> list[tuple[str, bytes, set[int]]]:
    """(what, raw request, acceptable statuses) for every probe."""
    ks, cb, forged = s.kickstart_path(), s.callback_path("firstboot"), b"/cb/db01/forged/ready"
    json_type = b"Content-Type: application/json\r\n"
    form_type = b"Content-Type: application/x-www-form-urlencoded\r\n"

    def get(path: bytes, headers: bytes = b"") -> bytes:
        return _raw(b"GET", path, headers)

    post = _post
    probes: list[tuple[str, bytes, set[int]]] = []

    def add(what: str, raw: bytes, *statuses: int) -> None:
        probes.append((what, raw, set(statuses) or set(range(400, 500))))

    # Tokens with characters a str comparison cannot take (raw bytes: waitress's 400).
    for bad in (b"%C3%A9", b"%FF", b"%00", b"%ED%A0%80", b"\xc3\xa9", b"\xff", b"a" * 5000):
        statuses = (404,) if bad.isascii() else (400, 404)
        add(f"kickstart token {bad[:12]!r}", get(b"/ks/web01/" + bad + b".json"), *statuses)
        add(f"callback token {bad[:12]!r}", post(b"/cb/db01/" + bad + b"/ready", b""), *statuses)
        add(f"host name {bad[:12]!r}", get(b"/ks/" + bad + b"/x.json"), *statuses)
        add(f"api host {bad[:12]!r}", get(b"/api/v1/hosts/" + bad), *statuses)
        add(f"secrets token {bad[:12]!r}", get(b"/ks/web01/" + bad + b"/secrets"), *statuses)
    add("token with a tail", get(ks.replace(b".json", b"%C3%A9.json")), 404)
    for value in (b"\xc3\xa9", b"\xff", b"\x00", b"%FF", s.admin_token.encode() + b"\xff", b""):
        auth = b"Authorization: Bearer " + value + b"\r\n"
        add(f"bearer {value[:8]!r}", post(b"/api/v1/hosts/nohost/rearm", b"", auth), 400, 404)
    # Release and iPXE paths: NUL bytes, names too long for the file system, escapes.
    for path in (
        b"/releases/5.0/isolinux/vmlinuz%00",
        b"/releases/5.0/%00/vmlinuz",
        b"/releases/%00",
        b"/releases/5.0/isolinux/" + b"a" * 8192,
        b"/releases/5.0/isolinux/" + (b"b" * 255 + b"/") * 20 + b"c",
        b"/releases/5.0/" + b"%41" * 3000,
        b"/releases/5.0/escape",
        b"/releases/5.0/isolinux",
        b"/releases/5.0/isolinux/",
        b"/releases/../../../etc/passwd",
        b"/releases/5.0/%2e%2e/%2e%2e/outside.txt",
        b"/releases/5.0/..%2f..%2foutside.txt",
        b"/releases/5.0/isolinux/..%5c..%5cvmlinuz",
        b"/ipxe/%00.ipxe",
        b"/ipxe/" + b"d" * 8192 + b".ipxe",
        b"/ipxe/00-50-56-00-10-01%00.ipxe",
        b"/ipxe/../releases/5.0/escape",
    ):
        add(f"path {path[:40]!r}", get(path), 404)
    for size in (40_000, 200_000):
        add(f"{size} byte name", get(b"/releases/5.0/" + b"e" * size))
    # Callback bodies that are not a form or a JSON object, with a good token.
    for body in (
        b"[1]",
        b'"str"',
        b"42",
        b"null",
        b"{",
        b"\xff\xfe",
        b'{"reason": 5}',
        b'{"reason": ["a"]}',
        _nested(100_000),
        b'{"a":' * 40_000 + b"1" + b"}" * 40_000,
    ):
        add(f"json {body[:12]!r}", post(cb, body, json_type), 400)
    add("json object", post(cb, b'{"reason": "x", "log": "y"}', json_type), 200)
    add("forged token, deep json", post(forged, _nested(100_000), json_type), 404)
    add("forged token, form", post(forged, b"reason=x", form_type), 404)
    # Forms werkzeug reads leniently (an empty reason) or refuses: either way no 5xx.
    add("form parts", post(cb, b"&".join([b"k=v"] * 5000), form_type), 200, 400, 413)
    for kind in (b"multipart/form-data", b"multipart/form-data; boundary=x"):
        body = b"--x\r\nbroken"
        add(f"broken {kind!r}", post(cb, body, b"Content-Type: " + kind + b"\r\n"), 200, 400)
    add("bad percent escapes", post(cb, b"reason=%zz%F", form_type), 200)
    add("reason is not utf-8", post(cb, b"reason=%FF%FE", form_type), 200)
    # Bodies and lengths.
    big = b"Content-Length: 104857600\r\n"
    add("100 MiB announced", _raw(b"POST", forged, big), 413)
    add("300 KiB body", post(cb, b"r" * 300_000, form_type), 413)
    chunk = b"%x\r\n%s\r\n" % (100_000, b"c" * 100_000)
    chunked = b"Transfer-Encoding: chunked\r\n"
    add("chunked over the cap", _raw(b"POST", cb, chunked + form_type, chunk * 4 + b"0\r\n\r\n"))
    for header in (
        b"Content-Length: -1\r\n",
        b"Content-Length: abc\r\n",
        b"Content-Length: 1\r\nContent-Length: 2\r\n",
        b"Transfer-Encoding: gzip\r\n",
        b"Transfer-Encoding: chunked, gzip\r\n",
        b"Transfer-Encoding: identity\r\n",
    ):
        add(f"length {header[:30]!r}", _raw(b"POST", cb, header, b"0\r\n\r\n"))
    # Transfer-Encoding overrides Content-Length (RFC 9112 §6.3): the chunked body is read.
    both = b"Content-Length: 3\r\nTransfer-Encoding: chunked\r\n"
    add("length and chunked", _raw(b"POST", cb, both, b"0\r\n\r\n"), 200)
    add("bad chunk size", _raw(b"POST", cb, chunked, b"zz\r\nabc\r\n0\r\n\r\n"))
    # Ranges (RFC 9110 §14.2): unusable ones are ignored, an unsatisfiable one is 416.
    kernel = b"/releases/5.0/isolinux/vmlinuz"
    for value, status in (
        (b"bytes=abc", 200),
        (b"items=0-5", 200),
        (b"bytes=5-1", 200),
        (b"bytes=0-1,4-5", 200),
        (b"bytes=", 200),
        (b"\xff", 200),
        (b"bytes=0-9", 206),
        (b"bytes=-10", 206),
        (b"bytes=99999999-", 416),
    ):
        add(f"range {value!r}", get(kernel, b"Range: " + value + b"\r\n"), status)
    for header in (b"If-Range: \xff", b"If-Modified-Since: yesterday", b"If-None-Match: \x00"):
        add(f"conditional {header[:20]!r}", get(kernel, header + b"\r\n"), 200, 400)
    # Request lines, methods, headers. Waitress takes a few odd ones as it reads them.
    for raw in (b"GET /\r\n\r\n", b"GET / HTTP/9.9\r\n\r\n", b"\r\n\r\nGET / HTTP/1.0\r\n\r\n"):
        add(f"request {raw[:24]!r}", raw, 200)
    add("absolute form", b"GET http://evil.example" + ks + b" HTTP/1.1\r\n" + _CLOSE, 200)
    for raw in (
        b"\x00\xff\r\n\r\n",
        b"GET\r\n\r\n",
        b"GET / HTTP/1.1 extra\r\n\r\n",
        b"GET  /  HTTP/1.1\r\n\r\n",
        b"GET / HTTP/1.1\r\nno colon here\r\n\r\n",
        b"GET / HTTP/1.1\r\n folded: header\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: a\x00b\r\n\r\n",
        b"GET / HTTP/1.1\r\nX: " + b"h" * 40_000 + b"\r\n\r\n",
        b"GET / HTTP/1.1\r\n" + b"X-Many: 1\r\n" * 3000 + b"\r\n",
        b"GET /" + b"?" + b"q" * 40_000 + b" HTTP/1.1\r\n\r\n",
        b"GET /\xff\xfe HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"GET * HTTP/1.1\r\nConnection: close\r\n\r\n",
        b"CONNECT 127.0.0.1:22 HTTP/1.1\r\nConnection: close\r\n\r\n",
    ):
        add(f"request {raw[:24]!r}", raw)
    for method in (b"PUT", b"DELETE", b"PATCH", b"TRACE", b"FOO"):
        add(f"method {method!r}", _raw(method, ks), 405)
    add("post to a kickstart", post(ks, b"x"), 405)
    add("get a callback", get(cb), 405)
    add("unknown event", post(b"/cb/db01/" + s.tokens["db01"].encode() + b"/owned", b""), 404)
    add("old http", b"GET " + ks + b" HTTP/1.0\r\n\r\n", 200)
    add("no host header", b"GET /api/v1/hosts/web01 HTTP/1.1\r\n" + _CLOSE, 200)
    junk = b"Cookie: \xff=\r\nAccept: \xff\r\nHost: \xc3\xa9\r\nAccept-Encoding: ,,;q=x\r\n"
    for path in (b"/", b"/metrics", b"/api/v1/hosts", b"/ipxe/boot.ipxe"):
        add(f"page {path!r} with junk headers", get(path, junk), 200)
    # A token anywhere in a path must not reach a log line either.
    token = s.tokens["web01"].encode()
    for path in (
        b"/ks//" + token + b".json",
        b"/KS/web01/" + token + b".json",
        b"/ks/web01/" + token,
        b"/ks/web01/" + token + b".json/more",
        b"/x/" + token,
        b"/releases/" + token,
        b"/ks/web01/" + token + b"%0a.json",
    ):
        add(f"token in {path[:20]!r}", get(path), 404, 405)
    add("doubled slash", get(b"//ks/web01/" + token + b".json"), 200)
    add("admin token in a path", get(b"/api/v1/hosts/" + s.admin_token.encode()), 404)
    probes += _random_probes(s, 300)
    return probes


def _random_probes(s: Served, count: int) -> list[tuple[str, bytes, set[int]]]:
    """Seeded random paths, ranges and bodies under every route; any answer below 500."""
    rng = random.Random(2026)
    prefixes = [b"/ks/web01/", b"/cb/db01/", b"/releases/5.0/", b"/ipxe/", b"/api/v1/hosts/"]
    prefixes += [b"/", s.callback_path("firstboot") + b"/", s.kickstart_path()]
    alphabet = bytes(range(33, 127)) + b"%%%%////"
    kinds = [b"application/json", b"application/x-www-form-urlencoded", b"text/plain"]
    probes = []
    for number in range(count):
        path = rng.choice(prefixes) + rng.randbytes(rng.randint(0, 40)).translate(
            bytes(alphabet[i % len(alphabet)] for i in range(256))
        )
        if rng.random() < 0.5:
            start, end = rng.randint(-5, 300_000), rng.randint(-5, 300_000)
            header = b"Range: bytes=%d-%d\r\n" % (start, end) if rng.random() < 0.3 else b""
            raw = _raw(rng.choice([b"GET", b"HEAD", b"OPTIONS", b"POST"]), path, header)
        else:
            body = rng.randbytes(rng.randint(0, 300))
            raw = _post(path, body, b"Content-Type: " + rng.choice(kinds) + b"\r\n")
        probes.append((f"random {number}: {raw[:60]!r}", raw, set(range(200, 500))))
    return probes


def test_hostile_requests_get_4xx_and_leak_nothing(served: Served) -> None:
    failures, fivexx = [], 0
    probes = _probes(served)
    for what, raw, statuses in probes:
        answer = served.request(raw)
        if answer.status is not None and answer.status >= 500:
            fivexx += 1
        if answer.status not in statuses:
            failures.append(f"{what}: {answer.status} (wanted {sorted(statuses)[:3]})")
    # Still serving the legitimate client afterwards: the kickstart, its secrets, a file.
    kickstart = served.get(served.kickstart_path())
    assert kickstart.status == 200
    found = re.search(rb"/ks/web01/([a-z2-7]{26})/secrets", kickstart.body)
    assert found, kickstart.body
    secrets_answer = served.get(found.group(0))
    assert secrets_answer.status == 200
    assert base64.b64encode(SECRETS[0].encode() + b"\n") in secrets_answer.body
    assert served.get(b"/releases/5.0/isolinux/vmlinuz").body == KERNEL
    crashes = int(served.proc.poll() is not None)
    logs = served.stop()
    secrets = (*SECRETS, served.admin_token, *served.tokens.values(), found.group(1).decode())
    leaks = [line for line in logs.splitlines() if any(s in line for s in secrets)]
    print("\n".join(leaks))
    print(
        f"\nhostile HTTP: {len(probes)} probes, {fivexx} 5xx, {len(leaks)} leaks, "
        f"{crashes} crashes, served.proc.returncode={served.proc.returncode}"
    )
    assert not failures, "\n".join(failures)
    assert (fivexx, leaks, crashes, served.proc.returncode) == (0, [], 0, 0)


def test_idle_half_sent_connections_do_not_delay_a_kickstart(served: Served) -> None:
    idle = []
    try:
        for _ in range(100):
            sock = socket.create_connection(("127.0.0.1", served.port), timeout=5)
            sock.sendall(b"GET /ks/web01/")
            idle.append(sock)
        time.sleep(0.3)  # the server has accepted them all
        started = time.monotonic()
        answer = served.get(served.kickstart_path())
        elapsed = time.monotonic() - started
        still_open = 0
        for sock in idle:
            sock.setblocking(False)
            try:
                sock.recv(1)
            except BlockingIOError:
                still_open += 1
    finally:
        for sock in idle:
            sock.close()
    assert answer.status == 200 and b'"hostname": "web01"' in answer.body
    assert still_open == 100, "the half-sent connections must still be held for the test to count"
    assert elapsed < 1.0, f"a kickstart took {elapsed:.2f} s behind 100 idle connections"


def test_a_body_over_the_cap_is_refused_unread(served: Served) -> None:
    for path in (b"/cb/db01/forged/failed", served.callback_path("failed")):
        head = _raw(b"POST", path, b"Content-Length: 104857600\r\n").replace(_CLOSE, b"\r\n")
        with socket.create_connection(("127.0.0.1", served.port), timeout=5) as sock:
            sock.sendall(head)  # and not one byte of the body
            status, raw = _read_answer(sock)
        assert status == 413, raw[:200]
        assert b"Connection: close" in raw.partition(b"\r\n\r\n")[0]
    host = json.loads(served.get(b"/api/v1/hosts/db01").body)
    assert host["failed"] is None and "failed" not in {e["kind"] for e in host["events"]}


def test_a_reason_cannot_forge_a_log_line(served: Served) -> None:
    forged = "2026-12-02 00:00:00,000 photonkick.server: db01: ready"
    body = urllib.parse.urlencode({"reason": f"boom\n{forged}\r\x1b[2J", "log": "a\nb"}).encode()
    form = b"Content-Type: application/x-www-form-urlencoded\r\n"
    assert served.post(served.callback_path("failed"), body, form).status == 200
    logs = served.stop()
    assert not any(line.startswith(forged[:23]) for line in logs.splitlines()), logs
    assert f"boom\\n{forged}\\r\\x1b[2J" in logs
