"""`/trace`: the compliance officer's "who received this post?" (issue 15 item 4).

Thin: `gatekeeper.domain.trace` reads the manifests; this page asks for an ID and shows every
delivery that held it — when, to whom, through which channel, which share or export, which
file. Compliance officers and administrators only (`roles.MAY_TRACE`, R12). A GET form: it
changes nothing, so it carries no CSRF token and is not audited (as reading `/audit` is not).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, render_template, request, url_for
from markupsafe import Markup

from gatekeeper.channels.web.pages import gate, role_required
from gatekeeper.domain import trace as tracing
from gatekeeper.rules import roles
from gatekeeper.rules.errors import BadInput

bp = Blueprint("trace", __name__)


@bp.get("/trace")
@role_required(*roles.MAY_TRACE)
def view() -> Any:
    ident = request.args.get("id", "").strip()
    kind = "users" if request.args.get("kind") == "users" else "posts"
    hits: list[tracing.TraceHit] | None = None
    error = None
    if ident:
        try:
            hits = tracing.trace(gate(), ident, kind=kind)
        except BadInput as exc:
            error = str(exc)
    style = Markup('<link rel="stylesheet" href="{}">').format(
        url_for("static", filename="compliance.css"))
    return render_template("trace.html", ident=ident, kind=kind, hits=hits, error=error,
                           style=style), 400 if error else 200
