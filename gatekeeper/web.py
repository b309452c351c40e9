"""The Flask application: the API for scripts, health and metrics, (later) the pages for people.

`create_app` follows the flaskr pattern: defaults, then the gatekeeper config, then the test
override, then blueprints. `gatekeeper serve` runs it under waitress in production mode.
"""

from __future__ import annotations

import errno
import os
import secrets
from typing import Any

from flask import Flask, Response, jsonify, render_template_string, request
from flask_login import LoginManager
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException

from gatekeeper import api, auditlog_pages, compliance_pages, dashboard, denials, pages
from gatekeeper.errors import (
    Forbidden,
    GatekeeperError,
    InsufficientStorage,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
    Unauthorized,
)
from gatekeeper.gate import Gate
from gatekeeper.metrics import Metrics
from gatekeeper.report_pages import report_bp
from gatekeeper.store import failing_closed

HTTP_CODES = {413: "too_large", 404: "not_found", 405: "method_not_allowed",
              415: "unsupported_media_type", 400: "bad_request"}


def create_app(gate: Gate | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app over one Gate (the library object the CLI uses too)."""
    gate = gate if gate is not None else Gate.open()
    app = Flask(__name__)
    server = gate.config.server
    loopback = server.host in ("127.0.0.1", "localhost", "::1")
    app.config.update(
        # R12: the secret comes from the environment; without it sessions last one process.
        SECRET_KEY=os.environ.get(server.secret_key_env) or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=server.max_upload_mb * 2**20,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        # Served beyond loopback, cookies travel over HTTPS only (put TLS in front).
        SESSION_COOKIE_SECURE=not loopback,
        REMEMBER_COOKIE_SECURE=not loopback,
        REMEMBER_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=3600,
    )
    if test_config:
        app.config.update(test_config)
    app.extensions["gatekeeper"] = gate
    app.extensions["gatekeeper.metrics"] = Metrics()
    app.extensions["gatekeeper.metrics"].watch_entities(lambda: dashboard.entity_gauges(gate))

    # Registered before CSRF protection, so a token at the form is refused as R5 first.
    @app.before_request
    def no_tokens_at_the_export_form() -> None:
        # R5: the export form is for a person with a session; a token there is automation.
        if request.path.startswith("/export") and "Authorization" in request.headers:
            api.refuse_automated_hydrated()

    csrf = CSRFProtect(app)
    csrf.exempt(api.bp)  # the API authenticates each request with a token, not a cookie
    logins = LoginManager(app)
    logins.login_view = "pages.login"
    logins.session_protection = "strong"

    @logins.user_loader
    def load_user(name: str) -> pages.WebUser | None:
        try:
            return pages.WebUser(gate.users.get(name))
        except NotFound:
            return None

    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(compliance_pages.bp)
    app.register_blueprint(auditlog_pages.bp)
    app.register_blueprint(report_bp)

    def wants_json() -> bool:
        return request.path.startswith("/api/") or "Authorization" in request.headers

    @app.errorhandler(GatekeeperError)
    def gatekeeper_error(exc: GatekeeperError) -> Any:
        if isinstance(exc, QuotaExceeded | Forbidden) and request.path.startswith("/api/"):
            outcome = "refused" if isinstance(exc, QuotaExceeded) else "denied"
            app.extensions["gatekeeper.metrics"].decision("api", outcome, exc.rule)
        if exc.status in (401, 403):
            denials.answered(exc)  # R11: every denial is a record (once; see denials.py)
        if wants_json():
            return api.error_response(exc)
        return render_template_string(ERROR_PAGE, code=exc.status, message=exc.message), \
            exc.status

    @app.errorhandler(OSError)
    def disk_full(exc: OSError) -> Any:
        # A full disk under a spool file or a temporary copy: a clear 507, not a 500. The
        # writers remove their temporary files on the way out.
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise exc
        return gatekeeper_error(InsufficientStorage(
            f"the server cannot write its temporary files ({exc.strerror}); nothing was "
            "delivered — try again later"))

    @app.errorhandler(HTTPException)
    def http_error(exc: HTTPException) -> Any:
        code = exc.code or 500
        message = exc.description
        if isinstance(exc, CSRFError):
            message = f"The form was not accepted ({exc.description}); reload the page."
            denials.answered(Forbidden(message, rule="R12"), kind="access.csrf")
        elif code in (401, 403):
            denials.answered((Unauthorized if code == 401 else Forbidden)(message, rule="R12"))
        if wants_json():
            resp = jsonify({"error": HTTP_CODES.get(code, "http_error"), "rule": None,
                            "message": message})
            resp.status_code = code
            return resp
        return render_template_string(ERROR_PAGE, code=code, message=message), code

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

    return app


ERROR_PAGE = """{% extends "base.html" %}{% block main %}
<div class="card"><h1>{{ code }}</h1><p class="error" role="alert">{{ message }}</p>
<p><a href="/">Back</a></p></div>{% endblock %}"""
