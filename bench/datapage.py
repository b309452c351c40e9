"""Benchmark the data team's page (`/data`) with many open deletion notices on the store.

The page lists the open notices of ID shares to the signed-in member's own entity (issue 15,
R9): `noticeboard.for_entity` — one ZINTER of the open notices (by deadline) with the entity's,
then the first ten hashes. This times `/data` as the data user dan of entity e0001 through
Flask's test client, on a real redis-server (the embedded store, in a temporary directory),
with `--notices` open notices (default 100,000, shaped as `bench/dashboard.py`'s
`seed_notices` writes them: half to people, half to the odd-numbered of the `--entities` (50)
entities — so dan's entity e0001 has notices/entities of them open, 2,000 by default, far more
than a real entity keeps open: one per deletion list that reached it until acknowledged)
against the same store with none. Each side runs in a fresh interpreter, sides
alternated, `--runs` runs each (3); each run is the median of `--reps` requests after two
warm-up ones. The load average is printed beside the figures (the machine may be shared).

Goal (the dashboard's own for a page: the brief sets none for this one): `/data` with the
notices <= 300 ms, median of the runs. Exits 1 if it fails.

Run from the repository root::

    python bench/datapage.py
    python bench/datapage.py --notices 10000 --runs 5
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "bench")]

from common import machine_line, print_goals, print_table, run_child  # noqa: E402

GOAL_MS = 300.0
PASSWORD = "bench password 1"


def load() -> str:
    one, five, fifteen = os.getloadavg()
    return f"{one:.2f}, {five:.2f}, {fifteen:.2f}"


def side(notices: int, entities: int, reps: int) -> dict[str, object]:
    """One side in this (fresh) process: build the store, time `/data`; figures as a dict."""
    from dashboard import login, seed_notices, time_page

    from gatekeeper import config as config_mod
    from gatekeeper.channels.web.app import create_app
    from gatekeeper.domain import noticeboard
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger.store import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="gk-bench-datapage-") as tmp:
        root = Path(tmp)
        (root / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
        server = EmbeddedServer(root / "var")
        server.start()
        try:
            client = server.client()
            client.config_set("appendfsync", "no")
            gate = Gate(config_mod.load(root / "config.toml"), client=client)
            names = [f"e{i:04d}" for i in range(entities)]
            for name in names:
                gate.entities.add(name, kind="commercial", research=False, parent=None,
                                  actor="bench", channel="cli")
                gate.entities.accept_terms(name, by="Bench Signatory", actor="bench",
                                           channel="cli")
            gate.users.add("dan", entity=names[1], role="data", password=PASSWORD,
                           actor="bench", channel="cli")
            now = gate.clock.now_ms()
            # People the person-notices go to (seed_notices reads .name and .entity only).
            people = [SimpleNamespace(name=f"p{i:04d}", entity=names[i % entities])
                      for i in range(entities)]
            seed_notices(gate, notices, now, [SimpleNamespace(name=n) for n in names],
                         people)  # type: ignore[arg-type]
            client.config_set("appendfsync", "always")
            read = noticeboard.for_entity(gate, names[1], now)
            t0 = time.perf_counter()
            for _ in range(reps):
                noticeboard.for_entity(gate, names[1], now)
            read_ms = (time.perf_counter() - t0) * 1000 / reps
            app = create_app(gate, {"TESTING": True, "SECRET_KEY": "bench"})
            with app.test_client() as web:
                login(web, "dan")
                samples, error = time_page(web, "/data", reps)
            if error:
                raise SystemExit(f"/data answered {error}")
            return {"median_ms": statistics.median(samples), "min_ms": min(samples),
                    "max_ms": max(samples), "own_open": read.open, "shown": len(read.rows),
                    "read_ms": read_ms}
        finally:
            server.stop()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--notices", type=int, default=100_000)
    parser.add_argument("--entities", type=int, default=50)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=7)
    parser.add_argument("--child", choices=("with", "none"))
    args = parser.parse_args()
    if args.child:
        n = args.notices if args.child == "with" else 0
        print(json.dumps(side(n, args.entities, args.reps)))
        return 0

    print(f"command: {shlex.join([Path(sys.executable).name, *sys.argv])}")
    print(machine_line())
    print(f"started {time.strftime('%Y-%m-%d %H:%M:%S UTC', time.gmtime())}, "
          f"load average {load()}")
    results: dict[str, list[dict[str, float]]] = {"with": [], "none": []}
    loads = []
    for run in range(args.runs):
        for which in (("with", "none") if run % 2 == 0 else ("none", "with")):
            before = load()
            got = run_child(which, [__file__, "--child", which, "--notices", str(args.notices),
                                    "--entities", str(args.entities), "--reps",
                                    str(args.reps)], ROOT)
            results[which].append(got)
            loads.append(f"{which} run {run + 1}: load before {before}: /data median "
                         f"{got['median_ms']:.1f} ms (min {got['min_ms']:.1f}, max "
                         f"{got['max_ms']:.1f}); for_entity {got['read_ms']:.2f} ms, "
                         f"{got['own_open']:.0f} own open, {got['shown']:.0f} read")
    for line in loads:
        print(line)
    med = {k: statistics.median(r["median_ms"] for r in v) for k, v in results.items()}
    read = {k: statistics.median(r["read_ms"] for r in v) for k, v in results.items()}
    own = results["with"][0]["own_open"]
    print()
    print_table(("side", "/data (ms, median of runs)", "for_entity (ms)", "own open notices"),
                [(f"{args.notices:,} open notices", f"{med['with']:.1f}",
                  f"{read['with']:.2f}", f"{own:,.0f}"),
                 ("none", f"{med['none']:.1f}", f"{read['none']:.2f}", "0")])
    print(f"difference: {med['with'] - med['none']:+.1f} ms; finished "
          f"{time.strftime('%H:%M:%S UTC', time.gmtime())}, load average {load()}")
    return print_goals([(f"/data with {args.notices:,} open notices ({own:,.0f} its entity's) "
                         f"<= {GOAL_MS:.0f} ms: {med['with']:.1f}", med["with"] <= GOAL_MS)])


if __name__ == "__main__":
    raise SystemExit(main())
