"""Benchmark the R2 ledger against the `limits` library's moving window, side by side.

Both run on one real redis-server (the embedded store: Unix socket, ``appendonly yes``,
``appendfsync always``), so every grant on either side waits for the same fsync. Measured:
grant latency at cost 1 and cost 100,000, Redis memory per entity after 15 shares of 100,000,
grants per second from 4 client processes, and IDs over-granted when processes race into one
entity near its limit. Prints one table and the goals; exits 1 if a goal fails.

Run from the repository root::

    python bench/ledger.py
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import platform
import shlex
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import limits
import redis
from common import machine_line, print_goals, print_table
from limits import RateLimitItemPerDay
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter

from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.store import EmbeddedServer, redis_server_binary
from gatekeeper.rules.errors import QuotaExceeded
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

LIMIT = 1_500_000  # R2: Post IDs per entity per 30 days
BIG = 100_000  # the large share
SHARES_PER_ENTITY = 15  # 15 x 100,000 = the whole limit
AUDIT = {"actor": "bench", "channel": "bench"}
WINDOW = Window("30d", 30 * DAY_MS, 600_000)
ITEM = RateLimitItemPerDay(LIMIT, 30)


# --- the two sides, behind one call: grant(entity, cost) -> granted? -------------------------


class Ours:
    """gatekeeper's ledger: one take per share, with its audit record and share record."""

    label = "gatekeeper"

    def __init__(self, client: redis.Redis) -> None:
        self.ledger = Ledger(client)

    def grant(self, entity: str, cost: int) -> bool:
        counter = Counter(keys.counter(entity, "r2", entity), "R2", WINDOW, Limit(LIMIT),
                          amount=cost)
        try:
            self.ledger.take(entity, [counter], requested=cost, share_id=uuid.uuid4().hex,
                             audit=AUDIT)
        except QuotaExceeded:
            return False
        return True

    @staticmethod
    def pattern(entity: str) -> str:
        return f"gk:{{e:{entity}}}:*"


class Theirs:
    """limits' moving window: one hit per share, cost = the share's IDs."""

    label = "limits moving window"

    def __init__(self, socket: str) -> None:
        self.limiter = MovingWindowRateLimiter(RedisStorage(f"redis+unix://{socket}"))

    def grant(self, entity: str, cost: int) -> bool:
        return self.limiter.hit(ITEM, entity, cost=cost)

    @staticmethod
    def pattern(entity: str) -> str:
        return f"{RedisStorage.PREFIX}:{ITEM.key_for(entity)}*"


def make_side(side: str, socket: str) -> Ours | Theirs:
    if side == "ours":
        return Ours(redis.Redis(unix_socket_path=socket))
    return Theirs(socket)


# --- measurement helpers ---------------------------------------------------------------------


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def quiet(client: redis.Redis) -> None:
    """Wait out any background AOF rewrite, so one side's aftermath does not time the other."""
    while True:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)


def latencies(side: Ours | Theirs, entities: Callable[[int], str], cost: int, reps: int
              ) -> list[float]:
    """Milliseconds per grant; rep i goes to entities(i). Every grant must succeed."""
    out = []
    for i in range(reps):
        entity = entities(i)
        t0 = time.perf_counter()
        ok = side.grant(entity, cost)
        out.append((time.perf_counter() - t0) * 1000)
        if not ok:
            raise SystemExit(f"{side.label}: grant {i} of cost {cost} to {entity} was refused")
    return out


def memory(client: redis.Redis, pattern: str) -> dict[str, int]:
    """MEMORY USAGE (exact: SAMPLES 0) of every key matching pattern, by key type."""
    by_type: dict[str, int] = {}
    for key in client.scan_iter(match=pattern, count=1000):
        kind = client.type(key).decode()
        by_type[kind] = by_type.get(kind, 0) + (client.memory_usage(key, samples=0) or 0)
    return by_type


def drop(client: redis.Redis, pattern: str) -> None:
    for key in client.scan_iter(match=pattern, count=1000):
        client.unlink(key)


# --- multi-process phases (spawned: each process has its own client) -------------------------


def throughput_worker(side: str, socket: str, entity: str, seconds: float,
                      barrier: Any, results: Any) -> None:
    s = make_side(side, socket)
    s.grant(entity + "-warm", 1)  # loads the scripts
    barrier.wait()
    granted = 0
    t0 = time.perf_counter()
    while (elapsed := time.perf_counter() - t0) < seconds:
        granted += s.grant(entity, 1)
    results.put((granted, elapsed))


def race_worker(side: str, socket: str, entity: str, attempts: int, cost: int,
                barrier: Any, results: Any) -> None:
    s = make_side(side, socket)
    s.grant(entity + "-warm", 1)
    barrier.wait()
    results.put(sum(cost for _ in range(attempts) if s.grant(entity, cost)))


def run_processes(target: Callable[..., None], argsets: list[tuple[Any, ...]]) -> list[Any]:
    ctx = mp.get_context("spawn")
    barrier, results = ctx.Barrier(len(argsets)), ctx.Queue()
    procs = [ctx.Process(target=target, args=(*a, barrier, results)) for a in argsets]
    for p in procs:
        p.start()
    out = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join()
        if p.exitcode != 0:
            raise SystemExit(f"a worker exited with {p.exitcode}")
    return out


# --- the run ---------------------------------------------------------------------------------


def machine(client: redis.Redis, data_dir: Path) -> list[str]:
    fs = subprocess.run(["df", "--output=fstype", str(data_dir)], capture_output=True,
                        text=True, check=False).stdout.split()[-1:] or ["?"]
    cfg = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync")}
    return [
        machine_line(),
        f"software: Python {platform.python_version()}, redis-server "
        f"{client.info('server')['redis_version']} ({redis_server_binary()}), "
        f"redis-py {redis.__version__}, limits {limits.__version__}",
        f"store: one redis-server for both sides, Unix socket only (no TCP), data dir on "
        f"{fs[0]}, appendonly {cfg['appendonly']}, appendfsync {cfg['appendfsync']} "
        "(every write fsynced before it is answered, on both sides alike)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--small-reps", type=int, default=2000, help="cost-1 grants per side")
    parser.add_argument("--big-entities-ours", type=int, default=40,
                        help="entities x 15 cost-100,000 grants, gatekeeper")
    parser.add_argument("--big-entities-theirs", type=int, default=3,
                        help="entities x 15 cost-100,000 grants, moving window (slow)")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=3.0, help="throughput phase per side")
    parser.add_argument("--race-left", type=int, default=1000,
                        help="IDs left under the limit when the race starts")
    parser.add_argument("--race-attempts", type=int, default=500,
                        help="cost-1 grants each racing process attempts")
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.perf_counter()

    with tempfile.TemporaryDirectory(prefix="gk-bench-") as tmp:
        server = EmbeddedServer(Path(tmp))
        server.start()
        try:
            client = server.client()
            socket = str(server.socket)
            facts = machine(client, Path(tmp))
            sides = {"ours": Ours(client), "theirs": Theirs(socket)}
            for name, s in sides.items():  # load the scripts, warm the connections
                for _ in range(200):
                    s.grant(f"warm-{name}", 1)
            res: dict[str, dict[str, Any]] = {"ours": {}, "theirs": {}}

            # Latency, cost 1: one fresh entity per side, many grants.
            for name, s in sides.items():
                quiet(client)
                res[name]["small"] = latencies(s, lambda _i, n=name: f"small-{n}", 1,
                                               args.small_reps)

            # Latency, cost 100,000: fresh entities, 15 grants each (exactly the limit);
            # then memory per full entity, measured on every one of them.
            for name, s in sides.items():
                count = args.big_entities_ours if name == "ours" else args.big_entities_theirs
                quiet(client)
                res[name]["big"] = latencies(
                    s, lambda i, n=name: f"big-{n}-{i // SHARES_PER_ENTITY}", BIG,
                    count * SHARES_PER_ENTITY)
                per_entity = [memory(client, s.pattern(f"big-{name}-{e}")) for e in range(count)]
                res[name]["mem"] = sum(sum(m.values()) for m in per_entity) / count
                res[name]["mem_types"] = per_entity[0]
                if name == "theirs":
                    for e in range(count):  # ~30 MB each; free it before the next phases
                        drop(client, s.pattern(f"big-{name}-{e}"))

            # Grants per second: N spawned processes, each its own client and entity, cost 1.
            # Rounds in the order A B B A, so drift (AOF growth, page cache) hits both alike.
            for round_, name in enumerate(("ours", "theirs", "theirs", "ours")):
                quiet(client)
                out = run_processes(throughput_worker, [
                    (name, socket, f"tp-{name}-{round_}-{p}", args.seconds)
                    for p in range(args.procs)])
                res[name].setdefault("rates", []).append(
                    sum(g for g, _ in out) / max(e for _, e in out))
            for name in sides:
                res[name]["rate"] = sum(res[name]["rates"]) / len(res[name]["rates"])

            # Over-granting: fill one entity to LIMIT - race_left, then N processes race into it.
            for name, s in sides.items():
                entity = f"race-{name}"
                fill = LIMIT - args.race_left
                while fill > 0:
                    s.grant(entity, min(BIG, fill))
                    fill -= min(BIG, fill)
                quiet(client)
                got = run_processes(race_worker, [
                    (name, socket, entity, args.race_attempts, 1) for _ in range(args.procs)])
                res[name]["granted"] = sum(got)
                res[name]["over"] = max(0, sum(got) - args.race_left)
            # The ledger's own count must agree with what the racers were told.
            _, (state,) = Ledger(client).peek([Counter(
                keys.counter("race-ours", "r2", "race-ours"), "R2", WINDOW, Limit(LIMIT))])
            ours_used = state.used
        finally:
            server.stop()

    ours, theirs = res["ours"], res["theirs"]
    rows: list[tuple[str, str, str, str]] = []

    def row(metric: str, a: float, b: float, fmt: str, better_low: bool) -> None:
        factor = (b / a if better_low else a / b) if a and b else float("nan")
        rows.append((metric, format(a, fmt), format(b, fmt), f"{factor:,.1f}x"))

    for key, label in (("small", "cost 1"), ("big", "cost 100,000")):
        for p in (50, 99):
            row(f"grant latency {label}, p{p} (ms)", pct(ours[key], p), pct(theirs[key], p),
                ".3f", True)
    row(f"Redis memory per entity after {SHARES_PER_ENTITY} x 100,000 (B)", ours["mem"],
        theirs["mem"], ",.0f", True)
    row(f"grants/s, {args.procs} processes, cost 1 (mean of 2 x {args.seconds:g} s)",
        ours["rate"],
        theirs["rate"], ",.0f", False)
    rows.append((f"IDs over-granted ({args.procs} procs race for the last {args.race_left:,})",
                 f"{ours['over']:,}", f"{theirs['over']:,}", "-"))

    head = ("metric", "gatekeeper", "limits MW", "factor")
    print("gatekeeper ledger vs limits MovingWindowRateLimiter, "
          f"{LIMIT:,} IDs per 30 days (R2)")
    print(f"command: {command}")
    for fact in facts:
        print(fact)
    print()
    print_table(head, rows)
    print("factor: how many times better gatekeeper is (>1 = gatekeeper faster/smaller/more)")
    print(f"samples: cost 1 {len(ours['small'])} vs {len(theirs['small'])} grants; cost 100,000 "
          f"{len(ours['big'])} vs {len(theirs['big'])} grants on fresh entities "
          f"({SHARES_PER_ENTITY} each); percentiles nearest-rank")
    print(f"memory: MEMORY USAGE ... SAMPLES 0 summed over every key of the entity (SCAN), "
          f"mean of {args.big_entities_ours} vs {args.big_entities_theirs} full entities; "
          "first entity by type, gatekeeper: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(ours["mem_types"].items()))
          + " (counter = list + string; audit stream and share hashes included); limits MW: "
          + ", ".join(f"{k} {v:,}" for k, v in sorted(theirs["mem_types"].items())))
    print("grants/s rounds (A B B A): " + " / ".join(
        f"{n} " + ", ".join(f"{r:,.0f}" for r in res[k]["rates"])
        for k, n in (("ours", "gatekeeper"), ("theirs", "limits MW"))))
    print(f"race: granted {ours['granted']:,} vs {theirs['granted']:,} of "
          f"{args.procs * args.race_attempts:,} attempted IDs with {args.race_left:,} left; "
          f"gatekeeper's counter reads {ours_used:,} used of {LIMIT:,}")

    o_small, o_big, t_big = pct(ours["small"], 50), pct(ours["big"], 50), pct(theirs["big"], 50)
    goals = [
        (f"cost-100,000 p50 >= 50x faster than the moving window's "
         f"({t_big / o_big:,.1f}x)", t_big >= 50 * o_big),
        (f"cost-100,000 p50 within 1.5x of our cost-1 p50 ({o_big / o_small:.2f}x)",
         o_big <= 1.5 * o_small),
        (f"memory per full entity <= 1/1000 of the moving window's "
         f"(1/{theirs['mem'] / ours['mem']:,.0f})", ours["mem"] * 1000 <= theirs["mem"]),
        (f"IDs over-granted = 0 ({ours['over']}; counter {ours_used:,} <= {LIMIT:,})",
         ours["over"] == 0 and ours_used <= LIMIT),
    ]
    code = print_goals(goals)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
