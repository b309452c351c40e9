"""The Redis server's clock: the one time every process agrees on — or an instant a caller fixed.

A limit that depends on time is decided by the store's clock (TIME), never by the local one
(STYLE 6): gatekeeper processes on several machines, or a machine whose clock is set back,
then agree on when a window starts and a permission ends. The scripts read the same clock.

A `Clock` is what the library asks for the time. The store's (`Clock`) reads TIME; a
`FixedClock` holds an instant its owner sets — tests that build a month of history on a real
server, where TIME cannot be moved. Every path that counts or records takes its time from the
one clock its `Gate` holds (signed checkpoints keep the store's: they attest the present). The
scripts get a fixed instant as their ``now`` argument and then give the audit records they
append stream IDs at that instant too (append_audit in _window.lua); Python appends pass it on
(`chain.append`). So a record, its stream ID and the counter buckets it charges fall at the
same time whichever clock is used. Key lifetimes (PEXPIRE) stay on the server's clock.
"""

from __future__ import annotations

import redis

from gatekeeper.ledger.store import failing_closed


def now_ms(client: redis.Redis) -> int:
    """The store's time in milliseconds since the epoch (fail closed when it is away).

    Sent on its own, not in a pipeline: a Redis Cluster pipeline refuses TIME.
    """
    with failing_closed():
        seconds, micros = client.time()
    return int(seconds) * 1000 + int(micros) // 1000


class Clock:
    """The store's clock: TIME when Python asks, and the scripts read TIME themselves."""

    def __init__(self, client: redis.Redis) -> None:
        self.client = client

    @property
    def fixed_ms(self) -> int | None:
        """The instant every path must use, or None: read the store's clock."""
        return None

    def now_ms(self) -> int:
        fixed = self.fixed_ms
        return fixed if fixed is not None else now_ms(self.client)

    def arg(self, now_ms: int | None = None) -> int | str:
        """A script's ``now`` argument: a time the caller chose, else the fixed instant, else
        "" (the script reads TIME)."""
        if now_ms is not None:
            return now_ms
        fixed = self.fixed_ms
        return "" if fixed is None else fixed


class FixedClock(Clock):
    """A clock its owner moves, forward only (stream IDs only grow): every path of the
    library then acts as if it were that instant."""

    def __init__(self, client: redis.Redis, at_ms: int) -> None:
        super().__init__(client)
        self._at = at_ms

    @property
    def fixed_ms(self) -> int | None:
        return self._at

    def set(self, at_ms: int) -> None:
        if at_ms < self._at:
            raise ValueError(f"a fixed clock only moves forward ({at_ms} < {self._at})")
        self._at = at_ms
