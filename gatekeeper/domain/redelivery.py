"""R10: Post IDs delivered again to an entity more than 30 days after it first received them
(issue 15 item 5) — a way to keep and analyse content beyond R10's 30 days.

When: right after an ID share of Post IDs is committed (the CLI once its file is named, the API
once its response is sent, by the server's background runner in a heavy slot:
channels/web/background.py) — never on the share's path, nor on a page's. The share's IDs (its
sorted array, or its manifest read back) are compared with the same entity's manifests of
deliveries more than 30 days older, each a sorted array: a binary search of one in the other
(numpy), milliseconds per million IDs. What is found is stored in Redis, one hash field per
re-delivering share (`keys.REDELIVERIES`), so the dashboard reads one key and the monthly report
the same; a share whose entity has no delivery older than 30 days costs two Redis commands.

What counts: a Post ID of the share that the entity (the recipient named by the share, as its
manifest records) received in any delivery more than 30 days before it, each counted once per
re-delivering share; the earlier deliveries involved are listed with the IDs they share with it.
Academic entities doing non-commercial research (exempt, R3) are not flagged: their deliveries are
indexed, not compared. Hydrated exports go to people and are not compared (their R6 day bounds
them). An entity's deliveries are found by its own index (`keys.manifests_of`), written by this
same step: a share made before this step existed, or whose process died between its commit and
this step, is not in it (its manifest is, for trace and notices).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import policy
from gatekeeper.rules.errors import GatekeeperError, NotFound

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.domain.manifests import Ids
    from gatekeeper.ledger.reservation import Reservation

DAY_MS = 86_400_000
AFTER_MS = 30 * DAY_MS  # R10: content may not be kept and analysed longer than 30 days
LOG = logging.getLogger(__name__)
# What a commit answers for a share that left (Reservation.commit): each stays counted.
DELIVERED = ("delivered", "recounted", "already_delivered", "already_abandoned")


@dataclass(frozen=True)
class Finding:
    """One share that re-delivered Post IDs more than 30 days after their first delivery."""

    entity: str
    delivery: str  # its manifest ("YYYY-MM/DELIVERY")
    at_ms: int
    ids: int  # its Post IDs the entity had received more than 30 days before
    delivered: int  # every Post ID of the share
    earlier: list[tuple[str, int, int]]  # (manifest, delivered at ms, IDs in common)

    def to_json(self) -> str:
        return json.dumps({"entity": self.entity, "at_ms": self.at_ms, "ids": self.ids,
                           "delivered": self.delivered, "earlier": self.earlier},
                          separators=(",", ":"))

    @classmethod
    def from_json(cls, delivery: str, raw: str) -> Finding:
        d = json.loads(raw)
        return cls(d["entity"], delivery, int(d["at_ms"]), int(d["ids"]), int(d["delivered"]),
                   [(str(n), int(at), int(k)) for n, at, k in d["earlier"]])


@dataclass
class EntityFlag:
    """An entity's re-deliveries, for the dashboard and the report."""

    entity: str
    findings: list[Finding] = field(default_factory=list)  # oldest first

    @property
    def ids(self) -> int:
        return sum(f.ids for f in self.findings)

    @property
    def first_ms(self) -> int:
        return self.findings[0].at_ms

    @property
    def last_ms(self) -> int:
        return self.findings[-1].at_ms


def after_share(gate: Gate, res: Reservation, ids: Ids | None = None,
                heavy: Callable[[], AbstractContextManager[object]] = nullcontext
                ) -> Finding | None:
    """The check of a committed ID share (`ids`: its Post IDs sorted and unique, if at hand).
    Never raises: the share is delivered whatever happens here; a failure is logged. `heavy`:
    held while older deliveries are read and compared (the server's heavy slot), not for the
    two Redis commands that nearly always find none."""
    if res.grant.status == "replay" or res.kind != "posts" or not res.audit.get("manifest") \
            or res.settled not in DELIVERED:
        return None
    try:
        return check(gate, res.entity, str(res.audit["manifest"]), res.grant.now_ms, ids,
                     heavy)
    except (GatekeeperError, OSError, ValueError) as exc:
        LOG.warning("R10 re-delivery check of %s skipped: %s", res.audit["manifest"], exc)
        return None


def check(gate: Gate, entity: str, name: str, at_ms: int, ids: Ids | None = None,
          heavy: Callable[[], AbstractContextManager[object]] = nullcontext
          ) -> Finding | None:
    """Index the share `name` under `entity`, then compare it with the entity's deliveries
    more than 30 days older (holding `heavy`); the finding, stored, or None."""
    index = keys.manifests_of(entity)
    with failing_closed():
        pipe = gate.client.pipeline(transaction=False)
        pipe.zadd(index, {name: at_ms})
        pipe.zrangebyscore(index, "-inf", f"({at_ms - AFTER_MS}", withscores=True)
        _, older = pipe.execute()
    if not older:
        return None
    if policy.exempt(gate.entities.get(entity)):
        return None
    with heavy():
        return _compare(gate, entity, name, at_ms, ids, index, older)


def _compare(gate: Gate, entity: str, name: str, at_ms: int, ids: Ids | None, index: str,
             older: list[tuple[Any, float]]) -> Finding | None:
    """`check`'s comparison: the share's IDs against each older delivery's (read back)."""
    from gatekeeper.domain import retention

    if ids is None:
        mine = retention.read_kept(gate.manifests, name)
        if mine is None:
            return None
        ids = mine.posts
    import numpy as np

    again = np.zeros(ids.size, dtype=bool)
    earlier: list[tuple[str, int, int]] = []
    gone: list[str] = []
    for raw, score in older:
        old = text(raw)
        try:
            got = retention.read_kept(gate.manifests, old)
        except NotFound:
            got = None
        if got is None:  # swept or refunded meanwhile
            gone.append(old)
            continue
        hit = _members(np, ids, got.posts)
        if hit.any():
            earlier.append((old, int(score), int(hit.sum())))
            again |= hit
    if gone:
        with failing_closed():
            gate.client.zrem(index, *gone)
    if not earlier:
        return None
    found = Finding(entity, name, at_ms, int(again.sum()), int(ids.size), earlier)
    with failing_closed():
        gate.client.hset(keys.REDELIVERIES, name, found.to_json())
    return found


def _members(np: Any, ids: Ids, within: Ids) -> Any:
    """Which of `ids` (sorted) are in `within` (sorted): a binary search of each."""
    if within.size == 0 or ids.size == 0:
        return np.zeros(ids.size, dtype=bool)
    at = np.searchsorted(within, ids)
    np.minimum(at, within.size - 1, out=at)
    return within[at] == ids


def findings(gate: Gate, since_ms: int | None = None,
             until_ms: int | None = None) -> list[Finding]:
    """Every stored finding (one Redis read), or those of shares in [since, until), oldest
    first."""
    with failing_closed():
        raw = gate.client.hgetall(keys.REDELIVERIES)
    return _parsed(raw, since_ms, until_ms)


def _parsed(raw: dict[Any, Any], since_ms: int | None = None,
            until_ms: int | None = None) -> list[Finding]:
    found = [Finding.from_json(text(k), text(v)) for k, v in raw.items()]
    return sorted((f for f in found
                   if (since_ms is None or f.at_ms >= since_ms)
                   and (until_ms is None or f.at_ms < until_ms)),
                  key=lambda f: (f.at_ms, f.delivery))


def flags(gate: Gate, since_ms: int | None = None,
          until_ms: int | None = None) -> list[EntityFlag]:
    """The entities flagged, most Post IDs re-delivered first."""
    with failing_closed():
        raw = gate.client.hgetall(keys.REDELIVERIES)
    return flags_of(raw, since_ms, until_ms)


def flags_of(raw: dict[Any, Any], since_ms: int | None = None,
             until_ms: int | None = None) -> list[EntityFlag]:
    """`flags` from the hash as read (`keys.REDELIVERIES`, in a page's own pipeline)."""
    by: dict[str, EntityFlag] = {}
    for f in _parsed(raw, since_ms, until_ms):
        by.setdefault(f.entity, EntityFlag(f.entity)).findings.append(f)
    return sorted(by.values(), key=lambda e: (-e.ids, e.entity))


def forget_before(gate: Gate, cut_ms: int) -> int:
    """Retention (`store sweep`): findings of shares before `cut_ms` and the entities' index
    entries of deliveries before it go with their manifests; how many findings went."""
    old = [f.delivery for f in findings(gate, until_ms=cut_ms)]
    with failing_closed():
        names = [text(n) for n in gate.client.hkeys(keys.ENTITIES)]
        pipe = gate.client.pipeline(transaction=False)
        for n in names:
            pipe.zremrangebyscore(keys.manifests_of(n), "-inf", f"({cut_ms}")
        if old:
            pipe.hdel(keys.REDELIVERIES, *old)
        pipe.execute()
    return len(old)
