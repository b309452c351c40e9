"""The audit log written to files (R11): JSONL, CSV or XLSX, atomically, and the
``gatekeeper audit export`` command. The records come from `audit.AuditLog`; `exports.auditlog`
lays them out.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import click

from exports import auditlog as writers
from gatekeeper import policy
from gatekeeper.audit import FORMATS, AuditFilter, AuditLog, iso_ms
from gatekeeper.errors import BadInput
from gatekeeper.store import failing_closed


def write(records: Iterator[dict[str, Any]], stream: Any, fmt: str,
          about: Mapping[str, Any] | None = None) -> int:
    """Write records to a binary stream as jsonl, csv or xlsx; return how many."""
    if fmt == "jsonl":
        return writers.write_jsonl(records, stream)
    if fmt == "csv":
        return writers.write_csv(records, stream)
    if fmt == "xlsx":
        return writers.write_xlsx(records, stream, about=about)
    raise BadInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", field="format")


def export_to_file(log: AuditLog, filters: AuditFilter, out: Path, fmt: str,
                   about: Mapping[str, Any] | None = None) -> int:
    """Write the matching records to `out` via a temporary file renamed into place."""
    if fmt not in FORMATS:
        raise BadInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}",
                       field="format")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    except OSError as exc:
        raise BadInput(f"{out}: cannot write the audit export ({exc.strerror or exc})") from None
    try:
        with os.fdopen(fd, "wb") as fh:
            n = write(log.records(filters), fh, fmt, about)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BadInput(f"{out}: cannot write the audit export ({exc.strerror or exc}); "
                           "no file was left") from exc
        if isinstance(exc, ValueError) and fmt == "xlsx":  # more rows than a sheet holds
            raise BadInput(f"{exc}; no file was left", field="format") from exc
        raise
    return n


# --- the `gatekeeper audit` command -------------------------------------------------------------
# Here rather than in cli.py, which needs only `main.add_command(audit_cli)`; it reads
# cli.Context (ctx.obj) by its attributes, .gate and .json, to avoid an import cycle.


def _mark_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    if value and ctx.obj is not None and hasattr(ctx.obj, "json"):
        ctx.obj.json = True  # so the CLI's error handler answers in JSON too
    return value


@click.group("audit")
def audit_cli() -> None:
    """R11: the append-only audit log of every decision and change."""


@audit_cli.command("export")
@click.option("--since", help="Records appended at or after (ISO 8601, UTC unless given).")
@click.option("--until", help="Records appended before (ISO 8601).")
@click.option("--entity", help="Records about this entity.")
@click.option("--user", help="Records whose actor or recipient is this user.")
@click.option("--channel", type=click.Choice(policy.CHANNELS), help="web, api or cli.")
@click.option("--outcome", help="granted, partial, refused, denied, delivered, changed, …")
@click.option("--rule", help="A rule id, R1…R12.")
@click.option("--format", "fmt", type=click.Choice(FORMATS),
              help="File format (default: from the --out suffix).")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="File to write (atomically: a temporary file renamed into place).")
@click.option("--json", "as_json", is_flag=True, callback=_mark_json,
              help="Print the result as JSON.")
@click.pass_obj
def audit_export(obj: Any, out: Path, fmt: str | None, as_json: bool,
                 **filter_values: str | None) -> None:
    """Export the audit log, oldest first, as JSONL, CSV or XLSX."""
    filters = AuditFilter.parse({k: v for k, v in filter_values.items() if v is not None})
    if fmt is None:
        fmt = out.suffix.lower().lstrip(".")
        if fmt not in FORMATS:
            raise BadInput(f"give --format {'|'.join(FORMATS)} (cannot tell it from {out.name})",
                           field="format")
    with failing_closed():
        seconds, _micros = obj.gate.client.time()
    about = {"exported_at": iso_ms(int(seconds) * 1000), "filters": filters.to_dict() or "none",
             "channel": "cli"}
    n = export_to_file(AuditLog(obj.gate.client), filters, out, fmt, about)
    data = {"records": n, "format": fmt, "out": str(out), "filters": filters.to_dict()}
    text = f"{n:,} audit record{'s' if n != 1 else ''} written to {out} ({fmt})"
    click.echo(json.dumps(data, indent=2) if as_json else text)
