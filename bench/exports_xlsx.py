"""Benchmark the XLSX export against pandas and openpyxl, side by side on the same posts.

One generated dataset (the demo's: fifteen languages, emoji, formula-like text, control
characters) is written once as gzipped twarc2 JSONL. Each side then runs in a fresh Python
process that reads that file with `iter_posts` and writes an XLSX file, so every side pays the
same reading and flattening (`exports.columns.row`) and is measured from start to closed file:

- gatekeeper: `exports.xlsx.write_xlsx`, streaming;
- openpyxl write-only: ``Workbook(write_only=True)`` and ``ws.append(row)``, as usually written;
- pandas: ``pandas.DataFrame(rows).to_excel(engine="openpyxl")``;
- openpyxl default: ``Workbook()``, ``ws.append(row)``, ``wb.save``.

The three others need the XML-illegal characters taken out first (openpyxl refuses or writes a
broken file otherwise): that costs them one regex per string, which they are charged for.
Peak memory is the process's peak RSS (``ru_maxrss``), imports included. Prints one table and
the goals; exits 1 if a goal fails.

Run from the repository root (pandas and lxml: ``pip install -e '.[bench]' pandas lxml``)::

    python bench/exports_xlsx.py
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import resource
import shlex
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
import zipfile
from datetime import datetime
from itertools import islice
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository's packages, wherever Python was started from
    sys.path.insert(0, str(ROOT))

from common import machine_line, print_goals, print_table, run_child  # noqa: E402

from exports.columns import COLUMNS, row  # noqa: E402
from gatekeeper.domain.formats import iter_posts  # noqa: E402

SIDES = {
    "gatekeeper": "gatekeeper write_xlsx",
    "write_only": "openpyxl write-only",
    "pandas": "pandas to_excel",
    "default": "openpyxl default",
}
ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
ABOUT = {"recipient": "bench", "dataset": "demo", "filters": "none"}
SHEET = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def clean_rows(path: Path, limit: int) -> Any:
    """Rows as the competitors can take them: XML-illegal characters replaced."""
    for post in islice(iter_posts(path), limit):
        yield [ILLEGAL.sub("\ufffd", v) if type(v) is str else v for v in row(post)]


def run_side(side: str, data: Path, out: Path, limit: int) -> dict[str, Any]:
    """One side, in this (fresh) process: time from first read to closed file, peak RSS."""
    if side == "gatekeeper":
        from exports.xlsx import write_xlsx

        t0 = time.perf_counter()
        with open(out, "wb") as f:
            rows = write_xlsx(islice(iter_posts(data), limit), f, about=ABOUT)
    elif side in ("write_only", "default"):
        from openpyxl import Workbook

        t0 = time.perf_counter()
        wb = Workbook(write_only=side == "write_only")
        ws = wb.create_sheet("Posts") if side == "write_only" else wb.active
        ws.append(COLUMNS)
        rows = 0
        for values in clean_rows(data, limit):
            ws.append(values)
            rows += 1  # noqa: SIM113 - a generator's rows, counted as they go by
        wb.save(out)
    else:
        import pandas as pd

        t0 = time.perf_counter()
        frame = pd.DataFrame(list(clean_rows(data, limit)), columns=COLUMNS)
        frame.to_excel(out, sheet_name="Posts", index=False, engine="openpyxl")
        rows = len(frame)
    seconds = time.perf_counter() - t0
    return {"seconds": seconds, "rows": rows,
            "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def spawn(side: str, data: Path, out: Path, limit: int) -> dict[str, Any]:
    result = run_child(side, [__file__, "--side", side, "--data", str(data), "--out", str(out),
                              "--posts", str(limit)], ROOT)
    result["size_mb"] = out.stat().st_size / 1e6
    return result


def posts_sheet_rows(path: Path) -> int:
    """Rows of the Posts sheet (the first tab), parsed as XML: a well-formedness check too."""
    rows = 0
    with zipfile.ZipFile(path) as z, z.open("xl/worksheets/sheet1.xml") as f:
        for _, el in ET.iterparse(f):
            if el.tag == f"{SHEET}row":
                rows += 1
                el.clear()
    return rows


def read_only_seconds(data: Path, limit: int) -> float:
    """Reading and flattening alone: the floor every side stands on."""
    t0 = time.perf_counter()
    for post in islice(iter_posts(data), limit):
        row(post)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000, help="posts in the export")
    parser.add_argument("--small", type=int, default=5_000,
                        help="a second, smaller gatekeeper run: memory must not grow with rows")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--side", choices=SIDES, help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.side:  # a child: one side, one line of JSON
        print(json.dumps(run_side(args.side, args.data, args.out, args.posts)))
        return 0

    from gatekeeper.domain.demo import write_demo_dataset

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="gk-bench-xlsx-") as tmp:
        data = Path(tmp) / "posts.jsonl.gz"
        write_demo_dataset(data, posts=args.posts, seed=args.seed, anchor=datetime(2025, 1, 1))
        floor = read_only_seconds(data, args.posts)  # also warms the page cache for every side
        res = {side: spawn(side, data, Path(tmp) / f"{side}.xlsx", args.posts) for side in SIDES}
        small = spawn("gatekeeper", data, Path(tmp) / "small.xlsx", args.small)
        counted = posts_sheet_rows(Path(tmp) / "gatekeeper.xlsx") - 1

    import openpyxl
    import pandas

    try:  # openpyxl writes through lxml when it is installed: the competitors' best case
        import lxml

        lxml_version = lxml.__version__
    except ImportError:
        lxml_version = "not installed"

    pd_s = res["pandas"]["seconds"]
    head = ("metric", *SIDES.values())
    rows = [
        ("wall time (s)", *(f"{r['seconds']:.2f}" for r in res.values())),
        ("time vs pandas to_excel", *(f"{r['seconds'] / pd_s:.2f}x" for r in res.values())),
        ("peak RSS (MB)", *(f"{r['peak_mb']:.0f}" for r in res.values())),
        ("file size (MB)", *(f"{r['size_mb']:.1f}" for r in res.values())),
        ("rows written", *(f"{r['rows']:,}" for r in res.values())),
    ]
    print(f"XLSX export of {args.posts:,} generated posts ({len(COLUMNS)} twarc-csv columns), "
          "each side in a fresh process")
    print(f"command: {command}")
    print(machine_line())
    print(f"software: Python {platform.python_version()}, openpyxl {openpyxl.__version__}, "
          f"lxml {lxml_version}, pandas {pandas.__version__}")
    print()
    print_table(head, rows)
    print(f"every side reads the same gzipped JSONL and flattens with exports.columns.row: "
          f"{floor:.2f} s of each figure (measured alone, in the parent)")
    print(f"gatekeeper at {args.small:,} posts: {small['seconds']:.2f} s, peak RSS "
          f"{small['peak_mb']:.0f} MB; its {args.posts:,}-post Posts sheet parses as XML "
          f"with {counted:,} data rows")

    ours = res["gatekeeper"]
    goals = [
        (f"time <= 1/3 of pandas to_excel ({ours['seconds']:.2f} s vs {pd_s:.2f} s: "
         f"1/{pd_s / ours['seconds']:.1f})", ours["seconds"] * 3 <= pd_s),
        (f"peak RSS <= 80 MB ({ours['peak_mb']:.0f} MB)", ours["peak_mb"] <= 80),
        (f"memory flat: peak RSS at {args.posts:,} posts within 10 MB of {args.small:,} posts "
         f"({ours['peak_mb']:.0f} vs {small['peak_mb']:.0f} MB)",
         ours["peak_mb"] - small["peak_mb"] <= 10),
        (f"every post written and readable ({counted:,} of {args.posts:,})",
         counted == ours["rows"] == args.posts),
    ]
    code = print_goals(goals)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
