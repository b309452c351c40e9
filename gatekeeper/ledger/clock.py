"""The Redis server's clock: the one time every process agrees on.

A limit that depends on time is decided by the store's clock (TIME), never by the local one
(STYLE 6): gatekeeper processes on several machines, or a machine whose clock is set back,
then agree on when a window starts and a permission ends. The scripts read the same clock.
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
