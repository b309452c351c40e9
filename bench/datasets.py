"""Benchmark the dataset index (issue 14): add, previews, an export and an ID share at scale.

A dataset of --posts posts (default 10,000,000) is generated fast (twarc2-like pages of 100 posts
filled into a byte template, 10% retweets with their original in ``includes``), then each step
runs in a fresh interpreter, so its peak memory (VmHWM) is its own:

- ``dataset add``: validate, copy and index in one pass; time and peak memory;
- preview counts for five filter shapes (none, lang, since/until, author, contains): the index
  against the JSONL pass previews made before it (`gatekeeper.domain.dsscan`), alternated,
  --runs each, medians;
- an export of 50,000 selected posts (rows read at their offsets, written as XLSX);
- an ID share of 1,500,000 posts (the whole dataset when it holds fewer) against ``twarc2
  dehydrate`` of a file of the same posts: with more, the first 15,000 pages are copied aside
  and added as a dataset of their own, shared whole, and that copy is what twarc2 dehydrates.

Goals (issue 14): preview ≤ 1/100 of the JSONL scan for every shape but contains (≤ 1/10);
add ≤ 2× the JSONL scan; every step ≤ 500 MB. Exit 1 when one fails.

    python bench/datasets.py --posts 10000000 --runs 3
    python bench/datasets.py --jsonl /work/big/big10m.jsonl --runs 3  # a file generate() made
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, own_peak_mb, print_goals, print_table, run_child  # noqa: E402

PAGE = 100
SHARE = 1_500_000  # posts an ID share hands out here, against twarc2 dehydrate
USERS = 50_000
SHAPES = {"none": {}, "lang": {"lang": "ja"},
          "since/until": {"since": "2024-03-01", "until": "2024-03-08"},
          "author": {"author": "user_777"}, "contains": {"contains": "needle"}}
POST = (b'{"id":"%d","author_id":"%d","created_at":"2024-%02d-%02dT%02d:%02d:00.000Z",'
        b'"lang":"%s","text":"%s post %d about things","public_metrics":{"retweet_count":%d,'
        b'"reply_count":0,"like_count":%d,"quote_count":0},"conversation_id":"%d"}')
RETWEET = (b'{"id":"%d","author_id":"%d","created_at":"2024-%02d-%02dT%02d:%02d:00.000Z",'
           b'"lang":"%s","text":"RT @x: original %d","referenced_tweets":[{"type":"retweeted",'
           b'"id":"%d"}],"conversation_id":"%d"}')
ORIGINAL = (b'{"id":"%d","author_id":"%d","text":"original %d",'
            b'"created_at":"2023-01-01T00:00:00.000Z"}')
USER = b'{"id":"%d","username":"user_%d","name":"User %d"}'
LANGS = [b"en", b"en", b"en", b"ja", b"ko", b"es", b"pt", b"de"]


def generate(path: Path, posts: int) -> None:
    """`posts` posts as twarc2 pages, from byte templates (no json.dumps per post)."""
    first = 1_700_000_000_000_000_000
    with open(path, "wb", buffering=1 << 22) as out:
        for start in range(0, posts, PAGE):
            data, tweets, users = [], [], {}
            for i in range(start, min(start + PAGE, posts)):
                pid, author = first + i * 7, (i * 7919) % USERS + 1
                users[author] = None
                when = (1 + i % 3, 1 + i % 28, i % 24, i % 60)
                lang = LANGS[i % len(LANGS)]
                if i % 10 == 9:
                    orig, by = first - 1 - i, (i * 31) % USERS + 1
                    users[by] = None
                    data.append(RETWEET % (pid, author, *when, lang, i, orig, pid))
                    tweets.append(ORIGINAL % (orig, by, i))
                else:
                    word = b"needle" if i % 1000 == 0 else b"some"
                    data.append(POST % (pid, author, *when, lang, word, i, i % 50, i % 90, pid))
            inc = b",".join(USER % (u, u, u) for u in users)
            out.write(b'{"data":[' + b",".join(data) + b'],"includes":{"users":[' + inc
                      + b'],"tweets":[' + b",".join(tweets) + b']},"__twarc":{"url":"x"}}\n')


# --- the children: each step alone in a fresh interpreter -------------------------------------


def _datasets(work: Path) -> Any:
    from gatekeeper.domain.datasets import Datasets
    from gatekeeper.ledger.ledger import Ledger
    from gatekeeper.ledger.store import EmbeddedServer

    server = EmbeddedServer(work / "var")
    server.start()  # once; later children find it running
    client = server.client()
    return Datasets(client, Ledger(client), work / "datasets")


def warm_up(filters: Any) -> None:
    """What a running server has done already: pyarrow's and numpy's lazy imports and kernels,
    on a one-post index in memory (not the dataset's: its pages are not pre-read)."""
    import io

    import pyarrow.parquet as pq

    from gatekeeper.domain import dsindex, dsquery
    from gatekeeper.rules.r9 import Deleted

    buf = io.BytesIO()
    builder = dsindex.Builder(buf)
    builder.add({"id": "1", "text": "x", "author_id": "2", "author": {"id": "2"}}, 0, 1, 0)
    builder.finish({})
    buf.seek(0)
    dsquery.count(pq.ParquetFile(buf), filters, Deleted(0, frozenset(), frozenset()),
                  limit=None, referenced=False, with_users=True, repeated=None)


def child(step: str, work: Path, arg: str) -> dict[str, Any]:
    # Imported before the clock starts: a server has them loaded already.
    from exports.xlsx import write_xlsx
    from gatekeeper.domain.dsscan import scan_tally
    from gatekeeper.domain.filters import Filters
    from gatekeeper.domain.hydrated import Selection
    from gatekeeper.domain.shares import select_from_dataset
    from gatekeeper.domain.spool import anonymous
    from gatekeeper.rules.r9 import Deleted

    datasets = _datasets(work)
    if step == "readd":  # --add-only's later runs: the same add again, untimed removal first
        datasets.remove("big", actor="bench", channel="cli")
    gate: Any = SimpleNamespace(datasets=datasets)
    none = Deleted(0, frozenset(), frozenset())
    warm_up(Filters.parse(SHAPES.get(arg) or {}))
    start, cpu = time.perf_counter(), time.process_time()
    out: dict[str, Any] = {}
    if step in ("add", "add_ids", "readd"):
        name = "ids" if step == "add_ids" else "big"
        out = {"posts": datasets.add(name, Path(arg), actor="bench", channel="cli").posts}
    elif step in ("scan", "index"):
        sel = Selection("big", Filters.parse(SHAPES[arg]), none)
        tally = scan_tally(gate, sel, True) if step == "scan" else sel.tally(gate, True)
        out = {"posts": tally.posts, "users": len(tally.authors)}
    elif step == "export":
        sel = Selection("big", Filters(lang="ja"), none, limit=50_000)
        with anonymous() as fh:
            out = {"rows": write_xlsx(sel.posts(gate), fh, about={"bench": "datasets"})}
    elif step == "share":
        with select_from_dataset(gate, arg, Filters(), "posts", none) as sel:
            out = {"ids": sel.count}
    out.update(seconds=time.perf_counter() - start, cpu=time.process_time() - cpu,
               peak_mb=own_peak_mb())
    return out


def run(step: str, work: Path, arg: str = "") -> dict[str, Any]:
    return run_child(step, [str(Path(__file__).resolve()), "--child", step, "--work",
                            str(work), "--arg", arg], ROOT)


def dehydrate(work: Path, source: Path) -> dict[str, Any]:
    start = time.perf_counter()
    # twarc2 asks for API keys it never uses here unless given some.
    subprocess.run(["twarc2", "dehydrate", str(source), str(work / "ids.txt")],
                   check=True, capture_output=True, env={**os.environ, "BEARER_TOKEN": "unused"})
    return {"seconds": time.perf_counter() - start}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child")
    parser.add_argument("--work", type=Path)
    parser.add_argument("--arg", default="")
    parser.add_argument("--jsonl", type=Path, help="a file generate() made, used as it is "
                        "(read, never changed) instead of generating one")
    parser.add_argument("--add-only", action="store_true", help="only dataset add against "
                        "the \"none\" scan, alternated, --runs each")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.work, args.arg)))
        return 0
    print(machine_line())
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-datasets-") as tmp:
        try:
            return measure(args, Path(tmp))
        finally:  # the children's store, started by the first of them
            from gatekeeper.ledger.store import EmbeddedServer

            EmbeddedServer(Path(tmp) / "var").stop()


def measure(args: argparse.Namespace, work: Path) -> int:
    source = args.jsonl or work / "big.jsonl"
    if args.jsonl is None:
        started = time.perf_counter()
        generate(source, args.posts)
        print(f"generated {args.posts:,} posts, {source.stat().st_size / 1e9:.2f} GB, in "
              f"{time.perf_counter() - started:.1f} s")
    if args.add_only:
        return add_only(args, work, source)
    add = run("add", work, str(source))
    print(f"dataset add of {source} ({add['posts']:,} posts, "
          f"{source.stat().st_size / 1e9:.2f} GB): {add['seconds']:.1f} s "
          f"({add['cpu']:.1f} s CPU), peak {add['peak_mb']:.0f} MB")
    rows, goals, peaks = [], [], [add["peak_mb"]]
    scan_none = 0.0
    for shape in SHAPES:
        scans, indexed, cpus = [], [], []
        for _ in range(args.runs):  # alternated: the load moves, both sides see it
            s, i = run("scan", work, shape), run("index", work, shape)
            if (s["posts"], s["users"]) != (i["posts"], i["users"]):
                raise SystemExit(f"{shape}: the index counts {i} but the JSONL {s}")
            scans.append(s["seconds"])
            indexed.append(i["seconds"])
            cpus.append((s["cpu"], i["cpu"]))
            peaks += [s["peak_mb"], i["peak_mb"]]
        ms, mi = statistics.median(scans), statistics.median(indexed)
        scan_none = ms if shape == "none" else scan_none
        ratio = ms / mi
        cs, ci = (statistics.median(c[k] for c in cpus) for k in (0, 1))
        rows.append([shape, f"{i['posts']:,}", f"{ms:.2f} s", f"{mi * 1000:.0f} ms",
                     f"{ratio:.0f}x", f"{cs:.2f} s / {ci * 1000:.0f} ms",
                     f"{i['peak_mb']:.0f} MB"])
        need = 10 if shape == "contains" else 100
        goals.append((f"preview {shape}: index ≤ 1/{need} of the JSONL scan "
                      f"({ratio:.0f}x faster)", ratio >= need))
    print()
    print_table(["preview", "posts", "JSONL scan", "index", "faster",
                 "CPU scan / index", "index peak"], rows)
    export = [run("export", work) for _ in range(args.runs)]
    shared, ids = "big", source
    if add["posts"] > SHARE:  # the same posts on both sides: the first SHARE of them
        shared, ids = "ids", work / "ids.jsonl"
        with open(source, "rb") as src, open(ids, "wb") as out:
            for _ in range(SHARE // PAGE):  # generate() writes PAGE posts a line
                out.write(src.readline())
        peaks.append(run("add_ids", work, str(ids))["peak_mb"])
    share, twarc = [], []
    for _ in range(args.runs):  # alternated
        share.append(run("share", work, shared))
        twarc.append(dehydrate(work, ids))
    peaks += [r["peak_mb"] for r in export + share]
    print(f"\nexport of {export[0]['rows']:,} selected posts (XLSX): "
          f"{statistics.median(r['seconds'] for r in export):.2f} s median, peak "
          f"{max(r['peak_mb'] for r in export):.0f} MB")
    print(f"ID share of {share[0]['ids']:,} posts: "
          f"{statistics.median(r['seconds'] for r in share):.2f} s median, peak "
          f"{max(r['peak_mb'] for r in share):.0f} MB; twarc2 dehydrate of a file of the same "
          "posts "
          f"{statistics.median(r['seconds'] for r in twarc):.2f} s")
    goals.append((f"dataset add ≤ 2x the JSONL scan ({add['seconds']:.1f} s vs "
                  f"{scan_none:.1f} s)", add["seconds"] <= 2 * scan_none))
    goals.append((f"memory ≤ 500 MB throughout (max {max(peaks):.0f} MB)",
                  max(peaks) <= 500))
    print(f"load average after: {os.getloadavg()}")
    return print_goals(goals)


def add_only(args: argparse.Namespace, work: Path, source: Path) -> int:
    """`dataset add` against the JSONL scan ("none"), alternated, each in a fresh interpreter."""
    adds, scans = [], []
    for i in range(args.runs):
        adds.append(run("add" if i == 0 else "readd", work, str(source)))
        scans.append(run("scan", work, "none"))
        print(f"run {i + 1}: add {adds[-1]['seconds']:.1f} s ({adds[-1]['cpu']:.1f} s CPU), "
              f"scan {scans[-1]['seconds']:.1f} s ({scans[-1]['cpu']:.1f} s CPU); load "
              f"{os.getloadavg()[0]:.1f}")
    add, scan = (statistics.median(r["seconds"] for r in rs) for rs in (adds, scans))
    cpu_add, cpu_scan = (statistics.median(r["cpu"] for r in rs) for rs in (adds, scans))
    print(f"dataset add of {source} ({adds[0]['posts']:,} posts): {add:.1f} s median "
          f"({cpu_add:.1f} s CPU), peak {max(r['peak_mb'] for r in adds):.0f} MB; JSONL scan "
          f"{scan:.1f} s ({cpu_scan:.1f} s CPU): {add / scan:.2f}x ({cpu_add / cpu_scan:.2f}x "
          "in CPU)")
    print(f"load average after: {os.getloadavg()}")
    return print_goals([(f"dataset add ≤ 2x the JSONL scan ({add:.1f} s vs {scan:.1f} s)",
                         add <= 2 * scan)])


if __name__ == "__main__":
    sys.exit(main())
