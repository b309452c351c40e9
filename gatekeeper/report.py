"""The auditor's monthly report (R11): what left, to whom, under which limits, what was refused.

Two records feed it, and the report shows where they must agree: the audit streams (every answer
the ledger gave, at its time) and the ledger's usage per UTC day beside each counter. The month
is a calendar month in UTC, the ledger's days; every time in the report is UTC.

- Totals per entity and per recipient: units granted (``granted`` and ``partial`` answers) minus
  units refunded; a replayed answer counts zero; by kind (share.posts, share.users, export.xlsx,
  export.pdf). A refund counts against the grant it gives back, found by its share id.
- Peaks: the highest UTC day of each counter, and for R2 the highest 30-day total at the end of
  a day, against the limit in force at that moment (R3 exemption, R4 permission, or R2).
- Exemptions (R3) and permissions (R4) in force at any time in the month, rebuilt from their
  audit records and checked against the entity's current facts.
- Pools (R10) as they stood at the month's end, and every entity that joined one in the month
  (created with a parent, or linked later), rebuilt from the records before the month's end:
  an entity linked after it was still its own pool then.

`month_report` returns plain data; `exports.report_pdf` lays it out. `report_cli` is
``gatekeeper report``, `report_bp` serves ``/report`` to compliance officers and admins.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import tempfile
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, Any

import click
from flask import Blueprint, Response, request

from gatekeeper import keys, pages, policy
from gatekeeper.audit import AuditFilter, AuditLog
from gatekeeper.entities import Entity
from gatekeeper.errors import BadInput
from gatekeeper.ledger import DAY_MS, Counter, Limit, hydrated_window, iso, post_id_window
from gatekeeper.store import failing_closed

USAGE_KINDS = ("share.posts", "share.users", "export.xlsx", "export.pdf")
REFUSALS = ("refused", "denied", "conflict")
GRANTS = ("granted", "partial")
MONTH_RE = re.compile(r"^(\d{4})-(0[1-9]|1[0-2])$")
GRACE_MS = DAY_MS  # a refund settles moments after its grant; read this far past the month
MAX_LISTED = 200  # refusals listed one by one; past this only counted
PERMIT_RE = re.compile(r"^limit (unlimited|[\d,]+) until (\S+); reference: (.*)$", re.S)
ACADEMIC_RE = re.compile(r"kind=(\w+) research=(yes|no)(?:; evidence: (.*))?", re.S)
ADD_PARENT_RE = re.compile(r"\bparent=(\S+)")  # entity.add records written before "facts"


# --- the data ---------------------------------------------------------------------------------


@dataclass
class Totals:
    """One entity's or recipient's month: answers given and units that left, by kind."""

    net: dict[str, int] = field(default_factory=lambda: dict.fromkeys(USAGE_KINDS, 0))
    requests: int = 0  # answered granted or partial (replays not included)
    partial: int = 0
    replays: int = 0
    refunded: int = 0  # units given back (already taken out of `net`)
    refusals: int = 0  # refused, denied or conflict

    @property
    def units(self) -> int:
        return sum(self.net.values())

    @property
    def active(self) -> bool:
        return bool(self.requests or self.replays or self.refusals or self.refunded)


@dataclass
class EntityMonth:
    """An entity's month: totals, and its R2 counter (a root's counter is its whole pool)."""

    name: str
    kind: str
    pool: str
    totals: Totals
    daily: list[int]  # Post IDs on its R2 counter per day of the month
    limit: int | None  # the R2 limit in force at the end of the month (None: unlimited)
    peak_day: str | None = None
    peak_day_amount: int = 0
    peak_window: int = 0  # highest 30-day total at the end of a day of the month
    peak_window_day: str | None = None
    peak_window_limit: int | None = None  # the limit in force at that moment

    @property
    def peak_percent(self) -> float | None:
        if self.peak_window_limit is None or not self.peak_window_day:
            return None
        return 100.0 * self.peak_window / self.peak_window_limit


@dataclass
class RecipientMonth:
    """A recipient's month: an entity receiving ID files, or a person receiving exports (R6)."""

    name: str
    entity: str
    person: bool
    totals: Totals
    daily: list[int]  # hydrated objects on the R6 counter per UTC day (people only)
    limit: int | None
    peak_day: str | None = None
    peak_day_amount: int = 0

    @property
    def peak_percent(self) -> float | None:
        if self.limit is None or not self.peak_day:
            return None
        return 100.0 * self.peak_day_amount / self.limit


@dataclass(frozen=True)
class Event:
    """One audit record as the report shows it."""

    at_ms: int
    actor: str
    entity: str
    recipient: str
    channel: str
    kind: str
    outcome: str
    rule: str
    requested: int
    granted: int
    message: str

    @staticmethod
    def of(r: dict[str, str]) -> Event:
        outcome, message = r.get("outcome", ""), r.get("message", "")
        rule = r.get("rule", "") or ("idempotency" if outcome == "conflict" else "")
        if not message and outcome == "conflict":
            message = "Idempotency-Key already used for a different request; nothing counted"
        elif not message and outcome == "refused":
            at = _int(r.get("available_at"))
            message = (f"over the {rule} limit, refused whole; nothing counted; "
                       + (f"the whole request fits from {iso(at)}" if at > 0 else
                          "no release of capacity makes the whole request fit"))
        return Event(_ms(r), r.get("actor", ""), r.get("entity", ""), r.get("recipient", ""),
                     r.get("channel", ""), r.get("kind", ""), outcome, rule,
                     _int(r.get("requested")), _int(r.get("granted")), message)


@dataclass
class RefusalGroup:
    rule: str
    outcome: str
    count: int = 0
    requested: int = 0
    entities: set[str] = field(default_factory=set)


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


@dataclass(frozen=True)
class Check:
    """Audit records against ledger counters for the month; `ok` says they agree."""

    what: str
    audit: int
    ledger: int
    ok: bool
    note: str


@dataclass
class ReportData:
    month: str
    start_ms: int
    end_ms: int
    generated_ms: int
    generated_by: str
    limits: dict[str, Any]
    days: list[str]
    entities: list[EntityMonth]  # active ones, most Post IDs first
    idle_entities: list[str]
    recipients: list[RecipientMonth]
    refusals: list[RefusalGroup]
    refusal_events: list[Event]  # the first MAX_LISTED, oldest first
    refusal_count: int
    exemptions: list[Exemption]
    permissions: list[PermissionPeriod]
    pools: list[Pool]  # at the month's end
    pool_joins: list[PoolLink]  # entities that joined a pool in the month, oldest first
    deletions: list[Event]
    withheld_r9: int  # IDs left out of shares in the month because of the R9 lists
    shares_with_withheld: int
    deleted_now: dict[str, int]
    datasets_affected: dict[str, int]
    post_ids_daily: list[int]  # all R2 pool counters per day
    user_ids_daily: list[int]
    hydrated_daily: list[int]
    checks: list[Check]
    records: int  # audit records read for the month

    def total(self, kind: str) -> int:
        return sum(e.totals.net[kind] for e in self.entities)

    def top(self, n: int) -> list[EntityMonth]:
        """The n entities with the most Post IDs on their own counters in the month."""
        ranked = sorted(self.entities, key=lambda e: (-sum(e.daily), e.name))
        return [e for e in ranked if sum(e.daily)][:n]

    def joined(self, how: str) -> int:
        """Entities that joined a pool in the month `how` ("linked" or "created")."""
        return sum(j.how == how for j in self.pool_joins)

    def summary(self) -> dict[str, Any]:
        """The headline figures (what `gatekeeper report --json` prints)."""
        return {
            "month": self.month, "generated_at": iso(self.generated_ms),
            "generated_by": self.generated_by, "records": self.records,
            "entities_active": len(self.entities), "recipients_active": len(self.recipients),
            **{kind: self.total(kind) for kind in USAGE_KINDS},
            "refusals": {f"{g.rule}/{g.outcome}": g.count for g in self.refusals},
            "exemptions": len(self.exemptions), "permissions": len(self.permissions),
            "pools": len(self.pools), "pool_links": self.joined("linked"),
            "pool_children_created": self.joined("created"),
            "deletion_ingests": len(self.deletions), "withheld_r9": self.withheld_r9,
            "checks_ok": all(c.ok for c in self.checks),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for g in out["refusals"]:
            g["entities"] = sorted(g["entities"])
        return out


# --- months -----------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of a "YYYY-MM" month in UTC, epoch ms; BadInput for anything else."""
    m = MONTH_RE.match(month or "")
    if not m:
        raise BadInput(f"month must be YYYY-MM (e.g. 2026-10), not {month!r}")
    first = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return int(first.timestamp() * 1000), int(nxt.timestamp() * 1000)


def redis_now_ms(gate: Any) -> int:
    with failing_closed():
        seconds, micros = gate.client.time()
    return int(seconds) * 1000 + int(micros) // 1000


def previous_month(now_ms: int) -> str:
    """The last full UTC month before `now_ms`."""
    first = datetime.fromtimestamp(now_ms / 1000, UTC).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


def _ms(r: dict[str, str]) -> int:
    t = r.get("time")
    if t and t.isdigit():
        return int(t)
    return int(r["id"].split("-")[0])


def _int(v: str | None) -> int:
    try:
        return int(v or 0)
    except ValueError:
        return 0


# --- reading the audit streams ----------------------------------------------------------------


def records(gate: Any, since_ms: int | None, until_ms: int) -> Iterator[dict[str, str]]:
    """Audit records of every stream, oldest first, in [since_ms, until_ms) by their time."""
    log = AuditLog(gate.client).records(AuditFilter(since_ms=since_ms, until_ms=until_ms))
    for r in log:
        t = _ms(r)
        if (since_ms is None or t >= since_ms) and t < until_ms:
            yield r


# --- building the report ----------------------------------------------------------------------


class _Tally:
    """One pass over the audit records: totals, refusals, deletion ingests, R3/R4 changes,
    R10 pool joins."""

    def __init__(self, start: int, end: int) -> None:
        self.start, self.end = start, end
        self.by_entity: dict[str, Totals] = defaultdict(Totals)
        self.by_recipient: dict[str, Totals] = defaultdict(Totals)
        self.recipient_entity: dict[str, str] = {}
        self.grants: dict[str, tuple[str, str, str]] = {}  # share id -> kind, entity, recipient
        self.groups: dict[tuple[str, str], RefusalGroup] = {}
        self.refusal_events: list[Event] = []
        self.deletions: list[Event] = []
        self.changes: list[dict[str, str]] = []  # R3 and R4 records up to the month's end
        self.joins: list[PoolLink] = []  # R10, up to the month's end
        self.pool_of: dict[str, str] = {}  # entity -> pool, as the joins so far left it
        self.withheld = self.with_withheld = self.count = 0

    def add(self, r: dict[str, str]) -> None:
        t, outcome, kind = _ms(r), r.get("outcome", ""), r.get("kind", "")
        if outcome == "changed" and r.get("rule") in ("R3", "R4") and t < self.end:
            self.changes.append(r)
        if outcome == "changed" and t < self.end:
            self._join(r)
        if t < self.start:
            return
        if t >= self.end:  # the grace period: only refunds of the month's grants
            if outcome == "refunded":
                self._refund(r)
            return
        self.count += 1
        entity, recipient = r.get("entity", ""), r.get("recipient", "")
        if kind in USAGE_KINDS and outcome in GRANTS:
            granted = _int(r.get("granted"))
            for totals in (self.by_entity[entity], self.by_recipient[recipient]):
                totals.net[kind] += granted
                totals.requests += 1
                totals.partial += outcome == "partial"
            self.recipient_entity[recipient] = entity
            if r.get("share_id"):
                self.grants[r["share_id"]] = (kind, entity, recipient)
            if r.get("removed_r9"):
                self.withheld += _int(r["removed_r9"])
                self.with_withheld += 1
        elif kind in USAGE_KINDS and outcome == "replayed":
            self.by_entity[entity].replays += 1
            self.by_recipient[recipient].replays += 1
            self.recipient_entity[recipient] = entity
        elif outcome == "refunded":
            self._refund(r)
        elif outcome in REFUSALS:
            self._refusal(r, entity, recipient)
        elif kind.startswith("deletions.") and outcome == "ingested":
            self.deletions.append(Event.of(r))

    def _join(self, r: dict[str, str]) -> None:
        join = _pool_link(r, self.pool_of)
        if join is not None:
            self.joins.append(join)
            self.pool_of[join.entity] = join.pool

    def _refund(self, r: dict[str, str]) -> None:
        """Take a refund back from the grant it returns (one before the month: not ours)."""
        grant = self.grants.get(r.get("share_id", ""))
        if grant is None:
            return
        kind, entity, recipient = grant
        back = _int(r.get("granted"))
        for totals in (self.by_entity[entity], self.by_recipient[recipient]):
            totals.net[kind] -= back
            totals.refunded += back

    def _refusal(self, r: dict[str, str], entity: str, recipient: str) -> None:
        ev = Event.of(r)
        g = self.groups.setdefault((ev.rule, ev.outcome), RefusalGroup(ev.rule, ev.outcome))
        g.count += 1
        g.requested += ev.requested
        if entity:
            g.entities.add(entity)
            self.by_entity[entity].refusals += 1
        if recipient:
            self.by_recipient[recipient].refusals += 1
            self.recipient_entity.setdefault(recipient, entity)
        if len(self.refusal_events) < MAX_LISTED:
            self.refusal_events.append(ev)


@dataclass
class _Days:
    """The ledger's usage per UTC day: R2 per entity, User IDs per entity, R6 per person."""

    r2: dict[str, dict[int, int]]
    uid: dict[str, dict[int, int]]
    r6: dict[str, dict[int, int]]

    @staticmethod
    def read(gate: Any, entities: list[Entity], people: list[tuple[str, str]],
             days: range) -> _Days:
        cfg = gate.config.limits
        r2w, r6w = post_id_window(cfg), hydrated_window(cfg)
        counters = [Counter(keys.counter(e.root, "r2", e.name), "R2", r2w, Limit(None))
                    for e in entities]
        counters += [Counter(keys.counter(e.root, "uid", e.name), "-", r2w, Limit(None))
                     for e in entities]
        counters += [Counter(keys.counter(root, "r6", n), "R6", r6w, Limit(None))
                     for n, root in people]
        daily = gate.ledger.daily(counters, days)
        n = len(entities)
        names = [e.name for e in entities]
        return _Days(dict(zip(names, daily[:n], strict=True)),
                     dict(zip(names, daily[n:2 * n], strict=True)),
                     dict(zip((p for p, _ in people), daily[2 * n:], strict=True)))


def month_report(gate: Any, month: str, *, actor: str = "", now_ms: int | None = None
                 ) -> ReportData:
    """Everything the auditor's report for `month` ("YYYY-MM", UTC) shows, as plain data."""
    start, end = month_bounds(month)
    now = now_ms if now_ms is not None else redis_now_ms(gate)
    if start > now:
        raise BadInput(f"month {month} has not started yet; nothing to report")
    cfg = gate.config.limits
    days = [_day(t) for t in range(start, end, DAY_MS)]
    first_day = start // DAY_MS

    def month_series(d: dict[int, int]) -> list[int]:
        return [d.get(first_day + i, 0) for i in range(len(days))]

    entities = {e.name: e for e in gate.entities.all()}
    with failing_closed():
        user_entity = {k.decode(): v.decode() for k, v in gate.client.hgetall(keys.USERS).items()}

    # One pass over the history up to the month's end, and a grace period for refunds of its
    # last grants: R3/R4 changes from any time, everything else from the month.
    tally = _Tally(start, end)
    for r in records(gate, None, end + GRACE_MS):
        tally.add(r)
    exemptions = _exemptions(tally.changes, entities, start, end)
    permissions = _permissions(tally.changes, entities, start, end)
    pools = _pools(tally.joins, entities, end)
    pool_at_end = {m.entity: p.root for p in pools for m in p.members}
    ents = sorted(entities.values(), key=lambda e: e.name)
    # The month's days, and a window before it for the rolling R2 peaks.
    ledger = _Days.read(gate, ents, [(n, entities[e].root) for n, e in sorted(user_entity.items())
                                     if e in entities],
                        range(first_day - cfg.post_ids_window_days, first_day + len(days)))

    limits = _Limits(cfg.post_ids_per_entity, exemptions, permissions)
    rows: list[EntityMonth] = []
    idle: list[str] = []
    for e in ents:
        totals, d = tally.by_entity.get(e.name, Totals()), ledger.r2[e.name]
        # The pool it was in then: a link after the month does not reach back into it.
        row = EntityMonth(e.name, e.kind, pool_at_end.get(e.name, e.name), totals,
                          month_series(d),
                          limits.at(e.name, end - 1))
        if not (totals.active or any(row.daily)):
            idle.append(e.name)
            continue
        linked = [(m.linked_at_ms // DAY_MS, ledger.r2[m.name]) for m in ents
                  if m.root == e.name and m.linked_at_ms is not None and m.linked_at_ms < end]
        _peaks(row, d, first_day, days, cfg.post_ids_window_days, limits, linked)
        rows.append(row)
    for name in sorted(set(tally.by_entity) - set(entities) - {""}):  # named, not on file
        rows.append(EntityMonth(name, "-", "-", tally.by_entity[name], [0] * len(days),
                                limits.at(name, end - 1)))
    rows.sort(key=lambda r: (-r.totals.net["share.posts"], -sum(r.daily), r.name))

    r6 = {n: month_series(d) for n, d in ledger.r6.items()}
    recipients: list[RecipientMonth] = []
    for name in sorted((set(tally.by_recipient) | {n for n, s in r6.items() if any(s)}) - {""}):
        person = name in user_entity
        series = r6.get(name) or [0] * len(days)
        rec = RecipientMonth(name, tally.recipient_entity.get(name) or user_entity.get(name, ""),
                             person, tally.by_recipient.get(name, Totals()), series,
                             cfg.hydrated_per_recipient if person else None)
        if any(series):
            peak = max(range(len(days)), key=lambda i: (series[i], -i))
            rec.peak_day, rec.peak_day_amount = days[peak], series[peak]
        recipients.append(rec)
    recipients.sort(key=lambda r: (not r.person, -r.totals.units, r.name))

    n = len(days)
    # Every pool once a day: the own days of that day's roots (R10: a linked entity's until
    # its link; from the link's day its pool's days hold it).
    post_ids = _sum_series([[v if e.root_on(first_day + i) else 0
                             for i, v in enumerate(month_series(ledger.r2[e.name]))]
                            for e in ents], n)
    user_ids = _sum_series([month_series(d) for d in ledger.uid.values()], n)
    hydrated = _sum_series(list(r6.values()), n)
    report = ReportData(
        month=month, start_ms=start, end_ms=end, generated_ms=now, generated_by=actor,
        limits={"post_ids_per_entity": cfg.post_ids_per_entity,
                "post_ids_window_days": cfg.post_ids_window_days,
                "hydrated_per_recipient": cfg.hydrated_per_recipient,
                "hydrated_window": cfg.hydrated_window, "timezone": cfg.timezone,
                "hydrated_counts_toward_post_ids": cfg.hydrated_counts_toward_post_ids},
        days=days, entities=rows, idle_entities=idle, recipients=recipients,
        refusals=sorted(tally.groups.values(), key=lambda g: (g.rule, g.outcome)),
        refusal_events=tally.refusal_events,
        refusal_count=sum(g.count for g in tally.groups.values()),
        exemptions=exemptions, permissions=permissions, pools=pools,
        pool_joins=[j for j in tally.joins if j.at_ms >= start], deletions=tally.deletions,
        withheld_r9=tally.withheld, shares_with_withheld=tally.with_withheld,
        deleted_now=_deleted_now(gate), datasets_affected=_affected(gate),
        post_ids_daily=post_ids, user_ids_daily=user_ids, hydrated_daily=hydrated,
        checks=[], records=tally.count)
    report.checks = _checks(report, sum(post_ids), sum(user_ids), sum(hydrated),
                            cfg.hydrated_counts_toward_post_ids)
    return report


def _sum_series(series: list[list[int]], n: int) -> list[int]:
    return [sum(s[i] for s in series) for i in range(n)]


class _Limits:
    """R2's limit of each entity at any moment of the month, from the rebuilt R3/R4 periods."""

    def __init__(self, base: int, exemptions: list[Exemption],
                 permissions: list[PermissionPeriod]) -> None:
        self.base = base
        self.exempt: dict[str, list[Exemption]] = defaultdict(list)
        self.permits: dict[str, list[PermissionPeriod]] = defaultdict(list)
        for x in exemptions:
            self.exempt[x.entity].append(x)
        for p in permissions:
            self.permits[p.entity].append(p)

    def at(self, entity: str, t: int) -> int | None:
        """An R4 permission in force replaces the limit; else an R3 exemption lifts it."""
        for p in self.permits.get(entity, ()):
            if p.from_ms <= t < p.until_ms:
                return p.limit
        for x in self.exempt.get(entity, ()):
            if x.from_ms <= t and (x.until_ms is None or t < x.until_ms):
                return None
        return self.base


def _peaks(row: EntityMonth, d: dict[int, int], first_day: int, days: list[str],
           window_days: int, limits: _Limits,
           linked: Sequence[tuple[int, dict[int, int]]] = ()) -> None:
    """The highest day, and the highest 30-day total at a day's end against its limit then.

    `linked`: (day of the link, own days) of entities linked into this pool (R10). From the
    day of its link, what a linked entity received before it — still in the window — counts
    against the pool, as the ledger merged it then."""
    if any(row.daily):
        peak = max(range(len(days)), key=lambda i: (row.daily[i], -i))
        row.peak_day, row.peak_day_amount = days[peak], row.daily[peak]
    best: tuple[float, int, int] | None = None
    # At the end of day D the window holds exactly days D-(N-1)..D (buckets leave whole).
    total = sum(d.get(first_day - 1 - k, 0) for k in range(window_days))
    for i in range(len(days)):
        day = first_day + i
        total += d.get(day, 0) - d.get(day - window_days, 0)
        pooled = total + sum(own.get(x, 0) for link_day, own in linked if link_day <= day
                             for x in range(day - window_days + 1, link_day))
        if not pooled:
            continue
        limit = limits.at(row.name, (day + 1) * DAY_MS - 1)
        key = (pooled / limit if limit else -1.0, pooled, -i)
        if best is None or key > best:
            best = key
            row.peak_window, row.peak_window_day, row.peak_window_limit = pooled, days[i], limit


def _facts(r: dict[str, str]) -> dict[str, str] | None:
    """The facts an entity.* record wrote (its "facts" field), None for records written
    before records carried them."""
    return json.loads(r["facts"]) if r.get("facts") else None


def _academic(r: dict[str, str]) -> tuple[bool, str] | None:
    """(exempt, evidence) recorded by an R3 record; older records are read from the message."""
    facts = _facts(r)
    if facts is not None:
        if "research" not in facts:
            return None
        return (facts.get("kind") == "academic" and facts["research"] == "1",
                facts.get("research_evidence", "").strip())
    m = ACADEMIC_RE.search(r.get("message", ""))
    if not m:
        return None
    return m[1] == "academic" and m[2] == "yes", (m[3] or "").strip()


def _permit(r: dict[str, str]) -> tuple[int | None, int, str] | None:
    """(limit or None for unlimited, until ms, reference) of an entity.permit record."""
    facts = _facts(r)
    if facts is not None:
        limit = facts["permit_limit"]
        return (None if limit == "unlimited" else int(limit), int(facts["permit_until"]),
                facts["permit_reference"])
    m = PERMIT_RE.match(r.get("message", ""))
    if not m:
        return None
    until = int(datetime.fromisoformat(m[2].replace("Z", "+00:00")).timestamp() * 1000)
    return None if m[1] == "unlimited" else int(m[1].replace(",", "")), until, m[3]


def _exemptions(changes: list[dict[str, str]], entities: dict[str, Entity], start: int,
                end: int) -> list[Exemption]:
    """R3 periods overlapping the month, from entity.add/entity.academic records."""
    spans: list[Exemption] = []
    open_: dict[str, Exemption] = {}
    for r in changes:
        fact = _academic(r) if r.get("rule") == "R3" else None
        if fact is None:
            continue
        name, t = r.get("entity", ""), _ms(r)
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


def _permissions(changes: list[dict[str, str]], entities: dict[str, Entity], start: int,
                 end: int) -> list[PermissionPeriod]:
    """R4 periods overlapping the month, from entity.permit/permit_revoked records."""
    spans: list[PermissionPeriod] = []
    current: dict[str, PermissionPeriod] = {}
    for r in changes:
        name, t, kind = r.get("entity", ""), _ms(r), r.get("kind", "")
        before = current.get(name)
        if kind == "entity.permit":
            fact = _permit(r)
            if fact is None:
                continue
            if before is not None and before.until_ms > t:
                before.until_ms, before.ended, before.ended_by = t, "replaced", r.get("actor", "")
            limit, until, reference = fact
            current[name] = PermissionPeriod(name, limit, t, until, reference,
                                             r.get("actor", ""))
            spans.append(current[name])
        elif kind == "entity.permit_revoked" and before is not None and before.until_ms > t:
            before.until_ms, before.ended, before.ended_by = t, "revoked", r.get("actor", "")
    for name, p in current.items():  # the current facts are exact (the message rounds)
        fact = entities[name].permission if name in entities else None
        if fact is not None and fact.valid_from_ms == p.from_ms and p.ended == "expiry":
            p.limit, p.until_ms, p.reference = fact.limit, fact.valid_until_ms, fact.reference
    return sorted((p for p in spans if p.until_ms > start and p.from_ms < end),
                  key=lambda p: (p.entity, p.from_ms))


def _pool_link(r: dict[str, str], pool_of: dict[str, str]) -> PoolLink | None:
    """The pool join an entity.add (with a parent) or entity.parent record made, else None.
    An entity.pool_closed record is the same link seen from the old pool: not a join."""
    kind, name = r.get("kind", ""), r.get("entity", "")
    if kind == "entity.parent":
        return PoolLink(_ms(r), r.get("actor", ""), r.get("channel", ""), name,
                        r.get("parent", ""), r.get("pool", ""), "linked",
                        r.get("former_pool", name), _int(r.get("merged_post_ids")),
                        r.get("message", ""))
    if kind != "entity.add":
        return None
    parent, root = _created_parent(r)
    if not parent:
        return None
    # A parent is in its pool already, so an old record's root is the parent's pool so far.
    return PoolLink(_ms(r), r.get("actor", ""), r.get("channel", ""), name, parent,
                    root or pool_of.get(parent, parent), "created", "", 0, r.get("message", ""))


def _created_parent(r: dict[str, str]) -> tuple[str, str]:
    """(parent, root) an entity.add record wrote ("" for none); old records name no root."""
    facts = _facts(r)
    if facts is not None:
        return facts.get("parent", ""), facts.get("root", "")
    m = ADD_PARENT_RE.search(r.get("message", ""))
    return ("" if m is None or m[1] == "-" else m[1]), ""


def _pools(joins: list[PoolLink], entities: dict[str, Entity], end: int) -> list[Pool]:
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


def _deleted_now(gate: Any) -> dict[str, int]:
    with failing_closed():
        pipe = gate.client.pipeline(transaction=False)
        for kind in ("posts", "users"):
            pipe.scard(keys.deleted(kind))
        posts, users = pipe.execute()
    return {"posts": int(posts), "users": int(users)}


def _affected(gate: Any) -> dict[str, int]:
    deleted = gate.deletions.current()
    return gate.datasets.affected(deleted) if deleted.posts or deleted.users else {}


def _checks(report: ReportData, r2: int, uid: int, r6: int, exports_count: bool) -> list[Check]:
    """Where the audit records and the ledger's days must agree, and whether they do."""
    shared = report.total("share.posts")
    exported = report.total("export.xlsx") + report.total("export.pdf")
    people = sum(r.totals.net["export.xlsx"] + r.totals.net["export.pdf"]
                 for r in report.recipients if r.person)
    if exports_count:
        r2_check = Check("Post IDs: shares (+ exported posts) vs R2 pool counters", shared, r2,
                         shared <= r2 <= shared + exported,
                         "exported posts count toward R2 too; exported User objects do not, so "
                         "the counters lie between the shares and shares + exports")
    else:
        r2_check = Check("Post IDs: shares vs R2 pool counters", shared, r2, shared == r2,
                         "must be equal")
    return [
        r2_check,
        Check("User IDs: shares vs User ID counters", report.total("share.users"), uid,
              report.total("share.users") == uid, "must be equal"),
        Check("Hydrated objects: exports vs R6 counters", people, r6, people == r6,
              "must be equal"),
    ]


# --- the PDF, written atomically ----------------------------------------------------------------


def write_pdf(report: ReportData, stream: IO[bytes]) -> int:
    """Lay the report out as a PDF into `stream`; the number of pages."""
    from exports.report_pdf import write_report_pdf

    return write_report_pdf(report, stream)


def write_file(report: ReportData, out: Path) -> int:
    """Write the PDF beside `out` and rename it into place: `out` is whole or untouched."""
    tmp = None
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
        with os.fdopen(fd, "wb") as fh:
            pages_written = write_pdf(report, fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException as exc:
        if tmp is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp)
        if isinstance(exc, OSError):
            raise BadInput(f"{out}: cannot write the report ({exc.strerror or exc}); "
                           "nothing was written") from exc
        raise
    return pages_written


# --- the command --------------------------------------------------------------------------------


def _set_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    from gatekeeper.cli import Context  # late: gatekeeper.cli adds this command at its end

    ctx.ensure_object(Context).json = value
    return value


@click.command("report")
@click.option("--month", help="YYYY-MM, a calendar month in UTC (default: the previous full "
                              "month).")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False),
              help="The PDF to write (written beside it, then renamed into place).")
@click.option("--json", "as_json", is_flag=True, callback=_set_json,
              help="Print the headline figures as JSON.")
@click.pass_context
def report_cli(ctx: click.Context, month: str | None, out: Path, as_json: bool) -> None:
    """R11: the auditor's monthly compliance report as a PDF."""
    import json

    from gatekeeper.cli import Context, _actor

    obj = ctx.find_object(Context) or Context(None)
    gate = obj.gate
    if month is not None:
        month_bounds(month)  # a bad month is refused before anything is read
    now = redis_now_ms(gate)
    report = month_report(gate, month or previous_month(now), actor=_actor(), now_ms=now)
    n = write_file(report, out)
    data = {**report.summary(), "out": str(out), "pages": n}
    if as_json:
        click.echo(json.dumps(data, indent=2, ensure_ascii=False))
        return
    click.echo(f"R11: compliance report for {report.month} -> {out} ({n} pages; "
               f"{report.records:,} audit records, {len(report.entities):,} active entities, "
               f"{report.refusal_count:,} refusals)")
    for c in report.checks:
        if not c.ok:
            click.echo(f"warning: {c.what}: audit {c.audit:,} vs ledger {c.ledger:,}", err=True)


# --- the page -----------------------------------------------------------------------------------

report_bp = Blueprint("report", __name__)


@report_bp.get("/report")
@pages.role_required(*policy.MAY_RECORD_COMPLIANCE)
def report_download() -> Response:
    """The month's report as a PDF download (?month=YYYY-MM; default the previous month)."""
    gate = pages.gate()
    month = request.args.get("month") or None
    if month is not None:
        month_bounds(month)
    now = redis_now_ms(gate)
    report = month_report(gate, month or previous_month(now), actor=pages.me().name,
                          now_ms=now)
    spool = tempfile.SpooledTemporaryFile(max_size=8 << 20)  # noqa: SIM115 - the response closes it
    try:
        write_pdf(report, spool)
        size = spool.tell()
        spool.seek(0)
    except BaseException:
        spool.close()
        raise

    def chunks() -> Iterator[bytes]:
        while chunk := spool.read(1 << 16):
            yield chunk

    resp = Response(chunks(), mimetype="application/pdf", headers={
        "Content-Disposition": f'attachment; filename="gatekeeper-report-{report.month}.pdf"',
        "Content-Length": str(size), "Cache-Control": "no-store"})
    resp.call_on_close(spool.close)
    return resp

