"""`gatekeeper store …`: the embedded Redis server, the store's status, sweep and upgrade."""

from __future__ import annotations

import sys

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import plural
from gatekeeper.ledger import store
from gatekeeper.rules.errors import BadInput


@click.group("store", cls=Group)
def store_cmd() -> None:
    """The store: the embedded Redis server (redis.url = "embedded"), status, sweep, upgrade."""


def _embedded(obj: Context) -> store.EmbeddedServer:
    cfg = obj.config
    if cfg.redis.url != "embedded":
        raise BadInput(f"redis.url is {cfg.redis.url!r}, not the embedded store")
    return store.EmbeddedServer(cfg.redis.data_dir)


@store_cmd.command("start")
@pass_ctx
def store_start(obj: Context) -> None:
    """Start the embedded server (commands start it on demand too)."""
    server = _embedded(obj)
    server.start()
    click.echo(f"embedded Redis running on {server.socket} (data in {server.data_dir})")


@store_cmd.command("stop")
@pass_ctx
def store_stop(obj: Context) -> None:
    """Stop the embedded server; its AOF keeps every count for the next start."""
    server = _embedded(obj)
    click.echo("stopped" if server.stop() else "not running")


@store_cmd.command("status")
@json_option
@pass_ctx
def store_status(obj: Context, as_json: bool) -> None:
    """Which config file and store are in use, and whether the store answers (else exit 5).

    Never starts the embedded server; the URL's password is masked.
    """
    from gatekeeper.ledger import status as status_mod

    report = status_mod.status(obj.config)
    emit(obj, report, status_mod.describe(report))
    if not report["reachable"]:
        sys.exit(5)


@store_cmd.command("sweep")
@json_option
@pass_ctx
def store_sweep(obj: Context, as_json: bool) -> None:
    """Clean up after crashes: partial files and spools, refunds owed, open reservations;
    then delivery manifests past `[manifests] retention_days` (audited, R9)."""
    done = obj.gate.sweep(actor=cli_actor(), channel="cli")
    kept = done["manifests"]
    emit(obj, done, (
        f"removed {plural(len(done['files_removed']), 'leftover file')}"
        + "".join(f"\n  {p}" for p in done["files_removed"])
        + f"\nremoved {plural(kept['removed'], 'delivery manifest')} past "
        f"{obj.gate.config.manifest_retention_days} days' retention"
        + (f" (delivered {kept['oldest']['manifest']} .. {kept['newest']['manifest']})"
           if kept["oldest"] else "")
        + (f" and {plural(len(kept['orphans_removed']), 'file')} no index named"
           if kept["orphans_removed"] else "")
        + (f"; stopped: {kept['error']}" if kept.get("error") else "")
        + f"\nrefunds sent {done['refunds_sent']}, still owed {done['refunds_owed']}"
        f"\n{plural(done['abandoned'], 'reservation')} left open past "
        f"{obj.gate.config.limits.reservation_timeout_minutes} min closed as counted "
        f"(share.abandoned, R2); {done['open']} open now, in {plural(done['pools'], 'pool')}"))
    if done["refunds_owed"] or kept.get("error"):
        sys.exit(5)


@store_cmd.command("upgrade")
@json_option
@pass_ctx
def store_upgrade(obj: Context, as_json: bool) -> None:
    """Bring a store an older version wrote up to this version's layout (audited, R11).

    `gatekeeper serve` does it at start-up; pages never do (they only read). Safe to run
    twice or beside a running server.
    """
    done = obj.gate.upgrade(actor=cli_actor(), channel="cli")
    emit(obj, done, describe_upgrade(done))


def describe_upgrade(done: dict[str, int]) -> str:
    """One line on what Gate.upgrade did."""
    if done["from"] >= done["to"]:
        return f"store layout {done['from']}: up to date, nothing to do"
    return (f"store layout {done['from']} -> {done['to']}: {plural(done['counters'], 'counter')} "
            f"and {plural(done['refusals'], 'refusal')} indexed")
