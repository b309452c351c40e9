"""R9: content deleted, protected, suspended or withheld on X never leaves again.

A deletion list — plain IDs, or the JSONL that X's batch-compliance jobs return — is validated
whole, then added in one Redis transaction together with its audit record. From that moment
every share and export drops the listed posts and every post by a listed user. Each process
keeps the lists in memory and reloads them when their version number changes, so checking a
1.5M-ID share costs one GET.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import redis

from gatekeeper import keys
from gatekeeper.errors import BadInput
from gatekeeper.formats import is_id
from gatekeeper.lines import MAX_LINE_BYTES
from gatekeeper.lines import read as read_lines
from gatekeeper.store import failing_closed

KINDS = ("posts", "users")
BATCH = 10_000
MAX_REPORTED = 1000


@dataclass(frozen=True)
class Deleted:
    """The deletion lists as of one version."""

    version: int
    posts: frozenset[int]
    users: frozenset[int]

    def hides(self, post: dict[str, Any]) -> bool:
        """Whether a post may not leave: it, or its author, is on a deletion list."""
        try:
            if int(post["id"]) in self.posts:
                return True
            author = post.get("author_id")
            return author is not None and int(author) in self.users
        except (KeyError, TypeError, ValueError):
            return True  # a post we cannot identify cannot be shown to be allowed


@dataclass
class Ingest:
    """What one ingest added and what it affects."""

    kind: str
    listed: int = 0
    new: int = 0
    reasons: dict[str, int] = field(default_factory=dict)
    datasets: dict[str, int] = field(default_factory=dict)  # dataset -> stored posts affected

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "listed": self.listed, "new": self.new,
                "reasons": self.reasons, "datasets": self.datasets}


def infer_kind(name: str) -> str | None:
    """posts or users from a compliance file's name (X names them tweets_…/users_…)."""
    lower = name.lower()
    if "user" in lower:
        return "users"
    if "tweet" in lower or "post" in lower:
        return "posts"
    return None


def parse(lines: Iterable[bytes], source: str) -> tuple[list[int], dict[str, int]]:
    """IDs and reason counts from plain ID lines or batch-compliance JSONL; all-or-nothing."""
    ids: list[int] = []
    reasons: dict[str, int] = {}
    problems: list[dict[str, Any]] = []
    bad = 0
    for number, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line:
            continue
        value: bytes | str | None = line
        reason = "listed"
        if line.startswith(b"{"):
            try:
                obj = orjson.loads(line)
                value, reason = obj.get("id"), str(obj.get("reason") or obj.get("action")
                                                   or "listed")
            except (orjson.JSONDecodeError, AttributeError):
                value = None
            value = value.encode() if isinstance(value, str) else None
        if value is not None and is_id(value):
            ids.append(int(value))
            reasons[reason] = reasons.get(reason, 0) + 1
            continue
        bad += 1
        if len(problems) < MAX_REPORTED:
            problems.append({"line": number, "message":
                             f"{line[:60].decode('utf-8', 'replace')!r} is neither an ID nor a "
                             "batch-compliance record with a decimal \"id\""})
    if bad:
        raise BadInput(f"{source}: {bad:,} invalid line(s), e.g. line {problems[0]['line']}: "
                       f"{problems[0]['message']}; nothing was ingested",
                       rule="R9", details=problems, invalid_lines=bad)
    return ids, reasons


class Deletions:
    """The R9 deletion lists in Redis, cached per process by version."""

    def __init__(self, client: redis.Redis, max_line_bytes: int = MAX_LINE_BYTES) -> None:
        self.client = client
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
                    pipe.smembers(keys.deleted("posts"))
                    pipe.smembers(keys.deleted("users"))
                    v, posts, users = pipe.execute()
                    self._cache = Deleted(int(v or 0), frozenset(map(int, posts)),
                                          frozenset(map(int, users)))
                return self._cache

    def add(self, lines: Iterable[bytes], *, kind: str, source: str, actor: str,
            channel: str) -> Ingest:
        """Validate a deletion list (its lines, as `gatekeeper.lines` reads them) and add it
        with its audit record in one transaction."""
        if kind not in KINDS:
            raise BadInput(f"deletion kind must be posts or users, not {kind!r}", rule="R9")
        ids, reasons = parse(lines, source)
        report = Ingest(kind=kind, listed=len(ids), reasons=reasons)
        with failing_closed():
            seconds, micros = self.client.time()
            before = self.client.scard(keys.deleted(kind))
            pipe = self.client.pipeline(transaction=True)
            for i in range(0, len(ids), BATCH):
                pipe.sadd(keys.deleted(kind), *ids[i:i + BATCH])
            pipe.incr(keys.DELETED_VERSION)
            pipe.scard(keys.deleted(kind))
            pipe.xadd(keys.SYS_AUDIT, {
                "time": seconds * 1000 + micros // 1000, "actor": actor, "channel": channel,
                "kind": f"deletions.{kind}", "outcome": "ingested", "rule": "R9",
                "requested": len(ids), "message": f"{source}: {len(ids):,} {kind} listed "
                f"({', '.join(f'{k}: {v:,}' for k, v in sorted(reasons.items()))})"})
            *_, after, _audit_id = pipe.execute()
        report.new = int(after) - int(before)
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
