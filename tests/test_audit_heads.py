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
from gatekeeper.ledger import keys
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


def test_a_first_page_of_many_streams_is_one_script_call_and_a_few_reads(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    ledger = Ledger(redis_client)
    streams = [keys.audit(f"e{i:03}") for i in range(200)]
    redis_client.sadd(keys.AUDIT_STREAMS, *streams)
    for i in range(1000):  # record i in stream i % 200 at ms T0 + i
        ledger.record(keys.placeholder(f"e{i % 200:03}"), streams[i % 200], mode="audit",
                      fields={}, audit={"n": str(i)}, now_ms=T0 + i)
    AuditLog(redis_client, ledger).page(size=50)  # scripts loaded
    monkeypatch.setattr(audit, "_HINTS", {})
    spy = Spy(monkeypatch)
    page, cursor = AuditLog(redis_client, ledger).page(size=50)
    assert [int(r["n"]) for r in page] == list(range(999, 949, -1))
    assert cursor is not None
    commands: list[Any] = [c[0] for c in spy.direct]
    assert commands.count("EVALSHA") == 1 and "XREVRANGE" not in commands
    # Then the records, from the 51 streams whose newest is on the page (and, once, what
    # follows in them) — never all 201.
    assert len(spy.pipelines) <= 2 and all(len(p) <= 51 for p in spy.pipelines)
