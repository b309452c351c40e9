"""ID shares (R1, R2, R8, R9, R10): authorise, select, reserve, deliver — in that order.

- authorise: the policy decides whether this actor may share with this entity (refusals are
  audited and count nothing);
- select: the IDs — an uploaded list validated whole (every bad line reported, nothing counted)
  or a dataset selection — minus everything on the R9 deletion lists, spooled to a private
  temporary file so memory stays flat whatever the size;
- reserve: the ledger checks and reserves atomically (refused whole, or exactly the remaining
  allowance when partial was asked for);
- deliver: write the file (CLI: beside --out, renamed into place) or stream the response (API),
  then commit; if writing fails first, the reservation is refunded.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import tempfile
import uuid
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper import policy
from gatekeeper.audit import record_denial
from gatekeeper.deletions import Deleted
from gatekeeper.entities import Entity
from gatekeeper.errors import BadInput, GatekeeperError, PoolMoved
from gatekeeper.formats import is_id
from gatekeeper.ledger import Counter, Grant, Idempotency, Ledger
from gatekeeper.users import User

MAX_REPORTED = 1000  # bad lines listed in full; past this only counted
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


class Selection:
    """IDs ready to share: validated, R9-filtered, spooled to a private temporary file."""

    def __init__(self, source: str) -> None:
        fd, name = tempfile.mkstemp(prefix="gatekeeper-ids-", suffix=".txt")  # mode 0600
        self.path = Path(name)
        self._fh = os.fdopen(fd, "wb", buffering=1 << 20)
        self.source = source
        self.count = 0
        self.removed = 0  # dropped by R9
        self._digest = hashlib.sha256()

    def add(self, ident: bytes) -> None:
        self._fh.write(ident + b"\n")
        self._digest.update(ident + b"\n")
        self.count += 1

    def drop(self, ident: bytes) -> None:
        """Leave out an ID on a deletion list (R9). It still names the request: a retry
        after a new deletion list is the same request, not a different one."""
        self._digest.update(ident + b"\n")
        self.removed += 1

    def seal(self) -> Selection:
        self._fh.close()
        return self

    @property
    def digest(self) -> str:
        return self._digest.hexdigest()

    def head(self, n: int, chunk: int = 1 << 16) -> Iterator[bytes]:
        """The first `n` IDs as newline-terminated byte chunks."""
        with open(self.path, "rb") as fh:
            left = n
            while left > 0:
                lines = fh.readlines(chunk)
                if not lines:
                    return
                lines = lines[:left]
                left -= len(lines)
                yield b"".join(lines)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._fh.close()
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()

    def __enter__(self) -> Selection:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def select_ids(lines: Iterable[bytes], source: str, kind: str, deleted: Deleted) -> Selection:
    """Validate an ID list (one decimal ID per line, blank lines ignored) and drop R9 IDs.

    Every bad line is reported with its number (BadInput.details["details"]); nothing is
    selected unless the whole list is valid.
    """
    hidden = deleted.posts if kind == "posts" else deleted.users
    problems: list[dict[str, Any]] = []
    bad = 0
    sel = Selection(source)
    try:
        for number, raw in enumerate(lines, start=1):
            line = raw.strip()
            if not line:
                continue
            if is_id(line):
                if bad:
                    continue  # the list is already refused: only collect the problems
                if hidden and int(line) in hidden:
                    sel.drop(line)
                else:
                    sel.add(line)
                continue
            bad += 1
            if len(problems) < MAX_REPORTED:
                shown = line[:40].decode("utf-8", "replace")
                problems.append({"line": number, "message":
                                 f"{shown!r} is not a Post/User ID (a positive decimal integer "
                                 "below 2^63)"})
        if bad:
            more = f" (first {MAX_REPORTED} listed)" if bad > len(problems) else ""
            first = problems[0]
            raise BadInput(
                f"{source}: {bad:,} invalid line(s){more}, e.g. line {first['line']}: "
                f"{first['message']}; nothing was counted",
                details=problems, invalid_lines=bad,
            )
        return sel.seal()
    except BaseException:
        sel.close()
        raise


def select_id_file(path: Path, kind: str, deleted: Deleted) -> Selection:
    """select_ids over a file, with a clear error when it cannot be read."""
    try:
        with open(path, "rb") as fh:
            return select_ids(fh, str(path), kind, deleted)
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the ID file ({exc.strerror})") from None


def select_from_dataset(gate: Any, dataset: str, filters: Any, kind: str,
                        deleted: Deleted) -> Selection:
    """Dehydrate a dataset selection: its Post IDs, or its distinct author User IDs (R9-free).

    R9 decides on each post's light record (its ID, author, and what it retweets), read
    without building posts; with nothing listed, references are not even read.
    """
    sel = Selection(f"dataset {dataset}")
    try:
        if kind == "users":
            for author in gate.datasets.author_ids(dataset, filters):
                if deleted.hides_user(author):
                    sel.drop(author.encode())
                else:
                    sel.add(author.encode())
        else:
            for light in gate.datasets.light(dataset, filters, retweets=deleted.listed):
                if deleted.hides_light(light):
                    sel.drop(light[0].encode())
                else:
                    sel.add(light[0].encode())
        return sel.seal()
    except BaseException:
        sel.close()
        raise


@dataclass
class Reservation:
    """A share the ledger granted and that now has to be delivered (or refunded)."""

    ledger: Ledger
    root: str
    entity: str
    kind: str
    grant: Grant
    counters: list[Counter]
    idempotency: Idempotency | None
    audit: dict[str, Any]
    removed: int = 0
    settled: str | None = field(default=None)

    def deliverable(self, selection: Selection) -> int:
        """How many of the selection's IDs leave: the grant — or, for a replay after a new
        deletion list, fewer (R9 wins; the first delivery stays counted as it was)."""
        return min(self.grant.granted, selection.count)

    @property
    def window_days(self) -> int:
        return self.counters[0].window.length_ms // 86_400_000

    def commit(self) -> None:
        self.settled = self.ledger.settle(self.root, self.grant.share_id, self.counters,
                                          delivered=True, audit=self._settle_audit())

    def refund(self) -> None:
        """Give the reservation back (a replayed grant belongs to its first delivery)."""
        if self.grant.status == "replay":
            return
        with contextlib.suppress(GatekeeperError):
            self.settled = self.ledger.settle(self.root, self.grant.share_id, self.counters,
                                              delivered=False, audit=self._settle_audit(),
                                              idempotency=self.idempotency)

    def deliver(self, write: Callable[[], None]) -> None:
        """Run `write`; commit if it succeeds, refund if it fails."""
        try:
            write()
        except BaseException:
            self.refund()
            raise
        self.commit()

    def _settle_audit(self) -> dict[str, Any]:
        return {k: self.audit[k] for k in ("actor", "entity", "recipient", "channel", "kind",
                                           "request_id") if k in self.audit}

    def to_dict(self) -> dict[str, Any]:
        main = self.grant.counters[0]
        return {
            "share_id": self.grant.share_id, "status": self.grant.status,
            "entity": self.entity, "kind": self.kind, "requested": self.grant.requested,
            "granted": self.grant.granted, "removed_r9": self.removed,
            "quota": {"rule": main.rule, "limit": main.limit, "used": main.used,
                      "remaining": main.remaining, "window": self.counters[0].window.name},
        }


@dataclass(frozen=True)
class Authorised:
    """Who shares with whom, as the policy allowed it."""

    user: User
    target: Entity
    root: Entity
    audit: dict[str, Any]


def authorise(gate: Any, *, actor: User | str, entity: str, kind: str, channel: str,
              purpose: str | None, extra: dict[str, Any] | None = None) -> Authorised:
    """Check the policy for an ID share; a refusal is audited (R11) and counts nothing."""
    if kind not in policy.SHARE_KINDS:
        raise BadInput(f"kind must be one of {', '.join(policy.SHARE_KINDS)}, not {kind!r}")
    user = gate.users.get(actor) if isinstance(actor, str) else actor
    target = gate.entities.get(entity)
    root = gate.entities.get(target.root) if target.root != target.name else target
    audit = {"actor": user.name, "entity": entity, "recipient": entity, "channel": channel,
             "kind": f"share.{kind}", "request_id": uuid.uuid4().hex, "purpose": purpose or "",
             **(extra or {})}
    try:
        policy.check_id_share(user, target)
    except GatekeeperError as refusal:
        record_denial(gate.ledger, target.root, refusal, audit)
        raise
    return Authorised(user, target, root, audit)


def reserve(gate: Any, auth: Authorised, selection: Selection, *, kind: str,
            allow_partial: bool, idempotency_key: str | None,
            request: tuple[Any, ...] = ()) -> Reservation:
    """Count a selection in the ledger: R2 for Post IDs (pooled, R10), recorded for User IDs."""
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise BadInput("an idempotency key is 1-255 printable ASCII characters")
    idempotency = None
    if idempotency_key:
        idempotency = Idempotency.of(auth.user.name, idempotency_key, auth.target.name, kind,
                                     selection.digest, allow_partial, *request)
    audit = {**auth.audit, "removed_r9": selection.removed or None}
    target, root = auth.target, auth.root
    for attempt in (1, 2):
        counters = policy.id_share_counters(target, root, kind, selection.count,
                                            gate.config.limits)
        try:
            grant = gate.ledger.take(target.root, counters, requested=selection.count,
                                     share_id=auth.audit["request_id"], audit=audit,
                                     partial=allow_partial, idempotency=idempotency)
            break
        except PoolMoved:
            if attempt == 2:
                raise
            # R10: the entity joined another pool just now; count in the pool it is in.
            target = gate.entities.get(target.name)
            root = gate.entities.get(target.root)
    return Reservation(gate.ledger, target.root, target.name, kind, grant, counters,
                       idempotency, audit, removed=selection.removed)


def write_file(out: Path, selection: Selection, n: int) -> None:
    """Write the first `n` IDs to `out` via a temporary file renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            # The spool already holds one ID per line: copy bytes, never decode them.
            written = 0
            for chunk in selection.head(n):
                fh.write(chunk)
                written += chunk.count(b"\n")
            if written != n:
                raise OSError(f"{selection.source} changed while it was being shared")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def share_to_file(gate: Any, *, actor: str, entity: str, out: Path, kind: str = "posts",
                  ids_path: Path | None = None, dataset: str | None = None,
                  filters: Any = None, allow_partial: bool = False, purpose: str | None = None,
                  idempotency_key: str | None = None, channel: str = "cli") -> Reservation:
    """The CLI's share: an ID file or a dataset selection in, the granted ID file out."""
    shown = filters.to_dict() if filters is not None and not filters.is_empty else None
    extra = {"dataset": dataset, "filters": json.dumps(shown, sort_keys=True) if shown else None}
    auth = authorise(gate, actor=actor, entity=entity, kind=kind, channel=channel,
                     purpose=purpose, extra={k: v for k, v in extra.items() if v})
    deleted = gate.deletions.current()
    if dataset is not None:
        selection = select_from_dataset(gate, dataset, filters, kind, deleted)
    elif ids_path is not None:
        selection = select_id_file(ids_path, kind, deleted)
    else:
        raise BadInput("give --ids FILE or --dataset NAME")
    with selection:
        res = reserve(gate, auth, selection, kind=kind, allow_partial=allow_partial,
                      idempotency_key=idempotency_key,
                      request=(dataset, extra["filters"], purpose))
        try:
            res.deliver(lambda: write_file(out, selection, res.deliverable(selection)))
        except OSError as exc:
            after = ("the reservation was refunded and nothing was counted"
                     if res.grant.status != "replay" else "the first delivery stays counted")
            raise BadInput(f"{out}: cannot write the ID file ({exc.strerror or exc}); {after}"
                           ) from exc
    return res
