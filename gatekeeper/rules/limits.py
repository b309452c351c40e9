"""What a request is counted against: windows, limits and counters, as plain data (R2, R4, R6).

The rules decide these; the ledger counts them in Lua. They live with the rules so that the
rules import nothing of the ledger (the ledger imports them from here), and how they travel to
a script (its ARGV layout) is the ledger's business, not theirs.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import datetime, timedelta
from datetime import time as dtime
from zoneinfo import ZoneInfo

from gatekeeper.config import LimitsConfig

DAY_MS = 86_400_000


@dataclass(frozen=True)
class Window:
    """How long usage counts, and the bucket width that rounds it (capacity only later)."""

    name: str  # as shown in the quota object: "30d", "rolling-24h", "calendar-day"
    length_ms: int
    width_ms: int
    timezone: str | None = None  # set for calendar-day windows

    def boundaries(self, around_ms: int) -> str:
        """Local midnights around a time, for the script to pick today's bounds by its clock."""
        if self.timezone is None:
            return ""
        zone = ZoneInfo(self.timezone)
        today = datetime.fromtimestamp(around_ms / 1000, zone).date()
        days = (today + timedelta(days=d) for d in range(-2, 3))
        return ",".join(
            str(int(datetime.combine(day, dtime(0), zone).timestamp() * 1000)) for day in days
        )


@functools.cache
def post_id_window(cfg: LimitsConfig) -> Window:
    """R2's window: the last N days (30), in 10-minute buckets."""
    return Window(f"{cfg.post_ids_window_days}d", cfg.post_ids_window_days * DAY_MS, 600_000)


@functools.cache
def hydrated_window(cfg: LimitsConfig) -> Window:
    """R6's window: any rolling 24 hours (1-minute buckets) or the calendar day in a zone."""
    if cfg.hydrated_window == "calendar-day":
        return Window("calendar-day", DAY_MS, 60_000, cfg.timezone)
    return Window("rolling-24h", DAY_MS, 60_000)


@dataclass(frozen=True)
class Limit:
    """A counter's limit: the base (None = unlimited, still counted) and any R4 permission."""

    base: int | None
    permit: int | None = None  # the permission's limit; None with until=0 means no permission
    permit_from_ms: int = 0
    permit_until_ms: int = 0


@dataclass(frozen=True)
class Counter:
    """One windowed count a request charges: whose, which rule, which limit, how much.

    `key` is the counter's Redis key as `gatekeeper.ledger.keys.counter` builds it; the rules
    never build or read it (see `gatekeeper.ledger.charges`)."""

    key: str
    rule: str  # the rule enforced ("R2", "R6"), or "-" for counted-only usage
    window: Window
    limit: Limit
    amount: int = 0


@dataclass(frozen=True)
class Charge:
    """What the rules decide a request charges: which counter (the pool whose store holds it,
    its scope and owner), under which rule, window and limit, and how much. The ledger turns
    it into a `Counter` with its key (`gatekeeper.ledger.charges`)."""

    pool: str  # the root entity: a pool's counters live together (R10)
    scope: str  # "r2" (Post IDs), "uid" (User IDs, recorded not capped), "r6" (hydrated)
    owner: str  # the entity or user counted
    rule: str
    window: Window
    limit: Limit
    amount: int = 0
