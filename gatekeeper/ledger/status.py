"""`gatekeeper store status`: which config file, which store, and whether it answers.

It says which store a command would use — the question behind a silent second store — so it
never starts the embedded server or creates its directory, and it never prints a password.
"""

from __future__ import annotations

import os
from typing import Any
from urllib.parse import unquote, urlsplit

import redis

from gatekeeper.config import ENV_REDIS_URL, SOURCES, Config
from gatekeeper.ledger import keys, store
from gatekeeper.ledger.ledger import LAYOUT
from gatekeeper.rules.errors import StoreUnavailable

MASK = "***"


def _secrets(url: str) -> list[str]:
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    for piece in parts.query.split("&"):
        key, _eq, value = piece.partition("=")
        if unquote(key).lower() == "password" and value:
            found.append(value)
    return found


def mask_url(url: str) -> str:
    """The URL with its password (in the user part or a ?password= parameter) masked."""
    if not _secrets(url):
        return url
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password:
        netloc = f"{parts.username or ''}:{MASK}@{netloc.rpartition('@')[2]}"
    query = "&".join(
        f"{piece.partition('=')[0]}={MASK}"
        if unquote(piece.partition("=")[0]).lower() == "password" and piece.partition("=")[2]
        else piece
        for piece in parts.query.split("&")) if parts.query else ""
    # Put together by hand: urlunsplit would turn unix:///path into unix:/path.
    return (f"{parts.scheme}://{netloc}{parts.path}" + (f"?{query}" if query else "")
            + (f"#{parts.fragment}" if parts.fragment else ""))


def _info(client: Any, section: str) -> dict[str, Any]:
    # On a cluster INFO answers per node; the version and AOF of one node stand for all.
    if hasattr(client, "get_default_node"):
        return client.get_default_node().redis_connection.info(section)
    return client.info(section)


def _probe(client: Any, facts: dict[str, Any], embedded: bool) -> None:
    with store.failing_closed():
        server = _info(client, "server")
        facts["redis_version"] = server.get("redis_version")
        if embedded:
            facts["pid"] = server.get("process_id")
        facts["aof"] = bool(_info(client, "persistence").get("aof_enabled"))
        facts["keys"] = int(client.dbsize())
        layout = client.get(keys.LAYOUT)
        facts["layout"] = int(layout) if layout is not None else None


def status(cfg: Config) -> dict[str, Any]:
    """The config in use and the store it names; `reachable` False with `error` if it is not."""
    url = cfg.redis.url
    facts: dict[str, Any] = {
        "url": url if url == "embedded" else mask_url(url),
        "url_from": ENV_REDIS_URL if os.environ.get(ENV_REDIS_URL) else "config",
        "cluster": cfg.redis.cluster,
    }
    report: dict[str, Any] = {
        "config": {"path": str(cfg.path) if cfg.path else None, "source": cfg.source},
        "store": facts,
        "reachable": False,
    }
    facts.update(redis_version=None, aof=None, keys=None, layout=None, layout_expected=LAYOUT)
    client: redis.Redis | None = None
    try:
        if url == "embedded":
            server = store.EmbeddedServer(cfg.redis.data_dir)
            facts.update(data_dir=str(server.data_dir), socket=str(server.socket),
                         running=server.running(), pid=None)
            if not facts["running"]:
                raise StoreUnavailable("the embedded server is not running (commands that need "
                                       "it start it; so does `gatekeeper store start`)")
            client = server.client()
        else:
            client = store.connect(cfg.redis)
        _probe(client, facts, url == "embedded")
        report["reachable"] = True
    except StoreUnavailable as exc:
        cause = exc.__cause__  # the connection error itself, without "nothing was released"
        message = f"{cause.__class__.__name__}: {cause}" if cause else exc.message
        for secret in _secrets(url):
            message = message.replace(secret, MASK)
        report["error"] = message
    finally:
        if client is not None:
            client.close()
    return report


def describe(report: dict[str, Any]) -> str:
    """The report as lines for a person."""
    cfg, facts = report["config"], report["store"]
    lines = [f"config   {cfg['path'] or '-'} ({SOURCES[cfg['source']]})"]
    origin = f" (from ${ENV_REDIS_URL})" if facts["url_from"] == ENV_REDIS_URL else ""
    if facts["url"] == "embedded":
        lines.append(f"store    embedded{origin}, data in {facts['data_dir']}")
        lines.append(f"socket   {facts['socket']}")
        state = (f"running, pid {facts['pid']}, AOF {'on' if facts['aof'] else 'OFF'}"
                 if facts["running"] and report["reachable"] else "not running")
        lines.append(f"server   {state}")
    else:
        kind = "Redis Cluster" if facts["cluster"] else "single server"
        lines.append(f"store    {facts['url']}{origin}, {kind}")
    if report["reachable"]:
        aof = "" if facts["url"] == "embedded" else f", AOF {'on' if facts['aof'] else 'OFF'}"
        lines.append(f"redis    {facts['redis_version']}, {facts['keys']:,} keys{aof}")
        stored = facts["layout"] if facts["layout"] is not None else "none recorded"
        lines.append(f"layout   {stored} (this version: {facts['layout_expected']})")
    else:
        lines.append(f"unreachable: {report['error']}")
    return "\n".join(lines)
