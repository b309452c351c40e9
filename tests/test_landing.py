"""Each role lands on its own page (issue 13, item 3), with Flask's test client on fakeredis and a
real Redis: the data team on its entities, quotas, shares and tokens; the admin on users and
tokens; the compliance officer on the dashboard. Nobody lands on a page whose only content is a
link to openapi.json, and the data page refuses every other role (R12)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import redis
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, form_token, share_ids, sign_in

from gatekeeper.domain.gate import Gate

USERS = (("ana", "analyst"), ("dan", "data"), ("cora", "compliance"), ("adam", "admin"),
         ("dora", "data"))


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    g = build_gate(tmp_path, redis_client, users=USERS, terms="Jo Acme",
                   config="[limits]\npost_ids_per_entity = 1000")
    # Has not attested to X's terms (R8): a share to it is refused, so it is not offered.
    g.entities.add("globex", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    return g


def landing(client: FlaskClient, name: str) -> str:
    """Where `name` lands after signing in: the path sign-in and then / send them to."""
    assert sign_in(client, name, PASSWORD) == 302
    resp = client.get("/", follow_redirects=True)
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.request.path != "/"  # never the page with only the API link
    return resp.request.path


@pytest.mark.parametrize(("name", "path"), [("ana", "/terms"), ("dan", "/data"),
                                            ("cora", "/dashboard"), ("adam", "/admin/users")])
def test_each_role_lands_on_its_own_page(client: FlaskClient, name: str, path: str) -> None:
    # ana has not accepted the terms yet: the export form sends her there first (R8).
    assert landing(client, name) == path


def test_the_data_page_shows_entities_quotas_next_release_and_recent_shares(
        client: FlaskClient, gate: Gate, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 30)
    landing(client, "dan")
    page = client.get("/data").get_data(as_text=True)
    entities = page[page.index('id="entities"'):page.index("</table>")]
    assert 'data-entity="acme"' in entities and "globex" not in entities
    assert "30 / 1,000" in entities and "970" in entities  # used / limit, remaining
    release = re.search(r'class="release">30 <span class="sub">(\d{4}-\d\d-\d\d \d\d:\d\d UTC)',
                        entities)
    assert release, entities  # when those 30 return, in a readable time
    shares = page[page.index('id="shares"'):]
    assert "share.posts" in shares and "acme" in shares and "granted" in shares


def test_a_token_made_on_the_data_page_is_shown_once_works_and_is_revoked_there(
        client: FlaskClient, gate: Gate) -> None:
    landing(client, "dan")
    page = client.get("/data").get_data(as_text=True)
    made = client.post("/data/tokens", data={"csrf_token": form_token(page)})
    assert made.status_code == 200
    token = re.search(r'id="new-token" class="token">([^<]+)<', made.get_data(as_text=True))
    assert token, made.get_data(as_text=True)
    api = {"Authorization": f"Bearer {token.group(1)}"}
    assert client.get("/api/v1/quota/entities/acme", headers=api).status_code == 200
    again = client.get("/data").get_data(as_text=True)
    assert token.group(1) not in again and 'id="new-token"' not in again  # shown once
    (token_id,) = re.findall(r'action="/data/tokens/([0-9a-f]+)/revoke"', again)
    resp = client.post(f"/data/tokens/{token_id}/revoke", data={"csrf_token": form_token(again)})
    assert resp.status_code == 302
    assert client.get("/api/v1/quota/entities/acme", headers=api).status_code == 401
    assert gate.users.list_tokens("dan") == []


def test_a_data_user_cannot_revoke_another_users_token(client: FlaskClient, gate: Gate) -> None:
    gate.users.create_token("dora", actor="t", channel="cli")
    (theirs,) = gate.users.list_tokens("dora")
    landing(client, "dan")
    page = client.get("/data").get_data(as_text=True)
    assert theirs["id"] not in page  # only their own tokens are listed
    resp = client.post(f"/data/tokens/{theirs['id']}/revoke",
                       data={"csrf_token": form_token(page)})
    assert resp.status_code == 404
    assert gate.users.list_tokens("dora") == [theirs]


def test_the_token_forms_need_the_csrf_token(client: FlaskClient, gate: Gate) -> None:
    gate.users.create_token("dan", actor="t", channel="cli")
    (mine,) = gate.users.list_tokens("dan")
    landing(client, "dan")
    assert client.post("/data/tokens").status_code == 400
    assert client.post(f"/data/tokens/{mine['id']}/revoke").status_code == 400
    assert gate.users.list_tokens("dan") == [mine]


@pytest.mark.parametrize("name", ["ana", "cora", "adam"])
def test_the_data_page_refuses_other_roles_r12(client: FlaskClient, gate: Gate,
                                                name: str) -> None:
    assert sign_in(client, name, PASSWORD) == 302
    page = client.get("/terms").get_data(as_text=True)
    assert client.get("/data").status_code == 403
    assert client.post("/data/tokens", data={"csrf_token": form_token(page)}).status_code == 403
    assert gate.users.list_tokens(name) == []


def test_the_data_page_needs_a_sign_in(client: FlaskClient) -> None:
    resp = client.get("/data")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


def test_the_admin_landing_shows_users_and_tokens(client: FlaskClient, gate: Gate) -> None:
    gate.users.create_token("dan", actor="t", channel="cli")
    landing(client, "adam")
    page = client.get("/admin/users").get_data(as_text=True)
    assert 'id="users"' in page and 'id="tokens"' in page and "dora" in page
