"""Benchmark the audit hash chain (R11): what it adds to a grant, and how fast it verifies.

Two measurements on one embedded redis-server (Unix socket, ``appendonly yes``):

1. Grant latency with and without the chain: the same take.lua, once as shipped and once with
   ``append_audit`` replaced by a plain XADD, alternating grant by grant in one process (each
   side on its own entity), so whatever else the machine does falls on both sides alike. Once
   with every write fsynced (``appendfsync always``, as deployed), once without (the script's
   own cost).
2. ``audit verify`` throughput: 1,000,000 chained records (a take's fields) appended by the
   shipped ``append_audit`` (in batches of 10,000 per script call, fsync off for the load only),
   then, each in a fresh interpreter, alternated, ``--runs`` times: ``chain.verify_stream`` as
   ``audit verify`` runs it (ranges in forked processes, two per core), the same in one process,
   and what any script reading the log does — redis-py's ``xrange`` in batches of 1,000, no
   hashing at all. Reading from Redis is included on every side.

Prints medians and the goals (chain adds ≤ 10 % to a grant; verify ≥ 200,000 records/s); exits
1 if a goal fails. Run from the repository root::

    python bench/audit.py
"""

from __future__ import annotations

import argparse
import json
import platform
import shlex
import statistics
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path

import redis
from common import machine_line, print_goals, print_table, run_child

from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.scripts import Scripts
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

WINDOW = Window("30d", 30 * DAY_MS, 600_000)
AUDIT = {"actor": "bench", "entity": "bench", "recipient": "bench", "channel": "api",
         "kind": "share", "request_id": "0123456789abcdef"}
PLAIN = "\nlocal function append_audit(args) return redis.call(unpack(args)) end\n"
LOAD = """
for i = 1, tonumber(ARGV[1]) do
  append_audit({'XADD', KEYS[1], '*', 'time', '1795910000000', 'actor', 'analyst-0042',
                'entity', 'acme-research', 'recipient', 'analyst-0042', 'channel', 'api',
                'kind', 'share', 'requested', '100000', 'granted', '100000', 'rule', 'R2',
                'outcome', 'granted', 'request_id', 'f3b2c1d0e9a8b7c6', 'share_id',
                'a1b2c3d4e5f60718293a4b5c6d7e8f90'}, KEYS[2])
end
return 1
"""


class Unchained(Scripts):
    """The shipped scripts with append_audit shadowed by a plain XADD: the grant before R11."""

    def __init__(self, client: redis.Redis) -> None:
        lua = resources.files("gatekeeper.ledger") / "lua"
        prelude = (lua / "_window.lua").read_text() + PLAIN
        for name in self.NAMES:
            body = (lua / f"{name}.lua").read_text()
            setattr(self, name, client.register_script(prelude + "\n" + body))


def one_grant(ledger: Ledger, counter: Counter, entity: str) -> float:
    t = time.perf_counter()
    ledger.take(entity, [counter], requested=1, share_id=uuid.uuid4().hex, audit=AUDIT)
    return (time.perf_counter() - t) * 1000


def paired(sides: dict[str, Ledger], tag: str, n: int) -> dict[str, list[float]]:
    """n grants per side, alternating grant by grant (A B, B A, A B, …), each side on its own
    fresh entity: whatever the machine does meanwhile (other processes, fsync stalls) falls on
    both sides alike. Latencies in ms."""
    counters = {name: Counter(keys.counter(f"{tag}-{name}", "r2", f"{tag}-{name}"), "R2",
                              WINDOW, Limit(10**9), amount=1) for name in sides}
    out: dict[str, list[float]] = {name: [] for name in sides}
    names = list(sides)
    for i in range(n):
        for name in (names if i % 2 == 0 else names[::-1]):
            out[name].append(one_grant(sides[name], counters[name], f"{tag}-{name}"))
    return out


SIDES = {
    "verify": "gatekeeper audit verify (forked ranges)",
    "verify-1": "gatekeeper audit verify, one process",
    "read": "redis-py xrange, no hashing (a plain read)",
}


def one_side(side: str, socket: str, stream: str) -> None:
    """In a fresh interpreter: read (and, but for `read`, verify) the stream once; print
    records and seconds as JSON."""
    client = redis.Redis(unix_socket_path=socket)
    t = time.perf_counter()
    if side == "read":
        records, at = 0, "-"
        while batch := client.xrange(stream, min=at, count=1000):
            records += len(batch)
            at = "(" + batch[-1][0].decode()
    else:
        result = chain.verify_stream(client, stream, workers=1 if side == "verify-1" else None)
        assert result.problem is None, result.problem
        records = result.records
    print(json.dumps({"records": records, "seconds": time.perf_counter() - t}))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--grants", type=int, default=3000, help="grants per side and setting")
    parser.add_argument("--records", type=int, default=1_000_000, help="records to verify")
    parser.add_argument("--runs", type=int, default=3, help="verify runs per side (medians)")
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--socket", help=argparse.SUPPRESS)
    parser.add_argument("--stream", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:
        one_side(args.side, args.socket, args.stream)
        return 0
    command = shlex.join([Path(sys.executable).name, *sys.argv])

    with tempfile.TemporaryDirectory(prefix="gk-bench-") as tmp:
        server = EmbeddedServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            sides = {"chained": Ledger(client), "unchained": Ledger(client, Unchained(client))}
            paired(sides, "warm", 100)  # load the scripts, warm the connection
            lat = {"always": paired(sides, "fsync", args.grants)}
            client.config_set("appendfsync", "no")  # the script's own cost, without the disk
            lat["no"] = paired(sides, "nofsync", args.grants)

            stream = keys.audit("verify-bench")
            load = client.register_script((resources.files("gatekeeper.ledger") / "lua" /
                                           "_window.lua").read_text() + LOAD)
            left = args.records
            while left:
                n = min(10_000, left)
                load(keys=[stream, keys.chain_of(stream)], args=[n])
                left -= n
            rates: dict[str, list[float]] = {side: [] for side in SIDES}
            order = list(SIDES)
            for run in range(args.runs):  # alternated: whatever else runs falls on every side
                for side in (order if run % 2 == 0 else order[::-1]):
                    got = run_child(side, [__file__, "--side", side, "--socket",
                                           str(server.socket), "--stream", stream], Path.cwd())
                    assert got["records"] == args.records, (side, got)
                    rates[side].append(got["records"] / got["seconds"])
            version = client.info("server")["redis_version"]
        finally:
            server.stop()

    rows, extra = [], {}
    for fsync, sides_lat in lat.items():
        med = {name: statistics.median(v) for name, v in sides_lat.items()}
        for name, v in sides_lat.items():
            rows.append([f"{name}, appendfsync {fsync}", f"{med[name]:.3f}",
                         f"{statistics.quantiles(v, n=10)[-1]:.3f}", f"{len(v):,}"])
        extra[fsync] = med["chained"] / med["unchained"] - 1
    rate = {side: statistics.median(v) for side, v in rates.items()}
    print(machine_line())
    print(f"software: Python {platform.python_version()}, redis-server {version}, "
          f"redis-py {redis.__version__}; the embedded store (Unix socket, appendonly yes)")
    print(f"command: {command}")
    print()
    print_table(["grant (take.lua, cost 1)", "median ms", "p90 ms", "grants"], rows)
    for fsync, e in extra.items():
        print(f"the chain adds {e * 100:+.1f} % to the median grant (appendfsync {fsync})")
    print()
    print_table([f"{args.records:,} records, one stream, read from Redis", "median records/s",
                 "runs (records/s)"],
                [[label, f"{rate[side]:,.0f}", ", ".join(f"{r:,.0f}" for r in rates[side])]
                 for side, label in SIDES.items()])
    return print_goals([
        ("the chain adds <= 10 % to a grant's median latency, as deployed (appendfsync "
         f"always): {extra['always'] * 100:+.1f} %", extra["always"] <= 0.10),
        (f"audit verify >= 200,000 records/s ({rate['verify']:,.0f})",
         rate["verify"] >= 200_000),
        (f"audit verify outpaces a plain read of the same log ({rate['verify']:,.0f} vs "
         f"{rate['read']:,.0f} records/s)", rate["verify"] > rate["read"]),
    ])


if __name__ == "__main__":
    sys.exit(main())
