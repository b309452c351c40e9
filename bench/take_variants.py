"""What each guarantee of a cost-1 take costs in the server: take.lua with one guarantee's
Redis calls removed at a time, and with all of them removed (the counter alone).

A measurement, not a proposal: every variant but the first drops something the ledger
promises (README, "How the ledger counts"). Each variant runs on a fresh entity of one
embedded redis-server (``appendfsync no``, so the disk does not time it), in alternated rounds;
printed: the script's time in the server (INFO commandstats, EVALSHA usec per call), the
grant's p50 seen by the client, and the AOF bytes per grant — medians of the rounds, with the
load average. Run from the repository root::

    python bench/take_variants.py            # 1000 grants x 7 rounds per variant, ~1.5 min
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

from common import machine_line, print_table

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.scripts import source
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

WINDOW = Window("30d", 30 * DAY_MS, 600_000)
AUDIT = {"actor": "bench", "channel": "bench"}

# What each guarantee's calls are in take.lua: (text, replacement) pairs.
CUTS: dict[str, list[tuple[str, str]]] = {
    "audit record + chain head (R11)": [
        ("out.audit_id = audit(audit_fields)", "out.audit_id = '0-0'")],
    "share record, its lifetime, its 2 index entries": [
        ("redis.call(unpack(record))", ""),
        ("redis.call('EXPIRE', KEYS[4], tonumber(ARGV[5]))", ""),
        ("redis.call('ZADD', KEYS[8], fmt(now), share_id)", ""),
        ("  index_new(KEYS[9], KEYS[4], tonumber(ARGV[5]) * 1000)\n", "\n")],
    "summary entry": [
        ("    summary_entry(KEYS[10 + 3 * n], s, s.key, fmt(s.used), s.first, s.last)", "")],
    "usage per day": [
        ("redis.call('HINCRBY', s.daily_key, fmt(math.floor(start / DAY)), amount)", "")],
    "stale-reservation read (abandoned ones closed)": [
        ("    seen = redis.call('ZRANGEBYSCORE', reserved, '-inf', before, 'LIMIT', 0, 1000)",
         "    seen = {}")],
    "moved / resent check": [
        ("if redis.call('EXISTS', KEYS[6], KEYS[4]) > 0 then", "if false then")],
    "the list's expiry check (PTTL)": [
        ("redis.call('PTTL', s.key) >= ttl - 1000", "true")],
}


def variants() -> dict[str, str]:
    full = source("take")

    def cut(names: list[str]) -> str:
        text = full
        for name in names:
            for old, new in CUTS[name]:
                if text.count(old) != 1:
                    raise SystemExit(f"take.lua changed: {old!r} not found once; update CUTS")
                text = text.replace(old, new)
        return text

    out = {"full take": full}
    out.update({f"- {name}": cut([name]) for name in CUTS})
    out["the counter alone (every cut above)"] = cut(list(CUTS))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=1000, help="per variant and round")
    parser.add_argument("--rounds", type=int, default=7)
    args = parser.parse_args()
    loads = ["/".join(f"{x:.2f}" for x in os.getloadavg())]
    with tempfile.TemporaryDirectory(prefix="gk-variants-") as tmp:
        server = EmbeddedServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            client.config_set("appendfsync", "no")
            ledger = Ledger(client)
            scripts = {name: client.register_script(text) for name, text in variants().items()}
            names = list(scripts)
            got: dict[str, dict[str, list[float]]] = {n: {} for n in names}
            for r in range(args.rounds):
                for i, name in enumerate(names if r % 2 == 0 else names[::-1]):
                    ledger.scripts.take = scripts[name]
                    entity = f"v{r}-{i}"
                    counter = Counter(keys.counter(entity, "r2", entity), "R2", WINDOW,
                                      Limit(1_500_000), amount=1)
                    for _ in range(20):
                        ledger.take(entity, [counter], requested=1, share_id=uuid.uuid4().hex,
                                    audit=AUDIT)
                    client.config_resetstat()
                    aof = client.info("persistence")["aof_current_size"]
                    ms = []
                    for _ in range(args.grants):
                        t0 = time.perf_counter()
                        ledger.take(entity, [counter], requested=1,
                                    share_id=uuid.uuid4().hex, audit=AUDIT)
                        ms.append((time.perf_counter() - t0) * 1000)
                    stats = client.info("commandstats")["cmdstat_evalsha"]
                    size = client.info("persistence")["aof_current_size"] - aof
                    for what, value in (("us", stats["usec_per_call"]),
                                        ("p50", statistics.median(ms)),
                                        ("aof", size / args.grants)):
                        got[name].setdefault(what, []).append(value)
            loads.append("/".join(f"{x:.2f}" for x in os.getloadavg()))
        finally:
            server.stop()
    med = {n: {k: statistics.median(v) for k, v in m.items()} for n, m in got.items()}
    full = med["full take"]
    print("take.lua with a guarantee's calls removed (a measurement only), cost-1 grants")
    print(f"command: {' '.join([Path(sys.executable).name, *sys.argv])}")
    print(machine_line())
    print(f"load average (1/5/15 min) at start and end: {' | '.join(loads)}")
    print_table(["variant", "script in server (µs)", "saves (µs)", "grant p50 (ms)",
                 "AOF B/grant", "saves (B)"],
                [[n, f"{m['us']:.1f}", f"{full['us'] - m['us']:.1f}", f"{m['p50']:.3f}",
                  f"{m['aof']:,.0f}", f"{full['aof'] - m['aof']:,.0f}"] for n, m in med.items()])
    print(f"medians of {args.rounds} alternated rounds of {args.grants} grants per variant; "
          "appendfsync no; the runs of one variant spread by tens of µs on a shared machine, "
          "so a single call's saving is below what this resolves — the groups are not")
    return 0


if __name__ == "__main__":
    sys.exit(main())
