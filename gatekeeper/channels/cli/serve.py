"""`gatekeeper serve`: the web service and API under waitress, after the start-up work."""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, TextIO

import click

from gatekeeper.channels.cli.context import Context, cli_actor, pass_ctx
from gatekeeper.channels.cli.store import describe_upgrade
from gatekeeper.channels.cli.tables import on_terminal
from gatekeeper.domain.checkpoints import in_background as checkpoints_in_background
from gatekeeper.rules.errors import GatekeeperError, StoreUnavailable

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate

SWITCH_INTERVAL_S = 0.0005
# glibc's malloc, tuned for a long-lived threaded server (tune_malloc)
M_MMAP_THRESHOLD, M_ARENA_MAX = -3, -8  # mallopt's parameters (malloc.h)
MMAP_THRESHOLD = 1 << 20
ARENAS = 2


@click.command("serve")
@click.option("--host", help="Listen address (default server.host).")
@click.option("--port", type=int, help="Listen port (default server.port).")
@click.option("--demo", is_flag=True,
              help="Load demo entities, users and a 100,000-post dataset into an empty store.")
@pass_ctx
def serve(obj: Context, host: str | None, port: int | None, demo: bool) -> None:
    """Run the web service and API under waitress (a production WSGI server)."""
    import waitress

    from gatekeeper.channels.web import background
    from gatekeeper.channels.web.app import create_app

    tune_malloc()  # before any thread of ours starts
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
    if demo:  # before the first checkpoint, which then pins the demo's history too
        load_demo(gate)
    gate.recover_in_background()
    try:  # R11: signed audit checkpoints every audit.checkpoint_minutes
        checkpoints_in_background(gate)
    except GatekeeperError as exc:
        click.echo(f"note: no audit checkpoints are written: {exc.message}", err=True)
    if not os.environ.get(cfg.secret_key_env):
        click.echo(f"note: ${cfg.secret_key_env} is not set; sessions last until this process "
                   "stops (R12: set it from a secret store)", err=True)
    app = create_app(gate)
    try:  # notices an earlier run owed when it stopped (killed after an API ingest's answer)
        if background.at_start(app, cli_actor(), "cli"):
            click.echo("start-up: opening the deletion notices owed, in the background",
                       err=True)
    except GatekeeperError as exc:
        click.echo(f"start-up notices scan skipped: {exc.message}; the next ingest or "
                   "`gatekeeper notices scan` opens them", err=True)
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


def tune_malloc(environ: dict[str, str] | None = None) -> dict[str, int]:
    """Make the server's memory flat (glibc only; what was set, by name). By default glibc
    raises its mmap threshold to the largest block freed, so after one 1.5M-ID upload every
    buffer below ~30 MB comes from a heap that keeps it, and each of waitress's threads keeps
    such a heap of its own (an arena): the server grew from 99 to 237 MB over 18 uploads
    (bench/ids.py), peaks rising with it. Blocks of 1 MiB and more are mapped and given back
    when freed, and two arenas serve every thread: 99 MB after every upload, peaks 125-128
    MB. A MALLOC_ARENA_MAX or MALLOC_MMAP_THRESHOLD_ in the environment is left to glibc."""
    import ctypes
    import platform

    env = os.environ if environ is None else environ
    if platform.libc_ver()[0] != "glibc":
        return {}
    mallopt = ctypes.CDLL(None).mallopt
    done = {}
    for name, param, value in (("MALLOC_MMAP_THRESHOLD_", M_MMAP_THRESHOLD, MMAP_THRESHOLD),
                               ("MALLOC_ARENA_MAX", M_ARENA_MAX, ARENAS)):
        if name not in env and mallopt(param, value) == 1:  # 1: done
            done[name] = value
    return done


def load_demo(gate: Gate, posts: int = 100_000) -> None:
    """--demo: the demo and its story into an empty store, saying how far it got on stderr."""
    from gatekeeper.domain import demo

    shown = DemoProgress(sys.stderr, on_terminal())
    try:
        loaded = demo.load(gate, posts, progress=shown)
    finally:
        shown.close()
    click.echo(loaded.describe() if loaded else
               "--demo: the store already holds data; nothing was loaded (demo data is "
               "loaded only into an empty store)")


class DemoProgress:
    """What the demo build says while it runs (its `progress`), one stage per line.

    On a terminal the stages under way share one line, redrawn in place at most every
    REDRAW_S, and a stage's last words stay on a line of their own. Piped (a log), each stage
    gets a plain line when it starts and at each quarter — history at each week — so the log
    is never silent for long and never fills with redraws. Stages may report from two
    threads at once (registering the dataset beside the history).
    """

    REDRAW_S = 0.1

    def __init__(self, out: TextIO, terminal: bool) -> None:
        self.out, self.terminal = out, terminal
        self.lock = threading.Lock()
        self.live: dict[str, str] = {}  # unfinished stages, as last shown
        self.marks: dict[str, int] = {}
        self.drawn = 0.0

    @staticmethod
    def words(stage: str, done: int, total: int) -> str:
        if stage == "posts":
            return f"generating posts {done:,}/{total:,}"
        if stage == "bytes":
            return f"registering dataset {100 * done // max(total, 1)}%"
        if stage == "weeks":
            return (f"history: week {done + 1} of {total}" if done < total
                    else f"history: {total} weeks written")
        return f"{stage} {done:,}/{total:,}"

    def __call__(self, stage: str, done: int, total: int) -> None:
        text, finished = self.words(stage, done, total), done >= total
        with self.lock:
            if not self.terminal:
                mark = done if stage == "weeks" else 4 * done // max(total, 1)
                if self.marks.get(stage) != mark:
                    self.marks[stage] = mark
                    self._write(f"demo: {text}\n")
                return
            new = stage not in self.live
            self.live[stage] = text
            if finished:
                del self.live[stage]
                self._write(f"\r\x1b[Kdemo: {text}\n")
            now = time.monotonic()
            if self.live and (finished or new or now - self.drawn >= self.REDRAW_S):
                self.drawn = now
                self._write("\r\x1b[Kdemo: " + " · ".join(self.live.values()))

    def close(self) -> None:
        """End a line left open (the build stopped before a stage finished)."""
        with self.lock:
            if self.terminal and self.live:
                self._write("\n")
                self.live.clear()

    def _write(self, text: str) -> None:
        self.out.write(text)
        self.out.flush()
