"""`gatekeeper token …`: API tokens for scripts (stored only as hashes, R12)."""

from __future__ import annotations

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import table


@click.group(cls=Group)
def token() -> None:
    """API tokens for scripts (stored only as hashes, R12)."""


@token.command("create")
@click.argument("user_name", metavar="USER")
@json_option
@pass_ctx
def token_create(obj: Context, user_name: str, as_json: bool) -> None:
    """Create an API token for USER; it is printed once and stored only as a hash."""
    tok = obj.gate.users.create_token(user_name, actor=cli_actor(), channel="cli")
    emit(obj, {"user": user_name, "token": tok}, tok)


@token.command("list")
@click.option("--user", "user_name", help="Only this user's tokens.")
@json_option
@pass_ctx
def token_list(obj: Context, user_name: str | None, as_json: bool) -> None:
    """Live API tokens: owner, id (for `token revoke`), prefix, created, last used."""
    rows = obj.gate.users.list_tokens(user_name)
    emit(obj, rows, table(
        ["USER", "ID", "PREFIX", "CREATED", "LAST USED"],
        [[t["user"], t["id"], f"{t['prefix']}…", t["created_at"], t["last_used"] or "never"]
         for t in rows], empty="no live tokens"))


@token.command("revoke")
@click.argument("token_id", metavar="TOKEN_ID")
@json_option
@pass_ctx
def token_revoke(obj: Context, token_id: str, as_json: bool) -> None:
    """Revoke the token with TOKEN_ID (as `token list` shows it): refused from now on."""
    out = obj.gate.users.revoke_token(token_id, actor=cli_actor(), channel="cli")
    emit(obj, out, f"token {out['id']} of {out['user']} revoked")
