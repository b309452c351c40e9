"""Whose time the library uses (gatekeeper.ledger.clock): the store's, or an instant a caller
fixed — then every path, Lua and Python, counts and records at that instant, on fakeredis and
on the real server alike, and the audit chain stays whole."""

from __future__ import annotations

import pytest
import redis

from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.clock import Clock, FixedClock
from gatekeeper.ledger.ledger import Ledger

T = 1_772_366_400_000  # 2026-03-01T12:00:00Z, long before the server's clock


def record(ledger: Ledger, n: int) -> None:
    ledger.record(keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
                  audit={"actor": "ann", "kind": "test", "outcome": "changed", "n": n})


def ids(client: redis.Redis) -> list[str]:
    return [rid.decode() for rid, _ in client.xrange(keys.SYS_AUDIT)]


def test_the_stores_clock_leaves_the_time_to_the_script(redis_client: redis.Redis) -> None:
    clock = Clock(redis_client)
    seconds, micros = redis_client.time()
    assert clock.fixed_ms is None and clock.arg() == "" and clock.arg(5) == 5
    assert abs(clock.now_ms() - (int(seconds) * 1000 + int(micros) // 1000)) < 5_000
    record(Ledger(redis_client, clock=clock), 1)
    [rid] = ids(redis_client)
    assert abs(int(rid.split("-")[0]) - clock.now_ms()) < 5_000  # the server's '*'


def test_records_made_at_a_fixed_instant_get_stream_ids_at_it(redis_client: redis.Redis) -> None:
    clock = FixedClock(redis_client, T)
    ledger = Ledger(redis_client, clock=clock)
    record(ledger, 1)
    record(ledger, 2)  # the same millisecond: the next sequence number
    pipe = redis_client.pipeline(transaction=True)
    chain.append(pipe, keys.SYS_AUDIT, {"kind": "python", "time": clock.now_ms()},
                 at_ms=clock.fixed_ms)
    pipe.execute()
    clock.set(T + 5_000)
    record(ledger, 3)
    pipe = redis_client.pipeline(transaction=True)
    chain.append(pipe, keys.SYS_AUDIT, {"kind": "python"}, at_ms=clock.fixed_ms)
    pipe.execute()
    assert ids(redis_client) == [f"{T}-0", f"{T}-1", f"{T}-2", f"{T + 5000}-0", f"{T + 5000}-1"]
    fields = [f for _, f in redis_client.xrange(keys.SYS_AUDIT)]
    assert [f[b"time"] for f in fields[:2]] == [str(T).encode()] * 2  # the record's own time
    [result] = chain.verify(redis_client)
    assert result.problem is None and result.records == 5


def test_a_fixed_instant_before_the_streams_last_record_appends_after_it(
        redis_client: redis.Redis) -> None:
    record(Ledger(redis_client), 1)  # now, by the server's clock
    [last] = ids(redis_client)
    record(Ledger(redis_client, clock=FixedClock(redis_client, T)), 2)
    ms, seq = last.split("-")
    assert ids(redis_client) == [last, f"{ms}-{int(seq) + 1}"]  # never refused, never reordered
    [result] = chain.verify(redis_client)
    assert result.problem is None


def test_a_fixed_clock_only_moves_forward(redis_client: redis.Redis) -> None:
    clock = FixedClock(redis_client, T)
    clock.set(T)
    with pytest.raises(ValueError, match="only moves forward"):
        clock.set(T - 1)
    assert clock.now_ms() == T == clock.arg()
