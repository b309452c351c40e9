"""The connection a take's script runs on (ledger/scripts.py: the pool's hot connection).

A cost-1 grant spent ~30 µs of client CPU checking a connection out of redis-py's pool and back
(a poll of the socket for unread data, observability bookkeeping). The scripts keep one
connection of the pool out of it instead: these tests pin that a take no longer checks one
out, and what keeping one must not break — threads at once, an answer interrupted halfway, a
forked child, and the server dropping the connection.
"""

from __future__ import annotations

import multiprocessing
import threading
from typing import Any

import pytest
import redis
from conftest import real_client

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.limits import Counter, Limit, Window

ROOT = "acme"
T0 = 1_700_000_000_000
WINDOW = Window("10s", 10_000, 1_000)
COUNTER = Counter(keys.counter(ROOT, "r2", ROOT), "R2", WINDOW, Limit(1_000_000), 1)


def take(ledger: Ledger, share_id: str, now_ms: int = T0) -> str:
    """A cost-1 take; returns the share id the answer names."""
    grant = ledger.take(ROOT, [COUNTER], requested=1, share_id=share_id,
                        audit={"actor": "alice", "channel": "api"}, now_ms=now_ms)
    assert grant.granted == 1
    return grant.share_id


def used(ledger: Ledger, now_ms: int = T0 + 1) -> int:
    return ledger.peek([COUNTER], now_ms=now_ms)[1][0].used


def audited(r: redis.Redis) -> list[str]:
    return [f[b"share_id"].decode() for _, f in r.xrange(keys.audit(ROOT))]


def test_takes_run_on_one_connection_without_checking_one_out_of_the_pool_each_time(
    redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = Ledger(redis_client)
    take(ledger, "warm")
    pool = redis_client.connection_pool
    checked_out: list[object] = []
    real_get = pool.get_connection

    def counting_get(*args: Any, **kw: Any) -> Any:
        checked_out.append(1)
        return real_get(*args, **kw)

    monkeypatch.setattr(pool, "get_connection", counting_get)
    for i in range(20):
        assert take(ledger, f"s{i}") == f"s{i}"
    monkeypatch.undo()
    assert checked_out == []
    assert used(ledger) == 21
    assert audited(redis_client) == ["warm", *(f"s{i}" for i in range(20))]


def test_takes_from_threads_at_once_each_get_their_own_answer_and_count_once(
    real_server: dict[str, str],
) -> None:
    # One thread holds the hot connection at a time; the others use the pool's, never waiting
    # and never reading another's answer.
    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    wrong: list[tuple[str, str]] = []

    def run(t: int) -> None:
        for i in range(40):
            sid = f"t{t}-{i}"
            got = take(ledger, sid)
            if got != sid:
                wrong.append((sid, got))

    threads = [threading.Thread(target=run, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert wrong == []
    assert used(ledger) == 160
    assert sorted(audited(r)) == sorted(f"t{t}-{i}" for t in range(4) for i in range(40))
    r.flushall()


def test_a_take_interrupted_halfway_through_its_answer_leaves_nothing_for_the_next(
    real_server: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # The answer of an interrupted take stays unread on the socket; the connection is dropped,
    # so the next take reads its own answer, not the interrupted one's.
    from redis.connection import AbstractConnection as Connection

    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    take(ledger, "a")
    real_read = Connection.read_response
    interrupted: list[object] = []

    def interrupt_once(self: Connection, *args: object, **kw: object) -> object:
        if not interrupted:
            interrupted.append(1)
            raise KeyboardInterrupt
        return real_read(self, *args, **kw)

    monkeypatch.setattr(Connection, "read_response", interrupt_once)
    with pytest.raises(KeyboardInterrupt):
        take(ledger, "b")
    assert take(ledger, "c") == "c"
    monkeypatch.undo()
    assert used(ledger) == 3  # b ran in the server: its reservation stands, counted
    assert audited(r) == ["a", "b", "c"]
    r.flushall()


def _child_takes(conn: dict[str, str], ledger: Ledger, out: Any) -> None:
    out.put([take(ledger, f"child-{i}") for i in range(30)])


def test_a_forked_child_takes_on_a_connection_of_its_own(real_server: dict[str, str]) -> None:
    # The parent's hot connection is its socket: a child sharing it would read the parent's
    # answers (and the parent the child's). A forked child starts from the pool afresh.
    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    take(ledger, "parent-warm")  # the parent now holds its hot connection
    ctx = multiprocessing.get_context("fork")
    out = ctx.Queue()
    child = ctx.Process(target=_child_takes, args=(real_server, ledger, out))
    child.start()
    mine = [take(ledger, f"parent-{i}") for i in range(30)]
    theirs = out.get(timeout=60)
    child.join(60)
    assert child.exitcode == 0
    assert mine == [f"parent-{i}" for i in range(30)]
    assert theirs == [f"child-{i}" for i in range(30)]
    assert used(ledger) == 61
    r.flushall()


def test_a_take_after_the_server_dropped_the_hot_connection_reconnects_and_counts_once(
    real_server: dict[str, str],
) -> None:
    r = real_client(real_server)
    r.flushall()
    ledger = Ledger(r)
    take(ledger, "a")
    admin = real_client(real_server)
    admin.client_kill_filter(skipme=True, _type="normal")  # the hot connection among them
    assert take(ledger, "b") == "b"
    r.close()  # the pool disconnects every connection, the hot one too
    assert take(ledger, "c") == "c"
    assert used(ledger) == 3
    assert audited(r) == ["a", "b", "c"]
    r.flushall()
    admin.close()


def test_a_pool_capped_small_keeps_every_connection_for_its_commands(
    real_server: dict[str, str],
) -> None:
    # A connection kept out of a pool of two would leave one for every other command of the
    # process: a small pool lends the scripts a connection per call, as before.
    r = (redis.Redis.from_url(real_server["url"], max_connections=2) if "url" in real_server
         else redis.Redis(unix_socket_path=real_server["unix_socket_path"], max_connections=2))
    r.flushall()
    ledger = Ledger(r)
    take(ledger, "a")
    assert ledger.scripts.hot is None
    assert len(r.connection_pool._in_use_connections) == 0  # type: ignore[attr-defined]
    assert take(ledger, "b") == "b" and used(ledger) == 2
    r.flushall()
    r.close()
