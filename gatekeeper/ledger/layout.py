"""The stored layout's version, and the migrations that bring an older store up to it.

Each index a newer version keeps beside the data (a pool's active counters, an audit stream's
latest refusals, a pool's keys) is written by the scripts as they go; a store written before
the index existed is indexed here once, with SCAN (never KEYS, which blocks the server for a
walk of the whole keyspace). Every migration is safe to run twice or beside live traffic: what
a script indexes meanwhile is kept.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any, Protocol, cast

import redis

from gatekeeper.ledger import clock, keys
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import outcomes

# 2 = each pool keeps an index of its active counters (keys.active);
# 3 = each audit stream keeps an index of its latest refusals (keys.refusals_of);
# 4 = each pool keeps an index of its keys (keys.pool_keys), for move.lua;
# 5 = the deletion notices keep their acknowledged ones and each recipient's open ones
#     (keys.NOTICES_ACKED, keys.notices_open_of; domain/notices.py).
LAYOUT = 5
POOL_KEY_INDEX = 4  # the layout from which every pool keeps an index of its keys
REFUSED = frozenset(o.encode() for o in outcomes.REFUSED)
NOTICES_INDEX = 5  # the layout from which the notices' indexes hold every notice
REFUSAL_INDEX_LENGTH = 100  # as _window.lua keeps it
DAY_MS = 86_400_000


class Window(Protocol):
    """What a migration needs of a counter's window (ledger.Window, a frozen dataclass)."""

    @property
    def length_ms(self) -> int: ...

    @property
    def width_ms(self) -> int: ...

    @property
    def timezone(self) -> str | None: ...


def surely_out_after(w: Window) -> int:
    """How long after its start a bucket of `w` surely counts no more: the window and the
    bucket's width, or a whole day more on a calendar day (its end moves with the zone)."""
    return w.length_ms + (DAY_MS if w.timezone else w.width_ms)


def upgrade(client: redis.Redis, windows: Mapping[str, Window]) -> dict[str, int]:
    """Bring a store to LAYOUT, once: index the counters that hold usage (2; `windows` by
    counter scope), the latest refusals of every audit stream (3), every pool's keys (4) and
    the deletion notices (5). Returns what it did."""
    with failing_closed():
        layout = int(client.get(keys.LAYOUT) or 0)
        done = {"counters": 0, "refusals": 0, "keys": 0, "notices": 0}
        if layout >= LAYOUT:
            return done
        if layout < 2:
            done["counters"] = _index_active_counters(client, windows)
        if layout < 3:
            done["refusals"] = _index_refusals(client)
        if layout < POOL_KEY_INDEX:
            done["keys"] = index_pool_keys(client, keys.ANY_POOL_KEY)
        if layout < NOTICES_INDEX:
            done["notices"] = index_notices(client)
        client.set(keys.LAYOUT, LAYOUT)
    return done


def index_pool_key(pipe: Any, key: str, ttl_s: int | None = None) -> None:
    """Queue the entry of `key`, a pool key written by Python rather than a script, in its
    pool's index of its keys (keys.pool_keys), so that it moves with the pool (move.lua).
    A key that expires (`ttl_s`) is kept there until a day past its expiry by the local clock:
    the entry only bounds the index's size, and the day covers any skew to the Redis clock."""
    root = keys.root_of_key(key)
    if root is None:
        raise ValueError(f"{key!r} belongs to no pool")
    if ttl_s is None:
        pipe.zadd(keys.pool_keys(root), {key: float("inf")}, nx=True)
    else:
        until = int((time.time() + ttl_s) * 1000) + DAY_MS
        pipe.zadd(keys.pool_keys(root), {key: until}, gt=True)


def index_pool_keys(client: redis.Redis, match: str) -> int:
    """Enter every pool key matching `match` (a SCAN pattern) in its pool's index of its
    keys, scored as the scripts score them: when it expires by the Redis clock, or inf."""
    found = [k.decode() for k in client.scan_iter(match=match, count=1000)]
    found = [k for k in found if not keys.stays(k)]
    now = clock.now_ms(client)
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.pttl(key)
    ttls = pipe.execute() if found else []
    pipe = client.pipeline(transaction=False)
    for key, ttl in zip(found, ttls, strict=True):
        if ttl == -2:
            continue  # gone since the scan
        root = keys.root_of_key(key)
        assert root is not None  # the patterns name pools only
        score = float("inf") if ttl < 0 else now + ttl
        pipe.zadd(keys.pool_keys(root), {key: score}, gt=True)
    pipe.execute()
    return len(found)


def index_notices(client: redis.Redis, tries: int = 10) -> int:
    """Enter every deletion notice in the indexes a notice's opening and acknowledgement keep
    since layout 5 — the acknowledged ones by acknowledgement time, each recipient's open ones
    — and mark them whole (keys.NOTICES_INDEXED). One transaction, watching the sets every
    opening and acknowledgement changes: one that comes in meanwhile makes it start again,
    so it never writes an index from a state already gone. Safe to run twice."""
    fields = ("state", "recipient_kind", "recipient", "opened_ms", "acked_ms")
    for _ in range(tries):
        with client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.NOTICES_ALL, keys.NOTICES_OPEN)
                ids = [text(cast(bytes, i)) for i in pipe.zrange(keys.NOTICES_ALL, 0, -1)]
                read = client.pipeline(transaction=False)
                for ident in ids:
                    read.hmget(keys.notice(ident), fields)
                got = read.execute() if ids else []
                pipe.multi()
                for ident, raw in zip(ids, got, strict=True):
                    state, kind, name, opened, acked = (text(v) if v is not None else None
                                                        for v in raw)
                    if state == "open" and kind and name:
                        pipe.zadd(keys.notices_open_of(kind, name), {ident: int(opened or 0)})
                    elif state is not None and acked:
                        pipe.zadd(keys.NOTICES_ACKED, {ident: int(acked)})
                pipe.set(keys.NOTICES_INDEXED, 1)
                pipe.execute()
                return len(ids)
            except redis.WatchError:
                continue
    raise redis.WatchError("deletion notices kept changing while they were indexed; run "
                           "`gatekeeper store upgrade` again")


def _index_active_counters(client: redis.Redis, windows: Mapping[str, Window]) -> int:
    """Every counter that still exists, in its pool's active index, scored as take.lua
    scores it — when its newest bucket leaves the window (for a calendar day, an upper
    bound: a day later)."""
    found = [k.decode() for k in client.scan_iter(match=keys.ANY_COUNTER, count=1000,
                                                  _type="list")]
    pipe = client.pipeline(transaction=False)
    for key in found:
        pipe.lindex(key, -1)
    newest = pipe.execute() if found else []
    pipe = client.pipeline(transaction=False)
    for key, bucket in zip(found, newest, strict=True):
        parsed = keys.parse_counter(key)
        if parsed is None or bucket is None or parsed[1] not in windows:
            continue  # gone since the scan, or not a counter this version knows
        root, scope, _ = parsed
        w, start = windows[scope], int(bucket.split(b":", 1)[0])
        release = start + surely_out_after(w)
        pipe.zadd(keys.active(root), {key: release})
    pipe.execute()
    return len(found)


def _index_refusals(client: redis.Redis) -> int:
    """Each audit stream's latest refusals, copied under their IDs into its refusal index
    (a stream whose index a script has started already keeps what the script wrote)."""
    streams = sorted(text(s) for s in client.smembers(keys.AUDIT_STREAMS))
    copied = 0
    for stream in [*streams, keys.SYS_AUDIT]:
        index = keys.refusals_of(stream)
        if client.exists(index):
            continue
        found: list[tuple[bytes, dict[Any, bytes]]] = []
        high = "+"
        while len(found) < REFUSAL_INDEX_LENGTH:
            # Bytes: the client does not decode answers (redis-py's types cannot know).
            batch = cast(list[tuple[bytes, dict[Any, bytes]]],
                         client.xrevrange(stream, max=high, count=1000))
            found += [(rid, f) for rid, f in batch if f.get(b"outcome") in REFUSED]
            if len(batch) < 1000:
                break
            high = f"({batch[-1][0].decode()}"
        pipe = client.pipeline(transaction=False)
        for rid, fields in reversed(found[:REFUSAL_INDEX_LENGTH]):
            pipe.xadd(index, fields, id=rid)
        try:
            pipe.execute()
        except redis.exceptions.ResponseError:
            continue  # a refusal was indexed meanwhile: older IDs cannot go before it
        copied += min(len(found), REFUSAL_INDEX_LENGTH)
    return copied
