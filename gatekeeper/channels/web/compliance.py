"""The compliance officer's pages: the quota dashboard and one entity's facts (R2-R4, R6, R8-R11).

Thin like `pages`: `dashboard` gathers, `charts` draws, the `Entities` methods change facts and
audit each change in the same script (R11). Every form carries a CSRF token (CSRFProtect on the
app) and every view checks the role (R12): compliance officers and administrators only.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

from flask import Blueprint, flash, redirect, render_template, request, url_for
from markupsafe import Markup

from gatekeeper.channels.web import charts
from gatekeeper.channels.web.pages import gate, me, role_required
from gatekeeper.domain import auditrows, dashboard, dashpage, noticeboard
from gatekeeper.domain.entities import Link
from gatekeeper.domain.gate import record_permission as permit
from gatekeeper.domain.gate import set_parent
from gatekeeper.rules import policy, roles
from gatekeeper.rules.errors import GatekeeperError

bp = Blueprint("compliance", __name__)

PER_PAGE = 100
PARENT_CHOICES = 1000  # names offered as parents in the form; any other can still be typed
ALLOWED = roles.MAY_RECORD_COMPLIANCE


def _int_arg(name: str, default: int = 1) -> int:
    value = request.args.get(name, "")
    # isdigit() alone takes "²" and 5,000-digit strings, which int() refuses.
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else default


def when(ms: int | None) -> str:
    """Epoch ms as shown on the pages: 2026-11-24 15:04 UTC."""
    if ms is None:
        return "—"
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d %H:%M UTC")


def figure(n: int | None, none: str = "no limit") -> str:
    return none if n is None else f"{n:,}"


def percent(ratio: float | None) -> str:
    return "—" if ratio is None else f"{ratio:.0%}" if ratio < 10 else ">999%"


def _helpers() -> dict[str, Any]:
    # The look both pages add to base.html's, as a file: the CSP allows no inline style.
    style = Markup('<link rel="stylesheet" href="{}">').format(
        url_for("static", filename="compliance.css"))
    return {"style": style, "charts": charts, "figure": figure, "percent": percent, "when": when,
            "describe": auditrows.describe,
            "near": dashboard.NEAR_LIMIT}


# --- /dashboard ---------------------------------------------------------------------------------


@bp.get("/dashboard")
@role_required(*ALLOWED)
def dashboard_page() -> Any:
    q = request.args.get("q", "").strip()
    sort = request.args.get("sort", "ratio")
    # Rows only for the two pages shown; counts and order from the pools' summaries.
    b = dashpage.board(gate(), q=q, sort=sort, page=_int_arg("page"), upage=_int_arg("upage"),
                       per_page=PER_PAGE)
    ov = b.ov
    now = datetime.fromtimestamp(ov.now_ms / 1000, UTC)
    last_month = (now.replace(day=1) - timedelta(days=1)).strftime("%Y-%m")
    return render_template(
        "dashboard.html", ov=ov, table=b.table, users=b.users, q=q, sort=sort,
        summary=b.summary, notices=noticeboard.panel(gate(), ov.now_ms),
        month=now.strftime("%Y-%m"), last_month=last_month, end_day=ov.days[-1],
        **_helpers())


# --- /entities/NAME -----------------------------------------------------------------------------


def _render_entity(name: str, *, error: GatekeeperError | None = None,
                   form: str | None = None, values: dict[str, str] | None = None,
                   status: int = 200) -> Any:
    detail = dashboard.entity_detail(gate(), name)
    row = detail.row
    may_link = row.entity.root == name and not row.children
    parents = ([n for n in gate().entities.names() if n not in row.members][:PARENT_CHOICES]
               if may_link else [])
    return render_template(
        "entity.html", d=detail, row=row, e=row.entity, ov=detail.overview,
        error=error, error_form=form, values=values or {}, end_day=detail.overview.days[-1],
        parents=parents,
        kinds=policy.KINDS, terms=policy.TERMS, terms_version=policy.TERMS_VERSION,
        **_helpers()), status


@bp.get("/entities/<name>")
@role_required(*ALLOWED)
def entity_page(name: str) -> Any:
    return _render_entity(name)


def _change(name: str, form: str, change: Any, done: str | Callable[[], str]) -> Any:
    """Apply one change through the Entities methods (each audited, R11); on a refusal show
    the page again with the rule and change nothing. `done` may be a function when the
    message needs what the change did."""
    values = {k: v for k, v in request.form.items() if k != "csrf_token"}
    try:
        change()
    except GatekeeperError as exc:
        if exc.status >= 500:
            raise
        return _render_entity(name, error=exc, form=form, values=values, status=exc.status)
    flash(done() if callable(done) else done, "ok")
    return redirect(url_for("compliance.entity_page", name=name) + f"#{form}")


@bp.post("/entities/<name>/academic")
@role_required(*ALLOWED)
def record_academic(name: str) -> Any:
    f = request.form
    research = f.get("research") == "yes"

    def change() -> None:
        gate().entities.set_academic(name, kind=f.get("kind", ""), research=research,
                                     evidence=f.get("evidence", ""), actor=me().name,
                                     channel="web")

    kind = f.get("kind", "")
    done = (f"R3: {name} recorded as {kind}"
            + (" doing non-commercial research" if research else ", no research purpose"))
    return _change(name, "academic", change, done)


@bp.post("/entities/<name>/permission")
@role_required(*ALLOWED)
def record_permission(name: str) -> Any:
    f = request.form

    def change() -> None:
        permit(gate(), name, limit=f.get("limit", ""), until=f.get("until", ""),
               reference=f.get("reference", ""), actor=me().name, channel="web")

    return _change(name, "permission", change,
                   f"R4: written permission recorded for {name} "
                   f"({f.get('limit', '').strip()} until {f.get('until', '').strip()})")


@bp.post("/entities/<name>/permission/revoke")
@role_required(*ALLOWED)
def revoke_permission(name: str) -> Any:
    def change() -> None:
        gate().entities.revoke_permit(name, reason=request.form.get("reason", ""),
                                      actor=me().name, channel="web")

    return _change(name, "revoke", change,
                   f"R4: the written permission of {name} is revoked; R2 applies again now")


@bp.post("/entities/<name>/terms")
@role_required(*ALLOWED)
def record_terms(name: str) -> Any:
    by = request.form.get("by", "")

    def change() -> None:
        gate().entities.accept_terms(name, by=by, actor=me().name, channel="web")

    return _change(name, "terms", change, f"R8: attestation by {by.strip()} recorded for {name}")


@bp.post("/entities/<name>/parent")
@role_required(*ALLOWED)
def record_parent(name: str) -> Any:
    f = request.form
    linked: list[Link] = []

    def change() -> None:
        linked.append(set_parent(gate(), name, parent=f.get("parent", "").strip(),
                                 reason=f.get("reason", ""), actor=me().name, channel="web"))

    return _change(name, "parent", change, lambda: linked[0].describe())
