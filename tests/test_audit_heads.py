"""The audit log's first page with many streams: each stream's newest ID first (heads.lua, one
script call), then records only from the streams that hold the page. Pages read so are exactly
the pages read stream by stream, whatever the filters, cursors, ties and gaps; on fakeredis and
on a real Redis."""

from __future__ import annotations

import random
from typing import Any

import pytest
import redis
from auditkit import Spy, all_pages

from gatekeeper.domain import audit
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.ledger import keys, summary
from gatekeeper.ledger.ledger import Ledger

T0 = 1_700_000_000_000


def write(redis_client: redis.Redis, ledger: Ledger, rnd: random.Random, pools: int,
          records: int) -> None:
    """`records` records in `pools` pool streams and the system stream, through record.lua
    (chained: the head names the newest) and, for a few streams, appended as an older
    version did (no head ID), at random times with bursts in one millisecond."""
    roots = [f"p{i:03}" for i in range(pools)]
    redis_client.sadd(keys.AUDIT_STREAMS, *map(keys.audit, roots))
    plain = set(roots[:3])
    last: dict[str, tuple[int, int]] = {}
    clock = T0
    for n in range(records):
        clock += rnd.choice([0, 0, 1, 3, 900, 86_400_000])
        root = rnd.choice([*roots, None])
        fields = {"n": str(n), "actor": f"u{n % 10}", "recipient": f"u{n % 3}",
                  "outcome": rnd.choice(["granted", "denied", "changed"])}
        if root in plain:
            prev = last.get(root, (0, 0))
            ident = (clock, 0) if clock > prev[0] else (prev[0], prev[1] + 1)
            last[root] = ident
            redis_client.xadd(keys.audit(root), {"time": str(clock), **fields},
                              id=f"{ident[0]}-{ident[1]}")
        else:
            ledger.record(keys.placeholder(root), audit.stream(root), mode="audit", fields={},
                          audit=fields, now_ms=clock)


@pytest.mark.parametrize("seed", range(4))
def test_pages_read_with_stream_heads_equal_pages_read_stream_by_stream(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rnd = random.Random(seed)
    ledger = Ledger(redis_client)
    write(redis_client, ledger, rnd, rnd.choice([5, 30, 90]), rnd.choice([60, 400]))
    monkeypatch.setattr(audit, "PROBE_FROM", 1)
    every = [r["id"] for r in AuditLog(redis_client).records()]
    mid = int(every[len(every) // 2].split("-")[0])
    for f in (AuditFilter(), AuditFilter(user="u1"), AuditFilter(since_ms=mid),
              AuditFilter(until_ms=mid, outcome="denied")):
        for size in (1, 7, 50):
            monkeypatch.setattr(audit, "_HINTS", {})
            plain = [(r["id"], r["n"]) for r in all_pages(AuditLog(redis_client), f, size=size)]
            probed = [(r["id"], r["n"]) for r in all_pages(AuditLog(redis_client, ledger), f,
                                                           size=size)]
            assert probed == plain, (f, size)
            assert len(plain) == len({p[1] for p in plain})  # no record twice


def test_a_first_page_of_many_streams_reads_one_chain_head_each_and_handles_only_its_own(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(redis_client)
    streams = [keys.audit(f"e{i:03}") for i in range(200)]
    redis_client.sadd(keys.AUDIT_STREAMS, *streams)
    for i in range(1000):  # record i in stream i % 200 at ms T0 + i
        ledger.record(keys.placeholder(f"e{i % 200:03}"), streams[i % 200], mode="audit",
                      fields={}, audit={"n": str(i)}, now_ms=T0 + i)
    AuditLog(redis_client, ledger).page(size=50)  # scripts loaded
    monkeypatch.setattr(audit, "_HINTS", {})
    built: list[str] = []

    class Source(audit._Source):
        def __init__(self, key: str, *args: Any) -> None:
            built.append(key)
            super().__init__(key, *args)

    monkeypatch.setattr(audit, "_Source", Source)
    spy = Spy(monkeypatch)
    page, cursor = AuditLog(redis_client, ledger).page(size=50)
    assert [int(r["n"]) for r in page] == list(range(999, 949, -1))
    assert cursor is not None
    calls = [c for c in spy.direct if c[0] == "EVALSHA"]
    assert [c[0] for c in spy.direct if c[0] != "EVALSHA"] == ["SMEMBERS"]
    # One call reads every stream's chain head (one key a stream) and answers only the 51
    # streams whose newest record comes first; the system stream, which holds no record
    # (no head names one), is asked the plain way, alone.
    assert int(calls[0][2]) == 201
    assert sorted(calls[0][3:3 + 201]) == sorted(map(keys.chain_of, [*streams, keys.SYS_AUDIT]))
    assert [c[3:3 + int(c[2])] for c in calls[1:]] == [
        (keys.SYS_AUDIT, keys.chain_of(keys.SYS_AUDIT))]
    # The merge is built for those streams only, not for all 201.
    assert len(built) <= 52
    # Then the records, from the 51 streams whose newest is on the page (and, once, what
    # follows in them) — never all 201.
    assert len(spy.pipelines) <= 2 and all(len(p) <= 51 for p in spy.pipelines)


@pytest.mark.parametrize("seed", range(2))
def test_pages_that_read_past_the_first_streams_frontier_equal_pages_read_stream_by_stream(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    # A filter drops records, so the page reads on past the streams heads.lua named first:
    # then every other stream's head is read, and the page is still exactly the plain one.
    rnd = random.Random(100 + seed)
    ledger = Ledger(redis_client)
    write(redis_client, ledger, rnd, 40, 300)
    monkeypatch.setattr(audit, "PROBE_FROM", 1)
    monkeypatch.setattr(audit, "TOP_WHEN_FILTERED", True)
    every = [r["id"] for r in AuditLog(redis_client).records()]
    mid = int(every[len(every) // 2].split("-")[0])
    for f in (AuditFilter(user="u1"), AuditFilter(outcome="changed"),
              AuditFilter(until_ms=mid, user="u2"), AuditFilter(since_ms=mid, outcome="denied")):
        for size in (1, 5, 50):
            monkeypatch.setattr(audit, "_HINTS", {})
            plain = [(r["id"], r["n"]) for r in all_pages(AuditLog(redis_client), f, size=size)]
            topped = [(r["id"], r["n"]) for r in all_pages(AuditLog(redis_client, ledger), f,
                                                           size=size)]
            assert topped == plain, (f, size)


@pytest.mark.parametrize("seed", range(3))
def test_top_heads_name_the_first_streams_and_a_frontier_no_other_stream_passes(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch, seed: int) -> None:
    rnd = random.Random(200 + seed)
    ledger = Ledger(redis_client)
    write(redis_client, ledger, rnd, 60, 500)
    monkeypatch.setattr(summary, "HEADS_PER_CALL", rnd.choice([7, 25, 1000]))
    streams = sorted(AuditLog(redis_client).streams(), reverse=True)  # merge order
    ids = sorted({int(r["id"].split("-")[0]) for r in AuditLog(redis_client).records()})
    for _ in range(12):
        low = rnd.choice(["0-0", f"{rnd.choice(ids)}-0"])
        highs = tuple(rnd.choice(["", f"{2**64 - 1}-{2**64 - 1}", f"{rnd.choice(ids)}-1",
                                  f"{rnd.choice(ids)}-0"]) for _ in range(2))
        split, k = rnd.randrange(len(streams) + 1), rnd.choice([1, 3, 10, 51])
        got = summary.stream_heads_top(ledger, streams, low, (highs[0], highs[1]), split, k)
        assert got is not None
        found, frontier = got
        # Each stream's newest record in its range, read from the stream itself.
        each: list[str | None] = []
        for i, stream in enumerate(streams):
            high = highs[0] if i < split else highs[1]
            newest = redis_client.xrevrange(stream, high, low, count=1) if high else []
            each.append(newest[0][0].decode() if newest else None)
        assert all(each[i] == ident for i, ident in found)
        order = sorted((i for i, h in enumerate(each) if h is not None),
                       key=lambda i: (*(-n for n in _id(each[i])), i))
        named = {i for i, _ in found}
        assert set(order[:k]) <= named
        if frontier is None:
            assert set(order) <= named
        else:
            at = order.index(frontier[0])
            assert frontier[0] not in named and each[frontier[0]] == frontier[1]
            assert set(order[:at]) <= named  # nothing left out comes before the frontier


def _id(text: str | None) -> tuple[int, int]:
    ms, _, seq = str(text).partition("-")
    return int(ms), int(seq)
