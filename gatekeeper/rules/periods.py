"""Periods of the facts that change a limit, rebuilt from the audit records that made them (R11).

Exemptions (R3), written permissions (R4) and pool membership (R10) as they stood at any time:
the entity's hash holds only the latest facts, the audit streams every change with its time
and author. Records made since they carry a "facts" field (the fields written) are read from
it; older ones from their message. Plain Python, no I/O: the monthly report hands in records.
"""

from __future__ import annotations

import json
import re
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime

from gatekeeper.rules import policy
from gatekeeper.rules.permissions import in_force, read_stored
from gatekeeper.rules.subjects import Recipient as Entity

PERMIT_RE = re.compile(r"^limit (unlimited|[\d,]+) until (\S+); reference: (.*)$", re.S)
ACADEMIC_RE = re.compile(r"kind=(\w+) research=(yes|no)(?:; evidence: (.*))?", re.S)
ADD_PARENT_RE = re.compile(r"\bparent=(\S+)")  # entity.add records written before "facts"


@dataclass
class Exemption:
    """R3: an entity recorded as academic doing non-commercial research, for a period."""

    entity: str
    from_ms: int
    until_ms: int | None  # None: still in force
    recorded_by: str
    evidence: str
    ended_by: str = ""


@dataclass
class PermissionPeriod:
    """R4: X's written permission, from its recording until its end, revocation or successor."""

    entity: str
    limit: int | None
    from_ms: int
    until_ms: int  # when it stops applying (exclusive)
    reference: str
    recorded_by: str
    ended: str = "expiry"  # expiry | revoked | replaced
    ended_by: str = ""


@dataclass(frozen=True)
class PoolLink:
    """R10: an entity that joined a pool, created as a child or linked to a parent later."""

    at_ms: int
    actor: str
    channel: str
    entity: str
    parent: str
    pool: str  # the root whose R2 limit the entity's Post IDs count against from then on
    how: str  # "created" (entity add --parent) | "linked" (entity set-parent)
    former_pool: str  # linked: the pool it was the root of; created: ""
    merged_post_ids: int  # linked: Post IDs it had received in the R2 window, now the pool's
    message: str  # a link's message carries its reason


@dataclass(frozen=True)
class PoolMember:
    """R10: an entity in a pool at the month's end, and how and since when it was."""

    entity: str
    parent: str
    since_ms: int
    how: str  # "created" | "linked"


@dataclass
class Pool:
    """R10: a root with children at the month's end; all its members share its R2 limit."""

    root: str
    members: list[PoolMember]


def record_ms(r: dict[str, str]) -> int:
    t = r.get("time")
    if t and t.isdigit():
        return int(t)
    return int(r["id"].split("-")[0])


def number(v: str | None) -> int:
    """A numeric field of an audit record; 0 when absent or not a number."""
    try:
        return int(v or 0)
    except ValueError:
        return 0


def facts_of(r: dict[str, str]) -> dict[str, str] | None:
    """The facts an entity.* record wrote (its "facts" field), None for records written
    before records carried them."""
    return json.loads(r["facts"]) if r.get("facts") else None


def academic_fact(r: dict[str, str]) -> tuple[bool, str] | None:
    """(exempt, evidence) recorded by an R3 record; older records are read from the message."""
    facts = facts_of(r)
    if facts is not None:
        if "research" not in facts:
            return None
        return (facts.get("kind") == "academic" and facts["research"] == "1",
                facts.get("research_evidence", "").strip())
    m = ACADEMIC_RE.search(r.get("message", ""))
    if not m:
        return None
    return m[1] == "academic" and m[2] == "yes", (m[3] or "").strip()


def permit_fact(r: dict[str, str]) -> tuple[int | None, int, str] | None:
    """(limit or None for unlimited, until ms, reference) of an entity.permit record."""
    facts = facts_of(r)
    if facts is not None:
        limit = facts["permit_limit"]
        return (read_stored(limit), int(facts["permit_until"]),
                facts["permit_reference"])
    m = PERMIT_RE.match(r.get("message", ""))
    if not m:
        return None
    until = int(datetime.fromisoformat(m[2].replace("Z", "+00:00")).timestamp() * 1000)
    return read_stored(m[1]), until, m[3]


def exemptions(changes: list[dict[str, str]], entities: Mapping[str, Entity], start: int,
                end: int) -> list[Exemption]:
    """R3 periods overlapping the month, from entity.add/entity.academic records."""
    spans: list[Exemption] = []
    open_: dict[str, Exemption] = {}
    for r in changes:
        fact = academic_fact(r) if r.get("rule") == "R3" else None
        if fact is None:
            continue
        name, t = r.get("entity", ""), record_ms(r)
        exempt, evidence = fact
        if exempt and name not in open_:
            open_[name] = Exemption(name, t, None, r.get("actor", ""), evidence)
            spans.append(open_[name])
        elif exempt:
            open_[name].evidence = evidence or open_[name].evidence
        elif name in open_:
            ended = open_.pop(name)
            ended.until_ms, ended.ended_by = t, r.get("actor", "")
    for e in entities.values():  # the current facts: an exemption with no record found
        if policy.exempt(e) and e.name not in open_ and (e.research_recorded_at_ms or 0) < end:
            spans.append(Exemption(e.name, e.research_recorded_at_ms or 0, None,
                                   e.research_recorded_by or "", e.research_evidence or ""))
    return sorted((x for x in spans if x.until_ms is None or x.until_ms > start),
                  key=lambda x: (x.entity, x.from_ms))


def permissions(changes: list[dict[str, str]], entities: Mapping[str, Entity], start: int,
                 end: int) -> list[PermissionPeriod]:
    """R4 periods overlapping the month, from entity.permit/permit_revoked records."""
    spans: list[PermissionPeriod] = []
    current: dict[str, PermissionPeriod] = {}
    for r in changes:
        name, t, kind = r.get("entity", ""), record_ms(r), r.get("kind", "")
        before = current.get(name)
        if kind == "entity.permit":
            fact = permit_fact(r)
            if fact is None:
                continue
            if before is not None and in_force(before.from_ms, before.until_ms, t):
                before.until_ms, before.ended, before.ended_by = t, "replaced", r.get("actor", "")
            limit, until, reference = fact
            current[name] = PermissionPeriod(name, limit, t, until, reference,
                                             r.get("actor", ""))
            spans.append(current[name])
        elif (kind == "entity.permit_revoked" and before is not None
              and in_force(before.from_ms, before.until_ms, t)):
            before.until_ms, before.ended, before.ended_by = t, "revoked", r.get("actor", "")
    for name, p in current.items():  # the current facts are exact (the message rounds)
        now = entities[name].permission if name in entities else None
        if now is not None and now.valid_from_ms == p.from_ms and p.ended == "expiry":
            p.limit, p.until_ms, p.reference = now.limit, now.valid_until_ms, now.reference
    return sorted((p for p in spans if p.until_ms > start and p.from_ms < end),
                  key=lambda p: (p.entity, p.from_ms))


def pool_link(r: dict[str, str], pool_of: dict[str, str]) -> PoolLink | None:
    """The pool join an entity.add (with a parent) or entity.parent record made, else None.
    An entity.pool_closed record is the same link seen from the old pool: not a join."""
    kind, name = r.get("kind", ""), r.get("entity", "")
    if kind == "entity.parent":
        return PoolLink(record_ms(r), r.get("actor", ""), r.get("channel", ""), name,
                        r.get("parent", ""), r.get("pool", ""), "linked",
                        r.get("former_pool", name), number(r.get("merged_post_ids")),
                        r.get("message", ""))
    if kind != "entity.add":
        return None
    parent, root = _created_parent(r)
    if not parent:
        return None
    # A parent is in its pool already, so an old record's root is the parent's pool so far.
    return PoolLink(record_ms(r), r.get("actor", ""), r.get("channel", ""), name, parent,
                    root or pool_of.get(parent, parent), "created", "", 0, r.get("message", ""))


def _created_parent(r: dict[str, str]) -> tuple[str, str]:
    """(parent, root) an entity.add record wrote ("" for none); old records name no root."""
    facts = facts_of(r)
    if facts is not None:
        return facts.get("parent", ""), facts.get("root", "")
    m = ADD_PARENT_RE.search(r.get("message", ""))
    return ("" if m is None or m[1] == "-" else m[1]), ""


def pools(joins: list[PoolLink], entities: Mapping[str, Entity], end: int) -> list[Pool]:
    """R10 pools at the month's end, from the joins recorded before it.

    Pools only grow: a link moves a root without children, and nothing leaves a pool, so the
    last join of each entity before the end places it. A child on file that no record names
    (a store older than its records) counts from its creation; a linked one is trusted only
    to its record, since its link may be later than the month."""
    placed: dict[str, tuple[str, PoolMember]] = {
        j.entity: (j.pool, PoolMember(j.entity, j.parent, j.at_ms, j.how)) for j in joins}
    for e in entities.values():
        if (e.parent and e.former_root is None and e.name not in placed
                and e.created_at_ms < end):
            placed[e.name] = (e.root, PoolMember(e.name, e.parent, e.created_at_ms, "created"))
    members: dict[str, list[PoolMember]] = defaultdict(list)
    for root, member in placed.values():
        members[root].append(member)
    return [Pool(root, sorted(ms, key=lambda m: (m.since_ms, m.entity)))
            for root, ms in sorted(members.items())]
