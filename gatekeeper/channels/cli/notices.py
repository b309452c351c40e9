"""`gatekeeper notices …`: R9 deletion notices to the recipients of what X deleted (issue 15)."""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import plural, table
from gatekeeper.domain.notices import Notice, iso


@click.group(cls=Group)
def notices() -> None:
    """R9: who must delete what X deleted, by when; and their confirmation."""


def _state(n: Notice, now_ms: int) -> str:
    if n.open:
        return "OVERDUE" if n.overdue(now_ms) else "open"
    return "acknowledged" + (" late" if n.overdue(now_ms) else "")


@notices.command("list")
@click.option("--open", "open_only", is_flag=True, help="Only notices not yet acknowledged "
                                                        "(nearest deadline first).")
@json_option
@pass_ctx
def notices_list(obj: Context, open_only: bool, as_json: bool) -> None:
    """Deletion notices, newest first (or the open ones, nearest deadline first)."""
    # Streamed a page at a time (Notices.pages): memory holds one page however many notices.
    # JSON: the same text as one json.dumps of the whole list. Text: a table per page, each
    # as wide as its own widest cells, the header once.
    now_ms = obj.gate.clock.now_ms()
    first = True
    for page in obj.gate.notices.pages(open_only):
        if obj.json:
            items = ",\n".join(textwrap.indent(json.dumps(n.to_dict(), indent=2,
                                                          ensure_ascii=False), "  ")
                                for n in page)
            click.echo(("[\n" if first else ",\n") + items, nl=False)
        else:
            rows = [(n.id, n.recipient_kind, n.recipient, iso(n.opened_ms),
                     iso(n.deadline_ms), len(n.deliveries), n.ids, _state(n, now_ms))
                    for n in page]
            lines = table(("id", "to", "recipient", "opened", "deadline", "deliveries", "ids",
                           "state"), rows, right=("deliveries", "ids")).split("\n")
            click.echo("\n".join(lines if first else lines[1:]))
        first = False
    if obj.json:
        click.echo("[]" if first else "\n]")
    elif first:
        click.echo("no open deletion notices" if open_only else "no deletion notices")


@notices.command("show")
@click.argument("ident", metavar="ID")
@json_option
@pass_ctx
def notices_show(obj: Context, ident: str, as_json: bool) -> None:
    """One notice: its recipient, deadline, deliveries and state."""
    n = obj.gate.notices.get(ident)
    now_ms = obj.gate.clock.now_ms()
    lines = [f"deletion notice {n.id} (R9) to {n.recipient_kind} {n.recipient}"
             + (f" of {n.entity}" if n.recipient_kind == "person" else ""),
             f"  opened {iso(n.opened_ms)}; delete by {iso(n.deadline_ms)}: "
             f"{_state(n, now_ms)}",
             f"  {plural(n.posts, 'post')} and {plural(n.users, 'user')} to delete",
             f"  from the deletion list(s): {', '.join(n.sources) or '-'}", ""]
    lines.append(table(("delivered", "delivery", "channel", "what", "file", "posts", "users"),
                       [(iso(d.delivered_ms), d.delivery, d.channel, d.kind, d.file, d.posts,
                         d.users) for d in n.deliveries], right=("posts", "users")))
    if n.acked_ms is not None:
        lines += ["", f"  acknowledged {iso(n.acked_ms)}: deletion confirmed by {n.acked_by}"
                  + (f" ({n.acked_note})" if n.acked_note else "")
                  + f"; recorded by {n.acked_actor}"]
    emit(obj, n.to_dict(), "\n".join(lines))


@notices.command("export")
@click.argument("ident", metavar="ID")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, file_okay=False),
              help="The directory to write the ID file(s) and the PDF letter into.")
@json_option
@pass_ctx
def notices_export(obj: Context, ident: str, out: Path, as_json: bool) -> None:
    """Write the notice for its recipient: ID file(s) of what to delete and a PDF letter."""
    done: dict[str, Any] = obj.gate.notices.export(ident, out, actor=cli_actor(),
                                                   channel="cli")
    emit(obj, done, "\n".join([f"R9: deletion notice {ident} -> {out}"]
                              + [f"  {f}" for f in done["files"]]))


@notices.command("ack")
@click.argument("ident", metavar="ID")
@click.option("--by", required=True, help="Who confirmed the deletion (the recipient's "
                                          "words; audited).")
@click.option("--note", default="", help="Anything else to record (a ticket, a letter).")
@click.option("--as", "actor", required=True, help="The compliance officer (or admin) "
                                                  "recording it.")
@json_option
@pass_ctx
def notices_ack(obj: Context, ident: str, by: str, note: str, actor: str,
                as_json: bool) -> None:
    """Record that the recipient confirmed the deletion a notice asked for."""
    n = obj.gate.notices.ack(ident, by=by, note=note, actor=actor, channel="cli")
    late = " (after its deadline)" if n.overdue(n.acked_ms or 0) else ""
    emit(obj, n.to_dict(), f"R9: deletion notice {n.id} to {n.recipient_kind} "
                           f"{n.recipient} acknowledged{late}: confirmed by {n.acked_by}")


@notices.command("scan")
@json_option
@pass_ctx
def notices_scan(obj: Context, as_json: bool) -> None:
    """Open the notices deletion lists still owe (after a crash or a failed scan)."""
    scan = obj.gate.notices.scan(actor=cli_actor(), channel="cli")
    if scan.busy:
        text = "another notice scan is running; it opens what is owed"
    else:
        text = (f"R9: {plural(len(scan.opened), 'deletion notice')} opened "
                f"({plural(scan.manifests, 'manifest')} read, "
                f"{plural(scan.refunded, 'refunded delivery', 'refunded deliveries')} "
                "skipped)")
    lines = [text] + [f"  {n.id} to {n.recipient_kind} {n.recipient}: "
                      f"{plural(n.ids, 'ID')}" for n in scan.opened]
    lines += [f"  unreadable manifest: {u}" for u in scan.unreadable]
    emit(obj, scan.to_dict(), "\n".join(lines))
