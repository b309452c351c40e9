"""config.toml: defaults, the file, then the environment — validated, never guessed.

Which file: `--config PATH`, else $GATEKEEPER_CONFIG, else ./config.toml, else the per-user
file ($XDG_CONFIG_HOME/gatekeeper/config.toml), else the system one (/etc/gatekeeper/). With
none, loading refuses: falling back to the defaults would open a second, empty store in the
working directory, where every quota starts again from zero (R2).
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatekeeper.rules.errors import ConfigError

ENV_CONFIG = "GATEKEEPER_CONFIG"
ENV_REDIS_URL = "GATEKEEPER_REDIS_URL"
SYSTEM_CONFIG = Path("/etc/gatekeeper/config.toml")

# How a Config's file was found (Config.source), in the order of discovery.
SOURCES = {
    "flag": "--config",
    "env": f"${ENV_CONFIG}",
    "cwd": "./config.toml",
    "user": "per-user file",
    "system": "system file",
    "defaults": "built-in defaults",  # load(use_default=False): no file at all
}

WINDOWS = ("rolling-24h", "calendar-day")


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


def _not_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 (off) or more"


def _window(value: str) -> str | None:
    return None if value in WINDOWS else f"must be one of {', '.join(WINDOWS)}"


def _timezone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return "is not a known IANA time zone"
    return None


def _redis_url(value: str) -> str | None:
    if value == "embedded" or value.startswith(("redis://", "rediss://", "unix://")):
        return None
    return 'must be "embedded" or a redis://, rediss:// or unix:// URL'


CREDENTIALS = ("access_key", "secret_key", "session_token")


def _datasets_dir(value: str) -> str | None:
    """A directory, or an S3-compatible store's URL (gatekeeper.domain.dsstore) that names
    no credentials: those come from the environment, never from a file."""
    if "://" not in value:
        return None
    parts = urlsplit(value)
    if parts.scheme != "s3" or not parts.netloc:
        return "must be a directory or an s3://BUCKET/PREFIX URL"
    if parts.username or parts.password or \
            set(parse_qs(parts.query)) & set(CREDENTIALS):
        return ("must not hold credentials: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                "in the environment")
    return None


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


METRICS_ACCESS = ("loopback", "token", "open")


def _metrics_access(value: str) -> str | None:
    # Who may read /metrics, which names every entity and its usage (see README).
    return None if value in METRICS_ACCESS else f"is not one of {', '.join(METRICS_ACCESS)}"


def _public_url(value: str) -> str | None:
    # The address people type: its scheme decides the cookies' Secure flag (web.py).
    parts = urlsplit(value)
    if value == "" or (parts.scheme in ("http", "https") and parts.hostname
                       and not parts.query and not parts.fragment):
        return None
    return 'must be "" or an http:// or https:// URL with a host (no query)'


def _non_negative(value: int) -> str | None:
    return None if value >= 0 else "must be 0 or more"


def _retention_days(value: int) -> str | None:
    # R10's re-delivery check compares a share with the same entity's deliveries more than 30
    # days older: with less kept it could never see one. Ten years bounds a typo.
    if 31 <= value <= 3650:
        return None
    return ("must be from 31 to 3650 days: delivery manifests are kept at least 31 days so "
            "that a re-delivery beyond R10's 30 days can be seen")


def _heavy_queue(value: int) -> str | None:
    return None if value >= -1 else "must be -1 (derived from threads), 0 (no waiting) or more"


# section -> key -> (type, default, check). The README's configuration table is checked
# against this schema by a test, so documentation and code cannot drift apart.
SCHEMA: dict[str, dict[str, tuple[type, Any, Any]]] = {
    "redis": {
        "url": (str, "embedded", _redis_url),
        "data_dir": (str, "var", None),
        "cluster": (bool, False, None),
    },
    "limits": {
        "post_ids_per_entity": (int, 1_500_000, _positive),
        "post_ids_window_days": (int, 30, _positive),
        "hydrated_per_recipient": (int, 50_000, _positive),
        "hydrated_window": (str, "rolling-24h", _window),
        "timezone": (str, "UTC", _timezone),
        "hydrated_counts_toward_post_ids": (bool, True, None),
        "reservation_timeout_minutes": (int, 15, _positive),
    },
    "server": {
        "host": (str, "127.0.0.1", None),
        "port": (int, 8000, _port),
        "secret_key_env": (str, "GATEKEEPER_SECRET_KEY", None),
        "max_upload_mb": (int, 100, _positive),
        "threads": (int, 8, _positive),
        "session_idle_minutes": (int, 30, _positive),
        "session_max_hours": (int, 12, _positive),
        "metrics": (str, "loopback", _metrics_access),
        "public_url": (str, "", _public_url),
        "trusted_proxies": (int, 0, _non_negative),
        # Heavy work (exports, previews that scan, large uploads): how many run at once and
        # how many wait for a slot, bounded so threads stay free for light pages (heavy.py).
        "heavy_slots": (int, 0, _not_negative),  # 0: derived from threads
        "heavy_queue": (int, -1, _heavy_queue),  # -1: derived from threads
        "heavy_wait_seconds": (int, 30, _positive),
    },
    "datasets": {
        "dir": (str, "datasets", _datasets_dir),
        "max_line_mb": (int, 16, _positive),
    },
    "manifests": {  # what each delivery held (issue 15): `gatekeeper store sweep` drops older
        "retention_days": (int, 90, _retention_days),
    },
    "audit": {
        "signing_key_file": (str, "", None),
        "signing_key_env": (str, "GATEKEEPER_AUDIT_KEY", None),
        "checkpoint_dir": (str, "checkpoints", None),
        "checkpoint_minutes": (int, 60, _not_negative),
    },
}


@dataclass(frozen=True)
class AuditConfig:
    """R11's signed checkpoints: where the Ed25519 key is (a file, else an environment
    variable), where checkpoints go, and how often the server writes one (0 = never)."""

    signing_key_file: Path | None = None
    signing_key_env: str = "GATEKEEPER_AUDIT_KEY"
    checkpoint_dir: Path = Path("checkpoints")
    checkpoint_minutes: int = 60


@dataclass(frozen=True)
class RedisConfig:
    url: str
    data_dir: Path
    cluster: bool


@dataclass(frozen=True)
class LimitsConfig:
    post_ids_per_entity: int
    post_ids_window_days: int
    hydrated_per_recipient: int
    hydrated_window: str
    timezone: str
    hydrated_counts_toward_post_ids: bool
    reservation_timeout_minutes: int = 15


@dataclass(frozen=True)
class ServerConfig:
    host: str
    port: int
    secret_key_env: str
    max_upload_mb: int
    threads: int
    session_idle_minutes: int = 30
    session_max_hours: int = 12
    metrics: str = "loopback"
    public_url: str = ""  # "https://..." when people reach the service over TLS (a proxy)
    trusted_proxies: int = 0  # proxies in front whose X-Forwarded-* headers are believed
    heavy_slots: int = 0  # 0: derived (heavy_limits)
    heavy_queue: int = -1  # -1: derived (heavy_limits)
    heavy_wait_seconds: int = 30

    def heavy_limits(self) -> tuple[int, int]:
        """(heavy requests running at once, heavy requests waiting for a slot). Derived when
        not set: half the threads for heavy work, of which an eighth of all run (at least one)
        and the rest wait — heavy work is Python under one GIL, so a second one running adds
        little but slows every light request (bench/load.py) — always leaving at least one
        thread for /healthz and light pages."""
        slots = self.heavy_slots or max(1, self.threads // 8)
        queue = self.heavy_queue if self.heavy_queue >= 0 else \
            max(0, min(self.threads // 2 - slots, self.threads - 1 - slots))
        return slots, queue


@dataclass(frozen=True)
class Config:
    path: Path | None
    redis: RedisConfig
    limits: LimitsConfig
    server: ServerConfig
    datasets_dir: Path
    max_line_bytes: int = 16 << 20  # the longest line any reader accepts (datasets.max_line_mb)
    source: str = "flag"  # how the file was found: a key of SOURCES
    audit: AuditConfig = AuditConfig()
    # `[datasets] dir` as an object-store URL (then `datasets_dir` is unused): the datasets
    # several servers share (gatekeeper.domain.dsstore)
    datasets_url: str | None = None
    # Days a delivery manifest is kept (`[manifests] retention_days`), then swept.
    manifest_retention_days: int = 90


def _validate(raw: dict[str, Any], source: str) -> dict[str, dict[str, Any]]:
    """Merge the file over the defaults; stop at the first bad section, key or value."""
    merged = {section: {k: spec[1] for k, spec in keys.items()} for section, keys in SCHEMA.items()}
    for section, table in raw.items():
        if section not in SCHEMA:
            raise ConfigError(f"{source}: unknown section [{section}]")
        if not isinstance(table, dict):
            raise ConfigError(f"{source}: [{section}] must be a table")
        for key, value in table.items():
            name = f"{section}.{key}"
            if key not in SCHEMA[section]:
                raise ConfigError(f"{source}: unknown key {name}")
            kind, _default, check = SCHEMA[section][key]
            # bool is a subclass of int: `port = true` must not pass as 1.
            if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
                raise ConfigError(
                    f"{source}: {name} must be {kind.__name__}, got {type(value).__name__} "
                    f"{value!r}"
                )
            problem = check(value) if check else None
            if problem:
                raise ConfigError(f"{source}: {name} = {value!r} {problem}")
            merged[section][key] = value
    return merged


def _server(server: ServerConfig, source: str) -> ServerConfig:
    """`server` if its heavy-work bounds leave a thread for light pages; else ConfigError."""
    slots, queue = server.heavy_limits()
    if slots + queue >= server.threads:
        # A waiting request holds a thread as a running one does: with every thread heavy,
        # /healthz and sign-in wait behind exports (issue 14).
        raise ConfigError(
            f"{source}: server.heavy_slots ({slots}) + server.heavy_queue ({queue}) must be "
            f"less than server.threads ({server.threads}), so that threads stay free for "
            "/healthz and light pages; lower them or raise server.threads"
            + (" (2 or more)" if server.threads < 2 else ""))
    return server


def _xdg_home(variable: str, fallback: str) -> Path:
    # The XDG spec ignores a relative value: it would name a different place in every cwd.
    value = os.environ.get(variable, "")
    return Path(value) if os.path.isabs(value) else Path.home() / fallback


def user_config_path() -> Path:
    """The per-user config file: $XDG_CONFIG_HOME/gatekeeper/config.toml (~/.config/...)."""
    return _xdg_home("XDG_CONFIG_HOME", ".config") / "gatekeeper" / "config.toml"


def user_data_dir() -> Path:
    """Where `gatekeeper init` puts the store by default: $XDG_DATA_HOME/gatekeeper."""
    return _xdg_home("XDG_DATA_HOME", ".local/share") / "gatekeeper"


def find(path: str | os.PathLike[str] | None = None) -> tuple[Path, str] | None:
    """The config file to use and how it was found (a key of SOURCES), or None.

    A file named by --config or $GATEKEEPER_CONFIG is returned even when it does not exist:
    loading then says so, rather than quietly reading a file lower in the order.
    """
    if path is not None:
        return Path(path), "flag"
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env), "env"
    for file, source in ((Path("config.toml"), "cwd"), (user_config_path(), "user"),
                         (SYSTEM_CONFIG, "system")):
        if file.is_file():
            return file, source
    return None


def _not_found() -> ConfigError:
    looked = [Path("config.toml").absolute(), user_config_path(), SYSTEM_CONFIG]
    lines = ["  --config PATH        not given", f"  {SOURCES['env']:<20} not set"]
    lines += [f"  {SOURCES[s]:<20} {p}" for s, p in zip(("cwd", "user", "system"), looked,
                                                        strict=True)]
    return ConfigError(
        "no config file found, so no store was opened (defaults would start a second, empty "
        "one here). Looked for, in this order:\n" + "\n".join(lines) + "\n"
        f"Point at one with --config PATH or {ENV_CONFIG}=PATH, or write one with "
        "`gatekeeper init`.",
        looked=[str(p) for p in looked],
    )


def load(path: str | os.PathLike[str] | None = None, *, use_default: bool = True) -> Config:
    """Load and validate a config file; raise ConfigError naming the key.

    Without `path`, the file is found as the module docstring says, and none found is a
    ConfigError. `use_default=False` skips the search and loads the built-in defaults alone
    (paths relative to the cwd): for library code and tests that mean exactly that.
    """
    found = find(path) if use_default or path is not None else None
    if use_default and found is None:
        raise _not_found()
    file, source = found if found is not None else (None, "defaults")
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if file is not None:
        try:
            with open(file, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found (named by "
                              f"{SOURCES[source]})") from None
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{file}: not valid TOML: {exc}") from None
        base = file.resolve().parent
    values = _validate(raw, str(file) if file else "defaults")

    url = os.environ.get(ENV_REDIS_URL) or values["redis"]["url"]
    problem = _redis_url(url)
    if problem:
        raise ConfigError(f"{ENV_REDIS_URL}: {url!r} {problem}")
    return Config(
        path=file.resolve() if file else None,
        redis=RedisConfig(
            url=url,
            data_dir=(base / values["redis"]["data_dir"]).resolve(),
            cluster=values["redis"]["cluster"],
        ),
        limits=LimitsConfig(**values["limits"]),
        server=_server(ServerConfig(**values["server"]), str(file) if file else "defaults"),
        datasets_dir=(base / ("datasets" if "://" in values["datasets"]["dir"]
                              else values["datasets"]["dir"])).resolve(),
        datasets_url=values["datasets"]["dir"] if "://" in values["datasets"]["dir"] else None,
        max_line_bytes=values["datasets"]["max_line_mb"] << 20,
        source=source,
        manifest_retention_days=values["manifests"]["retention_days"],
        audit=AuditConfig(
            signing_key_file=((base / values["audit"]["signing_key_file"]).resolve()
                              if values["audit"]["signing_key_file"] else None),
            signing_key_env=values["audit"]["signing_key_env"],
            checkpoint_dir=(base / values["audit"]["checkpoint_dir"]).resolve(),
            checkpoint_minutes=values["audit"]["checkpoint_minutes"],
        ),
    )
