"""The Flask application: the API for scripts, health and metrics, (later) the pages for people.

`create_app` follows the flaskr pattern: defaults, then the gatekeeper config, then the test
override, then blueprints. `gatekeeper serve` runs it under waitress in production mode.
"""

from __future__ import annotations

import os
import secrets
from typing import Any

from flask import Flask, Response, jsonify, request
from werkzeug.exceptions import HTTPException

from gatekeeper import api
from gatekeeper.errors import GatekeeperError, StoreUnavailable
from gatekeeper.gate import Gate
from gatekeeper.metrics import Metrics
from gatekeeper.store import failing_closed

HTTP_CODES = {413: "too_large", 404: "not_found", 405: "method_not_allowed",
              415: "unsupported_media_type", 400: "bad_request"}


def create_app(gate: Gate | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app over one Gate (the library object the CLI uses too)."""
    gate = gate if gate is not None else Gate.open()
    app = Flask(__name__)
    server = gate.config.server
    app.config.update(
        # R12: the secret comes from the environment; without it sessions last one process.
        SECRET_KEY=os.environ.get(server.secret_key_env) or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=server.max_upload_mb * 2**20,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        JSON_SORT_KEYS=False,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["gatekeeper"] = gate
    app.extensions["gatekeeper.metrics"] = Metrics()
    app.register_blueprint(api.bp)

    @app.before_request
    def no_tokens_at_the_export_form() -> None:
        # R5: the export form is for a person with a session; a token there is automation.
        if request.path.startswith("/export") and "Authorization" in request.headers:
            api.refuse_automated_hydrated()

    @app.errorhandler(GatekeeperError)
    def gatekeeper_error(exc: GatekeeperError) -> Response:
        return api.error_response(exc)

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Response:
        code = exc.code or 500
        resp = jsonify({"error": HTTP_CODES.get(code, "http_error"), "rule": None,
                        "message": exc.description})
        resp.status_code = code
        return resp

    @app.get("/healthz")
    def healthz() -> Response:
        try:
            with failing_closed():
                gate.client.ping()
        except StoreUnavailable as exc:
            resp = jsonify({"status": "unavailable", "message": exc.message})
            resp.status_code = 503
            return resp
        return jsonify({"status": "ok"})

    @app.get("/metrics")
    def metrics() -> Response:
        m: Metrics = app.extensions["gatekeeper.metrics"]
        return Response(m.render(), mimetype=m.content_type)

    @app.get("/")
    def index() -> Response:
        return Response(INDEX, mimetype="text/html")

    return app


INDEX = """<!doctype html><html lang="en"><meta charset="utf-8"><title>gatekeeper</title>
<h1>gatekeeper</h1>
<p>Redistribution quotas for X API content (R1–R12).</p>
<ul>
<li><a href="/api/v1/openapi.json">API (OpenAPI document)</a> — ID shares, quotas, deletions</li>
<li><a href="/healthz">health</a> · <a href="/metrics">metrics</a></li>
</ul>
"""
