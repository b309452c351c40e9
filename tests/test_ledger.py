"""The quota ledger's Lua scripts, through the Python API, on fakeredis and on a real Redis.

Time is driven with ``now_ms`` so every expected value below is worked out by hand from the
bucket arithmetic of ``gatekeeper/ledger/lua/_window.lua``: a bucket starts at
floor(now/width)*width
and leaves a rolling window at start + width + length (its latest possible member has left).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

import pytest
import redis
from conftest import real_client

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import CounterState, Idempotency, Ledger, iso
from gatekeeper.rules.errors import (
    Conflict,
    InProgress,
    PoolMoved,
    QuotaExceeded,
    StoreUnavailable,
)
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

ROOT = "acme"
T0 = 1_700_000_000_000  # 2023-11-14T22:13:20Z, a multiple of every bucket width used here
LENGTH = 10_000
WIDTH = 1_000
ROLLING = Window("10s", LENGTH, WIDTH)
ENTITY_KEY = keys.counter(ROOT, "r2", ROOT)
USER_KEY = keys.counter(ROOT, "r6", "alice")
AUDIT_KEY = keys.audit(ROOT)


def r2(amount: int = 0, limit: Limit | None = None, window: Window = ROLLING) -> Counter:
    """The entity's R2 counter (Post IDs), limit 100 unless told."""
    return Counter(ENTITY_KEY, "R2", window, limit or Limit(100), amount)


def r6(amount: int = 0, limit: Limit | None = None, window: Window = ROLLING) -> Counter:
    """A user's R6 counter (hydrated objects), limit 100 unless told."""
    return Counter(USER_KEY, "R6", window, limit or Limit(100), amount)


def take(ledger: Ledger, counters: list[Counter], now_ms: int, share_id: str = "s", **kw):
    """Take every counter's amount (the first counter's amount is the request)."""
    kw.setdefault("requested", counters[0].amount)
    kw.setdefault("audit", {"actor": "alice", "channel": "api"})
    return ledger.take(ROOT, counters, share_id=share_id, now_ms=now_ms, **kw)


def used(ledger: Ledger, counter: Counter, now_ms: int) -> int:
    return ledger.peek([counter], now_ms=now_ms)[1][0].used


def buckets(redis_client: redis.Redis, key: str) -> list[bytes]:
    return redis_client.lrange(key, 0, -1)


def audit_records(redis_client: redis.Redis) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in redis_client.xrange(AUDIT_KEY)
    ]


@pytest.fixture
def ledger(redis_client: redis.Redis) -> Ledger:
    return Ledger(redis_client)


# --- refusal and partial grants ------------------------------------------------------------


def test_refusal_is_whole_changes_no_counter_and_appends_one_refused_audit_record(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(95)], T0 + 100, "first")
    before = ledger.peek([r2()], now_ms=T0 + 500)
    stored = (buckets(redis_client, ENTITY_KEY), redis_client.get(ENTITY_KEY + ":sum"))
    audited = len(audit_records(redis_client))

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(10)], T0 + 500, "second")

    assert refused.value.rule == "R2"
    assert refused.value.details["limit"] == 100
    assert refused.value.details["used"] == 95
    assert refused.value.details["requested"] == 10
    assert refused.value.details["remaining"] == 5
    assert ledger.peek([r2()], now_ms=T0 + 500) == before
    assert (buckets(redis_client, ENTITY_KEY), redis_client.get(ENTITY_KEY + ":sum")) == stored
    assert not redis_client.exists(keys.share(ROOT, "second"))  # nothing reserved to settle
    records = audit_records(redis_client)
    assert len(records) == audited + 1
    last = records[-1]
    assert last["time"] == str(T0 + 500)
    assert last["outcome"] == "refused"
    assert last["rule"] == "R2"
    assert last["requested"] == "10"
    assert last["granted"] == "0"
    assert last["share_id"] == "second"
    assert last["actor"] == "alice"
    assert last["channel"] == "api"


def test_grant_audit_record_carries_time_outcome_request_and_grant(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    grant = take(ledger, [r2(7)], T0 + 42, "s1", audit={"actor": "bob", "purpose": None})

    assert (grant.status, grant.granted, grant.requested, grant.now_ms) == ("granted", 7, 7,
                                                                              T0 + 42)
    assert grant.counters == [CounterState(rule="R2", limit=100, used=7, remaining=93)]
    [record] = audit_records(redis_client)
    assert len(record.pop("hash")) == 40  # R11's chain (tests/test_chain.py)
    assert record == {
        "time": str(T0 + 42),
        "actor": "bob",  # purpose=None is left out, not written as "None"
        "outcome": "granted",
        "requested": "7",
        "granted": "7",
        "share_id": "s1",
        "seq": "1",
    }


def test_partial_request_is_granted_exactly_the_remaining_allowance(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(95)], T0 + 100, "first")

    grant = take(ledger, [r2(10)], T0 + 200, "second", partial=True)

    assert (grant.status, grant.first_status) == ("partial", "partial")
    assert (grant.requested, grant.granted) == (10, 5)
    assert grant.counters[0].used == 100
    assert grant.counters[0].remaining == 0
    assert used(ledger, r2(), T0 + 200) == 100
    last = audit_records(redis_client)[-1]
    assert (last["outcome"], last["requested"], last["granted"], last["rule"]) == (
        "partial", "10", "5", "R2")


def test_partial_request_that_fits_whole_is_granted_whole(ledger: Ledger) -> None:
    grant = take(ledger, [r2(10)], T0, partial=True)

    assert (grant.status, grant.granted) == ("granted", 10)


def test_partial_request_with_nothing_left_is_refused_and_counts_nothing(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(100)], T0 + 100, "first")

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(10)], T0 + 200, "second", partial=True)

    assert refused.value.details["remaining"] == 0
    assert used(ledger, r2(), T0 + 200) == 100
    assert buckets(redis_client, ENTITY_KEY) == [f"{T0}:100".encode()]
    assert audit_records(redis_client)[-1]["outcome"] == "refused"


def test_partial_request_must_charge_every_counter_the_requested_amount(ledger: Ledger) -> None:
    with pytest.raises(ValueError):
        take(ledger, [r6(10), r2(5)], T0, partial=True)


# --- when capacity comes back --------------------------------------------------------------


@pytest.fixture
def history(ledger: Ledger) -> Ledger:
    """95 of 100 used: 30 in bucket T0, 50 in bucket T0+2s, 15 in bucket T0+4s."""
    take(ledger, [r2(30)], T0 + 200, "h1")  # bucket T0        leaves at T0 + 11_000
    take(ledger, [r2(50)], T0 + 2_500, "h2")  # bucket T0+2_000 leaves at T0 + 13_000
    take(ledger, [r2(15)], T0 + 4_900, "h3")  # bucket T0+4_000 leaves at T0 + 15_000
    return ledger


@pytest.mark.parametrize(
    ("requested", "now", "available_ms", "available_iso", "retry_after"),
    [
        # 95 + 20 - 100 = 15 must leave: bucket T0 (30) is enough.
        (20, T0 + 5_000, T0 + 11_000, "2023-11-14T22:13:31Z", 6),
        # 95 + 40 - 100 = 35 must leave: 30 is not enough, 30 + 50 is.
        (40, T0 + 5_000, T0 + 13_000, "2023-11-14T22:13:33Z", 8),
        # Every bucket must leave; retry_after rounds 9_700 ms up to 10 s.
        (100, T0 + 5_300, T0 + 15_000, "2023-11-14T22:13:35Z", 10),
    ],
)
def test_refusal_says_when_the_whole_request_fits_from_the_stored_buckets(
    redis_client: redis.Redis,
    history: Ledger,
    requested: int,
    now: int,
    available_ms: int,
    available_iso: str,
    retry_after: int,
) -> None:
    with pytest.raises(QuotaExceeded) as refused:
        take(history, [r2(requested)], now, "late")

    assert refused.value.details["available_at"] == available_iso == iso(available_ms)
    assert refused.value.details["retry_after"] == retry_after
    assert audit_records(redis_client)[-1]["available_at"] == str(available_ms)
    # It is exact: one millisecond earlier the request is still refused, then it fits.
    with pytest.raises(QuotaExceeded):
        take(history, [r2(requested)], available_ms - 1, "early")
    assert take(history, [r2(requested)], available_ms, "on-time").granted == requested


def test_available_at_is_rounded_up_to_the_second_never_early(ledger: Ledger) -> None:
    quarter = Window("10s", LENGTH, 250)
    take(ledger, [r2(100, window=quarter)], T0 + 1_300)  # bucket T0+1_250, leaves T0+11_500

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(1, window=quarter)], T0 + 1_400, "more")

    assert refused.value.details["available_at"] == "2023-11-14T22:13:32Z"  # T0 + 12 s
    assert refused.value.details["retry_after"] == 11  # 10_100 ms, rounded up


def test_peek_lists_when_each_bucket_releases(history: Ledger) -> None:
    _, [state] = history.peek([r2()], now_ms=T0 + 5_000)

    assert (state.limit, state.used, state.remaining) == (100, 95, 5)
    assert state.releases == [(T0 + 11_000, 30), (T0 + 13_000, 50), (T0 + 15_000, 15)]


def test_request_larger_than_the_limit_can_never_fit_and_has_no_available_at(
    ledger: Ledger,
) -> None:
    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(101)], T0)

    assert refused.value.details["available_at"] is None
    assert refused.value.details["retry_after"] is None
    assert refused.value.details["remaining"] == 100
    assert "never fit" in refused.value.message
    assert used(ledger, r2(), T0) == 0


def test_bucket_counts_until_its_last_possible_member_leaves_the_window(
    ledger: Ledger,
) -> None:
    take(ledger, [r2(100)], T0 + 500)  # bucket [T0, T0+1000) leaves at T0 + 1000 + 10_000

    assert used(ledger, r2(), T0 + WIDTH + LENGTH - 1) == 100
    with pytest.raises(QuotaExceeded):
        take(ledger, [r2(1)], T0 + WIDTH + LENGTH - 1, "just-before")
    assert used(ledger, r2(), T0 + WIDTH + LENGTH) == 0
    assert take(ledger, [r2(100)], T0 + WIDTH + LENGTH, "at-boundary").granted == 100


def test_rounding_to_buckets_only_ever_returns_capacity_late(ledger: Ledger) -> None:
    # A grant at the very start of its bucket is held a whole width longer than the exact
    # window would hold it, never shorter.
    take(ledger, [r2(100)], T0)

    assert used(ledger, r2(), T0 + LENGTH) == 100
    assert used(ledger, r2(), T0 + LENGTH + WIDTH) == 0


# --- unlimited and permissions (R3, R4) ----------------------------------------------------


def test_unlimited_counter_counts_usage_but_never_refuses(ledger: Ledger) -> None:
    unlimited = Limit(None)
    first = take(ledger, [r2(10**9, unlimited)], T0, "a")
    second = take(ledger, [r2(10**9, unlimited)], T0 + 1, "b")

    assert first.status == second.status == "granted"
    assert second.counters == [CounterState(rule="R2", limit=None, used=2 * 10**9,
                                            remaining=None)]
    _, [state] = ledger.peek([r2(0, unlimited)], now_ms=T0 + 2)
    assert (state.limit, state.used, state.remaining) == (None, 2 * 10**9, None)
    # The same usage is enforced as soon as a base limit applies again.
    with pytest.raises(QuotaExceeded):
        take(ledger, [r2(1)], T0 + 3, "c")


def test_permission_raises_the_limit_only_from_its_start_until_its_end(ledger: Ledger) -> None:
    start, until = T0 + 1_000, T0 + 3_000
    limit = Limit(100, permit=150, permit_from_ms=start, permit_until_ms=until)

    assert take(ledger, [r2(100, limit)], start - 1, "before").granted == 100
    with pytest.raises(QuotaExceeded) as before:
        take(ledger, [r2(1, limit)], start - 1, "before-more")
    assert before.value.details["limit"] == 100

    assert take(ledger, [r2(50, limit)], start, "during").granted == 50
    with pytest.raises(QuotaExceeded) as during:
        take(ledger, [r2(1, limit)], until - 1, "during-more")
    assert during.value.details["limit"] == 150

    _, [state] = ledger.peek([r2(0, limit)], now_ms=until)
    assert (state.limit, state.used, state.remaining) == (100, 150, 0)  # R2 again at once
    with pytest.raises(QuotaExceeded) as after:
        take(ledger, [r2(1, limit)], until, "after")
    assert after.value.details["limit"] == 100


def test_unlimited_permission_lifts_the_limit_only_while_valid(ledger: Ledger) -> None:
    start, until = T0 + 1_000, T0 + 3_000
    limit = Limit(100, permit=None, permit_from_ms=start, permit_until_ms=until)

    assert take(ledger, [r2(10_000, limit)], start, "during").granted == 10_000
    _, [state] = ledger.peek([r2(0, limit)], now_ms=until - 1)
    assert (state.limit, state.remaining) == (None, None)
    with pytest.raises(QuotaExceeded):
        take(ledger, [r2(1, limit)], until, "after")


def test_available_at_accounts_for_a_permission_that_ends_first(ledger: Ledger) -> None:
    # Permission: 200 until T0+5s, then R2's base of 100 applies again.
    limit = Limit(100, permit=200, permit_from_ms=T0, permit_until_ms=T0 + 5_000)
    take(ledger, [r2(10, limit)], T0 + 100, "h1")  # leaves at T0 + 11_000
    take(ledger, [r2(140, limit)], T0 + 2_100, "h2")  # leaves at T0 + 13_000

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(60, limit)], T0 + 3_000, "late")

    # At T0+11s only 10 has left but the limit is back to 100: 140 + 60 > 100. The request
    # first fits at T0+13s, when the 140 has left too.
    assert refused.value.details["available_at"] == iso(T0 + 13_000)


# --- reservations: refund and commit -------------------------------------------------------


def test_refund_gives_back_exactly_what_was_charged_even_after_other_grants_merged(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r6(30), r2(20)], T0 + 100, "export", requested=30)
    take(ledger, [r6(7), r2(5)], T0 + 200, "other", requested=7)  # same buckets
    assert buckets(redis_client, USER_KEY) == [f"{T0}:37".encode()]

    status = ledger.settle(ROOT, "export", [r6(), r2()], delivered=False,
                           audit={"actor": "alice", "reason": "export failed"},
                           now_ms=T0 + 300)

    assert status == "refunded"
    _, states = ledger.peek([r6(), r2()], now_ms=T0 + 300)
    assert [s.used for s in states] == [7, 5]
    assert buckets(redis_client, USER_KEY) == [f"{T0}:7".encode()]
    assert buckets(redis_client, ENTITY_KEY) == [f"{T0}:5".encode()]
    assert redis_client.get(USER_KEY + ":sum") == b"7"
    assert redis_client.get(ENTITY_KEY + ":sum") == b"5"
    record = audit_records(redis_client)[-1]
    assert record["outcome"] == "refunded"
    assert record["time"] == str(T0 + 300)
    assert (record["requested"], record["granted"]) == ("30", "30")
    assert (record["share_id"], record["reason"]) == ("export", "export failed")
    # The freed allowance can be taken again at once.
    assert take(ledger, [r6(93), r2(20)], T0 + 400, "again", requested=93).granted == 93


def test_second_refund_of_a_refunded_reservation_changes_nothing(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(30)], T0 + 100, "export")
    take(ledger, [r2(10)], T0 + 150, "other")
    assert ledger.settle(ROOT, "export", [r2()], delivered=False, audit={},
                         now_ms=T0 + 200) == "refunded"
    audited = len(audit_records(redis_client))

    assert ledger.settle(ROOT, "export", [r2()], delivered=False, audit={},
                         now_ms=T0 + 300) == "already_refunded"
    assert used(ledger, r2(), T0 + 300) == 10
    assert len(audit_records(redis_client)) == audited


def test_commit_of_a_refunded_reservation_counts_the_delivery_again(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    # Something was delivered against a reservation the ledger had already given back (the
    # race of issue 9): the delivery must not stay uncounted (R2).
    take(ledger, [r2(30)], T0 + 100, "export")
    take(ledger, [r2(10)], T0 + 150, "other")
    assert ledger.settle(ROOT, "export", [r2()], delivered=False, audit={},
                         now_ms=T0 + 200) == "refunded"
    assert used(ledger, r2(), T0 + 200) == 10

    assert ledger.settle(ROOT, "export", [r2(30)], delivered=True, audit={"actor": "bob"},
                         now_ms=T0 + 300) == "recounted"
    assert used(ledger, r2(), T0 + 300) == 40
    record = audit_records(redis_client)[-1]
    assert (record["outcome"], record["granted"], record["rule"]) == ("recounted", "30", "R2")
    # Settled for good now: a late refund gives nothing back.
    assert ledger.settle(ROOT, "export", [r2(30)], delivered=False, audit={},
                         now_ms=T0 + 400) == "already_delivered"
    assert used(ledger, r2(), T0 + 400) == 40


def test_commit_of_a_reservation_whose_record_is_gone_counts_the_delivery(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(30)], T0 + 100, "export")
    redis_client.delete(keys.share(ROOT, "export"))  # tampered with, or lost

    assert ledger.settle(ROOT, "export", [r2(30)], delivered=True, audit={},
                         now_ms=T0 + 300) == "recounted"
    assert used(ledger, r2(), T0 + 300) == 60


def test_a_recount_in_a_newer_bucket_keeps_the_counter_alive_for_that_buckets_window(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    # The delivery is counted again at commit time, in a bucket newer than any the counter
    # held. The list's lifetime was set for its older buckets; had it stayed so, the list (and
    # the recounted IDs with it) would vanish while the new bucket is still in the window: the
    # ledger would under-count and grant again what was delivered (R2).
    take(ledger, [r2(30)], T0 + 100, "export")
    redis_client.delete(keys.share(ROOT, "export"))
    # Real time has run on while the delivery went out: the old bucket has ~2 s left to live.
    for key in (ENTITY_KEY, ENTITY_KEY + ":sum"):
        redis_client.pexpire(key, 2_000)
    assert ledger.settle(ROOT, "export", [r2(30)], delivered=True, audit={},
                         now_ms=T0 + 9_900) == "recounted"
    # The new bucket starts at T0 + 9,000 and leaves the window at T0 + 20,000: 10.1 s on.
    for key in (ENTITY_KEY, ENTITY_KEY + ":sum"):
        assert redis_client.pttl(key) >= 10_100
    assert redis_client.zscore(keys.active(ROOT), ENTITY_KEY) >= T0 + 20_000


def test_a_recount_into_a_counter_that_expired_gives_the_new_list_a_lifetime(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(30)], T0 + 100, "export")
    redis_client.delete(keys.share(ROOT, "export"), ENTITY_KEY, ENTITY_KEY + ":sum")
    assert ledger.settle(ROOT, "export", [r2(30)], delivered=True, audit={},
                         now_ms=T0 + 30_000) == "recounted"
    assert used(ledger, r2(), T0 + 30_000) == 30
    for key in (ENTITY_KEY, ENTITY_KEY + ":sum"):
        assert 0 < redis_client.pttl(key) <= 12_000  # not a key that lives for ever
    assert redis_client.zscore(keys.active(ROOT), ENTITY_KEY) >= T0 + 41_000


def test_refund_of_a_partial_grant_gives_back_only_what_was_granted(ledger: Ledger) -> None:
    take(ledger, [r2(90)], T0 + 100, "first")
    assert take(ledger, [r2(25)], T0 + 200, "partial", partial=True).granted == 10

    assert ledger.settle(ROOT, "partial", [r2()], delivered=False, audit={},
                         now_ms=T0 + 300) == "refunded"
    assert used(ledger, r2(), T0 + 300) == 90


def test_commit_keeps_the_reservation_counted(redis_client: redis.Redis, ledger: Ledger) -> None:
    take(ledger, [r2(30)], T0 + 100, "export")

    assert ledger.settle(ROOT, "export", [r2()], delivered=True, audit={"actor": "alice"},
                         now_ms=T0 + 200) == "delivered"
    assert used(ledger, r2(), T0 + 200) == 30
    assert ledger.settle(ROOT, "export", [r2()], delivered=False, audit={},
                         now_ms=T0 + 300) == "already_delivered"
    assert used(ledger, r2(), T0 + 300) == 30
    record = audit_records(redis_client)[-1]
    assert (record["outcome"], record["granted"], record["share_id"]) == (
        "delivered", "30", "export")


def test_settling_an_unknown_reservation_is_missing_and_changes_nothing(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(30)], T0 + 100, "export")

    assert ledger.settle(ROOT, "nope", [r2()], delivered=False, audit={},
                         now_ms=T0 + 200) == "missing"
    assert used(ledger, r2(), T0 + 200) == 30


def test_refund_after_the_bucket_left_the_window_changes_nothing(ledger: Ledger) -> None:
    take(ledger, [r2(30)], T0 + 100, "old")
    take(ledger, [r2(40)], T0 + 20_000, "new")  # pops the old bucket

    assert ledger.settle(ROOT, "old", [r2()], delivered=False, audit={},
                         now_ms=T0 + 20_100) == "refunded"
    assert used(ledger, r2(), T0 + 20_100) == 40


# --- idempotency ---------------------------------------------------------------------------


def test_same_idempotency_key_and_request_replays_the_first_answer_and_counts_once(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    key = Idempotency.of("alice", "k-1", "share", 30)
    first = take(ledger, [r2(30)], T0 + 100, "share-1", idempotency=key)
    assert ledger.settle(ROOT, "share-1", [r2(30)], delivered=True, audit={},
                         now_ms=T0 + 150) == "delivered"
    again = take(ledger, [r2(30)], T0 + 200, "share-2", idempotency=key)

    assert first.status == "granted"
    assert (again.status, again.first_status) == ("replay", "granted")
    assert (again.share_id, again.granted) == ("share-1", 30)
    assert used(ledger, r2(), T0 + 200) == 30
    assert not redis_client.exists(keys.share(ROOT, "share-2"))
    record = audit_records(redis_client)[-1]
    assert (record["outcome"], record["share_id"], record["time"]) == (
        "replayed", "share-1", str(T0 + 200))


def test_replay_of_a_partial_grant_says_it_was_partial(ledger: Ledger) -> None:
    take(ledger, [r2(95)], T0, "fill")
    key = Idempotency.of("alice", "k-1", "share", 30)
    take(ledger, [r2(30)], T0 + 100, "share-1", idempotency=key, partial=True)
    ledger.settle(ROOT, "share-1", [r2(30)], delivered=True, audit={}, now_ms=T0 + 150)

    again = take(ledger, [r2(30)], T0 + 200, "share-2", idempotency=key, partial=True)

    assert (again.status, again.first_status, again.granted) == ("replay", "partial", 5)


def test_retry_while_the_first_is_unsettled_is_in_progress_and_counts_nothing(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    # Issue 9, item 1: a retry answered "already shared" while the first could still be
    # refunded delivered 1,499,900 IDs with 0 counted.
    key = Idempotency.of("alice", "k-1", "share", 30)
    take(ledger, [r2(30)], T0 + 100, "share-1", idempotency=key)

    with pytest.raises(InProgress) as refused:
        take(ledger, [r2(30)], T0 + 200, "share-2", idempotency=key)

    assert refused.value.status == 409 and refused.value.exit_code in (3, 4)
    assert refused.value.details["retry_after"] >= 1
    assert refused.value.details["share_id"] == "share-1"
    assert "in progress" in refused.value.message
    assert used(ledger, r2(), T0 + 200) == 30
    assert not redis_client.exists(keys.share(ROOT, "share-2"))
    assert audit_records(redis_client)[-1]["outcome"] == "in_progress"
    # The first fails and is refunded: the retry is then a new request, counted once.
    assert ledger.settle(ROOT, "share-1", [r2(30)], delivered=False, audit={},
                         idempotency=key, now_ms=T0 + 300) == "refunded"
    again = take(ledger, [r2(30)], T0 + 400, "share-3", idempotency=key)
    assert (again.status, again.share_id) == ("granted", "share-3")
    assert used(ledger, r2(), T0 + 400) == 30


def test_a_reservation_left_open_is_closed_as_counted_and_then_replayed(
    redis_client: redis.Redis
) -> None:
    ledger = Ledger(redis_client, reservation_timeout_ms=5_000)  # inside the 10 s test window
    key = Idempotency.of("alice", "k-1", "share", 30)
    take(ledger, [r2(30)], T0 + 100, "share-1", idempotency=key)  # ...and the process dies
    timeout = ledger.reservation_timeout_ms

    with pytest.raises(InProgress):
        take(ledger, [r2(30)], T0 + 100 + timeout - 1, "share-2", idempotency=key)
    again = take(ledger, [r2(30)], T0 + 100 + timeout, "share-3", idempotency=key)

    assert (again.status, again.share_id, again.granted) == ("replay", "share-1", 30)
    assert used(ledger, r2(), T0 + 100 + timeout) == 30  # counted, once
    assert redis_client.hget(keys.share(ROOT, "share-1"), "status") == b"abandoned"
    [closed] = [r for r in audit_records(redis_client) if r["outcome"] == "abandoned"]
    assert (closed["kind"], closed["share_id"], closed["granted"], closed["rule"]) == (
        "share.abandoned", "share-1", "30", "R2")
    assert not redis_client.zcard(keys.reserved(ROOT))
    # A late settle of the abandoned reservation changes nothing: it stays counted.
    assert ledger.settle(ROOT, "share-1", [r2(30)], delivered=False, audit={},
                         idempotency=key) == "already_abandoned"
    assert used(ledger, r2(), T0 + 100 + timeout) == 30


def test_sweep_closes_stale_reservations_of_a_pool_and_leaves_fresh_ones(
    redis_client: redis.Redis
) -> None:
    ledger = Ledger(redis_client, reservation_timeout_ms=5_000)
    take(ledger, [r2(10)], T0, "old")
    take(ledger, [r2(20)], T0 + ledger.reservation_timeout_ms - 1, "fresh")

    swept = ledger.sweep(ROOT, now_ms=T0 + ledger.reservation_timeout_ms + 1)

    assert swept == {"abandoned": 1, "open": 1}
    assert redis_client.hget(keys.share(ROOT, "old"), "status") == b"abandoned"
    assert redis_client.hget(keys.share(ROOT, "fresh"), "status") == b"reserved"
    assert used(ledger, r2(), T0 + ledger.reservation_timeout_ms + 1) == 30
    assert ledger.settle(ROOT, "fresh", [r2(20)], delivered=True, audit={}) == "delivered"
    assert not redis_client.zcard(keys.reserved(ROOT))


def test_same_idempotency_key_with_a_different_request_conflicts_and_counts_nothing(
    ledger: Ledger,
) -> None:
    take(ledger, [r2(30)], T0 + 100, "share-1",
         idempotency=Idempotency.of("alice", "k-1", "share", 30))

    with pytest.raises(Conflict) as conflict:
        take(ledger, [r2(31)], T0 + 200, "share-2",
             idempotency=Idempotency.of("alice", "k-1", "share", 31))

    assert conflict.value.details["idempotency_key"] == "k-1"
    assert used(ledger, r2(), T0 + 200) == 30


def test_conflicting_idempotency_key_is_audited(redis_client: redis.Redis, ledger: Ledger) -> None:
    # take.lua: "every answer appends one audit record (R11)"; a conflict is a denial.
    take(ledger, [r2(30)], T0 + 100, "share-1",
         idempotency=Idempotency.of("alice", "k-1", "share", 30))
    audited = len(audit_records(redis_client))

    with pytest.raises(Conflict):
        take(ledger, [r2(31)], T0 + 200, "share-2",
             idempotency=Idempotency.of("alice", "k-1", "share", 31))

    assert len(audit_records(redis_client)) == audited + 1


def test_idempotency_keys_are_scoped_to_the_actor(ledger: Ledger) -> None:
    take(ledger, [r2(30)], T0, "a", idempotency=Idempotency.of("alice", "k-1", 30))

    grant = take(ledger, [r2(30)], T0 + 1, "b", idempotency=Idempotency.of("bob", "k-1", 30))

    assert grant.status == "granted"
    assert used(ledger, r2(), T0 + 1) == 60


def test_after_a_refund_the_same_idempotency_key_may_be_used_again(ledger: Ledger) -> None:
    key = Idempotency.of("alice", "k-1", "share", 30)
    take(ledger, [r2(30)], T0 + 100, "share-1", idempotency=key)
    assert ledger.settle(ROOT, "share-1", [r2()], delivered=False, audit={}, idempotency=key,
                         now_ms=T0 + 200) == "refunded"

    retry = take(ledger, [r2(30)], T0 + 300, "share-2", idempotency=key)

    assert (retry.status, retry.share_id) == ("granted", "share-2")
    assert used(ledger, r2(), T0 + 300) == 30


def test_a_refused_request_is_not_remembered_by_its_idempotency_key(ledger: Ledger) -> None:
    take(ledger, [r2(100)], T0 + 100, "fill")
    key = Idempotency.of("alice", "k-1", "share", 30)
    with pytest.raises(QuotaExceeded):
        take(ledger, [r2(30)], T0 + 200, "share-1", idempotency=key)

    retry = take(ledger, [r2(30)], T0 + WIDTH + LENGTH, "share-2", idempotency=key)

    assert retry.status == "granted"


# --- several counters in one take ----------------------------------------------------------


def test_take_charges_each_counter_its_own_amount(ledger: Ledger) -> None:
    grant = take(ledger, [r6(30), r2(20)], T0, requested=30)

    assert [(s.rule, s.used) for s in grant.counters] == [("R6", 30), ("R2", 20)]
    _, states = ledger.peek([r6(), r2()], now_ms=T0)
    assert [s.used for s in states] == [30, 20]


@pytest.mark.parametrize(
    ("r6_before", "r2_before", "refusing"),
    [(80, 0, "R6"), (0, 90, "R2")],
)
def test_when_one_counter_refuses_no_counter_is_charged(
    redis_client: redis.Redis, ledger: Ledger, r6_before: int, r2_before: int, refusing: str
) -> None:
    take(ledger, [r6(r6_before), r2(r2_before)], T0 + 100, "before", requested=r6_before)
    stored = (buckets(redis_client, USER_KEY), buckets(redis_client, ENTITY_KEY))

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r6(30), r2(20)], T0 + 200, "both", requested=30)

    assert refused.value.rule == refusing
    _, states = ledger.peek([r6(), r2()], now_ms=T0 + 200)
    assert [s.used for s in states] == [r6_before, r2_before]
    assert (buckets(redis_client, USER_KEY), buckets(redis_client, ENTITY_KEY)) == stored
    last = audit_records(redis_client)[-1]
    assert (last["outcome"], last["rule"], last["granted"]) == ("refused", refusing, "0")


def test_partial_take_on_several_counters_grants_what_the_tightest_allows(
    ledger: Ledger,
) -> None:
    take(ledger, [r6(60), r2(90)], T0, "before", requested=60)

    grant = take(ledger, [r6(30), r2(30)], T0 + 1, "both", requested=30, partial=True)

    assert grant.granted == 10
    assert [s.used for s in grant.counters] == [70, 100]


# --- calendar days --------------------------------------------------------------------------


def local_midnight(zone: str, year: int, month: int, day: int) -> int:
    return int(datetime(year, month, day, tzinfo=ZoneInfo(zone)).timestamp() * 1000)


def utc_ms(*args: int) -> int:
    return int(datetime(*args, tzinfo=UTC).timestamp() * 1000)


def test_calendar_day_resets_at_local_midnight_and_says_so(ledger: Ledger) -> None:
    day = Window("calendar-day", DAY_MS, 60_000, "Asia/Tokyo")
    midnight = local_midnight("Asia/Tokyo", 2024, 3, 11)
    assert midnight == utc_ms(2024, 3, 10, 15)  # 00:00 in Tokyo is 15:00 UTC the day before
    take(ledger, [r6(60, window=day)], utc_ms(2024, 3, 10, 0, 30), "morning")  # 09:30 JST
    take(ledger, [r6(40, window=day)], midnight - 30_000, "late")  # 23:59:30 JST

    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r6(1, window=day)], midnight - 1, "too-late")

    assert refused.value.details["available_at"] == "2024-03-10T15:00:00Z"
    assert refused.value.details["retry_after"] == 1
    _, [state] = ledger.peek([r6(window=day)], now_ms=midnight - 1)
    assert state.releases == [(midnight, 100)]
    assert used(ledger, r6(window=day), midnight) == 0
    assert take(ledger, [r6(100, window=day)], midnight, "new-day").granted == 100
    # UTC midnight is no reset for a Tokyo calendar day.
    with pytest.raises(QuotaExceeded):
        take(ledger, [r6(1, window=day)], utc_ms(2024, 3, 11), "utc-midnight")


def test_calendar_bucket_straddling_local_midnight_counts_for_the_new_day(
    ledger: Ledger,
) -> None:
    # Kathmandu is UTC+05:45: local midnight (18:15 UTC) falls inside a 10-minute bucket.
    day = Window("calendar-day", DAY_MS, 600_000, "Asia/Kathmandu")
    midnight = local_midnight("Asia/Kathmandu", 2024, 3, 11)
    take(ledger, [r6(100, window=day)], midnight + 60_000, "just-after")

    assert used(ledger, r6(window=day), midnight + 120_000) == 100
    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r6(1, window=day)], midnight + 120_000, "more")
    assert refused.value.details["available_at"] == iso(midnight + DAY_MS)


# --- the clock --------------------------------------------------------------------------------


def test_clock_stepping_back_merges_into_the_newest_bucket_and_never_grants_early(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(50)], T0 + 5_500, "later")  # bucket T0+5_000, leaves at T0+16_000
    take(ledger, [r2(50)], T0 + 1_500, "stepped-back")  # its own bucket would leave at +12s

    assert buckets(redis_client, ENTITY_KEY) == [f"{T0 + 5_000}:100".encode()]
    assert used(ledger, r2(), T0 + 12_000) == 100
    with pytest.raises(QuotaExceeded) as refused:
        take(ledger, [r2(1)], T0 + 12_000, "early")
    assert refused.value.details["available_at"] == iso(T0 + 16_000)
    assert used(ledger, r2(), T0 + 16_000) == 0
    # The stepped-back reservation is refunded from the bucket it was merged into.
    assert ledger.settle(ROOT, "stepped-back", [r2()], delivered=False, audit={},
                         now_ms=T0 + 6_000) == "refunded"
    assert used(ledger, r2(), T0 + 6_000) == 50


def test_redis_clock_is_used_when_no_time_is_given(redis_client: redis.Redis,
                                                   ledger: Ledger) -> None:
    seconds, micros = redis_client.time()
    grant = ledger.take(ROOT, [r2(5)], requested=5, share_id="now", audit={})

    assert abs(grant.now_ms - (seconds * 1000 + micros // 1000)) < 5_000
    assert ledger.peek([r2()])[1][0].used == 5


# --- idle counters --------------------------------------------------------------------------


def test_counter_left_idle_after_a_refusal_comes_back_empty(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    # An idle counter's keys expire on the Redis clock (release time + 1 s); a short window
    # keeps that wait near one second.
    tiny = Window("50ms", 50, 50)
    ten = Limit(10)
    take(ledger, [r2(6, ten, tiny)], T0 + 10, "a")  # bucket T0, leaves at T0 + 100
    take(ledger, [r2(4, ten, tiny)], T0 + 60, "b")  # bucket T0+50, leaves at T0 + 150
    with pytest.raises(QuotaExceeded):  # the first bucket leaves; 4 + 7 > 10 is refused
        take(ledger, [r2(7, ten, tiny)], T0 + 100, "c")

    deadline = time.monotonic() + 5
    while redis_client.exists(ENTITY_KEY) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not redis_client.exists(ENTITY_KEY)  # the bucket list expired with its last bucket

    later = T0 + 60_000
    assert used(ledger, r2(0, ten, tiny), later) == 0
    grant = take(ledger, [r2(10, ten, tiny)], later, "d")  # the whole limit is free again
    assert grant.counters[0].used == 10


def test_a_take_into_the_open_bucket_renews_an_expiry_left_short(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    # A charge merged into the newest bucket keeps the expiry the bucket was opened with; one
    # that finds the list living shorter (a settle that counted a delivery again opened the
    # bucket) renews it, so the list never expires before its newest bucket has left.
    take(ledger, [r2(5)], T0 + 100, "a")
    redis_client.pexpire(ENTITY_KEY, 50)
    redis_client.persist(ENTITY_KEY + ":sum")
    take(ledger, [r2(5)], T0 + 200, "b")  # the same bucket, T0
    assert redis_client.pttl(ENTITY_KEY) > 10_000  # leaves at T0 + 11,000, kept a second more
    assert redis_client.pttl(ENTITY_KEY + ":sum") > 10_000
    assert used(ledger, r2(), T0 + 300) == 10


def test_a_take_into_the_open_bucket_rewrites_no_expiry_and_reads_reservations_once(
    real_server: dict[str, str],
) -> None:
    # What a cost-1 grant costs is mostly its calls and the AOF bytes fsynced before it is
    # answered: a charge into the bucket already open writes the charge, the share record and
    # its two index entries, and the audit record — not the counter's expiries again.
    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    take(ledger, [r2(1)], T0 + 100, "first")
    before = r.info("commandstats")
    take(ledger, [r2(1)], T0 + 200, "second")  # the same bucket, T0
    after = r.info("commandstats")
    r.flushall()

    def calls(command: str) -> int:
        return int(after.get(f"cmdstat_{command}", {}).get("calls", 0)) - int(
            before.get(f"cmdstat_{command}", {}).get("calls", 0))

    assert calls("pexpire") == 0  # the share record's lifetime is an EXPIRE
    assert calls("zadd") == 2  # the open reservation and the share in the pool's key index
    assert calls("zscore") == 0
    # One EXISTS asks for the moved marker and the share record (a resent take changes
    # nothing) at once; the head bucket's LINDEX tells whether the list exists.
    assert calls("exists") == 1
    assert calls("zrangebyscore") == 1  # stale reservations: read once, checked and closed
    # Expired entries of the active index and of the key index are pruned when a bucket
    # opens, not on every take into the open bucket.
    assert calls("zremrangebyscore") == 0
    # The counter's head and tail buckets and its total are read once: the summary entry is
    # written from what the take read and charged, not read back (three calls more).
    assert calls("lindex") == 2
    assert calls("get") == 1  # the running total (the moved marker: in the EXISTS above)
    assert calls("hset") == 3  # the share record, the summary entry, the chain head


def test_a_take_sends_its_script_without_redis_pys_generic_command_path(
    redis_client: redis.Redis, ledger: Ledger, monkeypatch: pytest.MonkeyPatch
) -> None:
    # redis-py's generic path (wrappers, retry closures: ~150 Python calls) cost ~30 µs of a
    # cost-1 grant; a script call goes straight to a pooled connection.
    take(ledger, [r2(1)], T0, "warm")
    generic: list[object] = []
    monkeypatch.setattr(redis_client, "execute_command", lambda *a, **k: generic.append(a))
    grant = take(ledger, [r2(1)], T0 + 10, "direct")
    assert grant.granted == 1 and generic == []
    monkeypatch.undo()
    assert used(ledger, r2(), T0 + 20) == 2


def test_a_take_after_the_server_lost_its_scripts_or_the_connection_still_counts_once(
    real_server: dict[str, str],
) -> None:
    # NOSCRIPT (a restarted or flushed server) and a connection that died go redis-py's way,
    # which loads the script or reconnects: the take is counted once, with its audit record.
    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    take(ledger, [r2(1)], T0, "a")
    r.script_flush()
    take(ledger, [r2(1)], T0 + 10, "b")
    admin = real_client(real_server)
    admin.client_kill_filter(skipme=True, _type="normal")  # every other connection: r's
    take(ledger, [r2(1)], T0 + 20, "c")
    assert used(ledger, r2(), T0 + 30) == 3
    assert [x["share_id"] for x in audit_records(r)] == ["a", "b", "c"]
    r.flushall()


def test_a_take_sent_again_after_its_answer_was_lost_counts_once_and_fails_closed(
    real_server: dict[str, str], monkeypatch: pytest.MonkeyPatch,
) -> None:
    # The server ran the take, then the answer was lost (a socket timeout after the send): the
    # client sends the same EVALSHA again (redis-py's retry, or the direct path's fallback).
    # The second run must change nothing — counted once, one grant record — and the caller
    # gets no grant it cannot prove (fail closed: the reservation stands and is settled or
    # abandoned, so counted, as any other).
    from redis.connection import AbstractConnection as Connection

    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    real_read = Connection.read_response
    lost: list[object] = []

    def read_then_lose(self: Connection, *args: object, **kw: object) -> object:
        answer = real_read(self, *args, **kw)
        if not lost and isinstance(answer, bytes) and b'"granted"' in answer:
            lost.append(answer)
            raise redis.exceptions.TimeoutError("Timeout reading from socket")
        return answer

    monkeypatch.setattr(Connection, "read_response", read_then_lose)
    with pytest.raises(StoreUnavailable) as failed:
        take(ledger, [r2(1)], T0, "a")
    monkeypatch.undo()
    assert lost, "the first answer was not lost: the test did not test anything"
    assert "R2" in failed.value.message and "share a" in failed.value.message
    assert used(ledger, r2(), T0 + 10) == 1
    assert [x["share_id"] for x in audit_records(r) if x.get("share_id")] == ["a"]
    assert r.hget(keys.share(ROOT, "a"), "status") == b"reserved"
    r.flushall()


# --- the active index and moved pools (R10) -------------------------------------------------


def test_a_take_indexes_each_counter_until_its_newest_bucket_leaves(
    redis_client: redis.Redis, ledger: Ledger
) -> None:
    take(ledger, [r2(5), r6(5)], T0 + 10, "a")
    take(ledger, [r2(5)], T0 + 2_500, "b")  # bucket T0+2000 leaves at T0+13000
    index = dict(redis_client.zrange(keys.active(ROOT), 0, -1, withscores=True))
    assert index == {ENTITY_KEY.encode(): T0 + 2_000 + WIDTH + LENGTH,
                     USER_KEY.encode(): T0 + WIDTH + LENGTH}
    # A later take drops what has left the window by then.
    take(ledger, [r2(1)], T0 + 11_000, "c")
    assert redis_client.zrange(keys.active(ROOT), 0, -1) == [ENTITY_KEY.encode()]
    # A refusal charges nothing and indexes nothing new.
    with pytest.raises(QuotaExceeded):
        ledger.take(ROOT, [r6(500)], requested=500, share_id="d", audit={}, now_ms=T0 + 11_000)
    assert redis_client.zrange(keys.active(ROOT), 0, -1) == [ENTITY_KEY.encode()]


def test_a_moved_pool_takes_and_records_nothing(redis_client: redis.Redis, ledger: Ledger) -> None:
    take(ledger, [r2(5)], T0, "a")
    before = redis_client.xlen(AUDIT_KEY)
    redis_client.set(keys.moved(ROOT), "bigco")
    with pytest.raises(PoolMoved) as refused:
        take(ledger, [r2(5)], T0 + 10, "b")
    assert refused.value.rule == "R10" and "'bigco'" in refused.value.message
    with pytest.raises(PoolMoved):
        ledger.record(keys.entity(ROOT, ROOT), AUDIT_KEY, mode="set", fields={"x": "1"},
                      audit={"kind": "entity.test"})
    assert used(ledger, r2(), T0 + 10) == 5
    assert redis_client.xlen(AUDIT_KEY) == before
    assert not redis_client.exists(keys.share(ROOT, "b"), keys.entity(ROOT, ROOT))
