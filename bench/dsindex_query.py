"""The index's side of a preview at a size `bench/datasets.py` cannot reach on a shared machine.

Writes an index of --posts rows directly (the columns `dataset add` writes, filled from numpy:
no JSONL, so no `dataset add` and no JSONL scan to compare with), then counts the five filter
shapes of `bench/datasets.py` on it, each in a fresh interpreter (its own VmHWM), --runs times,
medians. Goal: ≤ 500 MB. Exit 1 when it fails.

    python bench/dsindex_query.py --posts 10000000 --runs 3

With --jsonl PATH, the index is that of a file `bench/datasets.py` generated (its shapes and
dates), built as `dataset add` builds it, at --index PATH (kept there, and reused while it
describes the file, so the 10M-post build is paid once):

    python bench/dsindex_query.py --jsonl /work/big/big10m.jsonl --index /tmp/big.index.parquet
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.common import machine_line, own_peak_mb, print_goals, print_table, run_child  # noqa: E402
from bench.datasets import SHAPES as DATASETS_SHAPES  # noqa: E402

SHAPES = {"none": {}, "lang": {"lang": "ja"},
          "since/until": {"since": "2024-01-02", "until": "2024-01-09"},
          "author": {"author": "user_777"}, "contains": {"contains": "needle"}}


def write(path: Path, posts: int) -> None:
    import numpy as np
    import pyarrow as pa

    from gatekeeper.domain.dsindex import ROWS, SCHEMA, Builder

    ids = SCHEMA.field("ref_ids").type
    langs = pa.array(["en", "en", "en", "ja", "ko", "es", "pt", "de"])
    out = open(path, "wb")  # noqa: SIM115 - closed below
    builder = Builder(out)
    for start in range(0, posts, ROWS):
        n = min(ROWS, posts - start)
        i = np.arange(start, start + n, dtype=np.int64)
        users = (i * 7919) % 50_000 + 1
        cols = {
            "pid": pa.array(1_700_000_000_000_000_000 + i * 7),
            "created": pa.array((1_704_067_200_000 + i * 60_000).astype("datetime64[ms]")
                                ).cast(pa.timestamp("ms", tz="UTC")),
            "created_raw": pa.nulls(n, pa.string()), "lang": langs.take(pa.array(i % 8)),
            "author": pa.array(users),
            "username": pa.array([f"user_{u}" for u in users.tolist()]),
            "text": pa.array(np.where(i % 1000 == 0, "needle post about things",
                                      "some post about things")),
            "rt": pa.nulls(n, pa.int64()), "rt_author": pa.nulls(n, pa.int64()),
            "user": pa.array(users), "offset": pa.array(i * 300),
            "length": pa.array(np.full(n, 299, np.int64)),
            "position": pa.array(np.zeros(n, np.int32)),
            **{name: pa.nulls(n, ids) for name in ("ref_ids", "ref_authors", "ref_rt",
                                                   "ref_rt_authors", "ref_users")}}
        builder.write(cols)
        builder.rows += n
    builder.finish({})
    out.close()


def build(jsonl: Path, index: Path) -> None:
    from gatekeeper.domain import dsindex

    if dsindex.describes(index, dsindex.identity(jsonl)):
        print(f"index of {jsonl}: {index} (already built)")
        return
    started = time.perf_counter()
    dsindex.build(jsonl, index, 1 << 26)
    print(f"index of {jsonl} built in {time.perf_counter() - started:.1f} s")


def child(path: Path, shape: str) -> dict:
    import pyarrow.parquet as pq

    from bench.datasets import warm_up
    from gatekeeper.domain import dsquery
    from gatekeeper.domain.filters import Filters
    from gatekeeper.rules.r9 import Deleted

    shapes = DATASETS_SHAPES if shape.startswith("jsonl:") else SHAPES
    shape = shape.removeprefix("jsonl:")
    warm_up(Filters.parse(shapes[shape]))  # what a running server has done already
    start, cpu = time.perf_counter(), time.process_time()
    pf = pq.ParquetFile(path, read_dictionary=dsquery.DICTIONARY)
    # What a preview asks (`Selection.tally`): counts, no rows kept; no post stored twice.
    got = dsquery.count(pf, Filters.parse(shapes[shape]), Deleted(0, frozenset(), frozenset()),
                        limit=None, referenced=False, with_users=True, repeated=[],
                        rows=False)
    return {"posts": got.posts, "users": len(got.author_keys),
            "seconds": time.perf_counter() - start, "cpu": time.process_time() - cpu,
            "peak_mb": own_peak_mb()}


def pq_rows(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_rows)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--posts", type=int, default=10_000_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", type=Path)
    parser.add_argument("--shape", default="none")
    parser.add_argument("--jsonl", type=Path, help="a file bench/datasets.py generated")
    parser.add_argument("--index", type=Path, help="where its index is kept (with --jsonl)")
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child, args.shape)))
        return 0
    print(machine_line())
    print(f"load average before: {os.getloadavg()}")
    with tempfile.TemporaryDirectory(prefix="bench-dsindex-") as tmp:
        path = args.index or Path(tmp) / "big.index.parquet"
        if args.jsonl:
            build(args.jsonl, path)
        else:
            write(path, args.posts)
        prefix = "jsonl:" if args.jsonl else ""
        print(f"index of {pq_rows(path):,} posts: {path.stat().st_size / 1e6:.0f} MB")
        rows, peaks = [], []
        for shape in SHAPES:
            runs = [run_child(shape, [str(Path(__file__).resolve()), "--child", str(path),
                                      "--shape", prefix + shape], ROOT)
                    for _ in range(args.runs)]
            peaks += [r["peak_mb"] for r in runs]
            rows.append([shape, f"{runs[0]['posts']:,}", f"{runs[0]['users']:,}",
                         f"{statistics.median(r['seconds'] for r in runs):.2f} s",
                         f"{statistics.median(r['cpu'] for r in runs):.2f} s",
                         f"{max(r['peak_mb'] for r in runs):.0f} MB"])
        print_table(["preview", "posts", "users", "wall", "CPU", "peak"], rows)
    print(f"load average after: {os.getloadavg()}")
    return print_goals([(f"memory ≤ 500 MB (max {max(peaks):.0f} MB)", max(peaks) <= 500)])


if __name__ == "__main__":
    sys.exit(main())
