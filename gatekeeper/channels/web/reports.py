"""The monthly report delivered: written atomically to a file, ``gatekeeper report``, and
``/report`` for compliance officers and admins (R11). The figures come from `report.month_report`.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

import click
from flask import Blueprint, Response, request

from gatekeeper.channels.web import pages
from gatekeeper.domain import checkpoints
from gatekeeper.domain.report import (
    ReportData,
    month_bounds,
    month_report,
    previous_month,
    redis_now_ms,
)
from gatekeeper.rules import roles
from gatekeeper.rules.errors import BadInput

# --- the PDF, written atomically ----------------------------------------------------------------


def write_pdf(report: ReportData, stream: IO[bytes]) -> int:
    """Lay the report out as a PDF into `stream`; the number of pages."""
    from exports.report_pdf import write_report_pdf

    return write_report_pdf(report, stream)


def write_file(report: ReportData, out: Path) -> int:
    """Write the PDF beside `out` and rename it into place: `out` is whole or untouched."""
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            pages_written = write_pdf(report, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BadInput(f"{out}: cannot write the report ({exc.strerror or exc}); "
                           "nothing was written") from exc
        raise
    return pages_written


# --- the command --------------------------------------------------------------------------------


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    from gatekeeper.channels.cli.main import (
        Context,  # late: gatekeeper.channels.cli.main adds this command at its end
    )

    ctx.ensure_object(Context).json = value
    return value


@click.command("report")
@click.option("--month", help="YYYY-MM, a calendar month in UTC (default: the previous full "
                              "month).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The PDF to write (written beside it, then renamed into place).")
@click.option("--json", "as_json", is_flag=True, callback=_set_json,
              help="Print the headline figures as JSON.")
@click.pass_context
def report_cli(ctx: click.Context, month: str | None, out: Path, as_json: bool) -> None:
    """R11: the auditor's monthly compliance report as a PDF."""
    import json

    from gatekeeper.channels.cli.main import Context, _actor

    obj = ctx.find_object(Context) or Context(None)
    gate = obj.gate
    if month is not None:
        month_bounds(month)  # a bad month is refused before anything is read
    now = redis_now_ms(gate)
    report = month_report(gate, month or previous_month(now), actor=_actor(), now_ms=now)
    report = dataclasses.replace(report, checkpoint=checkpoints.after_report(gate))
    n = write_file(report, out)
    data = {**report.summary(), "out": str(out), "pages": n}
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"R11: compliance report for {report.month} -> {out} ({n} pages; "
               f"{report.records:,} audit records, {len(report.entities):,} active entities, "
               f"{report.refusal_count:,} refusals)")
    for c in report.checks:
        if not c.ok:
            click.echo(f"warning: {c.what}: audit {c.audit:,} vs ledger {c.ledger:,}", err=True)


# --- the page -----------------------------------------------------------------------------------

report_bp = Blueprint("report", __name__)


@report_bp.get("/report")
@pages.role_required(*roles.MAY_RECORD_COMPLIANCE)
def report_download() -> Response:
    """The month's report as a PDF download (?month=YYYY-MM; default the previous month)."""
    gate = pages.gate()
    month = request.args.get("month") or None
    if month is not None:
        month_bounds(month)
    now = redis_now_ms(gate)
    report = month_report(gate, month or previous_month(now), actor=pages.me().name,
                          now_ms=now)
    report = dataclasses.replace(report, checkpoint=checkpoints.after_report(gate))
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

