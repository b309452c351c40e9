"""The `gatekeeper` command: a thin translation between people and the library.

Exit codes (SPEC.md): 0 done · 2 bad input or usage · 3 refused by a quota (R2/R6) ·
4 refused by policy (R1, R5, R8, roles) · 5 store unavailable (fail closed).
There is deliberately no command that writes hydrated content (R1, R5).
"""

from __future__ import annotations

import contextlib
import getpass
import json
import os
import secrets
import sys
from pathlib import Path
from typing import Any

import click

from gatekeeper import config as config_mod
from gatekeeper.channels.cli.audit import audit_cli
from gatekeeper.channels.web.reports import report_cli
from gatekeeper.domain import quota, shares
from gatekeeper.domain.checkpoints import in_background as checkpoints_in_background
from gatekeeper.domain.datasets import Filters
from gatekeeper.domain.gate import (
    Gate,
    ingest_deletions,
    lift_deletion,
    record_permission,
    set_parent,
)
from gatekeeper.ledger import store
from gatekeeper.ledger.ledger import iso
from gatekeeper.rules import permissions, policy, roles
from gatekeeper.rules.errors import BadInput, GatekeeperError, StoreUnavailable


def _actor() -> str:
    """Who is at the terminal: CLI changes are audited as the operating-system user."""
    try:
        return f"cli:{getpass.getuser()}"
    except (KeyError, OSError):
        return "cli:unknown"


class Context:
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


def json_option(f: Any) -> Any:
    def mark(ctx: click.Context, _param: click.Parameter, value: bool) -> bool:
        ctx.ensure_object(Context).json = value
        return value

    return click.option("--json", "as_json", is_flag=True, callback=mark, expose_value=True,
                        help="Print the result as JSON.")(f)


def emit(obj: Context, data: Any, text: str) -> None:
    click.echo(json.dumps(data, indent=2, ensure_ascii=False) if obj.json else text)


pass_ctx = click.make_pass_decorator(Context)


@click.group(cls=Group)
@click.option("--config", "config_path", type=click.Path(dir_okay=False),
              help="config.toml to use. Without it: $GATEKEEPER_CONFIG, ./config.toml, "
                   "$XDG_CONFIG_HOME/gatekeeper/config.toml, /etc/gatekeeper/config.toml.")
@click.version_option(package_name="gatekeeper", message="gatekeeper %(version)s")
@click.pass_context
def main(ctx: click.Context, config_path: str | None) -> None:
    """gatekeeper — redistribution quotas and exports for X API content (R1-R12)."""
    ctx.obj = Context(config_path)


# --- entities ---------------------------------------------------------------------------------


@main.group(cls=Group)
def entity() -> None:
    """Organisations IDs are shared with (R2, R3, R4, R8, R10)."""


@entity.command("add")
@click.argument("name")
@click.option("--kind", type=click.Choice(policy.KINDS), required=True)
@click.option("--research", is_flag=True,
              help="R3: distribution is for non-commercial research (academic entities only).")
@click.option("--parent", help="R10: pool this entity's usage with a parent entity.")
@json_option
@pass_ctx
def entity_add(obj: Context, name: str, kind: str, research: bool, parent: str | None,
               as_json: bool) -> None:
    """Add an entity."""
    e = obj.gate.entities.add(name, kind=kind, research=research, parent=parent,
                              actor=_actor(), channel="cli")
    exempt = " — exempt from R2 (R3: academic, non-commercial research)" if e.exemption() else ""
    emit(obj, e.to_dict(), f"entity {name} added ({kind}){exempt}")


@entity.command("accept-terms")
@click.argument("name")
@click.option("--by", "by", required=True, help="The person who attested for the entity.")
@json_option
@pass_ctx
def entity_accept_terms(obj: Context, name: str, by: str, as_json: bool) -> None:
    """R8: record the entity's attestation of X's terms."""
    e = obj.gate.entities.accept_terms(name, by=by, actor=_actor(), channel="cli")
    emit(obj, e.to_dict(), f"R8: {name} attested by {by} ({policy.TERMS_VERSION})")


@entity.command("set-parent")
@click.argument("name")
@click.option("--parent", required=True, help="The entity whose pool NAME joins.")
@click.option("--reason", required=True, help="Why they are one entity (audited).")
@json_option
@pass_ctx
def entity_set_parent(obj: Context, name: str, parent: str, reason: str, as_json: bool) -> None:
    """R10: pool an existing entity with a parent; its usage so far counts against the pool.

    NAME must be the root of its own pool, without children. Its users, counters and shares
    move into the parent's pool; this cannot be undone.
    """
    link = set_parent(obj.gate, name, parent=parent, reason=reason, actor=_actor(),
                      channel="cli")
    emit(obj, {**link.entity.to_dict(), "merged_post_ids": link.merged_post_ids},
         link.describe())


@entity.command("permit")
@click.argument("name")
@click.option("--limit", "limit_text", required=True, help="New Post ID limit, or 'unlimited'.")
@click.option("--until", "until", required=True,
              help="Last day the permission is valid (YYYY-MM-DD, inclusive, in limits.timezone).")
@click.option("--reference", required=True, help="Reference of X's written permission.")
@json_option
@pass_ctx
def entity_permit(obj: Context, name: str, limit_text: str, until: str, reference: str,
                  as_json: bool) -> None:
    """R4: record X's express written permission for a different limit."""
    e = record_permission(obj.gate, name, limit=limit_text, until=until, reference=reference,
                          actor=_actor(), channel="cli")
    p = e.permission
    assert p is not None  # just recorded
    emit(obj, e.to_dict(), f"R4: {name} may receive {permissions.shown(p.limit)} Post IDs "
                           f"per window until {iso(p.valid_until_ms)} (reference: {reference})")


@entity.command("list")
@json_option
@pass_ctx
def entity_list(obj: Context, as_json: bool) -> None:
    """List entities."""
    rows = [e.to_dict() for e in obj.gate.entities.all()]
    lines = [f"{r['name']:<24} {r['kind']:<10} pool={r['pool']:<20} "
             f"{'R3-exempt' if r['exemption'] else ''}{' R4-permit' if r['permission'] else ''}"
             f"{'' if r['terms'] else ' (no R8 terms)'}".rstrip() for r in rows]
    emit(obj, rows, "\n".join(lines) or "no entities")


@entity.command("show")
@click.argument("name")
@json_option
@pass_ctx
def entity_show(obj: Context, name: str, as_json: bool) -> None:
    """Show one entity's facts."""
    data = obj.gate.entities.get(name).to_dict()
    emit(obj, data, "\n".join(f"{k:<11} {v if v is not None else '-'}" for k, v in data.items()))


# --- users and tokens -------------------------------------------------------------------------


@main.group(cls=Group)
def user() -> None:
    """People who use the service (roles: analyst, data, compliance, admin)."""


@user.command("add")
@click.argument("name")
@click.option("--entity", "entity_name", required=True)
@click.option("--role", type=click.Choice(roles.ROLES), required=True)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@json_option
@pass_ctx
def user_add(obj: Context, name: str, entity_name: str, role: str, password_stdin: bool,
             as_json: bool) -> None:
    """Add a user; without --password-stdin a password is generated and printed once."""
    generated = not password_stdin
    password = secrets.token_urlsafe(15) if generated else sys.stdin.readline().rstrip("\r\n")
    u = obj.gate.users.add(name, entity=entity_name, role=role, password=password,
                           actor=_actor(), channel="cli")
    data = u.to_dict()
    text = f"user {name} added to {entity_name} as {role}"
    if generated:
        data["password"] = password
        text += f"\npassword (shown once): {password}"
    emit(obj, data, text)


@user.command("accept-terms")
@click.argument("name")
@json_option
@pass_ctx
def user_accept_terms(obj: Context, name: str, as_json: bool) -> None:
    """R8: record the user's acceptance of X's terms."""
    u = obj.gate.users.accept_terms(name, actor=_actor(), channel="cli")
    emit(obj, u.to_dict(), f"R8: {name} accepted {', '.join(policy.TERMS)}")


@main.group(cls=Group)
def token() -> None:
    """API tokens for scripts (stored only as hashes, R12)."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@json_option
@pass_ctx
def token_create(obj: Context, user_name: str, as_json: bool) -> None:
    """Create an API token for USER; it is printed once and stored only as a hash."""
    tok = obj.gate.users.create_token(user_name, actor=_actor(), channel="cli")
    emit(obj, {"user": user_name, "token": tok}, tok)


# --- the credential lifecycle (R12): each change is audited and ends the user's sessions ----


@user.command("list")
@json_option
@pass_ctx
def user_list(obj: Context, as_json: bool) -> None:
    """Every user: entity, role, enabled or disabled."""
    users = obj.gate.users.list_users()
    emit(obj, [u.to_dict() for u in users], "\n".join(
        f"{u.name}\t{u.entity}\t{u.role}\t{'disabled' if u.disabled else 'enabled'}"
        for u in users) or "no users")


@user.command("disable")
@click.argument("name")
@json_option
@pass_ctx
def user_disable(obj: Context, name: str, as_json: bool) -> None:
    """Disable NAME: no sign-in, no API token, and their sessions end at once."""
    u = obj.gate.users.set_disabled(name, True, actor=_actor(), channel="cli")
    emit(obj, u.to_dict(), f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@json_option
@pass_ctx
def user_enable(obj: Context, name: str, as_json: bool) -> None:
    """Enable NAME again (their tokens work again unless revoked)."""
    u = obj.gate.users.set_disabled(name, False, actor=_actor(), channel="cli")
    emit(obj, u.to_dict(), f"user {name} enabled")


@user.command("set-password")
@click.argument("name")
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input.")
@json_option
@pass_ctx
def user_set_password(obj: Context, name: str, password_stdin: bool, as_json: bool) -> None:
    """Set NAME's password (generated and printed once without --password-stdin); their
    sessions end."""
    generated = not password_stdin
    password = secrets.token_urlsafe(15) if generated else sys.stdin.readline().rstrip("\r\n")
    u = obj.gate.users.set_password(name, password, actor=_actor(), channel="cli")
    data, text = u.to_dict(), f"password of {name} changed; their sessions ended"
    if generated:
        data["password"] = password
        text += f"\npassword (shown once): {password}"
    emit(obj, data, text)


@user.command("set-role")
@click.argument("name")
@click.argument("role", type=click.Choice(roles.ROLES))
@json_option
@pass_ctx
def user_set_role(obj: Context, name: str, role: str, as_json: bool) -> None:
    """Give NAME another role; their sessions end."""
    u = obj.gate.users.set_role(name, role, actor=_actor(), channel="cli")
    emit(obj, u.to_dict(), f"user {name} now has role {role}; their sessions ended")


@token.command("list")
@click.option("--user", "user_name", help="Only this user's tokens.")
@json_option
@pass_ctx
def token_list(obj: Context, user_name: str | None, as_json: bool) -> None:
    """Live API tokens: owner, id (for `token revoke`), prefix, created, last used."""
    rows = obj.gate.users.list_tokens(user_name)
    emit(obj, rows, "\n".join(
        f"{t['user']}\t{t['id']}\t{t['prefix']}…\tcreated {t['created_at']}\t"
        f"last used {t['last_used'] or 'never'}" for t in rows) or "no live tokens")


@token.command("revoke")
@click.argument("token_id", metavar="TOKEN_ID")
@json_option
@pass_ctx
def token_revoke(obj: Context, token_id: str, as_json: bool) -> None:
    """Revoke the token with TOKEN_ID (as `token list` shows it): refused from now on."""
    out = obj.gate.users.revoke_token(token_id, actor=_actor(), channel="cli")
    emit(obj, out, f"token {out['id']} of {out['user']} revoked")


# --- datasets and deletions ------------------------------------------------------------------

FILTER_HELP = {
    "since": "Posts created at or after (ISO 8601).",
    "until": "Posts created before (ISO 8601).",
    "lang": "Language code, e.g. en, ja.",
    "contains": "Text contains (case-insensitive).",
    "author": "Author username or user ID.",
}


def filter_options(f: Any) -> Any:
    """The dataset filters, the same everywhere (CLI, API, web form)."""
    for name in reversed(FILTER_HELP):
        f = click.option(f"--{name}", name, help=FILTER_HELP[name])(f)
    return f


def _filters(values: dict[str, Any]) -> Filters:
    return Filters.parse({k: v for k, v in values.items() if k in FILTER_HELP and v is not None})


@main.group(cls=Group)
def dataset() -> None:
    """Datasets of collected posts (JSONL or .jsonl.gz: twarc2 pages, v2 posts, v1.1 tweets)."""


@dataset.command("add")
@click.argument("name")
@click.argument("path", type=click.Path(path_type=Path))
@json_option
@pass_ctx
def dataset_add(obj: Context, name: str, path: Path, as_json: bool) -> None:
    """Validate PATH whole and register it as dataset NAME."""
    info = obj.gate.datasets.add(name, path, actor=_actor(), channel="cli")
    data = info.to_dict()
    emit(obj, data, f"dataset {name}: {data['posts']:,} posts registered")


@dataset.command("remove")
@click.argument("name")
@json_option
@pass_ctx
def dataset_remove(obj: Context, name: str, as_json: bool) -> None:
    """Unregister dataset NAME and delete its file (audited, R11)."""
    info = obj.gate.datasets.remove(name, actor=_actor(), channel="cli")
    emit(obj, info.to_dict(), f"dataset {name} removed: {info.posts:,} posts, {info.file} "
                              "deleted")


@dataset.command("list")
@json_option
@pass_ctx
def dataset_list(obj: Context, as_json: bool) -> None:
    """List datasets."""
    rows = [i.to_dict() for i in obj.gate.datasets.list()]
    lines = [f"{r['name']:<24} {r['posts']:>10,} posts  "
             f"{', '.join(r.get('languages') or [])[:40]}" for r in rows]
    emit(obj, rows, "\n".join(lines) or "no datasets")


@main.group(cls=Group)
def deletions() -> None:
    """R9: content deleted, protected, suspended or withheld on X."""


@deletions.command("add")
@click.argument("path", type=click.Path(path_type=Path))
@click.option("--kind", type=click.Choice(("posts", "users")),
              help="What the file lists (inferred from X's tweets_/users_ file names).")
@json_option
@pass_ctx
def deletions_add(obj: Context, path: Path, kind: str | None, as_json: bool) -> None:
    """Ingest a deletion list: plain IDs or X batch-compliance JSONL."""
    report = ingest_deletions(obj.gate, path, kind=kind, actor=_actor(), channel="cli")
    lines = [f"R9: {report.listed:,} {report.kind} listed ({report.new:,} newly hidden); from "
             "now on no share or export contains them"]
    if report.scrub_geo:
        lines.append(f"  {report.scrub_geo:,} scrub_geo: kept, exported without geo")
    if report.reversed:
        lines.append(f"  {report.reversed:,} reversal(s) recorded; they lift nothing "
                     "(`gatekeeper deletions lift` does, one ID at a time)")
    lines += [f"  dataset {name}: {n:,} stored posts newly hidden"
              for name, n in report.datasets.items()]
    emit(obj, report.to_dict(), "\n".join(lines))


@deletions.command("lift")
@click.argument("ident", metavar="ID")
@click.option("--reason", required=True, help="Why the ID may leave again (audited).")
@click.option("--kind", type=click.Choice(("posts", "users")), default="posts",
              show_default=True, help="The deletion list the ID is on.")
@click.option("--as", "actor", required=True, help="The compliance officer (or admin) lifting.")
@json_option
@pass_ctx
def deletions_lift(obj: Context, ident: str, reason: str, kind: str, actor: str,
                   as_json: bool) -> None:
    """R9: take one ID off a deletion list (X's reversals never do this by themselves)."""
    done = lift_deletion(obj.gate, ident, kind=kind, reason=reason, actor=actor, channel="cli")
    emit(obj, done, f"R9: {kind[:-1]} ID {ident} lifted by {actor}; it may leave again")


# --- sharing and quotas -----------------------------------------------------------------------


@main.command("share")
@click.option("--as", "actor", required=True, help="The data-team user sharing.")
@click.option("--entity", "entity_name", required=True, help="The recipient entity.")
@click.option("--ids", "ids_path", type=click.Path(path_type=Path),
              help="ID file to share: one decimal ID per line.")
@click.option("--dataset", help="Dataset to dehydrate (see `dataset list`).")
@filter_options
@click.option("--out", "out", required=True, type=click.Path(path_type=Path, dir_okay=False))
@click.option("--kind", type=click.Choice(policy.SHARE_KINDS), default="posts", show_default=True,
              help="Post IDs, or the distinct author User IDs of a dataset selection.")
@click.option("--allow-partial", is_flag=True,
              help="If the whole does not fit, deliver exactly the remaining allowance.")
@click.option("--purpose", help="Why the IDs are shared (recorded, R10).")
@click.option("--idempotency-key", help="A retry with the same key is counted once.")
@json_option
@pass_ctx
def share(obj: Context, actor: str, entity_name: str, ids_path: Path | None,
          dataset: str | None, out: Path, kind: str, allow_partial: bool, purpose: str | None,
          idempotency_key: str | None, as_json: bool, **filter_values: str | None) -> None:
    """Share IDs with an entity: checked (R8), counted (R2), R9-filtered, written to --out."""
    if (ids_path is None) == (dataset is None):
        raise BadInput("give exactly one of --ids FILE or --dataset NAME")
    filters = _filters(filter_values)
    if ids_path is not None and not filters.is_empty:
        raise BadInput("filters apply to --dataset, not to an --ids file")
    r = shares.share_to_file(obj.gate, actor=actor, entity=entity_name, out=out, kind=kind,
                             ids_path=ids_path, dataset=dataset, filters=filters,
                             allow_partial=allow_partial, purpose=purpose,
                             idempotency_key=idempotency_key, channel="cli")
    data = {**r.to_dict(), "out": str(out)}
    q = data["quota"]
    what = "Post IDs" if kind == "posts" else "User IDs"
    head = {"granted": "granted", "partial": "PARTIAL: granted", "replay":
            "already shared (same idempotency key, counted once):"}[r.grant.status]
    limit = "unlimited" if q["limit"] is None else f"{q['limit']:,}"
    remaining = "unlimited" if q["remaining"] is None else f"{q['remaining']:,}"
    text = (f"{head} {r.grant.granted:,} of {r.grant.requested:,} {what} to {entity_name} "
            f"-> {out}\nshare {r.grant.share_id}; {q['rule']}: used {q['used']:,} of {limit}, "
            f"{remaining} remaining in the {q['window']} window")
    if r.removed:
        text += f"\nR9: {r.removed:,} deleted/withheld IDs were left out"
    emit(obj, data, text)


def _quota_text(q: dict[str, Any]) -> str:
    def n(v: int | None) -> str:
        return "unlimited" if v is None else f"{v:,}"

    lines = [f"{q['name']} ({q['kind']}) — {q['rule']}, {q['window']} window, as of {q['as_of']}",
             f"  used       {n(q['used'])}", f"  limit      {n(q['limit'])}",
             f"  remaining  {n(q['remaining'])}"]
    if q.get("exemption"):
        lines.append("  exempt     R3: academic, non-commercial research "
                     f"(recorded by {q['exemption']['recorded_by']})")
    if q.get("permission"):
        p = q["permission"]
        lines.append(f"  permission R4: {n(p['limit'])} until {p['until']} ({p['reference']})")
    if q.get("pool"):
        p = q["pool"]
        lines.append(f"  pool       {p['name']}: {n(p['used'])} of {n(p['limit'])} used (R10)")
    for r in q["releases"][:5]:
        lines.append(f"  frees      {r['amount']:,} at {r['at']}")
    if len(q["releases"]) > 5:
        lines.append(f"  …          {len(q['releases']) - 5} more releases (see --json)")
    return "\n".join(lines)


@main.group(cls=Group)
def quota_cmd() -> None:
    """Used, limit, remaining and the next releases of capacity."""


main.add_command(quota_cmd, "quota")


@quota_cmd.command("entity")
@click.argument("name")
@json_option
@pass_ctx
def quota_entity(obj: Context, name: str, as_json: bool) -> None:
    """R2: an entity's Post IDs over the window."""
    q = quota.entity_quota(obj.gate, name)
    emit(obj, q, _quota_text(q))


@quota_cmd.command("user")
@click.argument("name")
@json_option
@pass_ctx
def quota_user(obj: Context, name: str, as_json: bool) -> None:
    """R6: a recipient's hydrated objects in the day window."""
    q = quota.user_quota(obj.gate, name)
    emit(obj, q, _quota_text(q))


main.add_command(audit_cli)
main.add_command(report_cli)


# --- the embedded store -----------------------------------------------------------------------


@main.group("store", cls=Group)
def store_cmd() -> None:
    """The embedded Redis server (redis.url = "embedded")."""


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
    """Clean up after crashes: partial files and spools, refunds owed, open reservations."""
    done = obj.gate.sweep()
    emit(obj, done, (
        f"removed {len(done['files_removed'])} leftover file(s)"
        + "".join(f"\n  {p}" for p in done["files_removed"])
        + f"\nrefunds sent {done['refunds_sent']}, still owed {done['refunds_owed']}"
        f"\n{done['abandoned']} reservation(s) left open past "
        f"{obj.gate.config.limits.reservation_timeout_minutes} min closed as counted "
        f"(share.abandoned, R2); {done['open']} open now, in {done['pools']} pool(s)"))
    if done["refunds_owed"]:
        sys.exit(5)


# --- a config file of one's own -------------------------------------------------------------


@main.command("init")
@click.option("--path", "path", type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write (default $XDG_CONFIG_HOME/gatekeeper/config.toml).")
@click.option("--data-dir", "data_dir", type=click.Path(file_okay=False, path_type=Path),
              help="The embedded store's directory, written absolute "
                   "(default $XDG_DATA_HOME/gatekeeper); datasets go in DATA_DIR/datasets.")
@json_option
@pass_ctx
def init(obj: Context, path: Path | None, data_dir: Path | None, as_json: bool) -> None:
    """Write a commented config file that every command finds; never overwrites one."""
    from gatekeeper.channels.cli import init as config_init

    written = config_init.write(path, data_dir)
    emit(obj, written.to_dict(), written.describe())


# --- the service --------------------------------------------------------------------------------


@main.command("serve")
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
    click.echo(f"gatekeeper serving on http://{host}:{port}/ (waitress, {cfg.threads} threads)")
    waitress.serve(app, host=host, port=port, threads=cfg.threads, ident="gatekeeper",
                   # The app answers 413 in JSON up to twice the limit; waitress refuses
                   # anything larger before buffering it.
                   max_request_body_size=cfg.max_upload_mb * 2**21,
                   clear_untrusted_proxy_headers=True)
