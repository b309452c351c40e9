"""The quota ledger: exact weighted rolling windows in Redis, checked and reserved atomically.

The ledger only counts. What may be shared and under which limit is decided in
``gatekeeper.rules.policy``; the ledger applies those limits in Lua (``ledger/lua``) on the
Redis clock, so every app server and CLI process agrees, and a refusal changes no counter.

Cost per check does not depend on the share's size or the limit: a counter is a deque of time
buckets plus a running total, and memory is bounded by the number of buckets in the window.

This is the only caller of the scripts (``ledger/scripts.py``): each method builds its script's
KEYS and ARGV and turns its JSON answer into values or typed errors. Every key a script touches
is in its KEYS, so a script that finds it needs a record it was not given (a stale reservation,
an idempotency key's first share) changes nothing and names it; ``_run`` runs it again with it.

Moving a pool (R10, ``move``) keeps a per-pool index of the pool's keys (``keys.pool_keys``)
rather than a fenced two-step move. A fence (mark the pool moving, SCAN its keys, then move what
was found) would have to be honoured by every writer, Python ones included, and a key written
between the SCAN and the move would be left behind unseen. With the index, each writer enters
the key it creates in the same atomic step (in the script, or in the writer's MULTI), the move
reads the index and names every key in KEYS, and the script re-checks that the index holds
nothing it was not given, so nothing can be left behind; the cost is a sorted-set entry per
key, pruned by expiry. A store written before the index is indexed with SCAN (``upgrade``).

Longer than the ~300 lines a module keeps here, for a reason: each method is the Python side
of one script (take, settle, peek, record, move, sweep), laying out its KEYS and ARGV and
reading its answer; split apart, a script's two halves would live in different files.
"""

from __future__ import annotations

import functools
import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import redis

from gatekeeper.config import LimitsConfig
from gatekeeper.ledger import keys, layout
from gatekeeper.ledger.clock import Clock
from gatekeeper.ledger.scripts import Scripts, decode
from gatekeeper.ledger.store import Batch, failing_closed, is_cluster
from gatekeeper.rules import fits
from gatekeeper.rules.errors import (
    Conflict,
    InProgress,
    NotFound,
    PoolMoved,
    QuotaExceeded,
    StoreUnavailable,
)
from gatekeeper.rules.limits import Counter, Limit, Window, hydrated_window, post_id_window

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
class Move:
    """What joining a pool to another did (move.lua): ``ok`` with what it moved and merged,
    or why it changed nothing — ``has_children``, ``in_flight`` (a share being delivered),
    ``not_root``, ``parent_moved`` or ``exists`` (changed under our feet)."""

    status: str
    moved: int = 0
    merged: int = 0
    children: tuple[str, ...] = ()
    share: str | None = None


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


LAYOUT = layout.LAYOUT  # the stored layout this version writes (see layout.py)
# A script that needed keys it was not given is run again with them (Ledger._run): each try
# declares what the last one found; more tries than this means the pool changes faster than
# we can read it.
UNDECLARED_TRIES = 8
PEEK_BATCH = 500  # counters per peek call, so that no single call holds the server long


def decode_daily(days: range, row: list[bytes | None]) -> dict[int, int]:
    """An HMGET of a counter's ``:daily`` hash for `days`, as epoch day -> amount."""
    return {day: int(n) for day, n in zip(days, row, strict=True) if n and int(n)}


class Ledger:
    """Counts against limits in Redis; every answer carries limit, used and remaining."""

    def __init__(self, client: redis.Redis, scripts: Scripts | None = None, *,
                 reservation_timeout_ms: int = RESERVATION_TIMEOUT_MS,
                 clock: Clock | None = None) -> None:
        self.client = client
        # Whose time the scripts use: the store's (TIME), or an instant fixed by the caller.
        self.clock = clock or Clock(client)
        self.scripts = scripts or Scripts(client)
        # An open reservation older than this is closed as counted (abandon_stale).
        self.reservation_timeout_ms = reservation_timeout_ms
        self.cluster = is_cluster(client)

    def _run(self, name: str, keys_: list[str], args: list[Any]) -> dict[str, Any]:
        """Run a script whose KEYS end with the records it may have to read (stale
        reservations, an idempotency key's first share): when it answers that it needs keys it
        was not given (and changed nothing), run it again with them declared."""
        extra: list[str] = []
        for _ in range(UNDECLARED_TRIES):
            out = self.scripts.run(name, [*keys_, *extra], args)
            if out.get("status") != "undeclared":
                return out
            extra += [k for k in out["keys"] if k not in extra]
        raise StoreUnavailable(f"{name}.lua kept finding keys it was not given ({extra[:3]}…); "
                               "nothing was changed, try again")

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
        around = self._around(now_ms)
        ttl_share = max(c.window.length_ms for c in counters) // 1000 + 86_400
        fixed = _take_keys(root)
        idem_key = keys.idempotency(root, idempotency.actor, idempotency.key) if idempotency \
            else fixed[2]
        args: list[Any] = [
            self.clock.arg(now_ms),
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
        out = self._run(
            "take",
            [fixed[0], fixed[1], idem_key, keys.share(root, share_id), *fixed[3:8],
             *(k for c in counters for k in keys.counter_keys(c.key)), fixed[8]],
            args,
        )
        status = out["status"]
        if status == "moved":
            raise PoolMoved(f"R10: the pool of {root!r} joined the pool of {out['root']!r} "
                            "while this request was made; nothing was counted, try again")
        if status == "resent":  # the first run's answer was lost on the way back (R2, R11)
            raise StoreUnavailable(
                f"R2: the answer to this request (share {out['share_id']}) was lost between "
                "the Redis store and gatekeeper, so nothing was delivered; the request stays "
                "reserved, counted until it is closed — try again (with the same "
                "Idempotency-Key to be answered from the first request)")
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
        if status == "conflict":  # answered only to a take with a key
            given = idempotency.key if idempotency else None
            raise Conflict(f"Idempotency-Key {given!r} was already used for a different request",
                           idempotency_key=given)
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
            self._refuse(out, counters, states, audit.get("kind"))
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
    def _refuse(out: dict[str, Any], counters: list[Counter], states: list[CounterState],
                kind: str | None = None) -> None:
        index = int(out["refusing"]) - 1
        counter, state = counters[index], states[index]
        at = int(out["available_at"])
        requested = int(out["requested"])
        # What fits now, were the request cut to it (what a partial take grants).
        fits_now = min([requested, *(s.remaining for s in states if s.remaining is not None)])
        whole = fits.fit(at, first=fits_now, kind=kind)
        never = {"fits_now": fits_now} if at < 0 else {}  # the API's machine-readable "never"
        if at >= 0:
            when = f"capacity for the whole request returns at {iso(at)}"
        elif state.limit is not None and requested > state.limit:
            when = (f"{requested:,} is more than the limit of {state.limit:,}, so it "
                    f"{whole.text(iso) if whole else 'never fits whole'}")
        else:
            when = (f"no scheduled release of capacity makes the whole request fit: it "
                    f"{whole.text(iso) if whole else 'never fits whole'}")
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
            **never,
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
        args: list[Any] = [self.clock.arg(now_ms), "commit" if delivered else "refund",
                           len(counters)]
        for c in counters:
            args += [c.amount, c.window.width_ms, layout.surely_out_after(c.window)]
        audit_key = keys.audit(root)
        out = self.scripts.run(
            "settle",
            [keys.share(root, share_id), audit_key, keys.chain_of(audit_key), idem_key,
             keys.reserved(root), keys.pool_keys(root),
             *(k for c in counters for k in keys.counter_keys(c.key)), keys.summary(root),
             keys.active(root)],
            [*args, *_audit_args({"share_id": share_id, **audit})],
        )
        if out["status"] in ("refunded", "already_refunded") and audit.get("manifest"):
            # Nothing of a refunded share left: its manifest is no delivery's, and notices and
            # trace (which read this index) must not count it (issue 15). Again on a repeat,
            # in case the store dropped between the two.
            with failing_closed():
                pipe = self.client.pipeline(transaction=False)
                pipe.zrem(keys.MANIFESTS, audit["manifest"])
                pipe.hdel(keys.MANIFEST_SPANS, audit["manifest"])  # trace's spans of it
                pipe.execute()
        return out["status"]

    def sweep(self, root: str, *, now_ms: int | None = None) -> dict[str, int]:
        """Close the pool's reservations left unsettled past the timeout, as counted
        (``share.abandoned``); returns how many it closed and how many are still open."""
        audit_key = keys.audit(root)
        out = self._run(
            "sweep", [keys.reserved(root), audit_key, keys.chain_of(audit_key),
                      keys.share(root, "")],
            [self.clock.arg(now_ms), self.reservation_timeout_ms])
        return {"abandoned": int(out["abandoned"]), "open": int(out["open"])}

    def peek(
        self, counters: list[Counter], *, now_ms: int | None = None, next_only: bool = False
    ) -> tuple[int, list[CounterState]]:
        """Read counters as of now (Redis clock) without changing them.

        With ``next_only`` each counter's releases hold only the next one, and the used total
        comes from the running sum instead of every bucket (what a dashboard row needs).
        """
        args = self._peek_args(counters, now_ms=now_ms, next_only=next_only)
        out = self.scripts.run("peek", _peek_keys(counters), args)
        return int(out["now"]), _states(counters, out)

    def peek_many(self, counters: list[Counter], *,
                  next_only: bool = False) -> list[CounterState]:
        """Read any number of counters as of now, in one round trip per server (see
        queue_peeks); their states in the order given."""
        with failing_closed():
            batch = Batch(self.client)
            decode_states = self.queue_peeks(batch, counters, next_only=next_only)
            return decode_states(batch.execute())

    def queue_peeks(self, batch: Batch, counters: list[Counter], *, next_only: bool = False
                    ) -> Callable[[list[Any]], list[CounterState]]:
        """Queue peeks of `counters` on `batch` (with whatever else the caller reads in the
        same round trip); returns what turns the batch's answers into their states, in order.

        A call reads at most PEEK_BATCH counters; on a Redis Cluster, where a script may touch
        one slot, one call per pool (a single server takes any keys, so many small pools share
        a call: 1,000 calls cost ~30 ms more).
        """
        groups: dict[str | None, list[int]] = {}
        for i, c in enumerate(counters):
            groups.setdefault(keys.root_of_key(c.key) if self.cluster else None, []).append(i)
        calls: list[list[int]] = []
        for members in groups.values():
            calls += [members[i:i + PEEK_BATCH] for i in range(0, len(members), PEEK_BATCH)]
        first = len(batch)
        for call in calls:
            part = [counters[i] for i in call]
            args = self._peek_args(part, next_only=next_only)
            batch.add(part[0].key, lambda pipe, part=part, args=args: self.scripts.queue(
                pipe, "peek", _peek_keys(part), args))

        def decode_states(results: list[Any]) -> list[CounterState]:
            states: list[CounterState | None] = [None] * len(counters)
            for call, raw in zip(calls, results[first:first + len(calls)], strict=True):
                part = [counters[i] for i in call]
                for i, state in zip(call, _states(part, decode(raw)), strict=True):
                    states[i] = state
            return [s for s in states if s is not None]

        return decode_states

    def _around(self, now_ms: int | None) -> int:
        """The time whose local midnights a script is sent (calendar-day windows): the one it
        will use when that is known here, else the local clock's (the script picks by its own)."""
        if now_ms is None:
            now_ms = self.clock.fixed_ms
        return now_ms if now_ms is not None else int(time.time() * 1000)

    def _peek_args(self, counters: list[Counter], *, now_ms: int | None = None,
                   next_only: bool = False) -> list[Any]:
        """The ARGV of peek.lua for `counters`."""
        around = self._around(now_ms)
        specs: dict[tuple[Any, ...], int] = {}  # counters sharing window and limit share a spec
        index = [specs.setdefault((c.window, c.limit, c.rule), len(specs) + 1)
                 for c in counters]
        args: list[Any] = [self.clock.arg(now_ms), "1" if next_only else "0",
                           len(specs)]
        for window, limit, rule in specs:
            args += counter_args(Counter("", rule, window, limit), around)
        return args + index

    def upgrade(self, limits: LimitsConfig) -> dict[str, int]:
        """Bring a store written by an older version to LAYOUT, once (layout.upgrade)."""
        windows = {"r2": post_id_window(limits), "uid": post_id_window(limits),
                   "r6": hydrated_window(limits)}
        return layout.upgrade(self.client, windows)

    def daily(self, counters: list[Counter], days: range | None = None) -> list[dict[int, int]]:
        """Usage per UTC day (epoch day -> amount) of each counter, for charts and reports:
        the given epoch `days` only, or every day kept (400)."""
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for c in counters:
                if days is None:
                    pipe.hgetall(keys.counter_daily(c.key))
                else:
                    pipe.hmget(keys.counter_daily(c.key), list(days))
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
        # A pool's hash is entered in the pool's index of its keys, so that it moves with it.
        root = keys.root_of_key(hash_key)
        index = [] if root is None or keys.stays(hash_key) else [keys.pool_keys(root)]
        out = self.scripts.run(
            "record",
            [hash_key, audit_key, keys.chain_of(audit_key), keys.moved_of(audit_key),
             keys.refusals_of(audit_key), *index],
            [self.clock.arg(now_ms), mode, len(pairs) // 2, *pairs,
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

    def move(self, name: str, *, parent: str, root: str, r2_window: Window,
             fields: dict[str, Any]) -> Move:
        """R10: the pool of `name` (its root, without children) joins the pool of `root` as
        a child of `parent`, in one script (move.lua) that names every key it touches: the
        keys listed in the pool's index of its keys and their new names. `fields` are those
        of the two audit records it appends (one in each pool's stream). Needs a single Redis
        server (the two pools are in different Cluster slots); the caller says so first."""
        with failing_closed():
            if int(self.client.get(keys.LAYOUT) or 0) < layout.POOL_KEY_INDEX:
                # A store written before the index: this pool's keys are indexed first.
                layout.index_pool_keys(self.client, keys.pool_prefix(name) + "*")
        fixed = [keys.ENTITIES, keys.moved(name), keys.audit(name),
                 keys.chain_of(keys.audit(name)), keys.audit(root),
                 keys.chain_of(keys.audit(root)), keys.moved(root), keys.active(root),
                 keys.active(name), keys.reserved(name), keys.pool_keys(name),
                 keys.pool_keys(root), *keys.counter_keys(keys.counter(root, "r2", root)),
                 keys.counter(root, "r2", name), keys.counter_daily(keys.counter(root, "r2", name)),
                 keys.entity(root, name)]
        for _ in range(UNDECLARED_TRIES):
            with failing_closed():
                pipe = self.client.pipeline(transaction=False)
                pipe.zrange(keys.pool_keys(name), 0, -1)
                pipe.zrange(keys.reserved(name), 0, -1)
                indexed, reserved = pipe.execute()
            old = sorted(k.decode() for k in indexed if not keys.stays(k.decode()))
            shares = [keys.share(name, r.decode()) for r in reserved]
            out = self.scripts.run(
                "move", [*fixed, *old, *(keys.rehome(k, root) for k in old), *shares,
                         keys.summary(root)],
                [self.clock.arg(), name, parent, root, self.reservation_timeout_ms, len(old),
                 r2_window.length_ms, r2_window.width_ms, *_audit_args(fields)])
            if out["status"] != "undeclared":
                return Move(out["status"], moved=int(out.get("moved", 0)),
                            merged=int(out.get("merged", 0)),
                            children=tuple(out.get("children") or ()), share=out.get("share"))
        raise Conflict(f"R10: the keys of pool {name!r} kept changing while it was moved; "
                       "nothing was changed, try again", rule="R10")


@functools.lru_cache(maxsize=4096)
def _take_keys(root: str) -> tuple[str, ...]:
    """The keys of a pool every take names (built once per pool: a take is the hot path):
    its audit stream and chain head, its placeholder idempotency key, active index, moved
    marker, refusal index, open reservations, index of its keys and summary."""
    audit_key = keys.audit(root)
    return (audit_key, keys.chain_of(audit_key), keys.placeholder(root), keys.active(root),
            keys.moved(root), keys.refusals_of(audit_key), keys.reserved(root),
            keys.pool_keys(root), keys.summary(root))


def _peek_keys(counters: list[Counter]) -> list[str]:
    return [k for c in counters for k in (c.key, keys.counter_sum(c.key))]


def _states(counters: list[Counter], out: dict[str, Any]) -> list[CounterState]:
    """peek.lua's answer for `counters` as their states."""
    return [
        CounterState(
            rule=counters[i].rule,
            limit=_int_or_none(c["limit"]),
            used=int(c["used"]),
            remaining=_int_or_none(c["remaining"]),
            releases=[(int(at), int(amount)) for at, amount in c["releases"]],
        )
        for i, c in enumerate(out["counters"])
    ]
