"""How far a web export has got, for the page that started it (issue 13: the page keeps up).

The export form posts natively, so the browser's download stays a real, streamed download; the
page meanwhile polls a small JSON view for the state written here: ``counting`` (the selection
is being tallied), ``writing`` (rows written of rows in all), ``done`` (counted, committed and
being sent), ``refused`` or ``failed``. The state lives in a short-lived key named by the user
and by a hash of the export's ticket, which the page knows before it posts: nobody else reads
it, and the ticket itself never appears in a URL. It holds figures only, never content.

Writes are bounded (a web export of 100,000 rows writes a handful, not one a row) and
best-effort: a store that fails under a progress write fails the export at its own next call,
with the refund that belongs there, not here.
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

import redis

from gatekeeper.domain.gate import Gate
from gatekeeper.domain.users import User
from gatekeeper.ledger import keys
from gatekeeper.ledger.layout import index_pool_key
from gatekeeper.ledger.store import failing_closed, text

STATES = ("counting", "writing", "done", "refused", "failed")
TTL_S = 120  # renewed by each write; outlasts the page's last poll by far
EVERY_S = 0.5  # a row count is written at most this often ...
EVERY_ROWS = 1000  # ... and only once this many more rows are written (the rarer of the two)
_ID_RE = re.compile(r"[0-9a-f]{32}")


def progress_id(ticket: str) -> str:
    """The name of an export's progress, from the ticket its form carries (a hash: the
    ticket is a secret until it is spent)."""
    return hashlib.sha256(ticket.encode()).hexdigest()[:32]


def valid_id(value: str) -> bool:
    return _ID_RE.fullmatch(value) is not None


class ExportProgress:
    """The progress of one export, written as it goes."""

    def __init__(self, gate: Gate, user: User, ticket: str) -> None:
        self.client = gate.client
        self.key = keys.export_progress(user.root, user.name, progress_id(ticket))
        self._rows_at = -EVERY_ROWS  # the first row count is always written
        self._time_at = -EVERY_S

    def state(self, state: str, written: int = 0, total: int = 0) -> None:
        """Record `state` (one of STATES) with its row counts."""
        assert state in STATES, state
        body = json.dumps({"state": state, "written": written, "total": total})
        try:
            pipe = self.client.pipeline()
            pipe.set(self.key, body, ex=TTL_S)
            index_pool_key(pipe, self.key, TTL_S)  # it moves with the pool, as a ticket does
            pipe.execute()
        except redis.RedisError:
            pass  # a courtesy to the page, never a reason to fail the export (see above)

    def rows(self, written: int, total: int) -> None:
        """`written` of `total` rows are in the file: recorded if the bound allows."""
        if written - self._rows_at < EVERY_ROWS:
            return  # the common case, before asking the clock
        now = time.monotonic()
        if now - self._time_at < EVERY_S:
            return
        self._rows_at, self._time_at = written, now
        self.state("writing", written, total)


def read(gate: Gate, user: User, pid: str) -> dict[str, Any] | None:
    """The progress `user` has under `pid`, or None (unknown, expired, or someone else's)."""
    if not valid_id(pid):
        return None
    with failing_closed():
        raw = gate.client.get(keys.export_progress(user.root, user.name, pid))
    if raw is None:
        return None
    found = json.loads(text(raw))
    return {"state": str(found["state"]), "written": int(found["written"]),
            "total": int(found["total"])}
