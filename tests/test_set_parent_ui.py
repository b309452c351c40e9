"""Linking an existing entity to a parent (R10) from the entity page and from the CLI.

The history on fakeredis: acme (limit 1,000 Post IDs) has a child acme-labs; the pool has
received 500 (400 to acme-labs, 100 to acme). globex is the root of its own pool, with a user
and one share of 300 Post IDs. The compliance officer links globex to acme: the form is
role-checked and CSRF-protected, a refusal names R10 and changes nothing, and a link is shown
on the entity page, the dashboard and the audit log. The CLI command runs on the real embedded
store.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import CliRunner, Result
from flask.testing import FlaskClient
from live import form_token, share_ids, sign_in
from tables import Tables, entity_rows

from gatekeeper import config as config_mod
from gatekeeper.channels.cli.main import main
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer

PASSWORD = "correct horse battery"
REASON = "same company, contract C-12"


pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    (tmp_path / "config.toml").write_text('[limits]\npost_ids_per_entity = 1000\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)  # fake and real
    for name, parent in (("acme", None), ("acme-labs", "acme"), ("globex", None),
                         ("initech", None)):
        g.entities.add(name, kind="commercial", research=False, parent=parent, actor="t",
                       channel="cli")
        g.entities.accept_terms(name, by="Pat Signer", actor="t", channel="cli")
    for name, role, entity in (("cora", "compliance", "acme"), ("ana", "analyst", "acme"),
                               ("dan", "data", "acme"), ("gus", "data", "globex")):
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="t",
                    channel="cli")
    share_ids(g, tmp_path, "acme-labs", 400)
    share_ids(g, tmp_path, "acme", 100, start=1000)
    share_ids(g, tmp_path, "globex", 300, start=5000)
    return g


def login(client: FlaskClient, name: str = "cora") -> None:
    assert sign_in(client, name, PASSWORD) == 302


def post(client: FlaskClient, path: str, **data: str) -> Any:
    token = form_token(client.get("/login").get_data(as_text=True))
    return client.post(path, data={"csrf_token": token, **data})


def records(gate: Gate, root: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in gate.client.xrange(keys.audit(root))]


def state(gate: Gate) -> tuple[object, ...]:
    """Everything a link would change: the directory, both pools' streams, every key.

    Take it after a page was shown: the first read of the store records its layout version.
    """
    return (gate.client.hgetall(keys.ENTITIES), gate.client.xlen(keys.audit("acme")),
            gate.client.xlen(keys.audit("globex")), sorted(gate.client.keys("*")))


def assert_only_one_denial(gate: Gate, before: tuple[object, ...], kind: str) -> None:
    """`state` is `before` but for what a refused request writes: its one denial record (R11)
    in the user's pool (acme), that pool's refusal index and the denial flood counter."""
    denial = records(gate, "acme")[-1]
    assert (denial["outcome"], denial["kind"]) == ("denied", kind)

    def without(keys_: Any) -> list[bytes]:
        return [k for k in keys_ if b":denials:" not in k and not k.endswith(b":refusals")]

    entities, acme, globex, all_keys = state(gate)
    assert (entities, acme - 1, globex, without(all_keys)) == (*before[:3], without(before[3]))


# --- the form -----------------------------------------------------------------------------------


def test_the_form_is_offered_only_to_the_root_of_a_pool_without_children(
        client: FlaskClient) -> None:
    login(client)
    html = client.get("/entities/globex").get_data(as_text=True)
    t = Tables(html)
    assert 'id="parent"' in html and 'name="csrf_token"' in html
    assert "cannot be undone here" in t.ids["parent"]
    assert "count against the pool at once" in t.ids["parent"]
    offered = set(html.split('<datalist id="parent-choices">')[1].split("</datalist>")[0]
                  .replace('<option value="', " ").replace('">', " ").split())
    assert offered == {"acme", "acme-labs", "initech"}
    acme = client.get("/entities/acme").get_data(as_text=True)
    assert 'id="parent"' not in acme
    assert "link its children to the new parent instead" in Tables(acme).ids["fact-pool"]
    labs = client.get("/entities/acme-labs").get_data(as_text=True)
    assert 'id="parent"' not in labs
    assert "A child cannot move to another pool." in Tables(labs).ids["fact-pool"]


def test_a_compliance_officer_links_globex_to_acme(client: FlaskClient, gate: Gate) -> None:
    login(client)
    resp = post(client, "/entities/globex/parent", parent="acme", reason=REASON)
    assert resp.status_code == 302
    assert resp.headers["Location"].endswith("/entities/globex#parent")
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    t = Tables(page)
    assert t.ids["flash"] == ("R10: globex now pools its Post IDs with acme (parent acme); "
                              "300 Post IDs it received in the window now count against the "
                              "pool")
    assert t.ids["fact-pool"].startswith("child of acme; its Post IDs also count toward pool "
                                         "acme.")
    assert "Formerly the root of its own pool (globex)." in t.ids["fact-pool"]
    assert "A child cannot move to another pool." in t.ids["fact-pool"]
    assert 'id="parent"' not in page  # a child is offered no link
    assert t.ids["pool-usage"].startswith("Pool acme R10: 800 of 1,000 Post IDs used (80%)")
    assert t.rows("changes")[0][1:5] == ["entity.parent", "cora", "web", "R10"]
    e = gate.entities.get("globex")
    assert (e.parent, e.root, e.former_root) == ("acme", "acme", "globex")
    linked = records(gate, "acme")[-1]
    assert (linked["kind"], linked["rule"], linked["outcome"], linked["entity"],
            linked["actor"], linked["channel"]) == (
        "entity.parent", "R10", "changed", "globex", "cora", "web")
    assert REASON in linked["message"] and linked["merged_post_ids"] == "300"
    # The audit log page lists it too.
    log = Tables(client.get("/audit?entity=globex&rule=R10").get_data(as_text=True))
    newest = log.rows("audit-records")[0]
    assert newest[5] == "entity.parent" and REASON in " ".join(newest)


def test_the_dashboard_counts_globex_in_the_pool_of_acme(client: FlaskClient) -> None:
    login(client)
    before = entity_rows(client.get("/dashboard").get_data(as_text=True))
    assert before["acme"]["used"].startswith("500 / 1,000")
    assert post(client, "/entities/globex/parent", parent="acme",
                reason=REASON).status_code == 302
    rows = entity_rows(client.get("/dashboard").get_data(as_text=True))
    assert rows["acme"]["used"].startswith("800 / 1,000")  # 400 + 100 + globex's 300
    assert rows["acme"]["pool"] == "root of 3 entities"
    assert rows["globex"]["used"].startswith("300 / 1,000")
    assert rows["globex"]["pool"] == "acme: 800 / 1,000"


def test_linking_under_a_child_joins_the_childs_pool(client: FlaskClient, gate: Gate) -> None:
    login(client)
    resp = post(client, "/entities/globex/parent", parent="acme-labs", reason=REASON)
    assert resp.status_code == 302
    flash = Tables(client.get(resp.headers["Location"]).get_data(as_text=True)).ids["flash"]
    assert flash.startswith("R10: globex now pools its Post IDs with acme (parent acme-labs)")
    assert gate.entities.get("globex").root == "acme"


def test_linking_an_entity_without_usage_says_the_pool_is_unchanged(
        client: FlaskClient) -> None:
    login(client)
    resp = post(client, "/entities/initech/parent", parent="acme", reason=REASON)
    assert resp.status_code == 302
    flash = Tables(client.get(resp.headers["Location"]).get_data(as_text=True)).ids["flash"]
    assert flash.endswith("it received no Post IDs in the window, so pool usage is unchanged")


@pytest.mark.parametrize("who", ["ana", "dan"])
def test_analyst_and_data_roles_may_not_link(client: FlaskClient, gate: Gate,
                                             who: str) -> None:
    login(client, who)
    before = state(gate)
    assert post(client, "/entities/globex/parent", parent="acme",
                reason=REASON).status_code == 403
    assert_only_one_denial(gate, before, "access.denied")


def test_a_link_without_the_csrf_token_is_refused(client: FlaskClient, gate: Gate) -> None:
    login(client)
    assert client.get("/entities/globex").status_code == 200
    before = state(gate)
    resp = client.post("/entities/globex/parent", data={"parent": "acme", "reason": REASON})
    assert resp.status_code == 400
    assert_only_one_denial(gate, before, "access.csrf")


@pytest.mark.parametrize(("name", "parent", "reason", "status", "says"), [
    ("globex", "acme", "  ", 400, "say why"),
    ("globex", "globex", REASON, 400, "cannot be its own parent"),
    ("globex", "", REASON, 400, "name the entity globex is to be linked to"),
    ("acme", "globex", REASON, 400, "is the parent of acme-labs"),
    ("acme-labs", "globex", REASON, 400, "already pooled with acme"),
    ("acme-labs", "acme", REASON, 400, "already in the pool of acme"),
    ("globex", "nobody", REASON, 404, "no entity named 'nobody'"),
])
def test_a_refused_link_shows_r10_and_changes_nothing(
        client: FlaskClient, gate: Gate, name: str, parent: str, reason: str, status: int,
        says: str) -> None:
    login(client)
    assert client.get(f"/entities/{name}").status_code == 200
    before = state(gate)
    resp = post(client, f"/entities/{name}/parent", parent=parent, reason=reason)
    assert resp.status_code == status
    html = resp.get_data(as_text=True)
    error = Tables(html).ids["form-error"]
    assert error.startswith("Not recorded — nothing was changed.")
    assert says in error
    if status == 400:
        assert "R10" in error
    assert state(gate) == before
    if name == "globex":  # the form keeps what was typed
        assert f'name="reason" required placeholder="e.g. same company, contract C-12" ' \
               f'value="{reason}"' in html


# --- the CLI ------------------------------------------------------------------------------------

Run = Callable[..., Result]


@pytest.fixture
def runner(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Run]:
    """The CLI on an embedded store in tmp_path, stopped afterwards."""
    (tmp_path / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv(config_mod.ENV_CONFIG, raising=False)
    monkeypatch.delenv(config_mod.ENV_REDIS_URL, raising=False)

    def invoke(*args: str) -> Result:
        return CliRunner().invoke(main, list(args), catch_exceptions=False)

    for name in ("acme", "globex"):
        assert invoke("entity", "add", name, "--kind", "commercial").exit_code == 0
    yield invoke
    EmbeddedServer(tmp_path / "var").stop()


def cli_records(root: str) -> list[dict[str, str]]:
    db = EmbeddedServer(Path("var")).client(decode_responses=True)
    return [fields for _id, fields in db.xrange(keys.audit(root))]


def test_cli_set_parent_links_and_prints_the_entity(runner: Run) -> None:
    r = runner("entity", "set-parent", "globex", "--parent", "acme", "--reason", REASON, "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert (body["name"], body["parent"], body["pool"], body["former_pool"]) == (
        "globex", "acme", "acme", "globex")
    linked = cli_records("acme")[-1]
    assert (linked["kind"], linked["rule"], linked["channel"]) == ("entity.parent", "R10", "cli")
    assert linked["actor"].startswith("cli:") and REASON in linked["message"]
    shown = runner("entity", "show", "globex", "--json")
    assert json.loads(shown.output)["pool"] == "acme"


def test_cli_set_parent_says_what_it_did(runner: Run) -> None:
    r = runner("entity", "set-parent", "globex", "--parent", "acme", "--reason", REASON)
    assert r.exit_code == 0, r.output
    assert r.output.startswith("R10: globex now pools its Post IDs with acme (parent acme)")


@pytest.mark.parametrize(("args", "says"), [
    (("globex", "--parent", "globex", "--reason", REASON), "cannot be its own parent"),
    (("globex", "--parent", "acme", "--reason", " "), "say why"),
])
def test_cli_refused_link_exits_2_with_the_rule(runner: Run, args: tuple[str, ...],
                                                says: str) -> None:
    before = len(cli_records("acme")), len(cli_records("globex"))
    r = runner("entity", "set-parent", *args)
    assert r.exit_code == 2
    assert r.stderr.startswith("gatekeeper: R10: ") and says in r.stderr
    assert (len(cli_records("acme")), len(cli_records("globex"))) == before
    assert json.loads(runner("entity", "show", "globex", "--json").output)["pool"] == "globex"


def test_cli_unknown_parent_exits_2(runner: Run) -> None:
    r = runner("entity", "set-parent", "globex", "--parent", "nobody", "--reason", REASON,
            "--json")
    assert r.exit_code == 2
    assert json.loads(r.stdout)["error"] == "not_found"
