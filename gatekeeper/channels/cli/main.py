"""The `gatekeeper` command: a thin translation between people and the library.

Each noun has its module in this package (entities, users, tokens, datasets, deletions,
shares, quota, report, audit, store, init, serve); this one is the group and registers every
command, in one place. What the commands share (the Gate, the error handler, `--json`) is in
`context`. Exit codes (SPEC.md): 0 done · 2 bad input or usage · 3 refused by a quota (R2/R6) ·
4 refused by policy (R1, R5, R8, roles) · 5 store unavailable (fail closed).
There is deliberately no command that writes hydrated content (R1, R5).
"""

from __future__ import annotations

import click

from gatekeeper.channels.cli.audit import audit_cli
from gatekeeper.channels.cli.context import Context, Group
from gatekeeper.channels.cli.datasets import dataset
from gatekeeper.channels.cli.deletions import deletions
from gatekeeper.channels.cli.entities import entity
from gatekeeper.channels.cli.init import init
from gatekeeper.channels.cli.quota import quota_cmd
from gatekeeper.channels.cli.report import report_cli
from gatekeeper.channels.cli.serve import serve
from gatekeeper.channels.cli.shares import share
from gatekeeper.channels.cli.store import store_cmd
from gatekeeper.channels.cli.tokens import token
from gatekeeper.channels.cli.users import user

__all__ = ["COMMANDS", "Context", "Group", "main"]

COMMANDS = (entity, user, token, dataset, deletions, share, quota_cmd, audit_cli, report_cli,
            store_cmd, init, serve)


@click.group(cls=Group)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config.toml to use. Without it: $GATEKEEPER_CONFIG, ./config.toml, "
                   "$XDG_CONFIG_HOME/gatekeeper/config.toml, /etc/gatekeeper/config.toml.")
@click.version_option(package_name="gatekeeper", message="gatekeeper %(version)s")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """gatekeeper — redistribution quotas and exports for X API content (R1-R12)."""
    ctx.obj = Context(config_path)


for command in COMMANDS:
    main.add_command(command)
