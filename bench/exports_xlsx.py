"""Benchmark the XLSX export against twarc-csv, pandas and openpyxl, side by side on the same posts.

One generated dataset (the demo's: fifteen languages, emoji, formula-like text, control
characters, retweets, quotes and replies) is written once as a twarc2 JSONL file (pages with
``includes``, as ``twarc2 search`` writes them). Each side then runs in a fresh Python process
that reads that file and writes its output, measured from the first read to the closed file:

- gatekeeper: `exports.xlsx.write_xlsx` on `iter_posts`, streaming — the public function, so
  whatever columns the export has are the ones measured;
- twarc-csv: what ``twarc2 csv IN OUT`` runs, twarc-csv's ``DataFrameConverter`` (its defaults:
  retweets merged, entities processed, duplicates dropped) and ``CSVConverter`` (batches of 100
  lines) writing CSV — the tool analysts compare our spreadsheet with;
- openpyxl write-only: ``Workbook(write_only=True)`` and ``ws.append(row)``, as usually written;
- pandas: ``pandas.DataFrame(rows).to_excel(engine="openpyxl")``;
- openpyxl default: ``Workbook()``, ``ws.append(row)``, ``wb.save``.

The three openpyxl/pandas sides read with `iter_posts` and flatten with `exports.columns.row`,
as we do, and need the XML-illegal characters taken out first (openpyxl refuses or writes a
broken file otherwise): that costs them one regex per string, which they are charged for.
twarc-csv reads and flattens the file its own way (``json.loads``, ``json_normalize``).

Every side runs ``--rounds`` times, the rounds alternating the order of the sides (forward,
then backward), so no side always follows the same neighbour on this shared machine; the table
shows medians and each run is listed below it. Peak memory is each fresh interpreter's own
VmHWM (imports included), read in /proc/self/status — not ``ru_maxrss``, which on Linux a child
inherits from the process that started it. Each side's interpreter is started with ``python -c``
and imports only what its side needs (this module imports nothing of any side at its top); the
bare interpreter's own VmHWM is shown too. Prints the table and the goals; exits 1 if a goal
fails (or a side fails to run).

Run from the repository root (``pip install -e '.[bench]'``: pandas, lxml, twarc-csv)::

    python bench/exports_xlsx.py
"""

from __future__ import annotations

import argparse
import gzip
import os
import platform
import re
import shlex
import shutil
import sys
import tempfile
import time
import warnings
import xml.etree.ElementTree as ET
import zipfile
from datetime import datetime
from importlib.metadata import version
from itertools import islice
from pathlib import Path
from statistics import median
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # the repository's packages, wherever Python was started from
    sys.path.insert(0, str(ROOT))

# Nothing of the sides here: a side's fresh interpreter imports this module, and what it
# imports at its top would count in every side's peak.
from common import machine_line, print_goals, print_table, run_fresh  # noqa: E402

SIDES = {
    "gatekeeper": "gatekeeper write_xlsx",
    "twarc_csv": "twarc2 csv (CSV)",
    "write_only": "openpyxl write-only",
    "pandas": "pandas to_excel",
    "default": "openpyxl default",
}
ILLEGAL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ud800-\udfff\ufffe\uffff]")
ABOUT = {"recipient": "bench", "dataset": "demo", "filters": "none"}
SHEET = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"


def clean_rows(path: Path, limit: int) -> Any:
    """Rows as the competitors can take them: XML-illegal characters replaced."""
    from exports.columns import row
    from gatekeeper.domain.formats import iter_posts

    for post in islice(iter_posts(path), limit):
        yield [ILLEGAL.sub("\ufffd", v) if type(v) is str else v for v in row(post)]


def run_side(side: str, data: Path, out: Path, limit: int) -> dict[str, Any]:
    """One side, in this (fresh) process: time from first read to closed file (run_fresh adds
    the process's own peak RSS)."""
    from exports.columns import COLUMNS

    columns = len(COLUMNS)
    if side == "gatekeeper":
        from exports.xlsx import write_xlsx
        from gatekeeper.domain.formats import iter_posts

        t0 = time.perf_counter()
        with open(out, "wb") as f:
            rows = write_xlsx(islice(iter_posts(data), limit), f, about=ABOUT)
        columns = 0  # counted from the file's header row by the parent
    elif side == "twarc_csv":
        # twarc-csv 0.7.2 calls DataFrame.applymap, deprecated since pandas 2.1: a warning per
        # batch on stderr, not a failure.
        warnings.simplefilter("ignore", FutureWarning)
        from twarc_csv import CSVConverter, DataFrameConverter

        t0 = time.perf_counter()  # the whole file: it holds exactly the posts of the big run
        converter = DataFrameConverter(input_data_type="tweets")  # `twarc2 csv`'s defaults
        with open(data, encoding="utf8") as infile, open(out, "w", encoding="utf8") as outfile:
            CSVConverter(infile, outfile, converter=converter, batch_size=100,
                         hide_progress=True).process()
        rows, columns = converter.counts["rows"], converter.counts["output_columns"]
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
    return {"seconds": seconds, "rows": rows, "columns": columns}


def child(side: str, data: str, out: str, limit: str) -> dict[str, Any]:
    """What a side's fresh interpreter runs (`common.run_fresh`)."""
    return run_side(side, Path(data), Path(out), int(limit))


def spawn(side: str, data: Path, out: Path, limit: int) -> dict[str, Any]:
    result = run_fresh(side, "exports_xlsx", "child", [side, data, out, limit], ROOT)
    result["size_mb"] = out.stat().st_size / 1e6
    return result


def posts_sheet_rows(path: Path) -> tuple[int, int]:
    """Rows of the Posts sheet (the first tab), parsed as XML (a well-formedness check too), and
    the cells of its header row."""
    rows = header = 0
    with zipfile.ZipFile(path) as z, z.open("xl/worksheets/sheet1.xml") as f:
        for _, el in ET.iterparse(f):
            if el.tag == f"{SHEET}row":
                rows += 1
                if rows == 1:
                    header = sum(1 for c in el if c.tag == f"{SHEET}c")
                el.clear()
    return rows, header


def read_only_seconds(data: Path, limit: int) -> float:
    """Reading and flattening alone: the floor every side stands on."""
    from exports.columns import row
    from gatekeeper.domain.formats import iter_posts

    t0 = time.perf_counter()
    for post in islice(iter_posts(data), limit):
        row(post)
    return time.perf_counter() - t0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=50_000, help="posts in the export")
    parser.add_argument("--small", type=int, default=5_000,
                        help="a second, smaller gatekeeper run: memory must not grow with rows")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every side, in alternating order; the table shows medians")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()

    from gatekeeper.domain.demo import write_demo_dataset

    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started, load_before = time.perf_counter(), os.getloadavg()[0]
    runs: dict[str, list[dict[str, Any]]] = {side: [] for side in [*SIDES, "small"]}
    with tempfile.TemporaryDirectory(prefix="gk-bench-xlsx-") as tmp:
        packed, data = Path(tmp) / "posts.jsonl.gz", Path(tmp) / "posts.jsonl"
        write_demo_dataset(packed, posts=args.posts, seed=args.seed, anchor=datetime(2025, 1, 1))
        # Plain JSONL, as twarc2 writes it and as `twarc2 csv` reads it; every side reads it.
        with gzip.open(packed) as src, open(data, "wb") as dst:
            shutil.copyfileobj(src, dst)
        data_mb = data.stat().st_size / 1e6
        floor = read_only_seconds(data, args.posts)  # also warms the page cache for every side
        for r in range(args.rounds):
            order = [*SIDES, "small"] if r % 2 == 0 else ["small", *reversed(SIDES)]
            for side in order:
                if side == "small":
                    got = spawn("gatekeeper", data, Path(tmp) / "small.xlsx", args.small)
                else:
                    suffix = ".csv" if side == "twarc_csv" else ".xlsx"
                    got = spawn(side, data, Path(tmp) / f"{side}{suffix}", args.posts)
                runs[side].append(got)
                print(f"round {r + 1}/{args.rounds}: {side:<10} {got['seconds']:6.2f} s "
                      f"{got['peak_mb']:5.0f} MB", file=sys.stderr, flush=True)
        counted, header = posts_sheet_rows(Path(tmp) / "gatekeeper.xlsx")
        counted -= 1  # the header row
    runs["gatekeeper"][-1]["columns"] = header

    import openpyxl
    import pandas

    try:  # openpyxl writes through lxml when it is installed: the competitors' best case
        import lxml

        lxml_version = lxml.__version__
    except ImportError:
        lxml_version = "not installed"

    med = {side: {k: median(run[k] for run in got)
                  for k in ("seconds", "peak_mb", "size_mb", "baseline_mb")}
           for side, got in runs.items()}
    last = {side: got[-1] for side, got in runs.items()}
    pd_s, tw_s = med["pandas"]["seconds"], med["twarc_csv"]["seconds"]
    head = ("metric (median of runs)", *SIDES.values())
    rows = [
        ("wall time (s)", *(f"{med[s]['seconds']:.2f}" for s in SIDES)),
        ("time vs pandas to_excel", *(f"{med[s]['seconds'] / pd_s:.2f}x" for s in SIDES)),
        ("time vs twarc2 csv", *(f"{med[s]['seconds'] / tw_s:.2f}x" for s in SIDES)),
        ("peak RSS, own VmHWM (MB)", *(f"{med[s]['peak_mb']:.0f}" for s in SIDES)),
        ("  of which the bare interpreter", *(f"{med[s]['baseline_mb']:.0f}" for s in SIDES)),
        ("file size (MB)", *(f"{med[s]['size_mb']:.1f}" for s in SIDES)),
        ("rows written", *(f"{last[s]['rows']:,}" for s in SIDES)),
        ("columns", *(f"{last[s]['columns']}" for s in SIDES)),
    ]
    print(f"export of {args.posts:,} generated posts ({data_mb:.0f} MB of twarc2 JSONL pages) "
          f"to XLSX, and to CSV by twarc-csv; each side in a fresh interpreter, "
          f"{args.rounds} rounds in alternating order")
    print(f"command: {command}")
    print(f"{machine_line()}; load average {load_before:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after (other work shares the cores)")
    print(f"software: Python {platform.python_version()}, openpyxl {openpyxl.__version__}, "
          f"lxml {lxml_version}, pandas {pandas.__version__}, twarc-csv {version('twarc-csv')}")
    print()
    print_table(head, rows)
    for side, label in SIDES.items():
        print(f"  runs of {label}: " + ", ".join(
            f"{run['seconds']:.2f} s / {run['peak_mb']:.0f} MB" for run in runs[side]))
    print(f"openpyxl, pandas and gatekeeper read the JSONL with iter_posts and flatten with "
          f"exports.columns.row: {floor:.2f} s of each figure (measured alone, in the parent)")
    small = med["small"]
    print(f"gatekeeper at {args.small:,} posts: {small['seconds']:.2f} s, peak RSS "
          f"{small['peak_mb']:.0f} MB; its {args.posts:,}-post Posts sheet parses as XML "
          f"with {counted:,} data rows and {header} columns")

    ours = med["gatekeeper"]
    ours_peak = max(run["peak_mb"] for run in runs["gatekeeper"])
    short = [SIDES[s] for s in SIDES if any(run["rows"] != args.posts for run in runs[s])]
    goals = [
        (f"time <= 1/3 of pandas to_excel ({ours['seconds']:.2f} s vs {pd_s:.2f} s: "
         f"1/{pd_s / ours['seconds']:.1f})", ours["seconds"] * 3 <= pd_s),
        (f"peak RSS <= 80 MB in every run ({ours_peak:.0f} MB at most)", ours_peak <= 80),
        (f"memory flat: peak RSS at {args.posts:,} posts within 10 MB of {args.small:,} posts "
         f"({ours['peak_mb']:.0f} vs {small['peak_mb']:.0f} MB)",
         ours["peak_mb"] - small["peak_mb"] <= 10),
        (f"every post written and readable ({counted:,} of {args.posts:,})",
         counted == last["gatekeeper"]["rows"] == args.posts),
        ("every side wrote every post, once, in every run (same work compared)"
         + (f"; short: {', '.join(short)}" if short else ""), not short),
    ]
    code = print_goals(goals)
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return code


if __name__ == "__main__":
    sys.exit(main())
