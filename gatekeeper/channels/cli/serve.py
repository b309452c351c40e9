"""`gatekeeper serve`: the web service and API under waitress, after the start-up work."""

from __future__ import annotations

import os
import sys

import click

from gatekeeper.channels.cli.context import Context, cli_actor, pass_ctx
from gatekeeper.channels.cli.store import describe_upgrade
from gatekeeper.domain.checkpoints import in_background as checkpoints_in_background
from gatekeeper.rules.errors import GatekeeperError, StoreUnavailable

SWITCH_INTERVAL_S = 0.0005


@click.command("serve")
@click.option("--host", help="Listen address (default server.host).")
@click.option("--port", type=int, help="Listen port (default server.port).")
@click.option("--demo", is_flag=True,
              help="Load demo entities, users and a 100,000-post dataset into an empty store.")
@pass_ctx
def serve(obj: Context, host: str | None, port: int | None, demo: bool) -> None:
    """Run the web service and API under waitress (a production WSGI server)."""
    import waitress

    from gatekeeper.channels.web.app import create_app
    from gatekeeper.domain import demo as demo_mod

    gate = obj.gate
    cfg = gate.config.server
    # Whatever a crash of an earlier run left: partial files, refunds owed, open reservations.
    try:
        swept = gate.sweep()
    except StoreUnavailable as exc:  # fail closed: every request refuses until it is back
        click.echo(f"start-up sweep skipped: {exc.message}", err=True)
        swept = {"files_removed": [], "abandoned": 0, "refunds_sent": 0}
    if swept["files_removed"] or swept["abandoned"] or swept["refunds_sent"]:
        click.echo(f"start-up sweep: {len(swept['files_removed'])} leftover file(s) removed, "
                   f"{swept['refunds_sent']} refund(s) sent, {swept['abandoned']} open "
                   "reservation(s) closed as counted", err=True)
    # Migrations run here or by `store upgrade`, never on a request (pages only read).
    try:
        upgraded = gate.upgrade(actor=cli_actor(), channel="cli")
        if upgraded["counters"] or upgraded["refusals"]:
            click.echo(f"start-up upgrade: {describe_upgrade(upgraded)}", err=True)
    except StoreUnavailable as exc:
        click.echo(f"start-up upgrade skipped: {exc.message}; run `gatekeeper store upgrade` "
                   "once the store is back", err=True)
    gate.recover_in_background()
    try:  # R11: signed audit checkpoints every audit.checkpoint_minutes
        checkpoints_in_background(gate)
    except GatekeeperError as exc:
        click.echo(f"note: no audit checkpoints are written: {exc.message}", err=True)
    if demo:
        loaded = demo_mod.load(gate)
        click.echo(loaded.describe() if loaded else
                   "--demo: the store already holds data; nothing was loaded (demo data is "
                   "loaded only into an empty store)")
    if not os.environ.get(cfg.secret_key_env):
        click.echo(f"note: ${cfg.secret_key_env} is not set; sessions last until this process "
                   "stops (R12: set it from a secret store)", err=True)
    app = create_app(gate)
    host, port = host or cfg.host, port if port is not None else cfg.port
    if host not in ("127.0.0.1", "localhost", "::1") and not app.config["SESSION_COOKIE_SECURE"]:
        click.echo(f"note: listening on {host} but server.public_url is not https://…: session "
                   "cookies are sent without Secure; put TLS in front and set it (README: "
                   "Behind a TLS proxy)", err=True)
    slots, queue = cfg.heavy_limits()
    # Heavy work is Python holding the GIL: a light request (/healthz, a page) waits for it
    # up to the switch interval per busy thread. 0.5 ms, not CPython's 5: on 2 cores under
    # load, /healthz's p99 beside two previews fell from ~350 to ~180 ms (bench/load.py).
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    click.echo(f"gatekeeper serving on http://{host}:{port}/ (waitress, {cfg.threads} threads; "
               f"heavy work: {slots} at once, {queue} waiting)")
    waitress.serve(app, host=host, port=port, threads=cfg.threads, ident="gatekeeper",
                   # Reading on while a request runs tells a request waiting for a heavy
                   # slot that its client left (heavy.py), so it gives up its place.
                   channel_request_lookahead=1,
                   # The app answers 413 in JSON up to twice the limit; waitress refuses
                   # anything larger before buffering it.
                   max_request_body_size=cfg.max_upload_mb * 2**21,
                   clear_untrusted_proxy_headers=True)
