"""Benchmark datasets in an object store (issue 14 item 3): a preview count from the store.

A dataset of --posts posts (default 300,000, generated as `bench/datasets.py` does) is added
twice: to a local directory and to an S3-compatible store (a `moto` server on loopback, as
`tests/test_s3.py` starts it). Then a preview count (`Selection.tally`, authors included) runs
for two filter shapes (none, lang) from each, and the JSONL scan previews made before the index
(`gatekeeper.domain.dsscan`) for reference — each count in a fresh interpreter (what a request
pays: nothing of the index cached in the process), the three sides alternated, --runs each,
medians.

Goal: a preview from the store ≤ 1/10 of the JSONL scan of the same file (issue 14's loosest
preview bar, the `contains` one: every request to the store is a round trip). Exit 1 when one
is missed. The store/local ratio is shown, not a goal: loopback moto is not a real network.

    python bench/s3.py --posts 300000 --runs 3
"""

from __future__ import annotations

import argparse
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, own_peak_mb, print_goals, print_table, run_fresh  # noqa: E402

SHAPES = {"none": {}, "lang": {"lang": "ja"}}
KEY_ID, SECRET = "bench-key", "bench-secret"  # moto accepts any


def _datasets(work: Path, where: str) -> Any:
    from gatekeeper.domain.datasets import Datasets
    from gatekeeper.ledger.ledger import Ledger
    from gatekeeper.ledger.store import EmbeddedServer

    server = EmbeddedServer(work / f"var-{where}")  # a registry per side: one name, "big"
    server.start()  # once; later children find it running
    client = server.client()
    target = (work / "url.txt").read_text() if where == "store" else work / "datasets"
    return Datasets(client, Ledger(client), target)


# --- the children: each in a fresh interpreter --------------------------------------------------


def add(work: str, where: str) -> dict[str, Any]:
    datasets = _datasets(Path(work), where)
    start = time.perf_counter()
    info = datasets.add("big", Path(work) / "big.jsonl", actor="bench", channel="cli")
    return {"seconds": time.perf_counter() - start, "posts": info.posts,
            "peak": own_peak_mb()}


def count(work: str, where: str, shape: str) -> dict[str, Any]:
    from types import SimpleNamespace

    from bench.datasets import warm_up
    from gatekeeper.domain.dsscan import scan_tally
    from gatekeeper.domain.filters import Filters
    from gatekeeper.domain.hydrated import Selection
    from gatekeeper.rules.r9 import Deleted

    # "scan" reads the local copy: the JSONL pass before the index.
    datasets = _datasets(Path(work), "store" if where == "store" else "local")
    gate: Any = SimpleNamespace(datasets=datasets)
    filters = Filters.parse(SHAPES[shape])
    warm_up(filters)  # pyarrow's lazy imports and kernels, as a running server has them
    sel = Selection("big", filters, Deleted(0, frozenset(), frozenset()))
    start = time.perf_counter()
    tally = scan_tally(gate, sel, True) if where == "scan" else sel.tally(gate, True)
    seconds = time.perf_counter() - start
    return {"seconds": seconds, "posts": tally.posts, "users": len(tally.authors)}


# --- the parent -----------------------------------------------------------------------------------


def _moto(log: Path) -> tuple[subprocess.Popen[bytes], str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    script = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:
        proc = subprocess.Popen([str(script) if script.exists() else "moto_server", "-H",
                                 "127.0.0.1", "-p", str(port)], stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return proc, f"127.0.0.1:{port}"
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto_server did not start: {log.read_text()}") from None
            time.sleep(0.1)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    os.environ.update(AWS_ACCESS_KEY_ID=KEY_ID, AWS_SECRET_ACCESS_KEY=SECRET)
    with tempfile.TemporaryDirectory(prefix="gk-bench-s3-") as tmp:
        work = Path(tmp)
        proc, endpoint = _moto(work / "moto.log")
        try:
            return measure(args, work, endpoint)
        finally:
            from gatekeeper.ledger.store import EmbeddedServer

            for where in ("local", "store"):
                EmbeddedServer(work / f"var-{where}").stop()
            proc.terminate()
            proc.wait(10)


def measure(args: argparse.Namespace, work: Path, endpoint: str) -> int:
    import pyarrow.fs as pafs

    from bench.datasets import generate

    bucket = f"gk-bench-{uuid.uuid4().hex[:8]}"
    pafs.S3FileSystem(access_key=KEY_ID, secret_key=SECRET, endpoint_override=endpoint,
                      scheme="http", region="us-east-1",
                      allow_bucket_creation=True).create_dir(bucket)
    (work / "url.txt").write_text(f"s3://{bucket}/data?endpoint_override={endpoint}"
                                  "&scheme=http&region=us-east-1")
    generate(work / "big.jsonl", args.posts)
    size_mb = (work / "big.jsonl").stat().st_size / 1e6
    print(machine_line())
    print(f"dataset: {args.posts:,} posts, {size_mb:,.0f} MB JSONL; store: moto on loopback")
    added = {where: run_fresh(f"add {where}", "s3", "add", [work, where], ROOT)
             for where in ("local", "store")}
    print("dataset add: " + ", ".join(f"{w} {a['seconds']:.1f} s ({a['peak']:.0f} MB)"
                                      for w, a in added.items()))
    load = os.getloadavg()
    times: dict[tuple[str, str], list[float]] = {}
    answers: dict[tuple[str, str], set[tuple[int, int]]] = {}
    for _ in range(args.runs):
        for shape in SHAPES:
            for where in ("local", "store", "scan"):
                got = run_fresh(f"{where} {shape}", "s3", "count", [work, where, shape], ROOT)
                times.setdefault((shape, where), []).append(got["seconds"])
                answers.setdefault((shape, "all"), set()).add((got["posts"], got["users"]))
    load = tuple(max(a, b) for a, b in zip(load, os.getloadavg(), strict=True))
    rows, goals = [], []
    for shape in SHAPES:
        med = {w: statistics.median(times[(shape, w)]) for w in ("local", "store", "scan")}
        rows.append([shape, f"{med['local'] * 1e3:.1f}", f"{med['store'] * 1e3:.1f}",
                     f"{med['store'] / med['local']:.1f}×", f"{med['scan'] * 1e3:,.0f}",
                     f"1/{med['scan'] / med['store']:.0f}"])
        goals.append((f"{shape}: the store's preview ≤ 1/10 of the JSONL scan",
                      med["store"] * 10 <= med["scan"]))
        goals.append((f"{shape}: store, directory and scan count the same",
                      len(answers[(shape, "all")]) == 1))
    print_table(["shape", "local index ms", "store index ms", "store/local", "JSONL scan ms",
                 "store/scan"], rows)
    print(f"medians of {args.runs} alternated fresh interpreters each; load average "
          f"(max seen) {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    return print_goals(goals)


if __name__ == "__main__":
    sys.exit(main())
