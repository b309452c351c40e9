"""Benchmark delivery manifests (issue 15 item 1): bytes per ID, and what one adds to a share.

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
   sort) and is encoded and stored while the file is written, before it is named.

Every side runs in a fresh interpreter (bench/common.run_fresh: its own time and VmHWM),
``--rounds`` times (3), the order reversed every other round; medians are printed, with the
load average. Goals: ≤ 3 bytes per ID for time-clustered IDs; the manifest adds ≤ 10 % to the
share. Exits 1 if a goal is missed.

Run from the repository root::

    python bench/manifests.py
    python bench/manifests.py --ids 150000 --rounds 1   # a quick check
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
BYTES_GOAL, SHARE_GOAL = 3.0, 0.10
CODECS = ("ours", "deltas", "roaring", "roaring_zstd")


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
            lambda gate, res, ids, kind, write: write(lambda: None))
    out = base / f"out-{side}.txt"
    t0 = time.perf_counter()
    res = shares.share_to_file(gate, actor="dan", entity="acme", out=out,
                               ids_path=base / "ids.txt", purpose="bench")
    seconds = time.perf_counter() - t0
    out.unlink()
    if res.grant.granted != (base / "ids.txt").read_bytes().count(b"\n"):
        raise SystemExit("the share did not grant every ID")
    return {"seconds": seconds, "manifest": res.audit.get("manifest")}


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
    parser.add_argument("--share-only", action="store_true",
                        help="skip the codec table (the roaring sides take minutes); the bytes "
                             "goal is then judged on the share's own manifest")
    parser.add_argument("--notices-only", action="store_true", help="only the notices row")
    args = parser.parse_args()
    if args.notices_only:
        print(f"bench/manifests.py --notices-only; {machine_line()}")
        return print_goals([notices_row(args.rounds)])
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
            for r in range(args.rounds):
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
    notices_goal = notices_row(args.rounds)

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
    med = {s: median(x["seconds"] for x in share_runs[s]) for s in share_runs}
    peak = {s: median(x["peak_mb"] for x in share_runs[s]) for s in share_runs}
    added = med["with"] / med["without"] - 1
    print(f"\n2. a {n:,}-ID share (share_to_file, embedded store), medians of {args.rounds}")
    print_table(["side", "seconds", "peak MB", "runs (s)"], [
        [s, f"{med[s]:.3f}", f"{peak[s]:.0f}",
         " ".join(f"{x['seconds']:.3f}" for x in share_runs[s])] for s in share_runs])
    print(f"manifest adds {added * 100:+.1f} % to the share "
          f"({(med['with'] - med['without']) * 1000:+.0f} ms); "
          f"{share_runs['alone'][0]['bytes_per_id']:.3f} bytes per ID stored")
    ours = codec_runs[("ours", "clustered")]
    per_id = (ours[0]["bytes"] / ours[0]["ids"] if ours
              else share_runs["alone"][0]["bytes_per_id"])
    return print_goals([
        (f"≤ {BYTES_GOAL} bytes per time-clustered ID: {per_id:.3f}", per_id <= BYTES_GOAL),
        (f"the manifest adds ≤ {SHARE_GOAL:.0%} to a {n:,}-ID share: {added * 100:+.1f} %",
         added <= SHARE_GOAL),
        notices_goal,
    ])


if __name__ == "__main__":
    raise SystemExit(main())
