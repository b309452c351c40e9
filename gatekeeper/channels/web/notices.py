"""Deletion notices on the web (issue 15, R9): the compliance officer's list, one notice with its
acknowledgement form, and the recipient's downloads.

Thin like `compliance`: `Notices` reads, acknowledges (compliance only, R12) and exports, each
audited (R9); `noticeboard` pages the list. `/notices` and `/notices/ID` are for compliance
officers and administrators; a notice's files (`/notices/ID/files/NAME`: its ID files and the
PDF letter) also for its recipient — the person it is addressed to, or for an entity its data
team (`rules.notices.addressed_to`); anyone else is told there is no such notice (404), as for
an unknown one. Every form carries a CSRF token (CSRFProtect on the app).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, flash, redirect, render_template, request, url_for

from gatekeeper.channels.web.compliance import _helpers, _int_arg
from gatekeeper.channels.web.pages import gate, me, role_required
from gatekeeper.domain import noticeboard, spool
from gatekeeper.domain.notices import Notice
from gatekeeper.rules import notices as policy
from gatekeeper.rules import roles
from gatekeeper.rules.errors import GatekeeperError, NotFound

bp = Blueprint("notices", __name__)

PER_PAGE = 50
ALLOWED = roles.MAY_RECORD_COMPLIANCE
# Who may download a notice's files: compliance (to send them on), and its recipient: the
# analyst of her own export, the data team of its own entity's ID shares (the /data page).
MAY_DOWNLOAD = (*roles.MAY_RECEIVE_NOTICES, *roles.MAY_RECORD_COMPLIANCE)
FILES = {"posts.txt": ("posts", "text/plain"), "users.txt": ("users", "text/plain"),
         "letter.pdf": ("", "application/pdf")}


@bp.app_template_global()
def duration(ms: int) -> str:
    """A span as people read it: 45 min, 5 h 10 min, 2 d 3 h."""
    minutes = abs(ms) // 60_000
    if minutes < 60:
        return f"{minutes} min"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    days, hours = divmod(hours, 24)
    return f"{days} d {hours} h" if hours else f"{days} d"


@bp.app_template_global()
def notice_age(notice: Notice, now_ms: int) -> str:
    """How long ago the deletion request a notice answers came in (its hours run from it)."""
    return duration(noticeboard.age_ms(notice, now_ms))


@bp.app_template_global()
def deadline_hours() -> int:
    return policy.DEADLINE_MS // 3_600_000


@bp.get("/notices")
@role_required(*ALLOWED)
def notices_page() -> Any:
    open_only = request.args.get("show", "open") != "all"
    page = _int_arg("page")
    total, rows = gate().notices.window(open_only, (page - 1) * PER_PAGE, PER_PAGE)
    return render_template(
        "notices.html", rows=rows, total=total, open_only=open_only, page=page,
        pages=max(1, -(-total // PER_PAGE)), now_ms=gate().clock.now_ms(),
        pending=gate().notices.pending(),  # IDs an ingest queued, still being matched
        **_helpers())


def _render_notice(notice: Notice, error: str | None = None, values: dict[str, str] | None = None,
                   status: int = 200) -> Any:
    return render_template(
        "notice.html", n=notice, now_ms=gate().clock.now_ms(), error=error,
        values=values or {}, **_helpers()), status


@bp.get("/notices/<ident>")
@role_required(*ALLOWED)
def notice_page(ident: str) -> Any:
    return _render_notice(gate().notices.get(ident))


@bp.post("/notices/<ident>/ack")
@role_required(*ALLOWED)
def ack(ident: str) -> Any:
    """The recipient's confirmation of the deletion, recorded (R9; compliance only, R12)."""
    by, note = request.form.get("by", ""), request.form.get("note", "")
    try:
        done = gate().notices.ack(ident, by=by, note=note, actor=me().name, channel="web")
    except GatekeeperError as exc:
        if exc.status >= 500 or isinstance(exc, NotFound):
            raise
        return _render_notice(gate().notices.get(ident), error=exc.message,
                              values={"by": by, "note": note}, status=exc.status)
    flash(f"R9: deletion notice {done.id} acknowledged: deletion confirmed by {done.acked_by}",
          "ok")
    return redirect(url_for("notices.notice_page", ident=done.id))


@bp.get("/notices/<ident>/files/<name>")
@role_required(*MAY_DOWNLOAD)
def notice_file(ident: str, name: str) -> Response:
    """One of a notice's files, written by `Notices.download` (audited: `notices.export`) into
    an anonymous spool file and streamed from there."""
    notice = gate().notices.get(ident)
    own = policy.addressed_to(me(), notice.recipient_kind, notice.recipient)
    if not (own or roles.allows(me(), ALLOWED)):
        # Another recipient's notice is answered as an unknown one: its existence is theirs.
        raise NotFound(f"no deletion notice {ident!r}", rule="R9")
    if name not in FILES:
        raise NotFound(f"deletion notice {notice.id} has no file {name!r} (its files: "
                       f"{', '.join(FILES)})", rule="R9")
    label, mimetype = FILES[name]
    if label and not getattr(notice, label):
        raise NotFound(f"deletion notice {notice.id} names no {label[:-1]} IDs", rule="R9")
    # An anonymous spool: no name in any folder, gone with the response — or with the
    # process, if the server is killed mid-download.
    fh = spool.anonymous()
    try:
        filename = gate().notices.download(notice.id, label, fh, actor=me().name,
                                           channel="web")
        size = fh.tell()
        fh.seek(0)
    except BaseException:
        fh.close()
        raise

    def chunks() -> Any:
        while chunk := fh.read(1 << 16):
            yield chunk

    resp = Response(chunks(), mimetype=mimetype, headers={
        "Content-Disposition": f'attachment; filename="{filename}"',
        "Content-Length": str(size), "Cache-Control": "no-store"})
    resp.call_on_close(fh.close)
    return resp
