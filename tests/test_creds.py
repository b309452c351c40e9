"""Credentials have a lifecycle, sessions end server-side, data at rest is private (R12).

Users are disabled, enabled, re-roled and re-passworded from the CLI and by an admin on the
web; tokens are listed and revoked; every change is audited; a sign-out, a password or role
change and disabling end the user's sessions at once; the embedded store's files are 0600
in a 0700 directory; /metrics is not open to anyone who can reach the port.
"""

from __future__ import annotations

import json
import stat
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import Result
from flask import Flask
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, form_token, sign_in

from gatekeeper import config as config_mod
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.errors import Conflict

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

NEW_PASSWORD = "another horse, stapled"


def _gate(tmp_path: Path, redis_client: redis.Redis, server: str = "") -> Gate:
    return build_gate(tmp_path, redis_client, config=f"[server]\n{server}",
                      users=(("ana", "analyst"), ("dan", "data"), ("cora", "compliance"),
                             ("adam", "admin")))


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return _gate(tmp_path, redis_client)  # fakeredis and a real server (conftest's `client`)


def _records(gate: Gate, kind: str) -> list[dict[str, str]]:
    out = []
    for stream in (keys.audit("acme"), keys.SYS_AUDIT):
        for _id, fields in gate.client.xrange(stream):
            rec = {k.decode(): v.decode() for k, v in fields.items()}
            if rec.get("kind") == kind:
                out.append(rec)
    return out


def _post(client: FlaskClient, path: str, page: str, **data: str) -> int:
    return client.post(path, data={"csrf_token": form_token(page), **data}).status_code


def _logout(client: FlaskClient) -> int:
    page = client.get("/account").get_data(as_text=True)
    return _post(client, "/logout", page)


# --- sessions end server-side ------------------------------------------------------------------


def test_a_session_cookie_saved_before_logout_opens_nothing_after_it(app: Flask) -> None:
    # Two clients outside `with`: a preserved request context would share Flask's `g` (and
    # with it Flask-Login's cached user) between them.
    web, thief = app.test_client(), app.test_client()
    assert sign_in(web, "cora", PASSWORD) == 302
    saved = web.get_cookie("session").value
    thief.set_cookie("session", saved)
    assert thief.get("/dashboard").status_code == 200  # the copy works while signed in
    assert _logout(web) == 302
    thief.set_cookie("session", saved)
    resp = thief.get("/dashboard")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


@pytest.mark.parametrize("change", ["password", "role", "disable"])
def test_a_password_or_role_change_or_disabling_ends_the_users_sessions(
        gate: Gate, client: FlaskClient, change: str) -> None:
    assert sign_in(client, "cora", PASSWORD) == 302
    assert client.get("/dashboard").status_code == 200
    if change == "password":
        gate.users.set_password("cora", NEW_PASSWORD, actor="t", channel="cli")
    elif change == "role":
        gate.users.set_role("cora", "admin", actor="t", channel="cli")
    else:
        gate.users.set_disabled("cora", True, actor="t", channel="cli")
    resp = client.get("/dashboard")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_sessions_have_an_idle_and_an_absolute_lifetime(
        gate: Gate, client: FlaskClient, monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_800_000_000]
    monkeypatch.setattr("gatekeeper.channels.web.sessions._now", lambda: now[0])
    assert gate.config.server.session_idle_minutes == 30
    assert gate.config.server.session_max_hours == 12
    assert sign_in(client, "cora", PASSWORD) == 302
    now[0] += 29 * 60
    assert client.get("/dashboard").status_code == 200  # used: the idle clock starts again
    now[0] += 29 * 60
    assert client.get("/dashboard").status_code == 200
    now[0] += 31 * 60
    assert client.get("/dashboard").status_code == 302  # idle too long
    assert sign_in(client, "cora", PASSWORD) == 302
    start = now[0]
    for _ in range(12 * 3):  # busy all day, never idle
        now[0] += 20 * 60
        if client.get("/dashboard").status_code != 200:
            break
    assert client.get("/dashboard").status_code == 302
    assert now[0] - start == 12 * 3600  # ended by the absolute lifetime, not before


# --- the web: own password, the admin page ------------------------------------------------------


def test_a_user_changes_their_own_password_on_the_web_audited(gate: Gate,
                                                             client: FlaskClient) -> None:
    assert sign_in(client, "ana", PASSWORD) == 302
    page = client.get("/account").get_data(as_text=True)
    assert _post(client, "/account", page, password="wrong password!!", new_password=NEW_PASSWORD,
                 confirm=NEW_PASSWORD) == 401
    resp = client.post("/account", data={"csrf_token": form_token(page), "password": PASSWORD,
                                      "new_password": NEW_PASSWORD, "confirm": NEW_PASSWORD})
    assert resp.status_code == 200 and "Password changed" in resp.get_data(as_text=True)
    assert client.get("/account").status_code == 200  # this browser stays signed in
    [rec] = _records(gate, "user.password")
    assert rec["actor"] == "ana" and rec["channel"] == "web" and rec["rule"] == "R12"
    assert _logout(client) == 302
    assert sign_in(client, "ana", PASSWORD) == 401
    assert sign_in(client, "ana", NEW_PASSWORD) == 302


def test_the_account_form_needs_a_csrf_token(client: FlaskClient) -> None:
    assert sign_in(client, "ana", PASSWORD) == 302
    assert client.post("/account", data={"password": PASSWORD, "new_password": NEW_PASSWORD,
                                      "confirm": NEW_PASSWORD}).status_code == 400


@pytest.mark.parametrize("name", ["ana", "dan", "cora"])
def test_only_admins_open_the_users_page(client: FlaskClient, name: str) -> None:
    assert client.get("/admin/users").status_code == 302  # not signed in: to the login page
    assert sign_in(client, name, PASSWORD) == 302
    assert client.get("/admin/users").status_code == 403
    page = client.get("/account").get_data(as_text=True)
    assert _post(client, "/admin/users/dan", page, action="disable") == 403


def test_an_admin_disables_re_roles_and_revokes_on_the_web_all_audited(
        gate: Gate, client: FlaskClient) -> None:
    token = gate.users.create_token("dan", actor="t", channel="cli")
    [row] = gate.users.list_tokens()
    assert sign_in(client, "adam", PASSWORD) == 302
    page = client.get("/admin/users").get_data(as_text=True)
    assert row["id"] in page and "never" in page
    assert client.post("/admin/users/dan", data={"action": "disable"}).status_code == 400  # CSRF
    assert _post(client, "/admin/users/dan", page, action="disable") == 302
    assert gate.users.get("dan").disabled
    assert _post(client, "/admin/users/dan", page, action="enable") == 302
    assert _post(client, "/admin/users/dan", page, action="role", role="analyst") == 302
    assert gate.users.get("dan").role == "analyst"
    assert _post(client, "/admin/users/dan", page, action="role", role="root") == 400
    assert _post(client, f"/admin/tokens/{row['id']}/revoke", page) == 302
    assert client.get("/api/v1/quota/entities/acme",
                   headers={"Authorization": f"Bearer {token}"}).status_code == 401
    assert row["id"] not in client.get("/admin/users").get_data(as_text=True)
    for kind in ("user.disable", "user.enable", "user.role", "token.revoke"):
        [rec] = _records(gate, kind)
        assert rec["actor"] == "adam" and rec["channel"] == "web" and rec["rule"] == "R12"


# --- tokens and disabled users on the API -------------------------------------------------------


def test_a_revoked_token_is_refused_at_once_and_a_disabled_users_token_too(
        gate: Gate, client: FlaskClient) -> None:
    token = gate.users.create_token("dan", actor="t", channel="cli")
    auth = {"Authorization": f"Bearer {token}"}
    assert client.get("/api/v1/quota/entities/acme", headers=auth).status_code == 200
    [row] = gate.users.list_tokens("dan")
    assert row["last_used"] is not None and row["user"] == "dan"
    gate.users.set_disabled("dan", True, actor="t", channel="cli")
    assert client.get("/api/v1/quota/entities/acme", headers=auth).status_code == 401
    gate.users.set_disabled("dan", False, actor="t", channel="cli")
    assert client.get("/api/v1/quota/entities/acme", headers=auth).status_code == 200
    gate.users.revoke_token(row["id"], actor="t", channel="cli")
    resp = client.get("/api/v1/quota/entities/acme", headers=auth)
    assert resp.status_code == 401 and resp.get_json()["rule"] == "R12"
    assert gate.users.list_tokens() == []


def test_a_disabled_user_cannot_sign_in(gate: Gate, client: FlaskClient) -> None:
    gate.users.set_disabled("ana", True, actor="t", channel="cli")
    assert sign_in(client, "ana", PASSWORD) == 401
    gate.users.set_disabled("ana", False, actor="t", channel="cli")
    assert sign_in(client, "ana", PASSWORD) == 302


# --- the CLI ------------------------------------------------------------------------------------


def test_cli_user_and_token_lifecycle_is_audited(runner: Callable[..., Result],
                                                 store_dir: Path) -> None:
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 0
    assert runner("user", "add", "dan", "--entity", "acme", "--role", "data",
               "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    users = json.loads(runner("user", "list", "--json").output)
    assert [(u["name"], u["role"], u["disabled"]) for u in users] == [("dan", "data", False)]
    assert runner("user", "disable", "dan").exit_code == 0
    assert "disabled" in runner("user", "list").output
    assert runner("user", "enable", "dan").exit_code == 0
    assert runner("user", "set-role", "dan", "analyst").exit_code == 0
    assert runner("user", "set-role", "dan", "root").exit_code == 2
    assert runner("user", "set-password", "dan", "--password-stdin",
               input="short\n").exit_code == 2
    assert runner("user", "set-password", "dan", "--password-stdin",
               input=NEW_PASSWORD + "\n").exit_code == 0
    tok = runner("token", "create", "dan").output.strip()
    [row] = json.loads(runner("token", "list", "--json").output)
    assert row["user"] == "dan" and row["prefix"] == "gk.dan." and row["last_used"] is None
    assert row["id"] in runner("token", "list").output
    assert runner("token", "revoke", "0123456789ab").exit_code == 2
    assert runner("token", "revoke", row["id"]).exit_code == 0
    assert runner("token", "revoke", row["id"]).exit_code == 2  # no live token with that id
    assert json.loads(runner("token", "list", "--json").output) == []
    g = Gate.open(store_dir / "config.toml")
    try:
        assert g.users.get("dan").role == "analyst"
        g.users.check_password("dan", NEW_PASSWORD)
        with pytest.raises(Exception, match="revoked"):
            g.users.user_for_token(tok)
        kinds = [k for k in ("user.disable", "user.enable", "user.role", "user.password",
                             "token.revoke") if _records(g, k)]
        assert len(kinds) == 5
        assert all(r["channel"] == "cli" for r in _records(g, "token.revoke"))
    finally:
        g.client.close()


# --- data at rest -------------------------------------------------------------------------------


def test_the_embedded_stores_files_are_0600_in_a_0700_directory(tmp_path: Path) -> None:
    data = tmp_path / "var"
    data.mkdir(mode=0o755)
    (data / "redis.log").write_text("left by an older version\n")
    (data / "redis.log").chmod(0o644)
    server = EmbeddedServer(data)
    server.start()
    try:
        client = server.client()
        client.set("gk:{sys}:x", "1")
        client.bgrewriteaof()
        client.save()  # an RDB too
        client.close()
        assert stat.S_IMODE(data.stat().st_mode) == 0o700
        seen = set()
        for path in [data, *data.rglob("*"), server.socket]:
            mode = stat.S_IMODE(path.stat().st_mode)
            if path.is_dir():
                assert mode == 0o700, path
            else:
                assert mode & 0o077 == 0, f"{path} is {oct(mode)}"
            seen.add(path.suffix or path.name)
        assert {".sock", ".rdb"} <= seen and any(p.name.endswith(".aof") or ".aof." in p.name
                                                 for p in data.rglob("*"))
    finally:
        server.stop()


# --- /metrics -----------------------------------------------------------------------------------


def test_metrics_answer_loopback_only_by_default_and_healthz_stays_open(
        app: Flask, client: FlaskClient) -> None:
    assert client.get("/metrics").status_code == 200  # the test client comes from 127.0.0.1
    far = {"REMOTE_ADDR": "203.0.113.7"}
    assert client.get("/metrics", environ_base=far).status_code == 403
    assert client.get("/healthz", environ_base=far).status_code == 200


def test_metrics_with_token_access_need_a_compliance_or_admin_token(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    gate = _gate(tmp_path, redis_client, 'metrics = "token"')
    app = create_app(gate, {"TESTING": True, "SECRET_KEY": "test"})
    web = app.test_client()
    assert web.get("/metrics").status_code == 401
    for name, status in (("dan", 403), ("ana", 403), ("cora", 200), ("adam", 200)):
        token = gate.users.create_token(name, actor="t", channel="cli")
        assert web.get("/metrics", headers={"Authorization": f"Bearer {token}"},
                       environ_base={"REMOTE_ADDR": "203.0.113.7"}).status_code == status
    assert web.get("/healthz").status_code == 200


def test_metrics_access_is_checked_in_the_config(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[server]\nmetrics = "everyone"\n')
    with pytest.raises(config_mod.ConfigError, match=r"server\.metrics"):
        config_mod.load(tmp_path / "config.toml")


# --- the last admin stays (R12) -----------------------------------------------------------------


def test_the_last_enabled_admin_can_be_neither_disabled_nor_demoted(gate: Gate,
                                                                   client: FlaskClient) -> None:
    before = len(_records(gate, "user.disable")) + len(_records(gate, "user.role"))
    with pytest.raises(Conflict, match="last enabled admin") as refused:
        gate.users.set_disabled("adam", True, actor="t", channel="cli")
    assert refused.value.rule == "R12"
    with pytest.raises(Conflict, match="last enabled admin"):
        gate.users.set_role("adam", "compliance", actor="t", channel="cli")
    assert sign_in(client, "adam", PASSWORD) == 302  # on the web too, for one's own account
    page = client.get("/admin/users").get_data(as_text=True)
    resp = client.post("/admin/users/adam",
                       data={"csrf_token": form_token(page), "action": "disable"})
    assert resp.status_code == 409 and "last enabled admin" in resp.get_data(as_text=True)
    user = gate.users.get("adam")
    assert not user.disabled and user.role == "admin"
    assert len(_records(gate, "user.disable")) + len(_records(gate, "user.role")) == before
    # With a second enabled admin, either may go; then the other is the last one again.
    gate.users.add("ada", entity="acme", role="admin", password=PASSWORD, actor="t",
                   channel="cli")
    gate.users.set_disabled("ada", True, actor="t", channel="cli")
    with pytest.raises(Conflict):
        gate.users.set_disabled("adam", True, actor="t", channel="cli")
    gate.users.set_disabled("ada", False, actor="t", channel="cli")
    assert gate.users.set_role("adam", "compliance", actor="t", channel="cli").role == "compliance"
    # Enabling, and changes to other users, are never refused by this rule.
    assert gate.users.set_disabled("dan", True, actor="t", channel="cli").disabled
