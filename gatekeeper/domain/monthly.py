"""The monthly compliance report (R11) as delivered: the month's figures (`report.month_report`)
with the audit checkpoint written after them, laid out as a PDF (`exports.report_pdf`) into a
stream or atomically into a file. `gatekeeper report` and the `/report` page both call these.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import tempfile
from pathlib import Path
from typing import IO, Any

from gatekeeper.domain import checkpoints
from gatekeeper.domain.report import (
    ReportData,
    month_bounds,
    month_report,
    previous_month,
    redis_now_ms,
)
from gatekeeper.rules.errors import BadInput


def monthly_report(gate: Any, month: str | None, *, actor: str) -> ReportData:
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
