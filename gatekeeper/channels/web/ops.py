"""What operators and their monitoring read: ``/healthz`` and ``/metrics``.

`init_app` gives the app its own Prometheus registry (`Metrics`), whose per-entity gauges read
the store at each scrape, never before.
"""

from __future__ import annotations

import ipaddress

from flask import Blueprint, Flask, Response, current_app, jsonify, request

from gatekeeper.channels.web import api
from gatekeeper.channels.web.extension import current_gate, extension
from gatekeeper.channels.web.metrics import Metrics
from gatekeeper.domain import dashboard
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import Forbidden, StoreUnavailable
from gatekeeper.rules.roles import MAY_READ_METRICS, require_role

METRICS = "gatekeeper.metrics"

bp = Blueprint("ops", __name__)


def init_app(app: Flask) -> None:
    """One metrics registry per app (tests and several apps never share counts)."""
    metrics = Metrics()
    ext = extension(app)
    metrics.watch_entities(lambda: dashboard.entity_gauges(ext.gate))
    app.extensions[METRICS] = metrics
    app.register_blueprint(bp)


def metrics() -> Metrics:
    """The current app's metrics."""
    m: Metrics = current_app.extensions[METRICS]
    return m


@bp.get("/healthz")
def healthz() -> Response:
    try:
        with failing_closed():
            current_gate().client.ping()
    except StoreUnavailable as exc:
        resp = jsonify({"status": "unavailable", "message": exc.message})
        resp.status_code = 503
        return resp
    return jsonify({"status": "ok"})


@bp.get("/metrics")
def read_metrics() -> Response:
    # Every entity's usage is in there: server.metrics says who may read it.
    access = current_app.config["GATEKEEPER_METRICS"]
    if access == "token":
        require_role(api.bearer(), MAY_READ_METRICS, "reading /metrics")
    elif access == "loopback" and not _loopback(request.remote_addr):
        raise Forbidden("/metrics answers only on loopback (server.metrics = "
                        '"loopback"); scrape it from this host or set it to "token"',
                        rule="R12")
    m = metrics()
    return Response(m.render(), mimetype=m.content_type)


def _loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False
