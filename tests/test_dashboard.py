"""The compliance dashboard and entity pages over a known history on fakeredis.

The history: a commercial pool (acme with child acme-labs) near its limit, an exempt university,
an entity with a written permission, two names that are one entity split up, two entities that
share a person, an over-limit refusal, an R8 denial and a recipient's hydrated objects. The pages
must show exactly those figures; every form is role-checked, CSRF-protected and audited.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import fakeredis
import pytest
import redis
import redis.client
from flask.testing import FlaskClient
from live import form_token, share_ids, sign_in
from tables import Tables, entity_rows

from gatekeeper import config as config_mod
from gatekeeper.channels.web import charts
from gatekeeper.channels.web import compliance as compliance_pages
from gatekeeper.channels.web.metrics import Metrics
from gatekeeper.domain import dashboard
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import charges, keys
from gatekeeper.ledger.ledger import LAYOUT
from gatekeeper.rules import policy, splitting
from gatekeeper.rules.errors import GatekeeperError, QuotaExceeded

PASSWORD = "correct horse battery"


pytestmark = pytest.mark.usefixtures("quick_password_hashes")


def add(gate: Gate, name: str, kind: str = "commercial", research: bool = False,
        parent: str | None = None, terms: str | None = "Pat Signer") -> None:
    gate.entities.add(name, kind=kind, research=research, parent=parent, actor="t",
                      channel="cli")
    if terms:
        gate.entities.accept_terms(name, by=terms, actor="t", channel="cli")


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 1000\nhydrated_per_recipient = 30\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)  # fake and real
    add(g, "acme")
    add(g, "acme-labs", parent="acme")
    add(g, "northfield-university", kind="academic")
    g.entities.set_academic("northfield-university", kind="academic", research=True,
                            evidence="research agreement NU-7", actor="cora", channel="web")
    add(g, "globex")
    until = int((datetime.now(UTC) + timedelta(days=60)).timestamp() * 1000)
    g.entities.permit("globex", limit=2000, until_ms=until, reference="X-PERM-42", actor="cora",
                      channel="cli")
    add(g, "Acme_Inc", terms="Lee Other")
    add(g, "initech", terms=None)
    add(g, "umbrella", terms="Sam Third")
    for name, role, entity in (("cora", "compliance", "acme"), ("ana", "analyst", "acme"),
                               ("dan", "data", "acme"), ("ada", "admin", "acme"),
                               ("j.smith", "analyst", "initech"),
                               ("J_Smith", "analyst", "umbrella")):
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="t",
                    channel="cli")
    share_ids(g, tmp_path, "acme-labs", 850)
    share_ids(g, tmp_path, "globex", 300)
    share_ids(g, tmp_path, "northfield-university", 5000)
    with pytest.raises(QuotaExceeded):
        share_ids(g, tmp_path, "acme", 200)  # only 150 left in the pool: refused whole (R2)
    with pytest.raises(GatekeeperError):
        share_ids(g, tmp_path, "initech", 10)  # no attestation: denied (R8)
    ana = g.users.get("ana")
    g.ledger.take(ana.root, [charges.hydrated_counter(ana, 12, g.config.limits)], requested=12,
                  share_id=uuid.uuid4().hex, audit={"actor": "ana", "kind": "export.xlsx",
                                                    "entity": "acme", "recipient": "ana"})
    return g


def csrf(client: FlaskClient) -> str:
    return form_token(client.get("/login").get_data(as_text=True))


def login(client: FlaskClient, name: str = "cora") -> None:
    assert sign_in(client, name, PASSWORD) == 302


def order(html: str) -> list[str]:
    return re.findall(r'<tr data-entity="([^"]+)"', html)


# --- the dashboard ------------------------------------------------------------------------------


def test_dashboard_shows_every_entity_with_exactly_its_figures(client: FlaskClient) -> None:
    login(client)
    resp = client.get("/dashboard")
    assert resp.status_code == 200
    rows = entity_rows(resp.get_data(as_text=True))
    assert set(rows) == {"acme", "acme-labs", "northfield-university", "globex", "Acme_Inc",
                         "initech", "umbrella"}
    acme = rows["acme"]
    assert acme["used"] == "850 / 1,000" and acme["remaining"] == "150"
    assert acme["ratio"] == "85%" and acme["pool"] == "root of 2 entities"
    assert acme["release"].startswith("850 ")
    labs = rows["acme-labs"]
    assert labs["used"] == "850 / 1,000" and labs["pool"] == "acme: 850 / 1,000"
    assert labs["entity"] == "acme-labs commercial · child of acme"
    globex = rows["globex"]
    assert globex["used"] == "300 / 2,000" and globex["remaining"] == "1,700"
    assert globex["ratio"] == "15%"
    assert globex["basis"].startswith("R4 permission 2,000 through ")
    uni = rows["northfield-university"]
    assert uni["used"] == "5,000 / no limit" and uni["remaining"] == "—"
    assert uni["basis"] == "R3 exempt academic research: research agreement NU-7"
    assert rows["initech"]["terms"] == "none" and rows["acme"]["terms"] == "Pat Signer"
    assert rows["umbrella"]["used"] == "0 / 1,000"


def test_dashboard_lists_near_limit_first_then_by_ratio(client: FlaskClient) -> None:
    login(client)
    html = client.get("/dashboard").get_data(as_text=True)
    assert order(html) == ["acme", "acme-labs", "globex", "Acme_Inc", "initech", "umbrella",
                           "northfield-university"]
    assert 'data-entity="acme" class="near"' in html
    by_name = client.get("/dashboard?sort=name").get_data(as_text=True)
    assert order(by_name) == sorted(order(html))
    by_used = client.get("/dashboard?sort=used").get_data(as_text=True)
    assert order(by_used)[:2] == ["northfield-university", "acme"]


def test_dashboard_summary_counts(client: FlaskClient) -> None:
    login(client)
    ids = Tables(client.get("/dashboard").get_data(as_text=True)).ids
    assert ids["n-entities"] == "7"
    assert ids["n-near"] == "2"
    assert ids["n-at-limit"] == "0"
    assert ids["n-exempt"] == "1"
    assert ids["n-permissions"] == "1"
    assert ids["n-flags"] == "2"


def test_search_is_a_case_insensitive_name_substring(client: FlaskClient) -> None:
    login(client)
    html = client.get("/dashboard?q=ACME").get_data(as_text=True)
    assert order(html) == ["acme", "acme-labs", "Acme_Inc"]
    assert 'value="ACME"' in html
    none = client.get("/dashboard?q=nobody").get_data(as_text=True)
    assert order(none) == [] and "No entity whose name contains" in none


def test_the_table_pages_server_side(client: FlaskClient,
                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(compliance_pages, "PER_PAGE", 3)
    login(client)
    first = client.get("/dashboard").get_data(as_text=True)
    assert order(first) == ["acme", "acme-labs", "globex"]
    assert "page 1 of 3" in first
    third = client.get("/dashboard?page=3").get_data(as_text=True)
    assert order(third) == ["northfield-university"]
    assert client.get("/dashboard?page=99").status_code == 200  # clamped to the last page


def test_recipients_show_hydrated_objects_against_r6(client: FlaskClient) -> None:
    login(client)
    t = Tables(client.get("/dashboard").get_data(as_text=True))
    users = t.by("recipients", "data-user")
    assert users["ana"][2:5] == ["analyst", "12 / 30", "18"]
    assert list(users) == ["ana"]  # only those who received something in the window
    assert "5 other users received none" in t.ids["recipients-note"]


def test_only_recipients_in_the_active_index_are_read(gate: Gate) -> None:
    """A recipient whose last export left the R6 window is not peeked at all: the pool's
    index of active counters (take.lua) no longer lists them."""
    dan = gate.users.get("dan")
    counter = charges.hydrated_counter(dan, 7, gate.config.limits)
    long_ago = int((datetime.now(UTC) - timedelta(days=2)).timestamp() * 1000)
    gate.ledger.take(dan.root, [counter], requested=7, share_id="old", audit={},
                     now_ms=long_ago)
    assert gate.client.zscore(keys.active(dan.root), counter.key) < long_ago + 2 * 86_400_000
    ov = dashboard.overview(gate)
    assert [(u.name, u.usage.used) for u in ov.users] == [("ana", 12)]
    assert ov.recipients == 6  # everyone in the directory, idle or not


def test_a_store_from_before_the_index_is_indexed_once_by_the_upgrade_not_by_a_page(
        gate: Gate) -> None:
    ana = gate.users.get("ana")
    gate.client.delete(keys.active(ana.root), keys.LAYOUT)
    limits = gate.config.limits
    done = gate.ledger.upgrade(limits)
    assert done["counters"] >= 4  # ana's R6, the pools' R2/User IDs
    assert int(gate.client.get(keys.LAYOUT)) == LAYOUT
    assert gate.ledger.upgrade(limits) == {"counters": 0, "refusals": 0, "keys": 0,
                                          "notices": 0}  # done once
    gate.client.delete(keys.active(ana.root), keys.LAYOUT)
    ov = dashboard.overview(gate)  # a page only reads: it says the store is behind
    assert ov.outdated and ov.users == []
    assert gate.client.get(keys.LAYOUT) is None and not gate.client.exists(keys.active(ana.root))
    gate.upgrade(actor="t", channel="cli")  # what `gatekeeper serve` and `store upgrade` run
    ov = dashboard.overview(gate)
    assert not ov.outdated
    assert [(u.name, u.usage.used) for u in ov.users] == [("ana", 12)]
    assert ov.row("acme-labs").own.used == 850


def test_latest_refusals_come_from_the_refusal_indexes_whatever_came_after(
        gate: Gate, tmp_path: Path) -> None:
    """A busy day of grants after the refusals does not hide them or slow the page: each
    stream's refusal index holds copies of its latest refusals under the same IDs."""
    acme_audit = keys.audit("acme")
    index = {rid: f for rid, f in gate.client.xrange(keys.refusals_of(acme_audit))}
    for rid, fields in gate.client.xrange(acme_audit):
        if fields[b"outcome"] in (b"refused", b"denied", b"conflict"):
            assert index.pop(rid) == fields
    assert index == {}  # nothing but refusals, each the same record
    for i in range(30):
        share_ids(gate, tmp_path, "globex", 1, start=100_000 + i)
    ov = dashboard.overview(gate)
    assert [(r.get("outcome"), r.get("rule"), r.get("entity")) for r in ov.refusals] == [
        ("denied", "R8", "initech"), ("refused", "R2", "acme")]


def test_latest_refusals_across_many_streams_are_the_newest_twenty(gate: Gate) -> None:
    made = []
    for i in range(30):
        root = ("acme", "globex", "umbrella")[i % 3]
        out = gate.ledger.record(keys.placeholder(root), keys.audit(root), mode="audit",
                                 fields={}, audit={"outcome": "denied", "rule": "R1",
                                                   "kind": f"n{i}", "entity": root})
        made.append(out["audit_id"])
    ov = dashboard.overview(gate)
    assert [r.id for r in ov.refusals] == made[::-1][:dashboard.RECENT_REFUSALS]


def test_a_refusal_index_keeps_the_latest_hundred(gate: Gate) -> None:
    for i in range(130):
        gate.ledger.record(keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
                           audit={"outcome": "denied", "rule": "R1", "kind": f"n{i}"})
    kept = gate.client.xrange(keys.refusals_of(keys.SYS_AUDIT))
    assert len(kept) == 100 and kept[-1][1][b"kind"] == b"n129"
    assert gate.client.xlen(keys.SYS_AUDIT) >= 130  # the audit stream keeps every record


def test_a_store_from_before_the_refusal_index_is_indexed_once(gate: Gate) -> None:
    gate.ledger.upgrade(gate.config.limits)
    before = gate.client.xrange(keys.refusals_of(keys.audit("acme")))
    assert before  # the fixture's R2 refusal
    gate.client.delete(keys.refusals_of(keys.audit("acme")),
                       keys.refusals_of(keys.audit("initech")))
    gate.client.set(keys.LAYOUT, 2)
    assert gate.ledger.upgrade(gate.config.limits)["refusals"] == 2
    assert gate.client.xrange(keys.refusals_of(keys.audit("acme"))) == before
    ov = dashboard.overview(gate)
    assert [r.get("entity") for r in ov.refusals] == ["initech", "acme"]


def test_latest_refusals_newest_first(client: FlaskClient) -> None:
    login(client)
    t = Tables(client.get("/dashboard").get_data(as_text=True))
    rows = t.rows("refusals")
    assert [(r[1], r[2], r[3]) for r in rows] == [("denied", "R8", "initech"),
                                                  ("refused", "R2", "acme")]
    assert rows[1][7] == "200"
    assert "would pass the R2 limit" in rows[1][8] and "Fits whole again from" in rows[1][8]
    assert "has not attested" in rows[0][8]


def test_refusals_are_read_from_every_stream_and_capped(gate: Gate) -> None:
    for i in range(25):
        gate.ledger.record(keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
                           audit={"outcome": "denied", "rule": "R1", "kind": f"n{i}"})
    ov = dashboard.overview(gate)
    assert len(ov.refusals) == dashboard.RECENT_REFUSALS
    assert ov.refusals[0].get("kind") == "n24" and ov.refusals[0].pool is None


def test_splitting_flags_explain_names_and_people(client: FlaskClient) -> None:
    login(client)
    html = client.get("/dashboard").get_data(as_text=True)
    flags = html[html.index('id="flags"'):html.index('id="refusals-h"')]
    assert "Acme_Inc and acme are the same name once case, punctuation and legal suffixes" \
        in flags
    assert "user J_Smith of umbrella and user j.smith of initech look like the same person" \
        in flags


def test_splitting_rules() -> None:
    from gatekeeper.domain.entities import Entity

    def e(name: str, root: str | None = None) -> Entity:
        return Entity(name, "commercial", False, None, None, None, None, root or name, 0, None,
                      None)

    assert splitting.normalise_entity("Northfield University") == "northfield"
    assert splitting.normalise_entity("ACME, Inc.") == "acme"
    flags = splitting.possible_splitting(
        [e("northfield-univ"), e("Northfield_University"), e("contoso"), e("contoso-eu"),
         e("fabrikam"), e("fabrikan"), e("ibm"), e("hp"), e("ab"), e("cd"),
         e("initech"), e("initech-labs", "initech")], [])
    groups = {f.entities: f.reasons for f in flags}
    assert set(groups) == {("Northfield_University", "northfield-univ"),
                           ("contoso", "contoso-eu"), ("fabrikam", "fabrikan")}
    assert groups[("contoso", "contoso-eu")] == ("contoso and contoso-eu are 2 edits apart",)
    assert groups[("fabrikam", "fabrikan")] == ("fabrikam and fabrikan are 1 edit apart",)


def test_splitting_stays_fast_with_a_thousand_numbered_names() -> None:
    from gatekeeper.domain.entities import Entity

    names = [f"client-{i:04d}" for i in range(1000)]
    flags = splitting.possible_splitting(
        [Entity(n, "commercial", False, None, None, None, None, n, 0, None, None)
         for n in names], [])
    assert len(flags) == 1 and len(flags[0].entities) == 1000
    assert flags[0].reasons[-1].startswith("… and ")


def test_overview_round_trips_do_not_grow_with_entities(gate: Gate, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    trips: list[str] = []
    real_execute = redis.client.Pipeline.execute
    real_command = fakeredis.FakeRedis.execute_command

    def execute(self: Any, *a: Any, **k: Any) -> Any:
        trips.append("pipeline")
        return real_execute(self, *a, **k)

    def command(self: Any, *a: Any, **k: Any) -> Any:
        trips.append(str(a[0]))
        return real_command(self, *a, **k)

    dashboard.overview(gate)  # scripts loaded
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(fakeredis.FakeRedis, "execute_command", command)
    dashboard.overview(gate)
    few = len(trips)
    monkeypatch.undo()
    for i in range(40):
        gate.entities.add(f"bulk{i:03d}x", kind="commercial", research=False, parent=None,
                          actor="t", channel="cli")
    monkeypatch.setattr(redis.client.Pipeline, "execute", execute)
    monkeypatch.setattr(fakeredis.FakeRedis, "execute_command", command)
    trips.clear()
    ov = dashboard.overview(gate)
    assert len(ov.entities) == 47
    assert len(trips) == few <= 5


def test_daily_usage_per_entity_and_in_total(gate: Gate) -> None:
    ov = dashboard.overview(gate)
    today = ov.days[-1]
    assert ov.row("acme-labs").daily == {today: 850}  # type: ignore[union-attr]
    assert ov.row("acme").daily == {today: 850}  # type: ignore[union-attr]
    # A child's IDs are inside its pool's: the total counts them once.
    assert ov.daily_total() == {today: 850 + 300 + 5000}


# --- /entities/NAME -----------------------------------------------------------------------------


def test_entity_page_carries_its_figures_and_facts(client: FlaskClient) -> None:
    login(client)
    html = client.get("/entities/acme-labs").get_data(as_text=True)
    t = Tables(html)
    assert t.ids["used"] == "850" and t.ids["limit"] == "1,000"
    assert t.ids["remaining"] == "150" and t.ids["ratio"] == "85%"
    assert "Pool acme R10: 850 of 1,000 Post IDs used (85%)" in t.ids["pool-usage"]
    assert t.ids["fact-pool"].startswith("child of acme; its Post IDs also count toward pool")
    assert "A child cannot move to another pool." in t.ids["fact-pool"]
    assert t.ids["fact-terms"].startswith("attested by Pat Signer")
    activity = t.rows("activity")
    assert [(r[1], r[2], r[6], r[7]) for r in activity] == [
        ("share.posts", "delivered", "850", "850"), ("share.posts", "granted", "850", "850")]
    assert "Post IDs shared with acme-labs per UTC day" in html  # the chart's title


def test_a_pool_root_shows_its_children_and_their_activity(client: FlaskClient) -> None:
    login(client)
    t = Tables(client.get("/entities/acme").get_data(as_text=True))
    assert "Children: acme-labs." in t.ids["fact-pool"]
    assert {r[3] for r in t.rows("activity")} == {"acme-labs", "acme"}
    assert ("refused", "acme") in {(r[2], r[3]) for r in t.rows("activity")}


def test_exempt_and_permitted_entities(client: FlaskClient) -> None:
    login(client)
    uni = Tables(client.get("/entities/northfield-university").get_data(as_text=True)).ids
    assert uni["limit"] == "no limit" and uni["used"] == "5,000"
    assert "recorded by cora" in uni["fact-academic"]
    assert "research agreement NU-7" in uni["fact-academic"]
    globex = Tables(client.get("/entities/globex").get_data(as_text=True)).ids
    assert globex["limit"] == "2,000" and globex["remaining"] == "1,700"
    assert globex["fact-permission"].startswith("active limit 2,000")
    assert "X-PERM-42" in globex["fact-permission"]


def test_unknown_entity_is_404(client: FlaskClient) -> None:
    login(client)
    assert client.get("/entities/nobody").status_code == 404


def audit_kinds(gate: Gate, root: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.audit(root))]


def post(client: FlaskClient, path: str, **data: str) -> Any:
    return client.post(path, data={"csrf_token": csrf(client), **data})


def test_recording_academic_status_is_audited_and_shown(client: FlaskClient,
                                                       gate: Gate) -> None:
    login(client)
    resp = post(client, "/entities/umbrella/academic", kind="academic", research="yes",
                evidence="ethics board approval EB-9")
    assert resp.status_code == 302
    page = client.get(resp.headers["Location"]).get_data(as_text=True)
    t = Tables(page)
    assert t.ids["flash"].startswith("R3: umbrella recorded as academic")
    assert t.ids["limit"] == "no limit"
    assert "ethics board approval EB-9" in t.ids["fact-academic"]
    assert t.rows("changes")[0][1:5] == ["entity.academic", "cora", "web", "R3"]
    last = audit_kinds(gate, "umbrella")[-1]
    assert last["kind"] == "entity.academic" and last["actor"] == "cora"
    assert policy.exempt(gate.entities.get("umbrella"))


def test_recording_and_revoking_a_permission(client: FlaskClient, gate: Gate) -> None:
    login(client)
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    resp = post(client, "/entities/acme/permission", limit="3,000,000", until=until,
                reference="X-2026-001")
    assert resp.status_code == 302
    t = Tables(client.get("/entities/acme").get_data(as_text=True))
    assert t.ids["limit"] == "3,000,000"
    assert "X-2026-001" in t.ids["fact-permission"]
    assert t.rows("changes")[0][1] == "entity.permit"
    resp = post(client, "/entities/acme/permission/revoke", reason="X withdrew it")
    assert resp.status_code == 302
    t = Tables(client.get("/entities/acme").get_data(as_text=True))
    assert t.ids["limit"] == "1,000"
    assert t.ids["fact-permission"].startswith("revoked")
    assert [r[1] for r in t.rows("changes")][:2] == ["entity.permit_revoked", "entity.permit"]
    assert audit_kinds(gate, "acme")[-1]["message"].endswith("revoked: X withdrew it")


def test_unlimited_permission(client: FlaskClient, gate: Gate) -> None:
    login(client)
    until = (datetime.now(UTC) + timedelta(days=3)).date().isoformat()
    assert post(client, "/entities/initech/permission", limit="unlimited", until=until,
                reference="X-U").status_code == 302
    assert gate.entities.get("initech").permission.limit is None  # type: ignore[union-attr]
    rows = entity_rows(client.get("/dashboard").get_data(as_text=True))
    assert rows["initech"]["used"] == "0 / no limit"


def test_recording_the_terms_attestation(client: FlaskClient, gate: Gate) -> None:
    login(client)
    assert post(client, "/entities/initech/terms", by="Dana Legal").status_code == 302
    t = Tables(client.get("/entities/initech").get_data(as_text=True))
    assert t.ids["fact-terms"].startswith("attested by Dana Legal")
    assert gate.entities.get("initech").terms.by == "Dana Legal"  # type: ignore[union-attr]


@pytest.mark.parametrize(("path", "data", "rule", "text"), [
    ("/entities/globex/permission", {"limit": "lots", "until": "2099-01-01",
                                     "reference": "r"}, "R4", "positive number"),
    ("/entities/globex/permission", {"limit": "10", "until": "2001-01-01",
                                     "reference": "r"}, "R4", "already over"),
    ("/entities/globex/permission", {"limit": "10", "until": "soon", "reference": "r"},
     "R4", "YYYY-MM-DD"),
    ("/entities/globex/permission", {"limit": "10", "until": "2099-01-01", "reference": " "},
     "R4", "reference"),
    ("/entities/acme/permission/revoke", {"reason": "x"}, "R4", "no written permission"),
    ("/entities/acme/academic", {"kind": "commercial", "research": "yes", "evidence": "e"},
     "R3", "exempts only academic"),
    ("/entities/acme/academic", {"kind": "academic", "research": "yes", "evidence": ""},
     "R3", "evidence"),
    ("/entities/acme/terms", {"by": "  "}, "R8", "person who attested"),
])
def test_a_refused_change_shows_the_rule_and_changes_nothing(
        client: FlaskClient, gate: Gate, path: str, data: dict[str, str], rule: str,
        text: str) -> None:
    login(client)
    root = "acme" if "/acme/" in path else "globex"
    before = gate.client.xlen(keys.audit(root))
    facts = gate.client.hgetall(keys.entity(root, path.split("/")[2]))
    resp = post(client, path, **data)
    assert resp.status_code == 400
    error = Tables(resp.get_data(as_text=True)).ids["form-error"]
    assert error.startswith("Not recorded — nothing was changed.")
    assert rule in error and text in error
    assert gate.client.xlen(keys.audit(root)) == before
    assert gate.client.hgetall(keys.entity(root, path.split("/")[2])) == facts


FORMS = [("/entities/acme/academic", {"kind": "academic", "research": "yes",
                                      "evidence": "e"}),
         ("/entities/acme/permission", {"limit": "5", "until": "2099-01-01",
                                        "reference": "r"}),
         ("/entities/globex/permission/revoke", {"reason": "r"}),
         ("/entities/acme/terms", {"by": "someone"}),
         ("/entities/globex/parent", {"parent": "acme", "reason": "r"})]


def test_a_page_refuses_a_role_as_the_api_does(client: FlaskClient, gate: Gate) -> None:
    """One role check (rules.roles.require_role) behind the page decorator and the API."""
    login(client, "ana")
    page = client.get("/dashboard").get_data(as_text=True)
    assert "R12: user &#39;ana&#39; has role &#39;analyst&#39;; this page needs role " \
           "compliance or admin" in page


@pytest.mark.parametrize("who", ["ana", "dan"])
def test_other_roles_get_403_everywhere(client: FlaskClient, gate: Gate, who: str) -> None:
    login(client, who)
    assert client.get("/dashboard").status_code == 403
    assert client.get("/entities/acme").status_code == 403
    before = gate.client.xlen(keys.audit("acme"))
    for path, data in FORMS:
        assert post(client, path, **data).status_code == 403, path
    # Each denial is one record (R11, R12) in the signed-in user's pool, and nothing else.
    added = [{k.decode(): v.decode() for k, v in f.items()}
             for _i, f in gate.client.xrange(keys.audit("acme"))][before:]
    assert [(r["outcome"], r["rule"], r["kind"], r["actor"], r["path"]) for r in added] == [
        ("denied", "R12", "access.denied", who, path) for path, _data in FORMS]


def test_admin_may_use_the_pages(client: FlaskClient) -> None:
    login(client, "ada")
    assert client.get("/dashboard").status_code == 200
    assert post(client, "/entities/acme/terms", by="Admin Person").status_code == 302


def test_pages_need_a_sign_in(client: FlaskClient) -> None:
    resp = client.get("/dashboard")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]


@pytest.mark.parametrize(("path", "data"), FORMS)
def test_every_form_needs_the_csrf_token(client: FlaskClient, gate: Gate, path: str,
                                         data: dict[str, str]) -> None:
    login(client)
    before = gate.client.xlen(keys.audit("acme")), gate.client.xlen(keys.audit("globex"))
    assert client.post(path, data=data).status_code == 400
    after = gate.client.xlen(keys.audit("acme")), gate.client.xlen(keys.audit("globex"))
    # Nothing changed; the CSRF failure itself is one denial record (R11) in the user's pool.
    assert after == (before[0] + 1, before[1])
    [(_i, rec)] = gate.client.xrevrange(keys.audit("acme"), count=1)
    assert (rec[b"kind"], rec[b"outcome"]) == (b"access.csrf", b"denied")


def test_every_form_carries_the_csrf_token(client: FlaskClient) -> None:
    login(client)
    html = client.get("/entities/globex").get_data(as_text=True)
    forms = re.findall(r'<form method="post" action="/entities/.*?</form>', html, re.S)
    assert len(forms) == 5  # academic, permission, revoke, terms, parent
    assert all('name="csrf_token"' in f for f in forms)


def test_dashboard_links_the_monthly_report(client: FlaskClient, gate: Gate) -> None:
    login(client)
    html = client.get("/dashboard").get_data(as_text=True)
    seconds, _ = gate.client.time()
    month = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m")
    assert f'href="/report?month={month}"' in html


def test_names_are_escaped_everywhere(gate: Gate, client: FlaskClient) -> None:
    gate.entities.accept_terms("umbrella", by="<script>alert(1)</script>", actor="t",
                               channel="cli")
    login(client)
    for path in ("/dashboard", "/entities/umbrella"):
        html = client.get(path).get_data(as_text=True)
        assert "<script>alert" not in html and "&lt;script&gt;alert(1)" in html


# --- charts and metrics -------------------------------------------------------------------------


def test_charts_are_accessible_svg_with_escaped_text() -> None:
    svg = charts.daily({20_000: 1_200, 20_010: 300}, 30, end_day=20_010, title='<b>"x"</b>')
    assert svg.startswith("<svg") and 'role="img"' in svg
    assert "<title>&lt;b&gt;&quot;x&quot;&lt;/b&gt;" in svg
    assert "1,500 in all, most on 4 Oct (1,200)" in svg  # epoch day 20,000 is 2024-10-04
    assert ">0<" in svg and ">1k<" in svg and ">2k<" in svg  # axis labels, rounded up
    bar = charts.bar(900, 1000)
    assert "900 used of 1,000 (90%)" in bar and charts.AMBER in bar
    assert "no limit applies" in charts.bar(5, None)
    assert "<title>" in charts.spark({}, 30, end_day=20_010)


def test_metrics_export_each_entitys_usage_and_ratio(gate: Gate) -> None:
    m = Metrics()
    m.watch_entities(lambda: dashboard.entity_gauges(gate))
    text = m.render().decode()
    assert 'gatekeeper_entity_post_ids_used{entity="acme-labs"} 850.0' in text
    assert 'gatekeeper_entity_post_ids_limit{entity="globex"} 2000.0' in text
    assert 'gatekeeper_entity_post_ids_ratio{entity="acme"} 0.85' in text
    assert 'gatekeeper_entity_post_ids_used{entity="northfield-university"} 5000.0' in text
    assert 'gatekeeper_entity_post_ids_limit{entity="northfield-university"}' not in text
    assert 'gatekeeper_entity_post_ids_ratio{entity="northfield-university"}' not in text
    assert "gatekeeper_entity_usage_up 1.0" in text


def test_metrics_say_when_the_store_is_down(gate: Gate) -> None:
    from gatekeeper.rules.errors import StoreUnavailable

    def down() -> Iterator[Any]:
        raise StoreUnavailable("no")

    m = Metrics()
    m.watch_entities(down)
    text = m.render().decode()
    assert "gatekeeper_entity_usage_up 0.0" in text


@pytest.mark.parametrize("peak,labels", [(0, ["0", "1", "2"]), (1, ["0", "1", "2"]),
                                         (3, ["0", "2", "4"]), (24, ["0", "20", "40"]),
                                         (250, ["0", "125", "250"]),
                                         (5_400, ["0", "5k", "10k"])])
def test_a_daily_chart_labels_whole_numbers(peak: int, labels: list[str]) -> None:
    svg = str(charts.daily({100: peak}, 30, end_day=100))
    assert re.findall(r'<text x="42"[^>]*>([^<]+)</text>', svg) == labels  # 0, middle, top


# --- /dashboard at scale: pool summaries, rows for the page shown (dashpage) -----------------


def _as_before(gate: Gate, q: str, sort: str, page: int, per_page: int) -> tuple[Any, ...]:
    """What the page showed when it built a row for every entity and recipient."""
    ov = dashboard.overview(gate)
    table = dashboard.entity_table(ov, q=q, sort=sort, page=page, per_page=per_page)
    users = dashboard.user_table(ov, q=q, page=page, per_page=per_page)
    summary = {
        "entities": len(ov.entities),
        "near": sum(1 for r in ov.entities if r.near_limit),
        "at_limit": sum(1 for r in ov.entities if r.ratio is not None and r.ratio >= 1),
        "exempt": sum(1 for r in ov.entities if r.exempt),
        "permissions": sum(1 for r in ov.entities if r.permission_state == "active"),
        "users_near": sum(1 for r in ov.users if r.near_limit),
        "users_idle": ov.recipients - sum(1 for r in ov.users if r.usage.used),
    }
    return (summary, _rows(table), [(u.name, u.usage) for u in users.rows],
            (table.number, table.pages, table.total), [r.id for r in ov.refusals],
            ov.daily_total(), ov.flags)


def _rows(table: dashboard.Page[dashboard.EntityRow]) -> list[tuple[Any, ...]]:
    return [(r.name, r.own, r.pool, r.user_ids, r.children, r.members, r.users,
             r.permission_state, r.daily) for r in table.rows]


@pytest.mark.parametrize(("q", "sort", "page", "per_page"), [
    ("", "ratio", 1, 100), ("", "used", 2, 2), ("acme", "name", 1, 2), ("", "ratio", 3, 3)])
def test_the_page_from_pool_summaries_shows_what_every_row_showed(
        gate: Gate, tmp_path: Path, q: str, sort: str, page: int, per_page: int) -> None:
    from gatekeeper.domain import dashpage

    # Recipients active now, one of them near the limit, one refunded to nothing.
    for name, n in (("j.smith", 25), ("J_Smith", 3), ("dan", 4)):
        user = gate.users.get(name)
        counter = charges.hydrated_counter(user, n, gate.config.limits)
        gate.ledger.take(user.root, [counter], requested=n, share_id=f"x-{name}",
                         audit={"actor": name})
        gate.ledger.settle(user.root, f"x-{name}", [counter], delivered=name != "dan",
                           audit={})
    b = dashpage.board(gate, q=q, sort=sort, page=page, upage=page, per_page=per_page)
    got = (b.summary, _rows(b.table), [(u.name, u.usage) for u in b.users.rows],
           (b.table.number, b.table.pages, b.table.total), [r.id for r in b.ov.refusals],
           b.ov.daily_total(), b.ov.flags)
    assert got == _as_before(gate, q, sort, page, per_page)
    assert [u.role for u in b.users.rows] == [
        gate.users.get(u.name).role for u in b.users.rows]


def test_the_page_builds_rows_for_the_page_shown_and_its_round_trips_do_not_grow(
        gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """100 more entities and 60 more recipients, all active: still five pipelined round trips
    and the clock, and rows only for the page (with the roots of the children on it)."""
    from gatekeeper.domain import dashpage

    measured: list[int] = []
    real_measure = dashboard._measure

    def measure(g: Gate, snap: Any, entities: list[Any], *a: Any, **k: Any) -> Any:
        measured.append(len(entities))
        return real_measure(g, snap, entities, *a, **k)

    def trips() -> int:
        count: list[str] = []
        real_execute = redis.client.Pipeline.execute

        def execute(self: Any, *a: Any, **k: Any) -> Any:
            count.append("pipeline")
            return real_execute(self, *a, **k)

        with monkeypatch.context() as m:
            m.setattr(redis.client.Pipeline, "execute", execute)
            m.setattr(dashboard, "_measure", measure)
            board = dashpage.board(gate, per_page=5)
        assert len(board.table.rows) == 5
        return len(count)

    dashpage.board(gate)  # scripts loaded
    few = trips()
    cfg = gate.config.limits
    for i in range(100):
        name = f"bulk{i:03d}"
        gate.entities.add(name, kind="commercial", research=False,
                          parent="acme" if i % 10 == 0 else None, actor="t", channel="cli")
    pipe = gate.client.pipeline(transaction=False)
    for i in range(60):
        pipe.hset(keys.USERS, f"reader{i:02d}", "umbrella")
    pipe.execute()
    for i in range(60):
        reader = dashboard.User(f"reader{i:02d}", "umbrella", "umbrella", "analyst", 0, None,
                                None)
        counter = charges.hydrated_counter(reader, 1 + i % 7, cfg)
        gate.ledger.take("umbrella", [counter], requested=1 + i % 7, share_id=f"r{i}",
                         audit={})
    measured.clear()
    assert trips() <= 5 and few <= 5
    assert measured and max(measured) <= 5 + 1  # the page's rows and a child's pool root
