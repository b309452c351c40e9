"""Which config file (and so which store) a command uses: found in a documented order, or refused.

Run from another directory, the CLI used to fall back to the defaults and open a new, empty
embedded store in `./var` there: `entity list` said "no entities" and shares counted against
fresh limits (a way around R2). Now a command without a config file refuses and says where it
looked; `gatekeeper init` writes one with an absolute store path, found from anywhere.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from importlib import metadata
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner

from gatekeeper import config
from gatekeeper.channels.cli.main import main
from gatekeeper.ledger import keys, ledger
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.errors import ConfigError

REPO = Path(__file__).resolve().parent.parent
LEVELS = ("flag", "env", "cwd", "user", "system")


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


@pytest.fixture
def places(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    """Each level of discovery pointed into tmp_path, none holding a file; cwd is empty."""
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    monkeypatch.delenv(config.ENV_CONFIG, raising=False)
    monkeypatch.delenv(config.ENV_REDIS_URL, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg"))
    monkeypatch.setattr(config, "SYSTEM_CONFIG", tmp_path / "etc" / "gatekeeper" / "config.toml")
    return {"flag": tmp_path / "flag" / "config.toml", "env": tmp_path / "env" / "config.toml",
            "cwd": work / "config.toml", "user": tmp_path / "xdg" / "gatekeeper" / "config.toml",
            "system": tmp_path / "etc" / "gatekeeper" / "config.toml", "work": work}


@pytest.mark.parametrize("level", LEVELS)
def test_each_level_of_discovery_wins_over_the_levels_after_it(
        places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, level: str) -> None:
    # Every level from `level` on holds a config whose R2 limit names its level.
    for n, name in enumerate(LEVELS, start=1):
        if n > LEVELS.index(level):
            write(places[name], f"[limits]\npost_ids_per_entity = {n}\n")
    if LEVELS.index(level) <= LEVELS.index("env"):
        monkeypatch.setenv(config.ENV_CONFIG, str(places["env"]))
    cfg = config.load(places["flag"] if level == "flag" else None)
    assert (cfg.source, cfg.path) == (level, places[level])
    assert cfg.limits.post_ids_per_entity == LEVELS.index(level) + 1


def test_the_user_level_defaults_to_dot_config_under_home(places: dict[str, Path],
                                                          monkeypatch: pytest.MonkeyPatch,
                                                          tmp_path: Path) -> None:
    monkeypatch.delenv("XDG_CONFIG_HOME")
    path = write(tmp_path / "home" / ".config" / "gatekeeper" / "config.toml", "")
    assert config.user_config_path() == path
    cfg = config.load()
    assert (cfg.source, cfg.path) == ("user", path)
    # A relative XDG_CONFIG_HOME is ignored, as the XDG spec says (it would depend on the cwd).
    monkeypatch.setenv("XDG_CONFIG_HOME", "relative/dir")
    assert config.user_config_path() == path


def test_without_a_config_file_load_refuses_and_says_where_it_looked(
        places: dict[str, Path]) -> None:
    with pytest.raises(ConfigError) as err:
        config.load()
    message = err.value.message
    for level in ("cwd", "user", "system"):
        assert str(places[level]) in message
    for hint in ("--config", config.ENV_CONFIG, "gatekeeper init"):
        assert hint in message
    assert err.value.exit_code == 2
    assert err.value.details["looked"] == [str(places[k]) for k in ("cwd", "user", "system")]
    assert list(places["work"].iterdir()) == []


@pytest.mark.parametrize("how", ["flag", "env"])
def test_a_named_config_file_that_is_missing_is_an_error_not_a_fall_through(
        places: dict[str, Path], monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    write(places["cwd"], "")
    missing = places["flag"]
    if how == "env":
        monkeypatch.setenv(config.ENV_CONFIG, str(missing))
    with pytest.raises(ConfigError, match="config file not found"):
        config.load(missing if how == "flag" else None)


def test_pure_defaults_are_loaded_only_when_asked_for(places: dict[str, Path]) -> None:
    write(places["cwd"], "[limits]\npost_ids_per_entity = 7\n")
    cfg = config.load(use_default=False)
    assert (cfg.path, cfg.source) == (None, "defaults")
    assert cfg.limits.post_ids_per_entity == 1_500_000


# --- the CLI as a person runs it: a real process, its own cwd, a throw-away home --------------


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A home directory (with its XDG dirs) that stands in for the real one."""
    path = tmp_path / "home"
    path.mkdir()
    return path


def cli(cwd: Path, home: Path, *args: str, env: dict[str, str] | None = None,
        ) -> subprocess.CompletedProcess[str]:
    """`python -m gatekeeper ARGS` in `cwd`, with no GATEKEEPER_* or XDG_* variable of ours."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("GATEKEEPER_", "XDG_"))}
    clean.update(HOME=str(home), XDG_CONFIG_HOME=str(home / "xdg-config"),
                 XDG_DATA_HOME=str(home / "xdg-data"), **(env or {}))
    return subprocess.run([sys.executable, "-m", "gatekeeper", *args], cwd=cwd, env=clean,
                          capture_output=True, text=True, check=False, timeout=120)


def files_under(directory: Path) -> list[str]:
    return sorted(str(p.relative_to(directory)) for p in directory.rglob("*"))


@pytest.mark.parametrize("args", [
    ("entity", "list"),
    ("entity", "list", "--json"),
    ("entity", "add", "acme", "--kind", "commercial"),
    ("quota", "entity", "acme"),
    ("dataset", "list"),
    ("share", "--as", "dana", "--entity", "acme", "--ids", "{ids}", "--out", "o.txt"),
    ("audit", "export", "--format", "jsonl", "--out", "a.jsonl"),
    ("store", "start"),
    ("store", "status"),
    ("serve", "--port", "0"),
], ids=lambda a: " ".join(a[:2]))
def test_a_command_without_a_config_file_refuses_and_creates_nothing(
        tmp_path: Path, home: Path, args: tuple[str, ...]) -> None:
    work = tmp_path / "empty"
    work.mkdir()
    ids = write(tmp_path / "ids" / "ids.txt", "12\n")
    proc = cli(work, home, *(a.replace("{ids}", str(ids)) for a in args))
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "no entities" not in proc.stdout
    assert "no config file found" in proc.stderr
    for where in (str(work / "config.toml"),
                  str(home / "xdg-config" / "gatekeeper" / "config.toml"),
                  "/etc/gatekeeper/config.toml", "--config", "GATEKEEPER_CONFIG",
                  "gatekeeper init"):
        assert where in proc.stderr
    assert files_under(work) == []  # no var/, no o.txt, nothing
    assert files_under(home) == []


def test_version_needs_no_config(tmp_path: Path, home: Path) -> None:
    proc = cli(tmp_path, home, "--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == f"gatekeeper {metadata.version('gatekeeper')}"
    assert files_under(tmp_path) == ["home"]


@pytest.fixture
def two_dirs(tmp_path: Path, home: Path) -> Iterator[tuple[Path, Path]]:
    """Two empty working directories; the store `init` made for `home` is stopped afterwards."""
    a, b = tmp_path / "a", tmp_path / "b"
    a.mkdir()
    b.mkdir()
    yield a, b
    EmbeddedServer(home / "xdg-data" / "gatekeeper").stop()


def test_init_then_every_directory_sees_the_same_store(home: Path,
                                                       two_dirs: tuple[Path, Path]) -> None:
    a, b = two_dirs
    proc = cli(a, home, "init")
    assert proc.returncode == 0, proc.stderr
    written = home / "xdg-config" / "gatekeeper" / "config.toml"
    assert str(written) in proc.stdout
    data_dir = tomllib.loads(written.read_text())["redis"]["data_dir"]
    assert data_dir == str(home / "xdg-data" / "gatekeeper")

    assert cli(a, home, "entity", "add", "acme", "--kind", "commercial").returncode == 0
    listed = cli(b, home, "entity", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["acme"]
    status = json.loads(cli(b, home, "store", "status", "--json").stdout)
    assert (status["config"]["path"], status["config"]["source"]) == (str(written), "user")
    assert files_under(a) == files_under(b) == []


def test_init_refuses_to_overwrite_a_config_file(tmp_path: Path, home: Path) -> None:
    target = write(tmp_path / "mine.toml", "# hand-written\n")
    proc = cli(tmp_path, home, "init", "--path", str(target))
    assert proc.returncode == 2
    assert str(target) in proc.stderr and "already exists" in proc.stderr
    assert target.read_text() == "# hand-written\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["home", "mine.toml"]


def test_init_writes_the_commented_repository_config_with_absolute_paths(
        places: dict[str, Path], tmp_path: Path) -> None:
    target = tmp_path / "conf" / "gk.toml"
    r = CliRunner().invoke(main, ["init", "--path", str(target), "--data-dir", "store",
                                  "--json"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    data_dir = places["work"] / "store"  # relative to the cwd, written absolute
    assert json.loads(r.output) == {"path": str(target), "data_dir": str(data_dir),
                                    "datasets_dir": str(data_dir / "datasets"),
                                    "found_by_default": False}
    text = target.read_text()
    assert "# R2" in text and "# R6" in text  # the comments people read
    ours, repo = config.load(target), config.load(REPO / "config.toml")
    assert (ours.redis.url, ours.redis.data_dir) == ("embedded", data_dir)
    assert ours.datasets_dir == data_dir / "datasets"
    assert (ours.limits, ours.server, ours.max_line_bytes) == (
        repo.limits, repo.server, repo.max_line_bytes)
    # Every key of the schema is spelled out, so people see what they can set.
    raw = tomllib.loads(text)
    assert {s: set(t) for s, t in raw.items()} == {
        s: set(t) for s, t in config.SCHEMA.items()}
    assert list(places["work"].iterdir()) == []  # the store is made on first use, not here


def test_init_says_when_another_config_file_would_still_be_used(
        places: dict[str, Path]) -> None:
    write(places["cwd"], "")
    r = CliRunner().invoke(main, ["init"], catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert places["user"].is_file()
    assert f"{places['cwd']} comes first" in r.output


# --- store status ------------------------------------------------------------------------------


@pytest.fixture
def store_dir(tmp_path: Path) -> Iterator[Path]:
    (tmp_path / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
    yield tmp_path
    EmbeddedServer(tmp_path / "var").stop()


def test_store_status_of_a_stopped_store_prints_the_config_and_exits_5(
        store_dir: Path, home: Path) -> None:
    path = store_dir / "config.toml"
    proc = cli(home, home, "--config", str(path), "store", "status", "--json")
    assert proc.returncode == 5, proc.stderr
    status = json.loads(proc.stdout)
    assert status["config"] == {"path": str(path), "source": "flag"}
    store = status["store"]
    assert (store["url"], store["cluster"], store["data_dir"]) == (
        "embedded", False, str(store_dir / "var"))
    assert (store["running"], store["pid"], status["reachable"]) == (False, None, False)
    assert store["socket"] == str(EmbeddedServer(store_dir / "var").socket)

    text = cli(home, home, "--config", str(path), "store", "status")
    assert text.returncode == 5
    assert f"config   {path} (--config)" in text.stdout
    assert "not running" in text.stdout and "unreachable" in text.stdout
    assert not (store_dir / "var").exists()  # status never starts (or creates) the store


def test_store_status_of_a_running_embedded_store(store_dir: Path, home: Path) -> None:
    env = {config.ENV_CONFIG: str(store_dir / "config.toml")}
    assert cli(home, home, "entity", "add", "acme", "--kind", "commercial",
               env=env).returncode == 0
    db = EmbeddedServer(store_dir / "var").client()
    db.set(keys.LAYOUT, ledger.LAYOUT)
    proc = cli(home, home, "store", "status", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    status = json.loads(proc.stdout)
    assert status["config"]["source"] == "env"
    assert status["reachable"] is True
    store = status["store"]
    assert store["running"] is True and store["aof"] is True
    assert store["pid"] == int((store_dir / "var" / "redis.pid").read_text())
    assert store["redis_version"] == db.info("server")["redis_version"]
    assert store["keys"] == db.dbsize() > 0
    assert (store["layout"], store["layout_expected"]) == (ledger.LAYOUT, ledger.LAYOUT)
    text = cli(home, home, "store", "status", env=env).stdout
    assert "($GATEKEEPER_CONFIG)" in text and f"pid {store['pid']}" in text
    assert f"layout   {ledger.LAYOUT}" in text
    db.close()


def test_store_status_masks_the_password_of_a_url(store_dir: Path, home: Path) -> None:
    env = {config.ENV_REDIS_URL: "redis://gk:s3cret@127.0.0.1:1/0?password=s3cret"}
    proc = cli(home, home, "--config", str(store_dir / "config.toml"), "store", "status",
               "--json", env=env)
    assert proc.returncode == 5
    assert "s3cret" not in proc.stdout + proc.stderr
    status = json.loads(proc.stdout)
    assert status["store"]["url"] == "redis://gk:***@127.0.0.1:1/0?password=***"
    assert status["store"]["url_from"] == config.ENV_REDIS_URL
    assert status["reachable"] is False and "127.0.0.1:1" in status["error"]


def test_store_status_of_a_redis_url(store_dir: Path, home: Path,
                                     real_server: dict[str, str]) -> None:
    url = real_server.get("url") or f"unix://{real_server['unix_socket_path']}"
    client = redis.Redis.from_url(url)
    client.flushall()
    client.set("gk:{sys}:probe", 1)
    proc = cli(home, home, "--config", str(store_dir / "config.toml"), "store", "status",
               "--json", env={config.ENV_REDIS_URL: url})
    assert proc.returncode == 0, proc.stderr
    store = json.loads(proc.stdout)["store"]
    assert (store["url"], store["cluster"], store["keys"]) == (url, False, 1)
    assert store["layout"] is None and "running" not in store
    client.flushall()
    client.close()


@pytest.mark.parametrize(("url", "shown"), [
    ("redis://gk:s3cret@h:6379/0", "redis://gk:***@h:6379/0"),
    ("rediss://:s3cret@h/1", "rediss://:***@h/1"),
    ("unix://:s3cret@/run/redis.sock?db=2", "unix://:***@/run/redis.sock?db=2"),
    ("unix:///run/redis.sock?password=s3cret&db=2", "unix:///run/redis.sock?password=***&db=2"),
    ("redis://h:6379/0", "redis://h:6379/0"),
])
def test_a_url_is_shown_with_its_password_masked(url: str, shown: str) -> None:
    from gatekeeper.ledger.status import mask_url

    assert mask_url(url) == shown
