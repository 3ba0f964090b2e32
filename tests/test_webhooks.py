"""Webhooks against real local HTTP receivers that check the signature: one that answers,
one that fails before it answers, one that hangs and one that is down."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from photonkick.kickstarts.errors import SpecError
from photonkick.kickstarts.hooks import WEBHOOK_EVENTS, Webhook
from photonkick.kickstarts.inventory import load_inventory
from photonkick.kickstarts.secrets import Secret
from photonkick.kickstarts.tokens import host_token
from photonkick.server.boot_server import BootServer, Listen
from photonkick.server.state_dir import StateDir
from photonkick.server.timeline import FAILED, PHASES, REARMED, Timeline
from photonkick.server.webhooks import Delivery, WebhookDispatcher

SECRET = "whsec-4b1d-not-for-logs"
PATH_TOKEN = "T0KEN-in-the-path-77"


class Receiver:
    """A real HTTP server that records each POST and whether its signature is right."""

    def __init__(self, answers: list[int] | None = None, hang: bool = False) -> None:
        self.answers = list(answers or [])
        self.received: list[dict[str, Any]] = []
        self.release = threading.Event()
        self.hang = hang
        self.arrived = threading.Condition()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 (http.server's name)
                body = self.rfile.read(int(self.headers["Content-Length"]))
                expected = "sha256=" + hmac.new(SECRET.encode(), body, hashlib.sha256).hexdigest()
                signature = self.headers.get("X-Photonkick-Signature", "")
                with outer.arrived:
                    outer.received.append(
                        {
                            "path": self.path,
                            "body": json.loads(body),
                            "signed": hmac.compare_digest(expected, signature),
                            "type": self.headers.get("Content-Type"),
                        }
                    )
                    outer.arrived.notify_all()
                if outer.hang:
                    outer.release.wait(30)
                status = outer.answers.pop(0) if outer.answers else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/hook/{PATH_TOKEN}"

    def wait(self, count: int, timeout: float = 20) -> list[dict[str, Any]]:
        with self.arrived:
            self.arrived.wait_for(lambda: len(self.received) >= count, timeout)
            return list(self.received)

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receivers() -> Iterator[Callable[..., Receiver]]:
    made: list[Receiver] = []

    def make(answers: list[int] | None = None, hang: bool = False) -> Receiver:
        made.append(Receiver(answers, hang))
        return made[-1]

    yield make
    for receiver in made:
        receiver.close()


def closed_port_url() -> str:
    """A URL nobody listens on (the port was just bound and released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/down/{PATH_TOKEN}"


def webhook(url: str, *events: str) -> Webhook:
    return Webhook(url, Secret(SECRET, "env:HOOK_SECRET"), events or ("ready", "failed"))


def attempts(timeline: Timeline, host: str) -> list[str]:
    return [e.detail for e in timeline.events(host) if e.kind == "webhook"]


def wait_attempts(
    timeline: Timeline, host: str, done: Callable[[list[str]], bool], timeout: float = 20
) -> list[str]:
    """The host's delivery attempts once ``done`` says they are complete (or at the timeout)."""
    deadline = time.monotonic() + timeout
    found = attempts(timeline, host)
    while not done(found) and time.monotonic() < deadline:
        time.sleep(0.05)
        found = attempts(timeline, host)
    return found


SPEC = """\
photon: {{release: "5.0", installer: "2.7"}}
server:
  url: http://127.0.0.1:8080
  webhooks:
    - url: {good}
      events: [installed, ready, failed]
      secret: {{env: HOOK_SECRET}}
    - url: {hanging}
      secret: {{env: HOOK_SECRET}}
    - url: {down}
      events: [ready]
      secret: {{env: HOOK_SECRET}}
hosts:
  - {{name: web01, mac: "00:50:56:00:10:01"}}
"""


def test_boot_server_posts_signed_events_and_a_hung_or_dead_receiver_delays_nothing(
    tmp_path: Path,
    receivers: Callable[..., Receiver],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    good, hanging = receivers(), receivers(hang=True)
    down = closed_port_url()
    spec = tmp_path / "lab.yaml"
    spec.write_text(SPEC.format(good=good.url, hanging=hanging.url, down=down))
    state = StateDir(tmp_path / "state")
    server = BootServer(
        spec,
        load_inventory(spec),
        state,
        tmp_path / "releases",
        Listen("127.0.0.1", 0, "127.0.0.1", 0),
    )
    server.start()
    try:
        token = host_token(state.secret, "web01", 1)
        base = f"http://127.0.0.1:{server.http_port}/cb/web01/{token}"
        for event in ("installed", "ready"):
            request = urllib.request.Request(f"{base}/{event}", data=b"", method="POST")
            with urllib.request.urlopen(request, timeout=10) as resp:
                assert resp.status == 200
        # Both callbacks were answered while the hanging receiver still holds its request.
        assert hanging.wait(1)[0]["body"]["event"] == "ready"
        assert not hanging.release.is_set()

        got = good.wait(2)
        assert [r["body"]["event"] for r in got] == ["installed", "ready"]
        assert all(r["signed"] and r["type"] == "application/json" for r in got)
        ready = got[1]["body"]
        assert ready["host"] == "web01" and ready["build"] == 1 and ready["reason"] is None
        assert set(ready["phase_times"]) == {"installed", "ready"}

        timeline = server.timeline
        seen = wait_attempts(
            timeline, "web01", lambda a: any("no answer" in d for d in a) and len(a) >= 3
        )
        shown_good = good.url.split("/hook/")[0]
        assert f"installed -> {shown_good}: HTTP 200 (attempt 1)" in seen
        assert f"ready -> {shown_good}: HTTP 200 (attempt 1)" in seen
        assert any(
            d.startswith(f"ready -> {down.split('/down/')[0]}: no answer") and "retry in 1 s" in d
            for d in seen
        )
    finally:
        hanging.release.set()
        server.stop()
    logged = caplog.text + "".join(attempts(Timeline(tmp_path / "state" / "timeline.db"), "web01"))
    assert SECRET not in logged and PATH_TOKEN not in logged


def test_retries_with_backoff_until_delivered(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    flaky = receivers(answers=[503, 502])
    timeline = Timeline(tmp_path / "t.db")
    hooks = WebhookDispatcher(timeline, [webhook(flaky.url)], Delivery(first_backoff=0.05))
    timeline.subscribe(hooks.offer)
    try:
        timeline.record("db01", 3, "failed", "partitioning failed\n--- log tail ---\nboom")
        got = flaky.wait(3)
        assert len(got) == 3 and all(r["signed"] for r in got)
        assert got[0]["body"]["reason"] == "partitioning failed"
        found = wait_attempts(timeline, "db01", lambda a: len(a) == 3)
        assert [d.split(": ", 1)[1] for d in found] == [
            "HTTP 503 (attempt 1); retry in 0.05 s",
            "HTTP 502 (attempt 2); retry in 0.1 s",
            "HTTP 200 (attempt 3)",
        ]
    finally:
        hooks.close()
        timeline.close()


def test_client_errors_are_not_retried_and_a_dead_receiver_is_given_up(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    refusing = receivers(answers=[400])
    timeline = Timeline(tmp_path / "t.db")
    delivery = Delivery(attempt_timeout=1, retry_for=0.5, first_backoff=0.1)
    hooks = WebhookDispatcher(
        timeline, [webhook(refusing.url), webhook(closed_port_url())], delivery
    )
    timeline.subscribe(hooks.offer)
    try:
        timeline.record("web02", 1, "ready")
        found = wait_attempts(
            timeline, "web02", lambda a: any("giving up" in d for d in a) and len(a) >= 3
        )
        assert any(d.endswith("HTTP 400 (attempt 1)") for d in found)
        dead = [d for d in found if "no answer" in d]
        assert dead[-1].endswith("; giving up") and len(dead) >= 2
        assert len(refusing.received) == 1
    finally:
        hooks.close()
        timeline.close()


def test_concurrent_events_from_many_threads_each_arrive_once(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    sink = receivers()
    timeline = Timeline(tmp_path / "t.db")
    hooks = WebhookDispatcher(timeline, [webhook(sink.url, "ready")])
    timeline.subscribe(hooks.offer)
    start = threading.Barrier(8)

    def burst(worker: int) -> None:
        start.wait()
        for i in range(25):
            timeline.record(f"h{worker}-{i}", 1, "ready")
            timeline.record(f"h{worker}-{i}", 1, "config")  # not subscribed

    threads = [threading.Thread(target=burst, args=(w,)) for w in range(8)]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        got = sink.wait(200)
        assert sorted(r["body"]["host"] for r in got) == sorted(
            f"h{w}-{i}" for w in range(8) for i in range(25)
        )
        assert all(r["signed"] and r["body"]["event"] == "ready" for r in got)
    finally:
        hooks.close()
        timeline.close()


def test_a_full_queue_drops_and_says_so(tmp_path: Path, receivers: Callable[..., Receiver]) -> None:
    stuck = receivers(hang=True)
    timeline = Timeline(tmp_path / "t.db")
    hooks = WebhookDispatcher(timeline, [webhook(stuck.url)], Delivery(queue_size=2))
    timeline.subscribe(hooks.offer)
    try:
        timeline.record("a", 1, "ready")
        stuck.wait(1)  # the worker now hangs on the first; the queue takes two more
        for host in ("b", "c", "d"):
            timeline.record(host, 1, "ready")
        assert attempts(timeline, "d") == [
            f"ready -> {stuck.url.split('/hook/')[0]}: dropped, queue full"
        ]
        assert attempts(timeline, "b") == [] and attempts(timeline, "c") == []
    finally:
        stuck.release.set()
        hooks.close()
        timeline.close()


def test_reload_keeps_unchanged_webhooks_and_drops_removed(
    tmp_path: Path, receivers: Callable[..., Receiver]
) -> None:
    first, second = receivers(), receivers()
    timeline = Timeline(tmp_path / "t.db")
    hooks = WebhookDispatcher(timeline, [webhook(first.url)])
    timeline.subscribe(hooks.offer)
    try:
        hooks.configure([webhook(second.url)])
        timeline.record("a", 1, "ready")
        assert second.wait(1)[0]["body"]["host"] == "a"
        assert first.received == []
    finally:
        hooks.close()
        timeline.close()


BAD_SPEC = """\
server:
  url: http://192.0.2.1:8080
  webhooks:
    - url: ftp://hooks.example/x
      events: [ready, exploded]
      secret: {env: NOT_SET_ANYWHERE}
    - url: https://hooks.example/y
      event: [ready]
hosts: []
"""


def test_webhook_spec_errors_name_file_line_and_key(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(BAD_SPEC)
    with pytest.raises(SpecError) as info:
        load_inventory(spec, {})
    found = [str(p).replace(str(spec), "F") for p in info.value.problems]
    assert any(p.startswith("F:4:12: server.webhooks[0].url: 'ftp://") for p in found), found
    assert any(p.startswith("F:5:23: server.webhooks[0].events[1]: 'exploded'") for p in found)
    assert any(p.startswith("F:6:15: server.webhooks[0].secret") and "NOT_SET" in p for p in found)
    assert any(p.startswith("F:8:7: server.webhooks[1].event: unknown key") for p in found)
    assert "F:7:7: server.webhooks[1].secret: is required" in found


def test_webhook_spec_defaults(tmp_path: Path) -> None:
    spec = tmp_path / "spec.yaml"
    spec.write_text(
        "server:\n  url: http://192.0.2.1:8080\n  webhooks:\n"
        "    - {url: 'https://hooks.example/a', secret: {env: S}}\nhosts: []\n"
    )
    (hook,) = load_inventory(spec, {"S": SECRET}).server.webhooks
    assert hook.events == ("ready", "failed") and hook.secret.reveal() == SECRET
    assert SECRET not in repr(hook)


def test_webhook_events_are_the_timelines_phases_failed_and_rearmed() -> None:
    # The spec model cannot import the server's timeline; this keeps the two lists one.
    assert WEBHOOK_EVENTS == (*PHASES, FAILED, REARMED)
