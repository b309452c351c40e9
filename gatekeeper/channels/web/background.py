"""Work an API answer owes but need not wait for, run by one thread of the server.

Two jobs: the deletion notices an API ingest owes (`Notices.scan`: 7-10 s with 100M delivered
IDs in retention — a client would time out and a worker thread be held) and R10's re-delivery
check of an API ID share once its response is sent (`redelivery.after_share`: ~0.8 s with three
older 1.5M-ID deliveries to compare). The request queues the job and answers; the runner — one
daemon thread, started when work comes and ended when none is left — runs a scan, and an R10
check's comparison (only when the entity has deliveries 30 days older), in a heavy slot
(`heavy.HeavyWork.acquire_owed`), so it waits its turn behind the exports and previews already
running and light requests keep their threads; a check that finds nothing to compare (two
Redis commands, nearly always) takes no slot, and makes no preview wait or be told busy.

Nothing is lost by a crash: an ingest's transaction queues what its notices owe in Redis
(domain/notices.py), and any scan opens them — the runner's, the next ingest's, `gatekeeper
notices scan`, or this runner at the next start-up (`at_start`). Scans never overlap: one
thread here, and the scan's Redis lock across processes; a scan told busy (another holds the
lock: that one takes these IDs too) or failed (the store away) is tried again while IDs wait.
An R10 check lost with the process is what the CLI loses when killed after its share (see
domain/redelivery.py): the share's manifest stands, for trace and notices.
"""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from flask import Flask, current_app

from gatekeeper import faults
from gatekeeper.channels.web import heavy
from gatekeeper.channels.web.extension import extension
from gatekeeper.domain import redelivery

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.domain.manifests import Ids
    from gatekeeper.ledger.reservation import Reservation

KEY = "gatekeeper.background"
LOG = logging.getLogger(__name__)
RETRY_S = (1.0, 60.0)  # a busy or failed scan is tried again after 1 s, doubling to 60 s
# Failed scans in a row (the store away) before the runner leaves them to the next ingest,
# `notices scan` or start-up: what they owe stays queued in Redis.
FAILURES = 7
# Sorted IDs kept in memory for queued R10 checks, at most (8 bytes each); beyond, a check
# reads its share's manifest back (as the CLI's does when it has no array at hand).
KEEP_IDS = 4_000_000


@dataclass
class _Check:
    res: Reservation
    ids: Ids | None


class Runner:
    """The app's background work: a notices scan owed (one, however many ingests asked) and
    R10 checks, first come first served."""

    def __init__(self, gate: Callable[[], Gate], work: heavy.HeavyWork) -> None:
        self._gate, self._work = gate, work
        self._cond = threading.Condition()
        # An R10 check, or a scan owed (the actor and channel its audit records name).
        self._jobs: deque[_Check | tuple[str, str]] = deque()
        self._scan_queued = False
        self._retry_at: float | None = None  # when a busy or failed scan is tried again
        self._retry_who = ("gatekeeper", "api")  # and for whom (the audit's actor, channel)
        self._retry_s = RETRY_S[0]
        self._failures = 0
        self._kept = 0  # IDs held by queued checks
        self._running = False
        self._thread: threading.Thread | None = None

    # --- what requests ask -------------------------------------------------------------------

    def scan_soon(self, actor: str, channel: str) -> None:
        """Open the notices waiting in Redis (an ingest just queued some), off this thread."""
        with self._cond:
            if not self._scan_queued:
                self._scan_queued = True
                self._jobs.append((actor, channel))
            self._retry_at, self._failures = None, 0
            self._start()

    def check_soon(self, res: Reservation, ids: Ids | None) -> None:
        """R10's check of a committed API share (`ids`: its sorted Post IDs, if at hand)."""
        with self._cond:
            if ids is not None and self._kept + ids.size > KEEP_IDS:
                ids = None  # read back from its manifest when its turn comes
            self._kept += ids.size if ids is not None else 0
            self._jobs.append(_Check(res, ids))
            self._start()

    def drain(self, timeout: float = 120.0) -> bool:
        """Wait until nothing is queued, running or to be retried (tests, a clean stop)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._jobs or self._running or self._retry_at is not None:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(min(left, 0.1))
        return True

    def stop(self, timeout: float = 30.0) -> bool:
        """Drop what is queued and any retry, and wait for the job running to end (a test's
        app torn down); what a scan owed stays in Redis for the next one."""
        with self._cond:
            self._jobs.clear()
            self._scan_queued, self._retry_at, self._kept = False, None, 0
            self._cond.notify_all()  # a thread waiting for a retry ends now
        return self.drain(timeout)

    # --- the thread --------------------------------------------------------------------------

    def _start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="gatekeeper-background",
                                            daemon=True)
            self._thread.start()

    def _next(self) -> _Check | tuple[str, str] | None:
        """The next job, waiting for a retry that is due; None when there is nothing left
        (the thread ends; the next job starts another)."""
        with self._cond:
            while not self._jobs:
                if self._retry_at is None:
                    self._thread = None
                    self._cond.notify_all()
                    return None
                left = self._retry_at - time.monotonic()
                if left <= 0:
                    self._retry_at = None
                    self._scan_queued = True
                    self._jobs.append(self._retry_who)
                    break
                self._cond.wait(left)
            job = self._jobs.popleft()
            if isinstance(job, _Check):
                self._kept -= job.ids.size if job.ids is not None else 0
            else:
                self._scan_queued = False
            self._running = True
            return job

    def _loop(self) -> None:
        while (job := self._next()) is not None:
            try:
                if isinstance(job, _Check):  # a slot only to compare (nearly always none)
                    redelivery.after_share(self._gate(), job.res, job.ids, self._slot)
                else:
                    with self._slot():
                        self._scan(*job)
            except Exception:  # the runner never dies; the work stays owed
                LOG.exception("background work failed")
            finally:
                with self._cond:
                    self._running = False
                    self._cond.notify_all()

    @contextlib.contextmanager
    def _slot(self) -> Iterator[None]:
        """A heavy slot, in line with the requests (`HeavyWork.acquire_owed`)."""
        slot = self._work.acquire_owed()
        try:
            yield
        finally:
            slot.release()

    def _scan(self, actor: str, channel: str) -> None:
        faults.point("notices.background")
        gate = self._gate()
        try:
            done = gate.notices.scan(actor=actor, channel=channel)
            busy = done.busy and gate.notices.waiting()
        except Exception:
            with self._cond:
                self._failures += 1
                failed = self._failures
            if failed < FAILURES:
                self._again(actor, channel)
            raise
        with self._cond:
            self._failures = 0
        if busy:
            self._again(actor, channel)  # another holds the lock: it may die before it ends
            return
        with self._cond:
            self._retry_s = RETRY_S[0]
        if done.opened:
            LOG.info("R9: %d deletion notice(s) opened", len(done.opened))

    def _again(self, actor: str, channel: str) -> None:
        with self._cond:
            if not self._scan_queued:
                self._retry_at = time.monotonic() + self._retry_s
                self._retry_who = (actor, channel)
                self._retry_s = min(self._retry_s * 2, RETRY_S[1])


def init_app(app: Flask) -> None:
    """The app's runner (after heavy.init_app): its thread starts with its first job."""
    ext = extension(app)
    app.extensions[KEY] = Runner(lambda: ext.gate, app.extensions[heavy.KEY])


def runner(app: Flask | None = None) -> Runner:
    """The runner of `app` (default: the current app)."""
    found: Runner = (app or current_app).extensions[KEY]
    return found


def at_start(app: Flask, actor: str, channel: str) -> bool:
    """`gatekeeper serve`: scan now if notices are owed (a crash after an ingest's answer)."""
    gate = extension(app).gate
    if not gate.notices.waiting():
        return False
    runner(app).scan_soon(actor, channel)
    return True
