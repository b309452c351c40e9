"""`gatekeeper trace POST_ID`: every delivery that held a post (issue 15 item 4).

A read, like `gatekeeper audit export` (which records nothing: reads of the audit log are not
audited), for the compliance officer (or admin) named by `--as` (R12).
"""

from __future__ import annotations

import click

from gatekeeper.channels.cli.context import Context, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import plural, table
from gatekeeper.domain.trace import trace
from gatekeeper.rules import roles


@click.command("trace")
@click.argument("ident", metavar="POST_ID")
@click.option("--user", "as_user_id", is_flag=True,
              help="POST_ID is a User ID: the deliveries that held that user (User ID shares, "
                   "exports of their posts).")
@click.option("--as", "actor", required=True, help="The compliance officer (or admin) asking.")
@json_option
@pass_ctx
def trace_cmd(obj: Context, ident: str, as_user_id: bool, actor: str, as_json: bool) -> None:
    """Every delivery that held POST_ID: when, to whom, through which channel, which file."""
    gate = obj.gate
    roles.require_role(gate.users.get(actor), roles.MAY_TRACE, "trace")
    kind = "users" if as_user_id else "posts"
    hits = trace(gate, ident, kind=kind)
    what = f"{'user' if as_user_id else 'post'} {ident.strip()}"
    if not hits:
        text = f"no delivery in the manifests held {what}"
    else:
        text = f"{plural(len(hits), 'delivery', 'deliveries')} held {what}:\n" + table(
            ["delivered (UTC)", "to", "entity", "by", "channel", "kind", "delivery", "file",
             "dataset", "as"],
            [[h.at, h.recipient, h.entity, h.actor, h.channel, h.kind, h.delivery, h.file,
              h.dataset, h.held_as] for h in hits])
    emit(obj, {"id": ident.strip(), "kind": kind, "deliveries": [h.to_dict() for h in hits]},
         text)
