"""A reservation the ledger granted, on its way to being delivered or given back (R2, R6).

Deliver, then commit; a delivery that fails is refunded — and when the store is away at that
moment, the refund waits on disk (gatekeeper.ledger.pending) and is sent when it is back. A delivery
whose commit cannot reach the store stays counted: its reservation is open, and an open
reservation is closed as counted once it is older than the timeout (abandon_stale).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gatekeeper import faults
from gatekeeper.ledger import pending
from gatekeeper.ledger.ledger import Grant, Idempotency, Ledger
from gatekeeper.rules.errors import StoreUnavailable
from gatekeeper.rules.limits import Counter

# What the committed delivery's audit record says of its manifest (gatekeeper.domain.manifests).
MANIFEST_FIELDS = ("manifest", "manifest_sha256", "manifest_posts", "manifest_users")


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
    pending_dir: Path | None = None  # where a refund the store could not take waits

    def deliverable(self, selection: Any) -> int:
        """How many of the selection's IDs leave: the grant — or, for a replay after a new
        deletion list, fewer (R9 wins; the first delivery stays counted as it was)."""
        return min(self.grant.granted, selection.count)

    @property
    def window_days(self) -> int:
        return self.counters[0].window.length_ms // 86_400_000

    def commit(self) -> None:
        """Settle as delivered. A replay's first request is already counted for good (the
        ledger replays nothing else), so it has nothing to settle. Every outcome keeps the
        delivery counted: delivered, recounted (the ledger had lost or refunded it, and
        counted it again), already_delivered/already_abandoned."""
        if self.grant.status == "replay":
            self.settled = "replay"
            return
        self.settled = self.ledger.settle(self.root, self.grant.share_id, self.counters,
                                          delivered=True, audit=self._settle_audit())

    def refund(self) -> str:
        """Give the reservation back because nothing was delivered; what became of it:
        refunded, already_… (it was settled before: abandoned or delivered stay counted),
        missing, replay (not ours to give back) or pending (the store is away: the refund
        is kept on disk and sent when it is back, see gatekeeper.ledger.pending)."""
        if self.grant.status == "replay":
            self.settled = "replay"
            return self.settled
        try:
            self.settled = self.ledger.settle(self.root, self.grant.share_id, self.counters,
                                              delivered=False, audit=self._settle_audit(),
                                              idempotency=self.idempotency)
        except StoreUnavailable:
            if self.pending_dir is None:
                raise
            pending.save(self.pending_dir, self.root, self.grant.share_id, self.counters,
                         self.idempotency, self._settle_audit())
            self.settled = "pending"
        return self.settled

    def deliver(self, write: Callable[[], None], delivered: str = "the share") -> None:
        """Run `write`; commit if it succeeds, refund if it fails. `delivered` says what
        `write` delivered (for the message when the store dies before the commit)."""
        try:
            write()
        except BaseException:
            self.refund()
            raise
        faults.point("deliver.written")
        try:
            self.commit()
        except StoreUnavailable as exc:
            # Delivered, not yet settled: the open reservation keeps it counted, and it is
            # closed as counted (abandoned) once the store is back.
            raise StoreUnavailable(
                f"{delivered} — delivered; the store stopped answering before the share "
                f"{self.grant.share_id} was settled, so it stays counted as reserved and is "
                "closed as counted when the store is back", rule="R2",
                share_id=self.grant.share_id, delivered=True) from exc
        faults.point("deliver.committed")

    def commit_before_sending(self) -> None:
        """Commit before the first byte is sent (API responses, exports). If the store fails
        here nothing has left yet, so the reservation is given back (now or, with the store
        away, as soon as it is back)."""
        try:
            self.commit()
        except StoreUnavailable as exc:
            self.refund()
            raise StoreUnavailable(f"the store stopped answering before the share "
                                   f"{self.grant.share_id} could be settled: "
                                   f"{self.refund_words()}", rule=self.counters[0].rule,
                                   share_id=self.grant.share_id, delivered=False) from exc

    def refund_words(self) -> str:
        """What became of the reservation after a failed delivery, for messages."""
        return {
            "refunded": "nothing was delivered or counted (the reservation was refunded)",
            "pending": "nothing was delivered; the store could not be reached to give the "
                       "reservation back, so it is refunded as soon as the store is back",
            "replay": "nothing more was counted (the first delivery stays counted)",
            "already_refunded": "nothing was delivered or counted (it had been refunded)",
            "already_delivered": "nothing more was delivered; the reservation had already "
                                 "been settled as delivered and stays counted",
            "already_abandoned": "nothing was delivered, but the reservation had already been "
                                 "closed as counted (abandoned) and stays counted",
            "missing": "nothing was delivered; the ledger held no reservation to give back",
        }.get(self.settled or "", "nothing was delivered")

    def _settle_audit(self) -> dict[str, Any]:
        return {k: self.audit[k] for k in ("actor", "entity", "recipient", "channel", "kind",
                                           "request_id", *MANIFEST_FIELDS) if k in self.audit}

    def to_dict(self) -> dict[str, Any]:
        main = self.grant.counters[0]
        return {
            "share_id": self.grant.share_id, "status": self.grant.status,
            "entity": self.entity, "kind": self.kind, "requested": self.grant.requested,
            "granted": self.grant.granted, "removed_r9": self.removed,
            "quota": {"rule": main.rule, "limit": main.limit, "used": main.used,
                      "remaining": main.remaining, "window": self.counters[0].window.name},
        }
