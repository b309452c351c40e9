"""Usage per day, kept beside each counter for charts and the monthly report."""

from __future__ import annotations

import redis

from gatekeeper import keys
from gatekeeper.ledger import DAY_MS, Counter, Ledger, Limit, Window

T0 = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS  # a UTC midnight
WINDOW = Window("30d", 30 * DAY_MS, 600_000)


def counter(amount: int) -> Counter:
    return Counter(keys.counter("acme", "r2", "acme"), "R2", WINDOW, Limit(1_000), amount)


def test_daily_usage_counts_grants_per_utc_day_and_takes_back_refunds(
        client: redis.Redis) -> None:
    ledger = Ledger(client)
    ledger.take("acme", [counter(10)], requested=10, share_id="a", audit={}, now_ms=T0 + 5)
    ledger.take("acme", [counter(7)], requested=7, share_id="b", audit={},
                now_ms=T0 + DAY_MS - 1)
    ledger.take("acme", [counter(3)], requested=3, share_id="c", audit={},
                now_ms=T0 + DAY_MS + 1)
    ledger.take("acme", [counter(4)], requested=4, share_id="d", audit={},
                now_ms=T0 + DAY_MS + 2)
    ledger.settle("acme", "d", [counter(4)], delivered=False, audit={},
                  now_ms=T0 + DAY_MS + 3)
    day = T0 // DAY_MS
    assert ledger.daily([counter(0)]) == [{day: 17, day + 1: 3}]
