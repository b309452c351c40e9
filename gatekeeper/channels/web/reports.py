"""``/report``: the monthly compliance report as a PDF download, for compliance officers and
admins (R11). The report comes from `domain.monthly`, as `gatekeeper report`'s does.
"""

from __future__ import annotations

import tempfile
from collections.abc import Iterator

from flask import Blueprint, Response, request

from gatekeeper.channels.web import heavy, pages
from gatekeeper.domain.monthly import monthly_report, write_pdf
from gatekeeper.rules import roles

report_bp = Blueprint("report", __name__)


@report_bp.get("/report")
@pages.role_required(*roles.MAY_RECORD_COMPLIANCE)
@heavy.gated("report")
def report_download() -> Response:
    """The month's report as a PDF download (?month=YYYY-MM; default the previous month)."""
    report = monthly_report(pages.gate(), request.args.get("month") or None,
                            actor=pages.me().name)
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - the response closes it
    try:
        write_pdf(report, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    def chunks() -> Iterator[bytes]:
        while chunk := spool.read(1 << 16):
            yield chunk

    resp = Response(chunks(), mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="gatekeeper-report-{report.month}.pdf"',
        "Content-Length": str(size), "Cache-Control": "no-store"})
    resp.call_on_close(spool.close)
    return resp
