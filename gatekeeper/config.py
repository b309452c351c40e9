"""config.toml: defaults, the file, then the environment — validated, never guessed."""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from gatekeeper.errors import ConfigError

ENV_CONFIG = "GATEKEEPER_CONFIG"
ENV_REDIS_URL = "GATEKEEPER_REDIS_URL"

WINDOWS = ("rolling-24h", "calendar-day")


def _positive(value: int) -> str | None:
    return None if value > 0 else "must be greater than 0"


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


def _port(value: int) -> str | None:
    return None if 0 <= value <= 65535 else "must be a TCP port (0-65535)"


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
    },
    "datasets": {
        "dir": (str, "datasets", None),
        "max_line_mb": (int, 16, _positive),
    },
}


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


@dataclass(frozen=True)
class Config:
    path: Path | None
    redis: RedisConfig
    limits: LimitsConfig
    server: ServerConfig
    datasets_dir: Path
    max_line_bytes: int = 16 << 20  # the longest line any reader accepts (datasets.max_line_mb)


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


def default_path() -> Path | None:
    """The config file to use when none is named: $GATEKEEPER_CONFIG, else ./config.toml."""
    env = os.environ.get(ENV_CONFIG)
    if env:
        return Path(env)
    local = Path("config.toml")
    return local if local.is_file() else None


def load(path: str | os.PathLike[str] | None = None, *, use_default: bool = True) -> Config:
    """Load and validate a config file (or the defaults); raise ConfigError naming the key."""
    file = Path(path) if path is not None else (default_path() if use_default else None)
    raw: dict[str, Any] = {}
    base = Path.cwd()
    if file is not None:
        try:
            with open(file, "rb") as fh:
                raw = tomllib.load(fh)
        except FileNotFoundError:
            raise ConfigError(f"{file}: config file not found") from None
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
        server=ServerConfig(**values["server"]),
        datasets_dir=(base / values["datasets"]["dir"]).resolve(),
        max_line_bytes=values["datasets"]["max_line_mb"] << 20,
    )
