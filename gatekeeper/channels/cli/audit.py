"""The audit log written to files (R11): JSONL, CSV or XLSX, atomically, and the
``gatekeeper audit export`` command. The records come from `audit.AuditLog`; `exports.auditlog`
lays them out.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import IO, Any

import click

from exports import auditlog as writers
from gatekeeper.channels.cli.tables import plural, progress
from gatekeeper.domain import auditrows, checkpoints
from gatekeeper.domain.audit import FORMATS, AuditLog
from gatekeeper.domain.auditfilter import AuditFilter, iso_ms
from gatekeeper.domain.spool import publish
from gatekeeper.ledger import chain
from gatekeeper.rules import policy
from gatekeeper.rules.errors import BadInput, ChainBroken


def write(records: Iterator[dict[str, Any]], stream: Any, fmt: str,
          about: Mapping[str, Any] | None = None) -> int:
    """Write records to a binary stream as jsonl, csv or xlsx; return how many."""
    if fmt == "jsonl":
        return writers.write_jsonl(records, stream)
    # Files people open: times ISO 8601 UTC, JSON fields, the pages' messages (auditrows).
    if fmt == "csv":
        return writers.write_csv(auditrows.rows_for_people(records), stream)
    if fmt == "xlsx":
        return writers.write_xlsx(auditrows.rows_for_people(records), stream, about=about)
    raise BadInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}", field="format")


def export_to_file(log: AuditLog, filters: AuditFilter, out: Path, fmt: str,
                   about: Mapping[str, Any] | None = None) -> int:
    """Write the matching records to `out` via a temporary file renamed into place."""
    if fmt not in FORMATS:
        raise BadInput(f"format must be one of {', '.join(FORMATS)}, not {fmt!r}",
                       field="format")
    n = 0

    def write_records(fh: IO[bytes]) -> None:
        nonlocal n
        with progress(log.records(filters), f"writing {out.name}") as records:
            n = write(iter(records), fh, fmt, about)

    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        publish(out, write_records)  # `out` appears only whole; an error leaves nothing
    except OSError as exc:
        raise BadInput(f"{out}: cannot write the audit export ({exc.strerror or exc}); "
                       "no file was left") from exc
    except ValueError as exc:
        if fmt == "xlsx":  # more rows than a sheet holds
            raise BadInput(f"{exc}; no file was left", field="format") from exc
        raise
    return n


# --- the `gatekeeper audit` command -------------------------------------------------------------
# Registered in main.py like every command; it reads the run's Context (ctx.obj) by its
# attributes, .gate, .config and .json, so a test can wire it under a group of its own.


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
    about = {"exported_at": iso_ms(obj.gate.clock.now_ms() // 1000 * 1000),
             "filters": filters.to_dict() or "none", "channel": "cli"}
    n = export_to_file(AuditLog(obj.gate.client), filters, out, fmt, about)
    data = {"records": n, "format": fmt, "out": str(out), "filters": filters.to_dict()}
    text = f"{plural(n, 'audit record')} written to {out} ({fmt})"
    click.echo(json.dumps(data, indent=2) if as_json else text)


# --- tamper evidence: verify, checkpoint, public-key, keygen (ledger.chain, domain.checkpoints)


def _public_key(obj: Any, given: str | None) -> Any:
    """The key checkpoints must be signed with: --public-key, else the configured key's."""
    if given is not None:
        text = Path(given).read_text() if Path(given).is_file() else given
        return checkpoints.parse_vkey(text)
    return checkpoints.load_key(obj.config.audit).public_key()


@audit_cli.command("verify")
@click.option("--since", help="Verify records appended at or after this time (ISO 8601), "
              "chained onto the record before it.")
@click.option("--checkpoints", "cp_dir", type=click.Path(path_type=Path, file_okay=False),
              help="Also check every signed checkpoint in DIR: each must be signed by the key "
              "and still match the log (finds a truncated tail).")
@click.option("--public-key", "public_key",
              help="The key checkpoints must be signed with (as `audit public-key` prints it, "
              "or a file holding it); default: the configured signing key's.")
@click.option("--json", "as_json", is_flag=True, callback=_mark_json,
              help="Print the result as JSON.")
@click.pass_obj
def audit_verify(obj: Any, since: str | None, cp_dir: Path | None, public_key: str | None,
                 as_json: bool) -> None:
    """Recompute every audit stream's hash chain; exit 6 naming the first record that was
    edited, removed, reordered or inserted (R11)."""
    since_ms = AuditFilter.parse({"since": since}).since_ms if since else None
    found = []
    if cp_dir is not None:
        found = checkpoints.read_dir(cp_dir, _public_key(obj, public_key))
    results = chain.verify(obj.gate.client, since_ms=since_ms,
                           pinned=checkpoints.pinned(found))
    problems = [r.problem for r in results if r.problem is not None]
    lines = []
    for r in results:
        legacy = (f"; unchained legacy records up to {r.legacy_until}"
                  if r.legacy_until else "")
        state = "BROKEN" if r.problem else "ok"
        lines.append(f"{state:6} {r.stream}: {plural(r.records, 'record')}, seq {r.seq}{legacy}")
    total = sum(r.records for r in results)
    against = f" against {plural(len(found), 'signed checkpoint')}" if cp_dir else ""
    summary = (f"{plural(total, 'audit record')} in {plural(len(results), 'stream')} "
               f"verified{against}")
    streams = [{"stream": r.stream, "records": r.records, "seq": r.seq, "last_id": r.last_id,
                "hash": r.hash, "legacy_until": r.legacy_until,
                "problem": None if r.problem is None else {
                    "id": r.problem.id, "seq": r.problem.seq, "what": r.problem.what}}
               for r in results]
    if problems:  # with --json, the error object carries the streams too (one JSON document)
        if not as_json:
            click.echo("\n".join(lines))
        raise ChainBroken("the audit log fails verification: " + "; ".join(map(str, problems)),
                          problems=[str(p) for p in problems], streams=streams)
    if as_json:
        click.echo(json.dumps({"ok": True, "records": total, "checkpoints": len(found),
                               "streams": streams}, indent=2))
    else:
        click.echo("\n".join([*lines, summary]))


@audit_cli.command("checkpoint")
@click.option("--dir", "directory", type=click.Path(path_type=Path, file_okay=False),
              help="Where to write it (default: audit.checkpoint_dir).")
@click.option("--json", "as_json", is_flag=True, callback=_mark_json,
              help="Print the result as JSON.")
@click.pass_obj
def audit_checkpoint(obj: Any, directory: Path | None, as_json: bool) -> None:
    """Sign every audit stream's head (last ID, seq, hash) into a checkpoint file (R11)."""
    key = checkpoints.load_key(obj.config.audit)
    cp = checkpoints.write(obj.gate.client, key, directory or obj.config.audit.checkpoint_dir)
    if as_json:
        click.echo(json.dumps({"path": str(cp.path), "time": cp.time,
                               "streams": len(cp.heads)}, indent=2))
    else:
        click.echo(f"checkpoint of {plural(len(cp.heads), 'audit stream')} at {cp.time} written to "
                   f"{cp.path}")


@audit_cli.command("public-key")
@click.pass_obj
def audit_public_key(obj: Any) -> None:
    """Print the public key that verifies checkpoints (give it to the auditor)."""
    click.echo(checkpoints.vkey(checkpoints.load_key(obj.config.audit).public_key()))


@audit_cli.command("keygen")
@click.option("--out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The key file to create (0600; never overwritten).")
def audit_keygen(out: Path) -> None:
    """Make an Ed25519 signing key for checkpoints; name it as audit.signing_key_file."""
    public = checkpoints.generate(out)
    click.echo(f"signing key written to {out} (mode 0600); public key:\n"
               f"{checkpoints.vkey(public)}")
