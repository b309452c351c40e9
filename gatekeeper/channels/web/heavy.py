"""Bounded heavy work: at most K heavy requests run at once, at most Q wait for a slot.

waitress answers every request from a fixed pool of ``server.threads`` threads. A heavy
request — an export, a preview (a count on the dataset's index: at 10M posts up to ~2 s of
numpy and pyarrow, much of it under the GIL), a large ID upload or deletion list — holds its
thread and the GIL for long stretches; eight analysts previewing at once took every thread and
``/healthz`` waited 20 s (issue 14). So a heavy request takes a slot first: K run, Q wait in
line (FIFO) for at most ``server.heavy_wait_seconds``, and any further one is answered at once
with 503 ``busy`` and ``Retry-After`` — nothing run, counted or recorded. A waiting request
holds a thread too, so K + Q < threads (config.py checks it): the threads left over answer
sign-in, light pages and health checks whatever the heavy work costs.

A slot is held until the response is closed or its body fully handed to the server, so the
thread that streams an export counts as heavy, and a request that fails or whose client leaves
gives its slot back. A request whose client leaves while it waits leaves the line (waitress
says so when ``channel_request_lookahead`` > 0, as `gatekeeper serve` sets it).
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from flask import Flask, current_app, g, request
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from werkzeug.exceptions import ClientDisconnected
from werkzeug.wrappers import Response

from gatekeeper import faults
from gatekeeper.config import ServerConfig
from gatekeeper.rules.errors import Busy

KEY = "gatekeeper.heavy"
# An ID upload or deletion list larger than this is heavy (about 55,000 IDs); a smaller one
# is validated in milliseconds and never waits behind exports.
LARGE_UPLOAD = 1 << 20
_POLL_S = 0.25  # how often a waiting request looks whether its client is still there


class HeavyWork:
    """The slots of one app: `slots` running at once, `queue` waiting, `wait_s` at most."""

    def __init__(self, slots: int, queue: int, wait_s: float) -> None:
        self.slots, self.queue, self.wait_s = slots, queue, wait_s
        self.running = 0
        self._line: deque[object] = deque()  # the waiting requests, first come first served
        self._owed = 0  # of them, the server's own work (background.py): not one of the Q
        self._cond = threading.Condition()
        self._took: deque[float] = deque(maxlen=32)  # recent heavy durations (Retry-After)
        self.refused = 0

    @property
    def waiting(self) -> int:
        return len(self._line) - self._owed

    def acquire(self, what: str, gone: Callable[[], bool] = lambda: False) -> Slot:
        """A slot for `what`, waiting in line if need be; Busy when the line is full or the
        wait runs out; ClientDisconnected when the client left while it waited."""
        with self._cond:
            if self.running < self.slots and not self._line:
                self.running += 1
                return Slot(self)
            if self.waiting >= self.queue:
                raise self._busy(what, "every slot is taken and the line is full")
            me = object()
            self._line.append(me)
            deadline = time.monotonic() + self.wait_s
            try:
                while not (self.running < self.slots and self._line[0] is me):
                    left = deadline - time.monotonic()
                    if left <= 0:
                        raise self._busy(what, f"no slot freed up within {self.wait_s:g} s")
                    self._cond.wait(min(left, _POLL_S))
                    if gone():
                        raise ClientDisconnected("the client left while waiting for a slot")
                self.running += 1
            finally:
                self._line.remove(me)
                self._cond.notify_all()  # the next in line may be first now
        return Slot(self)

    def acquire_owed(self) -> Slot:
        """A slot for work the server owes after an answer (background.py: a notices scan,
        an R10 check): it waits its turn in the same line, first come first served, but no
        request thread waits for it, so it takes none of the line's Q places and has no
        deadline — it runs when a slot frees up, never beside K heavy requests."""
        with self._cond:
            me = object()
            self._line.append(me)
            self._owed += 1
            try:
                while not (self.running < self.slots and self._line[0] is me):
                    self._cond.wait(_POLL_S)
                self.running += 1
            finally:
                self._line.remove(me)
                self._owed -= 1
                self._cond.notify_all()
        return Slot(self)

    def _busy(self, what: str, why: str) -> Busy:
        self.refused += 1
        retry = self.retry_after()
        return Busy(
            f"The server is busy with other exports, previews and large uploads ({why}: "
            f"{self.running} running, {len(self._line)} waiting, at most {self.slots} at once "
            f"and {self.queue} in line). Your {what} was not started and nothing was counted; "
            f"try again in {retry} s.", retry_after=retry)

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the recent heavy requests' mean duration,
        times the requests ahead per slot; between 1 s and the longest wait."""
        mean = sum(self._took) / len(self._took) if self._took else 1.0
        ahead = (len(self._line) + 1) / self.slots
        return max(1, min(math.ceil(mean * ahead), math.ceil(self.wait_s)))

    def _release(self, took: float) -> None:
        with self._cond:
            self.running -= 1
            self._took.append(took)
            self._cond.notify_all()


class Slot:
    """One running heavy request's place; `release` gives it back (once, from any thread)."""

    def __init__(self, work: HeavyWork) -> None:
        self._work = work
        self._started = time.monotonic()
        self._lock = threading.Lock()
        self._held = True

    def release(self) -> None:
        with self._lock:
            if not self._held:
                return
            self._held = False
        self._work._release(time.monotonic() - self._started)


def init_app(app: Flask, server: ServerConfig) -> None:
    """The app's slots, from the [server] section; their gauges on its /metrics (after
    ops.init_app)."""
    slots, queue = server.heavy_limits()
    work = app.extensions[KEY] = HeavyWork(slots, queue, server.heavy_wait_seconds)
    app.extensions["gatekeeper.metrics"].registry.register(_Gauges(work))


class _Gauges:
    """The slots as Prometheus sees them, read at each scrape."""

    def __init__(self, work: HeavyWork) -> None:
        self.work = work

    def describe(self) -> list[Metric]:
        return []

    def collect(self) -> Iterator[Metric]:
        w = self.work
        for name, text, value in (
                ("running", "Heavy requests (exports, previews, large uploads) running.",
                 w.running),
                ("waiting", "Heavy requests waiting for a slot.", w.waiting),
                ("slots", "Heavy requests allowed to run at once.", w.slots),
                ("queue", "Heavy requests allowed to wait for a slot.", w.queue)):
            yield GaugeMetricFamily(f"gatekeeper_heavy_{name}", text, value=value)
        yield CounterMetricFamily("gatekeeper_heavy_busy", "Heavy requests answered 503 busy.",
                                  value=w.refused)


def current() -> HeavyWork:
    """The current app's heavy-work slots."""
    work: HeavyWork = current_app.extensions[KEY]
    return work


def large_upload() -> bool:
    """Whether this request's body is a large upload (or of unknown length)."""
    length = request.content_length
    return length is None or length > LARGE_UPLOAD


View = Callable[..., Any]


def gated(what: str, *, when: Callable[[], bool] | None = None,
          busy: Callable[[Busy], Any] | None = None) -> Callable[[View], View]:
    """Run the view in a heavy-work slot (only `when` it says so, if given; it runs first and
    may refuse the request itself, e.g. check its token). Busy goes to `busy` (a page
    re-rendered with the message) or to the app's error handler (JSON for the API)."""

    def wrap(view: View) -> View:
        @functools.wraps(view)
        def inner(*args: Any, **kwargs: Any) -> Any:
            if g.get("heavy_slot") is not None or (when is not None and not when()):
                return view(*args, **kwargs)  # light, or already in a slot (one per request)
            gone = request.environ.get("waitress.client_disconnected") or (lambda: False)
            try:
                slot = current().acquire(what, gone)
            except Busy as exc:
                if busy is None:
                    raise
                return busy(exc)
            g.heavy_slot = slot
            try:
                faults.point("heavy.admitted")
                if gone():  # it left while it waited: do nothing (count nothing) for nobody
                    raise ClientDisconnected("the client left before its request started")
                resp = current_app.make_response(view(*args, **kwargs))
            except BaseException:
                slot.release()
                raise
            return hold(resp, slot)

        return inner

    return wrap


def hold(resp: Response, slot: Slot) -> Response:
    """`resp`, releasing `slot` once its body is handed over or it is closed (whichever is
    first: a client that leaves mid-download closes it). A page already rendered releases
    at once."""
    if not resp.is_streamed:
        slot.release()
        return resp
    resp.response = _releasing(resp.response, slot)
    resp.call_on_close(slot.release)
    return resp


def _releasing(body: Iterable[Any], slot: Slot) -> Iterator[Any]:
    try:
        yield from body
    finally:
        slot.release()
