"""The Lua scripts of ``gatekeeper/ledger/lua``: loaded, registered once per client, run.

Only the ledger package calls Lua (tests/test_script_keys.py enforces it): ``Ledger`` builds
each script's KEYS and ARGV and decodes its answer, so no other module knows a script's
argument layout. Every key a script touches is one of its KEYS (checked on a real server by an
ACL user that may touch nothing else), which is what lets Redis Cluster route a script and
lets a reader see from the call what it may change.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from importlib import resources
from typing import Any

import redis
import redis.exceptions

from gatekeeper.ledger.store import failing_closed


def source(name: str) -> str:
    """A script's text as it runs: ``_window.lua`` (clock, windows, audit chain, declared
    keys) prepended to ``NAME.lua``, so that each shared rule lives in one place."""
    lua = resources.files("gatekeeper.ledger") / "lua"
    return (lua / "_window.lua").read_text() + "\n" + (lua / f"{name}.lua").read_text()


class Scripts:
    """The scripts, each registered once per client (EVALSHA, loaded again on NOSCRIPT)."""

    NAMES = ("take", "settle", "peek", "record", "move", "sweep", "pools",
             "heads")

    def __init__(self, client: redis.Redis) -> None:
        for name in self.NAMES:
            setattr(self, name, client.register_script(source(name)))
        # A plain client's pool, whose connections run EVALSHA directly (see _direct); None
        # for a Redis Cluster or a client holding a single connection.
        self.pool = (client.connection_pool if isinstance(client, redis.Redis)
                     and getattr(client, "connection", None) is None else None)

    def run(self, name: str, keys: list[str], args: list[Any]) -> dict[str, Any]:
        """Run a script and decode its JSON answer; connection failures fail closed."""
        with failing_closed():
            raw = self._direct(getattr(self, name), keys, args)
        return decode(raw)

    def _direct(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA on a connection of the pool, sent and read directly: redis-py's generic
        command path (deprecation and observability wrappers, retry closures, ~150 Python
        calls) costs ~30 µs a call, a tenth of a cost-1 grant on a quiet machine. An answer
        or a script's error is returned or raised as before; NOSCRIPT (the server lost its
        scripts) and a connection that died or went stale go the generic way, which loads
        the script or reconnects and retries as every call did before."""
        pool = self.pool
        if pool is None:
            return script(keys=keys, args=args)
        conn = pool.get_connection()
        try:
            conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
            return conn.read_response()
        except redis.exceptions.NoScriptError:
            pass
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
            conn.disconnect()
        finally:
            pool.release(conn)
        return script(keys=keys, args=args)

    def queue(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue a script on a pipeline; its answer comes back raw (see decode)."""
        getattr(self, name)(keys=keys, args=args, client=pipe)


def decode(raw: bytes | str) -> dict[str, Any]:
    """A script's JSON answer as a dict."""
    out: dict[str, Any] = json.loads(raw)
    return out


Decoder = Callable[[list[Any]], list[Any]]
