"""The HTTP front end (the only Flask user): kickstarts, boot files, callbacks, API, dashboard."""

from __future__ import annotations

import ipaddress
import json
import logging
import time
from pathlib import Path
from typing import Any

from flask import Flask, Response, abort, jsonify, request, send_file
from werkzeug.http import parse_range_header

from photonkick.kickstarts.spec import Host
from photonkick.kickstarts.tokens import same_token
from photonkick.server.boot_service import BootService
from photonkick.server.host_status import HostStatus, host_status
from photonkick.server.install_log import BadLogRequest, InstallLogs, parse_query
from photonkick.server.log_safety import protect_logs
from photonkick.server.secrets_gate import SecretsGate
from photonkick.server.timeline import FAILED, PHASES, StoreUnavailable
from photonkick.templates import render

access_log = logging.getLogger("photonkick.server.http")
MAX_BODY = 256 * 1024
"""The largest request body taken (a callback's failure reason and log tail)."""
RETRY_AFTER = 5
"""Seconds a client is asked to wait before it retries what could not be stored."""


def create_app(service: BootService, admin_token: str) -> Flask:
    """The Flask app for one boot service.

    Installs ``protect_logs`` for the whole process: every log line, Flask's exception log
    included, has tokens redacted and the control characters a client sent escaped.
    """
    protect_logs()
    # The instance folder is unused; naming it avoids Flask probing the package layout.
    app = Flask(__name__, instance_path=str(service.state.path.absolute()))
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY
    secrets = SecretsGate(service)
    app.extensions["photonkick.secrets"] = secrets
    logs = InstallLogs(service)
    app.extensions["photonkick.install_log"] = logs

    def client() -> str:
        return request.remote_addr or ""

    def status_of(found: Host) -> HostStatus:
        build = service.build(found.name)
        counted = service.packages.progress(found.name, build) if service.packages else None
        return host_status(service.timeline, found, build, counted)

    def statuses() -> list[HostStatus]:
        return [status_of(h) for h in service.inventory.hosts]

    @app.before_request
    def ignore_unusable_range() -> None:
        # RFC 9110 §14.2: a Range that does not parse, is not in bytes or asks for several
        # ranges is ignored and the whole file sent; only a valid, unsatisfiable one gets 416.
        header = request.environ.get("HTTP_RANGE")
        if header is not None and not _single_byte_range(header):
            del request.environ["HTTP_RANGE"]

    @app.after_request
    def log_request(response: Response) -> Response:
        # The path's token is redacted by protect_logs, like in every other record.
        access_log.info("%s %s %s %s", client(), request.method, request.path, response.status_code)
        return response

    def send(found: bytes | Path | None, mimetype: str = "application/octet-stream") -> Any:
        if found is None:
            abort(404)
        if isinstance(found, Path):
            try:
                return send_file(found, mimetype=mimetype, conditional=True, etag=True)
            except OSError:  # removed or made unreadable since it was found
                abort(404)
        return Response(found, mimetype=mimetype)

    @app.errorhandler(StoreUnavailable)
    def not_stored(exc: StoreUnavailable) -> Any:
        # Nothing is acknowledged that is not on disk: the client (curl --retry) tries again.
        error = "the state database is unavailable"
        if request.method == "POST":
            response = jsonify({"ok": False, "error": f"not stored: {error}"})
        elif request.path.startswith("/api/"):
            response = jsonify({"ok": False, "error": error})
        else:  # the dashboard, a host's page, metrics, a kickstart
            response = Response(f"503: {error}; try again shortly\n", mimetype="text/plain")
        response.status_code = 503
        response.headers["Retry-After"] = str(RETRY_AFTER)
        return response

    @app.get("/ks/<name>/<token>.json")
    def kickstart(name: str, token: str) -> Any:
        return send(service.kickstart(name, token, client()), "application/json")

    @app.get("/ks/<name>/<token>/secrets")
    def host_secrets(name: str, token: str) -> Any:
        answer = secrets.fetch(name, token, client())
        return Response(
            answer.body, answer.status, mimetype="text/plain", headers={"Cache-Control": "no-store"}
        )

    @app.post("/cb/<name>/<token>/log")
    def install_log(name: str, token: str) -> Any:
        # The callback rules: closed after ready, token checked before the body is read.
        if secrets.callbacks_closed(name, token):
            abort(403)
        if not logs.allowed(name, token):
            abort(404)
        try:
            boot, offset = parse_query(request.args.get("boot"), request.args.get("offset"))
        except BadLogRequest:
            abort(400)
        logs.append(name, boot, offset, request.get_data(cache=False), client())
        return jsonify({"ok": True})

    @app.post("/cb/<name>/<token>/<event>")
    def callback(name: str, token: str, event: str) -> Any:
        if secrets.callbacks_closed(name, token):
            if event == "ready":  # a retried ``ready`` whose answer was lost: already stored
                return jsonify({"ok": True, "replay": True})
            abort(403)
        # The token is checked before the body is read: a forged one never reaches a parser.
        if not service.callback_allowed(name, token, event, client()):
            abort(404)
        fields = _callback_fields()
        if fields is None:
            abort(400)
        reason, log_tail = fields
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

    def host_detail(name: str) -> tuple[HostStatus, dict[str, Any]]:
        """One host's status and its API form with the log tail; 404 for an unknown host."""
        found = service.host(name)
        if found is None:
            abort(404)
        status = status_of(found)
        tail = logs.tail(name, status.build)
        return status, {**status.to_json(with_events=True), "log_tail": tail}

    @app.get("/api/v1/hosts/<name>")
    def host(name: str) -> Any:
        return jsonify(host_detail(name)[1])

    @app.post("/api/v1/hosts/<name>/rearm")
    def rearm(name: str) -> Any:
        if not _is_admin(admin_token):
            abort(403)
        if not service.rearm(name):
            abort(404)
        secrets.rearmed(name)
        return jsonify({"ok": True, "host": name, "rearmed": True})

    @app.get("/hosts/<name>")
    def host_page(name: str) -> Any:
        status, detail = host_detail(name)
        events = [
            {**e, "time": time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(e["time"]))}
            for e in detail["events"]
        ]
        failures = [e.detail for e in status.events if e.kind == FAILED]
        page = render(
            "server/host.html.j2",
            None,
            host=status,
            events=events,
            failure=failures[-1] if status.failed and failures else status.failed,
            log_tail=detail["log_tail"],
            now=time.strftime("%Y-%m-%d %H:%M:%S"),
        )
        return Response(page, mimetype="text/html")

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


def _callback_fields() -> tuple[str, str] | None:
    """A callback's ``reason`` and ``log`` from its form or JSON object; None for other bodies."""
    data: Any = request.form
    if not data and request.is_json:
        try:
            data = json.loads(request.get_data(cache=False) or b"{}")
        except (ValueError, RecursionError):
            return None
    if not isinstance(data, dict):
        return None
    reason, log_tail = data.get("reason", ""), data.get("log", "")
    if not isinstance(reason, str) or not isinstance(log_tail, str):
        return None
    return reason, log_tail


def _single_byte_range(header: str) -> bool:
    parsed = parse_range_header(header)
    return parsed is not None and parsed.units == "bytes" and len(parsed.ranges) == 1


def _is_admin(admin_token: str) -> bool:
    header = request.headers.get("Authorization", "")
    if header.startswith("Bearer ") and same_token(admin_token, header[7:]):
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
