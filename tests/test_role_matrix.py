"""The role matrix (R11, R12): every route × every role × {no session, session, token}.

Routes come from the app's url_map; EXPECTED says what each one answers. A route missing from
EXPECTED fails `test_every_route_has_an_expected_answer` by name, so a branch that adds a route
shows, at the merge, the line to add here. Each cell checks the answer and that a denial (a 401
or 403) wrote exactly one audit record with the expected rule and changed nothing else.

Answers: "ok" (served: anything below 500 that is not a denial or a sign-in redirect),
"login" (302 to the sign-in page: nobody is signed in, nothing was refused), "401 R12",
"403 R12", "403 R5".
"""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

import fakeredis
import pytest
from flask import Flask
from flask.testing import FlaskClient
from live import form_token, sign_in

from gatekeeper import config as config_mod
from gatekeeper.channels.web import background
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.rules import roles

pytestmark = pytest.mark.usefixtures("quick_password_hashes")
PASSWORD = "correct horse battery"
USERS = {"analyst": "ana", "data": "dan", "compliance": "cora", "admin": "adam"}
MODES = ("none", "session", "token")
Expect = Callable[[str, str], str]  # (mode, role) -> answer


def page(*roles: str) -> Expect:
    """A page behind sign-in and a role."""
    return lambda mode, role: ("ok" if role in roles else "403 R12") if mode == "session" \
        else "login"


def api(*roles: str) -> Expect:
    """An API route behind a token and a role."""
    return lambda mode, role: ("ok" if role in roles else "403 R12") if mode == "token" \
        else "401 R12"


def always(answer: str) -> Expect:
    return lambda mode, role: answer


def export_form_post(mode: str, role: str) -> str:
    if mode == "token":
        return "403 R5"  # a token at the export form is automation (R5)
    if mode == "none":
        return "login"
    # The analyst passes the role check; the empty form has no export ticket (R5).
    return "403 R5" if role == "analyst" else "403 R12"


COMPLIANCE = roles.MAY_RECORD_COMPLIANCE
EXPECTED: dict[str, Expect] = {
    "GET /static/<path:filename>": always("ok"),
    "GET /healthz": always("ok"),
    "GET /metrics": always("ok"),
    "GET /api/v1/openapi.json": always("ok"),
    "GET /": always("ok"),
    "GET /login": always("ok"),
    "POST /login": always("401 R12"),  # the empty form is a failed sign-in
    "POST /logout": always("login"),
    "GET /terms": page(*roles.ROLES),
    "POST /terms": page(*roles.ROLES),
    "GET /export": lambda mode, role: "403 R5" if mode == "token" else page("analyst")(mode, role),
    "POST /export": export_form_post,
    # The export page's script: how far an export has got, and a fresh allowance and ticket.
    "GET /export/progress/<pid>": lambda mode, role: "403 R5" if mode == "token"
    else page("analyst")(mode, role),
    # The matrix's analyst has not accepted X's terms: no allowance, no ticket (R8).
    "GET /export/state": lambda mode, role: "403 R5" if mode == "token"
    else {"ok": "403 R8"}.get(page("analyst")(mode, role), page("analyst")(mode, role)),
    "GET /dashboard": page(*COMPLIANCE),
    "GET /entities/<name>": page(*COMPLIANCE),
    "POST /entities/<name>/academic": page(*COMPLIANCE),
    "POST /entities/<name>/permission": page(*COMPLIANCE),
    "POST /entities/<name>/permission/revoke": page(*COMPLIANCE),
    "POST /entities/<name>/terms": page(*COMPLIANCE),
    "POST /entities/<name>/parent": page(*COMPLIANCE),
    "GET /audit": page(*COMPLIANCE),
    "GET /audit/export": page(*COMPLIANCE),
    "GET /report": page(*COMPLIANCE),
    "GET /trace": page(*roles.MAY_TRACE),
    "GET /notices": page(*COMPLIANCE),
    "GET /notices/<ident>": page(*COMPLIANCE),
    "POST /notices/<ident>/ack": page(*COMPLIANCE),
    # A notice's files: compliance, and its recipient — the person it is addressed to, an
    # entity's data team (others: 404; `test_a_notice_is_read_by_its_recipient_and_compliance`).
    "GET /notices/<ident>/files/<name>": page(*roles.MAY_RECEIVE_NOTICES, *COMPLIANCE),
    "GET /account": page(*roles.ROLES),
    # The empty form's current password is wrong: a denial, behind the sign-in lockout.
    "POST /account": lambda mode, role: "401 R12" if mode == "session" else "login",
    "GET /admin/users": page("admin"),
    "POST /admin/users/<name>": page("admin"),
    "POST /admin/tokens/<token_id>/revoke": page("admin"),
    "GET /data": page(*roles.MAY_SHARE_IDS),
    "POST /data/tokens": page(*roles.MAY_SHARE_IDS),
    "POST /data/tokens/<token_id>/revoke": page(*roles.MAY_SHARE_IDS),
    "POST /api/v1/shares": api(*roles.MAY_SHARE_IDS),
    "GET /api/v1/quota/entities/<name>": api("data", *COMPLIANCE),
    "GET /api/v1/quota/users/<name>": api("data", *COMPLIANCE),  # dan's own, or compliance
    "POST /api/v1/deletions": api(*COMPLIANCE),
    **{f"{m} /api/v1/exports{rest}": always("403 R5")
       for m in ("GET", "POST", "PUT", "PATCH", "DELETE") for rest in ("", "/<path:_rest>")},
}

# Answers that change the store by design: signing out ends the user's sessions (audited).
CHANGES_STORE = {"POST /logout"}

# How each route is called: its path (converters filled in) and request arguments.
PATHS = {"/api/v1/quota/users/<name>": "/api/v1/quota/users/dan",
         "/api/v1/shares": "/api/v1/shares?entity=acme",
         "/api/v1/deletions": "/api/v1/deletions?kind=posts"}
BODIES: dict[str, dict[str, Any]] = {
    "/api/v1/shares": {"data": b"1\n", "content_type": "text/plain"},
    "/api/v1/deletions": {"data": b"", "content_type": "text/plain"},
}


def routes(app: Flask) -> list[tuple[str, str, str]]:
    """(key, method, rule) for every route and method the app answers."""
    out = []
    for rule in app.url_map.iter_rules():
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            out.append((f"{method} {rule.rule}", method, rule.rule))
    return sorted(out)


def concrete(rule: str) -> str:
    if rule in PATHS:
        return PATHS[rule]
    path = re.sub(r"<(?:[a-z]+:)?name>", "acme", rule)
    return re.sub(r"<[^>]+>", "x", path)


def snapshot(gate: Gate) -> dict[bytes, Any]:
    """Every key and its value, except what a denial may write: the audit streams, their
    refusal indexes and directory, and the denial flood counters."""
    r = gate.client
    # Three more change by design: a failed sign-in counts towards the lockout, the export
    # form shown again after a refusal carries a fresh single-use ticket, and a token's last
    # use is noted (`token list` shows it).
    skip = re.compile(rb".*:(audit|refusals|audit:chain)$|.*:audit-streams$|.*:denials:.*"
                      rb"|.*:login-failures:.*|.*:ticket:.*|.*:tokens-used:.*")
    out: dict[bytes, Any] = {}
    for key in r.keys("*"):
        if skip.fullmatch(key):
            continue
        kind = r.type(key).decode()
        read = {"string": r.get, "hash": r.hgetall, "set": r.smembers, "list":
                lambda k: r.lrange(k, 0, -1), "zset": lambda k: r.zrange(k, 0, -1,
                                                                        withscores=True),
                "stream": lambda k: r.xrange(k)}[kind]
        value = read(key)
        if key.endswith(b":keys"):  # a pool's key index: entries of the keys skipped, too
            value = [(k, score) for k, score in value if not skip.fullmatch(k)]
        out[key] = (kind, value)
    return out


def denials(gate: Gate, after: dict[str, bytes] | None = None) -> dict[str, list[dict[str, str]]]:
    """The denied records of each audit stream, after the given last IDs."""
    out = {}
    for s in (keys.SYS_AUDIT, keys.audit("acme")):
        start = b"(" + after[s] if after and after.get(s) else b"-"
        out[s] = [{k.decode(): v.decode() for k, v in f.items()}
                  for _i, f in gate.client.xrange(s, min=start)
                  if f.get(b"outcome") == b"denied"]
    return out


def heads(gate: Gate) -> dict[str, bytes]:
    return {s: (gate.client.xrevrange(s, count=1) or [(b"", {})])[0][0]
            for s in (keys.SYS_AUDIT, keys.audit("acme"))}


@pytest.fixture
def gate(tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text('[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=fakeredis.FakeRedis())
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Alice Acme", actor="t", channel="cli")
    for role, name in USERS.items():
        g.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t", channel="cli")
    return g


@pytest.fixture
def app(gate: Gate) -> Flask:
    return create_app(gate, {"TESTING": True, "SECRET_KEY": "test",
                             "GATEKEEPER_DENIALS_PER_MINUTE": 10**9})


def test_every_route_has_an_expected_answer(app: Flask) -> None:
    known = {key for key, _m, _r in routes(app)}
    unknown = sorted(known - set(EXPECTED))
    stale = sorted(set(EXPECTED) - known)
    assert not unknown, f"routes with no line in EXPECTED (add one): {unknown}"
    assert not stale, f"EXPECTED names routes the app no longer has: {stale}"


def test_role_matrix_every_denial_is_audited_once_and_changes_nothing(
        app: Flask, gate: Gate) -> None:
    tokens = {role: gate.users.create_token(name, actor="t", channel="cli")
              for role, name in USERS.items()}
    problems: list[str] = []
    cells = 0
    for key, method, rule in routes(app):
        expect = EXPECTED.get(key)
        if expect is None:
            continue  # reported by test_every_route_has_an_expected_answer
        for mode in MODES:
            for role in (("-",) if mode == "none" else tuple(USERS)):
                want = expect(mode, role)
                got, note = _call(app, gate, method, rule, mode, role, tokens)
                cells += 1
                if got != want or note:
                    problems.append(f"{key:45} {mode:8} {role:10} want {want:8} got {got}"
                                    f"{' — ' + note if note else ''}")
    assert cells > 200
    assert not problems, "role matrix mismatches:\n" + "\n".join(problems)


def _client(app: Flask, mode: str, role: str) -> tuple[FlaskClient, str]:
    """A client in the given mode, and the CSRF token of its session (so each form passes
    CSRF and the matrix is about roles; CSRF failures are tested in test_denials)."""
    c = app.test_client()
    if mode == "session":
        assert sign_in(c, USERS[role], PASSWORD) == 302
    return c, form_token(c.get("/login").get_data(as_text=True))


def _call(app: Flask, gate: Gate, method: str, rule: str, mode: str, role: str,
          tokens: dict[str, str]) -> tuple[str, str]:
    client, csrf = _client(app, mode, role)
    headers = {"Authorization": f"Bearer {tokens[role]}"} if mode == "token" else {}
    before, head = snapshot(gate), heads(gate)
    kwargs: dict[str, Any] = dict(BODIES.get(rule, {"data": {"csrf_token": csrf}}))
    resp = client.open(concrete(rule), method=method, headers=headers, **kwargs)
    body = resp.get_data().decode(errors="replace")
    resp.close()  # a streamed share's spool is removed on close
    background.runner(app).drain()  # what an answer queued (a notices scan, an R10 check) done
    new = [r for recs in denials(gate, head).values() for r in recs]
    location = resp.headers.get("Location", "")
    if resp.status_code in (401, 403):
        got = f"{resp.status_code} {new[0]['rule'] if new else '?'}"
        if len(new) != 1:
            return got, f"{len(new)} denial records, not 1"
        if snapshot(gate) != before:
            return got, "the denial changed more than the audit log"
        return got, ""
    if new:
        return str(resp.status_code), f"{len(new)} denial records for an answer that is none"
    if resp.status_code >= 500:
        return str(resp.status_code), body[:200]
    if resp.status_code == 302 and location.split("?")[0].endswith("/login"):
        changed = snapshot(gate) != before and f"{method} {rule}" not in CHANGES_STORE
        return "login", "a sign-in redirect changed the store" if changed else ""
    return "ok", ""


def test_a_notice_is_read_by_its_recipient_and_compliance_only(
        app: Flask, gate: Gate, tmp_path: Path) -> None:
    """The routes that show an entity's deletion notice (R9) — the data team's page and the
    notice's files — for every role, with a real notice: dan's share to acme, hidden since.
    Another entity's data team and acme's analyst are told there is no such notice (404); the
    data pages' notices are the signed-in member's own entity's."""
    from live import share_ids

    from gatekeeper.domain.gate import ingest_deletion_stream

    gate.entities.add("globex", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.users.add("gil", entity="globex", role="data", password=PASSWORD, actor="t",
                   channel="cli")
    share_ids(gate, tmp_path, "acme", 3, start=1_700_000_000_000_000_000)
    [notice] = ingest_deletion_stream(gate, [b"1700000000000000001\n"], kind="posts",
                                      source="x.txt", actor="cora", channel="cli").notices
    files = {name: f"/notices/{notice}/files/{name}" for name in ("posts.txt", "letter.pdf")}
    # (who, signed in as) -> the answer of the data page (and whether it names the notice),
    # and of each file.
    want = {
        "anonymous": ("login", "login"),
        "analyst": (403, 404),
        "data of acme": ((200, True), 200),
        "data of globex": ((200, False), 404),
        "compliance": (403, 200),
        "admin": (403, 200),
    }
    names = {"analyst": "ana", "data of acme": "dan", "data of globex": "gil",
             "compliance": "cora", "admin": "adam"}
    got: dict[str, tuple[Any, Any]] = {}
    for who in want:
        c = app.test_client()
        if who in names:
            assert sign_in(c, names[who], PASSWORD) == 302

        def answer(url: str, client: FlaskClient = c) -> Any:
            resp = client.get(url)
            body = resp.get_data().decode(errors="replace")  # a PDF too
            resp.close()
            if resp.status_code == 302 and "/login" in resp.headers["Location"]:
                return "login"
            if url == "/data" and resp.status_code == 200:
                return 200, f'data-notice="{notice}"' in body
            return resp.status_code

        answers = {answer(url) for url in files.values()}
        assert len(answers) == 1, (who, answers)
        got[who] = (answer("/data"), answers.pop())
    assert got == want
