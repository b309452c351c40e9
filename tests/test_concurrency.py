"""Many processes racing for one entity counter on a real Redis server: never a unit over.

Each worker is a fresh interpreter ("spawn") with its own client and Ledger, and all of them
wait on one barrier so their requests really interleave on the server.
"""

from __future__ import annotations

import functools
import multiprocessing
import queue
import random
import time
from typing import Any

import pytest
from conftest import real_client

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Idempotency, Ledger
from gatekeeper.rules.errors import InProgress, QuotaExceeded
from gatekeeper.rules.limits import Counter, Limit, Window

pytestmark = [pytest.mark.slow, pytest.mark.real]

WORKERS = 16
ROOT = "race"
LIMIT = 5_000
PREFILLED = 4_000  # the race is for the last thousand
WINDOW = Window("30d", 30 * 86_400_000, 600_000)  # nothing leaves during the test
KEY = keys.counter(ROOT, "r2", ROOT)
TIMEOUT = 60


def entity_counter(amount: int = 0) -> Counter:
    return Counter(KEY, "R2", WINDOW, Limit(LIMIT), amount)


def race_for_the_last_units(
    conn: dict[str, str], worker: int, start: Any, results: Any
) -> None:
    """Mix whole and partial takes of random sizes, then drain with partials until refused."""
    client = real_client(conn)
    ledger = Ledger(client)
    rng = random.Random(worker)
    granted: list[int] = []
    refused = 0
    start.wait(TIMEOUT)
    n = 0
    while True:
        n += 1
        draining = n > 8
        size = rng.randint(1, 120)
        try:
            grant = ledger.take(ROOT, [entity_counter(size)], requested=size,
                                share_id=f"w{worker}-{n}", audit={"actor": f"w{worker}"},
                                partial=draining or rng.random() < 0.5)
        except QuotaExceeded:
            refused += 1
            if draining:
                break  # a partial is refused only when nothing at all is left
        else:
            granted.append(grant.granted)
    client.close()
    results.put((worker, granted, refused))


def same_key_race(conn: dict[str, str], worker: int, start: Any, results: Any,
                  fail: bool = False) -> None:
    """Every worker sends the same request with the same Idempotency-Key and, like a client,
    retries while the first is in progress; whoever is granted delivers, then commits. With
    `fail`, the race of issue 9: the first writer to be granted fails to write (disk full) and
    refunds while the others retry. Whatever is delivered must be counted."""
    client = real_client(conn)
    ledger = Ledger(client)
    start.wait(TIMEOUT)
    answers = _take_until_settled(ledger, worker, fail=fail)
    client.close()
    results.put((worker, *answers))


def _take_until_settled(ledger: Ledger, worker: int, fail: bool) -> tuple[list[str], int]:
    """Take (retrying on InProgress), deliver, settle; the statuses seen and IDs delivered."""
    seen: list[str] = []
    deadline = time.monotonic() + TIMEOUT / 2
    while time.monotonic() < deadline:
        try:
            grant = ledger.take(ROOT, [entity_counter(300)], requested=300,
                                share_id=f"w{worker}-{len(seen)}", audit={"actor": "alice"},
                                idempotency=Idempotency.of("alice", "retry-me", "share", 300))
        except InProgress:
            seen.append("in_progress")
            time.sleep(0.005)
            continue
        seen.append(grant.status)
        if grant.status == "replay":
            return seen, grant.granted  # a replay delivers the first answer's IDs again
        time.sleep(0.02)  # writing the file: the others race meanwhile
        # The first grant ever (share w?-0 of the lowest worker to win) fails when asked to.
        if fail and ledger.client.set(f"{ROOT}:failed-once", worker, nx=True):
            ledger.settle(ROOT, grant.share_id, [entity_counter(300)], delivered=False,
                          audit={"actor": "alice"},
                          idempotency=Idempotency.of("alice", "retry-me", "share", 300))
            seen.append("write-failed")
            continue
        status = ledger.settle(ROOT, grant.share_id, [entity_counter(300)], delivered=True,
                               audit={"actor": "alice"})
        assert status == "delivered"
        return seen, grant.granted
    return seen, 0


def run_workers(target: Any, conn: dict[str, str]) -> list[tuple]:
    ctx = multiprocessing.get_context("spawn")
    start = ctx.Barrier(WORKERS)
    results = ctx.Queue()
    procs = [ctx.Process(target=target, args=(conn, w, start, results)) for w in range(WORKERS)]
    for p in procs:
        p.start()
    out: list[tuple] = []
    deadline = time.monotonic() + TIMEOUT
    try:
        while len(out) < WORKERS and time.monotonic() < deadline:
            try:
                out.append(results.get(timeout=0.5))
            except queue.Empty:
                if not any(p.is_alive() for p in procs):
                    break  # a worker died before answering: its exit code says so below
    finally:
        for p in procs:
            p.join(max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.kill()
    assert [p.exitcode for p in procs] == [0] * WORKERS
    assert len(out) == WORKERS
    return out


def audit_records(client: Any) -> list[dict[str, str]]:
    return [
        {k.decode(): v.decode() for k, v in fields.items()}
        for _, fields in client.xrange(keys.audit(ROOT))
    ]


@pytest.fixture
def conn(real_server: dict[str, str]) -> Any:
    client = real_client(real_server)
    client.flushall()
    yield real_server
    client.flushall()
    client.close()


def test_racing_processes_are_granted_exactly_the_limit_in_total(conn: dict[str, str]) -> None:
    client = real_client(conn)
    ledger = Ledger(client)
    ledger.take(ROOT, [entity_counter(PREFILLED)], requested=PREFILLED, share_id="prefill",
                audit={"actor": "setup"})

    results = run_workers(race_for_the_last_units, conn)

    raced = sum(sum(granted) for _, granted, _ in results)
    assert PREFILLED + raced == LIMIT
    assert all(refused >= 1 for _, _, refused in results)  # everyone ran into the limit
    _, [state] = ledger.peek([entity_counter()])
    assert (state.used, state.remaining) == (LIMIT, 0)
    records = audit_records(client)
    assert sum(int(r["granted"]) for r in records) == LIMIT
    assert {r["outcome"] for r in records} <= {"granted", "partial", "refused"}
    grants = [r for r in records if r["outcome"] in ("granted", "partial")]
    assert len(grants) == 1 + sum(len(granted) for _, granted, _ in results)
    client.close()


def test_racing_processes_with_one_idempotency_key_are_counted_once(conn: dict[str, str]) -> None:
    client = real_client(conn)
    ledger = Ledger(client)

    results = run_workers(same_key_race, conn)

    finals = [seen[-1] for _, seen, _ in results]
    assert sorted(finals) == ["granted"] + ["replay"] * (WORKERS - 1)
    # A retry is answered "in progress" until the first is settled, never replayed before.
    assert all(set(seen[:-1]) <= {"in_progress"} for _, seen, _ in results)
    assert {delivered for _, _, delivered in results} == {300}
    _, [state] = ledger.peek([entity_counter()])
    assert state.used == 300
    records = audit_records(client)
    outcomes = [r["outcome"] for r in records]
    assert outcomes.count("granted") == 1 and outcomes.count("delivered") == 1
    assert outcomes.count("replayed") == WORKERS - 1
    assert set(outcomes) <= {"granted", "delivered", "replayed", "in_progress"}
    assert sum(int(r["granted"]) for r in records if r["outcome"] == "granted") == 300
    client.close()


def test_same_key_race_with_one_writer_failing_leaks_nothing(conn: dict[str, str]) -> None:
    client = real_client(conn)
    ledger = Ledger(client)

    results = run_workers(functools.partial(same_key_race, fail=True), conn)

    delivered = [d for _, _, d in results]
    assert all(d == 300 for d in delivered)  # everyone ended up with the IDs...
    _, [state] = ledger.peek([entity_counter()])
    assert state.used == 300  # ...counted exactly once: 0 delivered uncounted, 0 over
    failed = [seen for _, seen, _ in results if "write-failed" in seen]
    assert len(failed) == 1
    # Nobody was served a replay of the reservation that was then refunded.
    records = audit_records(client)
    refunded = {r["share_id"] for r in records if r["outcome"] == "refunded"}
    replayed = {r["share_id"] for r in records if r["outcome"] == "replayed"}
    assert len(refunded) == 1 and not refunded & replayed
    grants = sum(int(r["granted"]) for r in records if r["outcome"] == "granted")
    back = sum(int(r["granted"]) for r in records if r["outcome"] == "refunded")
    assert grants - back == state.used == 300
    client.close()
