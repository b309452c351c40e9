"""The library object on the app: one `Gate` per app, opened on first use.

Flask's extension pattern (``init_app`` keeps the extension in ``app.extensions``; views fetch
it through the current app). Opening a Gate may start the embedded server or ask a Redis
Cluster for its nodes, so nothing opens it while the app is built: a test passes its own Gate,
and a store that is away answers the first request 503 (fail closed), not the factory.
"""

from __future__ import annotations

import threading

from flask import Flask, current_app

from gatekeeper.config import Config
from gatekeeper.domain.gate import Gate

KEY = "gatekeeper"


class GateExtension:
    """The app's Gate over `config`, or the one given (a test's, `gatekeeper serve`'s)."""

    def __init__(self, config: Config, gate: Gate | None = None) -> None:
        self.config = config
        self._gate = gate
        self._lock = threading.Lock()

    def init_app(self, app: Flask) -> None:
        app.extensions[KEY] = self

    @property
    def gate(self) -> Gate:
        """The Gate, opened now if this is its first use; a failure to open it (the store is
        away) raises StoreUnavailable and the next use tries again."""
        if self._gate is None:
            with self._lock:  # waitress serves from several threads: open it once
                if self._gate is None:
                    self._gate = Gate(self.config)
        return self._gate


def extension(app: Flask | None = None) -> GateExtension:
    """The GateExtension of `app` (default: the current app)."""
    ext: GateExtension = (app or current_app).extensions[KEY]
    return ext


def current_gate() -> Gate:
    """The current app's Gate (what every view works with)."""
    return extension().gate
