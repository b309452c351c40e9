"""R9 deletion lists in Redis: ingested whole or not at all, lifted one ID at a time.

A deletion list — plain IDs, or the JSONL that X's batch-compliance jobs return — is validated
whole (what each record means is `gatekeeper.rules.r9`'s decision), then added in one Redis
transaction together with its audit record: IDs to hide, IDs whose geo is scrubbed, and the
reversals X reported (recorded, lifting nothing). Each process keeps the lists in memory and
reloads them when their version number changes, so checking a 1.5M-ID share costs one GET.
"""

from __future__ import annotations

import json
import threading
import uuid
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from gatekeeper.domain.formats import is_id
from gatekeeper.domain.lines import MAX_LINE_BYTES
from gatekeeper.domain.lines import read as read_lines
from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.clock import Clock
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import BadInput, NotFound
from gatekeeper.rules.r9 import HIDE, SCRUB, Deleted, UnknownAction, disposition

__all__ = ["KINDS", "Deleted", "Deletions", "Ingest", "Parsed", "infer_kind", "parse"]

KINDS = ("posts", "users")
BATCH = 10_000
MAX_REPORTED = 1000


@dataclass
class Ingest:
    """What one ingest added and what it newly hides."""

    kind: str
    listed: int = 0  # valid records (or ID lines) in the list
    new: int = 0  # IDs this list hides that no list hid before
    scrub_geo: int = 0
    reversed: int = 0  # reversals recorded (they lift nothing)
    reasons: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, int] = field(default_factory=dict)  # dataset -> posts newly hidden
    new_ids: frozenset[int] = field(default_factory=frozenset, repr=False)
    notices: list[str] = field(default_factory=list)  # deletion notices opened (issue 15)
    notices_error: str | None = None  # why none could be opened now (`notices scan` retries)

    def to_dict(self) -> dict[str, Any]:
        out = {"kind": self.kind, "listed": self.listed, "new": self.new,
               "scrub_geo": self.scrub_geo, "reversed": self.reversed,
               "reasons": self.reasons, "datasets": self.datasets, "notices": self.notices}
        if self.notices_error:
            out["notices_error"] = self.notices_error
        return out


@dataclass
class Parsed:
    """A deletion list read whole: IDs by what they ask for."""

    hide: list[int] = field(default_factory=list)
    scrub: list[int] = field(default_factory=list)
    reversals: list[tuple[int, str, str]] = field(default_factory=list)  # id, action, reason
    reasons: dict[str, int] = field(default_factory=dict)

    @property
    def listed(self) -> int:
        return len(self.hide) + len(self.scrub) + len(self.reversals)


def infer_kind(name: str) -> str | None:
    """posts or users from a compliance file's name (X names them tweets_…/users_…)."""
    lower = name.lower()
    if "user" in lower:
        return "users"
    if "tweet" in lower or "post" in lower:
        return "posts"
    return None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else "" if value is None else json.dumps(value)


def parse(lines: Iterable[bytes], source: str) -> Parsed:
    """A plain ID list or batch-compliance JSONL, read whole; all-or-nothing (BadInput)."""
    out = Parsed()
    problems: list[dict[str, Any]] = []
    bad = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        value: Any = line
        action = reason = None
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
                value, action, reason = obj.get("id"), obj.get("action"), obj.get("reason")
            except (orjson.JSONDecodeError, AttributeError):
                value = None
            value = value.encode() if isinstance(value, str) else None
        problem: dict[str, Any] | None = None
        if value is None or not is_id(value):
            problem = {"line": number, "message":
                       f"{line[:60].decode('utf-8', 'replace')!r} is neither an ID nor a "
                       "batch-compliance record with a decimal \"id\""}
        else:
            try:
                meaning = disposition(action, reason)
            except UnknownAction as unknown:
                problem = {"line": number, "field": unknown.field, "value": unknown.value,
                           "message": str(unknown)}
        if problem is not None:
            bad += 1
            if len(problems) < MAX_REPORTED:
                problems.append(problem)
            continue
        if bad:
            continue  # the list is already refused: only collect the problems
        ident = int(value)
        label = _text(reason) or _text(action) or "listed"
        out.reasons[label] = out.reasons.get(label, 0) + 1
        if meaning == HIDE:
            out.hide.append(ident)
        elif meaning == SCRUB:
            out.scrub.append(ident)
        else:
            out.reversals.append((ident, _text(action), _text(reason)))
    if bad:
        first = problems[0]
        more = f" (first {MAX_REPORTED} listed)" if bad > len(problems) else ""
        named = {k: first[k] for k in ("field", "value") if k in first}
        raise BadInput(f"{source}: {bad:,} invalid line(s){more}, e.g. line {first['line']}: "
                       f"{first['message']}; nothing was ingested",
                       rule="R9", details=problems, invalid_lines=bad, file=source,
                       line=first["line"], **named)
    return out


class Deletions:
    """The R9 deletion lists in Redis, cached per process by version."""

    def __init__(self, client: redis.Redis, max_line_bytes: int = MAX_LINE_BYTES,
                 clock: Clock | None = None) -> None:
        self.client = client
        self.clock = clock or Clock(client)
        self.max_line_bytes = max_line_bytes
        self._cache = Deleted(-1, frozenset(), frozenset())
        self._lock = threading.Lock()

    def current(self) -> Deleted:
        """The lists as of now (one GET when nothing changed)."""
        with failing_closed():
            version = int(self.client.get(keys.DELETED_VERSION) or 0)
            if version == self._cache.version:
                return self._cache
            with self._lock:
                if version != self._cache.version:
                    pipe = self.client.pipeline(transaction=True)
                    pipe.get(keys.DELETED_VERSION)
                    for kind in KINDS:
                        pipe.smembers(keys.deleted(kind))
                    for kind in KINDS:
                        pipe.smembers(keys.scrub_geo(kind))
                    v, *sets = pipe.execute()
                    posts, users, geo_posts, geo_users = (frozenset(map(int, m)) for m in sets)
                    self._cache = Deleted(int(v or 0), posts, users, geo_posts, geo_users)
                return self._cache

    def add(self, lines: Iterable[bytes], *, kind: str, source: str, actor: str,
            channel: str) -> Ingest:
        """Validate a deletion list (its lines, as `gatekeeper.domain.lines` reads them) and add it
        with its audit record in one transaction."""
        if kind not in KINDS:
            raise BadInput(f"deletion kind must be posts or users, not {kind!r}", rule="R9")
        parsed = parse(lines, source)
        report = Ingest(kind=kind, listed=parsed.listed, scrub_geo=len(parsed.scrub),
                        reversed=len(parsed.reversals), reasons=parsed.reasons)
        hide, hidden = parsed.hide, keys.deleted(kind)
        with failing_closed():
            now_ms = self.clock.now_ms()
            pipe = self.client.pipeline(transaction=True)
            # Which IDs are new, asked inside the transaction: the report says what *this*
            # list hides, whatever other lists come in at the same time.
            for i in range(0, len(hide), BATCH):
                pipe.smismember(hidden, hide[i:i + BATCH])
            if hide:  # issue 15: what this list newly hides waits for a notice scan
                _pending_notices(pipe, kind, hide, hidden, {
                    "id": uuid.uuid4().hex, "kind": kind, "source": source, "actor": actor},
                    now_ms)
            for i in range(0, len(hide), BATCH):
                pipe.sadd(hidden, *hide[i:i + BATCH])
            for i in range(0, len(parsed.scrub), BATCH):
                pipe.sadd(keys.scrub_geo(kind), *parsed.scrub[i:i + BATCH])
            for i in range(0, len(parsed.reversals), BATCH):
                pipe.hset(keys.reversals(kind), mapping={
                    str(ident): json.dumps({"action": action, "reason": reason,
                                            "source": source, "actor": actor, "at_ms": now_ms})
                    for ident, action, reason in parsed.reversals[i:i + BATCH]})
            pipe.incr(keys.DELETED_VERSION)
            chain.append(pipe, keys.SYS_AUDIT, {
                "time": now_ms, "actor": actor, "channel": channel,
                "kind": f"deletions.{kind}", "outcome": "ingested", "rule": "R9",
                "requested": parsed.listed, "message": _ingest_message(source, kind, parsed)},
                at_ms=self.clock.fixed_ms)
            answers = pipe.execute()
        flags = [f for answer in answers[:-(-len(hide) // BATCH)] for f in answer]
        report.new_ids = frozenset(i for i, known in zip(hide, flags, strict=True) if not known)
        report.new = len(report.new_ids)
        return report

    def add_file(self, path: Path, *, kind: str | None, actor: str, channel: str) -> Ingest:
        """Ingest a deletion file; kind is inferred from X's file names when not given."""
        kind = kind or infer_kind(path.name)
        if kind is None:
            raise BadInput(f"{path}: say whether it lists posts or users (--kind)", rule="R9")
        try:
            with open(path, "rb") as fh:
                return self.add(read_lines(fh.read, str(path), self.max_line_bytes), kind=kind,
                                source=str(path), actor=actor, channel=channel)
        except OSError as exc:
            raise BadInput(f"{path}: cannot read the deletion list ({exc.strerror})",
                           rule="R9") from None

    def lift(self, ident: str, *, kind: str, reason: str, actor: str,
             channel: str) -> dict[str, Any]:
        """Take one ID off a deletion list, with its audit record, in one transaction.

        Only a person decides this (the caller checks the role): X's reversals lift nothing
        by themselves. The ID's recorded reversal, if any, is named in the audit record.
        """
        if kind not in KINDS:
            raise BadInput(f"deletion kind must be posts or users, not {kind!r}", rule="R9",
                           field="kind", value=kind)
        if not is_id(ident.encode()):
            raise BadInput(f"{ident!r} is not a Post/User ID (a positive decimal integer "
                           "below 2^63)", rule="R9", field="id", value=ident)
        reason = reason.strip()
        if not reason:
            raise BadInput("say why the ID is lifted (--reason): it is audited", rule="R9",
                           field="reason", value=reason)
        with failing_closed():
            if not self.client.sismember(keys.deleted(kind), ident):
                raise NotFound(f"{kind[:-1]} ID {ident} is on no R9 deletion list; nothing "
                               "was lifted", rule="R9")
            reversal = self.client.hget(keys.reversals(kind), ident)
            now_ms = self.clock.now_ms()
            said = json.loads(reversal) if reversal else None
            x_said = f" (X reported {said['action'] or said['reason']})" if said else ""
            pipe = self.client.pipeline(transaction=True)
            pipe.srem(keys.deleted(kind), ident)
            pipe.hdel(keys.reversals(kind), ident)
            pipe.incr(keys.DELETED_VERSION)
            chain.append(pipe, keys.SYS_AUDIT, {
                "time": now_ms, "actor": actor, "channel": channel,
                "kind": "deletions.lift", "outcome": "changed", "rule": "R9", "requested": 1,
                "message": f"{kind[:-1]} ID {ident} lifted from the R9 deletion list"
                           f"{x_said}: {reason}"}, at_ms=self.clock.fixed_ms)
            pipe.execute()
        return {"id": ident, "kind": kind, "reason": reason, "lifted_by": actor,
                "reversal": said}


def _pending_notices(pipe: Any, kind: str, hide: list[int], hidden: str,
                     ingest: dict[str, str], now_ms: int) -> None:
    """Queue on the ingest's transaction: the IDs of `hide` not yet in `hidden` join the IDs
    waiting for a notice scan (gatekeeper.domain.notices), and the ingest its list. Decided
    inside the transaction, as the report's count is: a crash right after it commits leaves
    them waiting, never lost."""
    for i in range(0, len(hide), BATCH):
        pipe.sadd(keys.NOTICES_TMP, *hide[i:i + BATCH])
    # execute_command: a cluster pipeline refuses these by name; here every key is in {sys}.
    pipe.execute_command("SDIFFSTORE", keys.NOTICES_TMP, keys.NOTICES_TMP, hidden)
    pipe.execute_command("SUNIONSTORE", keys.notices_pending(kind), keys.notices_pending(kind),
                         keys.NOTICES_TMP)
    pipe.delete(keys.NOTICES_TMP)
    pipe.zadd(keys.NOTICES_INGESTS, {json.dumps(ingest, sort_keys=True): now_ms})


def _ingest_message(source: str, kind: str, parsed: Parsed) -> str:
    why = ", ".join(f"{k}: {v:,}" for k, v in sorted(parsed.reasons.items()))
    parts = [f"{len(parsed.hide):,} hidden"]
    if parsed.scrub:
        parts.append(f"{len(parsed.scrub):,} geo scrubbed")
    if parsed.reversals:
        parts.append(f"{len(parsed.reversals):,} reversal(s) recorded, lifting nothing")
    return f"{source}: {parsed.listed:,} {kind} listed — {'; '.join(parts)} ({why})"
