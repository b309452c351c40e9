"""Credentials on the web: a user changes their own password; an admin manages users and tokens.

Thin, like pages.py: `gatekeeper.domain.users.Users` changes and audits (R12); these views
turn forms into calls. Every change is a POST with a CSRF token; every admin view needs the
admin role.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, request, url_for
from flask_login import login_required, login_user

from gatekeeper.channels.web.pages import WebUser, gate, me, role_required
from gatekeeper.domain import denials
from gatekeeper.rules import roles
from gatekeeper.rules.errors import BadInput, GatekeeperError, Unauthorized

bp = Blueprint("account", __name__)


@bp.route("/account", methods=["GET", "POST"])
@login_required
def account() -> Any:
    error = done = None
    status = 200
    if request.method == "POST":
        form = request.form
        try:
            if form.get("new_password", "") != form.get("confirm", ""):
                raise BadInput("the new password and its confirmation differ", rule="R12")
            # The current password again: a session left open is not enough to take over.
            # Checked behind the sign-in lockout, and a wrong one is a denial (R11, R12).
            gate().users.sign_in(me().name, form.get("password", ""))
            user = gate().users.set_password(me().name, form.get("new_password", ""),
                                             actor=me().name, channel="web")
        except Unauthorized as exc:
            denials.answered(exc, kind="access.password")
            error, status = exc.message, exc.status
        except BadInput as exc:
            error, status = exc.message, exc.status
        else:
            # Every other session of this user has ended; this browser stays signed in.
            login_user(WebUser(user))
            done = "Password changed; your other sessions have been signed out."
    return render_template("account.html", error=error, done=done), status


def _admin_page(error: str | None = None, done: str | None = None, status: int = 200) -> Any:
    g = gate()
    return render_template("admin_users.html", users=g.users.list_users(),
                           tokens=g.users.list_tokens(), roles=roles.ROLES, error=error,
                           done=done), status


@bp.get("/admin/users")
@role_required(*roles.MAY_ADMINISTER)
def admin_users() -> Any:
    return _admin_page()


@bp.post("/admin/users/<name>")
@role_required(*roles.MAY_ADMINISTER)
def admin_change_user(name: str) -> Any:
    users, action = gate().users, request.form.get("action", "")
    try:
        if action == "disable":
            users.set_disabled(name, True, actor=me().name, channel="web")
        elif action == "enable":
            users.set_disabled(name, False, actor=me().name, channel="web")
        elif action == "role":
            users.set_role(name, request.form.get("role", ""), actor=me().name, channel="web")
        else:
            raise BadInput(f"unknown action {action!r}", field="action")
    except GatekeeperError as exc:
        if exc.status >= 500:
            raise
        return _admin_page(error=exc.message, status=exc.status)
    return redirect(url_for("account.admin_users"))


@bp.post("/admin/tokens/<token_id>/revoke")
@role_required(*roles.MAY_ADMINISTER)
def admin_revoke_token(token_id: str) -> Any:
    try:
        gate().users.revoke_token(token_id, actor=me().name, channel="web")
    except GatekeeperError as exc:
        if exc.status >= 500:
            raise
        return _admin_page(error=exc.message, status=exc.status)
    return redirect(url_for("account.admin_users"))
