"""The one library object the CLI and the web service share: config, store, ledger, directory."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from gatekeeper import config as config_mod
from gatekeeper.config import Config
from gatekeeper.domain import spool
from gatekeeper.domain.datasets import Datasets
from gatekeeper.domain.deletions import Deletions, Ingest
from gatekeeper.domain.entities import Entities, Entity, Link
from gatekeeper.domain.manifests import Manifests
from gatekeeper.domain.notices import Notices
from gatekeeper.domain.users import Users
from gatekeeper.ledger import keys, pending, store
from gatekeeper.ledger.clock import Clock
from gatekeeper.ledger.ledger import LAYOUT, Ledger
from gatekeeper.rules import permissions, roles
from gatekeeper.rules.errors import DatasetStoreUnavailable, GatekeeperError
from gatekeeper.rules.limits import post_id_window


class Gate:
    """Everything gatekeeper knows, opened once per process."""

    def __init__(self, config: Config, client: redis.Redis | None = None,
                 clock: Clock | None = None) -> None:
        self.config = config
        self.client = client if client is not None else store.connect(config.redis)
        # The one time every path uses: the store's, or an instant a test fixed.
        self.clock = clock or Clock(self.client)
        self.ledger = Ledger(
            self.client,
            reservation_timeout_ms=config.limits.reservation_timeout_minutes * 60_000,
            clock=self.clock)
        self.entities = Entities(self.client, self.ledger)
        self.users = Users(self.client, self.ledger, self.entities)
        self.deletions = Deletions(self.client, max_line_bytes=config.max_line_bytes,
                                   clock=self.clock)
        self.datasets = Datasets(self.client, self.ledger,
                                 config.datasets_url or config.datasets_dir,
                                 max_line_bytes=config.max_line_bytes)
        # What each delivery held, beside the datasets (issue 15).
        self.manifests = Manifests(self.client, config.datasets_url or config.datasets_dir)
        self.notices = Notices(self)  # who must delete what R9 newly hides (issue 15)
        # Refunds owed while the store was away (gatekeeper.ledger.pending).
        self.pending_dir = config.redis.data_dir / "pending"

    def recover(self) -> dict[str, int]:
        """Send the refunds owed from when the store was away (a directory check when none)."""
        if not pending.count(self.pending_dir):
            return {"settled": 0, "left": 0}
        return pending.retry(self.ledger, self.pending_dir)

    def recover_in_background(self, every_s: float = 5.0) -> threading.Thread:
        """A server's daemon thread: owed refunds go as soon as the store answers again."""
        def loop() -> None:
            stop = threading.Event()
            while not stop.wait(every_s):
                with contextlib.suppress(Exception):  # never let the retry loop die
                    self.recover()

        thread = threading.Thread(target=loop, name="gatekeeper-recover", daemon=True)
        thread.start()
        return thread

    def sweep(self, *, actor: str = "gatekeeper", channel: str = "cli") -> dict[str, Any]:
        """What a crash may have left: partial files and spools removed, refunds owed sent,
        and every pool's reservations left open past the timeout closed as counted. Then
        the delivery manifests past retention, audited (domain/retention.py)."""
        from gatekeeper.domain import retention

        removed = spool.sweep([self.config.datasets_dir, self.config.redis.data_dir,
                               *retention.month_dirs(self)])
        orphans = self.datasets.sweep_store()  # what an object store kept of a failed add
        refunds = pending.retry(self.ledger, self.pending_dir)
        with store.failing_closed():
            roots = sorted({store.text(root) for root in self.client.hvals(keys.ENTITIES)})
        closed = still_open = 0
        for root in roots:
            swept = self.ledger.sweep(root)
            closed += swept["abandoned"]
            still_open += swept["open"]
        try:  # after the refunds: a refunded share's manifest is then an orphan to remove
            kept = retention.sweep(self, actor=actor, channel=channel).to_dict()
        except DatasetStoreUnavailable as exc:  # the object store away: the next sweep does it
            kept = {**retention.Swept(0).to_dict(), "error": exc.message}
        return {"files_removed": [str(p) for p in removed] + orphans,
                "manifests": kept, "refunds_sent": refunds["settled"],
                "refunds_owed": refunds["left"], "abandoned": closed, "open": still_open,
                "pools": len(roots)}

    def upgrade(self, *, actor: str, channel: str) -> dict[str, int]:
        """Bring a store an older version wrote up to this version's layout (Ledger.upgrade),
        with an audit record (R11) when it indexed anything. Run at start-up (`gatekeeper
        serve`) and by `gatekeeper store upgrade`; never by a request, which only reads."""
        with store.failing_closed():
            before = int(self.client.get(keys.LAYOUT) or 0)
        done = self.ledger.upgrade(self.config.limits)
        if done["counters"] or done["refusals"]:  # not a new store only stamped
            self.ledger.record(
                keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
                audit={"actor": actor, "channel": channel, "kind": "store.upgrade",
                       "outcome": "changed", "rule": "R11",
                       "message": f"store layout {before} -> {LAYOUT}: {done['counters']:,} "
                                  f"counter(s) and {done['refusals']:,} refusal(s) indexed"})
        return {"from": before, "to": max(before, LAYOUT), **done}

    @classmethod
    def open(cls, config_path: str | Path | None = None) -> Gate:
        """Load the config (see config.load) and connect to its store."""
        return cls(config_mod.load(config_path))


def ingest_deletions(gate: Gate, path: Path, *, kind: str | None, actor: str,
                     channel: str) -> Ingest:
    """R9: ingest a deletion file and report what it newly hides, per dataset."""
    return _newly_hidden(gate, gate.deletions.add_file(path, kind=kind, actor=actor,
                                                        channel=channel), actor, channel)


def ingest_deletion_stream(gate: Gate, lines: Iterable[bytes], *, kind: str, source: str,
                           actor: str, channel: str, scan: bool = True) -> Ingest:
    """R9: ingest an uploaded deletion list (see ingest_deletions); `scan=False` leaves its
    notices queued for a scan the caller runs later (the API's, off the request path)."""
    return _newly_hidden(gate, gate.deletions.add(lines, kind=kind, source=source, actor=actor,
                                                  channel=channel), actor, channel, scan)


def _newly_hidden(gate: Gate, report: Ingest, actor: str, channel: str,
                  scan: bool = True) -> Ingest:
    # Not a running total: the stored posts hidden now that were not before this list (the
    # lists as they are now, less the IDs this list added).
    if report.new_ids:
        after = gate.deletions.current()
        report.datasets = gate.datasets.affected(
            after, before=after.without(report.kind, report.new_ids))
    # Issue 15: the recipients of what already left are told, once the ingest has committed;
    # should this fail, the ingest stands and its IDs wait for the next scan.
    if not scan:
        return report
    try:
        report.notices = [n.id for n in gate.notices.scan(actor=actor, channel=channel).opened]
    except (GatekeeperError, OSError) as exc:
        report.notices_error = (f"{exc}; the ingest stands, and `gatekeeper notices scan` "
                                "opens its notices")
    return report


def lift_deletion(gate: Gate, ident: str, *, kind: str, reason: str, actor: str,
                  channel: str) -> dict[str, Any]:
    """R9: a compliance officer (or admin) takes one ID off a deletion list, audited (R11)."""
    user = gate.users.get(actor)
    roles.require_role(user, roles.MAY_RECORD_COMPLIANCE, "lifting an R9 deletion")
    return gate.deletions.lift(ident, kind=kind, reason=reason, actor=user.name,
                               channel=channel)


def set_parent(gate: Gate, name: str, *, parent: str, reason: str, actor: str,
               channel: str) -> Link:
    """R10: pool an existing entity with a parent's pool (see Entities.set_parent)."""
    return gate.entities.set_parent(name, parent=parent, reason=reason,
                                    r2_window=post_id_window(gate.config.limits),
                                    cluster=gate.config.redis.cluster, actor=actor,
                                    channel=channel)


def record_permission(gate: Gate, name: str, *, limit: str, until: str, reference: str,
                      actor: str, channel: str) -> Entity:
    """R4 as a person typed it (CLI options, the compliance form): parsed by the one parser,
    its last day checked against the Redis clock, then recorded and audited."""
    permit = permissions.parse(limit, until, reference, timezone=gate.config.limits.timezone,
                               now_ms=gate.clock.now_ms())
    return gate.entities.permit(name, limit=permit.limit, until_ms=permit.until_ms,
                                reference=permit.reference, actor=actor, channel=channel)
