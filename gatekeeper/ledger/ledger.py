"""The quota ledger: exact weighted rolling windows in Redis, checked and reserved atomically.

The ledger only counts. What may be shared and under which limit is decided in
``gatekeeper.rules.policy``; the ledger applies those limits in Lua (``ledger/lua``) on the
Redis clock, so every app server and CLI process agrees, and a refusal changes no counter.

Cost per check does not depend on the share's size or the limit: a counter is a deque of time
buckets plus a running total, and memory is bounded by the number of buckets in the window.
"""

from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from gatekeeper.config import LimitsConfig
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import Scripts, failing_closed
from gatekeeper.rules import outcomes
from gatekeeper.rules.errors import Conflict, InProgress, NotFound, PoolMoved, QuotaExceeded
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, hydrated_window, post_id_window

IDEMPOTENCY_TTL_S = 7 * 86_400  # a client retrying for a week still gets its first answer
RESERVATION_TIMEOUT_MS = 15 * 60_000  # limits.reservation_timeout_minutes' default


def limit_args(limit: Limit) -> list[Any]:
    """A limit as the scripts read it (_window.lua's read_spec): -1 for unlimited."""
    return [
        -1 if limit.base is None else limit.base,
        -1 if limit.permit is None else limit.permit,
        limit.permit_from_ms,
        limit.permit_until_ms,
    ]


def counter_args(c: Counter, around_ms: int) -> list[Any]:
    """A counter's spec in a script's ARGV (_window.lua's read_spec)."""
    return [
        c.amount,
        *limit_args(c.limit),
        c.window.length_ms,
        c.window.width_ms,
        c.window.boundaries(around_ms),
        c.rule,
    ]


@dataclass(frozen=True)
class CounterState:
    """A counter as a take or peek left it."""

    rule: str
    limit: int | None
    used: int
    remaining: int | None
    releases: list[tuple[int, int]] = field(default_factory=list)  # (at ms, amount)


@dataclass(frozen=True)
class Grant:
    """A reservation the ledger made (or, for a replay, made earlier)."""

    status: str  # granted | partial | replay (of a first request counted for good)
    first_status: str  # granted | partial: what the original answer was
    share_id: str
    requested: int
    granted: int
    now_ms: int
    counters: list[CounterState]


@dataclass(frozen=True)
class Idempotency:
    """A client's Idempotency-Key, scoped to the actor, with the request it was first sent for."""

    actor: str
    key: str
    fingerprint: str

    @staticmethod
    def of(actor: str, key: str, *parts: object) -> Idempotency:
        digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).hexdigest()
        return Idempotency(actor, key, digest)


def iso(ms: int) -> str:
    """Epoch milliseconds as ISO 8601 UTC, to the second (rounded up: never early)."""
    seconds = -(-ms // 1000)
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


def _int_or_none(value: str) -> int | None:
    n = int(value)
    return None if n < 0 else n


def _audit_args(audit: dict[str, Any]) -> list[str]:
    out: list[str] = []
    for k, v in audit.items():
        if v is not None:
            out += [k, str(v)]
    return out


# The stored layout: 2 = each pool keeps an index of its active counters (keys.active);
# 3 = each audit stream keeps an index of its latest refusals (keys.refusals_of).
LAYOUT = 3
REFUSED = frozenset(o.encode() for o in outcomes.REFUSED)
REFUSAL_INDEX_LENGTH = 100  # as _window.lua keeps it


def decode_daily(days: range, row: list[bytes | None]) -> dict[int, int]:
    """An HMGET of a counter's ``:daily`` hash for `days`, as epoch day -> amount."""
    return {day: int(n) for day, n in zip(days, row, strict=True) if n and int(n)}


class Ledger:
    """Counts against limits in Redis; every answer carries limit, used and remaining."""

    def __init__(self, client: redis.Redis, scripts: Scripts | None = None, *,
                 reservation_timeout_ms: int = RESERVATION_TIMEOUT_MS) -> None:
        self.client = client
        self.scripts = scripts or Scripts(client)
        # An open reservation older than this is closed as counted (abandon_stale).
        self.reservation_timeout_ms = reservation_timeout_ms

    def take(
        self,
        root: str,
        counters: list[Counter],
        *,
        requested: int,
        share_id: str,
        audit: dict[str, Any],
        partial: bool = False,
        idempotency: Idempotency | None = None,
        now_ms: int | None = None,
    ) -> Grant:
        """Check every counter and reserve the request on all of them, or refuse it whole.

        With ``partial``, exactly the remaining allowance is granted instead (every counter
        must then be charged the requested amount). Raises QuotaExceeded (nothing counted),
        Conflict (idempotency key reused for another request) or InProgress (the key's first
        request is reserved but not yet settled: a replay now could deliver IDs that are then
        refunded). A replay is returned only for a first request counted for good.
        """
        if partial and any(c.amount != requested for c in counters):
            raise ValueError("a partial take charges every counter the requested amount")
        # The local clock only picks which midnights to send (calendar-day windows); the
        # script decides by the Redis clock.
        around = now_ms if now_ms is not None else int(time.time() * 1000)
        ttl_share = max(c.window.length_ms for c in counters) // 1000 + 86_400
        idem_key = (
            keys.idempotency(root, idempotency.actor, idempotency.key)
            if idempotency
            else keys.placeholder(root)
        )
        args: list[Any] = [
            "" if now_ms is None else now_ms,
            "1" if partial else "0",
            idempotency.fingerprint if idempotency else "",
            IDEMPOTENCY_TTL_S,
            ttl_share,
            requested,
            share_id,
            len(counters),
            self.reservation_timeout_ms,
        ]
        for c in counters:
            args += counter_args(c, around)
        args += _audit_args(audit)
        out = self.scripts.run(
            "take",
            [keys.audit(root), idem_key, keys.share(root, share_id), keys.active(root),
             keys.moved(root), keys.refusals_of(keys.audit(root)), keys.reserved(root),
             *(c.key for c in counters)],
            args,
        )
        status = out["status"]
        if status == "moved":
            raise PoolMoved(f"R10: the pool of {root!r} joined the pool of {out['root']!r} "
                            "while this request was made; nothing was counted, try again")
        if status == "in_progress":
            closes = int(out["closes_at"])
            key = idempotency.key if idempotency else ""
            raise InProgress(
                f"R2: in progress — the first request with Idempotency-Key {key!r} (share "
                f"{out['share_id']}) is still being delivered; nothing was delivered "
                "or counted for this retry — try again in a few seconds (if that delivery "
                f"stopped, it is closed as counted at {iso(closes)} and a retry then gets it)",
                share_id=out["share_id"], closes_at=iso(closes),
                retry_after=max(1, -(-int(out["retry_after_ms"]) // 1000)),
            )
        if status == "conflict":
            raise Conflict(
                f"Idempotency-Key {idempotency.key!r} was already used for a different request",
                idempotency_key=idempotency.key if idempotency else None,
            )
        states = [
            CounterState(
                rule=c["rule"],
                limit=_int_or_none(c["limit"]),
                used=int(c["used"]),
                remaining=_int_or_none(c["remaining"]),
            )
            for c in out["counters"]
        ]
        if status == "refused":
            self._refuse(out, counters, states)
        return Grant(
            status=status,
            first_status=out.get("first_status", status),
            share_id=out["share_id"],
            requested=int(out["requested"]),
            granted=int(out["granted"]),
            now_ms=int(out["now"]),
            counters=states,
        )

    @staticmethod
    def _refuse(out: dict[str, Any], counters: list[Counter], states: list[CounterState]) -> None:
        index = int(out["refusing"]) - 1
        counter, state = counters[index], states[index]
        at = int(out["available_at"])
        requested = int(out["requested"])
        if at >= 0:
            when = f"capacity for the whole request returns at {iso(at)}"
        elif state.limit is not None and requested > state.limit:
            when = f"it can never fit: {requested:,} is more than the limit of {state.limit:,}"
        else:
            when = "no scheduled release of capacity makes the whole request fit"
        raise QuotaExceeded(
            f"{counter.rule}: {requested:,} requested but only {state.remaining:,} of "
            f"{state.limit:,} remain in the {counter.window.name} window; nothing was counted; "
            f"{when}",
            rule=counter.rule,
            limit=state.limit,
            used=state.used,
            requested=requested,
            remaining=state.remaining,
            window=counter.window.name,
            available_at=iso(at) if at >= 0 else None,
            retry_after=max(1, -(-(at - int(out["now"])) // 1000)) if at >= 0 else None,
        )

    def settle(
        self,
        root: str,
        share_id: str,
        counters: list[Counter],
        *,
        delivered: bool,
        audit: dict[str, Any],
        idempotency: Idempotency | None = None,
        now_ms: int | None = None,
    ) -> str:
        """Commit a reservation (delivered, stays counted) or refund it exactly.

        Returns what happened (settle.lua): ``delivered``/``refunded``; ``recounted`` when a
        commit found the reservation refunded or gone and counted the delivery again; for a
        refund, ``already_<status>`` (``already_delivered``/``already_abandoned``: it stays
        counted) or ``missing``.
        """
        idem_key = (
            keys.idempotency(root, idempotency.actor, idempotency.key)
            if idempotency
            else keys.placeholder(root)
        )
        args: list[Any] = ["" if now_ms is None else now_ms, "commit" if delivered else "refund",
                           len(counters)]
        for c in counters:
            args += [c.amount, c.window.width_ms]
        out = self.scripts.run(
            "settle",
            [keys.share(root, share_id), keys.audit(root), idem_key, keys.reserved(root),
             *(c.key for c in counters)],
            [*args, *_audit_args({"share_id": share_id, **audit})],
        )
        return out["status"]

    def sweep(self, root: str, *, now_ms: int | None = None) -> dict[str, int]:
        """Close the pool's reservations left unsettled past the timeout, as counted
        (``share.abandoned``); returns how many it closed and how many are still open."""
        out = self.scripts.run(
            "sweep", [keys.reserved(root), keys.audit(root), keys.share(root, "")],
            ["" if now_ms is None else now_ms, self.reservation_timeout_ms])
        return {"abandoned": int(out["abandoned"]), "open": int(out["open"])}

    def peek(
        self, counters: list[Counter], *, now_ms: int | None = None, next_only: bool = False
    ) -> tuple[int, list[CounterState]]:
        """Read counters as of now (Redis clock) without changing them.

        With ``next_only`` each counter's releases hold only the next one, and the used total
        comes from the running sum instead of every bucket (what a dashboard row needs).
        """
        args = self.peek_args(counters, now_ms=now_ms, next_only=next_only)
        out = self.scripts.run("peek", [c.key for c in counters], args)
        states = [
            CounterState(
                rule=counters[i].rule,
                limit=_int_or_none(c["limit"]),
                used=int(c["used"]),
                remaining=_int_or_none(c["remaining"]),
                releases=[(int(at), int(amount)) for at, amount in c["releases"]],
            )
            for i, c in enumerate(out["counters"])
        ]
        return int(out["now"]), states

    @staticmethod
    def peek_args(counters: list[Counter], *, now_ms: int | None = None,
                  next_only: bool = False) -> list[Any]:
        """The ARGV of peek.lua for `counters` (for callers that pipeline many peeks)."""
        around = now_ms if now_ms is not None else int(time.time() * 1000)
        specs: dict[tuple[Any, ...], int] = {}  # counters sharing window and limit share a spec
        index = [specs.setdefault((c.window, c.limit, c.rule), len(specs) + 1)
                 for c in counters]
        args: list[Any] = ["" if now_ms is None else now_ms, "1" if next_only else "0",
                           len(specs)]
        for window, limit, rule in specs:
            args += counter_args(Counter("", rule, window, limit), around)
        return args + index

    def upgrade(self, limits: LimitsConfig) -> dict[str, int]:
        """Bring a store written by an older version to LAYOUT, once: index the counters that
        hold usage (2) and the latest refusals of every audit stream (3). Safe to run twice or
        beside live traffic (what a script indexes meanwhile is kept). Returns what it did."""
        with failing_closed():
            layout = int(self.client.get(keys.LAYOUT) or 0)
            done = {"counters": 0, "refusals": 0}
            if layout >= LAYOUT:
                return done
            if layout < 2:
                done["counters"] = self._index_active_counters(limits)
            if layout < 3:
                done["refusals"] = self._index_refusals()
            self.client.set(keys.LAYOUT, LAYOUT)
        return done

    def _index_active_counters(self, limits: LimitsConfig) -> int:
        """Every counter that still exists, in its pool's active index, scored as take.lua
        scores it — when its newest bucket leaves the window (for a calendar day, an upper
        bound: a day later)."""
        windows = {"r2": post_id_window(limits), "uid": post_id_window(limits),
                   "r6": hydrated_window(limits)}
        found = [k.decode() for k in self.client.scan_iter(
            match=f"{keys.PREFIX}:{{e:*}}:ctr:*", count=1000, _type="list")]
        pipe = self.client.pipeline(transaction=False)
        for key in found:
            pipe.lindex(key, -1)
        newest = pipe.execute() if found else []
        pipe = self.client.pipeline(transaction=False)
        for key, bucket in zip(found, newest, strict=True):
            root, scope = keys.root_of_key(key), key.split(":ctr:", 1)[1].split(":", 1)[0]
            if root is None or bucket is None or scope not in windows:
                continue  # gone since the scan, or not a counter this version knows
            w, start = windows[scope], int(bucket.split(b":", 1)[0])
            release = start + w.length_ms + (DAY_MS if w.timezone else w.width_ms)
            pipe.zadd(keys.active(root), {key: release})
        pipe.execute()
        return len(found)

    def _index_refusals(self) -> int:
        """Each audit stream's latest refusals, copied under their IDs into its refusal index
        (a stream whose index a script has started already keeps what the script wrote)."""
        streams = sorted(s.decode() for s in self.client.smembers(keys.AUDIT_STREAMS))
        copied = 0
        for stream in [*streams, keys.SYS_AUDIT]:
            index = keys.refusals_of(stream)
            if self.client.exists(index):
                continue
            found: list[tuple[bytes, dict[bytes, bytes]]] = []
            high = "+"
            while len(found) < REFUSAL_INDEX_LENGTH:
                batch = self.client.xrevrange(stream, max=high, count=1000)
                found += [(rid, f) for rid, f in batch if f.get(b"outcome") in REFUSED]
                if len(batch) < 1000:
                    break
                high = f"({batch[-1][0].decode()}"
            pipe = self.client.pipeline(transaction=False)
            for rid, fields in reversed(found[:REFUSAL_INDEX_LENGTH]):
                pipe.xadd(index, fields, id=rid)
            try:
                pipe.execute()
            except redis.exceptions.ResponseError:
                continue  # a refusal was indexed meanwhile: older IDs cannot go before it
            copied += min(len(found), REFUSAL_INDEX_LENGTH)
        return copied

    def daily(self, counters: list[Counter], days: range | None = None) -> list[dict[int, int]]:
        """Usage per UTC day (epoch day -> amount) of each counter, for charts and reports:
        the given epoch `days` only, or every day kept (400)."""
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for c in counters:
                if days is None:
                    pipe.hgetall(c.key + ":daily")
                else:
                    pipe.hmget(c.key + ":daily", list(days))
            rows = pipe.execute()
        if days is not None:
            return [decode_daily(days, row) for row in rows]
        return [{int(day): int(n) for day, n in row.items() if int(n)} for row in rows]

    def record(
        self,
        hash_key: str,
        audit_key: str,
        *,
        mode: str,
        fields: dict[str, Any],
        audit: dict[str, Any],
        now_ms: int | None = None,
        subject: str | None = None,
    ) -> dict[str, Any]:
        """Apply an administrative change and append its audit record in one step (R11).

        With `subject` (e.g. "entity 'acme'"), a create of something that exists raises
        Conflict and an update of something missing raises NotFound.
        """
        pairs = _audit_args(fields)
        out = self.scripts.run(
            "record",
            [hash_key, audit_key, keys.moved_of(audit_key), keys.refusals_of(audit_key)],
            ["" if now_ms is None else now_ms, mode, len(pairs) // 2, *pairs,
             *_audit_args(audit)],
        )
        if out["status"] == "moved":
            raise PoolMoved(f"R10: {subject or 'this'} now belongs to the pool of "
                            f"{out['root']!r} (it moved just now); nothing was changed, "
                            "try again")
        if subject is not None and out["status"] == "exists":
            raise Conflict(f"{subject} already exists")
        if subject is not None and out["status"] == "missing":
            raise NotFound(f"no {subject}")
        return out
