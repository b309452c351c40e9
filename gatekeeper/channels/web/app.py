"""The Flask application: the API for scripts, health and metrics, (later) the pages for people.

`create_app` follows the flaskr pattern: defaults, then the gatekeeper config, then the test
override, then blueprints. `gatekeeper serve` runs it under waitress in production mode.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import secrets
import time
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, jsonify, render_template_string, request, session
from flask_login import LoginManager, logout_user, user_logged_in
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from gatekeeper.channels.web import api, pages
from gatekeeper.channels.web import auditlog as auditlog_pages
from gatekeeper.channels.web import compliance as compliance_pages
from gatekeeper.channels.web.account import bp as account_bp
from gatekeeper.channels.web.metrics import Metrics
from gatekeeper.channels.web.reports import report_bp
from gatekeeper.domain import dashboard, denials
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import (
    Forbidden,
    GatekeeperError,
    InsufficientStorage,
    NotFound,
    QuotaExceeded,
    StoreUnavailable,
    Unauthorized,
)
from gatekeeper.rules.roles import MAY_READ_METRICS, require_role

# On every answer. No inline script or style anywhere (the styles live in static/), so the CSP
# needs no 'unsafe-inline'. Referrer-Policy is same-origin, not no-referrer: Flask-WTF refuses
# a form posted over HTTPS without a same-site Referer.
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; script-src 'self'; style-src 'self'; "
                               "img-src 'self' data:; object-src 'none'; base-uri 'none'; "
                               "form-action 'self'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
    "Cross-Origin-Opener-Policy": "same-origin",
}

HTTP_CODES = {413: "too_large", 404: "not_found", 405: "method_not_allowed",
              415: "unsupported_media_type", 400: "bad_request"}


def create_app(gate: Gate | None = None, test_config: dict[str, Any] | None = None) -> Flask:
    """Build the app over one Gate (the library object the CLI uses too)."""
    gate = gate if gate is not None else Gate.open()
    app = Flask(__name__)
    server = gate.config.server
    # Cookie flags follow the address people use, not the bind address: `serve --host 0.0.0.0`
    # behind a TLS proxy is reached over https, and a bare http URL must not pretend to be.
    https = urlsplit(server.public_url).scheme == "https"
    app.config.update(
        # R12: the secret comes from the environment; without it sessions last one process.
        SECRET_KEY=os.environ.get(server.secret_key_env) or secrets.token_hex(32),
        MAX_CONTENT_LENGTH=server.max_upload_mb * 2**20,
        SESSION_COOKIE_HTTPONLY=True,
        SESSION_COOKIE_SAMESITE="Strict",
        SESSION_COOKIE_SECURE=https,
        REMEMBER_COOKIE_SECURE=https,
        PREFERRED_URL_SCHEME="https" if https else "http",
        REMEMBER_COOKIE_HTTPONLY=True,
        WTF_CSRF_TIME_LIMIT=3600,
    )
    if test_config:
        app.config.update(test_config)
    if server.trusted_proxies:
        # Believe X-Forwarded-For/-Proto/-Host from exactly that many proxies (the scheme
        # then reads https, so Flask-WTF's HTTPS referrer check applies); never by default.
        n = server.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=n, x_proto=n, x_host=n)  # type: ignore[method-assign]

    @app.after_request
    def security_headers(resp: Response) -> Response:
        for name, value in SECURITY_HEADERS.items():
            resp.headers.setdefault(name, value)
        if https:
            resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
        return resp
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
    def load_user(user_id: str) -> pages.WebUser | None:
        # R12: a session lives only as long as its user's session generation and while the
        # user is enabled; an older cookie (kept across a sign-out) opens nothing.
        name, _, generation = user_id.partition("|")
        try:
            user = gate.users.get(name)
        except NotFound:
            return None
        if user.disabled or not secrets.compare_digest(generation, user.session):
            return None
        return pages.WebUser(user)

    idle_s = server.session_idle_minutes * 60
    max_s = server.session_max_hours * 3600

    @user_logged_in.connect_via(app)
    def session_started(_app: Flask, user: pages.WebUser, **_: Any) -> None:
        # Re-signing in the same session (after accepting the terms) keeps its start time.
        if session.get("gk_for") != user.get_id():
            session["gk_for"] = user.get_id()
            session["gk_start"] = session["gk_seen"] = _now()

    @app.before_request
    def session_lifetime() -> None:
        # Idle and absolute lifetimes (server.session_idle_minutes, session_max_hours). The
        # times are in the signed cookie; an old copy only looks older, never younger.
        if "_user_id" not in session:
            return
        now = _now()
        start, seen = session.get("gk_start", 0), session.get("gk_seen", 0)
        if now - start >= max_s or now - seen >= idle_s:
            logout_user()
            for key in ("gk_for", "gk_start", "gk_seen"):
                session.pop(key, None)
        elif now - seen >= 60:  # rewrite the cookie at most once a minute
            session["gk_seen"] = now

    app.register_blueprint(api.bp)
    app.register_blueprint(pages.bp)
    app.register_blueprint(compliance_pages.bp)
    app.register_blueprint(auditlog_pages.bp)
    app.register_blueprint(report_bp)
    app.register_blueprint(account_bp)

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
        # Every entity's usage is in there: server.metrics says who may read it.
        if server.metrics == "token":
            require_role(api.bearer(), MAY_READ_METRICS, "reading /metrics")
        elif server.metrics == "loopback" and not _loopback(request.remote_addr):
            raise Forbidden("/metrics answers only on loopback (server.metrics = "
                            '"loopback"); scrape it from this host or set it to "token"',
                            rule="R12")
        m: Metrics = app.extensions["gatekeeper.metrics"]
        return Response(m.render(), mimetype=m.content_type)

    return app


def _now() -> int:
    """Seconds since the epoch (a function, so tests can move the clock of sessions only)."""
    return int(time.time())


def _loopback(addr: str | None) -> bool:
    try:
        return addr is not None and ipaddress.ip_address(addr).is_loopback
    except ValueError:
        return False


ERROR_PAGE = """{% extends "base.html" %}{% block main %}
<div class="card"><h1>{{ code }}</h1><p class="error" role="alert">{{ message }}</p>
<p><a href="/">Back</a></p></div>{% endblock %}"""
