"""Only the ledger runs Lua, and every script touches only the keys it is given in KEYS.

The first test reads the package's source: outside ``gatekeeper/ledger/`` nothing registers,
evaluates or reaches the ledger's scripts. The others run every script on the real Redis server
as an ACL user whose key patterns are exactly the KEYS of the call about to run (redis-server
6.2 checks ACLs on each ``redis.call`` inside a script: an undeclared key is refused, and the
script fails), through the paths people use: shares with idempotency keys, refunds, recounts,
stale reservations, peeks, records, a pool joining another (R10, also in a store written
before the pool's key index) and the audit chain's append.
"""

from __future__ import annotations

import ast
import re
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import real_client
from live import share_ids

import gatekeeper
from gatekeeper import config as config_mod
from gatekeeper.domain import hydrated
from gatekeeper.domain.gate import Gate, set_parent
from gatekeeper.ledger import chain, charges, keys
from gatekeeper.ledger.ledger import LAYOUT, Counter, Limit, post_id_window
from gatekeeper.ledger.scripts import Scripts
from gatekeeper.ledger.summary import queue_pools, stream_heads, stream_heads_top

PACKAGE = Path(gatekeeper.__file__).parent
LEDGER = PACKAGE / "ledger"
LUA_CALLS = {"register_script", "evalsha", "eval", "eval_ro", "evalsha_ro", "script_load",
             "fcall"}
LUA_COMMANDS = {"EVAL", "EVALSHA", "EVAL_RO", "EVALSHA_RO", "SCRIPT", "FCALL"}
SPY = "gatekeeper-spy"
PASSWORD = "correct horse battery"

pytestmark = pytest.mark.usefixtures("quick_password_hashes")


def lua_callers(path: Path) -> list[str]:
    """Where a module registers, evaluates or reaches the ledger's scripts, as 'line: what'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Attribute) and node.attr in LUA_CALLS | {"scripts"}:
            found.append(f"{node.lineno}: .{node.attr}")
        elif (isinstance(node, ast.Constant) and isinstance(node.value, str)
              and node.value.upper() in LUA_COMMANDS):
            found.append(f"{node.lineno}: {node.value!r}")
        elif isinstance(node, ast.ImportFrom) and node.module == "gatekeeper.ledger.scripts":
            found.append(f"{node.lineno}: import of gatekeeper.ledger.scripts")
    return found


def test_no_module_outside_the_ledger_runs_lua_or_reaches_its_scripts() -> None:
    outside = {str(p.relative_to(PACKAGE.parent)): lua_callers(p)
               for p in sorted(PACKAGE.rglob("*.py")) if LEDGER not in p.parents}
    assert len(outside) > 30  # the scan sees the package
    assert {path: found for path, found in outside.items() if found} == {}


def test_the_scan_finds_a_script_call_where_there_is_one(tmp_path: Path) -> None:
    module = tmp_path / "m.py"
    module.write_text("def f(gate, pipe):\n    gate.ledger.scripts.run('move', [], [])\n"
                      "    pipe.execute_command('EVALSHA', 'x', 0)\n"
                      "    gate.client.register_script('return 1')\n")
    assert sorted(lua_callers(module)) == ["2: .scripts", "3: 'EVALSHA'",
                                           "4: .register_script"]


# --- every key a script touches is in its KEYS (real server, ACL spy) ---------------------------


def _pattern(key: str) -> str:
    """An ACL key pattern matching exactly `key` (glob characters escaped)."""
    return "~" + re.sub(r"([*?\[\]\\])", r"\\\1", key)


class SpyScripts(Scripts):
    """The ledger's scripts, each run as the spy user whose keys are exactly the call's KEYS."""

    def __init__(self, spy: redis.Redis, admin: redis.Redis) -> None:
        super().__init__(spy)
        self.admin = admin
        self.ran: list[str] = []

    def declare(self, keys_: list[str]) -> None:
        # -keys and -scan: a script that lists keys instead of being given them fails too.
        self.admin.execute_command("ACL", "SETUSER", SPY, "reset", "on", "nopass",
                                   *map(_pattern, keys_), "+@all", "-keys", "-scan")

    def run(self, name: str, keys_: list[str], args: list[Any]) -> dict[str, Any]:
        self.declare(keys_)
        out = super().run(name, keys_, args)
        self.ran.append(name)
        return out

    def queue(self, pipe: Any, name: str, keys_: list[str], args: list[Any]) -> None:
        raise AssertionError("the spy runs each script on its own (Ledger.peek_many batches)")


@pytest.fixture
def spy(real_server: dict[str, str]) -> Iterator[tuple[redis.Redis, redis.Redis]]:
    """(admin, spy) clients on the real server, which is empty; the spy user may touch no key
    until a script call declares its KEYS."""
    admin = real_client(real_server)
    admin.flushall()
    admin.execute_command("ACL", "SETUSER", SPY, "reset", "on", "nopass", "+@all")
    conn = dict(real_server)
    if "url" in conn:
        user = redis.Redis.from_url(conn["url"], username=SPY, password="x")
    else:
        user = redis.Redis(unix_socket_path=conn["unix_socket_path"], username=SPY,
                           password="x")
    yield admin, user
    user.close()
    admin.execute_command("ACL", "DELUSER", SPY)
    admin.flushall()
    admin.close()


def spied_gate(admin: redis.Redis, user: redis.Redis, tmp_path: Path) -> Gate:
    """The fixture history of test_parent.py, written with every script run as the spy."""
    (tmp_path / "config.toml").write_text('[limits]\npost_ids_per_entity = 1000\n'
                                          'hydrated_per_recipient = 30\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=admin)
    g.ledger.scripts = SpyScripts(user, admin)
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
    share_ids(g, tmp_path, "globex", 200, key="k1")  # replayed: reads the first share
    share_ids(g, tmp_path, "globex", 100, start=500)
    gia = g.users.get("gia")
    r6 = [charges.hydrated_counter(gia, 12, g.config.limits)]
    g.ledger.take(gia.root, r6, requested=12, share_id="x1", audit={"actor": "gia"})
    g.ledger.settle(gia.root, "x1", r6, delivered=True, audit={})
    g.ledger.take(gia.root, r6, requested=12, share_id="x2", audit={"actor": "gia"})
    g.ledger.settle(gia.root, "x2", r6, delivered=False, audit={})  # refunded
    g.ledger.settle(gia.root, "x2", r6, delivered=True, audit={})  # recounted
    g.users.user_for_token(g.users.create_token("gus", actor="t", channel="cli"))
    hydrated.issue_ticket(g, g.users.get("gus"))
    return g


@pytest.mark.real
def test_every_script_touches_only_its_declared_keys(spy: tuple[redis.Redis, redis.Redis],
                                                     tmp_path: Path) -> None:
    admin, user = spy
    g = spied_gate(admin, user, tmp_path)
    scripts = g.ledger.scripts
    assert isinstance(scripts, SpyScripts)
    gia = g.users.get("gia")
    r6 = [charges.hydrated_counter(gia, 1, g.config.limits)]
    # Reservations left open past the timeout: the next take closes them, or a sweep.
    long_ago = int(time.time() * 1000) - 2 * g.ledger.reservation_timeout_ms
    for share_id in ("stale1", "stale2"):
        g.ledger.take(gia.root, r6, requested=1, share_id=share_id, audit={"actor": "gia"},
                      now_ms=long_ago)
    g.ledger.take(gia.root, r6, requested=1, share_id="x3", audit={"actor": "gia"})
    for share_id in ("stale1", "stale2"):
        assert admin.hget(keys.share(gia.root, share_id), "status") == b"abandoned"
    g.ledger.settle(gia.root, "x3", r6, delivered=True, audit={})
    g.ledger.take(gia.root, r6, requested=1, share_id="stale3", audit={"actor": "gia"},
                  now_ms=long_ago)
    assert g.ledger.sweep(gia.root) == {"abandoned": 1, "open": 0}
    window = post_id_window(g.config.limits)
    counters = [Counter(keys.counter(root, "r2", root), "R2", window, Limit(1000))
                for root in ("acme", "globex")]
    g.ledger.peek(counters)
    g.ledger.peek(counters, next_only=True)
    set_parent(g, "globex", parent="acme", reason="same company", actor="cora",
               channel="cli")
    assert g.ledger.peek(counters[:1])[1][0].used == 600 + 300
    read = queue_pools(g.ledger, None, ["acme", "globex"], {"acme": ["acme", "acme-labs"]},
                       [int(time.time() * 1000) // 86_400_000])([])
    assert read.pools["acme"].summary and len(read.entities) == 2 and read.days[0] == 900
    top = f"{2**64 - 1}-{2**64 - 1}"
    heads = stream_heads(g.ledger, [keys.audit("acme"), keys.audit("globex")], [top], "0-0")
    assert heads is not None and all(heads)
    tops = stream_heads_top(g.ledger, [keys.audit("globex"), keys.audit("acme")], "0-0",
                            (top, heads[0]), 1, 1)
    assert tops is not None and len(tops[0]) >= 1
    assert set(scripts.ran) == set(Scripts.NAMES)
    assert scripts.ran.count("take") > 8

    stream = keys.audit("acme")
    scripts.declare([stream, keys.chain_of(stream)])
    pipe = user.pipeline()
    chain.append(pipe, stream, {"kind": "test", "outcome": "changed"})
    pipe.execute()


@pytest.mark.real
def test_the_spy_refuses_a_key_a_script_was_not_given(
        spy: tuple[redis.Redis, redis.Redis]) -> None:
    admin, user = spy
    scripts = SpyScripts(user, admin)
    scripts.declare(["k1"])
    with pytest.raises(redis.exceptions.ResponseError, match="keys"):
        user.eval("return redis.call('GET', 'k2')", 1, "k1")
    with pytest.raises(redis.exceptions.ResponseError):
        user.eval("return redis.call('KEYS', '*')", 1, "k1")
    assert user.eval("return redis.call('GET', KEYS[1])", 1, "k1") is None


@pytest.mark.real
def test_a_pool_from_before_its_key_index_moves_whole(spy: tuple[redis.Redis, redis.Redis],
                                                      tmp_path: Path) -> None:
    """A store written before the pool's key index: the move indexes the pool first (SCAN),
    so every key of it still moves, and the script still touches only what it is given."""
    admin, user = spy
    g = spied_gate(admin, user, tmp_path)
    before = sorted(k.decode().removeprefix(keys.pool_prefix("globex"))
                    for k in admin.scan_iter(match=keys.pool_prefix("globex") + "*")
                    if not keys.stays(k.decode()))
    assert "ctr:r2:globex" in before and "user:gus" in before
    admin.delete(keys.pool_keys("globex"))
    admin.set(keys.LAYOUT, 3)
    set_parent(g, "globex", parent="acme", reason="same company", actor="cora",
               channel="cli")
    left = [k.decode() for k in admin.scan_iter(match=keys.pool_prefix("globex") + "*")
            if not keys.stays(k.decode())]
    assert left == []
    for suffix in before:
        assert admin.exists(keys.pool_prefix("acme") + suffix), suffix
    assert int(admin.get(keys.LAYOUT)) == 3  # upgrade, not a move, marks the layout
    assert g.ledger.upgrade(g.config.limits)["keys"] > 0
    assert int(admin.get(keys.LAYOUT)) == LAYOUT


# --- the ledger's batched peek and the pool's key index (fakeredis and real) --------------------


def test_peek_many_reads_counters_of_many_pools_in_order(redis_client: redis.Redis,
                                                          tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[limits]\npost_ids_per_entity = 1000\n")
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    window = post_id_window(g.config.limits)
    counters = [Counter(keys.counter(f"p{i % 7}", "r2", f"e{i}"), "R2", window, Limit(5000))
                for i in range(1203)]  # three calls' worth (PEEK_BATCH)
    for i in (0, 5, 600, 1202):
        g.ledger.take(f"p{i % 7}", [Counter(counters[i].key, "R2", window, Limit(5000), i + 1)],
                      requested=i + 1, share_id=f"s{i}", audit={})
    states = g.ledger.peek_many(counters)
    assert len(states) == len(counters)
    assert {i: s.used for i, s in enumerate(states) if s.used} == {0: 1, 5: 6, 600: 601,
                                                                     1202: 1203}
    assert states[600] == g.ledger.peek([counters[600]])[1][0]
    assert {s.remaining for i, s in enumerate(states) if i not in (0, 5, 600, 1202)} == {5000}


def test_every_key_a_pool_writes_is_in_its_key_index(redis_client: redis.Redis,
                                                      tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text("[limits]\npost_ids_per_entity = 1000\n")
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    g.entities.add("globex", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("globex", by="Pat Signer", actor="t", channel="cli")
    g.users.add("dan", entity="globex", role="data", password=PASSWORD, actor="t",
                channel="cli")
    share_ids(g, tmp_path, "globex", 5, key="k1")
    g.users.user_for_token(g.users.create_token("dan", actor="t", channel="cli"))
    hydrated.issue_ticket(g, g.users.get("dan"))
    written = {k.decode() for k in redis_client.scan_iter(match=keys.pool_prefix("globex") + "*")
               if not keys.stays(k.decode())}
    indexed = {k.decode() for k in redis_client.zrange(keys.pool_keys("globex"), 0, -1)}
    assert written == indexed
    assert {k.removeprefix(keys.pool_prefix("globex")).split(":")[0] for k in written} == {
        "entity", "user", "tokens", "tokens-used", "ctr", "share", "idem", "ticket"}
    assert redis_client.zscore(keys.pool_keys("globex"), keys.entity("globex", "globex")) == float(
        "inf")
    # No entry says a key is gone before it is: each reaches at least to the key's expiry.
    seconds, micros = redis_client.time()
    now = seconds * 1000 + micros // 1000
    for key in written:
        ttl = redis_client.pttl(key)
        assert redis_client.zscore(keys.pool_keys("globex"), key) >= (
            float("inf") if ttl < 0 else now + ttl - 5), key
    # An entry whose key has expired is forgotten by the next take that opens a bucket (here:
    # the counters' windows have passed, so their keys are gone and the take opens new ones).
    gone = keys.ticket("globex", "expired-long-ago")
    redis_client.zadd(keys.pool_keys("globex"), {gone: 1})
    for key in redis_client.scan_iter(match=keys.pool_prefix("globex") + "ctr:*"):
        redis_client.delete(key)
    share_ids(g, tmp_path, "globex", 5, start=100)
    assert redis_client.zscore(keys.pool_keys("globex"), gone) is None


def test_a_counter_key_is_read_back_and_its_total_and_days_are_not_counters() -> None:
    key = keys.counter("acme", "r6", "dan")
    assert keys.parse_counter(key) == ("acme", "r6", "dan")
    assert keys.counter_keys(key) == [key, keys.counter_sum(key), keys.counter_daily(key)]
    assert keys.parse_counter(keys.counter_sum(key)) is None
    assert keys.parse_counter(keys.counter_daily(key)) is None
    assert keys.parse_counter(keys.entity("acme", "dan")) is None
    assert keys.parse_counter(keys.SYS_AUDIT) is None
    assert keys.rehome(key, "globex") == keys.counter("globex", "r6", "dan")
    assert keys.stays(keys.audit("acme")) and keys.stays(keys.chain_of(keys.audit("acme")))
    assert not keys.stays(key)
