"""Deletion notices (issue 15 item 2, R9): who holds what X deleted, told so, and their answer.

The API the surfaces use (each answer a `Notice`, or a list of them, newest first):

    gate.notices.open_for_person(username)   open notices of hydrated exports to that person
    gate.notices.open_for_entity(name)       open notices of ID shares to that entity
    gate.notices.pages(open_only=False)      every notice (or the open ones), a page at a time
    gate.notices.listing(open_only=False)    the same as one list (tests, small stores)
    gate.notices.touching(start, end)        the facts of the notices a month's report counts
    gate.notices.get(notice_id)              one (NotFound)
    gate.notices.ack(notice_id, by=, note=, actor=, channel=)  the recipient confirmed the
                                             deletion; recorded by compliance (R12), audited
    gate.notices.ids(notice_id)              what to delete, per delivery (`NoticeIds`)
    gate.notices.scan(actor=, channel=)      open the notices an ingest owes (see below)

What opens a notice (the policy is `gatekeeper.rules.notices`): an R9 ingest adds the IDs it
newly hides to a pending set *in its own transaction* (domain/deletions.py). Right after it
commits, `scan` moves the pending IDs to a batch, works out every post they newly hide (the
IDs themselves, and from the datasets' indexes the posts of newly hidden users and retweets of
either — R9's exits' rules), reads every manifest in retention, and intersects (sorted numpy
arrays, `searchsorted`). Deliveries whose reservation was refunded are left out. One notice per
recipient (the entity for ID shares, the person for exports) and per scan — normally one
ingest; a second ingest opens new notices, even for a recipient with one open (each answers one
request of X's, with its own deadline and acknowledgement). Deadline: the ingest's time + 24 h.

A crash anywhere is recovered by the next scan (the next CLI ingest, `gatekeeper notices scan`,
or the server's runner, which scans after an API ingest and at start-up: web/background.py):
the batch stays until one transaction opens every notice of it, with their audit records, and
removes it. The IDs of a notice are a file beside the manifests (``notices/YYYY-MM/ID.gkn``,
the manifests' codec per delivery): a notice of a large list names ~10^5 IDs and Redis keeps
only what lists and pages read. A crash between that file and the transaction leaves a file no
notice names (the retry writes the same name again when nothing else came in).

ID shares record Post IDs only: a deleted *user's* posts in an ID share are found only if a
dataset's index holds them (their author is known there); an ID share of an uploaded list of
posts no dataset holds cannot be matched to a user's deletion.

Indexes beside each notice's hash (keys.py): every notice by opening time, the open ones by
deadline, each recipient's by opening time — and since layout 5 each recipient's open ones and
the acknowledged ones by acknowledgement time, each changed in the transaction that opens or
acknowledges the notice. A store whose notices an older version opened has them indexed by
`gatekeeper store upgrade` (layout.index_notices); until then (keys.NOTICES_INDEXED absent)
the readers read every notice as before.

Over ~400 lines for a reason: the batch a scan takes, the files it writes and the one
transaction that opens its notices are one crash-safety argument, read together.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import socket
import struct
import uuid
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, cast

import redis

from gatekeeper import faults
from gatekeeper.domain import manifests, spool
from gatekeeper.domain.figures import NoticeFacts
from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import notices as policy
from gatekeeper.rules import roles
from gatekeeper.rules.errors import BadInput, Conflict, InsufficientStorage, NotFound
from gatekeeper.rules.r9 import Deleted

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt

    from gatekeeper.domain.gate import Gate

    Ids = npt.NDArray[np.uint64]

KINDS = ("posts", "users")
# A scan's lock: a scanner killed on another host holds it until it lapses; one on this host
# is seen dead at once (its pid). A scan renews it as it reads, and commits only if still its.
LOCK_MS = 60_000
RENEW_EVERY = 50  # manifests read between renewals
AUDIT_LOOKUP = 20_000  # audit records read past a delivery for its settle record, at most
READERS = 4  # manifests read and intersected at once (zstd and numpy let go of the GIL)
SUFFIX = ".gkn"
MAGIC = b"GKN"
VERSION = 1
HEADER = struct.Struct("<3sBI")  # magic, version, index length
PAGE = 500  # notices read per round trip by `pages`
FACTS = ("id", "recipient_kind", "recipient", "entity", "opened_ms", "deadline_ms", "posts",
         "users", "acked_ms", "acked_by")  # what a month's report reads of a notice


# --- what a notice is --------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivery:
    """One delivery a notice names, and how many of its IDs are to be deleted."""

    delivery: str  # the share's (or export's) id
    channel: str
    kind: str  # share.posts, share.users, export.xlsx, ...
    delivered_ms: int
    file: str | None  # the delivered file's name, when gatekeeper knows it
    posts: int
    users: int

    @property
    def ids(self) -> int:
        return self.posts + self.users


@dataclass(frozen=True)
class Notice:
    id: str
    recipient_kind: str  # "entity" (ID shares) or "person" (hydrated exports)
    recipient: str
    entity: str  # the recipient's entity (the entity itself, or the person's)
    opened_ms: int
    deadline_ms: int
    deliveries: tuple[Delivery, ...]
    posts: int  # distinct Post IDs to delete, over its deliveries
    users: int  # distinct User IDs to delete
    state: str  # "open" or "acknowledged"
    sources: tuple[str, ...] = ()  # the deletion lists it answers
    acked_by: str | None = None  # who confirmed the deletion (the recipient's words)
    acked_ms: int | None = None
    acked_note: str | None = None
    acked_actor: str | None = None  # the compliance officer who recorded it
    file: str = field(default="", repr=False)  # its IDs, under notices/

    @property
    def ids(self) -> int:
        return self.posts + self.users

    @property
    def open(self) -> bool:
        return self.state == "open"

    def overdue(self, now_ms: int) -> bool:
        """Past its deadline and not acknowledged (or acknowledged late)."""
        return (self.acked_ms if self.acked_ms is not None else now_ms) > self.deadline_ms

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out.pop("file")
        out["ids"] = self.ids
        out["deliveries"] = [{**asdict(d), "ids": d.ids} for d in self.deliveries]
        out["opened"], out["deadline"] = iso(self.opened_ms), iso(self.deadline_ms)
        out["acked"] = iso(self.acked_ms) if self.acked_ms is not None else None
        out["sources"] = list(self.sources)
        return out


@dataclass(frozen=True)
class NoticeIds:
    """What a notice asks to delete: per delivery id, its Post IDs and User IDs (sorted)."""

    by_delivery: dict[str, tuple[Ids, Ids]]

    def posts(self) -> Ids:
        return _union([p for p, _u in self.by_delivery.values()])

    def users(self) -> Ids:
        return _union([u for _p, u in self.by_delivery.values()])


@dataclass
class Scan:
    """What one scan did."""

    opened: list[Notice] = field(default_factory=list)
    manifests: int = 0  # manifests read
    refunded: int = 0  # deliveries that held the IDs but were refunded: no notice
    unreadable: list[str] = field(default_factory=list)  # manifests that could not be read
    busy: bool = False  # another scan holds the lock; it takes these IDs too
    token: str = field(default="", repr=False)  # the lock this scan holds

    def to_dict(self) -> dict[str, Any]:
        return {"opened": [n.id for n in self.opened], "manifests": self.manifests,
                "refunded": self.refunded, "unreadable": self.unreadable, "busy": self.busy}


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="seconds").replace(
        "+00:00", "Z")


# --- the notice's ID file ----------------------------------------------------------------------


def encode_ids(parts: dict[str, tuple[Any, Any]]) -> bytes:
    """b"GKN" VERSION index_len(u32) index(JSON [[delivery, length], ...]) then, per delivery,
    a manifest (`manifests.encode`) of its Post IDs and User IDs."""
    blobs = [(d, manifests.encode(p, u)) for d, (p, u) in parts.items()]
    index = json.dumps([[d, len(b)] for d, b in blobs], separators=(",", ":")).encode()
    return HEADER.pack(MAGIC, VERSION, len(index)) + index + b"".join(b for _d, b in blobs)


def decode_ids(data: bytes, where: str = "the notice's IDs") -> NoticeIds:
    bad = manifests.BadManifest
    if len(data) < HEADER.size or data[:3] != MAGIC:
        raise bad(f"{where} is not a gatekeeper notice file (no GKN header)")
    _m, version, n = HEADER.unpack_from(data)
    if version != VERSION:
        raise bad(f"{where} is notice file version {version}; this gatekeeper reads {VERSION}")
    try:
        index = json.loads(data[HEADER.size:HEADER.size + n])
        at = HEADER.size + n
        out = {}
        for delivery, length in index:
            got = manifests.decode(data[at:at + int(length)], where)
            out[str(delivery)] = (got.posts, got.users)
            at += int(length)
    except (ValueError, TypeError):
        raise bad(f"{where} is truncated or corrupt") from None
    if at != len(data):
        raise bad(f"{where} is truncated or corrupt")
    return NoticeIds(out)


class Files(manifests.Monthly):
    """The notices' ID files beside the datasets, stored as manifests are (`manifests.Monthly`:
    a directory or a store URL, a month per folder); named "YYYY-MM/ID"."""

    FOLDER = "notices"
    SUFFIX = SUFFIX
    WHAT = "notice file"

    def where(self, name: str) -> str:
        month, ident = name.split("/")
        return self._where(month, ident)

    def write(self, name: str, data: bytes) -> None:
        month, ident = name.split("/")
        try:
            self._put(month, ident, [data])
        except InsufficientStorage as exc:
            exc.rule = "R9"  # as the ingest that owes the notice
            raise

    def read(self, name: str) -> bytes:
        month, ident = name.split("/")
        return self._get(month, ident)


# --- sorted-array work -------------------------------------------------------------------------


def _union(arrays: list[Any]) -> Ids:
    import numpy as np

    if not arrays:
        return np.zeros(0, dtype=np.uint64)
    return manifests.as_ids(np.concatenate(arrays))


def common(delivered: Ids, wanted: Ids) -> Ids:
    """The IDs in both sorted unique arrays: `wanted` within `delivered`'s range, each looked
    up by binary search (O(w log d), w usually far smaller than a large delivery)."""
    import numpy as np

    if not delivered.size or not wanted.size:
        return np.zeros(0, dtype=np.uint64)
    lo = int(np.searchsorted(wanted, delivered[0], side="left"))
    hi = int(np.searchsorted(wanted, delivered[-1], side="right"))
    part = wanted[lo:hi]
    if not part.size:
        return part
    at = np.searchsorted(delivered, part)
    at[at == delivered.size] = 0
    return part[delivered[at] == part]


# --- the notices -------------------------------------------------------------------------------


class Notices:
    """Deletion notices in Redis (hashes, sorted sets under keys.NOTICES_*) and their ID files."""

    def __init__(self, gate: Gate) -> None:
        self.gate = gate
        self.client = gate.client
        self.files = Files(gate.client, gate.config.datasets_url or gate.config.datasets_dir)

    # --- reading ---------------------------------------------------------------------------

    def get(self, notice_id: str) -> Notice:
        with failing_closed():
            raw = self.client.hgetall(keys.notice(notice_id)) if _valid(notice_id) else {}
        if not raw:
            raise NotFound(f"no deletion notice {notice_id!r}", rule="R9")
        return _notice({text(k): text(v) for k, v in raw.items()})

    def _many(self, ids: Iterable[Any]) -> list[Notice]:
        names = [text(i) for i in ids]
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for i in names:
                pipe.hgetall(keys.notice(i))
            got = pipe.execute()
        return [_notice({text(k): text(v) for k, v in raw.items()}) for raw in got if raw]

    def listing(self, open_only: bool = False) -> list[Notice]:
        """Every notice newest first — or the open ones, the nearest deadline first — as one
        list: `pages` joined (for tests and small stores; a listing streams `pages`)."""
        return [n for page in self.pages(open_only) for n in page]

    def pages(self, open_only: bool = False, size: int | None = None
              ) -> Iterator[list[Notice]]:
        """`listing`'s notices a page of `size` at a time, each page one bounded read.

        The cursor is the last notice given, not a rank: each page is read in one transaction
        with that notice's rank, and read again from its new rank when notices opened or
        acknowledged meanwhile moved it (an acknowledged one leaves the open set: the page
        starts after where it was). None is given twice; none that stays is skipped."""
        key = keys.NOTICES_OPEN if open_only else keys.NOTICES_ALL
        size = size or PAGE
        start, last = 0, None  # the next page's rank; the last notice given, with its score
        while True:
            for _try in range(10):
                with failing_closed():
                    pipe = self.client.pipeline(transaction=True)
                    if last is not None:
                        (pipe.zrank if open_only else pipe.zrevrank)(key, last[0])
                    (pipe.zrange if open_only else pipe.zrevrange)(
                        key, start, start + size - 1, withscores=True)
                    *rank, got = pipe.execute()
                if last is None or rank[0] == start - 1:
                    break
                if rank[0] is not None:
                    start = rank[0] + 1
                    continue
                try:  # the last one given left the open set (acknowledged)
                    start, got = self._after(key, *last, size)
                    break
                except redis.WatchError:
                    continue
            else:
                raise Conflict("deletion notices kept changing while they were listed; "
                               "list them again", rule="R9")
            page = [(text(m), float(sc)) for m, sc in got]
            if page:
                notices = self._many(m for m, _sc in page)
                if notices:
                    yield notices
            if len(page) < size:
                return
            start, last = start + len(page), page[-1]

    def _after(self, key: str, member: str, score: float, size: int
               ) -> tuple[int, list[Any]]:
        """The rank just after where `member` (gone from the open set) stood in it — the open
        notices due before its deadline, and those due with it that sort before it — and the
        page from there, in one transaction (WatchError if the set changed meanwhile)."""
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            before = int(pipe.zcount(key, "-inf", f"({score!r}"))
            ties = pipe.zrangebyscore(key, repr(score), repr(score))
            start = before + sum(text(cast(bytes, t)) < member for t in ties)
            pipe.multi()
            pipe.zrange(key, start, start + size - 1, withscores=True)
            [got] = pipe.execute()
        return start, got

    def window(self, open_only: bool = False, start: int = 0, count: int = 50
               ) -> tuple[int, list[Notice]]:
        """(how many, a page of them) in `listing`'s order: a bounded read for pages (the
        dashboard's open notices, overdue first; the compliance list)."""
        key = keys.NOTICES_OPEN if open_only else keys.NOTICES_ALL
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            pipe.zcard(key)
            if open_only:
                pipe.zrange(key, start, start + count - 1)
            else:
                pipe.zrevrange(key, start, start + count - 1)
            total, ids = pipe.execute()
        return int(total), self._many(ids)

    def _open_of(self, kind: str, name: str) -> list[Notice]:
        """A recipient's open notices from their index (layout 5) — or, on a store whose
        notices are not indexed yet, from every notice they ever had."""
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            pipe.exists(keys.NOTICES_INDEXED)
            pipe.zrevrange(keys.notices_open_of(kind, name), 0, -1)
            indexed, ids = pipe.execute()
            if not indexed:
                ids = self.client.zrevrange(keys.notices_of(kind, name), 0, -1)
        return [n for n in self._many(ids) if n.open]

    def indexed(self) -> bool:
        """Whether the indexes of layout 5 hold every notice (see the module's docstring)."""
        with failing_closed():
            return bool(self.client.exists(keys.NOTICES_INDEXED))

    def touching(self, start: int, end: int) -> list[NoticeFacts]:
        """The facts (FACTS) of every notice a report of [start, end) may count: opened in
        it, open now, or acknowledged from its start on — a notice opened earlier and
        acknowledged before it is neither opened, acknowledged, overdue nor open in it. Newest
        first, as `listing`. Bounded by the month's notices and the open ones, where the
        indexes are whole (`indexed`); else every notice, as before layout 5."""
        with failing_closed():
            pipe = self.client.pipeline(transaction=True)
            pipe.exists(keys.NOTICES_INDEXED)
            pipe.zrangebyscore(keys.NOTICES_ALL, start, f"({end}")
            pipe.zrange(keys.NOTICES_OPEN, 0, -1)
            pipe.zrangebyscore(keys.NOTICES_ACKED, start, "+inf")
            indexed, *found = pipe.execute()
            if not indexed:
                found = [self.client.zrange(keys.NOTICES_ALL, 0, -1)]
        ids = sorted({text(i) for group in found for i in group})
        out = []
        for at in range(0, len(ids), PAGE):
            with failing_closed():
                pipe = self.client.pipeline(transaction=False)
                for ident in ids[at:at + PAGE]:
                    pipe.hmget(keys.notice(ident), FACTS)
                got = pipe.execute()
            out += [_facts([text(v) if v is not None else None for v in raw]) for raw in got
                    if raw[0] is not None]
        out.sort(key=lambda n: (n.opened_ms, n.id), reverse=True)
        return out

    def open_for_person(self, username: str) -> list[Notice]:
        """The open notices of hydrated exports to `username`, newest first."""
        return self._open_of(policy.PERSON, username)

    def open_for_entity(self, name: str) -> list[Notice]:
        """The open notices of ID shares to entity `name`, newest first."""
        return self._open_of(policy.ENTITY, name)

    def ids(self, notice_id: str) -> NoticeIds:
        notice = self.get(notice_id)
        return decode_ids(self.files.read(notice.file), self.files.where(notice.file))

    # --- exporting -------------------------------------------------------------------------

    def export(self, notice_id: str, out_dir: Path, *, actor: str, channel: str
               ) -> dict[str, Any]:
        """Write what a recipient needs into `out_dir`: the ID file(s) of what to delete
        (SPEC: one decimal ID per line) and the letter (PDF: who, what, delivered when, the
        deadline, the policy), each written whole; audited (R9)."""
        notice = self.get(notice_id)
        got = self.ids(notice.id)
        posts, users = got.posts(), got.users()
        try:
            out_dir.mkdir(parents=True, exist_ok=True)
            files = []
            for label, ids in (("posts", posts), ("users", users)):
                if ids.size:
                    path = out_dir / f"notice-{notice.id}-{label}.txt"
                    spool.publish(path, functools.partial(_write_ids, ids))
                    files.append(path)
            pdf = out_dir / f"notice-{notice.id}.pdf"
            pages: list[int] = []
            spool.publish(pdf, lambda fh: pages.append(self._letter(notice, posts, users, fh)))
        except OSError as exc:
            raise InsufficientStorage(f"{out_dir}: the notice could not be written "
                                      f"({exc.strerror or exc})", rule="R9") from exc
        files.append(pdf)
        self._exported(notice, f"exported: letter and ID file(s) of {notice.ids:,} ID(s) to "
                               f"{out_dir}", actor, channel)
        return {"id": notice.id, "files": [str(p) for p in files], "pages": pages[0],
                "posts": int(posts.size), "users": int(users.size)}

    def download(self, notice_id: str, label: str, fh: IO[bytes], *, actor: str,
                 channel: str) -> str:
        """One of `export`'s files written into `fh` (the web's anonymous spool: nothing in a
        folder a killed server would leave): the Post IDs ("posts"), User IDs ("users") or the
        letter (""); its file name. Audited as an export (R9)."""
        notice = self.get(notice_id)
        got = self.ids(notice.id)
        posts, users = got.posts(), got.users()
        if label:
            _write_ids(posts if label == "posts" else users, fh)
            name = f"notice-{notice.id}-{label}.txt"
        else:
            self._letter(notice, posts, users, fh)
            name = f"notice-{notice.id}.pdf"
        faults.point("notices.download")  # written, not yet sent
        self._exported(notice, f"downloaded: {name} ({notice.ids:,} ID(s))", actor, channel)
        return name

    def _letter(self, notice: Notice, posts: Ids, users: Ids, fh: IO[bytes]) -> int:
        """The notice's letter (PDF) into `fh`, naming its ID files; its pages."""
        from exports.notice_pdf import Letter, LetterDelivery, write_notice_pdf

        ack = None
        if notice.acked_ms is not None:
            ack = (f"by {notice.acked_by} at {iso(notice.acked_ms)}"
                   + (f" ({notice.acked_note})" if notice.acked_note else ""))
        letter = Letter(
            notice_id=notice.id, recipient_kind=notice.recipient_kind,
            recipient=notice.recipient, entity=notice.entity,
            opened=iso(notice.opened_ms), deadline=iso(notice.deadline_ms),
            deliveries=[LetterDelivery(d.delivery, d.channel, d.kind,
                                       iso(d.delivered_ms), d.file, d.posts, d.users)
                        for d in notice.deliveries],
            posts=posts.tolist(), users=users.tolist(), policy=policy.POLICY_TEXT,
            id_files=[f"notice-{notice.id}-{label}.txt"
                      for label, ids in (("posts", posts), ("users", users)) if ids.size],
            sources=notice.sources, state=notice.state, acknowledged=ack)
        return write_notice_pdf(letter, fh)

    def _exported(self, notice: Notice, what: str, actor: str, channel: str) -> None:
        with failing_closed():
            now_ms = self.gate.clock.now_ms()
            pipe = self.client.pipeline(transaction=True)
            chain.append(pipe, keys.SYS_AUDIT, {
                "time": now_ms, "actor": actor, "channel": channel, "entity": notice.entity,
                "recipient": notice.recipient, "kind": "notices.export", "outcome": "changed",
                "rule": "R9", "requested": notice.ids, "request_id": notice.id,
                "message": f"deletion notice {notice.id} to {notice.recipient_kind} "
                           f"{notice.recipient} {what}"}, at_ms=self.gate.clock.fixed_ms)
            pipe.execute()

    # --- acknowledging ---------------------------------------------------------------------

    def ack(self, notice_id: str, *, by: str, note: str = "", actor: str,
            channel: str) -> Notice:
        """Record that the recipient confirmed the deletion (`by`: who, in their words);
        compliance (or admin) only (R12), audited (R9). A notice is acknowledged once."""
        user = self.gate.users.get(actor)
        roles.require_role(user, roles.MAY_ACK_NOTICES, "acknowledging a deletion notice")
        by, note = by.strip(), note.strip()
        if not by:
            raise BadInput("say who confirmed the deletion (--by): it is audited", rule="R9",
                           field="by", value=by)
        notice = self.get(notice_id)
        key = keys.notice(notice.id)
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            pipe.watch(key)
            if text(pipe.hget(key, "state") or b"") != "open":
                done = self.get(notice.id)
                raise Conflict(f"deletion notice {notice.id} was acknowledged by "
                               f"{done.acked_by} at {iso(done.acked_ms or 0)}", rule="R9")
            now_ms = self.gate.clock.now_ms()
            pipe.multi()
            pipe.hset(key, mapping={"state": "acknowledged", "acked_by": by, "acked_ms": now_ms,
                                    "acked_note": note, "acked_actor": user.name})
            pipe.zrem(keys.NOTICES_OPEN, notice.id)
            pipe.zrem(keys.notices_open_of(notice.recipient_kind, notice.recipient), notice.id)
            pipe.zadd(keys.NOTICES_ACKED, {notice.id: now_ms})
            late = " (after its deadline)" if now_ms > notice.deadline_ms else ""
            chain.append(pipe, keys.SYS_AUDIT, {
                "time": now_ms, "actor": user.name, "channel": channel,
                "entity": notice.entity, "recipient": notice.recipient,
                "kind": "notices.ack", "outcome": "changed", "rule": "R9",
                "requested": notice.ids, "request_id": notice.id,
                "message": f"deletion notice {notice.id} to {notice.recipient_kind} "
                           f"{notice.recipient} acknowledged{late}: deletion of "
                           f"{notice.ids:,} ID(s) confirmed by {by}"
                           + (f" ({note})" if note else "")},
                at_ms=self.gate.clock.fixed_ms)
            pipe.execute()
        return self.get(notice.id)

    # --- opening ---------------------------------------------------------------------------

    def pending(self) -> int:
        """IDs newly hidden that no scan has finished with yet."""
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for kind in KINDS:
                pipe.scard(keys.notices_pending(kind))
                pipe.scard(keys.notices_batch(kind))
            pipe.zcard(keys.NOTICES_INGESTS)
            *sizes, _ingests = pipe.execute()
        return int(sum(sizes))

    def scan(self, *, actor: str, channel: str) -> Scan:
        """Open the notices the IDs ingests newly hid owe (see the module's docstring). Safe to
        run at any time and again: what an earlier scan finished is not looked at twice."""
        token = f"{socket.gethostname()} {os.getpid()} {uuid.uuid4().hex}"
        if not self._lock(token):
            return Scan(busy=True)
        out = Scan(token=token)
        try:
            while self._waiting():
                self._scan_batch(out, actor, channel)
        finally:
            self._unlock(token)
        if self._waiting():  # came in while this scan held the lock: its own scan was told busy
            more = self.scan(actor=actor, channel=channel)
            out.opened += more.opened
            out.manifests += more.manifests
            out.refunded += more.refunded
            out.unreadable += more.unreadable
        return out

    def waiting(self) -> bool:
        """Whether an ingest's IDs wait for a scan (queued, or a batch a crash left)."""
        return self._waiting()

    def _waiting(self) -> bool:
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            for kind in KINDS:
                pipe.exists(keys.notices_pending(kind), keys.notices_batch(kind))
            pipe.exists(keys.NOTICES_INGESTS)
            return any(pipe.execute())

    def _lock(self, token: str) -> bool:
        """Take the scan's lock — or a dead scanner's of this host (killed mid-scan)."""
        with failing_closed():
            if self.client.set(keys.NOTICES_LOCK, token, nx=True, px=LOCK_MS):
                return True
            with self.client.pipeline(transaction=True) as pipe:
                try:
                    pipe.watch(keys.NOTICES_LOCK)
                    holder = text(pipe.get(keys.NOTICES_LOCK) or b"").split()
                    if holder and (len(holder) != 3 or holder[0] != socket.gethostname()
                                   or _alive(int(holder[1]))):
                        return False
                    pipe.multi()
                    pipe.set(keys.NOTICES_LOCK, token, px=LOCK_MS)
                    pipe.execute()
                    return True
                except (redis.WatchError, ValueError):
                    return False

    def _renew(self, token: str) -> None:
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.NOTICES_LOCK)
                if text(pipe.get(keys.NOTICES_LOCK) or b"") == token:
                    pipe.multi()
                    pipe.pexpire(keys.NOTICES_LOCK, LOCK_MS)
                    pipe.execute()
            except redis.WatchError:
                pass  # taken over: the commit will see it

    def _unlock(self, token: str) -> None:
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(keys.NOTICES_LOCK)
                if text(pipe.get(keys.NOTICES_LOCK) or b"") == token:
                    pipe.multi()
                    pipe.delete(keys.NOTICES_LOCK)
                    pipe.execute()
            except redis.WatchError:
                pass  # another scan took it after ours lapsed: its own

    def _take_batch(self) -> tuple[Ids, Ids, list[tuple[str, int]]]:
        """Move the pending IDs into the batch (with what an unfinished scan left there)."""
        import numpy as np

        with failing_closed():
            pipe = self.client.pipeline(transaction=True)
            for kind in KINDS:
                # execute_command: a cluster pipeline refuses SUNIONSTORE by name ({sys} keys)
                pipe.execute_command("SUNIONSTORE", keys.notices_batch(kind),
                                     keys.notices_batch(kind), keys.notices_pending(kind))
                pipe.delete(keys.notices_pending(kind))
            for kind in KINDS:
                pipe.smembers(keys.notices_batch(kind))
            pipe.zrange(keys.NOTICES_INGESTS, 0, -1, withscores=True)
            *_moved, posts, users, ingests = pipe.execute()
        arrays = [manifests.as_ids(np.fromiter((int(i) for i in s), dtype=np.uint64,
                                               count=len(s))) for s in (posts, users)]
        return arrays[0], arrays[1], [(text(m), int(s)) for m, s in ingests]

    def _scan_batch(self, out: Scan, actor: str, channel: str) -> None:
        import numpy as np

        posts, users, ingests = self._take_batch()
        faults.point("notices.batched")
        after = self.gate.deletions.current()
        # A lifted ID is no longer hidden: nothing to delete for it.
        posts = posts[np.isin(posts, np.fromiter(after.posts, np.uint64, len(after.posts)))] \
            if posts.size else posts
        users = users[np.isin(users, np.fromiter(after.users, np.uint64, len(after.users)))] \
            if users.size else users
        before = after.without("posts", frozenset(posts.tolist())).without(
            "users", frozenset(users.tolist()))
        hidden = _union([posts, self._dataset_hidden(after, before)]) \
            if posts.size or users.size else posts
        self._renew(out.token)  # the datasets' pass may have been long
        hits = self._hits(hidden, users, out) if hidden.size or users.size else []
        hits = self._delivered(hits, out)
        ingested_ms = min((at for _m, at in ingests), default=None)
        if ingested_ms is None:
            ingested_ms = self.gate.clock.now_ms()
        sources = tuple(sorted({str(json.loads(m).get("source", "")) for m, _a in ingests}))
        digest = hashlib.sha256(hidden.tobytes() + b"|" + users.tobytes() + b"|"
                                + "\n".join(m for m, _a in ingests).encode()).hexdigest()
        made = self._make(hits, ingested_ms, digest, sources)
        faults.point("notices.written")
        self._commit(made, ingests, out, actor, channel, ingested_ms)

    def _dataset_hidden(self, after: Deleted, before: Deleted) -> Ids:
        """Post IDs of stored datasets that `after` hides and `before` did not (R9's rules:
        posts of newly hidden users, retweets of newly hidden posts or of their users)."""
        from gatekeeper.domain import dsquery

        found = []
        for info in self.gate.datasets.list():
            found.append(self.gate.datasets.indexed(
                info.name, lambda pf: dsquery.newly_hidden_ids(pf, after, before)))
        return _union(found)

    def _hits(self, hidden: Ids, users: Ids, out: Scan
              ) -> list[tuple[str, dict[str, Any], Ids, Ids]]:
        """(manifest, its meta, its Post IDs to delete, its User IDs to delete) of every
        manifest in retention that holds any."""
        names = self.gate.manifests.listed()
        out.manifests += len(names)

        def look(name: str) -> tuple[str, dict[str, Any], Ids, Ids] | str | None:
            try:
                got = self.gate.manifests.read(name)
            except NotFound:
                return None  # swept after it was listed: out of retention
            except manifests.BadManifest as exc:
                return f"{name}: {exc}"
            p, u = common(got.posts, hidden), common(got.users, users)
            return (name, got.meta, p, u) if p.size or u.size else None

        hits = []
        with ThreadPoolExecutor(READERS, "gatekeeper-notices") as pool:
            for at, found in enumerate(pool.map(look, names)):
                if at % RENEW_EVERY == RENEW_EVERY - 1:
                    self._renew(out.token)
                if isinstance(found, str):
                    out.unreadable.append(found)
                elif found is not None:
                    hits.append(found)
        return hits

    def _delivered(self, hits: list[tuple[str, dict[str, Any], Ids, Ids]], out: Scan
                   ) -> list[tuple[str, dict[str, Any], Ids, Ids]]:
        """The hits whose IDs may have left: not refunded (policy.may_have_left)."""
        if not hits:
            return hits
        with failing_closed():
            roots = self.client.hmget(keys.ENTITIES, [str(m.get("entity") or "")
                                                      for _n, m, _p, _u in hits])
            pipe = self.client.pipeline(transaction=False)
            for (_n, meta, _p, _u), root in zip(hits, roots, strict=True):
                pipe.hget(keys.share(text(root or meta.get("entity") or "-"),
                                     str(meta.get("delivery"))), "status")
            states = [text(s) if s is not None else None for s in pipe.execute()]
        kept = []
        for hit, root, state in zip(hits, roots, states, strict=True):
            meta = hit[1]
            if state is None:  # the share record lived its lifetime: its settle record says
                state = self._settled(str(meta.get("delivery")), int(meta.get("at_ms") or 0),
                                      {text(root or ""), str(meta.get("entity") or "")})
            if policy.may_have_left(state):
                kept.append(hit)
            else:
                out.refunded += 1
        return kept

    def _settled(self, delivery: str, at_ms: int, roots: set[str]) -> str | None:
        """How a delivery's reservation ended, from its pool's audit stream (the record that
        names it after its delivery time); None when not found within AUDIT_LOOKUP records."""
        ends = ("delivered", "refunded", "abandoned", "recounted")
        with failing_closed():
            for root in sorted(r for r in roots if r):
                start, seen = f"{at_ms}-0", 0
                while seen < AUDIT_LOOKUP:
                    batch: Any = self.client.xrange(keys.audit(root), start, "+", count=1000)
                    for _ident, fields in batch:
                        rec = {text(k): text(v) for k, v in (fields or {}).items()}
                        if delivery in (rec.get("share_id"), rec.get("request_id")) \
                                and rec.get("outcome") in ends:
                            return rec["outcome"]
                    if len(batch) < 1000:
                        break
                    seen += len(batch)
                    start = "(" + text(batch[-1][0])
        return None

    def _make(self, hits: list[tuple[str, dict[str, Any], Ids, Ids]], ingested_ms: int,
              digest: str, sources: tuple[str, ...]) -> list[tuple[dict[str, Any], str, str]]:
        """Each recipient's notice (its hash fields) with its ID file written."""
        grouped: dict[tuple[str, str], list[tuple[str, dict[str, Any], Ids, Ids]]] = {}
        for hit in hits:
            who = policy.recipient_of(hit[1])
            if who is not None:
                grouped.setdefault(who, []).append(hit)
        now_ms = self.gate.clock.now_ms()
        month = f"{datetime.fromtimestamp(now_ms / 1000, UTC):%Y-%m}"
        made = []
        for (kind, name), group in sorted(grouped.items()):
            ident = hashlib.sha256(f"{digest}|{kind}|{name}".encode()).hexdigest()[:32]
            group.sort(key=lambda h: (int(h[1].get("at_ms") or 0), h[0]))
            deliveries = [Delivery(str(m.get("delivery")), str(m.get("channel") or ""),
                                   str(m.get("kind") or ""), int(m.get("at_ms") or 0),
                                   str(m["file"]) if m.get("file") else None,
                                   int(p.size), int(u.size)) for _n, m, p, u in group]
            file = f"{month}/{ident}"
            self.files.write(file, encode_ids({d.delivery: (p, u) for d, (_n, _m, p, u)
                                               in zip(deliveries, group, strict=True)}))
            entity = str(group[0][1].get("entity") or name)
            fields = {
                "id": ident, "recipient_kind": kind, "recipient": name, "entity": entity,
                "opened_ms": now_ms, "deadline_ms": policy.deadline(ingested_ms),
                "deliveries": json.dumps([asdict(d) for d in deliveries]),
                "posts": int(_union([p for _n, _m, p, _u in group]).size),
                "users": int(_union([u for _n, _m, _p, u in group]).size),
                "state": "open", "sources": json.dumps(list(sources)), "file": file}
            made.append((fields, kind, name))
        return made

    def _commit(self, made: list[tuple[dict[str, Any], str, str]],
                ingests: list[tuple[str, int]], out: Scan, actor: str, channel: str,
                ingested_ms: int) -> None:
        """Every notice of the batch, with its audit record, and the batch gone: one
        transaction, so a crash before it leaves the batch for the next scan, and after it
        nothing to do again."""
        with failing_closed(), self.client.pipeline(transaction=True) as pipe:
            pipe.watch(keys.NOTICES_LOCK, keys.NOTICES_ALL)
            if text(pipe.get(keys.NOTICES_LOCK) or b"") != out.token:
                raise Conflict("the notice scan's lock lapsed (another scan took over and "
                               "opens these notices)", rule="R9")
            first = not pipe.exists(keys.NOTICES_ALL)  # no notice yet: the indexes are whole
            pipe.multi()
            if first and made:
                pipe.set(keys.NOTICES_INDEXED, 1)
            for fields, kind, name in made:
                ident = fields["id"]
                pipe.hset(keys.notice(ident), mapping=cast(Any, fields))
                pipe.zadd(keys.NOTICES_OPEN, {ident: fields["deadline_ms"]})
                pipe.zadd(keys.NOTICES_ALL, {ident: fields["opened_ms"]})
                pipe.zadd(keys.notices_of(kind, name), {ident: fields["opened_ms"]})
                pipe.zadd(keys.notices_open_of(kind, name), {ident: fields["opened_ms"]})
                n = len(json.loads(fields["deliveries"]))
                ids = fields["posts"] + fields["users"]
                chain.append(pipe, keys.SYS_AUDIT, {
                    "time": fields["opened_ms"], "actor": actor, "channel": channel,
                    "entity": fields["entity"], "recipient": name,
                    "kind": "notices.open", "outcome": "changed", "rule": "R9",
                    "requested": ids, "request_id": ident,
                    "message": f"deletion notice {ident} opened to {kind} {name}: "
                               f"{ids:,} ID(s) in {n:,} deliver{'y' if n == 1 else 'ies'} "
                               f"to delete by {iso(policy.deadline(ingested_ms))} "
                               f"(R9: 24 hours from the ingest)"},
                    at_ms=self.gate.clock.fixed_ms)
            for kind in KINDS:
                pipe.delete(keys.notices_batch(kind))
            if ingests:
                pipe.zrem(keys.NOTICES_INGESTS, *(m for m, _a in ingests))
            try:
                pipe.execute()
            except redis.WatchError:
                raise Conflict("the notice scan's lock changed hands before it committed "
                               "(the other scan opens these notices)", rule="R9") from None
        out.opened += [self.get(fields["id"]) for fields, _k, _n in made]


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _valid(notice_id: str) -> bool:
    return len(notice_id) == 32 and all(c in "0123456789abcdef" for c in notice_id)


def _notice(raw: dict[str, str]) -> Notice:
    return Notice(
        id=raw["id"], recipient_kind=raw["recipient_kind"], recipient=raw["recipient"],
        entity=raw.get("entity", ""), opened_ms=int(raw["opened_ms"]),
        deadline_ms=int(raw["deadline_ms"]),
        deliveries=tuple(Delivery(**d) for d in json.loads(raw["deliveries"])),
        posts=int(raw["posts"]), users=int(raw["users"]), state=raw["state"],
        sources=tuple(json.loads(raw.get("sources") or "[]")),
        acked_by=raw.get("acked_by") or None,
        acked_ms=int(raw["acked_ms"]) if raw.get("acked_ms") else None,
        acked_note=raw.get("acked_note") or None, acked_actor=raw.get("acked_actor") or None,
        file=raw.get("file", ""))


def _facts(raw: list[str | None]) -> NoticeFacts:
    f = dict(zip(FACTS, raw, strict=True))
    return NoticeFacts(
        id=f["id"] or "", recipient_kind=f["recipient_kind"] or "",
        recipient=f["recipient"] or "", entity=f["entity"] or "",
        opened_ms=int(f["opened_ms"] or 0), deadline_ms=int(f["deadline_ms"] or 0),
        ids=int(f["posts"] or 0) + int(f["users"] or 0),
        acked_ms=int(f["acked_ms"]) if f["acked_ms"] else None, acked_by=f["acked_by"] or None)


def _write_ids(ids: Ids, fh: IO[bytes]) -> None:
    fh.writelines(id_lines(ids))


def id_lines(ids: Ids) -> Iterator[bytes]:
    """An ID file's lines (SPEC: one decimal ID per line, nothing else)."""
    step = 1 << 16
    for at in range(0, ids.size, step):
        yield "".join(f"{i}\n" for i in ids[at:at + step].tolist()).encode()
