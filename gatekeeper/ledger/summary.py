"""Pool summaries: what a dashboard needs of every pool, read without peeking every counter.

Each pool keeps a summary of its counters (``keys.summary``: ``SCOPE:OWNER`` -> ``SUM:HEAD:TAIL``)
written by the scripts beside every change to a counter's buckets (``_window.lua``'s
``summarise``): the running total, and when the oldest and the newest bucket leave the window.
Nothing leaves a counter before HEAD, so until then its use is SUM exactly; from TAIL nothing
is left. In between (or for a counter without an entry: written before summaries, or moved in
from another pool) a reader peeks the counter. The summary is never trusted beyond what it
proves, so it cannot disagree with the counters; it only saves reading them.

``pools.lua`` reads many pools' summaries, active indexes, newest refusals and entity hashes in
one call per few hundred pools (one round trip per server through a Batch).
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.scripts import decode
from gatekeeper.ledger.store import Batch, failing_closed

POOLS_PER_CALL = 250  # pools per pools.lua call, so that no single call holds the server long


@dataclass(frozen=True)
class Entry:
    """One counter's summary entry."""

    total: int  # the sum of its buckets, expired or not
    head: int  # ms at which its oldest bucket leaves the window (0: unknown, peek it)
    tail: int  # ms at which its newest bucket leaves (and with it the last use)

    @staticmethod
    def parse(value: str) -> Entry:
        total, head, tail = value.split(":")
        return Entry(int(total), int(head), int(tail))

    def used(self, now_ms: int) -> int | None:
        """Its use at `now_ms` when the entry proves it, else None (peek the counter)."""
        if now_ms >= self.tail:
            return 0
        if now_ms < self.head:
            return self.total
        return None


@dataclass
class Pool:
    """What pools.lua read of one pool."""

    summary: dict[str, str]  # SCOPE:OWNER -> "SUM:HEAD:TAIL" (Entry.parse reads one)
    active: dict[str, float]  # counter key -> when its newest bucket leaves the window
    refused: str  # the ID of the newest record in its refusal index, "" if none

    def live(self, now_ms: int) -> set[str]:
        """The counters whose newest bucket is still in the window at `now_ms`."""
        return {k for k, until in self.active.items() if until > now_ms}

    def used(self, root: str, scope: str, owner: str, now_ms: int) -> int | None:
        """A counter's use now as far as the summary and the active index prove it; None:
        peek it."""
        raw = self.summary.get(f"{scope}:{owner}")
        if raw is not None:
            return used(raw, now_ms)
        return None if self.active.get(keys.counter(root, scope, owner), 0) > now_ms else 0


def used(raw: str, now_ms: int) -> int | None:
    """Entry.parse(raw).used(now_ms), without the object (a dashboard reads thousands)."""
    total, head, tail = raw.split(":")
    if now_ms >= int(tail):
        return 0
    if now_ms < int(head):
        return int(total)
    return None


@dataclass
class Read:
    now_ms: int
    pools: dict[str, Pool]
    entities: list[list[str]]  # each hash as [field, value, ...], pool by pool as asked
    days: list[int]  # R2 use of the pools' roots per day asked


@dataclass(frozen=True)
class _Seen:
    """A pool as read last, under its chain head's hash: unchanged while the hash is."""

    hash: str
    names: tuple[str, ...]
    days: tuple[int, ...]
    layout: int  # the store's layout (a migration indexes without an audit record)
    pool: Pool
    entities: list[list[str]]
    used: list[int]  # its root's R2 use per day of `days`


# Per process, by pool root. The chain hash covers the stream's whole history, so a hash seen
# on one store is never another store's.
_SEEN: dict[str, _Seen] = {}
_SEEN_MAX = 100_000


@functools.lru_cache(maxsize=65_536)  # the same pools are read on every dashboard request
def _pool_keys(root: str) -> tuple[str, ...]:
    return (keys.summary(root), keys.active(root), keys.refusals_of(keys.audit(root)),
            keys.counter_daily(keys.counter(root, "r2", root)), keys.chain_of(keys.audit(root)))


_entity_key = functools.lru_cache(maxsize=65_536)(keys.entity)
_chain_key = functools.lru_cache(maxsize=65_536)(keys.chain_of)  # every stream, every page


def queue_pools(ledger: Ledger, batch: Batch | None, roots: Sequence[str],
                entities: dict[str, list[str]], days: Sequence[int], *,
                now_ms: int | None = None, per_pool_calls: bool = False, layout: int = 0,
                only: set[str] | None = None) -> Callable[[list[Any]], Read]:
    """Queue pools.lua (as `ledger` runs its scripts) over `roots`, with each root's entity
    names in `entities`, on `batch` (None: run each call now); returns what turns the answers
    into a Read. A pool read before whose audit chain head has not moved since is not read
    again (pools.lua). `per_pool_calls`: one call per pool, as a Redis Cluster needs (a script
    touches one slot). `only`: send only these pools; the others are taken as read before
    (read_pools checked that their chain heads have not moved)."""
    scripts = ledger.scripts
    size = 1 if per_pool_calls else POOLS_PER_CALL
    day_list = tuple(days)
    seen: dict[str, _Seen] = {}
    for root in roots:
        known = _SEEN.get(root)
        if known is not None and known.days == day_list and known.layout == layout \
                and known.names == tuple(entities.get(root, ())):
            seen[root] = known
    kept = {} if only is None else {r: seen[r] for r in roots if r not in only and r in seen}
    sent = [r for r in roots if r not in kept]
    calls = [sent[i:i + size] for i in range(0, len(sent), size)]
    first = len(batch) if batch is not None else 0
    answers: list[Any] = []
    for part in calls:
        call_keys = [k for root in part for k in _pool_keys(root)]
        call_keys += [_entity_key(root, name) for root in part for name in entities.get(root, [])]
        args = ["" if now_ms is None else now_ms, len(part), len(day_list), *day_list,
                *(seen[root].hash if root in seen else "" for root in part),
                *(len(entities.get(root, [])) for root in part)]
        if batch is None:
            answers.append(scripts.run("pools", call_keys, args))
        else:
            batch.add(call_keys[0], lambda pipe, k=call_keys, a=args:
                      scripts.queue(pipe, "pools", k, a))

    def read(results: list[Any]) -> Read:
        outs = answers if batch is None else [decode(r) for r in
                                              results[first:first + len(calls)]]
        pools: dict[str, Pool] = {}
        hashes: list[list[str]] = []
        total = [0] * len(day_list)
        now = 0
        got: dict[str, _Seen] = dict(kept)
        for part, out in zip(calls, outs, strict=True):
            now = int(out["now"])
            for root, answer in zip(part, out["pools"] or [], strict=True):
                if len(answer) == 1:  # unchanged since `seen`
                    known = seen[root]
                else:
                    chain, flat, active, refused, used_days, flats = answer
                    flat, active = flat or [], active or []
                    known = _Seen(chain, tuple(entities.get(root, ())), day_list, layout,
                                  Pool(dict(zip(flat[::2], flat[1::2], strict=True)),
                                       {k: float(v) for k, v in zip(active[::2], active[1::2],
                                                                    strict=True)},
                                       refused),
                                  [h or [] for h in flats or []],
                                  [int(n) if n else 0 for n in used_days or []]
                                  or [0] * len(day_list))
                    if chain:
                        if len(_SEEN) >= _SEEN_MAX:
                            _SEEN.clear()
                        _SEEN[root] = known
                got[root] = known
        for root in roots:
            known = got[root]
            pools[root] = known.pool
            hashes += known.entities
            for i, n in enumerate(known.used):
                total[i] += n
        return Read(now or (now_ms or 0), pools, hashes, total)

    return read


def read_pools(ledger: Ledger, roots: Sequence[str], entities: dict[str, list[str]],
               days: Sequence[int], *, now_ms: int | None = None, layout: int = 0) -> Read:
    """pools.lua over `roots` (see queue_pools), in one round trip when nothing was read
    before; else first the chain hashes of the pools read before (one call), and then only the
    pools that changed or were never read are sent in full — a refresh of 10,000 unchanged
    pools sends 10,000 keys, not 60,000. On a Redis Cluster, a call per pool (queue_pools)."""
    with failing_closed():
        if ledger.cluster:
            batch = Batch(ledger.client)
            read = queue_pools(ledger, batch, roots, entities, days, now_ms=now_ms,
                               per_pool_calls=True, layout=layout)
            return read(batch.execute())
        known = [r for r in roots if r in _SEEN]
        changed = set(roots) - set(known)
        if known:
            hashes: list[str] = []
            for i in range(0, len(known), HEADS_PER_CALL):
                part = known[i:i + HEADS_PER_CALL]
                out = ledger.scripts.run("pools", [_pool_keys(r)[4] for r in part],
                                         ["hashes"])
                hashes += out["hashes"] or []
            changed |= {r for r, h in zip(known, hashes, strict=True)
                        if not h or (seen := _SEEN.get(r)) is None or h != seen.hash}
        if not changed:
            return queue_pools(ledger, None, roots, entities, days, now_ms=now_ms,
                               layout=layout, only=set())([])
        batch = Batch(ledger.client)
        read = queue_pools(ledger, batch, roots, entities, days, now_ms=now_ms, layout=layout,
                           only=changed)
        return read(batch.execute())


HEADS_PER_CALL = 1000  # streams per heads.lua call


def stream_heads(ledger: Ledger, streams: Sequence[str], highs: Sequence[str],
                 low: str) -> list[str] | None:
    """The ID of the newest record of each stream between `low` and its `highs` entry
    (inclusive; "" when it holds none there), in one round trip (heads.lua, in calls of
    HEADS_PER_CALL streams); None on a Redis Cluster, where a script reads one slot and this
    would be a call per stream."""
    if ledger.cluster:
        return None
    if len(set(highs)) == 1:  # one bound for all (a first page): sent once
        highs = highs[:1]
    calls = [range(i, min(i + HEADS_PER_CALL, len(streams)))
             for i in range(0, len(streams), HEADS_PER_CALL)]
    if len(calls) == 1:  # one call: no pipeline needed
        out = ledger.scripts.run("heads", [*streams, *map(keys.chain_of, streams)],
                                 [low, *highs])
        return list(out) if out else []  # cjson writes an empty array as {}
    batch = Batch(ledger.client)
    for part in calls:
        ks = [streams[i] for i in part]
        ks += [keys.chain_of(k) for k in ks]
        args = [low, *(highs if len(highs) == 1 else [highs[i] for i in part])]
        batch.add(ks[0], lambda pipe, ks=ks, args=args: ledger.scripts.queue(
            pipe, "heads", ks, args))
    heads: list[str] = []
    for raw in batch.execute():
        out = json.loads(raw)
        heads += list(out) if out else []
    return heads


Head = tuple[int, str]  # a stream's index and the ID of its newest record in range


def stream_heads_top(ledger: Ledger, streams: Sequence[str], low: str, highs: tuple[str, str],
                     split: int, k: int) -> tuple[list[Head], Head | None] | None:
    """The streams whose newest record between `low` and their highest ID comes first: the
    highest is highs[0] for streams[:split] and highs[1] for the others ("": none in range).
    Streams are in merge order (of records with the same ID, the earlier stream's first).
    Returns (index, ID) of at least the first `k` of them (when there are that many), and the
    frontier: the first stream not returned, when there is one — no stream left out holds a
    record before its newest. heads.lua's top mode reads the chain heads only (one key a
    stream) and answers at most k + 1 of them, so what the caller handles follows `k`, not
    the number of streams; the few streams whose head is past their range (or names no
    record) are then asked the plain way (stream_heads). None on a Redis Cluster."""
    if ledger.cluster:
        return None
    calls = [range(i, min(i + HEADS_PER_CALL, len(streams)))
             for i in range(0, len(streams), HEADS_PER_CALL)]
    batch = Batch(ledger.client)
    answers: list[Any] = []
    for part in calls:
        ks = [_chain_key(streams[i]) for i in part]
        args = ["top", k, low, *highs, min(len(part), max(0, split - part.start))]
        if len(calls) == 1:  # one call: no pipeline needed
            answers.append(ledger.scripts.run("heads", ks, args))
        else:
            batch.add(ks[0], lambda pipe, ks=ks, args=args: ledger.scripts.queue(
                pipe, "heads", ks, args))
    if len(calls) > 1:
        answers = [json.loads(raw) for raw in batch.execute()]
    found: list[Head] = []
    unknown: list[int] = []
    frontier: tuple[tuple[int, int], int, str] | None = None
    for part, answer in zip(calls, answers, strict=True):
        out = answer["top"] or []  # cjson writes an empty array as {}
        unknown += [part.start + int(i) - 1 for i in answer["unknown"] or []]
        pairs = [(part.start + int(i) - 1, str(ident))
                 for i, ident in zip(out[::2], out[1::2], strict=True)]
        found += pairs[:k]
        if len(pairs) > k:
            index, ident = pairs[k]
            ms, _, seq = ident.partition("-")
            # Merge order: newest first, then the earlier stream.
            rank = ((-int(ms), -int(seq)), index, ident)
            if frontier is None or rank[:2] < frontier[:2]:
                frontier = rank
    if unknown:
        asked = stream_heads(ledger, [streams[i] for i in unknown],
                             [highs[0] if i < split else highs[1] for i in unknown], low)
        assert asked is not None  # not a Cluster
        found += [(i, ident) for i, ident in zip(unknown, asked, strict=True) if ident]
    return found, None if frontier is None else frontier[1:]
