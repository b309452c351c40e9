"""The data team's page (R2, R8, R9, R10, R12): where it shares, how much room is left, what X
deleted that its entity holds, its tokens.

Thin, like pages.py and account.py: `dashboard.overview` measures the entities, `AuditLog`
reads the team member's own shares, `noticeboard.for_entity` the open deletion notices of
ID shares to the member's own entity (R9: the nearest deadlines first, a bounded read; their
files come from the notices blueprint's one download route; compliance acknowledges them),
`Users` creates and revokes tokens and audits each (R12).
Sign-in lands a data user here (pages.index); every change is a POST with a CSRF token, and a
data user only ever sees and revokes their own tokens.
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, redirect, render_template, url_for
from markupsafe import Markup

from gatekeeper.channels.web.compliance import figure, percent, when
from gatekeeper.channels.web.pages import gate, me, role_required
from gatekeeper.domain import dashboard, noticeboard
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.rules import roles
from gatekeeper.rules.errors import GatekeeperError

bp = Blueprint("home", __name__)

RECENT_SHARES = 20
# Audit records read (newest first) to find them: a member's log also holds sign-ins and
# token changes, and a page for people must not read a whole history to fill one table.
SCAN = 500


def _recent_shares(name: str) -> list[dict[str, str]]:
    records, _ = AuditLog(gate().client, gate().ledger).page(AuditFilter(user=name), size=SCAN)
    return [r for r in records
            if r.get("actor") == name and r.get("kind", "").startswith("share.")][:RECENT_SHARES]


def _data_page(new_token: str | None = None, error: str | None = None,
               status: int = 200) -> Any:
    g = gate()
    ov = dashboard.overview(g, users=False, history=False)
    # Only entities that attested to X's terms can receive a share (R8); the rest would
    # only be refused, so they are not offered here.
    rows = sorted((r for r in ov.entities if r.entity.terms is not None), key=lambda r: r.name)
    style = Markup('<link rel="stylesheet" href="{}">').format(
        url_for("static", filename="compliance.css"))
    notices = noticeboard.for_entity(g, me().entity, g.clock.now_ms())
    return render_template(
        "data.html", rows=rows, shares=_recent_shares(me().name), notices=notices,
        my_entity=me().entity,
        tokens=g.users.list_tokens(me().name), new_token=new_token, error=error,
        window=ov.post_window, figure=figure, percent=percent, when=when, style=style,
    ), status


@bp.get("/data")
@role_required(*roles.MAY_SHARE_IDS)
def data_page() -> Any:
    return _data_page()


@bp.post("/data/tokens")
@role_required(*roles.MAY_SHARE_IDS)
def create_token() -> Any:
    # Rendered, not redirected: the token is shown this once and never stored in clear (R12).
    token = gate().users.create_token(me().name, actor=me().name, channel="web")
    return _data_page(new_token=token)


@bp.post("/data/tokens/<token_id>/revoke")
@role_required(*roles.MAY_SHARE_IDS)
def revoke_token(token_id: str) -> Any:
    try:
        # owner=: a data user revokes their own tokens only; another's id is "no such token".
        gate().users.revoke_token(token_id, actor=me().name, channel="web", owner=me().name)
    except GatekeeperError as exc:
        if exc.status >= 500:
            raise
        return _data_page(error=exc.message, status=exc.status)
    return redirect(url_for("home.data_page"))
