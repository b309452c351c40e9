"""Hydrated exports (R5-R9): a person's spreadsheet or PDF, counted before it is written.

Only the web form calls this, with a session and a single-use ticket (R5). The order keeps the
ledger exact and nothing public (R7): count the selection, reserve it (R6 per recipient and, by
default, R2 for the entity), write the file into an anonymous spool (no path ever names it),
commit, and hand the open file to the response. If writing fails first, the reservation is
refunded; if the store fails before the commit, nothing is sent and the refund follows as soon
as the store answers (gatekeeper.ledger.pending).
"""

from __future__ import annotations

import contextlib
import json
import secrets
import uuid
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import IO, Any

from exports.columns import REFERENCED, referenced_rows, whole
from gatekeeper import faults
from gatekeeper.domain import spool
from gatekeeper.domain.audit import record_denial
from gatekeeper.domain.deletions import Deleted
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.manifests import Collector
from gatekeeper.domain.users import User
from gatekeeper.ledger import charges, keys
from gatekeeper.ledger.layout import index_pool_key
from gatekeeper.ledger.ledger import iso
from gatekeeper.ledger.reservation import Reservation
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import policy
from gatekeeper.rules.errors import (
    BadInput,
    Forbidden,
    GatekeeperError,
    InsufficientStorage,
    PoolMoved,
    StoreUnavailable,
)

FORMATS = {"xlsx": ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
                    ".xlsx"),
           "pdf": ("application/pdf", ".pdf")}
TICKET_TTL_S = 600  # an export ticket lasts ten minutes
NOTICE = ("Received under X's Developer Policy by a person who agreed to X's Terms of Service, "
          "Privacy Policy, Developer Agreement and Developer Policy (R8). Do not make this file "
          "or its content publicly available (R7). Content deleted, protected, suspended or "
          "withheld on X must be deleted within 24 hours of a request (R9).")


# --- tickets (R5: only the page's own form, once) -----------------------------------------------


def issue_ticket(gate: Gate, user: User) -> str:
    """A single-use export ticket for the form the user is looking at."""
    ticket = secrets.token_urlsafe(24)
    key = keys.ticket(user.root, ticket)
    with failing_closed():
        pipe = gate.client.pipeline()  # the ticket and its pool's index entry, together
        pipe.set(key, user.name, ex=TICKET_TTL_S)
        index_pool_key(pipe, key, TICKET_TTL_S)
        pipe.execute()
    return ticket


def redeem_ticket(gate: Gate, user: User, ticket: str | None) -> None:
    """Consume the ticket atomically; refuse (R5) a missing, expired, replayed or foreign one."""
    owner = None
    if ticket:
        with failing_closed():
            owner = gate.client.getdel(keys.ticket(user.root, ticket))
    if owner is None or text(owner) != user.name:
        why = "no export ticket" if not ticket else "the export ticket was already used or expired"
        raise Forbidden(f"R5: {why}; exports start from the export page's own form, once per "
                        "click — reload the page and export again", rule="R5")


# --- selection ----------------------------------------------------------------------------------


@dataclass
class Tally:
    """What a pass over a selection found: posts, distinct authors, duplicates left out."""

    posts: int = 0
    authors: Mapping[str, dict[str, Any]] = field(default_factory=dict)
    duplicates: int = 0


@dataclass(frozen=True)
class Selection:
    """Which posts an export holds: dataset, filters, R9 list, and at most `limit` of them;
    retweets whole (twarc-csv's default) or as they are, and the posts they reference as rows
    of their own on request — rows like any other: counted (R6), checked (R9), limited."""

    dataset: str
    filters: Filters
    deleted: Deleted
    limit: int | None = None  # "export the first N that fit"
    whole_retweets: bool = True
    referenced: bool = False

    def posts(self, gate: Gate, tally: Tally | None = None) -> Iterator[dict[str, Any]]:
        """The posts to write, in file order. A post the dataset holds again (collections
        that overlap) leaves once, as first found, and counts in `tally.duplicates`.

        The dataset's index says which rows leave (`Datasets.count`); only their lines of the
        JSONL are read (`Datasets.fetch`)."""
        import numpy as np  # here: a command that reads no dataset loads no numpy

        counted = gate.datasets.count(self.dataset, self.filters, self.deleted,
                                      limit=self.limit, referenced=self.referenced)
        if tally is not None:
            tally.duplicates += counted.duplicates
        rows, refs = counted.rows, counted.refs
        fetched = gate.datasets.fetch(self.dataset, np.unique(rows).tolist())
        with contextlib.closing(fetched):
            at, post = -1, None
            for row, ref in zip(rows.tolist(), refs.tolist(), strict=True):
                while at != row:
                    at, post = next(fetched)
                assert post is not None
                one = post if ref < 0 else referenced_rows(post)[ref]
                # R9: hidden posts never leave (the index left them out); scrub_geo'd ones
                # leave without their geo, removed here, before any writer in exports/ sees it.
                cleaned = self.deleted.cleaned(whole(one) if self.whole_retweets else one)
                if cleaned is not None:
                    yield cleaned

    def options(self) -> dict[str, str]:
        """The export options in words, for the file's About block and the audit record."""
        return {
            "retweets": "whole: the original's text, entities and metrics, with the retweet's "
                        "own id, author and time" if self.whole_retweets
                        else "as they are: the retweet's own text and metrics",
            "referenced posts": f"added as rows of their own, marked in the {REFERENCED} "
                                "column, counted like any row" if self.referenced
                                else "not added"}

    def options_in_brief(self) -> str:
        """The export options for the audit record (R11)."""
        return ("retweets whole" if self.whole_retweets else "retweets as they are") + \
            "; referenced posts " + ("added" if self.referenced else "not added")

    def count(self, gate: Gate, with_users: bool) -> tuple[int, list[dict[str, Any]]]:
        """Posts selected, and their distinct authors when a Users sheet is wanted."""
        tally = self.tally(gate, with_users)
        return tally.posts, list(tally.authors.values())

    def tally(self, gate: Gate, with_users: bool) -> Tally:
        """`count`, with the duplicates left out: from the dataset's index alone (the authors'
        records, for a Users sheet, are read from the JSONL only when asked for)."""
        counted = gate.datasets.count(self.dataset, self.filters, self.deleted,
                                      limit=self.limit, referenced=self.referenced,
                                      with_users=with_users, rows=False)
        return Tally(counted.posts, _Authors(gate, self.dataset, counted),
                     counted.duplicates)


class _Authors(Mapping[str, dict[str, Any]]):
    """A selection's distinct authors by User ID, in first-seen order; their records are read
    from the posts they were first met in, once, when first asked for."""

    def __init__(self, gate: Gate, dataset: str, counted: Any) -> None:
        self._gate, self._dataset, self._counted = gate, dataset, counted
        self._records: dict[str, dict[str, Any]] | None = None

    def _load(self) -> dict[str, dict[str, Any]]:
        if self._records is None:
            found = self._counted.authors
            posts = dict(self._gate.datasets.fetch(
                self._dataset, sorted({row for _, row, _ in found})))
            records = {}
            for _, row, ref in found:
                post = posts[row]
                author = (post if ref < 0 else referenced_rows(post)[ref]).get("author") or {}
                records[author["id"]] = author
            self._records = records
        return self._records

    def __len__(self) -> int:
        return len(self._counted.author_keys)

    def __iter__(self) -> Iterator[str]:
        return iter(self._load())

    def __getitem__(self, key: str) -> dict[str, Any]:
        return self._load()[key]


def preview(gate: Gate, user: User, selection: Selection, with_users: bool) -> dict[str, Any]:
    """What the form shows before a click: matches, allowance, and when more frees up."""
    tally = selection.tally(gate, with_users)
    posts, authors = tally.posts, tally.authors
    counters = _counters(gate, user, posts, len(authors))
    _now, states = gate.ledger.peek(counters)
    fits = all(s.limit is None or s.used + c.amount <= s.limit
               for s, c in zip(states, counters, strict=True))
    r6 = states[0]
    return {"posts": posts, "users": len(authors), "objects": posts + len(authors),
            "duplicates": tally.duplicates,
            "remaining": r6.remaining, "limit": r6.limit, "used": r6.used,
            "window": counters[0].window.name, "fits": fits,
            "next_release": iso(r6.releases[0][0]) if r6.releases else None,
            "r2_remaining": states[1].remaining if len(states) > 1 else None}


def _counters(gate: Gate, user: User, posts: int, users: int) -> list[Any]:
    entity = gate.entities.get(user.entity)
    root = gate.entities.pool_root(entity)
    return charges.export_counters(user, entity, root, posts, users, gate.config.limits)


# --- the export ---------------------------------------------------------------------------------


@dataclass
class Export:
    """A written, counted export ready to stream; its file has no path any more (R7)."""

    file: IO[bytes]
    size: int
    filename: str
    mimetype: str
    share_id: str
    posts: int
    users: int

    def chunks(self, size: int = 1 << 16) -> Iterator[bytes]:
        """The file's bytes; the response closes the file (call_on_close) however it ends."""
        sent = 0
        while chunk := self.file.read(size):
            if sent == 1:
                faults.point("export.streaming")
            sent += 1
            yield chunk


def export(gate: Gate, user: User, selection: Selection, *, fmt: str, with_users: bool,
           channel: str, progress: Callable[[int, int], None] | None = None) -> Export:
    """Count and write a hydrated export for `user`; QuotaExceeded counts nothing.
    `progress(written, total)` hears of each post row the writer takes (it bounds itself)."""
    if fmt not in FORMATS:
        raise BadInput(f"format must be xlsx or pdf, not {fmt!r}")
    request_id = uuid.uuid4().hex
    audit = {"actor": user.name, "entity": user.entity, "recipient": user.name,
             "channel": channel, "kind": f"export.{fmt}", "request_id": request_id,
             "dataset": selection.dataset,
             "filters": json.dumps(selection.filters.to_dict(), sort_keys=True)
             if not selection.filters.is_empty else None,
             "options": selection.options_in_brief()}
    try:
        policy.check_hydrated_export(user, channel)
    except GatekeeperError as refusal:
        record_denial(gate.ledger, user.root, refusal, {k: v for k, v in audit.items() if v})
        raise
    tally = selection.tally(gate, with_users)
    posts, authors = tally.posts, list(tally.authors.values())
    audit["duplicates"] = str(tally.duplicates) if tally.duplicates else None
    if posts == 0:
        raise BadInput("no posts match this selection; nothing was exported or counted")
    for attempt in (1, 2):
        counters = _counters(gate, user, posts, len(authors))
        try:
            grant = gate.ledger.take(user.root, counters, requested=posts + len(authors),
                                     share_id=request_id,
                                     audit={k: v for k, v in audit.items() if v})
            break
        except PoolMoved:
            if attempt == 2:
                raise
            user = gate.users.get(user.name)  # R10: the user's entity joined another pool
    res = Reservation(gate.ledger, user.root, user.entity, f"export.{fmt}", grant, counters,
                      None, audit, pending_dir=gate.pending_dir)
    mimetype, suffix = FORMATS[fmt]
    stamp = iso(grant.now_ms).replace(":", "").replace("-", "")[:15]
    filename = f"{selection.dataset}-{user.name}-{stamp}{suffix}"
    about = {"recipient": user.name, "entity": user.entity, "exported_at": iso(grant.now_ms),
             "dataset": selection.dataset, "filters": selection.filters.to_dict() or "none",
             "posts": str(posts), "duplicates dropped": str(tally.duplicates),
             **selection.options(), "export_id": grant.share_id,
             "notice": NOTICE}
    # R7: the file has no name from its first byte (O_TMPFILE), so neither a crash nor an
    # error can leave hydrated content on disk; the response reads and closes the handle.
    # Everything from here to the commit is refunded if it fails — creating the spool too
    # (a full or missing TMPDIR), and the store stopping while the posts are read.
    handle: IO[bytes] | None = None
    try:
        handle = spool.anonymous()
        faults.point("export.reserved")
        held = Collector()  # what the file holds, for its manifest (issue 15)
        rows = iter(held.watch(selection.posts(gate), selection.whole_retweets))
        if progress is not None:
            rows = _reporting(rows, posts, progress)
        _write(fmt, _failing_midway(rows), handle, about,
               authors if with_users else None, selection.referenced)
        handle.flush()
        size = handle.tell()
        handle.seek(0)
        for author in authors if with_users else ():
            held.add(author)  # a Users sheet row: its id is the User ID
        ref = gate.manifests.write(grant.share_id, grant.now_ms, held.posts, held.users,
                                   {**{k: audit[k] for k in ("recipient", "entity", "channel",
                                                             "kind", "actor")},
                                    "file": filename})  # named in its deletion notices
        audit.update(ref.audit())
        faults.point("manifest.written")
    except BaseException as exc:
        if handle is not None:
            handle.close()
        res.refund()
        if isinstance(exc, InsufficientStorage):  # the manifest could not be stored
            raise InsufficientStorage(f"{exc}; {res.refund_words()}", rule="R7") from exc
        if isinstance(exc, OSError):
            raise InsufficientStorage(
                f"the export could not be written ({exc.strerror or exc}); "
                f"{res.refund_words()}", rule="R7") from exc
        if isinstance(exc, StoreUnavailable):
            raise StoreUnavailable(f"the store stopped answering while the export was being "
                                   f"written: {res.refund_words()}", rule=counters[0].rule,
                                   share_id=grant.share_id, delivered=False) from exc
        raise
    faults.point("export.written")
    try:
        res.commit_before_sending()
        faults.point("export.committed")
    except BaseException:
        handle.close()
        raise
    return Export(handle, size, filename, mimetype, grant.share_id, posts, len(authors))


def _failing_midway(posts: Iterator[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for i, post in enumerate(posts):
        if i == 100:
            faults.point("export.writing")
        yield post


def _reporting(posts: Iterator[dict[str, Any]], total: int,
               progress: Callable[[int, int], None]) -> Iterator[dict[str, Any]]:
    progress(0, total)
    for i, post in enumerate(posts, 1):
        yield post
        progress(i, total)  # the writer asked for the next row: row i is written


def _write(fmt: str, posts: Iterator[dict[str, Any]], out: IO[bytes], about: dict[str, Any],
           users: list[dict[str, Any]] | None, referenced: bool = False) -> int:
    if fmt == "xlsx":
        from exports.xlsx import write_xlsx

        return write_xlsx(posts, out, about=about, users=users, referenced=referenced)
    from exports.pdf import write_pdf

    return write_pdf(posts, out, about=about)
