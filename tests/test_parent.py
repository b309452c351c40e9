"""Linking an existing entity to a parent (R10): its pool moves into the parent's, atomically.

On fakeredis and on a real Redis server. The history: acme (a pool with a child, limit 1,000
Post IDs) has received 600; globex, its own pool, has a user with a token, an analyst with
hydrated objects, 300 Post IDs shared (one share with an idempotency key) and its audit
stream. After `set_parent(globex, acme)` every one of those facts must be where the pool is.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from live import share_ids

from gatekeeper import config as config_mod
from gatekeeper.domain import dashboard, shares
from gatekeeper.domain.gate import Gate, set_parent
from gatekeeper.ledger import charges, keys
from gatekeeper.rules.errors import BadInput, Conflict, PoolMoved, QuotaExceeded
from gatekeeper.rules.limits import Counter, Limit, post_id_window

PASSWORD = "correct horse battery"


pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text('[limits]\npost_ids_per_entity = 1000\n'
                                          'hydrated_per_recipient = 30\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    for name, parent in (("acme", None), ("acme-labs", "acme"), ("globex", None)):
        g.entities.add(name, kind="commercial", research=False, parent=parent, actor="t",
                       channel="cli")
        g.entities.accept_terms(name, by="Pat Signer", actor="t", channel="cli")
    for name, role, entity in (("dan", "data", "acme"), ("gus", "data", "globex"),
                               ("gia", "analyst", "globex")):
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="t",
                    channel="cli")
    share_ids(g, tmp_path, "acme-labs", 600)
    share_ids(g, tmp_path, "globex", 200, key="k1")
    share_ids(g, tmp_path, "globex", 100, start=500)
    gia = g.users.get("gia")
    r6 = [charges.hydrated_counter(gia, 12, g.config.limits)]
    g.ledger.take(gia.root, r6, requested=12, share_id="x1", audit={"actor": "gia"})
    g.ledger.settle(gia.root, "x1", r6, delivered=True, audit={})
    return g


def used(gate: Gate, key: str) -> int:
    counter = Counter(key, "R2", post_id_window(gate.config.limits),
                             Limit(None))
    return gate.ledger.peek([counter])[1][0].used


def link(gate: Gate, name: str = "globex", parent: str = "acme",
         reason: str = "same company, contract C-12") -> None:
    set_parent(gate, name, parent=parent, reason=reason, actor="cora", channel="cli")


def records(gate: Gate, root: str) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _, f in gate.client.xrange(keys.audit(root))]


def test_the_entity_joins_the_pool_with_its_usage(gate: Gate) -> None:
    token = gate.users.create_token("gus", actor="t", channel="cli")
    link(gate)
    globex = gate.entities.get("globex")
    assert (globex.parent, globex.root, globex.former_root) == ("acme", "acme", "globex")
    # What globex received in the window counts against the pool at once; its own stays.
    assert used(gate, keys.counter("acme", "r2", "acme")) == 900
    assert used(gate, keys.counter("acme", "r2", "globex")) == 300
    assert not gate.client.exists(keys.counter("globex", "r2", "globex"))
    # Its users, their tokens and their hydrated objects (R6) moved with it.
    gia = gate.users.get("gia")
    assert gia.root == "acme"
    assert gate.ledger.peek([charges.hydrated_counter(gia, 0, gate.config.limits)])[1][0].used \
        == 12
    assert gate.users.user_for_token(token).root == "acme"
    # The pool's index lists the moved counters under their new names.
    index = {k.decode() for k in gate.client.zrange(keys.active("acme"), 0, -1)}
    assert {keys.counter("acme", "r6", "gia"), keys.counter("acme", "r2", "globex"),
            keys.counter("acme", "r2", "acme")} <= index
    assert not gate.client.exists(keys.active("globex"))


def test_shares_after_the_link_charge_the_pool_and_the_child(gate: Gate,
                                                             tmp_path: Path) -> None:
    link(gate)
    share_ids(gate, tmp_path, "globex", 50, start=900)
    assert used(gate, keys.counter("acme", "r2", "acme")) == 950
    assert used(gate, keys.counter("acme", "r2", "globex")) == 350
    with pytest.raises(QuotaExceeded) as refused:
        share_ids(gate, tmp_path, "acme", 100, start=2000)  # 950 + 100 > the pool's 1,000
    assert refused.value.rule == "R2"
    # A retry of a share made before the link is replayed from the pool, counted once.
    again = share_ids(gate, tmp_path, "globex", 200, key="k1")
    assert again.grant.status == "replay"
    assert used(gate, keys.counter("acme", "r2", "acme")) == 950


def test_the_link_is_audited_in_both_streams_and_no_record_moves(gate: Gate) -> None:
    before = records(gate, "globex")
    link(gate)
    after = records(gate, "globex")
    assert after[:-1] == before  # the old stream is kept whole (R11)
    new = records(gate, "acme")[-1]
    closing = after[-1]
    assert closing["kind"] == "entity.pool_closed" and closing["pool"] == "acme"
    assert "its records continue in that pool" in closing["message"]
    assert {k: v for k, v in closing.items() if k not in ("kind", "message", "seq", "hash")} == {
        k: v for k, v in new.items() if k not in ("kind", "message", "seq", "hash")}
    assert (new["kind"], new["rule"], new["outcome"], new["entity"], new["parent"]) == (
        "entity.parent", "R10", "changed", "globex", "acme")
    assert new["merged_post_ids"] == "300" and new["former_pool"] == "globex"
    assert "same company, contract C-12" in new["message"] and new["actor"] == "cora"
    assert keys.audit("globex").encode() in gate.client.smembers(keys.AUDIT_STREAMS)


def test_the_old_pool_refuses_takes_and_changes(gate: Gate) -> None:
    link(gate)
    counter = Counter(keys.counter("globex", "r2", "globex"), "R2",
                             post_id_window(gate.config.limits), Limit(1000), 5)
    with pytest.raises(PoolMoved):
        gate.ledger.take("globex", [counter], requested=5, share_id="late", audit={})
    assert not gate.client.exists(keys.counter("globex", "r2", "globex"))


def test_a_share_authorised_before_the_link_is_counted_in_the_new_pool(
        gate: Gate, tmp_path: Path) -> None:
    """authorise() read globex's old pool; the link lands before the take: take.lua says
    'moved' and the share is counted where globex is now."""
    auth = shares.authorise(gate, actor="dan", entity="globex", kind="posts", channel="cli",
                            purpose="race")
    link(gate)
    ids = tmp_path / "race.txt"
    ids.write_text("".join(f"{i}\n" for i in range(7000, 7010)))
    with shares.select_id_file(ids, "posts", gate.deletions.current()) as selection:
        res = shares.reserve(gate, auth, selection, kind="posts", allow_partial=False,
                             idempotency_key=None)
        res.deliver(lambda: None)
    assert res.root == "acme"
    assert used(gate, keys.counter("acme", "r2", "acme")) == 910


def test_dashboard_and_entity_page_after_the_link(gate: Gate) -> None:
    link(gate)
    ov = dashboard.overview(gate)
    acme, globex = ov.row("acme"), ov.row("globex")
    assert acme.own.used == 900 and acme.members == ["acme", "acme-labs", "globex"]
    assert globex.pool is not None and globex.pool.used == 900 and globex.own.used == 300
    detail = dashboard.entity_detail(gate, "globex")
    # Its page still shows what it received while it was its own pool.
    assert sum(int(r.get("granted") or 0) for r in detail.activity
               if r.get("outcome") == "granted") == 300
    assert any(r.get("kind") == "entity.parent" for r in detail.changes)


@pytest.mark.parametrize("name,parent,reason,says", [
    ("globex", "globex", "x", "cannot be its own parent"),
    ("acme-labs", "globex", "x", "already pooled with acme"),
    ("acme", "globex", "x", "is the parent of acme-labs"),
    ("globex", "acme-labs", "", "say why"),
    ("acme-labs", "acme", "x", "already in the pool of acme"),
])
def test_a_refused_link_changes_nothing(gate: Gate, name: str, parent: str, reason: str,
                                        says: str) -> None:
    def state() -> tuple[object, ...]:
        return (gate.client.hgetall(keys.ENTITIES), gate.client.xlen(keys.audit("acme")),
                gate.client.xlen(keys.audit("globex")), sorted(gate.client.keys("*")))

    before = state()
    with pytest.raises(BadInput) as refused:
        link(gate, name, parent, reason)
    assert refused.value.rule == "R10" and says in refused.value.message
    assert state() == before


def test_a_link_waits_for_a_delivery_in_flight(gate: Gate, tmp_path: Path) -> None:
    gus = gate.users.get("gus")
    counters = charges.id_share_counters(gate.entities.get("globex"),
                                        gate.entities.get("globex"), "posts", 5,
                                        gate.config.limits)
    gate.ledger.take("globex", counters, requested=5, share_id="inflight", audit={})
    with pytest.raises(Conflict) as refused:
        link(gate)
    assert "being delivered now" in refused.value.message and refused.value.rule == "R10"
    assert gate.entities.get("globex").root == "globex"
    gate.ledger.settle("globex", "inflight", counters, delivered=True, audit={})
    link(gate)
    assert gate.entities.get("globex").root == "acme" and gus.root == "globex"


def test_a_reservation_left_open_by_a_crash_does_not_block_a_link(gate: Gate) -> None:
    counters = charges.id_share_counters(gate.entities.get("globex"),
                                        gate.entities.get("globex"), "posts", 5,
                                        gate.config.limits)
    now = int(gate.client.time()[0]) * 1000
    # Reserved longer ago than the timeout, and never settled: its process died.
    gate.ledger.take("globex", counters, requested=5, share_id="crashed", audit={},
                     now_ms=now - gate.ledger.reservation_timeout_ms - 1000)

    link(gate)

    assert gate.entities.get("globex").root == "acme"
    assert gate.client.hget(keys.share("acme", "crashed"), "status") == b"abandoned"
    assert used(gate, keys.counter("acme", "r2", "acme")) == 600 + 300 + 5  # counted
    closed = [f for _, f in gate.client.xrange(keys.audit("globex"))
              if f[b"outcome"] == b"abandoned"]
    assert [f[b"kind"] for f in closed] == [b"share.abandoned"]


def test_cluster_mode_says_to_link_at_creation(gate: Gate) -> None:
    with pytest.raises(BadInput) as refused:
        gate.entities.set_parent("globex", parent="acme", reason="x",
                                 r2_window=post_id_window(gate.config.limits),
                                 cluster=True, actor="cora", channel="cli")
    assert "entity add --parent" in refused.value.message
    assert gate.entities.get("globex").root == "globex"


def test_idempotency_records_move_with_the_pool(gate: Gate) -> None:
    key = keys.idempotency("globex", "dan", "k1")
    assert gate.client.exists(key)
    link(gate)
    assert gate.client.exists(keys.idempotency("acme", "dan", "k1"))
    assert not gate.client.exists(key)


def test_an_idempotency_key_used_with_both_pools_is_never_counted_twice(
        gate: Gate, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 10, key="k1", start=3000)  # dan's k1, now with acme too
    link(gate)
    assert records(gate, "acme")[-1]["idempotency_keys_left"] == "1"
    assert used(gate, keys.counter("acme", "r2", "acme")) == 910
    with pytest.raises(Conflict):
        share_ids(gate, tmp_path, "globex", 200, key="k1")  # the retry meets acme's record
    assert used(gate, keys.counter("acme", "r2", "acme")) == 910
    again = share_ids(gate, tmp_path, "acme", 10, key="k1", start=3000)
    assert again.grant.status == "replay"


def test_a_link_keeps_the_pools_past_days_and_counts_each_day_once(gate: Gate,
                                                                  tmp_path: Path) -> None:
    """Days are history: the pool's earlier days stay as charged (an earlier month's report
    must not change), hooli's own days show its usage as its own pool, and today's part so
    far joins the pool's today."""
    day_ms = 86_400_000
    seconds, _ = gate.client.time()
    today = seconds * 1000 // day_ms
    gate.entities.add("hooli", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("hooli", by="Pat Signer", actor="t", channel="cli")
    hooli = gate.entities.get("hooli")
    counters = charges.id_share_counters(hooli, hooli, "posts", 40, gate.config.limits)
    three_days_ago = (today - 3) * day_ms + 3_600_000
    gate.ledger.take("hooli", counters, requested=40, share_id="old", audit={},
                     now_ms=three_days_ago)
    gate.ledger.settle("hooli", "old", counters, delivered=True, audit={},
                       now_ms=three_days_ago)
    share_ids(gate, tmp_path, "hooli", 7, start=8000)  # today, before the link
    link(gate, "hooli")
    share_ids(gate, tmp_path, "hooli", 5, start=8100)  # today, after it

    def days(key: str) -> dict[int, int]:
        return gate.ledger.daily([Counter(key, "R2", post_id_window(gate.config.limits),
                                          Limit(None))], range(today - 5, today + 1))[0]

    assert days(keys.counter("acme", "r2", "acme")) == {today: 600 + 7 + 5}
    assert days(keys.counter("acme", "r2", "hooli")) == {today - 3: 40, today: 7 + 5}
    total = dashboard.overview(gate).daily_total()
    assert (total.get(today - 3), total.get(today)) == (40, 600 + 300 + 7 + 5)
    assert gate.entities.get("hooli").linked_at_ms // day_ms == today
