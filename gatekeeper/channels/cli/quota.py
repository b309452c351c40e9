"""`gatekeeper quota …`: used, limit, remaining and the next releases of capacity."""

from __future__ import annotations

from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group, emit, json_option, pass_ctx
from gatekeeper.domain import quota


def _quota_text(q: dict[str, Any]) -> str:
    def n(v: int | None) -> str:
        return "unlimited" if v is None else f"{v:,}"

    lines = [f"{q['name']} ({q['kind']}) — {q['rule']}, {q['window']} window, as of {q['as_of']}",
             f"  used       {n(q['used'])}", f"  limit      {n(q['limit'])}",
             f"  remaining  {n(q['remaining'])}"]
    if q.get("exemption"):
        lines.append("  exempt     R3: academic, non-commercial research "
                     f"(recorded by {q['exemption']['recorded_by']})")
    if q.get("permission"):
        p = q["permission"]
        lines.append(f"  permission R4: {n(p['limit'])} until {p['until']} ({p['reference']})")
    if q.get("pool"):
        p = q["pool"]
        lines.append(f"  pool       {p['name']}: {n(p['used'])} of {n(p['limit'])} used (R10)")
    for r in q["releases"][:5]:
        lines.append(f"  frees      {r['amount']:,} at {r['at']}")
    if len(q["releases"]) > 5:
        lines.append(f"  …          {len(q['releases']) - 5} more releases (see --json)")
    return "\n".join(lines)


@click.group("quota", cls=Group)
def quota_cmd() -> None:
    """Used, limit, remaining and the next releases of capacity."""


@quota_cmd.command("entity")
@click.argument("name")
@json_option
@pass_ctx
def quota_entity(obj: Context, name: str, as_json: bool) -> None:
    """R2: an entity's Post IDs over the window."""
    q = quota.entity_quota(obj.gate, name)
    emit(obj, q, _quota_text(q))


@quota_cmd.command("user")
@click.argument("name")
@json_option
@pass_ctx
def quota_user(obj: Context, name: str, as_json: bool) -> None:
    """R6: a recipient's hydrated objects in the day window."""
    q = quota.user_quota(obj.gate, name)
    emit(obj, q, _quota_text(q))
