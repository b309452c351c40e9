"""The one library object the CLI and the web service share: config, store, ledger, directory."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import redis

from gatekeeper import config as config_mod
from gatekeeper import policy, store
from gatekeeper.config import Config
from gatekeeper.datasets import Datasets
from gatekeeper.deletions import Deletions, Ingest
from gatekeeper.entities import Entities, Link
from gatekeeper.ledger import Ledger, post_id_window
from gatekeeper.users import Users


class Gate:
    """Everything gatekeeper knows, opened once per process."""

    def __init__(self, config: Config, client: redis.Redis | None = None) -> None:
        self.config = config
        self.client = client if client is not None else store.connect(config.redis)
        self.ledger = Ledger(self.client)
        self.entities = Entities(self.client, self.ledger)
        self.users = Users(self.client, self.ledger, self.entities)
        self.deletions = Deletions(self.client)
        self.datasets = Datasets(self.client, self.ledger, config.datasets_dir)

    @classmethod
    def open(cls, config_path: str | Path | None = None) -> Gate:
        """Load the config (see config.load) and connect to its store."""
        return cls(config_mod.load(config_path))


def ingest_deletions(gate: Gate, path: Path, *, kind: str | None, actor: str,
                     channel: str) -> Ingest:
    """R9: ingest a deletion file and report what it newly hides, per dataset."""
    return _newly_hidden(gate, gate.deletions.add_file(path, kind=kind, actor=actor,
                                                        channel=channel))


def ingest_deletion_stream(gate: Gate, lines: Iterable[bytes], *, kind: str, source: str,
                           actor: str, channel: str) -> Ingest:
    """R9: ingest an uploaded deletion list (see ingest_deletions)."""
    return _newly_hidden(gate, gate.deletions.add(lines, kind=kind, source=source, actor=actor,
                                                  channel=channel))


def _newly_hidden(gate: Gate, report: Ingest) -> Ingest:
    # Not a running total: the stored posts hidden now that were not before this list (the
    # lists as they are now, less the IDs this list added).
    if report.new_ids:
        after = gate.deletions.current()
        report.datasets = gate.datasets.affected(
            after, before=after.without(report.kind, report.new_ids))
    return report


def lift_deletion(gate: Gate, ident: str, *, kind: str, reason: str, actor: str,
                  channel: str) -> dict[str, Any]:
    """R9: a compliance officer (or admin) takes one ID off a deletion list, audited (R11)."""
    user = gate.users.get(actor)
    policy.require_role(user, policy.MAY_RECORD_COMPLIANCE, "lifting an R9 deletion")
    return gate.deletions.lift(ident, kind=kind, reason=reason, actor=user.name,
                               channel=channel)


def set_parent(gate: Gate, name: str, *, parent: str, reason: str, actor: str,
               channel: str) -> Link:
    """R10: pool an existing entity with a parent's pool (see Entities.set_parent)."""
    return gate.entities.set_parent(name, parent=parent, reason=reason,
                                    r2_window=post_id_window(gate.config.limits),
                                    cluster=gate.config.redis.cluster, actor=actor,
                                    channel=channel)
