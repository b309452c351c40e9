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
- Deletion notices (R9): per recipient, opened, acknowledged and overdue in the month, from
  the notices themselves (`noticeboard.month`).

`month_report` returns plain data; `exports.report_pdf` lays it out; `monthly` delivers
it (``gatekeeper report`` and ``/report``). The periods of R3, R4 and R10 facts are rebuilt by
`periods`.

Just over ~400 lines: one pass over the month's records (`_Tally`) and what it feeds;
the figures it builds are plain data in `figures.py`.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from gatekeeper.domain import noticeboard, redelivery
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.domain.entities import Entity
from gatekeeper.domain.figures import (
    USAGE_KINDS,
    Check,
    EntityMonth,
    Event,
    RecipientMonth,
    RefusalGroup,
    ReportData,
    Totals,
)
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import periods
from gatekeeper.rules.errors import BadInput
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, hydrated_window, post_id_window
from gatekeeper.rules.outcomes import REFUSED
from gatekeeper.rules.periods import (
    Exemption,
    PermissionPeriod,
    PoolLink,
    number,
    record_ms,
)
from gatekeeper.rules.permissions import in_force

GRANTS = ("granted", "partial")
MONTH_RE = re.compile(r"([0-9]{4})-(0[1-9]|1[0-2])")
FIRST_MONTH, LAST_MONTH = "1970-01", "9999-11"  # the epoch; the last whose end a date can hold
GRACE_MS = DAY_MS  # a refund settles moments after its grant; read this far past the month
MAX_LISTED = 200  # refusals listed one by one; past this only counted


# --- months -----------------------------------------------------------------------------------


def month_bounds(month: str) -> tuple[int, int]:
    """[start, end) of a "YYYY-MM" month in UTC, epoch ms; BadInput for anything else."""
    m = MONTH_RE.fullmatch(month or "")
    if not m:
        raise BadInput(f"month must be YYYY-MM (e.g. 2026-10), not {month!r}", field="month",
                       value=str(month))
    if not FIRST_MONTH <= month <= LAST_MONTH:
        raise BadInput(f"month must be from {FIRST_MONTH} to {LAST_MONTH}, not {month!r}",
                       field="month", value=month)
    first = datetime(int(m[1]), int(m[2]), 1, tzinfo=UTC)
    nxt = (first + timedelta(days=32)).replace(day=1)
    return int(first.timestamp() * 1000), int(nxt.timestamp() * 1000)


def redis_now_ms(gate: Gate) -> int:
    """The store's clock (see gatekeeper.ledger.clock), which decides the report's month."""
    return gate.clock.now_ms()


def previous_month(now_ms: int) -> str:
    """The last full UTC month before `now_ms`."""
    first = datetime.fromtimestamp(now_ms / 1000, UTC).date().replace(day=1)
    return (first - timedelta(days=1)).strftime("%Y-%m")


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%d")


# --- reading the audit streams ----------------------------------------------------------------


def records(gate: Gate, since_ms: int | None, until_ms: int) -> Iterator[dict[str, str]]:
    """Audit records of every stream, oldest first, in [since_ms, until_ms) by their time."""
    log = AuditLog(gate.client).records(AuditFilter(since_ms=since_ms, until_ms=until_ms))
    for r in log:
        t = record_ms(r)
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
        t, outcome, kind = record_ms(r), r.get("outcome", ""), r.get("kind", "")
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
            granted = number(r.get("granted"))
            for totals in (self.by_entity[entity], self.by_recipient[recipient]):
                totals.net[kind] += granted
                totals.requests += 1
                totals.partial += outcome == "partial"
            self.recipient_entity[recipient] = entity
            if r.get("share_id"):
                self.grants[r["share_id"]] = (kind, entity, recipient)
            if r.get("removed_r9"):
                self.withheld += number(r["removed_r9"])
                self.with_withheld += 1
        elif kind in USAGE_KINDS and outcome == "replayed":
            self.by_entity[entity].replays += 1
            self.by_recipient[recipient].replays += 1
            self.recipient_entity[recipient] = entity
        elif outcome == "refunded":
            self._refund(r)
        elif outcome == "recounted":
            self._refund(r, sign=-1)  # a delivery counted again after its refund
        elif outcome in REFUSED:
            self._refusal(r, entity, recipient)
        elif kind.startswith("deletions.") and outcome == "ingested":
            self.deletions.append(Event.of(r))

    def _join(self, r: dict[str, str]) -> None:
        join = periods.pool_link(r, self.pool_of)
        if join is not None:
            self.joins.append(join)
            self.pool_of[join.entity] = join.pool

    def _refund(self, r: dict[str, str], sign: int = 1) -> None:
        """Take a refund back from the grant it returns (one before the month: not ours);
        with sign -1, add back a delivery the ledger counted again after refunding it."""
        grant = self.grants.get(r.get("share_id", ""))
        if grant is None:
            return
        kind, entity, recipient = grant
        back = sign * number(r.get("granted"))
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
    def read(gate: Gate, entities: list[Entity], people: list[tuple[str, str]],
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


def month_report(gate: Gate, month: str, *, actor: str = "", now_ms: int | None = None
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
        user_entity = {text(k): text(v) for k, v in gate.client.hgetall(keys.USERS).items()}

    # One pass over the history up to the month's end, and a grace period for refunds of its
    # last grants: R3/R4 changes from any time, everything else from the month.
    tally = _Tally(start, end)
    for r in records(gate, None, end + GRACE_MS):
        tally.add(r)
    exemptions = periods.exemptions(tally.changes, entities, start, end)
    permissions = periods.permissions(tally.changes, entities, start, end)
    pools = periods.pools(tally.joins, entities, end)
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
        checks=[], records=tally.count,
        redelivered=redelivery.flags(gate, start, end))  # R10, found after each share
    # R9 downstream (issue 15): who was told to delete what, and who confirmed in time.
    report.notices, report.notices_overdue = noticeboard.month(gate, start, end, now)
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
            if in_force(p.from_ms, p.until_ms, t):
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


def _deleted_now(gate: Gate) -> dict[str, int]:
    with failing_closed():
        pipe = gate.client.pipeline(transaction=False)
        for kind in ("posts", "users"):
            pipe.scard(keys.deleted(kind))
        posts, users = pipe.execute()
    return {"posts": int(posts), "users": int(users)}


def _affected(gate: Gate) -> dict[str, int]:
    deleted = gate.deletions.current()
    return gate.datasets.affected(deleted) if deleted.posts or deleted.users else {}


def _checks(report: ReportData, r2: int, uid: int, r6: int, exports_count: bool) -> list[Check]:
    """Where the audit records and the ledger's days must agree, and whether they do."""
    shared = report.total("share.posts")
    exported = report.total("export.xlsx") + report.total("export.pdf")
    people = sum(r.totals.net["export.xlsx"] + r.totals.net["export.pdf"]
                 for r in report.recipients if r.person)
    if exports_count:
        ok = shared <= r2 <= shared + exported
        r2_check = Check(
            "Post IDs counted for R2: IDs shared plus posts exported, against the R2 counters "
            "of every pool", shared, r2, ok,
            f"{'They agree' if ok else 'They disagree'}: exported posts count toward R2 and "
            f"exported User objects do not, so the counters must lie between the IDs shared "
            f"({shared:,}) and the IDs shared plus every object exported ({shared + exported:,})",
            audit_text=f"{shared:,} shared + {exported:,} exported")
    else:
        r2_check = Check("Post IDs shared, against the R2 counters of every pool", shared, r2,
                         shared == r2, _equal(shared, r2, "Post IDs"))
    users = report.total("share.users")
    return [
        r2_check,
        Check("User IDs shared, against the User ID counters", users, uid, users == uid,
              _equal(users, uid, "User IDs")),
        Check("Hydrated objects exported to people, against the R6 counters", people, r6,
              people == r6, _equal(people, r6, "objects")),
    ]


def _equal(audit: int, ledger: int, what: str) -> str:
    """Why an equal pair agrees (every unit recorded is counted once) or how far apart it is."""
    if audit == ledger:
        return (f"They agree: the {audit:,} {what} the audit log records as delivered are the "
                f"{ledger:,} the counters hold; each is counted once")
    return (f"They disagree by {abs(audit - ledger):,} {what}: every unit delivered must be "
            "counted once; run `gatekeeper audit verify`")


