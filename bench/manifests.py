"""Benchmark delivery manifests (issue 15 items 1, 4): bytes per ID, a share's cost, trace.

1. The codec, on 1,500,000 IDs of two kinds, each shuffled as a share delivers them:
   - time-clustered X IDs: snowflakes (ms since X's epoch << 22 | worker << 12 | sequence)
     shaped like /work/shared/samples' (the workers and sequences the sample posts carry, a
     post every --gap-ms on average, Poisson), i.e. a collection over about a week;
   - random IDs: uniform over every snowflake from 2010-11 to 2026-11.
   Four codecs: ours (gatekeeper.domain.manifests: snowflake split, deltas, byte planes, zstd),
   plain deltas of the sorted IDs as byte planes + zstd, a 64-bit roaring bitmap (pyroaring's
   BitMap64, run-optimised, serialised), and the same bitmap + zstd. Bytes per ID, encode time
   (from the shuffled uint64 array) and decode time (back to a sorted array).
2. A 1,500,000-ID share (`share_to_file`, an ID file of clustered IDs, ledger included, on a
   fresh embedded store) with and without its manifest (the same run: `record_share` and
   `record_share_alongside` replaced by no-ops for the "without" side), and the manifest alone
   as a partial grant or a small list makes it (parse the spool, encode, store, index). A list
   this large granted whole takes the sorted IDs the repeats pass read (no second parse or
   sort) and is encoded and stored while the file is written, before it is named. Also the
   CPU of both sides (all threads) and the median of each round's own with/without.
3. Trace over a year of manifests (`build_year`: 1,000 deliveries holding 100,000,000 Post
   IDs, stored as gatekeeper stores them): six Post IDs — four held (one at a block's edge),
   one inside the spans but held by none, one after the year — traced by
   `gatekeeper.domain.trace.trace` with the spans from Redis and with every manifest's header
   opened instead (alternated, fresh interpreters), and by `gatekeeper trace ID --json` end to
   end, beside `gatekeeper trace --help` (the start-up every command pays).

Every side runs in a fresh interpreter (bench/common.run_fresh: its own time and VmHWM),
``--rounds`` times (3; the share ``--share-rounds`` times, 21: its own runs spread ±20 %
here), the order reversed every other round; medians are printed, with the load average.
Goals: ≤ 3 bytes per ID for time-clustered IDs; the manifest adds ≤ 10 % to the share; a
trace ≤ 1 s (median of the six IDs, the library call). Exits 1 if a goal is missed.

Run from the repository root::

    python bench/manifests.py
    python bench/manifests.py --share-only --no-trace --no-notices   # the share (~2 min)
    python bench/manifests.py --trace-only --deliveries 100 --year-ids 2000000 --rounds 1
    python bench/manifests.py --ids 150000 --rounds 1 --share-rounds 1 --no-trace --no-notices
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
# The workers and sequences of the sample posts (kpop, geo, two_tweets): 18 workers, small
# sequences; every worker of the range they span may appear, less often.
WORKERS = ([325] * 14 + [326] * 12 + [327] * 13 + [337] * 12 + [340] * 10 + [341] * 15
           + [343] * 13 + [345] * 12 + list(range(320, 352)))
SEQUENCES = ([0] * 12 + [1] * 10 + [2] * 14 + [3] * 9 + [4] * 12 + [5] * 15 + [7] * 6 + [8] * 8
             + [9] * 8 + [11] * 6 + list(range(24)))
BYTES_GOAL, SHARE_GOAL, TRACE_GOAL = 3.0, 0.10, 1.0
CODECS = ("ours", "deltas", "roaring", "roaring_zstd")


def build_year(workdir: Path | str, deliveries: int | str = 1000,
               total_ids: int | str = 100_000_000, seed: int = 15) -> dict[str, Any]:
    """A year of manifests in an embedded store at `workdir` (config.toml, var/, datasets/):
    `deliveries` deliveries holding `total_ids` Post IDs in all, as gatekeeper stores them
    (`Manifests.write`: file, Redis index and spans). Shared by the trace and notices rows.

    The IDs are time-clustered X IDs (`make_ids`' workers and sequences):
    deliveries // 10 collections, each over 3-60 days somewhere in the year; each delivery is
    a selection of one collection made after it was collected — a time range of it (since/
    until) or a sample (lang) — so posts are delivered more than once, to several recipients,
    as in life. Sizes are log-normal (a few large shares, many small exports), scaled to
    `total_ids`; a tenth are hydrated exports to a person (with their authors' User IDs),
    the rest ID shares to 50 entities by CLI or API. One collection in memory at a time.
    Returns where it is and what it holds (deliveries, IDs, manifest bytes, seconds)."""
    import numpy as np

    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate

    work, deliveries, total_ids = Path(workdir), int(deliveries), int(total_ids)
    t0 = time.perf_counter()
    (work / "config.toml").write_text('[redis]\ndata_dir = "var"\n[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(work / "config.toml"))
    gate.entities.add("acme", kind="academic", research=True, parent=None, actor="bench",
                      channel="cli")
    gate.users.add("cora", entity="acme", role="compliance",
                   password=secrets.token_urlsafe(16), actor="bench", channel="cli")
    rng = np.random.default_rng(seed)
    year_start = 1_733_000_000_000  # 2024-11-30, ms
    day = 86_400_000
    sizes = rng.lognormal(0, 1.5, deliveries)
    sizes = np.maximum(1, (sizes / sizes.sum() * total_ids).astype(np.int64))
    sizes[0] += total_ids - int(sizes.sum())  # exactly total_ids
    collections = max(1, deliveries // 10)
    owner = rng.integers(0, collections, deliveries)
    stored_bytes, held = 0, 0
    workers, sequences = np.array(WORKERS, np.uint64), np.array(SEQUENCES, np.uint64)
    for c in range(collections):
        mine = np.flatnonzero(owner == c)
        if mine.size == 0:
            continue
        span = int(rng.integers(3, 61)) * day
        begin = year_start + int(rng.integers(0, 300 * day))
        n = int(sizes[mine].max() * 1.25) + 1
        gap = span / n
        ms = (begin - EPOCH_MS) + np.cumsum(rng.exponential(gap, n)).astype(np.uint64)
        posts = ms << np.uint64(22) | rng.choice(workers, n) << np.uint64(12) \
            | rng.choice(sequences, n)
        posts = np.unique(posts)  # sorted; the rare same ms, worker and sequence once
        n = posts.size
        authors = rng.integers(10**6, 10**18, 5000, dtype=np.uint64)
        for d in mine.tolist():
            k = min(int(sizes[d]), n)  # n: the distinct of 1.25 x the largest (nearly all)
            if rng.random() < 0.5:  # since/until: a time range of the collection
                at = int(rng.integers(0, n - k + 1))
                ids = posts[at:at + k]
            else:  # a sample (a language, a keyword)
                ids = posts[np.sort(rng.choice(n, k, replace=False))]
            export = rng.random() < 0.1
            when = begin + span + int(rng.integers(0, max(1, year_start + 365 * day
                                                          - begin - span)))
            entity = f"e{int(rng.integers(50)):02d}"
            meta = ({"recipient": f"analyst{int(rng.integers(40)):02d}", "entity": entity,
                     "channel": "web", "kind": "export.xlsx", "actor": "analyst",
                     "dataset": f"collection{c}"} if export else
                    {"recipient": entity, "entity": entity,
                     "channel": "cli" if rng.random() < 0.5 else "api",
                     "kind": "share.posts", "actor": "dan", "dataset": f"collection{c}"})
            users = authors[rng.integers(0, authors.size, min(k, 2000))] if export else ()
            ref = gate.manifests.write(secrets.token_hex(16), when, ids, users, meta)
            stored_bytes += len(gate.manifests.read_bytes(ref.name))
            held += ref.posts
    gate.client.close()
    return {"config": str(work / "config.toml"), "deliveries": deliveries, "ids": held,
            "bytes": stored_bytes, "seconds": time.perf_counter() - t0}


def trace_probes(config: str, hits: str = "4") -> dict[str, Any]:
    """Post IDs to trace in the year: `hits` held by some delivery (each from a manifest
    picked at random, a block edge among them), one inside every span of the collection it
    resembles but held by none (a sequence no worker used), one after the year."""
    import random

    import numpy as np

    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate

    gate = Gate(config_mod.load(config))
    rng = random.Random(15)
    names = gate.manifests.listed()
    out = []
    for i in range(int(hits)):
        posts = gate.manifests.read(rng.choice(names)).posts
        at = min(posts.size - 1, 65_536) if i == 0 else rng.randrange(posts.size)
        out.append(int(posts[at]))
    miss = (out[-1] >> 12 << 12) | 4095  # sequence 4095: never made by make_ids
    assert all(int(x) != miss for n in names[:3] for x in gate.manifests.read(n).posts[:1])
    out += [miss, (1_800_000_000_000 - EPOCH_MS) << 22]
    return {"probes": [str(x) for x in out], "np": np.__version__}


def trace_side(config: str, side: str, probes: str) -> dict[str, Any]:
    """Each probe traced once, timed (a fresh interpreter: imports lazily made on the first
    are in its time). `side`: "spans" (Redis spans, then headers) or "headers" (every
    manifest's header opened)."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate
    from gatekeeper.domain.trace import trace

    gate = Gate(config_mod.load(config))
    seconds, found = [], []
    for probe in probes.split(","):
        t0 = time.perf_counter()
        hits = trace(gate, probe, use_spans=side == "spans")
        seconds.append(time.perf_counter() - t0)
        found.append(len(hits))
    return {"seconds": seconds, "found": found}


def trace_cli(config: str, probe: str) -> dict[str, Any]:
    """`gatekeeper trace ID --as cora --json` end to end: a fresh interpreter, the CLI's
    imports, the store opened, the trace, the JSON printed."""
    import subprocess

    args = ["--help"] if probe == "--help" else [probe, "--as", "cora", "--json"]
    t0 = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "gatekeeper", "--config", config, "trace",
                           *args], capture_output=True, text=True,
                          check=False, env={**os.environ, "PYTHONPATH": str(ROOT)})
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        raise SystemExit(f"gatekeeper trace failed: {done.stderr}")
    import json

    if probe == "--help":  # the start-up alone: the interpreter and the CLI's imports
        return {"seconds": seconds, "found": 0}
    return {"seconds": seconds, "found": len(json.loads(done.stdout)["deliveries"])}


def make_ids(kind: str, n: int, gap_ms: float = 400.0, seed: int = 15) -> Any:
    """`n` distinct IDs of `kind`, shuffled (numpy uint64)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    if kind == "clustered":
        start = 1_760_000_000_000 - EPOCH_MS  # 2025-10
        ms = start + np.cumsum(rng.exponential(gap_ms, n)).astype(np.uint64)
        ids = (ms << np.uint64(22)) | (rng.choice(WORKERS, n).astype(np.uint64) << np.uint64(12)) \
            | rng.choice(SEQUENCES, n).astype(np.uint64)
    else:
        low, high = 1 << 22, (1_795_000_000_000 - EPOCH_MS) << 22
        ids = rng.integers(low, high, n, dtype=np.uint64)
    ids = np.unique(ids)
    rng.shuffle(ids)
    return ids


def codec(name: str, kind: str, n: str, gap_ms: str) -> dict[str, Any]:
    """One codec on one kind of IDs: bytes per ID, encode and decode seconds."""
    import numpy as np
    import zstandard

    from gatekeeper.domain import manifests

    ids = make_ids(kind, int(n), float(gap_ms))
    if name == "ours":
        t0 = time.perf_counter()
        data = manifests.encode(ids)
        t1 = time.perf_counter()
        back = manifests.decode(data).posts
    elif name == "deltas":
        t0 = time.perf_counter()
        s = manifests.as_ids(ids)
        d = np.diff(s, prepend=np.uint64(0)).astype("<u8")
        data = zstandard.ZstdCompressor(level=manifests.LEVEL).compress(
            d.view(np.uint8).reshape(-1, 8).T.tobytes())
        t1 = time.perf_counter()
        raw = np.frombuffer(zstandard.ZstdDecompressor().decompress(data), dtype=np.uint8)
        back = np.cumsum(raw.reshape(8, -1).T.copy().view("<u8").ravel(), dtype=np.uint64)
    else:
        from pyroaring import BitMap64

        t0 = time.perf_counter()
        bm = BitMap64(ids)
        bm.run_optimize()
        data = bm.serialize()
        if name == "roaring_zstd":
            data = zstandard.ZstdCompressor(level=manifests.LEVEL).compress(data)
        t1 = time.perf_counter()
        raw = zstandard.ZstdDecompressor().decompress(data) if name == "roaring_zstd" else data
        back = np.array(BitMap64.deserialize(raw).to_array(), dtype=np.uint64)
    t2 = time.perf_counter()
    if not np.array_equal(back, np.sort(ids)):
        raise SystemExit(f"{name} on {kind}: the IDs did not come back")
    return {"bytes": len(data), "ids": int(ids.size), "encode_s": t1 - t0, "decode_s": t2 - t1}


def setup_store(work: Path, n: int, gap_ms: float) -> None:
    """An embedded store with entity acme and data user dan, and an ID file of `n` IDs."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate

    (work / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 1000000000\n'
        '[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(work / "config.toml"))
    gate.entities.add("acme", kind="academic", research=True, parent=None, actor="bench",
                      channel="cli")
    gate.entities.accept_terms("acme", by="Bench Person", actor="bench", channel="cli")
    gate.users.add("dan", entity="acme", role="data", password=secrets.token_urlsafe(16),
                   actor="bench", channel="cli")
    ids = make_ids("clustered", n, gap_ms)
    (work / "ids.txt").write_bytes(b"".join(b"%d\n" % i for i in ids.tolist()))


def share(work: str, side: str) -> dict[str, Any]:
    """A CLI share of the ID file (`share_to_file`), with or without its manifest."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain import manifests, shares
    from gatekeeper.domain.gate import Gate

    base = Path(work)
    gate = Gate(config_mod.load(base / "config.toml"))
    if side == "without":
        manifests.record_share = lambda *a, **k: None  # type: ignore[assignment]
        manifests.record_share_alongside = (  # type: ignore[assignment]
            lambda gate, res, ids, kind, write, **_: write(lambda: None))
    out = base / f"out-{side}.txt"
    t0, c0 = time.perf_counter(), time.process_time()
    res = shares.share_to_file(gate, actor="dan", entity="acme", out=out,
                               ids_path=base / "ids.txt", purpose="bench")
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    out.unlink()
    if res.grant.granted != (base / "ids.txt").read_bytes().count(b"\n"):
        raise SystemExit("the share did not grant every ID")
    return {"seconds": seconds, "cpu": cpu, "manifest": res.audit.get("manifest")}


def manifest_alone(work: str) -> dict[str, Any]:
    """What `record_share` does for the ID file: parse, encode, store, index."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain import manifests
    from gatekeeper.domain.gate import Gate

    base = Path(work)
    gate = Gate(config_mod.load(base / "config.toml"))
    data = (base / "ids.txt").read_bytes()
    t0 = time.perf_counter()
    ids = manifests.parse_lines(_chunks(data))
    ref = gate.manifests.write(secrets.token_hex(16), int(time.time() * 1000), ids)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "bytes_per_id": len(gate.manifests.read_bytes(ref.name))
            / ref.posts}


def _chunks(data: bytes, size: int = 1 << 16) -> list[bytes]:
    """Whole lines of about `size` bytes, as Selection.head yields them."""
    out, at = [], 0
    while at < len(data):
        end = data.find(b"\n", min(at + size, len(data) - 1)) + 1 or len(data)
        out.append(data[at:end])
        at = end
    return out


# --- notices (issue 15 item 2): a deletion list against every delivery in retention ---------------

NOTICES_GOAL_S = 30.0


def delivery_ids(i: int, n: int, gap_ms: float) -> Any:
    """Delivery `i`'s `n` clustered IDs (sorted): a collection starting 6 hours after delivery
    i-1's, so neighbouring deliveries overlap in time as shares of one stream do."""
    import numpy as np

    rng = np.random.default_rng(1000 + i)
    start = 1_740_000_000_000 - EPOCH_MS + i * 6 * 3_600_000
    ms = start + np.cumsum(rng.exponential(gap_ms, n)).astype(np.uint64)
    ids = (ms << np.uint64(22)) | (rng.choice(WORKERS, n).astype(np.uint64) << np.uint64(12)) \
        | rng.choice(SEQUENCES, n).astype(np.uint64)
    from gatekeeper.domain.manifests import as_ids

    return as_ids(ids)  # sorted, unique (np.unique hashes: ~70 ms here)


def setup_notices(work: Path, deliveries: int, per: int, gap_ms: float) -> dict[str, Any]:
    """An embedded store with 20 entities and `deliveries` ID-share manifests of `per` IDs,
    written straight through `Manifests.store` (each with its share record, delivered)."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain import manifests
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger import keys

    (work / "config.toml").write_text('[redis]\ndata_dir = "var"\n[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(work / "config.toml"))
    for e in range(20):
        gate.entities.add(f"e{e}", kind="commercial", research=False, parent=None,
                          actor="bench", channel="cli")
    t0, total = time.perf_counter(), 0
    for i in range(deliveries):
        ids, share, at_ms = delivery_ids(i, per, gap_ms), secrets.token_hex(16), \
            1_760_000_000_000 + i * 60_000
        entity = f"e{i % 20}"
        meta = {"delivery": share, "at_ms": at_ms, "recipient": entity, "entity": entity,
                "channel": "cli", "kind": "share.posts", "actor": "dan"}
        gate.manifests.store(manifests.name_of(share, at_ms), at_ms,
                             manifests.encode(ids, (), meta), int(ids.size), 0)
        gate.client.hset(keys.share(entity, share), mapping={"status": "delivered"})
        total += int(ids.size)
    return {"ids": total, "seconds": time.perf_counter() - t0}


def notices_run(work: str, deliveries: str, per: str, gap_ms: str, seed: str
                ) -> dict[str, Any]:
    """Ingest a 100,000-ID deletion list (half of it delivered IDs of 500 deliveries, half
    IDs no delivery holds; new in every run), then time the notices it opens (`scan`)."""
    import numpy as np

    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate

    gate = Gate(config_mod.load(Path(work) / "config.toml"))
    rng = np.random.default_rng(int(seed))
    picked = rng.choice(int(deliveries), min(500, int(deliveries)), replace=False)
    held = np.concatenate([rng.choice(delivery_ids(int(i), int(per), float(gap_ms)),
                                      50_000 // picked.size,
                                      replace=False) for i in picked])
    low = (1_740_000_000_000 - EPOCH_MS) << 22
    other = rng.integers(low, low + (300 * 86_400_000 << 22), 50_000, dtype=np.uint64)
    lines = [b"%d\n" % i for i in np.concatenate([held, other]).tolist()]
    t0 = time.perf_counter()
    gate.deletions.add(lines, kind="posts", source="bench.txt", actor="bench", channel="cli")
    t1 = time.perf_counter()
    scan = gate.notices.scan(actor="bench", channel="cli")
    t2 = time.perf_counter()
    return {"ingest_s": t1 - t0, "seconds": t2 - t1, "opened": len(scan.opened),
            "manifests": scan.manifests, "to_delete": sum(n.ids for n in scan.opened)}


def notices_row(rounds: int, deliveries: int = 1000, per: int = 100_000,
                gap_ms: float = 400.0) -> tuple[str, bool]:
    """Print the notices row (medians of `rounds` fresh interpreters); its goal line."""
    from gatekeeper.ledger.store import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="gk-bench-notices-") as tmp:
        work = Path(tmp)
        try:
            before = os.getloadavg()
            built = setup_notices(work, deliveries, per, gap_ms)
            runs = [run_fresh("notices", "manifests", "notices_run",
                              [work, deliveries, per, gap_ms, r], ROOT) for r in range(rounds)]
            after = os.getloadavg()
        finally:
            EmbeddedServer(work / "var").stop()
    med = median(x["seconds"] for x in runs)
    print(f"\nnotices: a 100,000-ID deletion list against {deliveries:,} deliveries totalling "
          f"{built['ids']:,} IDs (built in {built['seconds']:.0f} s); medians of {rounds}; "
          f"load {before[0]:.2f} before, {after[0]:.2f} after")
    print_table(["side", "seconds", "ingest s", "notices", "IDs to delete", "peak MB",
                 "runs (s)"], [[
                     "scan", f"{med:.2f}", f"{median(x['ingest_s'] for x in runs):.2f}",
                     str(runs[0]["opened"]), f"{runs[0]['to_delete']:,}",
                     f"{median(x['peak_mb'] for x in runs):.0f}",
                     " ".join(f"{x['seconds']:.2f}" for x in runs)]])
    return (f"notices for a 100,000-ID list against {built['ids']:,} delivered IDs in "
            f"≤ {NOTICES_GOAL_S:.0f} s: {med:.2f} s", med <= NOTICES_GOAL_S)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_500_000)
    parser.add_argument("--gap-ms", type=float, default=400.0,
                        help="mean time between clustered posts (400 ms: 1.5M in ~7 days)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--share-rounds", type=int, default=21,
                        help="rounds of the share with/without (a share's own runs spread "
                             "±20 %% here: 0.28-0.47 s; fewer cannot resolve the 10 %% goal)")
    parser.add_argument("--share-only", action="store_true",
                        help="skip the codec table (the roaring sides take minutes); the bytes "
                             "goal is then judged on the share's own manifest")
    parser.add_argument("--notices-only", action="store_true", help="only the notices row")
    parser.add_argument("--no-trace", action="store_true", help="skip the trace row")
    parser.add_argument("--no-notices", action="store_true", help="skip the notices row")
    parser.add_argument("--trace-only", action="store_true",
                        help="only the trace row (a year of manifests: build_year)")
    parser.add_argument("--deliveries", type=int, default=1000,
                        help="deliveries in the year of manifests the trace row searches")
    parser.add_argument("--year-ids", type=int, default=100_000_000,
                        help="Post IDs those deliveries hold in all")
    args = parser.parse_args()
    if args.notices_only:
        print(f"bench/manifests.py --notices-only; {machine_line()}")
        return print_goals([notices_row(args.rounds)])
    if args.trace_only:
        args.share_only = True
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    loads = [os.getloadavg()]
    n, gap = args.ids, args.gap_ms

    sides = [(c, k) for k in ("clustered", "random") for c in CODECS]
    codec_runs: dict[tuple[str, str], list[dict[str, Any]]] = {s: [] for s in sides}
    for r in range(0 if args.share_only else args.rounds):
        for c, k in sides if r % 2 == 0 else list(reversed(sides)):
            codec_runs[(c, k)].append(run_fresh(f"{c} {k}", "manifests", "codec",
                                                [c, k, n, gap], ROOT))
    loads.append(os.getloadavg())

    from gatekeeper.ledger.store import EmbeddedServer

    share_runs: dict[str, list[dict[str, Any]]] = {"without": [], "with": [], "alone": []}
    with tempfile.TemporaryDirectory(prefix="gk-bench-manifests-") as tmp:
        work = Path(tmp)
        try:
            setup_store(work, n, gap)
            order = ["without", "with", "alone"]
            for r in range(0 if args.trace_only else args.share_rounds):
                for side in order if r % 2 == 0 else list(reversed(order)):
                    if side == "alone":
                        got = run_fresh("manifest alone", "manifests", "manifest_alone",
                                        [work], ROOT)
                    else:
                        got = run_fresh(f"share {side}", "manifests", "share", [work, side],
                                        ROOT)
                    share_runs[side].append(got)
        finally:
            EmbeddedServer(work / "var").stop()
    loads.append(os.getloadavg())
    traced = None if args.no_trace else trace_rows(args.deliveries, args.year_ids, args.rounds)
    loads.append(os.getloadavg())
    notices_goals = [] if args.no_notices else [notices_row(args.rounds)]

    print(f"bench/manifests.py — {started}; {machine_line()}; Python "
          f"{platform.python_version()}")
    print(f"command: {command}")
    print("load average (1/5/15 min) before, between, after: "
          + "; ".join(" ".join(f"{x:.2f}" for x in la) for la in loads))
    rows = []
    for c, k in sides if not args.share_only else ():
        runs = codec_runs[(c, k)]
        rows.append([f"{c} / {k}", f"{runs[0]['bytes'] / runs[0]['ids']:.3f}",
                     f"{median(x['encode_s'] for x in runs) * 1000:.0f}",
                     f"{median(x['decode_s'] for x in runs) * 1000:.0f}",
                     f"{median(x['peak_mb'] for x in runs):.0f}"])
    if rows:
        print(f"\n1. codecs on {n:,} IDs (medians of {args.rounds} fresh interpreters each)")
        print_table(["codec / IDs", "bytes/ID", "encode ms", "decode ms", "peak MB"], rows)
    goals = []
    if traced is not None:
        goals += print_trace(traced, args.rounds)
    if args.trace_only:
        return print_goals(goals)
    med = {s: median(x["seconds"] for x in share_runs[s]) for s in share_runs}
    peak = {s: median(x["peak_mb"] for x in share_runs[s]) for s in share_runs}
    added = med["with"] / med["without"] - 1
    print(f"\n2. a {n:,}-ID share (share_to_file, embedded store), medians of "
          f"{args.share_rounds}")
    print_table(["side", "seconds", "peak MB", "runs (s)"], [
        [s, f"{med[s]:.3f}", f"{peak[s]:.0f}",
         " ".join(f"{x['seconds']:.3f}" for x in share_runs[s])] for s in share_runs])
    cpu = {s: median(x["cpu"] for x in share_runs[s]) for s in ("without", "with")}
    # Each round runs the two sides one after the other: the same minute's load.
    paired = median(w["seconds"] / o["seconds"] - 1
                    for w, o in zip(share_runs["with"], share_runs["without"], strict=True))
    print(f"manifest adds {added * 100:+.1f} % to the share "
          f"({(med['with'] - med['without']) * 1000:+.0f} ms); "
          f"{share_runs['alone'][0]['bytes_per_id']:.3f} bytes per ID stored; CPU (all "
          f"threads) {cpu['without']:.3f} s without, {cpu['with']:.3f} s with "
          f"({(cpu['with'] / cpu['without'] - 1) * 100:+.1f} %: what it adds when no second "
          f"core is free); median of the rounds' own with/without: {paired * 100:+.1f} %")
    ours = codec_runs[("ours", "clustered")]
    per_id = (ours[0]["bytes"] / ours[0]["ids"] if ours
              else share_runs["alone"][0]["bytes_per_id"])
    return print_goals([
        *goals,
        (f"≤ {BYTES_GOAL} bytes per time-clustered ID: {per_id:.3f}", per_id <= BYTES_GOAL),
        (f"the manifest adds ≤ {SHARE_GOAL:.0%} to a {n:,}-ID share: {added * 100:+.1f} %",
         added <= SHARE_GOAL),
        *notices_goals,
    ])


def trace_rows(deliveries: int, total_ids: int, rounds: int) -> dict[str, Any]:
    """Build the year (build_year), then trace its probes: the library's trace with the spans
    from Redis and with every header opened instead, alternated, each round in a fresh
    interpreter; and the CLI end to end, each probe once a round."""
    from gatekeeper.ledger.store import EmbeddedServer

    with tempfile.TemporaryDirectory(prefix="gk-bench-year-") as tmp:
        work = Path(tmp)
        try:
            built = run_fresh("build_year", "manifests", "build_year",
                              [work, deliveries, total_ids], ROOT)
            config = built["config"]
            probes = run_fresh("probes", "manifests", "trace_probes", [config], ROOT)["probes"]
            runs: dict[str, list[dict[str, Any]]] = {"spans": [], "headers": [], "cli": [],
                                                     "start": []}
            for r in range(rounds):
                for side in ("spans", "headers") if r % 2 == 0 else ("headers", "spans"):
                    runs[side].append(run_fresh(f"trace {side}", "manifests", "trace_side",
                                                [config, side, ",".join(probes)], ROOT))
                cli = [run_fresh("trace cli", "manifests", "trace_cli", [config, p], ROOT)
                       for p in probes]
                runs["cli"].append({"seconds": [c["seconds"] for c in cli],
                                    "found": [c["found"] for c in cli]})
                runs["start"].append(run_fresh("trace --help", "manifests", "trace_cli",
                                               [config, "--help"], ROOT))
        finally:
            EmbeddedServer(work / "var").stop()
    return {"built": built, "probes": probes, "runs": runs}


def print_trace(traced: dict[str, Any], rounds: int) -> list[tuple[str, bool]]:
    built, probes, runs = traced["built"], traced["probes"], traced["runs"]
    print(f"\n3. trace over a year of manifests: {built['deliveries']:,} deliveries holding "
          f"{built['ids']:,} Post IDs ({built['bytes'] / 1e6:,.0f} MB of manifests, "
          f"{built['bytes'] / built['ids']:.2f} bytes an ID; built in {built['seconds']:.0f} s); "
          f"medians of {rounds} fresh interpreters, ms")
    kinds = ["hit"] * (len(probes) - 2) + ["miss, in spans", "miss, after the year"]
    found = runs["spans"][0]["found"]
    start = median(r["seconds"] for r in runs.pop("start"))
    for side in runs:
        if any(r["found"] != found for r in runs[side]):
            raise SystemExit(f"trace {side} found other deliveries than the spans side")
    print_table(["post ID", "probe", "deliveries", "spans + 1 block", "every header",
                 "CLI end to end"], [
        [p, k, str(found[i]), *(f"{median(r['seconds'][i] for r in runs[s]) * 1000:.1f}"
                                for s in ("spans", "headers", "cli"))]
        for i, (p, k) in enumerate(zip(probes, kinds, strict=True))])
    per_probe = {s: [median(r["seconds"][i] for r in runs[s]) for i in range(len(probes))]
                 for s in runs}
    lib, cli = median(per_probe["spans"]), median(per_probe["cli"])
    print(f"median over the probes: {lib * 1000:.1f} ms (spans), "
          f"{median(per_probe['headers']) * 1000:.1f} ms (every header), "
          f"{cli * 1000:.0f} ms (the CLI, interpreter start included; "
          f"`gatekeeper trace --help` alone: {start * 1000:.0f} ms)")
    # The goal is the trace's (the library call the compliance page makes); the CLI's figure
    # is printed beside it, with its start-up, which every gatekeeper command pays.
    return [(f"trace ≤ {TRACE_GOAL:.0f} s over {built['deliveries']:,} deliveries / "
             f"{built['ids']:,} IDs (median of the probes): {lib:.3f} s", lib <= TRACE_GOAL)]


if __name__ == "__main__":
    raise SystemExit(main())
