"""The people's side with Flask's test client: sign-in, terms, the export form and every refusal."""

from __future__ import annotations

import errno
import io
import re
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, form_token, sign_in

from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
KPOP = list(iter_posts(SAMPLES / "kpop.jsonl"))


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return build_gate(tmp_path, redis_client, kpop=True,  # fake and real
                      config="[limits]\nhydrated_per_recipient = 30\npost_ids_per_entity = 1000")


token_of = form_token


def login(client: FlaskClient, name: str = "ana", password: str = PASSWORD) -> int:
    return sign_in(client, name, password)


def accept_terms(client: FlaskClient) -> None:
    page = client.get("/terms").get_data(as_text=True)
    resp = client.post("/terms", data={"agree": "yes", "csrf_token": token_of(page, "csrf_token")})
    assert resp.status_code == 302


def export_page(client: FlaskClient, **query: str) -> str:
    resp = client.get("/export", query_string={"dataset": "kpop", **query})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return resp.get_data(as_text=True)


def export_form_data(page: str, fmt: str = "xlsx", **extra: str) -> dict[str, str]:
    form = page[page.index('id="export-form"'):]
    data = {"csrf_token": token_of(form, "csrf_token"), "ticket": token_of(form, "ticket"),
            "dataset": "kpop", "format": fmt}
    for name in ("since", "until", "lang", "contains", "author", "users"):
        m = re.search(rf'name="{name}" value="([^"]*)"', form)
        data[name] = m.group(1) if m else ""
    data.update(extra)
    return data


class Sent:
    """A response read whole and closed (an export's open file is released on close)."""

    def __init__(self, client: FlaskClient, data: dict[str, str], **kw: object) -> None:
        resp = client.post("/export", data=data, **kw)
        try:
            self.status_code = resp.status_code
            self.headers = resp.headers
            self.mimetype = resp.mimetype
            self.body = resp.get_data()
        finally:
            resp.close()

    def get_data(self, as_text: bool = False) -> bytes | str:
        return self.body.decode() if as_text else self.body

    def get_json(self) -> dict:
        import json

        return json.loads(self.body)


def r6_used(gate: Gate, user: str = "ana") -> int:
    from gatekeeper.domain import quota

    return quota.user_quota(gate, user)["used"]


def audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.audit("acme"))]


def test_export_downloads_an_xlsx_and_counts_it(client: FlaskClient, gate: Gate) -> None:
    from openpyxl import load_workbook

    assert login(client) == 302
    accept_terms(client)
    page = export_page(client, lang="ja")
    japanese = [p for p in KPOP if p.get("lang") == "ja"]
    assert f"{len(japanese)} posts match" in page
    resp = Sent(client, export_form_data(page))
    assert resp.status_code == 200
    assert resp.headers["Content-Disposition"].startswith("attachment;")
    assert resp.headers["Cache-Control"] == "no-store"
    book = load_workbook(io.BytesIO(resp.get_data()), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    header = list(rows[0])
    ids = [r[header.index("id")] for r in rows[1:]]
    assert ids == [p["id"] for p in japanese]
    assert r6_used(gate) == len(japanese)
    outcomes = [a["outcome"] for a in audit(gate) if a.get("kind") == "export.xlsx"]
    assert outcomes == ["granted", "delivered"]


def test_export_downloads_a_pdf(client: FlaskClient, gate: Gate) -> None:
    login(client)
    accept_terms(client)
    page = export_page(client, lang="in")
    resp = Sent(client, export_form_data(page, fmt="pdf"))
    assert resp.status_code == 200
    body = resp.get_data()
    assert body.startswith(b"%PDF-") and resp.mimetype == "application/pdf"
    assert r6_used(gate) == sum(1 for p in KPOP if p.get("lang") == "in")


def test_pages_need_a_login(client: FlaskClient) -> None:
    resp = client.get("/export")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert client.get("/terms").status_code == 302


def test_no_terms_means_no_export(client: FlaskClient, gate: Gate) -> None:
    login(client)
    resp = client.get("/export")
    assert resp.status_code == 302 and resp.headers["Location"].endswith("/terms")
    # A forged POST with a valid ticket is still refused by R8 and counts nothing.
    from gatekeeper.domain import hydrated

    ticket = hydrated.issue_ticket(gate, gate.users.get("ana"))
    page = client.get("/login").get_data(as_text=True)
    resp = Sent(client, {"csrf_token": token_of(page, "csrf_token"),
                                        "ticket": ticket, "dataset": "kpop", "format": "xlsx"})
    assert resp.status_code == 403
    assert "R8" in resp.get_data(as_text=True)
    assert r6_used(gate) == 0
    assert audit(gate)[-1]["rule"] == "R8" and audit(gate)[-1]["outcome"] == "denied"


def test_export_without_a_ticket_is_refused_r5(client: FlaskClient, gate: Gate) -> None:
    login(client)
    accept_terms(client)
    page = export_page(client, lang="ja")
    data = export_form_data(page)
    del data["ticket"]
    resp = Sent(client, data)
    assert resp.status_code == 403 and "R5" in resp.get_data(as_text=True)
    assert r6_used(gate) == 0
    assert audit(gate)[-1]["rule"] == "R5"


def test_a_replayed_ticket_is_refused_r5(client: FlaskClient, gate: Gate) -> None:
    login(client)
    accept_terms(client)
    data = export_form_data(export_page(client, lang="ja"))
    assert Sent(client, data).status_code == 200
    used = r6_used(gate)
    replay = Sent(client, data)
    assert replay.status_code == 403 and "already used" in replay.get_data(as_text=True)
    assert r6_used(gate) == used


def test_a_token_instead_of_a_session_is_refused_r5(client: FlaskClient, gate: Gate) -> None:
    token = gate.users.create_token("ana", actor="t", channel="cli")
    resp = Sent(client, {"dataset": "kpop"},
                       headers={"Authorization": f"Bearer {token}"})
    assert resp.status_code == 403
    assert resp.get_json()["error"] == "automated_hydrated_export_forbidden"
    assert audit(gate)[-1]["rule"] == "R5"


def test_over_the_allowance_says_what_is_left_and_counts_nothing(client: FlaskClient,
                                                                  gate: Gate) -> None:
    login(client)
    accept_terms(client)
    page = export_page(client)  # all 100 posts, allowance 30
    assert "more than you may still receive" in page
    resp = Sent(client, export_form_data(page))
    assert resp.status_code == 429
    html = resp.get_data(as_text=True)
    assert "nothing was counted" in html and "30 of" in html
    assert r6_used(gate) == 0
    assert audit(gate)[-1]["outcome"] == "refused"
    # The page offers the first 30, with a fresh ticket.
    offer = html[html.index('id="refusal"'):]
    data = {"csrf_token": token_of(offer, "csrf_token"), "ticket": token_of(offer, "ticket"),
            "dataset": "kpop", "format": "xlsx", "limit": token_of(offer, "limit")}
    assert data["limit"] == "30"
    assert Sent(client, data).status_code == 200
    assert r6_used(gate) == 30


def test_wrong_role_cannot_export(client: FlaskClient) -> None:
    login(client, "dan")
    assert client.get("/export").status_code == 403
    page = client.get("/terms").get_data(as_text=True)
    resp = Sent(client, {"csrf_token": token_of(page, "csrf_token")})
    assert resp.status_code == 403


def test_forms_need_the_csrf_token(client: FlaskClient) -> None:
    resp = client.post("/login", data={"username": "ana", "password": PASSWORD})
    assert resp.status_code == 400
    login(client)
    assert client.post("/terms", data={"agree": "yes"}).status_code == 400
    assert client.post("/logout").status_code == 400


def test_repeated_wrong_passwords_lock_the_name(client: FlaskClient) -> None:
    for _ in range(5):
        assert login(client, "ana", "wrong password!") == 401
    assert login(client, "ana", PASSWORD) == 401  # locked although right
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"username": "ana", "password": PASSWORD,
                                       "csrf_token": token_of(page, "csrf_token")})
    assert "too many failed sign-ins" in resp.get_data(as_text=True)


def test_login_never_redirects_off_site(client: FlaskClient) -> None:
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login?next=//evil.example/x",
                       data={"username": "ana", "password": PASSWORD,
                             "csrf_token": token_of(page, "csrf_token")})
    assert resp.status_code == 302 and resp.headers["Location"] == "/"


def test_deleted_posts_never_reach_an_export(client: FlaskClient, gate: Gate) -> None:
    korean = [p for p in KPOP if p.get("lang") == "ko"]  # 26 posts
    gate.deletions.add(iter([korean[0]["id"].encode()]), kind="posts", source="t",
                       actor="t", channel="cli")
    login(client)
    accept_terms(client)
    resp = Sent(client, export_form_data(export_page(client, lang="ko")))
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(resp.get_data()), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    ids = [r[list(rows[0]).index("id")] for r in rows[1:]]
    assert korean[0]["id"] not in ids and len(ids) == len(korean) - 1


def test_a_failing_writer_refunds_and_leaves_no_file(client: FlaskClient, gate: Gate,
                                                     monkeypatch: pytest.MonkeyPatch,
                                                     tmp_path: Path) -> None:
    import tempfile

    from gatekeeper.domain import hydrated

    def broken(*_a: object, **_k: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(hydrated, "_write", broken)
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    login(client)
    accept_terms(client)
    sent = Sent(client, export_form_data(export_page(client, lang="ja")))
    assert sent.status_code == 507
    assert b"No space left on device" in sent.body
    assert b"nothing was delivered or counted" in sent.body
    assert r6_used(gate) == 0
    assert [a["outcome"] for a in audit(gate) if a.get("kind") == "export.xlsx"] == [
        "granted", "refunded"]
    assert not [p for p in tmp_path.iterdir() if p.name.startswith("gatekeeper-export-")]
