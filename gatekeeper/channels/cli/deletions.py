"""`gatekeeper deletions …`: R9 deletion lists."""

from __future__ import annotations

from pathlib import Path

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import plural
from gatekeeper.domain.gate import ingest_deletions, lift_deletion


@click.group(cls=Group)
def deletions() -> None:
    """R9: content deleted, protected, suspended or withheld on X."""


@deletions.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(("posts", "users")),
              help="What the file lists (inferred from X's tweets_/users_ file names).")
@json_option
@pass_ctx
def deletions_add(obj: Context, path: Path, kind: str | None, as_json: bool) -> None:
    """Ingest a deletion list: plain IDs or X batch-compliance JSONL."""
    report = ingest_deletions(obj.gate, path, kind=kind, actor=cli_actor(), channel="cli")
    lines = [f"R9: {plural(report.listed, report.kind.rstrip('s'))} listed ({report.new:,} "
             "newly hidden); from "
             "now on no share or export contains them"]
    if report.scrub_geo:
        lines.append(f"  {report.scrub_geo:,} scrub_geo: kept, exported without geo")
    if report.reversed:
        lines.append(f"  {plural(report.reversed, 'reversal')} recorded; they lift nothing "
                     "(`gatekeeper deletions lift` does, one ID at a time)")
    lines += [f"  dataset {name}: {plural(n, 'stored post')} newly hidden"
              for name, n in report.datasets.items()]
    if report.notices:
        lines.append(f"  {plural(len(report.notices), 'deletion notice')} opened to the "
                     "recipients of what already left (`gatekeeper notices list --open`)")
    if report.notices_error:
        lines.append(f"  warning: {report.notices_error}")
    emit(obj, report.to_dict(), "\n".join(lines))


@deletions.command("lift")
@click.argument("ident", metavar="ID")
@click.option("--reason", required=True, help="Why the ID may leave again (audited).")
@click.option("--kind", type=click.Choice(("posts", "users")), default="posts",
              show_default=True, help="The deletion list the ID is on.")
@click.option("--as", "actor", required=True, help="The compliance officer (or admin) lifting.")
@json_option
@pass_ctx
def deletions_lift(obj: Context, ident: str, reason: str, kind: str, actor: str,
                   as_json: bool) -> None:
    """R9: take one ID off a deletion list (X's reversals never do this by themselves)."""
    done = lift_deletion(obj.gate, ident, kind=kind, reason=reason, actor=actor, channel="cli")
    emit(obj, done, f"R9: {kind[:-1]} ID {ident} lifted by {actor}; it may leave again")
