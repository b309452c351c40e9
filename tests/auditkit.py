"""Helpers the audit log's tests share: every page of a log, and a spy on round trips."""

from __future__ import annotations

from typing import Any

import pytest
import redis

from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.ledger.scripts import Scripts


def all_pages(log: AuditLog, f: AuditFilter | None = None, size: int = 50) -> list[dict]:
    out: list[dict] = []
    cursor = None
    while True:
        page, cursor = log.page(f, before=cursor, size=size)
        assert len(page) <= size
        out += page
        if cursor is None:
            return out
        assert len(page) == size  # only a full page points to an older one


class Spy:
    """Counts round trips: pipelines executed and the commands in them, direct commands."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.pipelines: list[list[tuple[Any, ...]]] = []
        self.direct: list[tuple[Any, ...]] = []
        spy = self
        original_execute = redis.client.Pipeline.execute
        original_command = redis.Redis.execute_command

        def execute(pipe: Any, *a: Any, **kw: Any) -> Any:
            spy.pipelines.append([c[0] for c in pipe.command_stack])
            return original_execute(pipe, *a, **kw)

        def command(r: Any, *args: Any, **kw: Any) -> Any:
            spy.direct.append(args)
            return original_command(r, *args, **kw)

        # A script sent straight on a pooled connection (Scripts._direct) is a round trip too.
        original_direct = Scripts._direct

        def direct(scripts: Any, script: Any, keys: list[str], args: list[Any]) -> Any:
            if scripts.pool is not None:
                spy.direct.append(("EVALSHA", script.sha, len(keys), *keys, *args))
            return original_direct(scripts, script, keys, args)

        monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
        monkeypatch.setattr(redis.Redis, "execute_command", command)
        monkeypatch.setattr(Scripts, "_direct", direct)
