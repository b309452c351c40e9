"""Benchmark the R2 ledger against its rivals, side by side: `limits`' moving window (exact,
one list entry per unit), the sorted set of weighted grants a Redis engineer would write (exact,
one member per grant, summed in Lua) and `limits`' sliding-window counter (approximate, for
reference).

Every side runs on one real redis-server (the embedded store: Unix socket, ``appendonly yes``,
``appendfsync always`` unless ``--fsync`` says otherwise), so every grant on every side waits
for the same fsync. Measured, each side run ``--runs`` times alternated and the medians
printed with the load average: grant latency at cost 1 and cost 100,000 (one process), at cost
1 into an entity already holding many grants in its window, grants per second from 4 client
processes at both costs, Redis memory per entity after 15 shares of 100,000, and IDs
over-granted when processes race into one entity near its limit. Prints one table and the
goals; exits 1 if a goal fails (among them: parity with the moving window at cost 1).

Run from the repository root::

    python bench/ledger.py
    python bench/ledger.py --cost1   # only the cost-1 rows (the parity check), ~1/4 the time
"""

from __future__ import annotations

import argparse
import math
import multiprocessing as mp
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol, cast

import limits
import redis
from common import machine_line, print_goals, print_table
from limits import RateLimitItemPerDay
from limits.storage import RedisStorage
from limits.strategies import MovingWindowRateLimiter, SlidingWindowCounterRateLimiter

from gatekeeper.ledger import clock, keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.scripts import Scripts
from gatekeeper.ledger.store import EmbeddedServer, redis_server_binary
from gatekeeper.rules.errors import QuotaExceeded
from gatekeeper.rules.limits import DAY_MS, Counter, Limit, Window

LIMIT = 1_500_000  # R2: Post IDs per entity per 30 days
BIG = 100_000  # the large share
SHARES_PER_ENTITY = 15  # 15 x 100,000 = the whole limit
AUDIT = {"actor": "bench", "channel": "bench"}
WINDOW = Window("30d", 30 * DAY_MS, 600_000)
ITEM = RateLimitItemPerDay(LIMIT, 30)


# --- the sides, behind one call: grant(entity, cost) -> granted? ------------------------------


class Ours:
    """gatekeeper's ledger: one take per share, with its audit record and share record."""

    label = "gatekeeper"
    short = "gatekeeper"

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


class MovingWindow:
    """limits' moving window: one hit per share, cost = the share's IDs (one list entry each)."""

    label = "limits moving window"
    short = "limits MW"

    def __init__(self, socket: str) -> None:
        self.limiter = MovingWindowRateLimiter(RedisStorage(f"redis+unix://{socket}"))

    def grant(self, entity: str, cost: int) -> bool:
        return self.limiter.hit(ITEM, entity, cost=cost)

    @staticmethod
    def pattern(entity: str) -> str:
        return f"{RedisStorage.PREFIX}:{ITEM.key_for(entity)}*"


class SlidingWindow:
    """limits' sliding-window counter: two counters per key, the previous one weighted by how
    much of it is still in the window. Approximate (it assumes the previous window's hits were
    spread evenly), so for reference only: it can grant more than the limit in any 30 days."""

    label = "limits sliding-window counter (approximate)"
    short = "limits SW"

    def __init__(self, socket: str) -> None:
        self.limiter = SlidingWindowCounterRateLimiter(RedisStorage(f"redis+unix://{socket}"))

    def grant(self, entity: str, cost: int) -> bool:
        return self.limiter.hit(ITEM, entity, cost=cost)

    @staticmethod
    def pattern(entity: str) -> str:
        return f"{RedisStorage.PREFIX}:{{{ITEM.key_for(entity)}}}*"


# What a Redis engineer writes for an exact weighted window: a sorted set, one member per grant
# (score = the Redis clock's ms, the weight after the member's unique id), expired members
# dropped and the rest summed in Lua, on every grant. Exact, and one script call like ours;
# its cost grows with the grants in the window, and so does its memory.
ZSET_LUA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local window, limit, cost = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
local used = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[1], 0, -1)) do
  used = used + tonumber(string.match(m, ':(%d+)$'))
end
if used + cost > limit then return 0 end
redis.call('ZADD', KEYS[1], now, ARGV[4] .. ':' .. ARGV[3])
redis.call('PEXPIRE', KEYS[1], window)
return 1
"""


class SortedSet:
    """The exact rival: a sorted set of weighted grants summed in Lua (ZSET_LUA)."""

    label = "sorted set of weighted grants, summed in Lua (exact)"
    short = "sorted set"

    def __init__(self, client: redis.Redis) -> None:
        self.script = client.register_script(ZSET_LUA)

    def grant(self, entity: str, cost: int) -> bool:
        return bool(self.script(keys=[self.key(entity)],
                                args=[WINDOW.length_ms, LIMIT, cost, uuid.uuid4().hex]))

    @staticmethod
    def key(entity: str) -> str:
        return f"zs:{{{entity}}}"

    @classmethod
    def pattern(cls, entity: str) -> str:
        return cls.key(entity)

    def prefill(self, client: redis.Redis, entity: str, grants: int) -> None:
        """`grants` cost-1 grants spread over the last minute, as ZSET_LUA would have added
        them (bulk: the grants' own cost is not what is measured)."""
        now = clock.now_ms(client)
        pipe = client.pipeline(transaction=False)
        for i in range(0, grants, 1000):
            pipe.zadd(self.key(entity), {f"{uuid.uuid4().hex}:1": now - 60_000 + j * 60_000 //
                                         grants for j in range(i, min(grants, i + 1000))})
        pipe.pexpire(self.key(entity), WINDOW.length_ms)
        pipe.execute()


Side = Ours | MovingWindow | SlidingWindow | SortedSet
SIDES = ("ours", "mw", "zset", "sw")


def make_side(side: str, socket: str) -> Side:
    client = redis.Redis(unix_socket_path=socket)
    if side == "ours":
        return Ours(client)
    if side == "zset":
        return SortedSet(client)
    if side == "sw":
        return SlidingWindow(socket)
    return MovingWindow(socket)


# --- measurement helpers ---------------------------------------------------------------------


def pct(samples: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(samples)
    return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]


def load() -> str:
    """The load average (1, 5, 15 min): the machine is shared, so every figure carries it."""
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def quiet(client: redis.Redis) -> None:
    """Wait out any background AOF rewrite, so one side's aftermath does not time the other."""
    while True:
        info = client.info("persistence")
        if not info["aof_rewrite_in_progress"] and not info["aof_rewrite_scheduled"]:
            return
        time.sleep(0.05)


class Grants(Protocol):
    label: str

    def grant(self, entity: str, cost: int) -> bool: ...


class Same:
    """One call standing in for a grant (the breakdown's do-nothing script)."""

    label = "a do-nothing script"

    def __init__(self, call: Callable[[], Any]) -> None:
        self.call = call

    def grant(self, entity: str, cost: int) -> bool:
        return bool(self.call())


def latencies(side: Grants, entities: Callable[[int], str], cost: int, reps: int) -> list[float]:
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


def alternated(runs: int) -> list[tuple[int, str]]:
    """(run, side) in the order they run: each run in the reverse order of the one before,
    so that drift (AOF growth, page cache, the other tenants) falls on every side alike."""
    return [(r, s) for r in range(runs) for s in (SIDES if r % 2 == 0 else SIDES[::-1])]


class Recorded:
    """Stands in for the ledger's scripts: runs them and keeps the last call's KEYS, ARGV and
    answer, or (once `canned`) answers as they last did without asking the server."""

    def __init__(self, real: Scripts) -> None:
        self.real = real
        self.canned = False
        self.last: tuple[list[str], list[Any], dict[str, Any]] = ([], [], {})

    def run(self, name: str, keys_: list[str], args: list[Any]) -> dict[str, Any]:
        if self.canned:
            return dict(self.last[2])
        answer = self.real.run(name, keys_, args)
        self.last = (keys_, args, answer)
        return answer


def cpu_s() -> float:
    """This process's CPU time (user + system) in seconds: the client's own work per grant,
    whatever the machine's other tenants make it wait."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def breakdown(client: redis.Redis, sides: dict[str, Side], runs: int, reps: int,
              fsync: str) -> dict[str, dict[str, float]]:
    """Where a cost-1 grant's time goes, per side (medians of `runs` alternated runs): p50
    latency with every write fsynced before it is answered (``always``) and without (``no``),
    whose difference is the fsync; the script's own time in the server (INFO commandstats);
    the AOF bytes a grant appends; the client's CPU time per grant (user + system, both
    policies); for gatekeeper, a do-nothing script sent with the very KEYS
    and ARGV of a take (the round trip: redis-py, the socket, argument parsing) and the
    Python around the call (Ledger.take with the script's answer canned)."""
    out: dict[str, dict[str, list[float]]] = {n: {} for n in sides}
    for run, name in alternated(runs):
        for policy in (("always", "no") if run % 2 == 0 else ("no", "always")):
            client.config_set("appendfsync", policy)
            client.config_resetstat()
            aof = client.info("persistence")["aof_current_size"]
            cpu = cpu_s()
            ms = latencies(sides[name], lambda _i, n=name, r=run: f"why-{n}-{r}", 1, reps)
            out[name].setdefault("client", []).append((cpu_s() - cpu) / reps * 1000)
            out[name].setdefault(policy, []).append(pct(ms, 50))
            stats = client.info("commandstats")["cmdstat_evalsha"]
            out[name].setdefault("server", []).append(stats["usec_per_call"] / 1000)
            out[name].setdefault("aof", []).append(
                (client.info("persistence")["aof_current_size"] - aof) / reps)
    client.config_set("appendfsync", fsync)
    ours = sides["ours"]
    assert isinstance(ours, Ours)
    real = ours.ledger.scripts
    recorded = Recorded(real)
    ours.ledger.scripts = cast(Scripts, recorded)
    ours.grant("why-shape", 1)
    keys_, args, _ = recorded.last
    noop = client.register_script("return '{}'")
    recorded.canned = True
    for _ in range(runs):
        t0 = time.perf_counter()
        for _ in range(reps):
            ours.grant("why-python", 1)
        out["ours"].setdefault("python", []).append((time.perf_counter() - t0) / reps * 1000)
        ms = latencies(Same(lambda: noop(keys=keys_, args=args)), lambda _i: "", 1, reps)
        out["ours"].setdefault("noop", []).append(pct(ms, 50))
    ours.ledger.scripts = real
    return {n: {k: statistics.median(v) for k, v in m.items()} for n, m in out.items()}


# --- the client processes (spawned once: each has its own clients) ----------------------------


def worker(socket: str, tasks: Any, barrier: Any, results: Any) -> None:
    """Run grant loops as told: (side, entity prefix, cost, seconds); None ends. A cost that
    fills an entity in SHARES_PER_ENTITY grants moves to a fresh entity after as many."""
    sides: dict[str, Side] = {}
    while (task := tasks.get()) is not None:
        name, prefix, cost, seconds = task
        if name not in sides:
            sides[name] = make_side(name, socket)
        side = sides[name]
        side.grant(prefix + "-warm", 1)  # loads the scripts, opens the connection
        per_entity = max(1, LIMIT // cost)
        barrier.wait()
        granted = n = 0
        t0 = time.perf_counter()
        while (elapsed := time.perf_counter() - t0) < seconds:
            granted += side.grant(f"{prefix}-{n // per_entity}", cost)
            n += 1
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


class Pool:
    """`procs` spawned client processes, kept for every throughput round."""

    def __init__(self, socket: str, procs: int) -> None:
        ctx = mp.get_context("spawn")
        self.barrier, self.results = ctx.Barrier(procs), ctx.Queue()
        self.tasks = [ctx.Queue() for _ in range(procs)]
        self.procs = [ctx.Process(target=worker, args=(socket, q, self.barrier, self.results))
                      for q in self.tasks]
        for p in self.procs:
            p.start()

    def rate(self, side: str, prefix: str, cost: int, seconds: float) -> float:
        """Grants per second of all processes together, each granting on its own entities."""
        for i, q in enumerate(self.tasks):
            q.put((side, f"{prefix}-{i}", cost, seconds))
        out = [self.results.get(timeout=300) for _ in self.tasks]
        return sum(g for g, _ in out) / max(e for _, e in out)

    def close(self) -> None:
        for q in self.tasks:
            q.put(None)
        for p in self.procs:
            p.join()
            if p.exitcode != 0:
                raise SystemExit(f"a worker exited with {p.exitcode}")


# --- the run ---------------------------------------------------------------------------------


FSYNC = {
    "always": "every write is on disk before it is answered: nothing is lost, even on power "
              "loss (gatekeeper's embedded store)",
    "everysec": "written to the kernel before it is answered, on disk within ~1 s: a crash "
                "of redis-server loses nothing, power loss or a kernel crash up to ~1 s",
    "no": "written to the kernel before it is answered, on disk when the kernel flushes "
          "(~30 s): power loss loses what was not yet flushed",
}


def machine(client: redis.Redis, data_dir: Path) -> list[str]:
    fs = subprocess.run(["df", "--output=fstype", str(data_dir)], capture_output=True,
                        text=True, check=False).stdout.split()[-1:] or ["?"]
    cfg = {k: client.config_get(k)[k] for k in ("appendonly", "appendfsync")}
    return [
        machine_line(),
        f"software: Python {platform.python_version()}, redis-server "
        f"{client.info('server')['redis_version']} ({redis_server_binary()}), "
        f"redis-py {redis.__version__}, limits {limits.__version__}",
        f"store: one redis-server for every side, Unix socket only (no TCP), data dir on "
        f"{fs[0]}, appendonly {cfg['appendonly']}, appendfsync {cfg['appendfsync']}, the same "
        f"for every side: {FSYNC.get(str(cfg['appendfsync']), '?')}",
    ]


def median(xs: list[float]) -> float:
    return statistics.median(xs)


def print_why(sides: dict[str, Side], why: dict[str, dict[str, float]]) -> None:
    print()
    print("where a cost-1 grant's time goes (p50 latency with appendfsync always and no, one "
          "process; the script's own time in the server; the client's CPU time per grant; "
          "AOF bytes appended per grant):")
    print_table(["side", "p50 always (ms)", "p50 no (ms)", "fsync (ms)", "script in server (ms)",
                 "client CPU (ms)", "AOF B/grant"],
                [[sides[n].short, f"{why[n]['always']:.3f}", f"{why[n]['no']:.3f}",
                  f"{why[n]['always'] - why[n]['no']:.3f}", f"{why[n]['server']:.3f}",
                  f"{why[n]['client']:.3f}", f"{why[n]['aof']:,.0f}"] for n in SIDES])
    print(f"gatekeeper's take around the script: the round trip of a do-nothing script sent the "
          f"take's very KEYS and ARGV {why['ours']['noop']:.3f} ms (p50); the Python of "
          f"Ledger.take and the bench's call with the script's answer canned "
          f"{why['ours']['python']:.3f} ms")


# What each key a cost-1 take writes is for (gatekeeper's keys, by how their names end).
ROLES = (("audit:chain", "chain head (R11: a cut tail shows)"),
         (":audit", "audit record, chained (R11)"),
         (":summary", "summary entry (the dashboard's one read per pool)"),
         (":sum", "running total"), (":daily", "usage per day (charts, report)"),
         (":reserved", "open reservations (abandoned ones closed as counted)"),
         (":keys", "the pool's key index (R10 moves)"),
         (":ctr:", "the charge (bucket)"))


SENT_AS = {"PEXPIREAT": ("expire", "pexpire", "pexpireat")}


def _role(name: str, command: bytes, key: bytes) -> str:
    if command in (b"MULTI", b"EXEC"):
        return "MULTI/EXEC around the script's writes"
    k = key.decode(errors="replace")
    if name == "ours":
        if ":share:" in k:
            return "share record (exact refund, crash recovery)" if command == b"HSET" \
                else "share record's lifetime (31 days)"
        for end, role in ROLES:
            if end in k and (end != ":audit" or k.endswith(":audit")):
                return role
    return "-"


def _aof_commands(data: bytes) -> list[list[bytes]]:
    """The commands of an AOF stretch (RESP arrays of bulk strings)."""
    out, i = [], 0
    while i < len(data):
        end = data.index(b"\r\n", i)
        n, i, args = int(data[i + 1:end]), end + 2, []
        for _ in range(n):
            end = data.index(b"\r\n", i)
            size = int(data[i + 1:end])
            args.append(data[end + 2:end + 2 + size])
            i = end + 2 + size + 2
        out.append(args)
    return out


def writes_breakdown(client: redis.Redis, sides: dict[str, Side], reps: int,
                     fsync: str) -> dict[str, list[list[str]]]:
    """Per side (gatekeeper, moving window): each write a cost-1 grant appends to the AOF —
    what it is for, its bytes, and the command's own time in the server (INFO commandstats,
    per call; with ``appendfsync no``) — and the script's whole time beside the sum of its
    commands' (the rest is Lua and Redis's per-call work around each command)."""
    path = Path(client.config_get("dir")["dir"]) / client.config_get("appendfilename")[
        "appendfilename"]
    out: dict[str, list[list[str]]] = {}
    client.config_set("appendfsync", "no")
    for name in ("ours", "mw"):
        side = sides[name]
        for _ in range(20):
            side.grant(f"writes-{name}", 1)
        quiet(client)  # no AOF rewrite replacing the file under the measurement
        client.config_resetstat()
        start = path.stat().st_size
        for _ in range(reps):
            side.grant(f"writes-{name}", 1)
        with open(path, "rb") as f:
            f.seek(start)
            data = f.read()
        stats = client.info("commandstats")
        script = stats.get("cmdstat_evalsha", {"usec": 0})["usec"] / reps
        rows: dict[tuple[str, str], list[float]] = {}
        for args in _aof_commands(data):
            command = args[0].upper()
            key = (command.decode(), _role(name, command, args[1] if len(args) > 1 else b""))
            row = rows.setdefault(key, [0.0, 0.0])
            row[0] += 1 / reps
            row[1] += (len(b"*%d\r\n" % len(args)) + sum(
                len(b"$%d\r\n" % len(a)) + len(a) + 2 for a in args)) / reps
        table = []
        for (command, role), (count, size) in sorted(rows.items(), key=lambda r: -r[1][1]):
            # A lifetime is written to the AOF as PEXPIREAT whichever command set it.
            own = next((stats[f"cmdstat_{c}"]["usec_per_call"] for c in
                        SENT_AS.get(command, (command.lower(),)) if f"cmdstat_{c}" in stats),
                       None)
            table.append([command, role, f"{count:.2f}", f"{size:,.0f}",
                          "-" if own is None else f"{own:.2f}"])
        inner = [v for k, v in stats.items()
                 if k not in ("cmdstat_evalsha", "cmdstat_info", "cmdstat_config")]
        calls = sum(v["calls"] for v in inner) / reps
        table.append(["all", f"{calls:.0f} calls ({script:.1f} µs, "
                      f"{sum(v['usec'] for v in inner) / reps:.1f} in commands)", "",
                      f"{sum(r[1] for r in rows.values()):,.0f}", ""])
        out[name] = table
    client.config_set("appendfsync", fsync)
    return out


def print_writes(sides: dict[str, Side], writes: dict[str, list[list[str]]]) -> None:
    print()
    print("what a cost-1 grant writes (the AOF appended per grant, by command and what it is "
          "for; a command's own time in the server per call, from INFO commandstats, "
          "appendfsync no; 'all': every Redis call a grant makes, reads too, the script's "
          "whole time in the server and its commands' own part — the rest is Lua and Redis's "
          "work around each call):")
    for name, table in writes.items():
        print(f"{sides[name].short}:")
        print_table(["command", "for", "per grant", "AOF B", "µs/call"], table)


def cost1_goals(args: argparse.Namespace, fig: dict[str, dict[str, float]]
                ) -> list[tuple[str, bool]]:
    o, mw = fig["ours"], fig["mw"]
    return [
        (f"cost-1 grant p50 at parity or better with the moving window's "
         f"({o['small50']:.3f} vs {mw['small50']:.3f} ms: {mw['small50'] / o['small50']:.2f}x)",
         o["small50"] <= mw["small50"]),
        (f"cost-1 grants/s from {args.procs} processes at parity or better "
         f"({o['rate1']:,.0f} vs {mw['rate1']:,.0f}: {o['rate1'] / mw['rate1']:.2f}x)",
         o["rate1"] >= mw["rate1"]),
    ]


def report_cost1(args: argparse.Namespace, command: str, facts: list[str],
                 sides: dict[str, Side], res: dict[str, dict[str, Any]],
                 why: dict[str, dict[str, float]], writes: dict[str, list[list[str]]],
                 loads: list[str], started: float) -> int:
    """--cost1: the cost-1 rows, the breakdown and the two parity goals."""
    fig = {name: {k: median(v) for k, v in r.items() if isinstance(v, list)}
           for name, r in res.items()}
    print(f"gatekeeper ledger vs the rivals at cost 1, {LIMIT:,} IDs per 30 days (R2)")
    _header(command, facts, sides, loads)
    print_table(["metric", *(sides[n].short for n in SIDES)], [
        ["grant latency, cost 1, p50 (ms)", *(f"{fig[n]['small50']:.3f}" for n in SIDES)],
        ["grant latency, cost 1, p99 (ms)", *(f"{fig[n]['small99']:.3f}" for n in SIDES)],
        [f"grants/s, {args.procs} processes, cost 1", *(f"{fig[n]['rate1']:,.0f}"
                                                       for n in SIDES)]])
    print(f"each figure: the median of {args.runs} runs per side, the sides alternated; "
          f"{args.small_reps} grants per latency run, {args.seconds:g} s per throughput round")
    for what, label in (("rate1", "grants/s cost 1"), ("small50", "cost-1 p50 ms")):
        print(f"runs, {label}: " + " / ".join(
            f"{sides[n].short} " + ", ".join(f"{v:,.3g}" for v in res[n][what]) for n in SIDES))
    print_why(sides, why)
    print_writes(sides, writes)
    code = print_goals(cost1_goals(args, fig))
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code



def _header(command: str, facts: list[str], sides: Any, loads: list[str]) -> None:
    """What a run's figures stand on: the command, the machine, the sides, the load."""
    print(f"command: {command}")
    for fact in facts:
        print(fact)
    print("sides: " + "; ".join(f"{sides[n].short} = {sides[n].label}" for n in SIDES))
    print(f"load average (1/5/15 min) at start and after each phase: {' | '.join(loads)}")
    print()

def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, help="runs per side of each phase")
    parser.add_argument("--small-reps", type=int, default=1000,
                        help="cost-1 grants per side per run")
    parser.add_argument("--big-entities", type=int, default=3,
                        help="entities x 15 cost-100,000 grants per side per run")
    parser.add_argument("--big-entities-mw", type=int, default=1,
                        help="the same for the moving window (~30 MB and ~1 s per entity)")
    parser.add_argument("--procs", type=int, default=4, help="client processes")
    parser.add_argument("--seconds", type=float, default=2.0, help="per throughput round")
    parser.add_argument("--window-grants", type=int, default=10_000,
                        help="grants already in the window for the many-grants row")
    parser.add_argument("--window-reps", type=int, default=200,
                        help="cost-1 grants per side per run on that entity")
    parser.add_argument("--race-left", type=int, default=1000,
                        help="IDs left under the limit when the race starts")
    parser.add_argument("--race-attempts", type=int, default=500,
                        help="cost-1 grants each racing process attempts")
    parser.add_argument("--breakdown-reps", type=int, default=500,
                        help="cost-1 grants per side, run and fsync policy for the breakdown")
    parser.add_argument("--fsync", choices=sorted(FSYNC), default="always",
                        help="appendfsync for the run, every side alike (default: as deployed)")
    parser.add_argument("--cost1", action="store_true",
                        help="only the cost-1 rows (breakdown, latency, grants/s) and their "
                             "goals: the parity check")
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.perf_counter()
    loads = [load()]

    with tempfile.TemporaryDirectory(prefix="gk-bench-") as tmp:
        server = EmbeddedServer(Path(tmp))
        server.start()
        pool: Pool | None = None
        try:
            client = server.client()
            client.config_set("appendfsync", args.fsync)
            socket = str(server.socket)
            facts = machine(client, Path(tmp))
            sides: dict[str, Side] = {name: make_side(name, socket) for name in SIDES}
            for name, s in sides.items():  # load the scripts, warm the connections
                for _ in range(200):
                    s.grant(f"warm-{name}", 1)
            res: dict[str, dict[str, Any]] = {name: {} for name in SIDES}

            def keep(name: str, what: str, value: Any) -> None:
                res[name].setdefault(what, []).append(value)

            why = breakdown(client, sides, args.runs, args.breakdown_reps, args.fsync)
            writes = writes_breakdown(client, sides, args.breakdown_reps, args.fsync)
            loads.append(load())

            # Latency, cost 1: a fresh entity per side and run, many grants into it.
            for run, name in alternated(args.runs):
                quiet(client)
                ms = latencies(sides[name], lambda _i, n=name, r=run: f"small-{n}-{r}", 1,
                               args.small_reps)
                keep(name, "small50", pct(ms, 50))
                keep(name, "small99", pct(ms, 99))
            loads.append(load())

            # Latency, cost 100,000: fresh entities, 15 grants each (exactly the limit); then
            # memory per full entity, measured on every one of them.
            for run, name in alternated(0 if args.cost1 else args.runs):
                count = args.big_entities_mw if name == "mw" else args.big_entities
                quiet(client)
                ms = latencies(sides[name],
                               lambda i, n=name, r=run: f"big-{n}-{r}-{i // SHARES_PER_ENTITY}",
                               BIG, count * SHARES_PER_ENTITY)
                keep(name, "big50", pct(ms, 50))
                keep(name, "big99", pct(ms, 99))
                pattern = sides[name].pattern
                per_entity = [memory(client, pattern(f"big-{name}-{run}-{e}"))
                              for e in range(count)]
                keep(name, "mem", sum(sum(m.values()) for m in per_entity) / count)
                res[name]["mem_types"] = per_entity[0]
                if name == "mw":  # ~30 MB each; free it before the next phases
                    for e in range(count):
                        drop(client, pattern(f"big-{name}-{run}-{e}"))
            loads.append(load())

            # Grants per second: N spawned processes, each its own client and entities.
            pool = Pool(socket, args.procs)
            for cost, what in ((1, "rate1"), (BIG, "rate_big"))[:1 if args.cost1 else 2]:
                for run, name in alternated(args.runs):
                    quiet(client)
                    prefix = f"tp-{name}-{cost}-{run}"
                    keep(name, what, pool.rate(name, prefix, cost, args.seconds))
                    if name == "mw":
                        drop(client, sides[name].pattern(prefix + "*"))
                loads.append(load())
            pool.close()
            pool = None
            if args.cost1:
                return report_cost1(args, command, facts, sides, res, why, writes, loads, started)

            # Many grants in the window: cost-1 grants into an entity that already holds
            # --window-grants of them (the sorted set's are added in bulk, the others granted).
            for name, s in sides.items():
                entity = f"win-{name}"
                if isinstance(s, SortedSet):
                    s.prefill(client, entity, args.window_grants)
                else:
                    for _ in range(args.window_grants):
                        s.grant(entity, 1)
            for _run, name in alternated(args.runs):
                quiet(client)
                ms = latencies(sides[name], lambda _i, n=name: f"win-{n}", 1, args.window_reps)
                keep(name, "win50", pct(ms, 50))
            for name, s in sides.items():
                res[name]["win_mem"] = sum(memory(client, s.pattern(f"win-{name}")).values())
            res["ours"]["win_counter"] = sum(  # the counter alone: its list, total and days
                client.memory_usage(k, samples=0) or 0
                for k in keys.counter_keys(keys.counter("win-ours", "r2", "win-ours")))
            loads.append(load())

            # Over-granting: fill one entity to LIMIT - race_left, then N processes race into it.
            for name in ("ours", "mw", "zset"):
                s = sides[name]
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
                if name == "mw":
                    drop(client, s.pattern(entity))
            # The ledger's own count must agree with what the racers were told.
            _, (state,) = Ledger(client).peek([Counter(
                keys.counter("race-ours", "r2", "race-ours"), "R2", WINDOW, Limit(LIMIT))])
            ours_used = state.used
            loads.append(load())
        finally:
            if pool is not None:
                for q in pool.tasks:
                    q.put(None)
            server.stop()

    fig = {name: {k: median(v) for k, v in r.items() if isinstance(v, list)}
           for name, r in res.items()}
    rows: list[list[str]] = []

    def row(metric: str, what: str, fmt: str) -> None:
        rows.append([metric, *(format(fig[n][what], fmt) for n in SIDES)])

    row("grant latency, cost 1, p50 (ms)", "small50", ".3f")
    row("grant latency, cost 1, p99 (ms)", "small99", ".3f")
    row("grant latency, cost 100,000, p50 (ms)", "big50", ".3f")
    row("grant latency, cost 100,000, p99 (ms)", "big99", ".3f")
    row(f"grant latency, cost 1, {args.window_grants:,} grants in the window, p50 (ms)",
        "win50", ".3f")
    rows.append(["Redis memory per entity with those grants (B)",
                 *(f"{res[n]['win_mem']:,}" for n in SIDES)])
    row(f"grants/s, {args.procs} processes, cost 1", "rate1", ",.0f")
    row(f"grants/s, {args.procs} processes, cost 100,000", "rate_big", ",.1f")
    row(f"Redis memory per entity after {SHARES_PER_ENTITY} x 100,000 (B)", "mem", ",.0f")
    rows.append([f"IDs over-granted ({args.procs} procs race for the last {args.race_left:,})",
                 *(f"{res[n]['over']:,}" if "over" in res[n] else "-" for n in SIDES)])

    print("gatekeeper ledger vs the rivals, "
          f"{LIMIT:,} IDs per 30 days (R2), a grant = one admission decision")
    _header(command, facts, sides, loads)
    print_table(["metric", *(sides[n].short for n in SIDES)], rows)
    print(f"each figure: the median of {args.runs} runs per side, the sides alternated (A B C D, "
          "D C B A, ...); latency percentiles nearest-rank within a run")
    print(f"samples per run: cost 1 {args.small_reps} grants; cost 100,000 "
          f"{args.big_entities} x {SHARES_PER_ENTITY} (limits MW {args.big_entities_mw} x "
          f"{SHARES_PER_ENTITY}) on fresh entities; {args.window_reps} grants on the "
          f"{args.window_grants:,}-grant entity; {args.seconds:g} s per throughput round")
    print("memory: MEMORY USAGE ... SAMPLES 0 summed over every key of the entity (SCAN); "
          "first entity by type: " + "; ".join(
              f"{sides[n].short} " + ", ".join(f"{k} {v:,}" for k, v in
                                               sorted(res[n]["mem_types"].items()))
              for n in SIDES)
          + " (gatekeeper: counter list and total, audit stream and chain, share hashes, "
          "indexes)")
    print(f"memory with {args.window_grants:,} grants: gatekeeper's counter alone (list, total, "
          f"days) {res['ours']['win_counter']:,} B; the rest is a share record and a chained "
          "audit record per grant, which no rival keeps")
    for what, label in (("rate1", "grants/s cost 1"), ("rate_big", "grants/s cost 100,000"),
                        ("small50", "cost-1 p50 ms")):
        print(f"runs, {label}: " + " / ".join(
            f"{sides[n].short} " + ", ".join(f"{v:,.3g}" for v in res[n][what]) for n in SIDES))
    granted = ", ".join(f"{sides[n].short} {res[n]['granted']:,}" for n in ("ours", "mw", "zset"))
    print(f"race: granted {granted} of {args.procs * args.race_attempts:,} attempted IDs with "
          f"{args.race_left:,} left; "
          f"gatekeeper's counter reads {ours_used:,} used of {LIMIT:,}")

    print_why(sides, why)
    print_writes(sides, writes)

    o, mw, zs = fig["ours"], fig["mw"], fig["zset"]
    goals = [
        *cost1_goals(args, fig),
        (f"cost-100,000 p50 >= 50x faster than the moving window's "
         f"({mw['big50'] / o['big50']:,.1f}x)", mw["big50"] >= 50 * o["big50"]),
        (f"cost-100,000 p50 within 1.5x of our cost-1 p50 ({o['big50'] / o['small50']:.2f}x)",
         o["big50"] <= 1.5 * o["small50"]),
        (f"memory per full entity <= 1/1000 of the moving window's "
         f"(1/{mw['mem'] / o['mem']:,.0f})", o["mem"] * 1000 <= mw["mem"]),
        (f"with {args.window_grants:,} grants in the window, faster than the sorted set "
         f"({zs['win50'] / o['win50']:,.1f}x)", o["win50"] <= zs["win50"]),
        (f"IDs over-granted = 0 ({res['ours']['over']}; counter {ours_used:,} <= {LIMIT:,})",
         res["ours"]["over"] == 0 and ours_used <= LIMIT),
    ]
    code = print_goals(goals)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
