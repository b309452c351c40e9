"""Benchmark R10's re-delivery check (issue 15 item 5): what it adds to an ID share, and when.

The check runs after a share is committed (domain/redelivery.py): it indexes the share under
its entity, and when the entity has deliveries older than 30 days it compares the share's IDs
with each of them (their manifests read back, a binary search of one sorted array in another).

A fresh embedded store; a commercial entity (acme) that received --earlier deliveries of --ids
time-clustered IDs 31-60 days ago, each sharing a third of its IDs with the new share; a second
entity (globex) that received nothing before. Each side in a fresh interpreter, --rounds times
(3), the order reversed every other round, medians printed with the load average:

- off:      a --ids share to acme (`share_to_file`) with the check replaced by a no-op;
- on:       the same share with the check (it finds the re-delivered IDs);
- first:    a --ids share to globex with the check (nothing older to compare: the usual case).

For each: seconds to the commit (the file named, the share committed: what the recipient
waits for) and seconds to the end of `share_to_file` (the CLI's command); the check's own time.
The check runs after the commit by construction (the "to commit" columns are the same code
on every side: their differences are the machine's). Goal: in the usual case — nothing older
to compare: two Redis commands, one of them a write (fsynced with the embedded store's
`appendfsync always`) — the check adds ≤ 10 % to the share's time to its commit; the case with
earlier deliveries is measured and printed, not judged (it reads each of their manifests).
Exits 1 if a goal is missed.

    python bench/redelivery.py
    python bench/redelivery.py --ids 150000 --rounds 1   # a quick check
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, whatever is installed
    sys.path.insert(0, str(ROOT))

from common import machine_line, print_goals, print_table, run_fresh  # noqa: E402

EPOCH_MS = 1288834974657  # X's snowflake epoch
DAY_MS = 86_400_000
FIRST_GOAL = 0.10


def clustered(n: int, start_ms: int, seed: int) -> Any:
    """`n` snowflakes a post every ~400 ms from `start_ms`, a few workers, small sequences."""
    import numpy as np

    rng = np.random.default_rng(seed)
    ms = start_ms - EPOCH_MS + np.cumsum(rng.exponential(400, n)).astype(np.uint64)
    workers = rng.integers(320, 352, n, dtype=np.uint64)
    seqs = rng.integers(0, 12, n, dtype=np.uint64)
    return np.unique((ms << np.uint64(22)) | (workers << np.uint64(12)) | seqs)


def setup(work: str, n: str, earlier: str) -> dict[str, Any]:
    """The store, the two entities, acme's earlier deliveries and the new share's ID file."""
    import numpy as np

    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger import keys

    base, count = Path(work), int(n)
    (base / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 1000000000\n'
        '[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(base / "config.toml"))
    for name in ("acme", "globex"):
        gate.entities.add(name, kind="commercial", research=False, parent=None,
                          actor="bench", channel="cli")
        gate.entities.accept_terms(name, by=f"Bench {name}", actor="bench", channel="cli")
    gate.users.add("dan", entity="acme", role="data", password=secrets.token_urlsafe(16),
                   actor="bench", channel="cli")
    now = int(time.time() * 1000)
    new = clustered(count, now - 8 * DAY_MS, 1)
    third = new.size // 3
    for k in range(int(earlier)):  # each shares a third of the new share's IDs, its own third
        at = now - (31 + 10 * k) * DAY_MS
        own = clustered(count - third, at - 8 * DAY_MS, 10 + k)
        ids = np.concatenate([own, new[k % 3 * third:(k % 3 + 1) * third]])
        ref = gate.manifests.write(secrets.token_hex(16), at, ids, (),
                                   {"entity": "acme", "recipient": "acme", "kind": "posts"})
        gate.client.zadd(keys.manifests_of("acme"), {ref.name: at})
    (base / "ids.txt").write_bytes(b"".join(b"%d\n" % i for i in new.tolist()))
    return {"ids": int(new.size)}


def share(work: str, side: str) -> dict[str, Any]:
    """A CLI share (`share_to_file`) of the ID file: seconds to the commit and to the end."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain import redelivery, shares
    from gatekeeper.domain.gate import Gate

    base = Path(work)
    gate = Gate(config_mod.load(base / "config.toml"))
    marks: dict[str, Any] = {}
    real = redelivery.after_share

    def timed(gate: Any, res: Any, ids: Any = None) -> Any:
        marks["committed"] = time.perf_counter()
        found = None if side == "off" else real(gate, res, ids)
        marks["checked"] = time.perf_counter()
        marks["found"] = found.ids if found else 0
        return found

    shares.redelivery.after_share = timed  # type: ignore[attr-defined]
    out = base / f"out-{side}.txt"
    t0 = time.perf_counter()
    res = shares.share_to_file(gate, actor="dan", entity="globex" if side == "first" else "acme",
                               out=out, ids_path=base / "ids.txt", purpose="bench")
    end = time.perf_counter()
    out.unlink()
    if res.settled != "delivered":
        raise SystemExit(f"the share was {res.settled}")
    return {"commit_s": marks["committed"] - t0, "total_s": end - t0,
            "check_s": marks["checked"] - marks["committed"], "found": marks["found"]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_500_000)
    parser.add_argument("--earlier", type=int, default=3,
                        help="acme's deliveries older than 30 days, --ids each")
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()]

    from gatekeeper.ledger.store import EmbeddedServer

    sides = ["off", "on", "first"]
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in sides}
    with tempfile.TemporaryDirectory(prefix="gk-bench-redelivery-") as tmp:
        work = Path(tmp)
        try:
            made = run_fresh("setup", "redelivery", "setup", [work, args.ids, args.earlier],
                             ROOT)
            loads.append(os.getloadavg())
            for r in range(args.rounds):
                for side in sides if r % 2 == 0 else list(reversed(sides)):
                    runs[side].append(run_fresh(f"share {side}", "redelivery", "share",
                                                [work, side], ROOT))
        finally:
            EmbeddedServer(work / "var").stop()
    loads.append(os.getloadavg())

    print(f"bench/redelivery.py — {started}; {machine_line()}; Python "
          f"{platform.python_version()}")
    print(f"command: {command}")
    print("load average (1/5/15 min) before, after setup, after: "
          + "; ".join(" ".join(f"{x:.2f}" for x in la) for la in loads))
    med = {s: {k: median(x[k] for x in runs[s]) for k in ("commit_s", "total_s", "check_s")}
           for s in sides}
    print(f"\na {made['ids']:,}-ID share; acme received {args.earlier} deliveries of "
          f"{args.ids:,} IDs 31+ days before (medians of {args.rounds} fresh interpreters)")
    print_table(["side", "to commit s", "to the end s", "check s", "IDs flagged", "peak MB",
                 "runs to commit (s)"], [
        [s, f"{med[s]['commit_s']:.3f}", f"{med[s]['total_s']:.3f}",
         f"{med[s]['check_s'] * 1000:.1f} ms", f"{runs[s][0]['found']:,}",
         f"{median(x['peak_mb'] for x in runs[s]):.0f}",
         " ".join(f"{x['commit_s']:.3f}" for x in runs[s])] for s in sides])
    first = med["first"]["check_s"] / med["first"]["commit_s"]
    return print_goals([
        (f"the usual check (nothing older to compare) adds ≤ {FIRST_GOAL * 100:.0f} % to the "
         f"share, after its commit: {med['first']['check_s'] * 1000:.1f} ms, "
         f"{first * 100:.1f} % of {med['first']['commit_s']:.3f} s", first <= FIRST_GOAL),
    ])

if __name__ == "__main__":
    sys.exit(main())
