"""Every denial is one audit record (R11, R12), and a flood of them is bounded per source."""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, sign_in

from gatekeeper.channels.web.app import create_app
from gatekeeper.domain import denials
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys

pytestmark = pytest.mark.usefixtures("quick_password_hashes")
ROLES = {"ana": "analyst", "dan": "data", "cora": "compliance", "adam": "admin"}


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return build_gate(tmp_path, redis_client, users=tuple(ROLES.items()))


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    # No `with`: a kept request context would lend its signed-in user to a second client.
    return app.test_client()


def records(gate: Gate, root: str | None = "acme") -> list[dict[str, str]]:
    stream = keys.SYS_AUDIT if root is None else keys.audit(root)
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(stream)]


def denied(gate: Gate, root: str | None = "acme") -> list[dict[str, str]]:
    return [r for r in records(gate, root) if r.get("outcome") == "denied"]


def bearer(gate: Gate, name: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {gate.users.create_token(name, actor='t', channel='cli')}"}


def test_a_data_user_opening_export_is_a_denial_record_r12(client: FlaskClient, gate: Gate) -> None:
    assert sign_in(client, "dan", PASSWORD) == 302
    assert client.get("/export").status_code == 403
    [rec] = denied(gate)
    assert (rec["rule"], rec["actor"], rec["kind"], rec["path"], rec["channel"]) == (
        "R12", "dan", "access.denied", "/export", "web")


def test_an_analyst_opening_the_dashboard_is_recorded_once(client: FlaskClient, gate: Gate) -> None:
    sign_in(client, "ana", PASSWORD)
    assert client.get("/dashboard").status_code == 403
    assert client.get("/audit").status_code == 403
    assert [r["path"] for r in denied(gate)] == ["/dashboard", "/audit"]


@pytest.mark.parametrize(("method", "path", "user"), [
    ("get", "/api/v1/quota/entities/acme", "ana"),
    ("get", "/api/v1/quota/users/dan", "ana"),
    ("post", "/api/v1/deletions?kind=posts", "dan"),
])
def test_api_role_denials_on_quota_and_deletions_are_recorded(
        client: FlaskClient, gate: Gate, method: str, path: str, user: str) -> None:
    resp = getattr(client, method)(path, headers=bearer(gate, user), data=b"1\n")
    assert resp.status_code == 403 and resp.get_json()["rule"] == "R12"
    [rec] = denied(gate)
    assert (rec["actor"], rec["channel"], rec["rule"]) == (user, "api", "R12")
    assert rec["path"] == path.split("?")[0]


@pytest.mark.parametrize("header", ["Bearer gk.dan.not-the-token", "Bearer nonsense",
                                    "Basic abc", None])
def test_a_bad_or_missing_token_is_recorded_in_the_system_stream(
        client: FlaskClient, gate: Gate, header: str | None) -> None:
    headers = {"Authorization": header} if header else {}
    assert client.get("/api/v1/quota/entities/acme", headers=headers).status_code == 401
    [rec] = denied(gate, None)
    assert (rec["actor"], rec["kind"], rec["source"], rec["rule"]) == (
        "unauthenticated", "access.unauthenticated", "127.0.0.1", "R12")
    assert denied(gate) == []


def test_failed_sign_ins_and_the_lockout_are_recorded(client: FlaskClient, gate: Gate) -> None:
    for _ in range(6):
        assert sign_in(client, "ana", "wrong password!") == 401
    recs = denied(gate, None)
    assert [r["kind"] for r in recs] == ["access.login"] * 6
    assert {r["login_name"] for r in recs} == {"ana"}
    assert "too many failed sign-ins" in recs[-1]["message"]
    assert "wrong user name or password" in recs[0]["message"]
    assert sign_in(client, "nobody", "wrong password!") == 401
    assert denied(gate, None)[-1]["login_name"] == "nobody"


def test_a_csrf_failure_is_recorded(app: Flask, client: FlaskClient, gate: Gate) -> None:
    assert client.post("/login", data={"username": "ana"}).status_code == 400
    [anonymous] = denied(gate, None)
    assert (anonymous["kind"], anonymous["actor"]) == ("access.csrf", "unauthenticated")
    sign_in(client, "ana", PASSWORD)
    assert client.post("/terms", data={"agree": "yes"}).status_code == 400
    [rec] = denied(gate)
    assert (rec["kind"], rec["actor"], rec["rule"]) == ("access.csrf", "ana", "R12")


def test_a_denial_recorded_where_it_is_raised_is_not_recorded_twice(
        client: FlaskClient, gate: Gate) -> None:
    # R5: /api/v1/exports records its refusal itself; the error handler must not add one.
    assert client.get("/api/v1/exports", headers=bearer(gate, "ana")).status_code == 403
    assert client.get("/export", headers=bearer(gate, "ana")).status_code == 403
    assert [r["rule"] for r in denied(gate)] == ["R5", "R5"]
    # R12 on a share is recorded by shares.authorise, under the target's pool.
    resp = client.post("/api/v1/shares?entity=acme", headers=bearer(gate, "ana"), data=b"1\n",
                    content_type="text/plain")
    assert resp.status_code == 403
    assert [r["rule"] for r in denied(gate)] == ["R5", "R5", "R12"]


def test_a_flood_from_one_source_is_bounded_and_summarised(
        app: Flask, client: FlaskClient, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    app.config["GATEKEEPER_DENIALS_PER_MINUTE"] = 5
    before = set(gate.client.keys())
    for _ in range(200):
        assert client.get("/api/v1/quota/entities/acme").status_code == 401
    assert len(denied(gate, None)) == 5
    # Three small keys hold the rest, however long the flood: the window and the counts.
    assert set(gate.client.keys()) - before == {
        keys.SYS_AUDIT.encode(), keys.refusals_of(keys.SYS_AUDIT).encode(),
        keys.chain_of(keys.SYS_AUDIT).encode(), keys.denial_window("ip:127.0.0.1").encode(),
        keys.DENIALS_SUPPRESSED.encode(), keys.DENIALS_DUE.encode()}
    # Another source is not silenced by the flood.
    with app.test_client() as other:
        sign_in(other, "dan", PASSWORD)
        assert other.get("/export").status_code == 403
    assert len(denied(gate)) == 1
    # The window rolls (as if a minute later): the next denial first writes the summary.
    gate.client.delete(keys.denial_window("ip:127.0.0.1"))
    later = gate.clock.now_ms() + 61_000
    monkeypatch.setattr(gate.clock, "now_ms", lambda: later)
    assert client.get("/api/v1/quota/entities/acme").status_code == 401
    *_, summary, after = denied(gate, None)
    assert summary["kind"] == "access.suppressed" and summary["rule"] == "R11"
    assert summary["suppressed"] == "195"
    assert summary["message"].startswith("195 more denials from ip:127.0.0.1 suppressed")
    assert after["kind"] == "access.unauthenticated"
    assert len(denied(gate, None)) == 7
    assert gate.client.hlen(keys.DENIALS_SUPPRESSED) == 0
    assert gate.client.zcard(keys.DENIALS_DUE) == 0


def test_a_summary_is_written_once_by_whichever_source_comes_next(
        app: Flask, client: FlaskClient, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    app.config["GATEKEEPER_DENIALS_PER_MINUTE"] = 1
    sign_in(client, "ana", PASSWORD)
    for _ in range(4):
        client.get("/dashboard")
    assert len(denied(gate)) == 1
    later = gate.clock.now_ms() + 61_000
    monkeypatch.setattr(gate.clock, "now_ms", lambda: later)
    # A different source (an anonymous address) writes ana's summary into ana's pool.
    with app.test_client() as anonymous:
        assert anonymous.get("/api/v1/quota/entities/acme").status_code == 401
        summaries = [r for r in denied(gate) if r["kind"] == "access.suppressed"]
        assert [(s["suppressed"], s["actor"]) for s in summaries] == [("3", "ana")]
        assert anonymous.get("/api/v1/quota/entities/acme").status_code == 401
    assert len([r for r in denied(gate) if r["kind"] == "access.suppressed"]) == 1


def test_a_plain_werkzeug_403_is_recorded_too(gate: Gate) -> None:
    # A route another module adds with abort(403) still leaves a record (the HTTP handler).
    from flask import abort

    app = create_app(gate, {"TESTING": True, "SECRET_KEY": "test"})
    app.add_url_rule("/closed", "closed", lambda: abort(403, "closed for you"))
    assert app.test_client().get("/closed").status_code == 403
    [rec] = denied(gate, None)
    assert (rec["path"], rec["rule"], rec["message"]) == ("/closed", "R12", "closed for you")


def test_a_store_that_cannot_take_the_record_still_answers_the_denial(
        client: FlaskClient, gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper.rules.errors import StoreUnavailable

    def down(*_a: object, **_k: object) -> None:
        raise StoreUnavailable("store away")

    monkeypatch.setattr(denials, "record", down)
    assert client.get("/api/v1/quota/entities/acme").status_code == 401
