"""Property: one rolling counter against a brute-force oracle that keeps every granted event.

Notation (window length W = 1000 ms, bucket width w = 100 ms, limit L = 50): an event granted at
time t lands in bucket s = floor(t/w)*w, so s <= t < s + w. The ledger counts it while
now < s + w + W. Two exact trailing sums bracket that:

* exact(X) = sum of events with t > now - X. An event with t > now - W has s + w > t > now - W,
  so the ledger still counts it:                       exact(W) <= ledger used.
* An event the ledger counts has t >= s > now - w - W:  ledger used <= exact(W + w).
  Equivalently ledger used - exact(W) <= the events in the width just before the exact window
  (now - W - w < t <= now - W): rounding only ever holds an event up to one width longer.

Hence *never over*: the ledger grants only while used + k <= L, and exact(W) <= used, so the
exact trailing-W sum never exceeds L (it only drops between grants, so checking it after every
step covers every instant). And *never refuses beyond rounding*: the ledger refuses a
whole request of k only when used + k > L; since used <= exact(W + w), an oracle whose window is
W + w would refuse it too. The oracle also knows each event's bucket, so it predicts the ledger's
used, every decision, partial grants and available_at exactly; the brackets above are asserted
separately so that they hold even if that bucket model were wrong.
"""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import dataclass

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger, iso
from gatekeeper.rules.errors import QuotaExceeded
from gatekeeper.rules.limits import Counter, Limit, Window

pytestmark = pytest.mark.slow

# On a failure hypothesis's pytest plugin imports this module (and libcst, which warns on import
# through mypy_extensions) to suggest a patch; under `filterwarnings = error` that warning turns
# the falsifying example into an INTERNALERROR. Import it now, quietly, so failures stay legible.
with warnings.catch_warnings(), contextlib.suppress(ImportError):
    warnings.simplefilter("ignore", DeprecationWarning)
    import hypothesis.extra._patching  # noqa: F401

ROOT = "prop"
W, WIDTH, LIMIT = 1_000, 100, 50
WINDOW = Window("1s", W, WIDTH)
KEY = keys.counter(ROOT, "r2", ROOT)
T0 = 1_700_000_000_000


@dataclass
class Event:
    share_id: str
    t: int
    amount: int

    @property
    def bucket(self) -> int:
        return self.t // WIDTH * WIDTH


class Oracle:
    """Every granted event with its exact time; refunds remove theirs."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def advance(self, now: int, wait: int | tuple[str, int, int]) -> int:
        """The time after waiting ms, or near a pending bucket release (never backwards)."""
        if isinstance(wait, int):
            return now + wait
        _, n, delta = wait
        pending = sorted({e.bucket + WIDTH + W for e in self.events if e.bucket + WIDTH + W > now})
        if not pending:
            return now
        return max(now, pending[n % len(pending)] + delta)

    def exact(self, now: int, length: int) -> int:
        return sum(e.amount for e in self.events if e.t > now - length)

    def bucketed(self, now: int) -> int:
        """What the ledger should count: events whose bucket has not left the window."""
        return sum(e.amount for e in self.events if e.bucket + WIDTH + W > now)

    def available_at(self, now: int, k: int) -> int | None:
        """The first time the bucketed count leaves room for k (None if k never fits)."""
        if k > LIMIT:
            return None
        for at in sorted({e.bucket + WIDTH + W for e in self.events if e.bucket + WIDTH + W > now}):
            if self.bucketed(at) + k <= LIMIT:
                return at
        return None  # unreachable: every event leaves eventually

    def exact_available_at(self, now: int, k: int) -> int:
        """The first time k fits in the exact trailing window (the ideal, unrounded answer)."""
        for at in [now, *sorted({e.t + W for e in self.events if e.t + W > now})]:
            if self.exact(at, W) + k <= LIMIT:
                return at
        raise AssertionError("every event leaves the window eventually")


advance = st.one_of(
    # ms to wait: mostly small steps inside one window, sometimes a jump past all of it
    st.integers(0, 150),
    st.integers(0, 2_500),
    # or go to a stored bucket's release time, give or take 1 ms (off-by-one hunting)
    st.tuples(st.just("release"), st.integers(0, 20), st.integers(-1, 1)),
)
step = st.one_of(
    # (advance, weight, partial)
    st.tuples(advance, st.integers(1, LIMIT + 10), st.booleans()),  # a few can never fit
    # refund one of the grants not yet refunded (ignored when there is none)
    st.tuples(st.just("refund"), st.integers(0, 30)),
)


def check_brackets(ledger_used: int, oracle: Oracle, now: int) -> None:
    assert oracle.exact(now, W) <= ledger_used <= oracle.exact(now, W + WIDTH)
    assert ledger_used == oracle.bucketed(now)
    assert oracle.exact(now, W) <= LIMIT  # never over


def last_audit(redis_client: redis.Redis) -> dict[str, str]:
    [(_, fields)] = redis_client.xrevrange(keys.audit(ROOT), count=1)
    return {k.decode(): v.decode() for k, v in fields.items()}


@settings(
    max_examples=500,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(offset=st.integers(0, 999), steps=st.lists(step, min_size=1, max_size=40))
def test_rolling_counter_agrees_with_a_brute_force_trailing_window_oracle(
    redis_client: redis.Redis, offset: int, steps: list[tuple]
) -> None:
    redis_client.flushall()
    ledger = Ledger(redis_client)
    oracle = Oracle()
    grants: list[Event] = []
    now = T0 + offset
    for n, item in enumerate(steps):
        share_id = f"s{n}"
        if item[0] == "refund":
            if not grants:
                continue
            event = grants.pop(item[1] % len(grants))
            status = ledger.settle(ROOT, event.share_id, [Counter(KEY, "R2", WINDOW, Limit(LIMIT))],
                                   delivered=False, audit={}, now_ms=now)
            assert status == "refunded"
            oracle.events.remove(event)
            continue

        wait, k, partial = item
        now = oracle.advance(now, wait)
        before = oracle.bucketed(now)
        remaining = LIMIT - before
        counter = Counter(KEY, "R2", WINDOW, Limit(LIMIT), k)
        try:
            grant = ledger.take(ROOT, [counter], requested=k, share_id=share_id, audit={},
                                partial=partial, now_ms=now)
        except QuotaExceeded as refused:
            # The ledger refuses only what an oracle with window W + w would refuse too.
            assert oracle.exact(now, W + WIDTH) + k > LIMIT
            assert before + k > LIMIT
            assert not (partial and remaining > 0)  # a partial is refused only with nothing left
            assert refused.details["used"] == before
            assert refused.details["remaining"] == remaining
            expected_at = oracle.available_at(now, k)
            record = last_audit(redis_client)
            assert (record["outcome"], record["granted"]) == ("refused", "0")
            if expected_at is None:
                assert refused.details["available_at"] is None
                assert int(record["available_at"]) == -1
            else:
                # Exact to the ms in the audit record; capacity never comes back early.
                assert int(record["available_at"]) == expected_at
                assert expected_at >= oracle.exact_available_at(now, k)
                assert refused.details["available_at"] == iso(expected_at)
                assert refused.details["retry_after"] == max(
                    1, -(-(expected_at - now) // 1000))
        else:
            if before + k <= LIMIT:
                assert (grant.status, grant.granted) == ("granted", k)
            else:
                assert partial
                assert (grant.status, grant.granted) == ("partial", remaining)
                assert grant.counters[0].remaining == 0
            assert grant.counters[0].used == before + grant.granted
            event = Event(share_id, now, grant.granted)
            oracle.events.append(event)
            grants.append(event)

        _, [state] = ledger.peek([counter], now_ms=now)
        check_brackets(state.used, oracle, now)
        assert state.remaining == LIMIT - state.used
