"""What every `gatekeeper` command shares: the Gate opened once per run, who is acting, the
error handler that turns a GatekeeperError into its message and exit code, and `--json`.

Exit codes (SPEC.md): 0 done · 2 bad input or usage · 3 refused by a quota (R2/R6) ·
4 refused by policy (R1, R5, R8, roles) · 5 store unavailable (fail closed).
"""

from __future__ import annotations

import contextlib
import getpass
import json
from typing import Any

import click

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate
from gatekeeper.rules.errors import GatekeeperError


def cli_actor() -> str:
    """Who is at the terminal: CLI changes are audited as the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class Context:
    """The run's config and Gate, each read or opened on first use (`--help` opens nothing)."""

    def __init__(self, config_path: str | None) -> None:
        self.config_path = config_path
        self.json = False
        self._gate: Gate | None = None
        self._config: config_mod.Config | None = None

    @property
    def config(self) -> config_mod.Config:
        """The config file named by --config, else found (config.load): never the defaults,
        which would open a second, empty store in the working directory."""
        if self._config is None:
            self._config = config_mod.load(self.config_path)
        return self._config

    @property
    def gate(self) -> Gate:
        if self._gate is None:
            self._gate = Gate(self.config)
            # Refunds owed from a time the store was away go first (no-op when none are).
            with contextlib.suppress(GatekeeperError):
                self._gate.recover()
        return self._gate


class Group(click.Group):
    """Turns every GatekeeperError into its message and exit code, the same for all commands."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except GatekeeperError as exc:
            obj = ctx.find_object(Context)
            if obj is not None and obj.json:
                click.echo(json.dumps(exc.to_dict(), indent=2))
            rule = f"[{exc.rule}] " if exc.rule and not exc.message.startswith(exc.rule) else ""
            click.echo(f"gatekeeper: {rule}{exc.message}", err=True)
            for d in exc.details.get("details") or []:
                if isinstance(d, dict) and "line" in d:
                    click.echo(f"  line {d['line']}: {d['message']}", err=True)
            ctx.exit(exc.exit_code)


def mark_json(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
    """`--json` also makes the error handler answer in JSON."""
    ctx.ensure_object(Context).json = value
    return value


def json_option(f: Any) -> Any:
    return click.option("--json", "as_json", is_flag=True, callback=mark_json,
                        expose_value=True, help="Print the result as JSON.")(f)


def emit(obj: Context, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if obj.json else text)


pass_ctx = click.make_pass_decorator(Context)
