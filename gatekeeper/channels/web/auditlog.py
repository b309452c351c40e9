"""The audit log page (R11): newest first, filtered, paged, downloadable — and read-only.

Thin, like pages.py: `gatekeeper.domain.audit.AuditLog` reads and filters, `exports.auditlog` writes
the files. Only compliance officers and administrators see it. Every route here is a GET: the
log can be read and downloaded, never changed (no route edits or deletes a record).
"""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import chain
from typing import Any

from flask import Blueprint, Response, render_template, request

from exports import auditlog as writers
from gatekeeper.channels.web.pages import gate, me, role_required
from gatekeeper.domain import auditrows
from gatekeeper.domain.audit import FORMATS, AuditLog
from gatekeeper.domain.auditfilter import FILTERS, AuditFilter
from gatekeeper.rules import policy, roles
from gatekeeper.rules.errors import BadInput
from gatekeeper.rules.outcomes import OUTCOMES

bp = Blueprint("auditlog", __name__, url_prefix="/audit")

PAGE_SIZE = 50
MIMETYPES = {
    "csv": "text/csv",
    "jsonl": "application/x-ndjson",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}


def _log() -> AuditLog:
    return AuditLog(gate().client, gate().ledger)


def _values() -> dict[str, str]:
    return {k: request.args.get(k, "").strip() for k in FILTERS}


@bp.get("")
@role_required(*roles.MAY_RECORD_COMPLIANCE)
def view() -> Any:
    values = _values()
    before = request.args.get("before") or None
    error = None
    records: list[dict[str, str]] = []
    older = None
    try:
        filters = AuditFilter.parse(values)
        records, older = _log().page(filters, before=before, size=PAGE_SIZE)
    except BadInput as exc:
        error = exc.message
    query = {k: v for k, v in values.items() if v}
    return render_template(
        "audit.html", values=values, query=query, records=records, older=older,
        before=before, error=error, channels=policy.CHANNELS, outcomes=OUTCOMES,
        rules=[f"R{i}" for i in range(1, 13)], formats=FORMATS, describe=auditrows.describe,
    ), 400 if error else 200


@bp.get("/export")
@role_required(*roles.MAY_RECORD_COMPLIANCE)
def download() -> Response:
    fmt = request.args.get("format", "csv")
    if fmt not in FORMATS:
        raise BadInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}",
                       field="format")
    filters = AuditFilter.parse({k: v for k, v in _values().items() if v})
    now = datetime.now(UTC)
    about = {"exported_at": now.isoformat(timespec="seconds").replace("+00:00", "Z"),
             "exported_by": me().name, "channel": "web",
             "filters": filters.to_dict() or "none"}
    records = _log().records(filters)
    # The first record is read here, so a store that cannot be reached answers 503 rather
    # than a download that breaks off.
    head = next(records, None)
    if head is not None:
        records = chain([head], records)
    if fmt == "csv":
        chunks = writers.iter_csv(auditrows.rows_for_people(records))
    elif fmt == "jsonl":
        chunks = writers.iter_jsonl(records)
    else:
        chunks = writers.iter_xlsx(auditrows.rows_for_people(records), about=about)
    name = f"audit-{now.strftime('%Y%m%dT%H%M%SZ')}.{fmt}"
    return Response(
        chunks, mimetype=MIMETYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{name}"',
                 "Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"})
