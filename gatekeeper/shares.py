"""ID shares: read an ID list, check it with the policy, count it in the ledger, write the file.

The order is what makes a share safe: validate everything first (a bad line counts nothing),
reserve in the ledger (refused whole, or exactly the remaining allowance when partial was asked
for), write the file beside its destination and rename it into place, and only then commit. If
writing fails, the reservation is refunded and no file is left behind.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import re
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from exports.idfile import write_ids
from gatekeeper import keys, policy
from gatekeeper.errors import BadInput, GatekeeperError
from gatekeeper.ledger import Counter, Grant, Idempotency, Ledger

ID_RE = re.compile(rb"^[1-9][0-9]{0,18}$")
MAX_ID = 2**63 - 1
MAX_REPORTED = 1000  # bad lines listed in full; past this only counted
IDEMPOTENCY_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")


@dataclass(frozen=True)
class IdList:
    """A validated ID file: how many IDs it holds and a digest of its content."""

    path: Path
    count: int
    digest: str

    def __iter__(self) -> Iterator[str]:
        with open(self.path, "rb") as fh:
            for raw in fh:
                line = raw.strip()
                if line:
                    yield line.decode("ascii")


def read_id_file(path: Path) -> IdList:
    """Validate an ID file: one decimal ID per line (blank lines ignored).

    Every bad line is reported with its number in BadInput.details["details"]; nothing is
    counted unless the whole file is valid.
    """
    problems: list[dict[str, Any]] = []
    bad = 0
    count = 0
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as fh:
            for number, raw in enumerate(fh, start=1):
                line = raw.strip()
                if not line:
                    continue
                if ID_RE.match(line) and int(line) <= MAX_ID:
                    count += 1
                    digest.update(line + b"\n")
                    continue
                bad += 1
                if len(problems) < MAX_REPORTED:
                    shown = line[:40].decode("utf-8", "replace")
                    problems.append({"line": number, "message":
                                     f"{shown!r} is not a Post/User ID (a positive decimal "
                                     "integer below 2^63)"})
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the ID file ({exc.strerror})") from None
    if bad:
        more = f" (first {MAX_REPORTED} listed)" if bad > len(problems) else ""
        first = problems[0]
        raise BadInput(
            f"{path}: {bad:,} invalid line(s){more}, e.g. line {first['line']}: "
            f"{first['message']}; nothing was counted",
            details=problems, invalid_lines=bad,
        )
    return IdList(path=path, count=count, digest=digest.hexdigest())


@dataclass(frozen=True)
class ShareResult:
    share_id: str
    status: str  # granted | partial | replay
    entity: str
    kind: str
    requested: int
    granted: int
    out: Path
    counters: list[Any]
    window: str

    def to_dict(self) -> dict[str, Any]:
        main = self.counters[0]
        return {
            "share_id": self.share_id, "status": self.status, "entity": self.entity,
            "kind": self.kind, "requested": self.requested, "granted": self.granted,
            "out": str(self.out),
            "quota": {"rule": main.rule, "limit": main.limit, "used": main.used,
                      "remaining": main.remaining, "window": self.window},
        }


def _atomic_write(out: Path, ids: IdList, limit: int) -> None:
    """Write the first `limit` IDs to `out` via a temporary file renamed into place."""
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=out.parent, prefix=f".{out.name}.", suffix=".part")
    try:
        with os.fdopen(fd, "wb") as fh:
            if write_ids(ids, fh, limit) != limit:
                raise OSError(f"{ids.path} changed while it was being shared")
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, out)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def share_id_file(
    gate: Any,
    *,
    actor: str,
    entity: str,
    ids_path: Path,
    out: Path,
    kind: str = "posts",
    allow_partial: bool = False,
    purpose: str | None = None,
    idempotency_key: str | None = None,
    channel: str = "cli",
) -> ShareResult:
    """Share an ID file with an entity: R1 (IDs only), R2 (counted), R8 (terms), R10 (purpose)."""
    if kind not in policy.SHARE_KINDS:
        raise BadInput(f"--kind must be one of {', '.join(policy.SHARE_KINDS)}, not {kind!r}")
    if idempotency_key is not None and not IDEMPOTENCY_KEY_RE.match(idempotency_key):
        raise BadInput("an idempotency key is 1-255 printable ASCII characters")
    user = gate.users.get(actor)
    target = gate.entities.get(entity)
    root = gate.entities.get(target.root) if target.root != target.name else target
    request_id = uuid.uuid4().hex
    audit = {"actor": actor, "entity": entity, "recipient": entity, "channel": channel,
             "kind": f"share.{kind}", "request_id": request_id, "purpose": purpose or ""}
    try:
        policy.check_id_share(user, target)
    except GatekeeperError as refusal:
        record_denial(gate.ledger, target.root, refusal, audit)
        raise
    ids = read_id_file(ids_path)
    counters = policy.id_share_counters(target, root, kind, ids.count, gate.config.limits)
    idempotency = None
    if idempotency_key:
        idempotency = Idempotency.of(actor, idempotency_key, entity, kind, ids.digest,
                                     allow_partial, purpose)
    grant = gate.ledger.take(target.root, counters, requested=ids.count, share_id=request_id,
                             audit=audit, partial=allow_partial, idempotency=idempotency)
    try:
        deliver(gate.ledger, target.root, grant, counters, idempotency, audit,
                lambda: _atomic_write(out, ids, grant.granted))
    except OSError as exc:
        after = ("the reservation was refunded and nothing was counted"
                 if grant.status != "replay" else "the first delivery stays counted, once")
        raise BadInput(f"{out}: cannot write the ID file ({exc.strerror or exc}); {after}"
                       ) from exc
    return ShareResult(share_id=grant.share_id, status=grant.status, entity=entity, kind=kind,
                       requested=grant.requested, granted=grant.granted, out=out,
                       counters=grant.counters, window=counters[0].window.name)


def deliver(ledger: Ledger, root: str, grant: Grant, counters: list[Counter],
            idempotency: Idempotency | None, audit: dict[str, Any], write: Any) -> None:
    """Run `write`; commit the reservation if it succeeds, refund it if it does not.

    A replayed grant was settled by the first attempt (or will be): it is never refunded here.
    """
    settle_audit = {k: audit[k] for k in ("actor", "entity", "recipient", "channel", "kind",
                                          "request_id") if k in audit}
    try:
        write()
    except BaseException:
        if grant.status != "replay":
            with contextlib.suppress(GatekeeperError):
                ledger.settle(root, grant.share_id, counters, delivered=False,
                              audit=settle_audit, idempotency=idempotency)
        raise
    ledger.settle(root, grant.share_id, counters, delivered=True, audit=settle_audit)


def record_denial(ledger: Ledger, root: str, refusal: GatekeeperError,
                  audit: dict[str, Any]) -> None:
    """Append the audit record of a policy refusal (R11); it changes nothing else."""
    ledger.record(keys.placeholder(root), keys.audit(root), mode="audit", fields={},
                  audit={**audit, "outcome": "denied", "rule": refusal.rule or "",
                         "granted": 0, "message": refusal.message})
