"""The app factory and the CLI's shape: building the app touches no store, a page never writes
(migrations run at start-up or by `gatekeeper store upgrade`), every command is in the CLI
package and `gatekeeper --help` lists it."""

from __future__ import annotations

import ast
import importlib
import json
import pkgutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import click
import pytest
import redis
from click.testing import Result
from live import sign_in

import gatekeeper
from gatekeeper import config as config_mod
from gatekeeper.channels.cli.main import main
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import charges, keys
from gatekeeper.ledger.ledger import LAYOUT
from gatekeeper.ledger.store import EmbeddedServer

Run = Callable[..., Result]


@pytest.fixture
def connections(monkeypatch: pytest.MonkeyPatch) -> list[Any]:
    """Every Redis connection attempted (redis-py's and a cluster's nodes' alike)."""
    made: list[Any] = []
    connect = redis.connection.AbstractConnection.connect

    def spy(self: Any) -> None:
        made.append(self)
        connect(self)

    monkeypatch.setattr(redis.connection.AbstractConnection, "connect", spy)
    return made


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.parametrize("cluster", [False, True], ids=["single", "cluster"])
def test_building_the_app_connects_to_no_store_and_the_first_request_fails_closed(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, connections: list[Any],
        cluster: bool) -> None:
    monkeypatch.delenv(config_mod.ENV_REDIS_URL, raising=False)
    path = tmp_path / "config.toml"
    path.write_text(f'[redis]\nurl = "redis://127.0.0.1:{_closed_port()}/0"\n'
                    f"cluster = {'true' if cluster else 'false'}\n")
    monkeypatch.setenv(config_mod.ENV_CONFIG, str(path))
    app = create_app(None, {"TESTING": True, "SECRET_KEY": "test"})
    assert connections == []  # a Redis Cluster client asks its nodes at once: not here
    web = app.test_client()
    health = web.get("/healthz")
    assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
    api = web.get("/api/v1/quota/entities/acme", headers={"Authorization": "Bearer gk.x.y"})
    assert api.status_code == 503
    assert api.get_json()["error"] == "store_unavailable"
    assert connections  # the requests did try


def test_building_the_app_starts_no_embedded_server(tmp_path: Path,
                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(config_mod.ENV_REDIS_URL, raising=False)
    path = tmp_path / "config.toml"
    path.write_text('[redis]\ndata_dir = "var"\n')
    server = EmbeddedServer(tmp_path / "var")
    try:
        app = create_app(None, {"TESTING": True, "SECRET_KEY": "test"},
                         config=config_mod.load(path))
        assert not server.running()
        assert app.test_client().get("/healthz").status_code == 200  # started on first use
        assert server.running()
    finally:
        server.stop()


# --- no write on a GET; `gatekeeper store upgrade` --------------------------------------------


@pytest.fixture
def old_store(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Gate]:
    """A store as an older version left it: usage and a refusal recorded, no layout, no
    index of active counters or refusals (the embedded store the `run` fixture's CLI uses)."""
    monkeypatch.delenv(config_mod.ENV_REDIS_URL, raising=False)
    gate = Gate(config_mod.load(store_dir / "config.toml"))
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.users.add("ana", entity="acme", role="analyst", password="correct horse battery",
                   actor="t", channel="cli")
    ana = gate.users.get("ana")
    gate.ledger.take(ana.root, [charges.hydrated_counter(ana, 7, gate.config.limits)],
                     requested=7, share_id="s1", audit={})
    gate.ledger.record(keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
                       audit={"outcome": "denied", "rule": "R1", "kind": "old"})
    gate.client.delete(keys.LAYOUT, keys.active(ana.root), keys.refusals_of(keys.SYS_AUDIT))
    yield gate
    gate.client.close()


def _written_by_upgrade(gate: Gate) -> dict[str, Any]:
    return {"layout": gate.client.get(keys.LAYOUT),
            "active": gate.client.zrange(keys.active("acme"), 0, -1),
            "refusals": gate.client.xlen(keys.refusals_of(keys.SYS_AUDIT))}


def test_a_get_never_runs_the_upgrade_and_the_page_says_what_is_missing(
        old_store: Gate) -> None:
    gate = old_store
    gate.users.add("cora", entity="acme", role="compliance", password="correct horse battery",
                   actor="t", channel="cli")
    before = _written_by_upgrade(gate)
    assert before == {"layout": None, "active": [], "refusals": 0}
    web = create_app(gate, {"TESTING": True, "SECRET_KEY": "test"}).test_client()
    assert sign_in(web, "cora", "correct horse battery") == 302
    page = web.get("/dashboard")
    assert page.status_code == 200
    assert "gatekeeper store upgrade" in page.get_data(as_text=True)
    assert web.get("/metrics").status_code == 200
    assert _written_by_upgrade(gate) == before  # the store is as it was


def test_store_upgrade_indexes_an_old_store_once_and_audits_it(old_store: Gate,
                                                                runner: Run) -> None:
    gate = old_store
    r = runner("store", "upgrade", "--json")
    assert r.exit_code == 0, r.output
    done = json.loads(r.stdout)
    # every key of the old pool is entered in its key index (layout 4), and counted as such
    indexed = gate.client.zcard(keys.pool_keys("acme"))
    assert indexed > 0
    assert done == {"from": 0, "to": LAYOUT, "counters": 1, "refusals": 1, "keys": indexed,
                    "notices": 0}
    after = _written_by_upgrade(gate)
    assert after["layout"] == str(LAYOUT).encode() and after["refusals"] == 1
    assert after["active"] == [keys.counter("acme", "r6", "ana").encode()]
    last = gate.client.xrevrange(keys.SYS_AUDIT, count=1)[0][1]
    assert (last[b"kind"], last[b"outcome"], last[b"channel"]) == (
        b"store.upgrade", b"changed", b"cli")
    records = gate.client.xlen(keys.SYS_AUDIT)
    again = runner("store", "upgrade")
    assert again.exit_code == 0 and "up to date" in again.output
    assert gate.client.xlen(keys.SYS_AUDIT) == records  # nothing changed, nothing audited


# --- the CLI in one place -------------------------------------------------------------------


def _tree(group: click.Group, prefix: str = "") -> dict[str, click.Command]:
    found = {}
    for name, cmd in group.commands.items():
        found[prefix + name] = cmd
        if isinstance(cmd, click.Group):
            found.update(_tree(cmd, f"{prefix}{name} "))
    return found


def test_every_click_command_lives_in_the_cli_package_and_is_registered() -> None:
    registered = {id(c) for c in _tree(main).values()}
    for info in pkgutil.walk_packages(gatekeeper.__path__, "gatekeeper."):
        if info.name == "gatekeeper.__main__":
            continue  # it runs the command
        module = importlib.import_module(info.name)
        for name, value in vars(module).items():
            if isinstance(value, click.Command) and getattr(value.callback, "__module__",
                                                            None) == info.name:
                assert info.name.startswith("gatekeeper.channels.cli."), (info.name, name)
                assert value is main or id(value) in registered, (info.name, name)


def test_gatekeeper_help_lists_every_command(runner: Run) -> None:
    top = runner("--help").output
    for name, cmd in main.commands.items():
        assert f"  {name} " in top, name
        if isinstance(cmd, click.Group):
            sub = runner(name, "--help").output
            assert all(f"  {n} " in sub for n in cmd.commands), name
    assert set(main.commands) == {"audit", "dataset", "deletions", "entity", "init", "notices",
                                  "quota", "report", "serve", "share", "store", "token", "trace",
                                  "user"}
    assert "upgrade" in main.commands["store"].commands  # type: ignore[attr-defined]


def test_the_cli_imports_no_flask_and_no_web_module() -> None:
    code = ("import sys, gatekeeper.channels.cli.main; print([m for m in sys.modules if "
            "m.split('.')[0] in ('flask', 'flask_login', 'flask_wtf', 'waitress') or "
            "m.startswith('gatekeeper.channels.web')])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True)
    assert out.stdout.strip() == "[]"


def _top_level_imports(path: Path) -> set[str]:
    """Modules a file imports when it is imported (not those imported inside a function)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom) and node.module:
            found |= {node.module, *(f"{node.module}.{a.name}" for a in node.names)}
        elif isinstance(node, ast.Import):
            found |= {a.name for a in node.names}
    return found


def test_no_import_cycle_between_the_cli_and_the_web() -> None:
    """The web imports nothing of the CLI; CLI modules import the shared context, never the
    group that registers them (the old late-import cycle cli -> report pages -> cli)."""
    channels = Path(gatekeeper.__file__).parent / "channels"
    for path in sorted((channels / "web").glob("*.py")):
        assert not {m for m in _top_level_imports(path)
                    if m.startswith("gatekeeper.channels.cli")}, path.name
        assert "gatekeeper.channels.cli" not in path.read_text(), path.name  # not even late
    for path in sorted((channels / "cli").glob("*.py")):
        if path.name == "main.py":
            continue
        imported = _top_level_imports(path)
        assert "gatekeeper.channels.cli.main" not in imported, path.name
        assert not {m for m in imported if m.startswith("gatekeeper.channels.web")}, path.name
