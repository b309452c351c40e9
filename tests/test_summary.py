"""Pool summaries (ledger/summary.py, _window.lua's summarise) never disagree with the counters.

Random grants, partial grants, refusals, refunds, recounts and expiries, on fakeredis and on a
real Redis: after each step, every counter's summary entry is recounted from its buckets, and
whatever use the summary (with the active index) proves equals what a peek of the counter
reads. pools.lua, which the dashboard reads them with, is checked against the same recount.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta
from zoneinfo import ZoneInfo

import redis

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.scripts import Scripts
from gatekeeper.ledger.summary import Entry, queue_pools
from gatekeeper.rules.errors import QuotaExceeded
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

ROOT = "acme"
T0 = 1_700_000_000_000
ROLLING = Window("10s", 10_000, 1_000)
ZONE = "Europe/Berlin"
CALENDAR = Window("calendar-day", DAY_MS, 60_000, ZONE)


def counters(amount: int) -> list[Counter]:
    """A share's counters: the pool's R2, a child's R2 (both rolling) and a recipient's R6
    on a calendar day, each with a limit a few requests reach."""
    return [Counter(keys.counter(ROOT, "r2", ROOT), "R2", ROLLING, Limit(300), amount),
            Counter(keys.counter(ROOT, "r2", "acme-labs"), "R2", ROLLING, Limit(200), amount),
            Counter(keys.counter(ROOT, "r6", "ana"), "R6", CALENDAR, Limit(250), amount)]


def release(window: Window, start: int) -> int:
    """When a bucket starting at `start` leaves the window (_window.lua's release_at)."""
    if window.timezone is None:
        return start + window.width_ms + window.length_ms
    zone = ZoneInfo(window.timezone)
    day = datetime.fromtimestamp(start / 1000, zone).date() + timedelta(days=1)
    return int(datetime.combine(day, datetime.min.time(), zone).timestamp() * 1000)


def check(client: redis.Redis, ledger: Ledger, now: int) -> int:
    """Recount every counter's entry from its buckets; what the summary proves must be what
    a peek reads. Returns how many counters the summary proved."""
    proved = 0
    read = queue_pools(ledger, None, [ROOT], {}, [], now_ms=now)([])
    pool = read.pools[ROOT]
    summary = {k.decode(): v.decode() for k, v in client.hgetall(keys.summary(ROOT)).items()}
    assert summary == pool.summary
    for c in counters(0):
        scope, owner = c.key.rsplit(":", 2)[1:]
        buckets = [int(b.split(b":")[0]) for b in client.lrange(c.key, 0, -1)]
        sums = [int(b.split(b":")[1]) for b in client.lrange(c.key, 0, -1)]
        raw = summary.get(f"{scope}:{owner}")
        if raw is not None and buckets:
            entry = Entry.parse(raw)
            assert entry.total == sum(sums) == int(client.get(keys.counter_sum(c.key)) or 0)
            if entry.head:  # 0: a bucket was inserted out of order, the reader peeks
                assert entry.head == release(c.window, buckets[0])
                assert entry.tail == release(c.window, buckets[-1])
        peeked = ledger.peek([c], now_ms=now)[1][0].used
        proven = pool.used(ROOT, scope, owner, now)
        assert proven in (None, peeked), (c.key, proven, peeked)
        proved += proven is not None
    return proved


def test_the_summary_equals_a_recount_after_random_grants_refunds_and_expiries(
        redis_client: redis.Redis) -> None:
    ledger = Ledger(redis_client)
    rng = random.Random(14)
    now = T0
    open_shares: list[tuple[str, list[Counter]]] = []
    refunded: list[tuple[str, list[Counter]]] = []
    proved = 0
    for step in range(300):
        now += rng.choice([0, 1, 7, 300, 999, 1_000, 4_000, 11_000, 3_600_000, DAY_MS])
        action = rng.random()
        if action < 0.5:
            amount = rng.randrange(1, 120)
            cs = counters(amount)[: rng.choice([1, 2, 3])]
            share = f"s{step}"
            try:
                ledger.take(ROOT, cs, requested=amount, share_id=share, audit={"actor": "ana"},
                            partial=rng.random() < 0.3, now_ms=now)
            except QuotaExceeded:
                pass  # refused whole: counts nothing (expired buckets may still be popped)
            else:
                open_shares.append((share, cs))
        elif action < 0.8 and open_shares:
            share, cs = open_shares.pop(rng.randrange(len(open_shares)))
            delivered = rng.random() < 0.6
            ledger.settle(ROOT, share, cs, delivered=delivered, audit={}, now_ms=now)
            if not delivered:
                refunded.append((share, cs))
        elif refunded:
            # Delivered after all although refunded: counted again (settle.lua's recount),
            # into a bucket that may now sit before newer ones.
            share, cs = refunded.pop(rng.randrange(len(refunded)))
            ledger.settle(ROOT, share, cs, delivered=True, audit={}, now_ms=now)
        proved += check(redis_client, ledger, now)
        proved += check(redis_client, ledger, now + rng.choice([500, 9_000, 12_000, DAY_MS]))
    assert proved > 600  # most reads need no peek


def test_a_pool_joining_another_keeps_the_summary_exact(redis_client: redis.Redis) -> None:
    """move.lua rebuilds the new pool's R2 counter: its entry is rewritten, and the moved
    counters, which have none there, are peeked."""
    from gatekeeper.ledger.layout import LAYOUT

    ledger = Ledger(redis_client)
    redis_client.set(keys.LAYOUT, LAYOUT)
    redis_client.hset(keys.ENTITIES, mapping={"acme": "acme", "globex": "globex"})
    for name in ("acme", "globex"):
        redis_client.hset(keys.entity(name, name), mapping={"name": name, "root": name})
        redis_client.zadd(keys.pool_keys(name), {keys.entity(name, name): "inf"})
    now = int(redis_client.time()[0]) * 1000
    window = Window("30d", 30 * DAY_MS, 600_000)
    for name, amount in (("acme", 40), ("globex", 25)):
        c = Counter(keys.counter(name, "r2", name), "R2", window, Limit(1000), amount)
        ledger.take(name, [c], requested=amount, share_id=f"x-{name}", audit={})
        ledger.settle(name, f"x-{name}", [c], delivered=True, audit={})
    moved = ledger.move("globex", parent="acme", root="acme", r2_window=window, fields={})
    assert moved.status == "ok"
    read = queue_pools(ledger, None, ["acme"], {}, [])([])
    later = now + 1_000
    assert read.pools["acme"].used("acme", "r2", "acme", later) == 65
    assert read.pools["acme"].used("acme", "r2", "globex", later) is None  # peeked
    pool = Counter(keys.counter("acme", "r2", "acme"), "R2", window, Limit(1000))
    assert ledger.peek([pool])[1][0].used == 65


def test_pools_lua_is_one_of_the_ledger_scripts() -> None:
    assert "pools" in Scripts.NAMES
