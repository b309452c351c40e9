"""Who is signed in, and for how long (R12): Flask-Login over the users of the app's Gate.

A session lives only as long as its user's session generation and while the user is enabled,
and ends after ``server.session_idle_minutes`` idle or ``server.session_max_hours`` in all
(``GATEKEEPER_SESSION_IDLE_SECONDS`` / ``GATEKEEPER_SESSION_MAX_SECONDS`` in the app config).
"""

from __future__ import annotations

import secrets
import time
from typing import Any

from flask import Flask, current_app, session
from flask_login import LoginManager, logout_user, user_logged_in

from gatekeeper.channels.web.extension import current_gate
from gatekeeper.channels.web.pages import WebUser
from gatekeeper.rules.errors import NotFound

logins = LoginManager()
logins.login_view = "pages.login"
logins.session_protection = "strong"

_KEYS = ("gk_for", "gk_start", "gk_seen")


def init_app(app: Flask) -> None:
    logins.init_app(app)
    user_logged_in.connect(session_started, app)
    app.before_request(session_lifetime)


@logins.user_loader
def load_user(user_id: str) -> WebUser | None:
    # R12: an older cookie (kept across a sign-out) opens nothing.
    name, _, generation = user_id.partition("|")
    try:
        user = current_gate().users.get(name)
    except NotFound:
        return None
    if user.disabled or not secrets.compare_digest(generation, user.session):
        return None
    return WebUser(user)


def session_started(_app: Flask, user: WebUser, **_: Any) -> None:
    # Re-signing in the same session (after accepting the terms) keeps its start time.
    if session.get("gk_for") != user.get_id():
        session["gk_for"] = user.get_id()
        session["gk_start"] = session["gk_seen"] = _now()


def session_lifetime() -> None:
    """Idle and absolute lifetimes. The times are in the signed cookie; an old copy only
    looks older, never younger."""
    if "_user_id" not in session:
        return
    now = _now()
    start, seen = session.get("gk_start", 0), session.get("gk_seen", 0)
    if (now - start >= current_app.config["GATEKEEPER_SESSION_MAX_SECONDS"]
            or now - seen >= current_app.config["GATEKEEPER_SESSION_IDLE_SECONDS"]):
        logout_user()
        for key in _KEYS:
            session.pop(key, None)
    elif now - seen >= 60:  # rewrite the cookie at most once a minute
        session["gk_seen"] = now


def _now() -> int:
    """Seconds since the epoch (a function, so tests can move the clock of sessions only)."""
    return int(time.time())
