"""Failpoints: named places where the fault-injection tests make a process fail on purpose.

Inert unless the environment names one — ``GATEKEEPER_FAILPOINT="share.written:kill"`` — the
way fail(9), gofail and fail-rs do it: the tests then kill this process (``kill``), kill the
Redis server whose pid is in ``GATEKEEPER_FAILPOINT_STORE_PID`` and carry on (``kill-store``),
or raise a full disk (``enospc``) at exactly that point, and check afterwards that no ID left
uncounted, no audit total disagrees with the ledger and no hydrated byte stayed on disk.
``hold`` waits there until the file named by ``GATEKEEPER_FAILPOINT_RELEASE`` exists, so that
a browser test sees an export's progress at a known step rather than by timing.
"""

from __future__ import annotations

import errno
import os
import signal
import time
from pathlib import Path

ENV = "GATEKEEPER_FAILPOINT"
ENV_STORE_PID = "GATEKEEPER_FAILPOINT_STORE_PID"
ENV_RELEASE = "GATEKEEPER_FAILPOINT_RELEASE"
HOLD_MAX_S = 120  # a hold nobody releases lets go at last: a test fails, it does not hang

# Every failpoint, in the order a delivery passes them (the tests iterate over these).
POINTS = (
    "share.reserved",    # counted (reserved), nothing written yet
    "share.writing",     # part of the ID file written (to an anonymous file)
    "deliver.written",   # the ID file is in place, not yet committed
    "deliver.committed",  # committed, the command has not answered yet
    "api.committed",     # the API share is committed, no byte sent yet
    "api.streaming",     # the first chunk of the ID file has been sent
    "export.reserved",   # an export is counted (reserved), nothing written yet
    "export.writing",    # part of the export written (to an anonymous file)
    "export.written",    # the export is written, not yet committed
    "export.committed",  # committed, no byte sent yet
    "export.streaming",  # the first chunk of the export has been sent
)


def point(name: str) -> None:
    """Fail here if the environment asks for it; otherwise do nothing."""
    spec = os.environ.get(ENV)
    if not spec:
        return
    where, _, action = spec.partition(":")
    if where != name:
        return
    if action == "kill":
        os.kill(os.getpid(), signal.SIGKILL)
    elif action == "kill-store":
        os.kill(int(os.environ[ENV_STORE_PID]), signal.SIGKILL)
    elif action == "enospc":
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    elif action == "hold":
        release = Path(os.environ[ENV_RELEASE])
        deadline = time.monotonic() + HOLD_MAX_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} (kill, kill-store, enospc, hold)")
