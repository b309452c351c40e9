"""/dashboard's read model at scale: pool summaries for every entity and recipient, rows only
for the page shown (R2-R4, R6, R10, R11).

`dashboard.overview` builds a row for every entity and recipient: right for one pool's page
and the API, but on a busy day (every analyst active) or with 10,000 entities that is tens of
thousands of peeks and objects per request. Here every pool is read in one pools.lua call per
few hundred pools (its summary of its counters, its active counters, its newest refusal, its
entities' facts, its root's daily use), which proves most counters' use outright
(`ledger.summary`); only the counters it does not prove are peeked, in one batch. That is
enough to count, sort and page; then only the rows on the page are built, from exact peeks
(with their next release), in one more round trip. Round trips: the clock, the directories,
the pools, the unproven counters, the page — whatever the number of entities or recipients.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from gatekeeper.config import LimitsConfig
from gatekeeper.domain import dashboard as dash
from gatekeeper.domain import redelivery
from gatekeeper.domain.entities import Entity
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.users import User
from gatekeeper.ledger import charges, keys
from gatekeeper.ledger.ledger import LAYOUT, decode_daily
from gatekeeper.ledger.store import failing_closed
from gatekeeper.ledger.summary import read_pools
from gatekeeper.ledger.summary import used as summary_used
from gatekeeper.rules import policy
from gatekeeper.rules.limits import DAY_MS, Limit
from gatekeeper.rules.permissions import in_force
from gatekeeper.rules.splitting import SplitFlag, splitting_of

# Entities as parsed last, by their stored hash: facts change rarely, parsing 10,000 of them
# per request would cost more than reading them.
_PARSED: dict[tuple[str, ...], tuple[Entity, bool, Limit]] = {}  # -> entity, revoked, R2 limit
_PARSED_MAX = 50_000


@dataclass
class Board:
    """What /dashboard shows: the header facts and the visible rows (in `ov`), the two
    tables' pages, the figures at a glance."""

    ov: dash.Overview
    table: dash.Page[dash.EntityRow]
    users: dash.Page[dash.UserRow]
    summary: dict[str, int]


def _entity(flat: list[str], cfg: LimitsConfig) -> tuple[Entity, bool, Limit] | None:
    if not flat:
        return None
    key = tuple(flat)
    found = _PARSED.get(key)
    if found is None:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.clear()
        h = dict(zip(flat[::2], flat[1::2], strict=True))
        e = Entity.from_hash(h)
        found = _PARSED[key] = (e, bool(h.get("permit_revoked_by")),
                                policy.post_id_limit(e, cfg))
    return found


def _limit(limit: Limit, now_ms: int) -> int | None:
    """The R2 limit in force now (what peek.lua's read_spec picks), None when unlimited."""
    if limit.permit_until_ms and in_force(limit.permit_from_ms, limit.permit_until_ms, now_ms):
        return limit.permit
    return limit.base


class _Ent:
    """One entity as counted and sorted, before (or without) a row: its use, and the binding
    ratio of its own counter and (for a child) its pool's, as EntityRow.ratio has it."""

    __slots__ = ("entity", "near", "own", "ratio")

    def __init__(self, entity: Entity, own: int, own_limit: int | None, pool: int | None,
                 pool_limit: int | None) -> None:
        self.entity = entity
        self.own = own
        ratio = None if own_limit is None else own / max(own_limit, 1)
        if pool is not None and pool_limit is not None:
            theirs = pool / max(pool_limit, 1)
            ratio = theirs if ratio is None or theirs > ratio else ratio
        self.ratio = ratio
        self.near = ratio is not None and ratio >= dash.NEAR_LIMIT


def _sort_key(sort: str) -> Any:
    if sort == "name":
        return lambda e: e.entity.name
    if sort == "used":
        return lambda e: (-e.own, e.entity.name)
    # As dashboard._entity_key: near the limit first, then by ratio; unlimited after, by use.
    def key(e: _Ent) -> tuple[Any, ...]:
        return (not e.near, e.ratio is None, -(e.ratio or 0.0), -e.own, e.entity.name)
    return key


def board(gate: Gate, *, q: str = "", sort: str = "ratio", page: int = 1, upage: int = 1,
          per_page: int = 100) -> Board:
    """Everything /dashboard shows, reading rows only for the two pages asked for."""
    cfg = gate.config.limits
    client = gate.client
    with failing_closed():
        now = gate.clock.now_ms()  # on its own: a cluster pipeline refuses TIME
        pipe = client.pipeline(transaction=False)
        pipe.hgetall(keys.ENTITIES)
        pipe.hgetall(keys.USERS)
        pipe.smembers(keys.AUDIT_STREAMS)
        pipe.get(keys.LAYOUT)
        pipe.xrevrange(keys.refusals_of(keys.SYS_AUDIT), count=dash.RECENT_REFUSALS)
        pipe.hgetall(keys.REDELIVERIES)  # R10 findings, made after each share (redelivery.py)
        entity_dir, user_dir, streams, layout, sys_refusals, redelivered = pipe.execute()
    names_of, user_dir_text, former = _directories(entity_dir, user_dir, streams)
    pools = sorted(names_of)
    today = now // DAY_MS
    days = list(range(today - dash.HISTORY_DAYS + 1, today + 1))
    read = read_pools(gate.ledger, [*pools, *former], names_of, days, now_ms=now,
                      layout=int(layout or 0))
    parsed = [p for flat in read.entities if (p := _entity(flat, cfg)) is not None]
    entities = [e for e, _, _ in parsed]
    revoked = {e.name for e, gone, _ in parsed if gone}
    limits = {e.name: _limit(limit, now) for e, _, limit in parsed}
    by_name = {e.name: e for e in entities}
    entity_of = {n: ent for n, ent in user_dir_text.items() if ent in by_name}
    user_root = {n: by_name[ent].root for n, ent in entity_of.items()}

    # Each counter's use as the summaries prove it (None: not proven, peeked below).
    own: dict[str, int | None] = {}
    for e in entities:
        pool = read.pools[e.root]
        raw = pool.summary.get("r2:" + e.name)
        own[e.name] = summary_used(raw, now) if raw is not None \
            else pool.used(e.root, "r2", e.name, now)
    r6: dict[str, int | None] = {}
    for root in pools:
        pool = read.pools[root]
        for field, raw in pool.summary.items():
            if field.startswith("r6:") and user_root.get(owner := field[3:]) == root:
                r6[owner] = summary_used(raw, now)
        # Active counters without an entry (written before summaries, or moved in, R10).
        for key, until in pool.active.items():
            if until > now and ":ctr:r6:" in key \
                    and key.rpartition(":ctr:")[2] not in pool.summary:
                counter = keys.parse_counter(key)
                if counter and user_root.get(counter[2]) == root:
                    r6[counter[2]] = None
    # Round trip 4: the counters the summaries do not prove.
    stale_e = [n for n, used in own.items() if used is None]
    stale_u = [n for n, used in r6.items() if used is None]
    if stale_e or stale_u:
        counters = [_own_counter(by_name[n], by_name, cfg) for n in stale_e]
        counters += [charges.hydrated_counter(_user(n, entity_of[n], user_root[n]), 0, cfg)
                     for n in stale_u]
        states = gate.ledger.peek_many(counters, next_only=True)
        for n, state in zip(stale_e, states, strict=False):
            own[n] = state.used
        for n, state in zip(stale_u, states[len(stale_e):], strict=True):
            r6[n] = state.used
    rows = [_Ent(e, own[e.name] or 0, limits[e.name],
                 (own.get(e.root) or 0) if e.root != e.name else None, limits[e.root])
            for e in entities]

    # Counts, sorting and paging over light tuples.
    hydrated_limit = cfg.hydrated_per_recipient
    active = [(n, used) for n, used in r6.items() if used]
    summary = {
        "entities": len(rows),
        "near": sum(1 for r in rows if r.near),
        "at_limit": sum(1 for r in rows if r.ratio is not None and r.ratio >= 1),
        "exempt": sum(1 for _, _, limit in parsed if limit.base is None),  # R3 lifts the base
        "permissions": sum(1 for r in rows if r.entity.permission is not None
                           and dash._permission_state(r.entity, revoked, now) == "active"),
        "users_near": sum(1 for _, used in active
                          if used / max(hydrated_limit, 1) >= dash.NEAR_LIMIT),
        "users_idle": len(entity_of) - len(active),
    }
    shown = [r for r in rows if dash._matches(q, r.entity.name)] if q.strip() else rows
    shown.sort(key=_sort_key(sort if sort in dash.SORTS else "ratio"))
    epage = dash.paginate(shown, page, per_page)
    people = [(n, used) for n, used in active if dash._matches(q, n, entity_of[n])] \
        if q.strip() else active
    people.sort(key=lambda p: (-p[1], p[0]))
    upage_ = dash.paginate(people, upage, per_page)

    # Round trip 5: the rows shown, exactly (with their next release), and the refusals.
    visible = [r.entity for r in epage.rows]
    # A child's row shows its pool's use: its root is measured too (its row is not shown).
    extra = sorted({e.root for e in visible} - {e.name for e in visible})
    users = [_user(n, entity_of[n], user_root[n]) for n, _ in upage_.rows]
    # The rows need their pools only: members, children, users, active counters.
    shown_pools = {e.root for e in visible}
    snap = dash._Snapshot(now, [e for e in entities if e.root in shown_pools], revoked,
                          sorted((n, ent, user_root[n]) for n, ent in entity_of.items()
                                 if user_root[n] in shown_pools),
                          {k for root in shown_pools for k in read.pools[root].live(now)}, [],
                          int(layout or 0))
    heads = sorted(((p.refused, keys.refusals_of(keys.audit(root)))
                    for root, p in read.pools.items() if p.refused),
                   key=lambda h: _order(h[0]), reverse=True)[:dash.RECENT_REFUSALS]
    m = dash._measure(gate, snap, [*visible, *(by_name[n] for n in extra)], users,
                      [s for _, s in heads], dash.RECENT_REFUSALS, history=True)
    rows_shown = m.rows[:len(visible)]
    dash.read_roles(gate, m.users)
    records = [*m.records, *(dash.AuditRecord(rid.decode(), None, dash._text(f),
                                              keys.refusals_of(keys.SYS_AUDIT))
                             for rid, f in sys_refusals)]
    refusals = dash._refused(records)[:dash.RECENT_REFUSALS]
    totals = _daily_total(gate, entities, read.days, days)
    ov = dash.Overview(
        now_ms=now, post_window=f"{cfg.post_ids_window_days}d",
        hydrated_window=cfg.hydrated_window, hydrated_limit=hydrated_limit,
        entities=rows_shown, users=m.users, refusals=refusals,
        recipients=len(entity_of),
        flags=_flags(entities, sorted((n, ent, "") for n, ent in entity_of.items())),
        days=days, layout=int(layout or 0), totals=totals,
        redelivered=redelivery.flags_of(redelivered))
    return Board(ov, dash.Page(rows_shown, epage.number, epage.pages, epage.total),
                 dash.Page(m.users, upage_.number, upage_.pages, upage_.total), summary)


# The directories as decoded last: they change when an entity or user is added, not per request.
_DIRS: list[Any] = [None]  # [(raw, names_of, users, former)], replaced whole (threads)


def _directories(entity_dir: dict[bytes, bytes], user_dir: dict[bytes, bytes],
                 streams: set[bytes]) -> tuple[dict[str, list[str]], dict[str, str], list[str]]:
    """Each pool's entity names, the users' entities, and the roots of pools whose stream
    outlived them (they joined another, R10: their refusals stay there) — decoded once per
    change of the directories."""
    raw = (entity_dir, user_dir, streams)
    last = _DIRS[0]
    if last is not None and last[0] == raw:
        return last[1], last[2], last[3]
    roots = {k.decode(): v.decode() for k, v in entity_dir.items()}
    names_of: dict[str, list[str]] = {}
    for name in sorted(roots):
        names_of.setdefault(roots[name], []).append(name)
    users = {k.decode(): v.decode() for k, v in user_dir.items()}
    former = sorted({r for s in streams if (r := keys.root_of_key(s.decode())) is not None}
                    - set(names_of))
    _DIRS[0] = (raw, names_of, users, former)
    return names_of, users, former


def _order(rid: str) -> tuple[int, int]:
    ms, _, seq = rid.partition("-")
    return int(ms), int(seq or 0)


def _own_counter(e: Entity, by_name: dict[str, Entity], cfg: Any) -> Any:
    return charges.id_share_counters(e, by_name.get(e.root, e), "posts", 0, cfg)[-1]


def _user(name: str, entity: str, root: str) -> User:
    return User(name=name, entity=entity, root=root, role="", created_at_ms=0,
                terms_version=None, terms_at_ms=None)


def _daily_total(gate: Gate, entities: list[Entity], roots_days: list[int],
                 days: list[int]) -> dict[int, int]:
    """Post IDs per day over every pool: the roots' days (summed by pools.lua) and the days
    of linked entities before their link (R10, Entity.root_on)."""
    total = {d: n for d, n in zip(days, roots_days, strict=True) if n}
    linked = [e for e in entities if e.root != e.name and e.linked_at_ms is not None
              and e.linked_at_ms // DAY_MS > days[0]]
    if linked:
        cfg = gate.config.limits
        by_name = {e.name: e for e in entities}
        counters = [_own_counter(e, by_name, cfg) for e in linked]
        for e, daily in zip(linked, gate.ledger.daily(counters, range(days[0], days[-1] + 1)),
                            strict=True):
            for day, n in daily.items():
                if e.root_on(day):
                    total[day] = total.get(day, 0) + n
    return total


def _flags(entities: list[Entity], directory: list[tuple[str, str, str]]) -> list[SplitFlag]:
    key = (tuple((e.name, e.root, e.terms.by if e.terms else "") for e in entities),
           tuple((name, entity) for name, entity, _ in directory))
    return list(splitting_of(key))


__all__ = ["LAYOUT", "Board", "board", "decode_daily"]
