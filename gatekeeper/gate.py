"""The one library object the CLI and the web service share: config, store, ledger, directory."""

from __future__ import annotations

from pathlib import Path

import redis

from gatekeeper import config as config_mod
from gatekeeper import store
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
        self.deletions = Deletions(self.client, max_line_bytes=config.max_line_bytes)
        self.datasets = Datasets(self.client, self.ledger, config.datasets_dir,
                                 max_line_bytes=config.max_line_bytes)

    @classmethod
    def open(cls, config_path: str | Path | None = None) -> Gate:
        """Load the config (see config.load) and connect to its store."""
        return cls(config_mod.load(config_path))


def ingest_deletions(gate: Gate, path: Path, *, kind: str | None, actor: str,
                     channel: str) -> Ingest:
    """R9: ingest a deletion list and report the stored posts it affects, per dataset."""
    report = gate.deletions.add_file(path, kind=kind, actor=actor, channel=channel)
    report.datasets = gate.datasets.affected(gate.deletions.current())
    return report


def set_parent(gate: Gate, name: str, *, parent: str, reason: str, actor: str,
               channel: str) -> Link:
    """R10: pool an existing entity with a parent's pool (see Entities.set_parent)."""
    return gate.entities.set_parent(name, parent=parent, reason=reason,
                                    r2_window=post_id_window(gate.config.limits),
                                    cluster=gate.config.redis.cluster, actor=actor,
                                    channel=channel)
