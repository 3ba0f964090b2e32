"""Webhooks: each host event a receiver asked for is POSTed to it as signed JSON.

The timeline calls ``WebhookDispatcher.offer`` for every event it records, on the thread that
records it (a request thread). ``offer`` only puts the event in a bounded queue per receiver;
one worker thread per receiver builds the body, signs it and POSTs it, retrying with back-off
for a bounded time. So a slow, hanging or dead receiver holds up only its own queue, never a
loader, installer or host request. A full queue drops the event and says so in the timeline.

Every attempt is recorded in the host's timeline as a ``webhook`` event. Logs and the
timeline name a receiver by its scheme, host and port only (a URL's path may itself be a
credential); the signing secret never leaves ``sign``.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from urllib.parse import urlsplit

from photonkick.kickstarts.hooks import Webhook
from photonkick.server.timeline import FAILED, PHASES, Event, Timeline, phase_offsets

__all__ = ["SIGNATURE_HEADER", "WebhookDispatcher", "event_body", "receiver_name", "sign"]

log = logging.getLogger("photonkick.server.webhooks")

SIGNATURE_HEADER = "X-Photonkick-Signature"
WEBHOOK_EVENT = "webhook"
"""Timeline kind of a delivery attempt (never itself sent to a webhook)."""
REASON_END = "\n--- log tail ---\n"


@dataclass(frozen=True)
class Delivery:
    """How hard to try: per-attempt timeout, total retry window and back-off, queue size."""

    attempt_timeout: float = 5.0
    retry_for: float = 120.0
    first_backoff: float = 1.0
    max_backoff: float = 30.0
    queue_size: int = 1000


def sign(secret: str, body: bytes) -> str:
    """The ``X-Photonkick-Signature`` value: ``sha256=`` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def receiver_name(url: str) -> str:
    """A URL without user info, path or query, for logs: ``https://hooks.example:8443``."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    if ":" in host:
        host = f"[{host}]"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}"


def event_body(event: Event, history: list[Event]) -> bytes:
    """The JSON a receiver gets: host, build, event, its time, phase times and reason.

    ``phase_times`` has the time of each phase's first event of the build so far;
    ``seconds_from_start`` the same as seconds from the VM's creation or first boot-file
    fetch (empty when photonkick saw neither).
    """
    offsets = phase_offsets(history)
    firsts: dict[str, Event] = {}
    for earlier in history:
        firsts.setdefault(earlier.kind, earlier)
    phases = [kind for kind in (*PHASES, FAILED) if kind in firsts]
    reason = event.detail.split(REASON_END, 1)[0] if event.kind == FAILED else None
    payload = {
        "host": event.host,
        "build": event.build,
        "event": event.kind,
        "time": _iso(event.wall),
        "phase_times": {kind: _iso(firsts[kind].wall) for kind in phases},
        "seconds_from_start": {k: round(offsets[k], 3) for k in phases if k in offsets},
        "reason": reason,
        "client": event.client or None,
    }
    return json.dumps(payload, sort_keys=True).encode()


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).isoformat(timespec="milliseconds")


class WebhookDispatcher:
    """Delivers timeline events to the spec's webhooks; ``offer`` never blocks."""

    def __init__(
        self, timeline: Timeline, hooks: Iterable[Webhook], delivery: Delivery | None = None
    ) -> None:
        self.timeline = timeline
        self.delivery = delivery or Delivery()
        self._lock = threading.Lock()
        self._workers: dict[Webhook, _Worker] = {}
        self.configure(hooks)

    def configure(self, hooks: Iterable[Webhook]) -> None:
        """Use these webhooks from now on (after a spec reload); unchanged ones keep their queue."""
        wanted = list(dict.fromkeys(hooks))
        with self._lock:
            gone = [w for hook, w in self._workers.items() if hook not in wanted]
            kept = {hook: w for hook, w in self._workers.items() if hook in wanted}
            for hook in wanted:
                if hook not in kept:
                    kept[hook] = _Worker(hook, self.timeline, self.delivery)
                    kept[hook].start()
            self._workers = kept
        for worker in gone:
            worker.stop()

    def offer(self, event: Event) -> None:
        """Queue the event for every webhook that wants it (called on the recording thread)."""
        if event.kind == WEBHOOK_EVENT:
            return
        with self._lock:
            workers = [w for hook, w in self._workers.items() if event.kind in hook.events]
        for worker in workers:
            if not worker.put(event):
                log.warning(
                    "webhook %s: queue full; %s of %s dropped",
                    worker.name_shown,
                    event.kind,
                    event.host,
                )
                self.timeline.record(
                    event.host,
                    event.build,
                    WEBHOOK_EVENT,
                    f"{event.kind} -> {worker.name_shown}: dropped, queue full",
                )

    def close(self) -> None:
        """Stop every worker; deliveries still queued are abandoned."""
        with self._lock:
            workers, self._workers = list(self._workers.values()), {}
        for worker in workers:
            worker.stop()
        for worker in workers:
            worker.join(self.delivery.attempt_timeout + 1)


class _Worker(threading.Thread):
    """Delivers one webhook's events in order, each retried within the delivery window."""

    def __init__(self, hook: Webhook, timeline: Timeline, delivery: Delivery) -> None:
        super().__init__(name=f"webhook {receiver_name(hook.url)}", daemon=True)
        self.hook = hook
        self.name_shown = receiver_name(hook.url)
        self.timeline = timeline
        self.delivery = delivery
        self._queue: queue.Queue[Event | None] = queue.Queue(delivery.queue_size)
        self._stopping = threading.Event()

    def put(self, event: Event) -> bool:
        """Queue an event; False when the queue is full."""
        try:
            self._queue.put_nowait(event)
        except queue.Full:
            return False
        return True

    def stop(self) -> None:
        """Finish the current attempt, then end."""
        self._stopping.set()
        try:
            self._queue.put_nowait(None)
        except queue.Full:
            pass  # the worker sees _stopping after its current delivery

    def run(self) -> None:
        while not self._stopping.is_set():
            event = self._queue.get()
            if event is None or self._stopping.is_set():
                return
            try:
                self._deliver(event)
            except Exception:  # a bug here must not end deliveries for good
                log.exception("webhook %s: delivery of %s failed", self.name_shown, event.kind)

    def _deliver(self, event: Event) -> None:
        body = event_body(event, self.timeline.events(event.host, event.build))
        started = time.monotonic()
        backoff = self.delivery.first_backoff
        attempt = 1
        while True:
            outcome, retry = self._post(body)
            elapsed = time.monotonic() - started
            last = not retry or elapsed + backoff > self.delivery.retry_for
            note = "" if not retry else "; giving up" if last else f"; retry in {backoff:g} s"
            self.timeline.record(
                event.host,
                event.build,
                WEBHOOK_EVENT,
                f"{event.kind} -> {self.name_shown}: {outcome} (attempt {attempt}){note}",
            )
            if retry and last:
                log.warning(
                    "webhook %s: %s of %s not delivered after %d attempts: %s",
                    self.name_shown,
                    event.kind,
                    event.host,
                    attempt,
                    outcome,
                )
            if last or self._stopping.wait(backoff):
                return
            backoff = min(backoff * 2, self.delivery.max_backoff)
            attempt += 1

    def _post(self, body: bytes) -> tuple[str, bool]:
        """POST once: what happened, and whether trying again may help."""
        request = urllib.request.Request(
            self.hook.url,
            data=body,
            method="POST",
            headers={
                "Content-Type": "application/json",
                "User-Agent": "photonkick-webhook",
                SIGNATURE_HEADER: sign(self.hook.secret.reveal(), body),
            },
        )
        try:
            with urllib.request.urlopen(request, timeout=self.delivery.attempt_timeout) as resp:
                return f"HTTP {resp.status}", False
        except urllib.error.HTTPError as exc:
            # Client errors other than timeout and rate limit will not change on retry.
            return f"HTTP {exc.code}", exc.code >= 500 or exc.code in (408, 429)
        except (OSError, ValueError) as exc:
            reason = getattr(exc, "reason", None) or exc
            return f"no answer: {reason}", True
