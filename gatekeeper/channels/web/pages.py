"""Pages for people: sign-in, X's terms (R8) and the export form (R5, R6, R7).

Thin: the policy, the ledger and `hydrated` decide; these views translate forms to calls and
refusals to messages. Every form carries a CSRF token (Flask-WTF); every view checks its role.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from flask import (
    Blueprint,
    Response,
    jsonify,
    redirect,
    render_template,
    request,
    url_for,
)
from flask.typing import ResponseReturnValue
from flask_login import UserMixin, current_user, login_required, login_user, logout_user
from markupsafe import Markup

from gatekeeper.channels.web import heavy
from gatekeeper.channels.web.extension import current_gate
from gatekeeper.domain import denials, hydrated, progress
from gatekeeper.domain.audit import record_denial
from gatekeeper.domain.filters import FILTER_FIELDS, Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.quota import hydrated_usage
from gatekeeper.domain.users import User
from gatekeeper.ledger.ledger import iso
from gatekeeper.rules import policy, roles
from gatekeeper.rules.errors import BadInput, Busy, Forbidden, GatekeeperError, QuotaExceeded

bp = Blueprint("pages", __name__)


class WebUser(UserMixin):
    """The signed-in person as Flask-Login sees them."""

    def __init__(self, user: User) -> None:
        self.user = user

    def get_id(self) -> str:
        # The session generation rides in the session: a new one (sign-out, password or role
        # change, disabling) makes every older session fail the user_loader (R12).
        return f"{self.user.name}|{self.user.session}"


def gate() -> Gate:
    return current_gate()


def me() -> User:
    user: User = current_user.user  # Flask-Login's proxy is untyped
    return user


def role_required(*allowed: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Sign-in and one of `allowed` (a tuple of `rules.roles`, R12) for a page."""

    def wrap(view: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(view)
        @login_required
        def inner(*args: Any, **kwargs: Any) -> Any:
            # Raised, not abort(): the GatekeeperError handler records it (R11).
            roles.require_role(me(), allowed, "this page")
            return view(*args, **kwargs)

        return inner

    return wrap


@bp.get("/")
def index() -> ResponseReturnValue:
    if not current_user.is_authenticated:
        return render_template("index.html")
    # Each role lands on its own work (R12), never on a page with only a link to the API.
    for allowed, endpoint in LANDING:
        if roles.allows(me(), allowed):
            return redirect(url_for(endpoint))
    return render_template("index.html")


# First match wins: an admin may also read the dashboard, but lands on users and tokens.
LANDING = ((roles.MAY_EXPORT_HYDRATED, "pages.export_form"),
           (roles.MAY_SHARE_IDS, "home.data_page"), (roles.MAY_ADMINISTER, "account.admin_users"),
           (roles.MAY_RECORD_COMPLIANCE, "compliance.dashboard_page"))


# --- sign-in ------------------------------------------------------------------------------------


@bp.route("/login", methods=["GET", "POST"])
def login() -> Any:
    error = None
    if request.method == "POST":
        name = request.form.get("username", "").strip()
        password = request.form.get("password", "")
        try:
            # Behind the lockout, counted before the slow hash (Users.sign_in).
            user = gate().users.sign_in(name, password)
        except GatekeeperError as exc:
            error = exc.message
            if exc.status == 401:  # a failed sign-in or a lockout is a denial (R11)
                denials.answered(exc, kind="access.login",
                                 fields={"login_name": name[:denials.MAX_FIELD]})
        else:
            login_user(WebUser(user))
            return redirect(safe_next(request.args.get("next", "")) or url_for("pages.index"))
    return render_template("login.html", error=error), 401 if error else 200


# What browsers drop from a URL before parsing it (WHATWG URL: tab, LF, CR anywhere) and trim
# from its ends (C0 controls and space).
_DROPPED = re.compile(r"[\t\n\r]")
_TRIMMED = "".join(map(chr, range(0x21)))


def safe_next(target: str) -> str | None:
    r"""`target` as the redirect will send it, if it is a path on this site; else None.

    Checked after the normalisation a browser applies, so `/\t/evil.example` (which a browser
    reads as `//evil.example`, another host) is refused rather than followed. A backslash is
    refused anywhere: browsers read `/\host` as `//host`.
    """
    cleaned = _DROPPED.sub("", target).strip(_TRIMMED)
    if (not cleaned.startswith("/") or cleaned.startswith("//") or "\\" in cleaned
            or any(ord(c) < 0x20 or ord(c) == 0x7F for c in cleaned)):
        return None
    parts = urlsplit(cleaned)
    if parts.scheme or parts.netloc:
        return None
    return cleaned


@bp.post("/logout")
def logout() -> ResponseReturnValue:
    if current_user.is_authenticated:
        # Server-side: a copy of this session cookie kept elsewhere opens nothing any more.
        gate().users.end_sessions(me().name, actor=me().name, channel="web")
    logout_user()
    return redirect(url_for("pages.login"))


# --- terms (R8) ---------------------------------------------------------------------------------


@bp.route("/terms", methods=["GET", "POST"])
@login_required
def terms() -> Any:
    if request.method == "POST":
        if request.form.get("agree") != "yes":
            return render_template("terms.html", terms=policy.TERMS,
                                   version=policy.TERMS_VERSION,
                                   error="Tick the box to accept all four documents."), 400
        user = gate().users.accept_terms(me().name, actor=me().name, channel="web")
        login_user(WebUser(user))
        return redirect(url_for("pages.index"))
    return render_template("terms.html", terms=policy.TERMS, version=policy.TERMS_VERSION,
                           error=None)


# --- the export form (R5, R6) -------------------------------------------------------------------


EXPORT_OPTIONS = ("retweets_as_is", "referenced")  # checkboxes: "1" when ticked


def _form_selection(form: Any) -> tuple[hydrated.Selection, dict[str, str]]:
    values = {k: form.get(k, "") for k in FILTER_FIELDS}
    filters = Filters.parse(values)
    dataset = form.get("dataset", "")
    if not dataset:
        raise BadInput("choose a dataset")
    gate().datasets.check(dataset)
    limit = form.get("limit") or None
    if limit is not None:
        if not limit.isdigit() or int(limit) <= 0:
            raise BadInput(f"limit must be a positive number, not {limit!r}")
        limit = int(limit)
    return hydrated.Selection(dataset, filters, gate().deletions.current(), limit,
                              whole_retweets=form.get("retweets_as_is") != "1",
                              referenced=form.get("referenced") == "1"), values


def _render_form(values: dict[str, Any], error: str | None = None,
                 refusal: dict[str, Any] | None = None, status: int = 200) -> Any:
    user = me()
    g = gate()
    preview = None
    if values.get("dataset") and not error:
        try:
            selection, _ = _form_selection(values)
            preview = hydrated.preview(g, user, selection, values.get("users") == "1")
        except GatekeeperError as exc:
            error = exc.message
    quota, window = hydrated_usage(g, user)
    ticket = hydrated.issue_ticket(g, user)
    return render_template(
        "export.html", datasets=g.datasets.list(), values=values, preview=preview,
        error=error, refusal=refusal, ticket=ticket,
        progress_url=url_for("pages.export_progress", pid=progress.progress_id(ticket)),
        quota=quota, window=window,
        next_release=iso(quota.releases[0][0]) if quota.releases else None,
        filter_fields=FILTER_FIELDS,
        # R9 downstream (issue 15): what this person must delete from what they exported.
        my_notices=g.notices.open_for_person(user.name), now_ms=g.clock.now_ms(),
    ), status


def _busy_form(exc: Busy) -> Any:
    # The form as sent, without a preview (that scan is heavy work too), saying why.
    source = request.form if request.method == "POST" else request.args
    values = {k: source.get(k, "") for k in (*FILTER_FIELDS, "dataset", "format", "users",
                                             *EXPORT_OPTIONS)}
    page, status = _render_form(values, error=exc.message, status=exc.status)
    return page, status, {"Retry-After": str(exc.details["retry_after"])}


@bp.get("/export")
@role_required(*roles.MAY_EXPORT_HYDRATED)
# A dataset chosen means a preview: a count on its index, yet heavy work — at 10M posts 0.3-1.8 s
# of numpy and pyarrow, much of it holding the GIL. Counted light, eight analysts' previews
# took /healthz's p99 from 26 to 216-245 ms (bench/load.py); in a slot, light pages stay fast.
@heavy.gated("preview", when=lambda: bool(request.args.get("dataset")), busy=_busy_form)
def export_form() -> Any:
    if not me().accepted_terms:
        return redirect(url_for("pages.terms"))
    values = {k: request.args.get(k, "") for k in (*FILTER_FIELDS, "dataset", "format", "users",
                                                   *EXPORT_OPTIONS)}
    return _render_form(values)


@bp.post("/export")
@role_required(*roles.MAY_EXPORT_HYDRATED)
@heavy.gated("export", busy=_busy_form)
def export_download() -> Any:
    user = me()
    g = gate()
    form = request.form
    values = {k: form.get(k, "") for k in (*FILTER_FIELDS, "dataset", "format", "users",
                                            *EXPORT_OPTIONS, "limit")}
    ticket = form.get("ticket")
    try:
        hydrated.redeem_ticket(g, user, ticket)
    except Forbidden as refusal:
        # No progress written: a replayed ticket's progress is the first click's to tell.
        record_denial(g.ledger, user.root, refusal, {
            "actor": user.name, "entity": user.entity, "recipient": user.name,
            "channel": "web", "kind": "export.ticket"})
        values.pop("limit")
        return _render_form(values, error=refusal.message, status=403)
    assert ticket is not None  # redeemed
    track = progress.ExportProgress(g, user, ticket)
    track.state("counting")
    try:
        selection, _ = _form_selection(values)
        result = hydrated.export(g, user, selection, fmt=values["format"] or "xlsx",
                                 with_users=values["users"] == "1", channel="web",
                                 progress=track.rows)
    except QuotaExceeded as exc:
        track.state("refused")
        values.pop("limit")
        return _render_form(values, refusal={**exc.details, "rule": exc.rule,
                                             "message": exc.message}, status=429)
    except GatekeeperError as exc:
        track.state("failed" if exc.status >= 500 else "refused")
        if exc.status >= 500:
            raise
        values.pop("limit")
        return _render_form(values, error=exc.message, status=exc.status)
    except BaseException:
        track.state("failed")
        raise
    track.state("done", result.posts, result.posts)
    resp = Response(
        # Not direct_passthrough: Werkzeug then skips close(), and with it call_on_close.
        result.chunks(), mimetype=result.mimetype,
        headers={"Content-Disposition": f'attachment; filename="{result.filename}"',
                 "Content-Length": str(result.size), "Cache-Control": "no-store",
                 "X-Export-Id": result.share_id})
    resp.call_on_close(result.file.close)
    return resp


# --- the page keeping up: progress and a fresh allowance (issue 13) -----------------------------


def _no_store(body: dict[str, Any], status: int = 200) -> Response:
    resp = jsonify(body)
    resp.status_code = status
    resp.headers["Cache-Control"] = "no-store"
    return resp


@bp.get("/export/progress/<pid>")
@role_required(*roles.MAY_EXPORT_HYDRATED)
def export_progress(pid: str) -> Response:
    """How far the export this person started from the page has got (figures only)."""
    found = progress.read(gate(), me(), pid)
    if found is None:  # not started yet, long over, or not theirs: the same answer
        return _no_store({"state": "unknown"}, 404)
    return _no_store(found)


@bp.get("/export/state")
@role_required(*roles.MAY_EXPORT_HYDRATED)
def export_state() -> Response:
    """The allowance as it is now and a fresh ticket, for the page after a download: the
    person may export the same selection again (in the other format) at once."""
    user = me()
    policy.check_hydrated_export(user, "web")  # R8: no allowance or ticket before the terms
    g = gate()
    quota, window = hydrated_usage(g, user)
    ticket = hydrated.issue_ticket(g, user)
    return _no_store({
        "remaining": quota.remaining, "used": quota.used, "limit": quota.limit,
        "window": window,
        "next_release": iso(quota.releases[0][0]) if quota.releases else None,
        "ticket": ticket,
        "progress_url": url_for("pages.export_progress", pid=progress.progress_id(ticket))})


@bp.app_template_global()
def local_time(moment: str | int | None) -> Markup:
    """A moment (ISO 8601 UTC, or epoch ms) as the pages show it: UTC to the minute (rounded
    up: "from" is never early) in a <time> that static/times.js rewrites to the reader's zone
    with a distance beside. Any page may use it: base.html loads the script."""
    if moment is None or moment == "":
        return Markup("")
    at = datetime.fromtimestamp(moment / 1000, UTC) if isinstance(moment, int) else \
        datetime.fromisoformat(moment.replace("Z", "+00:00")).astimezone(UTC)
    shown = at if at.second == 0 and at.microsecond == 0 else \
        at.replace(second=0, microsecond=0) + timedelta(minutes=1)
    return Markup('<time datetime="{}" data-local>{}</time>').format(
        at.strftime("%Y-%m-%dT%H:%M:%SZ"), shown.strftime("%Y-%m-%d %H:%M UTC"))
