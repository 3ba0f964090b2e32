"""The HTTP front end (the only Flask user): kickstarts, boot files, callbacks, API, dashboard."""

from __future__ import annotations

import hmac
import ipaddress
import logging
import re
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, request, send_file

from photonkick.server.secrets_gate import SecretsGate
from photonkick.server.service import BootService
from photonkick.server.status import HostStatus, host_status
from photonkick.server.timeline import PHASES
from photonkick.templates import render

access_log = logging.getLogger("photonkick.server.http")
_TOKEN_IN_PATH = re.compile(r"^/(ks|cb)/([^/]+)/[^/.]+")


def redact_path(path: str) -> str:
    """A request path fit for logs: tokens replaced."""
    return _TOKEN_IN_PATH.sub(r"/\1/\2/<token>", path)


def create_app(service: BootService, admin_token: str) -> Flask:
    """The Flask app for one boot service."""
    # The instance folder is unused; naming it avoids Flask probing the package layout.
    app = Flask(__name__, instance_path=str(service.state.path.absolute()))
    app.config["MAX_CONTENT_LENGTH"] = 256 * 1024
    secrets = SecretsGate(service)
    app.extensions["photonkick.secrets"] = secrets

    def client() -> str:
        return request.remote_addr or ""

    def statuses() -> list[HostStatus]:
        return [
            host_status(service.timeline, h, service.build(h.name)) for h in service.inventory.hosts
        ]

    @app.after_request
    def log_request(response: Response) -> Response:
        access_log.info(
            "%s %s %s %s", client(), request.method, redact_path(request.path), response.status_code
        )
        return response

    def send(found: bytes | Path | None, mimetype: str = "application/octet-stream") -> Any:
        if found is None:
            abort(404)
        if isinstance(found, Path):
            return send_file(found, mimetype=mimetype, conditional=True, etag=True)
        return Response(found, mimetype=mimetype)

    @app.get("/ks/<name>/<token>.json")
    def kickstart(name: str, token: str) -> Any:
        return send(service.kickstart(name, token, client()), "application/json")

    @app.get("/ks/<name>/<token>/secrets")
    def host_secrets(name: str, token: str) -> Any:
        answer = secrets.fetch(name, token, client())
        return Response(
            answer.body, answer.status, mimetype="text/plain", headers={"Cache-Control": "no-store"}
        )

    @app.post("/cb/<name>/<token>/<event>")
    def callback(name: str, token: str, event: str) -> Any:
        if secrets.callbacks_closed(name, token):
            abort(403)
        data = request.form if request.form else (request.get_json(silent=True) or {})
        reason, log_tail = str(data.get("reason", "")), str(data.get("log", ""))
        if not service.callback(name, token, event, reason, log_tail, client()):
            abort(404)
        secrets.after_callback(name, event)
        return jsonify({"ok": True})

    @app.get("/ipxe/<path:name>")
    def ipxe(name: str) -> Any:
        return send(service.http_file(f"ipxe/{name}", client()), "text/plain")

    @app.get("/releases/<path:name>")
    def releases(name: str) -> Any:
        return send(service.http_file(f"releases/{name}", client()))

    @app.get("/api/v1/hosts")
    def hosts() -> Any:
        return jsonify({"hosts": [s.to_json() for s in statuses()]})

    @app.get("/api/v1/hosts/<name>")
    def host(name: str) -> Any:
        found = service.host(name)
        if found is None:
            abort(404)
        status = host_status(service.timeline, found, service.build(name))
        return jsonify(status.to_json(with_events=True))

    @app.post("/api/v1/hosts/<name>/rearm")
    def rearm(name: str) -> Any:
        if not _is_admin(admin_token):
            abort(403)
        if not service.rearm(name):
            abort(404)
        secrets.rearmed(name)
        return jsonify({"ok": True, "host": name, "rearmed": True})

    @app.get("/metrics")
    def metrics() -> Any:
        return Response(prometheus_text(statuses()), mimetype="text/plain; version=0.0.4")

    @app.get("/")
    def dashboard() -> Any:
        page = render(
            "server/dashboard.html.j2",
            None,
            hosts=statuses(),
            phases=PHASES,
            now=time.strftime("%Y-%m-%d %H:%M:%S"),
            scale=_scale(statuses()),
        )
        return Response(page, mimetype="text/html")

    return app


def _is_admin(admin_token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and hmac.compare_digest(header[7:], admin_token):
        return True
    try:
        return ipaddress.ip_address(request.remote_addr or "").is_loopback
    except ValueError:
        return False


def _scale(statuses: list[HostStatus]) -> float:
    longest = max((max(s.offsets.values(), default=0.0) for s in statuses), default=0.0)
    return max(longest, 1.0)


def prometheus_text(statuses: list[HostStatus]) -> str:
    """Metrics in the Prometheus text format."""
    lines = [
        "# HELP photonkick_host_phase Current phase of each host (1 for the phase it is in).",
        "# TYPE photonkick_host_phase gauge",
    ]
    for s in statuses:
        lines.append(f'photonkick_host_phase{{host="{s.name}",phase="{s.phase}"}} 1')
    lines += [
        "# HELP photonkick_host_failed 1 when the host's current build reported a failure.",
        "# TYPE photonkick_host_failed gauge",
    ]
    lines += [
        f'photonkick_host_failed{{host="{s.name}"}} {int(s.failed is not None)}' for s in statuses
    ]
    lines += [
        "# HELP photonkick_time_to_ready_seconds Ready minus VM created or first boot fetch.",
        "# TYPE photonkick_time_to_ready_seconds gauge",
    ]
    lines += [
        f'photonkick_time_to_ready_seconds{{host="{s.name}"}} {s.time_to_ready:.3f}'
        for s in statuses
        if s.time_to_ready is not None
    ]
    lines += [
        "# HELP photonkick_hosts_ready Hosts whose current build is ready.",
        "# TYPE photonkick_hosts_ready gauge",
        f"photonkick_hosts_ready {sum(s.phase == 'ready' for s in statuses)}",
    ]
    return "\n".join(lines) + "\n"
