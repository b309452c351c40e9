"""Failpoints: named places where the fault-injection tests make a process fail on purpose.

Inert unless the environment names one — ``GATEKEEPER_FAILPOINT="share.written:kill"`` — the
way fail(9), gofail and fail-rs do it: the tests then kill this process (``kill``), kill the
Redis server whose pid is in ``GATEKEEPER_FAILPOINT_STORE_PID`` and carry on (``kill-store``),
or raise a full disk (``enospc``) at exactly that point, and check afterwards that no ID left
uncounted, no audit total disagrees with the ledger and no hydrated byte stayed on disk.
``pause`` holds the thread there until the test lets it go (files in
``GATEKEEPER_FAILPOINT_DIR``): a request kept busy for as long as the test needs, no timing.
``hold`` is the same with one release file (``GATEKEEPER_FAILPOINT_RELEASE``) for every thread.
Neither waits longer than HOLD_MAX_S: a test nobody releases fails, it does not hang.
"""

from __future__ import annotations

import errno
import os
import signal
import threading
import time
from pathlib import Path

ENV = "GATEKEEPER_FAILPOINT"
ENV_STORE_PID = "GATEKEEPER_FAILPOINT_STORE_PID"
ENV_RELEASE = "GATEKEEPER_FAILPOINT_RELEASE"
ENV_DIR = "GATEKEEPER_FAILPOINT_DIR"
HOLD_MAX_S = 120  # a hold nobody releases lets go at last: a test fails, it does not hang

# Every failpoint, in the order a delivery passes them (the tests iterate over these).
POINTS = (
    "heavy.admitted",    # a heavy web request (export, preview, upload) holds its slot
    "share.reserved",    # counted (reserved), nothing written yet
    "manifest.written",  # its manifest stored (the CLI: before share.reserved), nothing sent
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
        _wait_for(Path(os.environ[ENV_RELEASE]))
    elif action == "pause":
        pause(name)
    else:
        raise ValueError(f"{ENV}: unknown action {action!r} "
                         "(kill, kill-store, enospc, hold, pause)")


def _wait_for(release: Path) -> None:
    deadline = time.monotonic() + HOLD_MAX_S
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.01)


def pause(name: str) -> None:
    """Hold this thread at `name` until the file NAME.go appears in $GATEKEEPER_FAILPOINT_DIR;
    meanwhile NAME.THREAD.held there says a thread is held (the test's event to act on)."""
    directory = Path(os.environ[ENV_DIR])
    held = directory / f"{name}.{threading.get_ident()}.held"
    held.touch()
    try:
        _wait_for(directory / f"{name}.go")
    finally:
        held.unlink(missing_ok=True)
