"""The API's deletion ingest with its notices scan off the request path: answer time at 100M IDs.

A store of 1,000 ID-share manifests of 100,000 clustered IDs each (99,999,104 IDs, the notices
row of bench/manifests.py, built the same way), then a 100,000-ID deletion list (half of it
delivered IDs of 500 deliveries, half IDs no delivery holds; a new list each run), two sides in
fresh interpreters, alternated:

- inline: what the API's handler did before (and the CLI still does): the ingest, then the scan
  in the same call — the client waited for both.
- api: `POST /api/v1/deletions` through the app (Flask's test client, the embedded store): the
  answer, then the time until the server's background runner has opened the notices.

    python bench/offpath.py                 # 1,000 x 100,000 IDs, 3 rounds
    python bench/offpath.py --deliveries 100 --rounds 1   # a quick check

Goals: the API answers in ≤ 2 s (the ingest alone: the scan no longer in it), and the runner
opens as many notices as the inline scan. Exit 1 when a goal fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path
from statistics import median
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine_line, print_goals, print_table, run_fresh

ROOT = Path(__file__).resolve().parent.parent
ANSWER_GOAL_S = 2.0


def deletion_list(deliveries: int, per: int, gap_ms: float, seed: int) -> list[bytes]:
    """bench/manifests.py's notices list: new IDs for each seed."""
    import numpy as np
    from manifests import EPOCH_MS, delivery_ids

    rng = np.random.default_rng(seed)
    picked = rng.choice(deliveries, min(500, deliveries), replace=False)
    held = np.concatenate([rng.choice(delivery_ids(int(i), per, gap_ms), 50_000 // picked.size,
                                      replace=False) for i in picked])
    low = (1_740_000_000_000 - EPOCH_MS) << 22
    other = rng.integers(low, low + (300 * 86_400_000 << 22), 50_000, dtype=np.uint64)
    return [b"%d\n" % i for i in np.concatenate([held, other]).tolist()]


def side(work: str, which: str, deliveries: str, per: str, gap_ms: str, seed: str
         ) -> dict[str, Any]:
    """One run of one side (in a fresh interpreter): answer and notices-opened seconds."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate, ingest_deletion_stream
    from gatekeeper.ledger import keys

    gate = Gate(config_mod.load(Path(work) / "config.toml"))
    lines = deletion_list(int(deliveries), int(per), float(gap_ms), int(seed))
    before = set(gate.client.zrange(keys.NOTICES_ALL, 0, -1))
    if which == "inline":
        t0 = time.perf_counter()
        report = ingest_deletion_stream(gate, lines, kind="posts", source="bench.txt",
                                        actor="cora", channel="api")
        answer = done = time.perf_counter() - t0
        opened = len(report.notices)
    else:
        from gatekeeper.channels.web import background
        from gatekeeper.channels.web.app import create_app

        app = create_app(gate, {"TESTING": True, "SECRET_KEY": "bench"})
        token = gate.users.create_token("cora", actor="bench", channel="cli")
        body = b"".join(lines)
        with app.test_client() as client:
            t0 = time.perf_counter()
            resp = client.post("/api/v1/deletions?kind=posts", data=body,
                               headers={"Authorization": f"Bearer {token}",
                                        "Content-Type": "text/plain"})
            answer = time.perf_counter() - t0
            assert resp.status_code == 200, resp.get_data(as_text=True)
            assert background.runner(app).drain(600)
            done = time.perf_counter() - t0
        opened = len(set(gate.client.zrange(keys.NOTICES_ALL, 0, -1)) - before)
    return {"answer_s": answer, "done_s": done, "opened": opened}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1000)
    parser.add_argument("--per", type=int, default=100_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    from manifests import setup_notices

    from gatekeeper.ledger.store import EmbeddedServer

    print(f"bench/offpath.py; {machine_line()}")
    runs: dict[str, list[dict[str, Any]]] = {"inline": [], "api": []}
    with tempfile.TemporaryDirectory(prefix="gk-bench-offpath-") as tmp:
        work = Path(tmp)
        try:
            built = setup_notices(work, args.deliveries, args.per, 400.0)
            from gatekeeper import config as config_mod
            from gatekeeper.domain.gate import Gate

            gate = Gate(config_mod.load(work / "config.toml"))
            gate.users.add("cora", entity="e0", role="compliance", password="bench password 1",
                           actor="bench", channel="cli")
            gate.client.close()
            loads = [os.getloadavg()[0]]
            for r in range(args.rounds):
                for n, which in enumerate(("inline", "api") if r % 2 == 0 else ("api", "inline")):
                    runs[which].append(run_fresh(which, "offpath", "side", [
                        work, which, args.deliveries, args.per, 400.0, 100 + 2 * r + n], ROOT))
                loads.append(os.getloadavg()[0])
        finally:
            EmbeddedServer(work / "var").stop()
    print(f"\nAPI deletion ingest of a 100,000-ID list against {args.deliveries:,} deliveries "
          f"totalling {built['ids']:,} IDs (built in {built['seconds']:.0f} s); medians of "
          f"{args.rounds}; load average {' → '.join(f'{x:.2f}' for x in loads)}")
    rows, med = [], {}
    for which, got in runs.items():
        med[which] = {k: median(x[k] for x in got) for k in ("answer_s", "done_s", "opened")}
        rows.append([which, f"{med[which]['answer_s']:.2f}", f"{med[which]['done_s']:.2f}",
                     f"{med[which]['opened']:.0f}", f"{median(x['peak_mb'] for x in got):.0f}",
                     " ".join(f"{x['answer_s']:.2f}/{x['done_s']:.2f}" for x in got)])
    print_table(["side", "answer s", "notices opened s", "notices", "peak MB",
                 "runs (answer/opened s)"], rows)
    return print_goals([
        (f"the API answers in ≤ {ANSWER_GOAL_S:.0f} s: {med['api']['answer_s']:.2f} s "
         f"(inline: {med['inline']['answer_s']:.2f} s)", med["api"]["answer_s"] <= ANSWER_GOAL_S),
        (f"the runner opens the notices the inline scan does: {med['api']['opened']:.0f} "
         f"vs {med['inline']['opened']:.0f}", med["api"]["opened"] == med["inline"]["opened"]),
    ])


if __name__ == "__main__":
    sys.exit(main())
