"""`gatekeeper report`: the auditor's monthly compliance report as a PDF file (R11)."""

from __future__ import annotations

from pathlib import Path

import click

from gatekeeper.channels.cli.context import Context, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import note, plural
from gatekeeper.domain.monthly import monthly_report, write_file


@click.command("report")
@click.option("--month", help="YYYY-MM, a calendar month in UTC (default: the previous full "
                              "month).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The PDF to write (written beside it, then renamed into place).")
@json_option
@pass_ctx
def report_cli(obj: Context, month: str | None, out: Path, as_json: bool) -> None:
    """R11: the auditor's monthly compliance report as a PDF."""
    note(f"reading the audit log and counters for {month or 'the previous month'}…")
    report = monthly_report(obj.gate, month, actor=cli_actor())
    note(f"laying out {out.name}…")
    n = write_file(report, out)
    emit(obj, {**report.summary(), "out": str(out), "pages": n},
         f"R11: compliance report for {report.month} -> {out} ({plural(n, 'page')}; "
         f"{plural(report.records, 'audit record')}, "
         f"{plural(len(report.entities), 'active entity', 'active entities')}, "
         f"{plural(report.refusal_count, 'refusal')}, "
         f"{plural(report.summary()['notices_opened'], 'deletion notice')} opened, "
         f"{report.summary()['notices_overdue']:,} overdue)")
    if not as_json:
        for c in report.checks:
            if not c.ok:
                click.echo(f"warning: {c.what}: audit {c.audit:,} vs ledger {c.ledger:,}",
                           err=True)
