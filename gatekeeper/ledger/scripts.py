"""The Lua scripts of ``gatekeeper/ledger/lua``: loaded, registered once per client, run.

Only the ledger package calls Lua (tests/test_script_keys.py enforces it): ``Ledger`` builds
each script's KEYS and ARGV and decodes its answer, so no other module knows a script's
argument layout. Every key a script touches is one of its KEYS (checked on a real server by an
ACL user that may touch nothing else), which is what lets Redis Cluster route a script and
lets a reader see from the call what it may change.
"""

from __future__ import annotations

import json
import os
import threading
import weakref
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
        # The pool's hot connection (see _Hot), unless the pool is capped small: a connection
        # kept out of a pool of a few would starve the rest of the process's commands.
        self.hot = (_hot(self.pool) if self.pool is not None
                    and getattr(self.pool, "max_connections", 0) >= HOT_MIN_POOL else None)

    def run(self, name: str, keys: list[str], args: list[Any]) -> dict[str, Any]:
        """Run a script and decode its JSON answer; connection failures fail closed."""
        with failing_closed():
            raw = self._direct(getattr(self, name), keys, args)
        return decode(raw)

    def _direct(self, script: Any, keys: list[str], args: list[Any]) -> Any:
        """EVALSHA sent and read directly on a connection: redis-py's generic command path
        (deprecation and observability wrappers, retry closures, ~150 Python calls) costs
        ~30 µs a call, a tenth of a cost-1 grant on a quiet machine. The connection is the
        pool's hot one (see _Hot) unless another thread holds it, then one of the pool's.
        An answer or a script's error is returned or raised as before; NOSCRIPT (the server
        lost its scripts) and a connection that died or went stale go the generic way, which
        loads the script or reconnects and retries as every call did before."""
        pool, hot = self.pool, self.hot
        if pool is None:
            return script(keys=keys, args=args)
        if hot is not None and hot.lock.acquire(blocking=False):
            try:
                if hot.conn is None:
                    hot.conn = pool.get_connection()
                answered, value = _send(hot.conn, script, keys, args)
            finally:
                hot.lock.release()
        else:
            conn = pool.get_connection()
            try:
                answered, value = _send(conn, script, keys, args)
            finally:
                pool.release(conn)
        return value if answered else script(keys=keys, args=args)

    def queue(self, pipe: Any, name: str, keys: list[str], args: list[Any]) -> None:
        """Queue a script on a pipeline; its answer comes back raw (see decode)."""
        getattr(self, name)(keys=keys, args=args, client=pipe)


def decode(raw: bytes | str) -> dict[str, Any]:
    """A script's JSON answer as a dict."""
    out: dict[str, Any] = json.loads(raw)
    return out


Decoder = Callable[[list[Any]], list[Any]]


HOT_MIN_POOL = 64  # connections a pool may open for a hot one to be kept out of it


class _Hot:
    """One connection of a pool kept out of it for the scripts' calls, behind a lock taken
    without waiting. Checking a connection out of a redis-py pool and back costs a poll of
    its socket (is anything left unread?) and observability bookkeeping: ~30 µs of client
    CPU per grant on this VM, a quarter of a cost-1 grant's. The check is not needed here:
    _send reads every answer whole or disconnects the connection. A thread that finds the
    lock taken uses one of the pool's connections as before, so threads never wait on it;
    the pool keeps at most one connection more checked out."""

    __slots__ = ("conn", "lock")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.conn: Any = None


_HOT: weakref.WeakKeyDictionary[Any, _Hot] = weakref.WeakKeyDictionary()
_HOT_LOCK = threading.Lock()


def _hot(pool: Any) -> _Hot:
    """The pool's hot connection slot, shared by every Scripts of that pool (and gone with it)."""
    with _HOT_LOCK:
        hot = _HOT.get(pool)
        if hot is None:
            hot = _HOT[pool] = _Hot()
        return hot


def _forget_hot() -> None:
    """In a forked child: the parent's hot connections are its sockets, not ours (and a lock
    held by a parent's thread at the fork would stay held); start afresh from the pools."""
    global _HOT_LOCK
    _HOT_LOCK = threading.Lock()
    for hot in list(_HOT.values()):
        hot.lock = threading.Lock()
        hot.conn = None


os.register_at_fork(after_in_child=_forget_hot)


def _send(conn: Any, script: Any, keys: list[str], args: list[Any]) -> tuple[bool, Any]:
    """EVALSHA on `conn`: (True, answer), or (False, None) when it must go the generic way
    (NOSCRIPT, or a connection that failed: disconnected, so the next call reconnects). A
    script's error was read whole and is raised; any other interruption disconnects, so
    that no answer left unread reaches the next call on this connection."""
    try:
        conn.send_command("EVALSHA", script.sha, len(keys), *keys, *args)
        return True, conn.read_response()
    except redis.exceptions.NoScriptError:
        return False, None
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError, OSError):
        conn.disconnect()
        return False, None
    except redis.exceptions.ResponseError:
        raise
    except BaseException:
        conn.disconnect()
        raise
