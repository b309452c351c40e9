"""`gatekeeper user …`: people who use the service, and their credentials' lifecycle
(R12: each change is audited and ends the user's sessions)."""

from __future__ import annotations

import secrets
import sys

import click

from gatekeeper.channels.cli.context import Context, Group, cli_actor, emit, json_option, pass_ctx
from gatekeeper.channels.cli.tables import table
from gatekeeper.rules import policy, roles


@click.group(cls=Group)
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
                           actor=cli_actor(), channel="cli")
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
    u = obj.gate.users.accept_terms(name, actor=cli_actor(), channel="cli")
    emit(obj, u.to_dict(), f"R8: {name} accepted {', '.join(policy.TERMS)}")


@user.command("list")
@json_option
@pass_ctx
def user_list(obj: Context, as_json: bool) -> None:
    """Every user: entity, role, enabled or disabled."""
    users = obj.gate.users.list_users()
    emit(obj, [u.to_dict() for u in users], table(
        ["NAME", "ENTITY", "ROLE", "STATUS"],
        [[u.name, u.entity, u.role, "disabled" if u.disabled else "enabled"] for u in users],
        empty="no users"))


@user.command("disable")
@click.argument("name")
@json_option
@pass_ctx
def user_disable(obj: Context, name: str, as_json: bool) -> None:
    """Disable NAME: no sign-in, no API token, and their sessions end at once."""
    u = obj.gate.users.set_disabled(name, True, actor=cli_actor(), channel="cli")
    emit(obj, u.to_dict(), f"user {name} disabled")


@user.command("enable")
@click.argument("name")
@json_option
@pass_ctx
def user_enable(obj: Context, name: str, as_json: bool) -> None:
    """Enable NAME again (their tokens work again unless revoked)."""
    u = obj.gate.users.set_disabled(name, False, actor=cli_actor(), channel="cli")
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
    u = obj.gate.users.set_password(name, password, actor=cli_actor(), channel="cli")
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
    u = obj.gate.users.set_role(name, role, actor=cli_actor(), channel="cli")
    emit(obj, u.to_dict(), f"user {name} now has role {role}; their sessions ended")
