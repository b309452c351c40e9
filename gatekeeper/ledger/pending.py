"""Refunds owed while the store was away: nothing delivered stays counted for long (R2, R6).

A delivery that fails refunds its reservation. When the store cannot be reached at that
moment, the refund is written here — one small JSON file per reservation in
``<redis.data_dir>/pending``, made durable before the caller is answered — and sent as soon as
the store answers again: by the next command or request of any process (`retry`), by the
server's background retry, and by ``gatekeeper store sweep``. If the store stays away past the
reservation timeout, the next take of the pool closes the reservation as counted first; the
refund then finds it settled and changes nothing (the conservative side).
"""

from __future__ import annotations

import contextlib
import json
import os
import threading
from dataclasses import asdict
from pathlib import Path
from typing import Any

from gatekeeper.ledger.ledger import Idempotency, Ledger
from gatekeeper.rules.errors import GatekeeperError
from gatekeeper.rules.limits import Counter, Limit, Window


def _counter(raw: dict[str, Any]) -> Counter:
    return Counter(raw["key"], raw["rule"], Window(**raw["window"]), Limit(**raw["limit"]),
                   raw["amount"])


def save(directory: Path, root: str, share_id: str, counters: list[Counter],
         idempotency: Idempotency | None, audit: dict[str, Any]) -> Path:
    """Record a refund the store could not take now; durable when this returns."""
    directory.mkdir(mode=0o700, parents=True, exist_ok=True)
    path = directory / f"{share_id}.json"
    body = json.dumps({"root": root, "share_id": share_id,
                       "counters": [asdict(c) for c in counters],
                       "idempotency": asdict(idempotency) if idempotency else None,
                       "audit": audit}).encode()
    tmp = directory / f".{share_id}.json.tmp"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        os.write(fd, body)
        os.fsync(fd)
    finally:
        os.close(fd)
    os.replace(tmp, path)
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)
    return path


_lock = threading.Lock()


def retry(ledger: Ledger, directory: Path) -> dict[str, int]:
    """Send the refunds owed; each file goes once the store has answered for it. Returns
    {"settled": n, "left": n}. A store still away leaves them for the next try."""
    done = left = 0
    if not directory.is_dir():
        return {"settled": 0, "left": 0}
    with _lock:  # one sender per process; across processes settle.lua makes a repeat harmless
        for path in sorted(directory.glob("*.json")):
            try:
                raw = json.loads(path.read_bytes())
            except (OSError, ValueError):
                continue  # being written by another process, or unreadable: leave it
            idem = raw.get("idempotency")
            try:
                ledger.settle(raw["root"], raw["share_id"],
                              [_counter(c) for c in raw["counters"]], delivered=False,
                              audit={**raw["audit"], "message": "refunded once the store was "
                                     "back: the delivery had failed while it was away"},
                              idempotency=Idempotency(**idem) if idem else None)
            except GatekeeperError:
                left += 1
                continue
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
            done += 1
    return {"settled": done, "left": left}


def count(directory: Path) -> int:
    """How many refunds are owed."""
    return len(list(directory.glob("*.json"))) if directory.is_dir() else 0
