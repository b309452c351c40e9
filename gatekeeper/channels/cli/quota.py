"""`gatekeeper quota …`: used, limit, remaining and the next releases of capacity."""

from __future__ import annotations

from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import plural, table
from gatekeeper.domain import quota
from gatekeeper.rules import permissions


def _quota_text(q: dict[str, Any], tz: str) -> str:
    def n(v: int | None) -> str:
        return "unlimited" if v is None else f"{v:,}"

    lines = [f"{q['name']} ({q['kind']}) — {q['rule']}, {q['window']} window, as of {q['as_of']}"]
    exempt, p = q.get("exemption"), q.get("permission")
    r3 = exempt and ("R3: academic, non-commercial research, recorded by "
                     f"{exempt['recorded_by']}")
    through = p and f"through {permissions.last_day(p['until'], tz)}"
    r4 = p and f"R4: {n(p['limit'])} {through} ({p['reference']})"
    why = None
    if q["limit"] is None:  # "unlimited" once, with why, instead of limit and remaining
        why = r3 or r4 or "no limit"
        because = (r3 or (p and f"R4 permission {through} ({p['reference']})")
                   or "no limit applies")
        lines.append(f"  used       {n(q['used'])} (unlimited: {because})")
    else:
        lines += [f"  used       {n(q['used'])}", f"  limit      {n(q['limit'])}",
                  f"  remaining  {n(q['remaining'])}"]
    if r3 and why != r3:
        lines.append(f"  exempt     {r3}")
    if r4 and why != r4:
        lines.append(f"  permission {r4}")
    if q.get("pool"):
        pool = q["pool"]
        used = (f"used {pool['used']:,} (unlimited)" if pool["limit"] is None
                else f"{pool['used']:,} of {pool['limit']:,} used")
        lines.append(f"  pool       {pool['name']}: {used} (R10)")
    if q.get("user_ids") is not None:
        lines.append(f"  User IDs   R2: used {q['user_ids']:,} (User IDs are recorded, "
                     "not capped)")
    if q["releases"]:
        shown = q["releases"][:5]
        lines.append("  capacity returns:")
        lines += ["    " + row for row in table(
            ["AT", "FREES"], [[r["at"], r["amount"]] for r in shown], right=["FREES"]
        ).splitlines()]
    if len(q["releases"]) > 5:
        lines.append(f"    … and {plural(len(q['releases']) - 5, 'more release')} "
                     "(see --json)")
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
    emit(obj, q, _quota_text(q, obj.config.limits.timezone))


@quota_cmd.command("user")
@click.argument("name")
@json_option
@pass_ctx
def quota_user(obj: Context, name: str, as_json: bool) -> None:
    """R6: a recipient's hydrated objects in the day window."""
    q = quota.user_quota(obj.gate, name)
    emit(obj, q, _quota_text(q, obj.config.limits.timezone))
