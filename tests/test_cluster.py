"""`redis.cluster = true` on a real three-node Redis Cluster (tests/cluster.py).

Every key is hash-tagged by its pool or {sys} so that each script touches one slot; these
tests run the paths people use — entities, users, ID shares with idempotency, hydrated
exports, quotas, deletions, the dashboard, the audit log and the report — with pools spread
over the three nodes, and check the figures, not just that nothing raised.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from cluster import redis_cluster
from live import share_ids, sign_in
from redis.cluster import RedisCluster
from tables import entity_rows

from gatekeeper import config as config_mod
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain import dashboard, quota
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate, ingest_deletions, lift_deletion, set_parent
from gatekeeper.domain.hydrated import Selection, export
from gatekeeper.domain.report import month_report
from gatekeeper.ledger import chain, charges, keys
from gatekeeper.rules.errors import BadInput, QuotaExceeded

PASSWORD = "correct horse battery"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
POOLS = ["acme", "globex", "initech", "umbrella", "hooli", "stark"]


pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture(scope="module")
def cluster_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with redis_cluster(tmp_path_factory.mktemp("cluster")) as ports:
        yield f"redis://127.0.0.1:{ports[0]}/0"


@pytest.fixture
def gate(cluster_url: str, tmp_path: Path) -> Iterator[Gate]:
    (tmp_path / "config.toml").write_text(
        f'[redis]\nurl = "{cluster_url}"\ncluster = true\n'
        '[limits]\npost_ids_per_entity = 1000\nhydrated_per_recipient = 30\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"))
    assert isinstance(g.client, RedisCluster)
    g.client.flushall(target_nodes=RedisCluster.PRIMARIES)
    yield g
    g.client.flushall(target_nodes=RedisCluster.PRIMARIES)
    g.client.close()


def build(gate: Gate) -> None:
    for name in POOLS:
        gate.entities.add(name, kind="commercial", research=False, parent=None, actor="t",
                          channel="cli")
        gate.entities.accept_terms(name, by="Pat Signer", actor="t", channel="cli")
    gate.entities.add("acme-labs", kind="commercial", research=False, parent="acme",
                      actor="t", channel="cli")
    gate.entities.accept_terms("acme-labs", by="Pat Signer", actor="t", channel="cli")
    for name, role, entity in (("dan", "data", "acme"), ("ana", "analyst", "globex"),
                               ("cora", "compliance", "acme")):
        gate.users.add(name, entity=entity, role=role, password=PASSWORD, actor="t",
                       channel="cli")


def test_the_pools_land_on_more_than_one_node(gate: Gate) -> None:
    slots = {gate.client.keyslot(keys.audit(p)) for p in POOLS}
    nodes = {gate.client.nodes_manager.get_node_from_slot(s).name for s in slots}
    assert len(nodes) > 1


def test_shares_quotas_and_idempotency(gate: Gate, tmp_path: Path) -> None:
    build(gate)
    share_ids(gate, tmp_path, "acme-labs", 600, key="k1")
    for name in POOLS[1:]:
        share_ids(gate, tmp_path, name, 100)
    assert share_ids(gate, tmp_path, "acme-labs", 600, key="k1").grant.status == "replay"
    with pytest.raises(QuotaExceeded) as refused:
        share_ids(gate, tmp_path, "acme", 500, start=9000)  # the pool has 400 left (R2, R10)
    assert refused.value.rule == "R2" and refused.value.details["remaining"] == 400
    q = quota.entity_quota(gate, "acme")
    assert (q["used"], q["remaining"]) == (600, 400)
    assert quota.entity_quota(gate, "hooli")["used"] == 100


def test_hydrated_counters_and_the_dashboard(gate: Gate, tmp_path: Path) -> None:
    build(gate)
    share_ids(gate, tmp_path, "acme-labs", 850)
    share_ids(gate, tmp_path, "stark", 300)
    ana = gate.users.get("ana")
    r6 = [charges.hydrated_counter(ana, 12, gate.config.limits)]
    gate.ledger.take(ana.root, r6, requested=12, share_id="x1", audit={"actor": "ana"})
    gate.ledger.settle(ana.root, "x1", r6, delivered=True, audit={})
    ov = dashboard.overview(gate)
    assert ov.row("acme").own.used == 850 and ov.row("acme").near_limit
    assert ov.row("stark").own.used == 300
    assert [(u.name, u.usage.used) for u in ov.users] == [("ana", 12)]
    detail = dashboard.entity_detail(gate, "acme-labs")
    assert detail.row.pool is not None and detail.row.pool.used == 850


def test_the_audit_log_and_the_report_read_every_node(gate: Gate, tmp_path: Path) -> None:
    build(gate)
    for name in POOLS:
        share_ids(gate, tmp_path, name, 10)
    found = list(AuditLog(gate.client).records(AuditFilter(outcome="granted")))
    granted = [r for r in found if r.get("kind") == "share.posts"]
    assert sorted(r.get("entity") for r in granted) == sorted(POOLS)
    seconds, _ = gate.client.time()
    month = datetime.fromtimestamp(int(seconds), UTC).strftime("%Y-%m")
    report = month_report(gate, month, actor="cora")
    assert report.total("share.posts") == 60
    assert all(c.ok for c in report.checks)


def test_every_audit_chain_verifies_on_a_cluster(gate: Gate, tmp_path: Path) -> None:
    build(gate)
    for name in POOLS:
        share_ids(gate, tmp_path, name, 10)
    listed = tmp_path / "deleted.txt"
    listed.write_text("5\n6\n")
    gate.deletions.add_file(listed, kind="posts", actor="cora", channel="cli")  # append.lua
    results = chain.verify(gate.client)
    assert {r.stream for r in results} >= {keys.audit(p) for p in POOLS}
    assert all(r.problem is None and r.seq == r.records for r in results if r.records)


def test_deletions_apply_on_a_cluster(gate: Gate, tmp_path: Path) -> None:
    build(gate)
    listed = tmp_path / "deleted.txt"
    listed.write_text("5\n6\n")
    gate.deletions.add_file(listed, kind="posts", actor="cora", channel="cli")
    res = share_ids(gate, tmp_path, "globex", 10)
    assert res.grant.granted == 8
    # A compliance job's records (hide, scrub_geo, a reversal), then a lift: one slot, {sys}.
    job = tmp_path / "tweets_job.jsonl"
    job.write_text('{"id": "7", "action": "delete", "reason": "suspended"}\n'
                   '{"id": "8", "action": "scrub_geo"}\n{"id": "5", "action": "undelete"}\n')
    report = ingest_deletions(gate, job, kind=None, actor="cora", channel="cli")
    assert (report.new, report.scrub_geo, report.reversed) == (1, 1, 1)
    # Issue 15: globex held 7; its notice opens on the cluster too.
    assert report.notices_error is None and len(report.notices) == 1
    assert gate.notices.ids(report.notices[0]).posts().tolist() == [7]
    lift_deletion(gate, "5", kind="posts", reason="undeleted on X", actor="cora",
                  channel="cli")
    deleted = gate.deletions.current()
    assert (deleted.posts, deleted.geo_posts) == ({6, 7}, {8})


def test_linking_an_existing_entity_is_refused_on_a_cluster(gate: Gate) -> None:
    build(gate)
    with pytest.raises(BadInput) as refused:
        set_parent(gate, "globex", parent="acme", reason="one company", actor="cora",
                   channel="cli")
    assert "entity add --parent" in refused.value.message
    assert gate.entities.get("globex").root == "globex"


def test_the_compliance_pages_render_from_a_cluster(gate: Gate, tmp_path: Path) -> None:

    build(gate)
    share_ids(gate, tmp_path, "acme-labs", 850)
    app = create_app(gate, {"TESTING": True, "SECRET_KEY": "test"})
    with app.test_client() as web:
        assert sign_in(web, "cora", PASSWORD) == 302
        rows = entity_rows(web.get("/dashboard").get_data(as_text=True))
        assert rows["acme"]["used"] == "850 / 1,000" and rows["acme"]["remaining"] == "150"
        assert rows["acme-labs"]["pool"] == "acme: 850 / 1,000"
        assert rows["hooli"]["used"] == "0 / 1,000"
        assert web.get("/entities/acme-labs").status_code == 200
        assert "share.posts" in web.get("/audit").get_data(as_text=True)
        assert web.get("/metrics").status_code == 200


def test_a_hydrated_export_counts_r6_on_a_cluster(gate: Gate) -> None:

    build(gate)
    gate.users.accept_terms("ana", actor="ana", channel="web")
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    ana = gate.users.get("ana")
    r6 = [charges.hydrated_counter(ana, 12, gate.config.limits)]
    gate.ledger.take(ana.root, r6, requested=12, share_id="x1", audit={"actor": "ana"})
    gate.ledger.settle(ana.root, "x1", r6, delivered=True, audit={})
    selection = Selection("kpop", Filters(), gate.deletions.current(), limit=20)
    with pytest.raises(QuotaExceeded) as refused:  # 20 posts, but 30 - 12 = 18 left (R6)
        export(gate, ana, selection, fmt="xlsx", with_users=False, channel="web")
    assert refused.value.rule == "R6"
    done = export(gate, ana, Selection("kpop", Filters(), gate.deletions.current(), limit=18),
                  fmt="xlsx", with_users=False, channel="web")
    done.file.close()
    assert (done.posts, quota.user_quota(gate, "ana")["used"]) == (18, 30)


def test_a_cluster_is_detected_when_the_config_does_not_say_so(cluster_url: str,
                                                                tmp_path: Path) -> None:
    """`redis.cluster = false` with a URL naming a cluster node: the store says it is a
    cluster (INFO cluster), so keys are routed by slot and a pool move is refused."""
    (tmp_path / "config.toml").write_text(f'[redis]\nurl = "{cluster_url}"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"))
    try:
        assert isinstance(g.client, RedisCluster) and g.ledger.cluster
        g.client.flushall(target_nodes=RedisCluster.PRIMARIES)
        build(g)
        with pytest.raises(BadInput, match="single Redis server"):
            set_parent(g, "globex", parent="acme", reason="same company", actor="cora",
                       channel="cli")
        assert g.entities.get("globex").root == "globex"
    finally:
        g.client.flushall(target_nodes=RedisCluster.PRIMARIES)
        g.client.close()
