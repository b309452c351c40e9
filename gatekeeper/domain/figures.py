"""The monthly report's figures as plain data (R11): per entity and per recipient, the month's
totals, daily series and peaks, refusals grouped, the events that changed a limit and the
checks that audit and ledger agree. `report.month_report` computes them; `exports.report_pdf`
lays them out; `--json` prints their summary.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from gatekeeper.domain import auditrows
from gatekeeper.ledger.ledger import iso
from gatekeeper.rules.periods import (
    Exemption,
    PermissionPeriod,
    Pool,
    PoolLink,
    number,
    record_ms,
)

USAGE_KINDS = ("share.posts", "share.users", "export.xlsx", "export.pdf")


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
        outcome, message = r.get("outcome", ""), auditrows.describe(r, iso)
        rule = r.get("rule", "") or ("idempotency" if outcome == "conflict" else "")
        return Event(record_ms(r), r.get("actor", ""), r.get("entity", ""), r.get("recipient", ""),
                     r.get("channel", ""), r.get("kind", ""), outcome, rule,
                     number(r.get("requested")), number(r.get("granted")), message)


@dataclass
class RefusalGroup:
    rule: str
    outcome: str
    count: int = 0
    requested: int = 0
    entities: set[str] = field(default_factory=set)


@dataclass(frozen=True)
class Check:
    """Audit records against ledger counters for the month; `ok` says they agree."""

    what: str
    audit: int
    ledger: int
    ok: bool
    note: str  # why they agree, or what would have to hold (for a reader without a glossary)
    audit_text: str = ""  # the audit side in words, when it is more than one number


@dataclass
class NoticeMonth:
    """One recipient's deletion notices in the month (R9): opened, acknowledged (late: after
    the deadline), overdue at some moment of it, and open at its end."""

    recipient_kind: str  # "person" (hydrated exports) or "entity" (ID shares)
    recipient: str
    entity: str
    opened: int = 0
    acknowledged: int = 0
    acknowledged_late: int = 0
    overdue: int = 0
    open_at_end: int = 0
    ids: int = 0  # IDs to delete, over the notices opened in the month


@dataclass(frozen=True)
class NoticeFacts:
    """What the monthly report counts of a notice (`Notices.touching`): its recipient and
    times, without its deliveries."""

    id: str
    recipient_kind: str
    recipient: str
    entity: str
    opened_ms: int
    deadline_ms: int
    ids: int
    acked_ms: int | None
    acked_by: str | None


@dataclass(frozen=True)
class NoticeLate(NoticeFacts):
    """A notice overdue in the month: past its deadline, not (yet) acknowledged."""


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
    checkpoint: str = "not taken"  # the signed audit checkpoint written with it (R11)
    # R10: entities that received Post IDs again after 30 days, by shares of the month
    # (domain/redelivery.EntityFlag), most IDs first
    redelivered: list[Any] = field(default_factory=list)
    # Deletion notices (R9, issue 15): per recipient, and the overdue ones (noticeboard.month)
    notices: list[NoticeMonth] = field(default_factory=list)
    notices_overdue: list[NoticeLate] = field(default_factory=list)

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
            "redelivered_r10": {"entities": len(self.redelivered),
                                "shares": sum(len(f.findings) for f in self.redelivered),
                                "post_ids": sum(f.ids for f in self.redelivered)},
            "checks_ok": all(c.ok for c in self.checks),
            "notices_opened": sum(r.opened for r in self.notices),
            "notices_acknowledged": sum(r.acknowledged for r in self.notices),
            "notices_overdue": sum(r.overdue for r in self.notices),
        }

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        for g in out["refusals"]:
            g["entities"] = sorted(g["entities"])
        return out
