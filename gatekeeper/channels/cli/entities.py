"""`gatekeeper entity …`: organisations IDs are shared with (R2, R3, R4, R8, R10)."""

from __future__ import annotations

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import table
from gatekeeper.domain.gate import record_permission, set_parent
from gatekeeper.rules import permissions, policy


@click.group(cls=Group)
def entity() -> None:
    """Organisations IDs are shared with (R2, R3, R4, R8, R10)."""


@entity.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(policy.KINDS), required=True)
@click.option("--research", is_flag=True,
              help="R3: distribution is for non-commercial research (academic entities only).")
@click.option("--parent", help="R10: pool this entity's usage with a parent entity.")
@json_option
@pass_ctx
def entity_add(obj: Context, name: str, kind: str, research: bool, parent: str | None,
               as_json: bool) -> None:
    """Add an entity."""
    e = obj.gate.entities.add(name, kind=kind, research=research, parent=parent,
                              actor=cli_actor(), channel="cli")
    exempt = " — exempt from R2 (R3: academic, non-commercial research)" if e.exemption() else ""
    emit(obj, e.to_dict(), f"entity {name} added ({kind}){exempt}")


@entity.command("accept-terms")
@click.argument("name")
@click.option("--by", "by", required=True, help="The person who attested for the entity.")
@json_option
@pass_ctx
def entity_accept_terms(obj: Context, name: str, by: str, as_json: bool) -> None:
    """R8: record the entity's attestation of X's terms."""
    e = obj.gate.entities.accept_terms(name, by=by, actor=cli_actor(), channel="cli")
    emit(obj, e.to_dict(), f"R8: {name} attested by {by} ({policy.TERMS_VERSION})")


@entity.command("set-parent")
@click.argument("name")
@click.option("--parent", required=True, help="The entity whose pool NAME joins.")
@click.option("--reason", required=True, help="Why they are one entity (audited).")
@json_option
@pass_ctx
def entity_set_parent(obj: Context, name: str, parent: str, reason: str, as_json: bool) -> None:
    """R10: pool an existing entity with a parent; its usage so far counts against the pool.

    NAME must be the root of its own pool, without children. Its users, counters and shares
    move into the parent's pool; this cannot be undone.
    """
    link = set_parent(obj.gate, name, parent=parent, reason=reason, actor=cli_actor(),
                      channel="cli")
    emit(obj, {**link.entity.to_dict(), "merged_post_ids": link.merged_post_ids},
         link.describe())


@entity.command("permit")
@click.argument("name")
@click.option("--limit", "limit_text", required=True, help="New Post ID limit, or 'unlimited'.")
@click.option("--until", "until", required=True,
              help="Last day the permission is valid (YYYY-MM-DD, inclusive, in limits.timezone).")
@click.option("--reference", required=True, help="Reference of X's written permission.")
@json_option
@pass_ctx
def entity_permit(obj: Context, name: str, limit_text: str, until: str, reference: str,
                  as_json: bool) -> None:
    """R4: record X's express written permission for a different limit."""
    e = record_permission(obj.gate, name, limit=limit_text, until=until, reference=reference,
                          actor=cli_actor(), channel="cli")
    p = e.permission
    assert p is not None  # just recorded
    through = permissions.last_day(p.valid_until_ms, obj.config.limits.timezone)
    emit(obj, e.to_dict(), f"R4: {name} may receive {permissions.shown(p.limit)} Post IDs "
                           f"per window through {through} (reference: {reference})")


@entity.command("list")
@json_option
@pass_ctx
def entity_list(obj: Context, as_json: bool) -> None:
    """List entities."""
    rows = [e.to_dict() for e in obj.gate.entities.all()]
    tz = obj.config.limits.timezone
    emit(obj, rows, table(
        ["NAME", "KIND", "POOL", "R3 EXEMPT", "R4 THROUGH", "R8 TERMS"],
        [[r["name"], r["kind"], r["pool"], bool(r["exemption"]),
          permissions.last_day(r["permission"]["until"], tz) if r["permission"] else None,
          r["terms"]["by"] if r["terms"] else None] for r in rows], empty="no entities"))


@entity.command("show")
@click.argument("name")
@json_option
@pass_ctx
def entity_show(obj: Context, name: str, as_json: bool) -> None:
    """Show one entity's facts."""
    data = obj.gate.entities.get(name).to_dict()
    emit(obj, data, "\n".join(f"{k:<11} {v if v is not None else '-'}" for k, v in data.items()))
