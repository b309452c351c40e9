"""The `gatekeeper` command: a thin translation between people and the library.

Each noun has its module in this package (entities, users, tokens, datasets, deletions,
shares, quota, report, audit, store, init, serve); this one is the group and registers every
command, in one place. What the commands share (the Gate, the error handler, `--json`) is in
`context`. Exit codes (SPEC.md): 0 done · 2 bad input or usage · 3 refused by a quota (R2/R6) ·
4 refused by policy (R1, R5, R8, roles) · 5 store unavailable (fail closed).
There is deliberately no command that writes hydrated content (R1, R5).
"""

from __future__ import annotations

import importlib
from collections.abc import Iterator
from typing import Any

import click

from gatekeeper.channels.cli.context import Context, Group

__all__ = ["COMMANDS", "Context", "Group", "main"]

# Each command's module is imported when that command runs (or --help lists them all), not
# before: `gatekeeper share` then loads neither what `audit` needs (cryptography's Ed25519, the
# exports writers) nor `serve`'s web stack — 10 MB of a dehydrate's 40 MB budget (bench/ids.py).
# name -> (module in this package, attribute)
COMMANDS = {
    "entity": ("entities", "entity"), "user": ("users", "user"), "token": ("tokens", "token"),
    "dataset": ("datasets", "dataset"), "deletions": ("deletions", "deletions"),
    "share": ("shares", "share"), "quota": ("quota", "quota_cmd"),
    "audit": ("audit", "audit_cli"), "report": ("report", "report_cli"),
    "store": ("store", "store_cmd"), "init": ("init", "init"), "serve": ("serve", "serve"),
    "notices": ("notices", "notices"),
}


class Commands(dict[str, click.Command]):
    """The group's commands, each imported on first look-up; listing them all imports all."""

    def __missing__(self, name: str) -> click.Command:
        if name not in COMMANDS:
            raise KeyError(name)
        module, attr = COMMANDS[name]
        command: click.Command = getattr(
            importlib.import_module(f"gatekeeper.channels.cli.{module}"), attr)
        self[name] = command
        return command

    def get(self, name: str, default: Any = None) -> Any:
        try:
            return self[name]
        except KeyError:
            return default

    def __contains__(self, name: object) -> bool:
        return name in COMMANDS or super().__contains__(name)

    def _all(self) -> None:
        for name in COMMANDS:
            self[name]  # the look-up imports it

    def __iter__(self) -> Iterator[str]:
        self._all()
        return super().__iter__()

    def __len__(self) -> int:
        self._all()
        return super().__len__()

    def keys(self) -> Any:
        self._all()
        return super().keys()

    def values(self) -> Any:
        self._all()
        return super().values()

    def items(self) -> Any:
        self._all()
        return super().items()


class LazyGroup(Group):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.commands = Commands(self.commands)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name)

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*COMMANDS, *self.commands})


@click.group(cls=LazyGroup)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config.toml to use. Without it: $GATEKEEPER_CONFIG, ./config.toml, "
                   "$XDG_CONFIG_HOME/gatekeeper/config.toml, /etc/gatekeeper/config.toml.")
@click.version_option(package_name="gatekeeper", message="gatekeeper %(version)s")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """gatekeeper — redistribution quotas and exports for X API content (R1-R12)."""
    ctx.obj = Context(config_path)

