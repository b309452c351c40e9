"""Usage per day, kept beside each counter for charts and the monthly report."""

from __future__ import annotations

import redis

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

T0 = 1_780_000_000_000 - 1_780_000_000_000 % DAY_MS  # a UTC midnight
WINDOW = Window("30d", 30 * DAY_MS, 600_000)


def counter(amount: int) -> Counter:
    return Counter(keys.counter("acme", "r2", "acme"), "R2", WINDOW, Limit(1_000), amount)


def test_daily_usage_counts_grants_per_utc_day_and_takes_back_refunds(
        redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
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


def test_peek_next_only_agrees_with_the_full_peek(redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    for i, amount in enumerate((10, 0, 7, 3)):
        if amount:
            ledger.take("acme", [counter(amount)], requested=amount, share_id=f"s{i}", audit={},
                        now_ms=T0 + i * 3_600_000)
    ledger.take("acme", [counter(5)], requested=5, share_id="r", audit={}, now_ms=T0 + 5)
    ledger.settle("acme", "r", [counter(5)], delivered=False, audit={}, now_ms=T0 + 6)
    for at in (T0 + 7_200_000, T0 + 30 * DAY_MS + 700_000, T0 + 30 * DAY_MS + 3_700_000,
               T0 + 40 * DAY_MS):
        _, [full] = ledger.peek([counter(0)], now_ms=at)
        _, [brief] = ledger.peek([counter(0)], now_ms=at, next_only=True)
        assert (brief.used, brief.limit, brief.remaining) == (full.used, full.limit,
                                                              full.remaining)
        assert brief.releases == full.releases[:1]
