"""The monthly compliance report (R11) as delivered: the month's figures (`report.month_report`)
with the audit checkpoint written after them, laid out as a PDF (`exports.report_pdf`) into a
stream or atomically into a file. `gatekeeper report` and the `/report` page both call these.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import IO

from gatekeeper.domain import checkpoints
from gatekeeper.domain.figures import ReportData
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.report import (
    month_bounds,
    month_report,
    previous_month,
    redis_now_ms,
)
from gatekeeper.domain.spool import publish
from gatekeeper.rules.errors import BadInput


def monthly_report(gate: Gate, month: str | None, *, actor: str) -> ReportData:
    """The report of `month` (YYYY-MM; default the previous full month on the Redis clock).
    A bad month is refused before anything is read."""
    if month is not None:
        month_bounds(month)
    now = redis_now_ms(gate)
    report = month_report(gate, month or previous_month(now), actor=actor, now_ms=now)
    return dataclasses.replace(report, checkpoint=checkpoints.after_report(gate))


def write_pdf(report: ReportData, stream: IO[bytes]) -> int:
    """Lay the report out as a PDF into `stream`; the number of pages."""
    from exports.report_pdf import write_report_pdf

    return write_report_pdf(report, stream)


def write_file(report: ReportData, out: Path) -> int:
    """Write the PDF to `out`, which appears only once whole (see spool.publish): whole or
    untouched."""
    pages_written = 0

    def write(fh: IO[bytes]) -> None:
        nonlocal pages_written
        pages_written = write_pdf(report, fh)

    try:
        publish(out, write)
    except OSError as exc:
        raise BadInput(f"{out}: cannot write the report ({exc.strerror or exc}); "
                       "nothing was written") from exc
    return pages_written
