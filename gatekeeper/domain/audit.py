"""The audit trail (R11): append-only Redis streams, one per pool plus one for the system.

Records are only ever appended (XADD, inside the same script or transaction as the decision they
record); no code path edits or deletes them, and each carries `seq` and `hash`, its place in its
stream's hash chain (gatekeeper/ledger/chain.py), so an edit or deletion by other means shows. This
module appends refusals (`record_denial`) and reads the log back (`AuditLog`): every stream
merged into one history, oldest first for exports and reports, newest first in pages for people.

Order is the stream entry ID — the Redis clock in ms when the record was appended, then its
sequence — and, for records of different streams with the same ID, the stream's key. That order
is total, so a page cursor (the last record's ID and stream) resumes exactly: no record is shown
twice or skipped, however many records share a millisecond.

Over ~400 lines for a reason: the merge, its cursor, the first-page shortcut (heads.lua's top
mode and its frontier) and the filters are one algorithm whose invariants (total order, nothing
shown twice or skipped) only hold together; split, each half would have to restate them.
"""

from __future__ import annotations

import base64
import binascii
import heapq
import re
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

import redis

from gatekeeper.domain.auditfilter import AuditFilter, Id, iso_ms, parse_id
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.store import failing_closed
from gatekeeper.ledger.summary import stream_heads, stream_heads_top
from gatekeeper.rules.errors import BadInput, GatekeeperError

FIELDS = ("time", "actor", "entity", "recipient", "channel", "kind", "requested", "granted",
          "rule", "outcome", "request_id")
FORMATS = ("jsonl", "csv", "xlsx")
MAX_PAGE = 1000
MAX_SEQ = 2**64 - 1
PROBE_FROM = 64  # streams from which a page asks their heads first (AuditLog._probe)
# Whether a page with a filter on the records' fields (entity, user, channel, outcome, rule)
# starts from the streams holding the first records too (AuditLog._top). Off: such a filter
# drops records, so the page would usually read every stream's head after all; tests turn it
# on.
TOP_WHEN_FILTERED = False
TOP = True  # whether pages start from the first streams' heads at all (bench/dashboard.py)
CURSOR_RE = re.compile(r"^([0-9]{1,20})-([0-9]{1,20}) (.+)$", re.DOTALL)

Pos = tuple[int, int]  # an entry ID in merge order: (ms, seq), negated when newest comes first

# Per client and filter: where the last first page ended (ms) and how long a page spans (ms).
# Only where to start reading comes from here, never what a page holds.
_HINTS: dict[tuple[int, Any], tuple[int | None, int]] = {}


def stream(root: str | None) -> str:
    """The audit stream of a pool, or the system stream for None."""
    return keys.SYS_AUDIT if root is None else keys.audit(root)


def record_denial(ledger: Ledger, root: str | None, refusal: GatekeeperError,
                  fields: dict[str, Any]) -> None:
    """Append the audit record of a policy refusal; it changes nothing else."""
    ledger.record(keys.placeholder(root), stream(root), mode="audit", fields={},
                  audit={**fields, "outcome": "denied", "rule": refusal.rule or "",
                         "granted": 0, "message": refusal.message})
    refusal.audited = True


# --- reading ------------------------------------------------------------------------------------


def _before(i: Id) -> Id | None:
    if i[1] > 0:
        return i[0], i[1] - 1
    return (i[0] - 1, MAX_SEQ) if i[0] > 0 else None


def _after(i: Id) -> Id | None:
    if i[1] < MAX_SEQ:
        return i[0], i[1] + 1
    return (i[0] + 1, 0) if i[0] < MAX_SEQ else None


def _text(v: bytes | str) -> str:
    return v.decode("utf-8", "replace") if isinstance(v, bytes) else v


def _record(ident: Id, raw: Mapping[Any, Any]) -> dict[str, str]:
    """A stream entry as a record: its fields as text, plus "id" and "at"."""
    # Inline, not _text per field: a month's report decodes ~10^6 fields (a third of its time).
    rec = {(k.decode("utf-8", "replace") if isinstance(k, bytes) else k):
           (v.decode("utf-8", "replace") if isinstance(v, bytes) else v) for k, v in raw.items()}
    t = rec.get("time", "")
    rec["id"] = f"{ident[0]}-{ident[1]}"
    rec["at"] = iso_ms(int(t) if t.isdigit() and len(t) < 16 else ident[0])
    return rec


def encode_cursor(ident: Id, key: str) -> str:
    """The opaque page cursor for "after the record `ident` of stream `key`"."""
    raw = f"{ident[0]}-{ident[1]} {key}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[Id, str]:
    """The (ID, stream) a cursor encodes; BadInput naming `before` when it is not one."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raw = ""
    m = CURSOR_RE.match(raw)
    ident = (int(m.group(1)), int(m.group(2))) if m else None
    if m is None or ident is None or ident[0] > MAX_SEQ or ident[1] > MAX_SEQ:
        raise BadInput("the page cursor is not valid; start again from the newest records",
                       field="before")
    return ident, m.group(3)


class _Source:
    """One stream in a merge: what was fetched and not yet merged, and where reading resumes."""

    __slots__ = ("batch", "buf", "done", "end", "key", "nxt", "queued", "rank")

    def __init__(self, key: str, rank: int, nxt: Pos, end: Pos, batch: int) -> None:
        self.key = key
        self.rank = rank  # its place in the sorted list of merged streams
        self.nxt = nxt  # everything before this position has been fetched
        self.end = end  # the last position in range
        self.batch = batch  # entries to ask for next time (doubling up to a cap)
        self.buf: list[tuple[Pos, Any]] = []  # fetched, not yet merged; the next one last
        self.done = nxt > end  # nothing left to fetch
        self.queued = False  # its next record is in the merge heap


class _Merge:
    """A streaming k-way merge of audit streams by (entry ID, stream key), either direction.

    Positions are entry IDs in merge order, negated when newest comes first, so one ascending
    algorithm serves both. A record is yielded only when no stream can hold anything before
    it: every stream has its next record in the heap, is done, or was read past it. Streams
    that would block the heap's top are fetched together in one pipelined round trip, with
    other streams that ran dry and may hold records before the window's end (read-ahead).

    The window keeps a page cheap. For `want` records the merge first reads one record from
    every stream (one round trip), then no further than the want-th of them: only the few
    streams that hold more of the page are read again, together. A `window` hint (where the
    last such page ended) turns even the first round trip into mostly empty replies. If the
    merge passes the window (records were filtered out) or finds nothing in it, it reads on
    in every stream that needs it, batches doubling, and sets a new window the same way.
    The window changes how much is read, never the result.
    """

    def __init__(self, client: redis.Redis, sources: list[_Source], *, descending: bool,
                 cap: int, want: int | None = None, window: Id | None = None,
                 extras: int = 64, probed: bool = False,
                 rest: tuple[Pos, Callable[[], list[_Source]]] | None = None) -> None:
        self.client = client
        self.sources = {s.rank: s for s in sources}  # by rank (ranks need not be contiguous)
        self.sign = -1 if descending else 1
        self.cap = cap
        self.want = want
        # The window's end; None: read each stream to its end.
        self.upto: Pos | None = None if window is None else self._pos(window)
        self.extras = extras
        self.seq_end = 0 if descending else MAX_SEQ  # the last position within one ms
        self.origin: int | None = None  # where the window starts (ms, in merge order)
        self.widen = window is not None  # whether a passed window is widened, not dropped
        self.dry: dict[int, _Source] = {}  # queued streams with nothing buffered, not done
        self.waiting: list[tuple[Pos, int]] = []  # (nxt, rank) of unqueued streams not done
        # Each source's `nxt` is its newest record in range (stream_heads): only the `want`
        # first are read at the start; the others wait until the merge reaches them.
        self.probed = probed
        # (frontier, read): the streams not in `sources` hold no record before the frontier;
        # `read` gives them, probed, if the merge gets there (a filter dropped records).
        self.rest = rest

    def _pos(self, ident: Id) -> Pos:
        return self.sign * ident[0], self.sign * ident[1]

    def _id(self, pos: Pos) -> str:
        return f"{self.sign * pos[0]}-{self.sign * pos[1]}"

    def _next(self, pos: Pos) -> Pos | None:
        real = (self.sign * pos[0], self.sign * pos[1])
        after = _after(real) if self.sign > 0 else _before(real)
        return None if after is None else self._pos(after)

    def _fetch(self, group: list[_Source]) -> int:
        """Read each stream of `group` from where it stopped to the window's end, at most
        its batch, all in one round trip."""
        stops = [s.end if self.upto is None else min(self.upto, s.end) for s in group]
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            read = pipe.xrevrange if self.sign < 0 else pipe.xrange
            for s, stop in zip(group, stops, strict=True):
                read(s.key, self._id(s.nxt), self._id(stop), count=s.batch)
            replies = pipe.execute()
        n = 0
        for s, stop, entries in zip(group, stops, replies, strict=True):
            got = []
            for raw_id, raw in entries:
                ident = parse_id(raw_id)
                if ident is not None:
                    got.append((self._pos(ident), raw))
            whole = len(entries) < s.batch or not got  # everything up to `stop` was read
            nxt = self._next(stop if whole else got[-1][0])
            s.done = nxt is None or nxt > s.end
            if nxt is not None:
                s.nxt = nxt
            s.batch = min(self.cap, s.batch * 2)
            got.reverse()
            s.buf = got
            n += len(got)
        return n

    def _place(self, s: _Source, heap: list[tuple[Pos, int, Any]]) -> None:
        """Queue the stream's next fetched record, or note what it still needs."""
        if not s.queued and s.buf:
            pos, raw = s.buf.pop()
            heapq.heappush(heap, (pos, s.rank, raw))
            s.queued = True
        if s.queued and not s.buf and not s.done:
            self.dry[s.rank] = s
        else:
            self.dry.pop(s.rank, None)
            if not s.queued and not s.done:
                heapq.heappush(self.waiting, (s.nxt, s.rank))

    def _refill(self, heap: list[tuple[Pos, int, Any]], top: Pos | None) -> int:
        """Fetch every stream that may hold a record before `top` (None: every waiting one),
        and read ahead up to `extras` more that ran dry before the window's end."""
        group: list[_Source] = []
        while self.waiting and (top is None or self.waiting[0][0] <= top):
            self._pop_waiting(group)
        room, end = self.extras, self.upto
        for s in self.dry.values():
            if room == 0:
                break
            if end is None or s.nxt <= end:
                group.append(s)
                room -= 1
        while room and self.waiting and (end is None or self.waiting[0][0] <= end):
            room -= self._pop_waiting(group)
        n = self._fetch(group)
        for s in group:
            self._place(s, heap)
        return n

    def _pop_waiting(self, group: list[_Source]) -> int:
        """Move the first waiting stream to `group` (1); at the frontier, first make every
        stream not read yet wait in its place (0)."""
        rank = heapq.heappop(self.waiting)[1]
        if rank >= 0:
            group.append(self.sources[rank])
            return 1
        assert self.rest is not None
        for s in self.rest[1]():
            self.sources[s.rank] = s
            if not s.done:
                heapq.heappush(self.waiting, (s.nxt, s.rank))
        self.rest = None
        return 0

    def __iter__(self) -> Iterator[tuple[Id, str, Any]]:
        """(entry ID, stream key, raw fields), in order."""
        heap: list[tuple[Pos, int, Any]] = []
        live = [s for s in self.sources.values() if not s.done]
        if self.probed and self.want is not None:
            live.sort(key=lambda s: (s.nxt, s.rank))
            self.waiting = [(s.nxt, s.rank) for s in live[self.want:]]  # sorted: a heap
            live = live[:self.want]
            if self.rest is not None:
                # Rank -1: the other streams are read before any record at the frontier's ID.
                heapq.heappush(self.waiting, (self.rest[0], -1))
        self._fetch(live)
        for s in live:
            self._place(s, heap)
        if self.upto is not None:
            self.origin = heap[0][0][0] if heap else self.upto[0]
        self._narrow(heap)
        while heap or self.waiting:
            top = heap[0][0] if heap else None
            if top is not None and not (self.waiting and self.waiting[0][0] <= top):
                pos, rank, raw = heapq.heappop(heap)
                s = self.sources[rank]
                s.queued = False
                yield (self.sign * pos[0], self.sign * pos[1]), s.key, raw
                self._place(s, heap)
            elif top is not None and (self.upto is None or top <= self.upto):
                self._refill(heap, top)  # streams that may hold records before the top
            elif self.upto is not None and self.widen:
                # Past the window (records were filtered out) or nothing left in it: twice as
                # long a window, if the last widening found anything at all.
                assert self.origin is not None
                end = (self.upto[0] + max(1, self.upto[0] - self.origin), self.seq_end)
                self.upto = end if top is None else max(end, top)
                self.widen = self._refill(heap, top) > 0
            else:
                # Long gaps between records: read on in every stream that needs it, batches
                # doubling, and set a new window as at the start.
                self.upto = None
                self._refill(heap, top)
                self._narrow(heap)

    def _narrow(self, heap: list[tuple[Pos, int, Any]]) -> None:
        """End the window at the want-th record in hand, if there are that many."""
        if self.want is not None and len(heap) >= self.want:
            kth = heapq.nsmallest(self.want, heap)[-1][0]
            self.upto = kth if self.upto is None else min(self.upto, kth)
            self.origin = heap[0][0][0]
            self.widen = True


class AuditLog:
    """The audit log read back: every stream merged in order, filtered, paged (read-only)."""

    def __init__(self, client: redis.Redis, ledger: Ledger | None = None) -> None:
        self.client = client
        # With the ledger, a page first asks which streams' newest records come first
        # (summary.stream_heads_top: one chain head read a stream, in Redis, and only those
        # streams answered) and reads records only from the streams that hold the page's:
        # 10,000 pools' streams cost one round trip and ~51 merge sources, not 10,000 of each.
        self.ledger = ledger

    def streams(self) -> list[str]:
        """Every audit stream: each pool's (as registered in AUDIT_STREAMS) and the system's."""
        with failing_closed():
            members = self.client.smembers(keys.AUDIT_STREAMS)
        # One decode per member, no call around it: 10,000 pools' streams on every page.
        names = {m.decode("utf-8", "replace") if isinstance(m, bytes) else m for m in members}
        names.add(keys.SYS_AUDIT)
        return sorted(names)

    def _streams_for(self, f: AuditFilter) -> list[str]:
        if f.entity is None:
            return self.streams()
        # Records about an entity live in its pool's stream only (keys.py): read just that one.
        with failing_closed():
            root = self.client.hget(keys.ENTITIES, f.entity)
        return [] if root is None else [keys.audit(_text(root))]

    def records(self, filters: AuditFilter | None = None) -> Iterator[dict[str, str]]:
        """Every matching record, oldest first, streamed (memory holds a batch per stream)."""
        f = filters or AuditFilter()
        names = self._streams_for(f)
        lo, hi = _bounds(f)
        cap = max(16, min(1000, 50_000 // max(1, len(names))))
        sources = [_Source(k, i, lo, hi, cap) for i, k in enumerate(names)]
        for ident, _key, raw in _Merge(self.client, sources, descending=False, cap=cap):
            rec = _record(ident, raw)
            if f.matches(rec):
                yield rec

    def page(self, filters: AuditFilter | None = None, *, before: str | None = None,
             size: int = 50) -> tuple[list[dict[str, str]], str | None]:
        """Up to `size` matching records, newest first, after the cursor `before`; and the
        cursor of the next (older) page, or None when there is none."""
        if not 1 <= size <= MAX_PAGE:
            raise BadInput(f"page size must be 1 to {MAX_PAGE}, not {size}", field="size")
        f = filters or AuditFilter()
        after = decode_cursor(before) if before else None
        lo, hi = _bounds(f)
        # Newest first is the exact reverse of oldest first: records with the same ID come in
        # descending stream key order, so streams are ranked from the last key.
        names = self._streams_for(f)
        split = 0
        tops: tuple[Id | None, Id] = (hi, hi)
        if after is not None:
            # Of the records with the cursor's ID, those of streams with a key before the
            # cursor's stream are still to come: the first `split` streams (ranked) end just
            # before that ID, the others at it.
            ident, at_key = after
            split = len(names) - bisect_left(names, at_key)
            early = _before(ident)
            tops = (None if early is None else min(hi, early), min(hi, ident))
        names.reverse()
        # Where the same page ended last time: a window that makes most streams answer with
        # nothing at all (a hint for speed only; what is read is the same without it).
        hint_key = (id(self.client), f)
        floor, span = _HINTS.get(hint_key, (None, None))
        if after is not None:
            floor = None if span is None else max(0, after[0][0] - span)
        ranked = _Ranked(names, lo, tops, split)
        top = None
        if (TOP and self.ledger is not None and len(names) >= PROBE_FROM
                and (TOP_WHEN_FILTERED or _every_record_matches(f))):
            top = self._top(ranked, size + 1)
        if top is not None:
            sources, rest = top
            probed = True
        else:
            sources, rest = ranked.sources(range(len(names))), None
            probed = self._probe(sources, lo)
        merge = _Merge(self.client, sources, descending=True, cap=MAX_PAGE, want=size + 1,
                       window=None if floor is None or probed else (floor, 0), extras=1024,
                       probed=probed, rest=rest)
        out: list[dict[str, str]] = []
        last: tuple[Id, str] | None = None
        more = False
        for ident, key, raw in merge:
            rec = _record(ident, raw)
            if not f.matches(rec):
                continue
            if len(out) == size:  # one more matches: there is an older page
                more = True
                floor = ident[0]
                break
            out.append(rec)
            last = (ident, key)
        if not more or last is None:
            return out, None
        span = max(1, int(out[0]["id"].partition("-")[0]) - (floor or 0))
        if after is not None:  # the first page's floor stays; an older page teaches the span
            floor = _HINTS.get(hint_key, (None, span))[0]
        if len(_HINTS) >= 4096:
            _HINTS.clear()
        _HINTS[hint_key] = (floor, span)
        return out, encode_cursor(*last)


    def _top(self, ranked: _Ranked, k: int
             ) -> tuple[list[_Source], tuple[Pos, Callable[[], list[_Source]]] | None] | None:
        """Sources for the streams holding the first `k` records (heads.lua's top mode: what
        Python handles follows the page, not the number of streams), and the frontier with
        what reads the other streams' heads when the merge gets there; None on a Cluster."""
        assert self.ledger is not None
        lo = ranked.lo
        highs = tuple("" if t is None else f"{t[0]}-{t[1]}" for t in ranked.tops)
        got = stream_heads_top(self.ledger, ranked.names, f"{lo[0]}-{lo[1]}",
                               (highs[0], highs[1]), ranked.split, k)
        if got is None:
            return None
        found, frontier = got
        sources = []
        for rank, head in found:
            ident = parse_id(head)
            assert ident is not None
            sources.append(_Source(ranked.names[rank], rank, (-ident[0], -ident[1]),
                                   (-lo[0], -lo[1]), 1))
        if frontier is None:
            return sources, None
        at = parse_id(frontier[1])
        assert at is not None
        taken = {s.rank for s in sources}

        def others() -> list[_Source]:
            rest = ranked.sources(r for r in range(len(ranked.names)) if r not in taken)
            if rest and not self._probe(rest, lo, always=True):
                raise AssertionError("heads.lua answered a top call but not this one")
            return rest

        return sources, ((-at[0], -at[1]), others)

    def _probe(self, sources: list[_Source], lo: Id, *, always: bool = False) -> bool:
        """Move each (descending) source to its newest record in range, or mark it done when
        it holds none; False when there is no ledger to ask (or it cannot, on a Cluster), or
        there are fewer than PROBE_FROM streams and not `always`."""
        if self.ledger is None or (len(sources) < PROBE_FROM and not always):
            return False
        heads = stream_heads(self.ledger, [s.key for s in sources],
                             [f"{-s.nxt[0]}-{-s.nxt[1]}" for s in sources], f"{lo[0]}-{lo[1]}")
        if heads is None:
            return False
        for s, head in zip(sources, heads, strict=True):
            ident = parse_id(head) if head else None
            if ident is None:
                s.done = True
            else:
                s.nxt = (-ident[0], -ident[1])
        return True


class _Ranked:
    """The streams of a page in merge order (descending key) and where each one's range ends:
    the first `split` at tops[0], the others at tops[1] (None: nothing in range)."""

    def __init__(self, names: list[str], lo: Id, tops: tuple[Id | None, Id], split: int
                 ) -> None:
        self.names = names
        self.lo = lo
        self.tops = tops
        self.split = split

    def sources(self, ranks: Iterable[int]) -> list[_Source]:
        """A (not yet probed) source for each stream of `ranks` that has a range."""
        out = []
        end = (-self.lo[0], -self.lo[1])
        for rank in ranks:
            top = self.tops[0] if rank < self.split else self.tops[1]
            if top is not None:
                out.append(_Source(self.names[rank], rank, (-top[0], -top[1]), end, 1))
        return out


def _every_record_matches(f: AuditFilter) -> bool:
    """Whether every record in the filter's time range matches it (its time range is what
    the streams are read in; a pool's stream holds its children's records too)."""
    return (f.entity is None and f.user is None and f.channel is None and f.outcome is None
            and f.rule is None)


def _bounds(f: AuditFilter) -> tuple[Id, Id]:
    """The first and last stream ID in the filter's time range (IDs are Redis ms)."""
    lo = (0, 0) if f.since_ms is None else (f.since_ms, 0)
    if f.until_ms is None:
        return lo, (MAX_SEQ, MAX_SEQ)
    if f.until_ms == 0:
        return (0, 1), (0, 0)  # nothing is before the epoch: an empty range
    return lo, (f.until_ms - 1, MAX_SEQ)
