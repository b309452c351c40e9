"""The Flask application: the API for scripts, the pages for people, health and metrics.

`create_app` is flaskr's factory: defaults, then the gatekeeper config (its TOML sections
mapped to Flask keys one by one), then the test override; then the extensions, each wired with
``init_app`` (the Gate, opened on first use; CSRF; sign-in; metrics), then the blueprints.
Building the app touches no store: the Gate is opened by the first request that needs it, and
migrations (`Ledger.upgrade`) run at start-up (`gatekeeper serve`) or by `gatekeeper store
upgrade`, never on a request. `gatekeeper serve` runs the app under waitress.
"""

from __future__ import annotations

import errno
import os
import secrets
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from flask import Flask, Response, current_app, render_template_string, request
from flask_wtf.csrf import CSRFError, CSRFProtect
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from gatekeeper import config as config_mod
from gatekeeper.channels.web import api, background, heavy, ops, pages, sessions, tracepage
from gatekeeper.channels.web import auditlog as auditlog_pages
from gatekeeper.channels.web import compliance as compliance_pages
from gatekeeper.channels.web import home as home_pages
from gatekeeper.channels.web import notices as notice_pages
from gatekeeper.channels.web.account import bp as account_bp
from gatekeeper.channels.web.extension import GateExtension
from gatekeeper.channels.web.reports import report_bp
from gatekeeper.config import Config, ServerConfig
from gatekeeper.domain import denials
from gatekeeper.domain.gate import Gate
from gatekeeper.rules.errors import (
    Forbidden,
    GatekeeperError,
    InsufficientStorage,
    QuotaExceeded,
    Unauthorized,
)

# The Flask settings no config file changes.
DEFAULTS: dict[str, Any] = {
    "SESSION_COOKIE_HTTPONLY": True,
    "SESSION_COOKIE_SAMESITE": "Strict",
    "REMEMBER_COOKIE_HTTPONLY": True,
    "WTF_CSRF_TIME_LIMIT": 3600,
}

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

csrf = CSRFProtect()
csrf.exempt(api.bp)  # the API authenticates each request with a token, not a cookie


def create_app(gate: Gate | None = None, test_config: Mapping[str, Any] | None = None, *,
               config: Config | None = None) -> Flask:
    """The app over `gate` (a test's or `gatekeeper serve`'s), else over a Gate opened on
    first use from `config` (default: the config file found by `config.load`)."""
    if config is None:
        config = gate.config if gate is not None else config_mod.load()
    app = Flask(__name__)
    app.config.from_mapping(DEFAULTS)
    app.config.from_mapping(flask_settings(config.server))
    if test_config:
        app.config.from_mapping(test_config)
    if proxies := app.config["GATEKEEPER_TRUSTED_PROXIES"]:
        # Believe X-Forwarded-For/-Proto/-Host from exactly that many proxies (the scheme
        # then reads https, so Flask-WTF's HTTPS referrer check applies); never by default.
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=proxies, x_proto=proxies,  # type: ignore[method-assign]
                                x_host=proxies)
    app.after_request(security_headers)
    # Before CSRF protection, so a token at the form is refused as R5 first.
    app.before_request(no_tokens_at_the_export_form)

    GateExtension(config, gate).init_app(app)
    csrf.init_app(app)
    sessions.init_app(app)
    ops.init_app(app)
    heavy.init_app(app, config.server)
    background.init_app(app)  # notices scans and R10 checks off the request path
    register_error_handlers(app)
    for bp in (api.bp, pages.bp, compliance_pages.bp, auditlog_pages.bp, report_bp, account_bp,
               home_pages.bp, tracepage.bp, notice_pages.bp):
        app.register_blueprint(bp)
    return app


def flask_settings(server: ServerConfig) -> dict[str, Any]:
    """The config's [server] section as Flask settings (`from_mapping` keeps UPPERCASE keys
    only, so each is named here)."""
    # Cookie flags follow the address people use, not the bind address: `serve --host 0.0.0.0`
    # behind a TLS proxy is reached over https, and a bare http URL must not pretend to be.
    https = urlsplit(server.public_url).scheme == "https"
    return {
        # R12: the secret comes from the environment; without it sessions last one process.
        "SECRET_KEY": os.environ.get(server.secret_key_env) or secrets.token_hex(32),
        "MAX_CONTENT_LENGTH": server.max_upload_mb * 2**20,
        "SESSION_COOKIE_SECURE": https,
        "REMEMBER_COOKIE_SECURE": https,
        "PREFERRED_URL_SCHEME": "https" if https else "http",
        "GATEKEEPER_SESSION_IDLE_SECONDS": server.session_idle_minutes * 60,
        "GATEKEEPER_SESSION_MAX_SECONDS": server.session_max_hours * 3600,
        "GATEKEEPER_METRICS": server.metrics,
        "GATEKEEPER_TRUSTED_PROXIES": server.trusted_proxies,
    }


def security_headers(resp: Response) -> Response:
    for name, value in SECURITY_HEADERS.items():
        resp.headers.setdefault(name, value)
    if current_app.config["PREFERRED_URL_SCHEME"] == "https":
        resp.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
    return resp


def no_tokens_at_the_export_form() -> None:
    # R5: the export form is for a person with a session; a token there is automation.
    if request.path.startswith("/export") and "Authorization" in request.headers:
        api.refuse_automated_hydrated()


def register_error_handlers(app: Flask) -> None:
    """Every refusal answered the same way: JSON for the API and scripts, a page for people."""
    app.register_error_handler(GatekeeperError, gatekeeper_error)
    app.register_error_handler(OSError, disk_full)
    app.register_error_handler(HTTPException, http_error)


def _wants_json() -> bool:
    return request.path.startswith("/api/") or "Authorization" in request.headers


def gatekeeper_error(exc: GatekeeperError) -> Any:
    if isinstance(exc, QuotaExceeded | Forbidden) and request.path.startswith("/api/"):
        outcome = "refused" if isinstance(exc, QuotaExceeded) else "denied"
        ops.metrics().decision("api", outcome, exc.rule)
    if exc.status in (401, 403):
        denials.answered(exc)  # R11: every denial is a record (once; see denials.py)
    if _wants_json():
        return api.error_response(exc)
    retry = exc.details.get("retry_after")  # a busy server or a quota says when, for people too
    return render_template_string(ERROR_PAGE, code=exc.status, message=exc.message), \
        exc.status, {} if retry is None else {"Retry-After": str(retry)}


def disk_full(exc: OSError) -> Any:
    # A full disk under a spool file or a temporary copy: a clear 507, not a 500. The
    # writers remove their temporary files on the way out.
    if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
        raise exc
    return gatekeeper_error(InsufficientStorage(
        f"the server cannot write its temporary files ({exc.strerror}); nothing was "
        "delivered — try again later"))


def http_error(exc: HTTPException) -> Any:
    code = exc.code or 500
    message = exc.description or exc.name
    if isinstance(exc, CSRFError):
        message = f"The form was not accepted ({exc.description}); reload the page."
        denials.answered(Forbidden(message, rule="R12"), kind="access.csrf")
    elif code in (401, 403):
        denials.answered((Unauthorized if code == 401 else Forbidden)(message, rule="R12"))
    # The exception's own headers (405's Allow, RFC 9110: every 405 names the methods the
    # URL takes) go on whichever answer replaces its default page.
    headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
    if _wants_json():
        resp = api.error_json({"error": HTTP_CODES.get(code, "http_error"), "rule": None,
                               "message": message}, code)
        resp.headers.extend(headers)
        return resp
    return render_template_string(ERROR_PAGE, code=code, message=message), code, headers


ERROR_PAGE = """{% extends "base.html" %}{% block main %}
<div class="card"><h1>{{ code }}</h1><p class="error" role="alert">{{ message }}</p>
<p><a href="/">Back</a></p></div>{% endblock %}"""
