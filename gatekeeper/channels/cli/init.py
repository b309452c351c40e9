"""`gatekeeper init`: a commented config file whose store is the same from every directory.

The file mirrors the repository's config.toml, except that its paths are absolute: a config
in ~/.config/gatekeeper is found from any working directory, and its store must not move with
the directory a command is run from (that was the silent second store, a way around R2).
"""

from __future__ import annotations

import contextlib
import json
import tomllib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from gatekeeper import config as config_mod
from gatekeeper.channels.cli.context import Context, emit, json_option, pass_ctx
from gatekeeper.rules.errors import BadInput

TEMPLATE = """\
# gatekeeper configuration, written by `gatekeeper init`. Every key is listed in README.md
# ("Configuration"). Paths are absolute, so every command uses the same store from any
# directory. Secrets never go here: see [server].secret_key_env.

[redis]
url = "embedded"                 # or redis://host:6379/0 ; env GATEKEEPER_REDIS_URL wins
data_dir = {data_dir}
cluster = false

[limits]
post_ids_per_entity = 1_500_000  # R2
post_ids_window_days = 30
hydrated_per_recipient = 50_000  # R6
hydrated_window = "rolling-24h"  # or "calendar-day"
timezone = "UTC"                 # for calendar-day and for display
hydrated_counts_toward_post_ids = true
reservation_timeout_minutes = 15 # an unsettled reservation is then closed, counted

[server]
host = "127.0.0.1"
port = 8000
secret_key_env = "GATEKEEPER_SECRET_KEY"   # R12: secrets from the environment
max_upload_mb = 100              # larger API uploads are refused with 413
threads = 8                      # WSGI worker threads
session_idle_minutes = 30        # R12: a web session unused this long ends
session_max_hours = 12           # R12: and this long after sign-in, used or not
metrics = "loopback"             # who reads /metrics: "loopback", "token" or "open"
public_url = ""                  # "https://..." behind a TLS proxy: cookies Secure (README)
trusted_proxies = 0              # proxies whose X-Forwarded-* headers are believed
heavy_slots = 0                  # exports/previews/large uploads at once (0: threads / 8)
heavy_queue = -1                 # how many wait for a slot (-1: threads / 2 - slots), then 503
heavy_wait_seconds = 30          # the longest one waits before 503 busy with Retry-After

[datasets]
dir = {datasets_dir}
max_line_mb = 16                 # longer lines are refused (file, line, size)

[manifests]
retention_days = 90              # delivery manifests (issue 15) older are removed by `store sweep`

[audit]
signing_key_file = ""            # R11: `gatekeeper audit keygen --out FILE`, then name it here
signing_key_env = "GATEKEEPER_AUDIT_KEY"   # or the key in this variable (PEM or base64 seed)
checkpoint_dir = "checkpoints"   # signed checkpoints; keep a copy off the Redis host
checkpoint_minutes = 60          # `serve` writes one this often (0 = off)
"""


def _toml_string(path: Path) -> str:
    # A JSON string is a valid TOML basic string (same quotes, same escapes).
    return json.dumps(str(path), ensure_ascii=False)


@dataclass(frozen=True)
class Written:
    path: Path
    data_dir: Path
    datasets_dir: Path
    found: tuple[Path, str] | None  # what discovery picks now, with no --config

    @property
    def found_by_default(self) -> bool:
        """Whether commands without --config now use this file, from any directory."""
        return (self.found is not None and self.found[1] in ("user", "system")
                and self.found[0].absolute() == self.path)

    def to_dict(self) -> dict[str, Any]:
        return {"path": str(self.path), "data_dir": str(self.data_dir),
                "datasets_dir": str(self.datasets_dir),
                "found_by_default": self.found_by_default}

    def describe(self) -> str:
        head = (f"wrote {self.path}\nstore: embedded, data in {self.data_dir} (started on first "
                f"use); datasets in {self.datasets_dir}")
        use = f"--config {self.path} or {config_mod.ENV_CONFIG}={self.path}"
        if self.found is not None and self.found[0].absolute() != self.path:
            first = self.found[0].absolute()
            return (f"{head}\nnote: {first} comes first ({config_mod.SOURCES[self.found[1]]}); "
                    f"until it is moved, use {use}")
        if self.found_by_default:
            return f"{head}\nevery command now uses it, from any directory"
        if self.found is not None:  # ./config.toml: found only from this directory
            return f"{head}\ncommands run in {self.path.parent} use it; elsewhere use {use}"
        return f"{head}\nuse it with {use}"


def write(path: Path | None, data_dir: Path | None) -> Written:
    """Write a new config file (the per-user location by default); never overwrite one."""
    target = (path.expanduser() if path else config_mod.user_config_path()).absolute()
    store = (data_dir.expanduser() if data_dir else config_mod.user_data_dir()).resolve()
    datasets = store / "datasets"
    text = TEMPLATE.format(data_dir=_toml_string(store), datasets_dir=_toml_string(datasets))
    tomllib.loads(text)  # a path that TOML cannot hold fails here, before anything is written
    if target.exists() or target.is_symlink():
        raise BadInput(f"{target} already exists; it was left as it is (edit it, or choose "
                       "another file with --path)")
    created = False
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target, "x", encoding="utf-8") as fh:  # "x": never replaces a file (races)
            created = True
            fh.write(text)
    except BaseException as exc:
        if created:
            with contextlib.suppress(OSError):
                target.unlink()  # nothing half-written is left behind
        if isinstance(exc, FileExistsError):
            raise BadInput(f"{target} already exists; it was left as it is") from None
        if isinstance(exc, OSError):
            raise BadInput(f"{target}: cannot write the config file ({exc.strerror})") from None
        raise
    return Written(target, store, datasets, config_mod.find())


# --- the command ---------------------------------------------------------------------------------


@click.command("init")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write (default $XDG_CONFIG_HOME/gatekeeper/config.toml).")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The embedded store's directory, written absolute "
                   "(default $XDG_DATA_HOME/gatekeeper); datasets go in DATA_DIR/datasets.")
@json_option
@pass_ctx
def init(obj: Context, path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Write a commented config file that every command finds; never overwrites one."""
    written = write(path, data_dir)
    emit(obj, written.to_dict(), written.describe())
