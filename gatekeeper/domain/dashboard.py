"""What the compliance dashboard shows, read in a few pipelined round trips (R2-R4, R6, R8-R11).

`overview` reads every entity, the recipients active in the R6 window, their counters, the
latest refusals and daily usage in five round trips whatever the number of entities: the Redis
clock; the directories; entity hashes and the pools' indexes of active counters; the peeks
(batched), each refusal index's newest entry and the daily usage; the few refusal indexes that
may hold more of the newest twenty. Pages and the Prometheus collector only present it. Nothing
here decides a quota: limits come from the policy, usage from the ledger's peek script on the
Redis clock.

Longer than most modules, for a reason: it is one page's read model — one snapshot of the
store per request, read in one round trip per node, then rows, flags and charts from it;
split, the snapshot's reads and their uses would drift apart.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from gatekeeper.domain.entities import Entity
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.users import User
from gatekeeper.ledger import charges, keys
from gatekeeper.ledger.ledger import LAYOUT, CounterState, decode_daily
from gatekeeper.ledger.store import Batch, failing_closed
from gatekeeper.rules import policy
from gatekeeper.rules.limits import DAY_MS, Counter
from gatekeeper.rules.outcomes import REFUSED
from gatekeeper.rules.permissions import in_force
from gatekeeper.rules.splitting import (
    SplitFlag,
    splitting_of,
)

NEAR_LIMIT = 0.8  # a ratio from which the dashboard (and alerting) calls a limit near
HISTORY_DAYS = 30
RECENT_REFUSALS = 20
ENTITY_RECORDS = 1000  # newest records of a pool's stream read for one entity's page

T = TypeVar("T")


@dataclass(frozen=True)
class Usage:
    """One counter as peeked now: used against its limit (None = counted, never enforced)."""

    used: int
    limit: int | None
    remaining: int | None
    releases: tuple[tuple[int, int], ...] = ()  # (at ms, amount), oldest first

    @property
    def ratio(self) -> float | None:
        return None if self.limit is None else self.used / max(self.limit, 1)

    @property
    def next_release(self) -> tuple[int, int] | None:
        return self.releases[0] if self.releases else None


@dataclass
class EntityRow:
    """One entity with its R2 usage, the facts that lift or change its limit, and its pool."""

    entity: Entity
    own: Usage  # the entity's own R2 counter; for a pool's root this *is* the pool's
    pool: Usage | None  # the pool's counter, for a child entity (R10)
    user_ids: int  # User IDs shared: recorded, not capped (R2)
    children: list[str]
    members: list[str]  # every entity of the pool, root first
    users: list[str]
    permission_state: str | None  # active | future | expired | revoked | None
    daily: dict[int, int] = field(default_factory=dict)  # epoch day -> Post IDs

    @property
    def name(self) -> str:
        return self.entity.name

    @property
    def exempt(self) -> bool:
        return policy.exempt(self.entity)

    @property
    def ratio(self) -> float | None:
        """The binding ratio: a share charges the entity's own counter and its pool's."""
        ratios = [u.ratio for u in (self.own, self.pool) if u is not None and u.ratio is not None]
        return max(ratios) if ratios else None

    @property
    def near_limit(self) -> bool:
        return self.ratio is not None and self.ratio >= NEAR_LIMIT


@dataclass
class UserRow:
    """One recipient's hydrated objects in the current R6 window."""

    user: User  # from the directory: name, entity, pool (role is read only for shown rows)
    usage: Usage
    role: str | None = None

    @property
    def name(self) -> str:
        return self.user.name

    @property
    def near_limit(self) -> bool:
        return self.usage.ratio is not None and self.usage.ratio >= NEAR_LIMIT


@dataclass(frozen=True)
class AuditRecord:
    """One audit record (R11) as read from a stream."""

    id: str
    pool: str | None  # the pool whose stream holds it; None for the system stream
    fields: dict[str, str]
    stream: str = ""

    @property
    def time_ms(self) -> int:
        return int(self.fields.get("time") or self.id.split("-")[0])

    def get(self, name: str, default: str = "") -> str:
        return self.fields.get(name, default)

    def order(self) -> tuple[int, int]:
        """Its stream ID ("ms-seq") as a sortable pair."""
        ms, _, seq = self.id.partition("-")
        return int(ms), int(seq or 0)


@dataclass
class Overview:
    """Everything /dashboard shows, as of one instant on the Redis clock."""

    now_ms: int
    post_window: str
    hydrated_window: str
    hydrated_limit: int
    entities: list[EntityRow]
    users: list[UserRow]  # recipients whose R6 counter may hold usage (the active index)
    recipients: int  # every user of the entities shown, idle or not
    refusals: list[AuditRecord]
    flags: list[SplitFlag]
    days: list[int]  # the epoch days of the charts, oldest first
    # The store's layout. Older than LAYOUT: counters and refusals an older version wrote are
    # not in the indexes yet, so some users, User IDs and refusals are missing until `gatekeeper
    # store upgrade` (or `serve`'s start-up) runs Ledger.upgrade — a page never writes.
    layout: int = LAYOUT
    totals: dict[int, int] | None = None  # daily_total, when read without every row (dashpage)
    # R10: entities that received Post IDs again after 30 days (domain/redelivery.py)
    redelivered: list[Any] = field(default_factory=list)

    @property
    def outdated(self) -> bool:
        return self.layout < LAYOUT

    def daily_total(self) -> dict[int, int]:
        """Post IDs per day over every pool: the roots of each day (a child's IDs are in its
        pool's; a linked entity's were its own until the day of its link, R10)."""
        if self.totals is not None:
            return self.totals
        total: dict[int, int] = {}
        for row in self.entities:
            for day, n in row.daily.items():
                if row.entity.root_on(day):
                    total[day] = total.get(day, 0) + n
        return total

    def row(self, name: str) -> EntityRow | None:
        return next((r for r in self.entities if r.name == name), None)


@dataclass(frozen=True)
class Page(Generic[T]):
    """One page of a server-side sorted, searched table."""

    rows: list[T]
    number: int
    pages: int
    total: int


@dataclass
class EntityDetail:
    """What /entities/NAME shows: the entity, its pool, its recent activity and changes."""

    overview: Overview  # restricted to the entity's pool (flags cover every entity)
    row: EntityRow
    activity: list[AuditRecord]  # shares and exports, newest first
    changes: list[AuditRecord]  # entity.* records about this entity, newest first
    records_read: int


def _text(raw: dict[bytes, bytes]) -> dict[str, str]:
    return {k.decode(): v.decode() for k, v in raw.items()}


def _stream_root(stream: str) -> str | None:
    """The pool of an audit stream or refusal index; None for the {sys} ones."""
    return keys.root_of_key(stream)


@dataclass
class _Snapshot:
    now_ms: int
    entities: list[Entity]
    revoked: set[str]
    directory: list[tuple[str, str, str]]  # every user: (name, entity, pool root)
    active: set[str]  # counters that may hold usage now (the pools' active indexes)
    streams: list[str]
    layout: int = LAYOUT
    redelivered: dict[Any, Any] = field(default_factory=dict)  # R10 findings (redelivery.py)

    def users(self, *, active_only: bool) -> list[User]:
        """Users as the directory knows them: counting R6 needs only name and pool (reading
        10,000 user hashes would cost more than everything else together). `active_only`:
        those whose R6 counter holds usage, from the pools' indexes of active counters."""
        counters = (keys.parse_counter(k) for k in self.active)
        names = {c[2] for c in counters if c is not None and c[1] == "r6"}
        return [User(name=name, entity=entity, root=root, role="", created_at_ms=0,
                     terms_version=None, terms_at_ms=None)
                for name, entity, root in self.directory
                if not active_only or (name in names
                                       and keys.counter(root, "r6", name) in self.active)]


def _snapshot(gate: Gate, *, with_users: bool) -> _Snapshot:
    """Round trips 1-2: the Redis clock and the directories; every entity's facts and every
    pool's index of active counters."""
    client = gate.client
    with failing_closed():
        now_ms = gate.clock.now_ms()  # on its own: a cluster pipeline refuses TIME
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.ENTITIES)
        pipe.hgetall(keys.USERS)
        pipe.smembers(keys.AUDIT_STREAMS)
        pipe.get(keys.LAYOUT)
        pipe.hgetall(keys.REDELIVERIES)
        entity_dir, user_dir, streams, layout, redelivered = pipe.execute()
        roots = {k.decode(): v.decode() for k, v in entity_dir.items()}
        names = sorted(roots)
        directory = sorted((k.decode(), v.decode(), roots[v.decode()])
                           for k, v in user_dir.items()
                           if v.decode() in roots) if with_users else []
        pipe = client.pipeline(transaction=False)
        for name in names:
            pipe.hgetall(keys.entity(roots[name], name))
        pools = sorted(set(roots.values()))
        for root in pools:
            pipe.zrangebyscore(keys.active(root), f"({now_ms}", "+inf")
        rows = pipe.execute()
    entities, revoked = [], set()
    for raw in rows[:len(names)]:
        if raw:
            h = _text(raw)
            entities.append(Entity.from_hash(h))
            if h.get("permit_revoked_by"):
                revoked.add(h["name"])
    active = {k.decode() for members in rows[len(names):] for k in members}
    stream_names = sorted(s.decode() for s in streams)
    return _Snapshot(now_ms, entities, revoked, directory, active, stream_names,
                     int(layout or 0), redelivered)


def _permission_state(entity: Entity, revoked: set[str], now_ms: int) -> str | None:
    p = entity.permission
    if p is None:
        return None
    if in_force(p.valid_from_ms, p.valid_until_ms, now_ms):
        return "active"
    if now_ms < p.valid_from_ms:
        return "future"
    return "revoked" if entity.name in revoked else "expired"


def _usage(state: CounterState) -> Usage:
    return Usage(used=state.used, limit=state.limit, remaining=state.remaining,
                 releases=tuple(state.releases))


@dataclass
class _Measured:
    rows: list[EntityRow]
    users: list[UserRow]
    records: list[AuditRecord]  # newest first per stream


def _measure(gate: Gate, snap: _Snapshot, entities: list[Entity], users: list[User],
             streams: list[str], per_stream: int, *, history: bool,
             next_only: bool = True) -> _Measured:
    """Round trip 4: every counter of the given entities and users, the newest `per_stream`
    records of `streams`, and (with `history`) the entities' daily usage, in one batch."""
    cfg = gate.config.limits
    by_name = {e.name: e for e in snap.entities}
    pools: dict[str, list[tuple[str, Counter]]] = {}
    for e in entities:
        root = by_name.get(e.root, e)
        # Every entity's R2 counter is read (its row shows the limit); the User IDs counter
        # only when the pool's index says it holds usage.
        pools.setdefault(e.root, []).append(
            (f"e:{e.name}", charges.id_share_counters(e, root, "posts", 0, cfg)[-1]))
        ids = charges.id_share_counters(e, root, "users", 0, cfg)[0]
        if ids.key in snap.active:
            pools[e.root].append((f"u:{e.name}", ids))
    for u in users:
        pools.setdefault(u.root, []).append((f"r6:{u.name}", charges.hydrated_counter(u, 0, cfg)))
    tags = [tag for items in pools.values() for tag, _ in items]
    with failing_closed():
        batch = Batch(gate.client)
        peeked = gate.ledger.queue_peeks(batch, [c for items in pools.values() for _, c in items],
                                         next_only=next_only)
        first_stream = len(batch)
        for stream in streams:
            batch.add(stream, lambda pipe, stream=stream: pipe.xrevrange(stream,
                                                                         count=per_stream))
        first_day = snap.now_ms // DAY_MS - HISTORY_DAYS + 1
        days = range(first_day, first_day + HISTORY_DAYS)
        first_daily = len(batch)
        for e in entities if history else []:
            key = charges.id_share_counters(e, by_name.get(e.root, e), "posts", 0, cfg)[-1].key
            batch.add(key, lambda pipe, key=key: pipe.hmget(keys.counter_daily(key),
                                                             list(days)))
        results = batch.execute()
    usage = {tag: _usage(state) for tag, state in zip(tags, peeked(results), strict=True)}
    records = [AuditRecord(rid.decode(), _stream_root(stream), _text(fields), stream)
               for stream, raw_rows in zip(streams, results[first_stream:first_daily],
                                           strict=True)
               for rid, fields in raw_rows]
    daily = [decode_daily(days, row) for row in results[first_daily:]]
    members: dict[str, list[str]] = {}
    children: dict[str, list[str]] = {}
    for e in sorted(snap.entities, key=lambda e: (e.name != e.root, e.name)):
        members.setdefault(e.root, []).append(e.name)
        if e.parent:
            children.setdefault(e.parent, []).append(e.name)
    users_of: dict[str, list[str]] = {}
    for name, entity, _ in snap.directory:
        users_of.setdefault(entity, []).append(name)
    rows = []
    for i, e in enumerate(entities):
        rows.append(EntityRow(
            entity=e, own=usage[f"e:{e.name}"],
            pool=usage.get(f"e:{e.root}") if e.root != e.name else None,
            user_ids=usage[f"u:{e.name}"].used if f"u:{e.name}" in usage else 0,
            children=children.get(e.name, []),
            members=members.get(e.root, [e.name]), users=users_of.get(e.name, []),
            permission_state=_permission_state(e, snap.revoked, snap.now_ms),
            daily=daily[i] if daily else {}))
    user_rows = [UserRow(u, usage[f"r6:{u.name}"]) for u in users]
    return _Measured(rows, user_rows, records)


def _overview(gate: Gate, snap: _Snapshot, rows: list[EntityRow], users: list[UserRow],
              refusals: list[AuditRecord], flags: list[SplitFlag]) -> Overview:
    cfg = gate.config.limits
    today = snap.now_ms // DAY_MS
    pools = {r.entity.root for r in rows}
    return Overview(
        now_ms=snap.now_ms, post_window=f"{cfg.post_ids_window_days}d",
        hydrated_window=cfg.hydrated_window, hydrated_limit=cfg.hydrated_per_recipient,
        entities=rows, users=users, refusals=refusals,
        recipients=sum(1 for *_, root in snap.directory if root in pools),
        flags=flags,
        days=list(range(today - HISTORY_DAYS + 1, today + 1)), layout=snap.layout)


def overview(gate: Gate, *, users: bool = True, history: bool = True) -> Overview:
    """Every entity's R2 usage and facts, every recipient's R6 usage, the latest refusals,
    daily usage and possible splitting (R10). `users`/`history` off: entities' usage only."""
    snap = _snapshot(gate, with_users=users or history)
    # The newest refusal of every stream, from the refusal index written beside it.
    indexes = [keys.refusals_of(s) for s in [*snap.streams, keys.SYS_AUDIT]] if history else []
    m = _measure(gate, snap, snap.entities, snap.users(active_only=True) if users else [],
                 indexes, 1, history=history)
    refusals = _latest_refusals(gate, m.records)
    flags = _flags(snap) if history else []
    ov = _overview(gate, snap, m.rows, m.users, refusals, flags)
    if history:  # read with the directories: the findings are made after each share
        from gatekeeper.domain import redelivery
        ov.redelivered = redelivery.flags_of(snap.redelivered)
    return ov


def _refused(records: Iterable[AuditRecord]) -> list[AuditRecord]:
    return sorted((r for r in records if r.get("outcome") in REFUSED), key=AuditRecord.order,
                  reverse=True)


def _latest_refusals(gate: Gate, newest: list[AuditRecord]) -> list[AuditRecord]:
    """The newest refusals across every refusal index, given each index's newest entry.

    The 20 newest come from at most 20 indexes, each of which has its newest among the 20
    newest of `newest`; only those are read further back, and only to the 20th found so far.
    """
    found = _refused(newest)
    top = found[:RECENT_REFUSALS]
    bound = top[-1].order() if len(found) >= RECENT_REFUSALS else None
    low = "-" if bound is None else f"{bound[0]}-{bound[1]}"
    with failing_closed():
        batch = Batch(gate.client)
        for r in top:
            batch.add(r.stream, lambda pipe, r=r: pipe.xrevrange(
                r.stream, max=f"({r.id}", min=low, count=RECENT_REFUSALS - 1))
        more = batch.execute()
    return _refused([*found, *(AuditRecord(rid.decode(), r.pool, _text(f), r.stream)
                               for r, rows in zip(top, more, strict=True)
                               for rid, f in rows)])[:RECENT_REFUSALS]


def entity_detail(gate: Gate, name: str) -> EntityDetail:
    """One entity's page: its pool's usage, its users, its pool's recent shares and changes."""
    snap = _snapshot(gate, with_users=True)
    entity = next((e for e in snap.entities if e.name == name), None)
    if entity is None:
        gate.entities.get(name)  # raises NotFound with the usual message
        raise AssertionError("unreachable")
    pool = [e for e in snap.entities if e.root == entity.root]
    pool_users = [u for u in snap.users(active_only=True) if u.root == entity.root]
    # The pool's stream, and the streams of pools its members were the roots of before they
    # joined it (R10): their history stays there (R11).
    streams = [keys.audit(entity.root), *sorted({keys.audit(e.former_root) for e in pool
                                                if e.former_root})]
    m = _measure(gate, snap, pool, pool_users, streams, ENTITY_RECORDS, history=True,
                 next_only=False)
    records = sorted(m.records, key=AuditRecord.order, reverse=True)
    flags = [f for f in _flags(snap) if name in f.entities]
    ov = _overview(gate, snap, m.rows, m.users, _refused(records)[:RECENT_REFUSALS], flags)
    row = next(r for r in m.rows if r.name == name)
    shown = set(row.members) if entity.root == name else {name}
    activity = [r for r in records if r.get("entity") in shown
                and r.get("kind").startswith(("share.", "export."))]
    # A link (R10) writes twin records, entity.parent in the pool and entity.pool_closed in
    # the stream it left; the page shows the first.
    changes = [r for r in records if r.get("entity") == name
               and r.get("kind").startswith("entity.") and r.get("kind") != "entity.pool_closed"]
    return EntityDetail(ov, row, activity[:50], changes, len(records))


# --- tables: server-side search, sort and paging ------------------------------------------------

SORTS = ("ratio", "used", "name")


def _entity_key(sort: str) -> Callable[[EntityRow], Any]:
    if sort == "name":
        return lambda r: r.name
    if sort == "used":
        return lambda r: (-r.own.used, r.name)
    # Near the limit first, then by ratio; entities without a limit (exempt) after, by usage.
    return lambda r: (not r.near_limit, r.ratio is None, -(r.ratio or 0.0), -r.own.used, r.name)


def paginate(rows: Sequence[T], page: int, per_page: int) -> Page[T]:
    pages = max(1, -(-len(rows) // per_page))
    number = min(max(page, 1), pages)
    start = (number - 1) * per_page
    return Page(list(rows[start:start + per_page]), number, pages, len(rows))


def _matches(q: str, *texts: str | None) -> bool:
    q = q.strip().casefold()
    return not q or any(q in (t or "").casefold() for t in texts)


def entity_table(ov: Overview, *, q: str = "", sort: str = "ratio", page: int = 1,
                 per_page: int = 100) -> Page[EntityRow]:
    """The entities whose name contains `q`, near-limit first (or by usage, or by name)."""
    rows = [r for r in ov.entities if _matches(q, r.name)]
    rows.sort(key=_entity_key(sort if sort in SORTS else "ratio"))
    return paginate(rows, page, per_page)


def user_table(ov: Overview, *, q: str = "", page: int = 1,
               per_page: int = 100) -> Page[UserRow]:
    """Recipients who received hydrated objects in the window (name or entity contains `q`),
    most first: with one limit for all (R6), that is also nearest the limit first."""
    rows = [r for r in ov.users if r.usage.used and _matches(q, r.name, r.user.entity)]
    rows.sort(key=lambda r: (-r.usage.used, r.name))
    return paginate(rows, page, per_page)


def read_roles(gate: Gate, rows: list[UserRow]) -> None:
    """Fill in the role of the rows shown (one pipelined round trip)."""
    with failing_closed():
        pipe = gate.client.pipeline(transaction=False)
        for r in rows:
            pipe.hget(keys.user(r.user.root, r.name), "role")
        for r, role in zip(rows, pipe.execute() if rows else [], strict=True):
            r.role = role.decode() if role else None


def entity_gauges(gate: Gate) -> Iterable[tuple[str, int, int | None, float | None]]:
    """(entity, Post IDs used, limit or None when unlimited, binding ratio) for alerting."""
    for row in overview(gate, users=False, history=False).entities:
        yield row.name, row.own.used, row.own.limit, row.ratio


def _flags(snap: _Snapshot) -> list[SplitFlag]:
    key = (tuple((e.name, e.root, e.terms.by if e.terms else "") for e in snap.entities),
           tuple((name, entity) for name, entity, _ in snap.directory))
    return list(splitting_of(key))
