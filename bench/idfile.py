"""Benchmark an ID file of 1,500,000 IDs: validated and written, as `gatekeeper share --ids` does.

Ours is what a share does with an uploaded list or an ID file, minus the ledger: validate it
(`select_id_file`: blocks of whole lines checked at once, `gatekeeper.domain.idlists`), drop
R9 IDs and repeats, spool it, then `write_file` copies the first N IDs into a temporary file
beside --out, fsyncs it and renames it into place. Beside it, the same with the per-line rules
this replaced (`select_ids` over the line reader: strip, regex and int per line, ~1.4 µs an ID),
and validation alone both ways, per ID — the part an API upload pays too (bench/ids.py times
the upload end to end). For reference, the obvious writers of a list already in memory:
`write` per line and one ``"\\n".join``, each fsynced.

Every side runs ``--rounds`` times (3), the order reversed every other round, in this process
(the figures are times; memory is bench/ids.py's); the table shows medians and lists every run.
Goals: validation + write ≤ 1 s for 1.5M IDs; validation ≤ 0.15 µs an ID; the same bytes as the
per-line rules. Exits 1 if a goal is missed.

Run from the repository root::

    python bench/idfile.py
"""

from __future__ import annotations

import argparse
import os
import platform
import shlex
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, whatever is installed
    sys.path.insert(0, str(ROOT))

from common import machine_line, print_goals, print_table  # noqa: E402

from gatekeeper.domain import idlists, lines  # noqa: E402
from gatekeeper.domain.shares import Selection, select_id_file, select_ids, write_file  # noqa: E402
from gatekeeper.rules.r9 import Deleted  # noqa: E402

FIRST = 1_460_000_000_000_000_000  # 19-digit snowflakes, as real Post IDs are
NOTHING = Deleted(0, frozenset(), frozenset())
TOTAL_S, PER_ID_US = 1.0, 0.15


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.ids
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    load_before = os.getloadavg()
    ids = [str(FIRST + i * 7919) for i in range(n)]
    with tempfile.TemporaryDirectory(prefix="gk-bench-idfile-") as tmp:
        work = Path(tmp)
        src = work / "ids.txt"
        src.write_text("\n".join(ids) + "\n")

        def ours() -> None:  # what `gatekeeper share --ids` does, the ledger aside
            with select_id_file(src, "posts", NOTHING) as sel:
                write_file(work / "ours.txt", sel, sel.count)

        def per_line() -> None:  # the same with the per-line rules, as before issue 14
            with open(src, "rb") as fh, select_ids(lines.read(fh.read, str(src)), str(src),
                                                   "posts", NOTHING) as sel:
                write_file(work / "per-line.txt", sel, sel.count)

        def validate_blocks() -> None:  # checks, spool and digest; no repeats pass
            with open(src, "rb") as fh, Selection(str(src)) as sel:
                check = idlists.Checker(sel, str(src), frozenset())
                for number, block in idlists.blocks(iter(lambda: fh.read(lines.CHUNK), b""),
                                                    str(src)):
                    check.block(number, block)
                check.finish()

        def validate_lines() -> None:
            with open(src, "rb") as fh, Selection(str(src)) as sel:
                check = idlists.Checker(sel, str(src), frozenset())
                for number, raw in enumerate(lines.read(fh.read, str(src)), 1):
                    check.line(number, raw)
                check.finish()

        def write_lines() -> None:
            with open(work / "write.txt", "w") as out:
                for i in ids:
                    out.write(i + "\n")
                out.flush()
                os.fsync(out.fileno())

        def joined() -> None:
            with open(work / "joined.txt", "w") as out:
                out.write("\n".join(ids) + "\n")
                out.flush()
                os.fsync(out.fileno())

        sides: dict[str, tuple[str, Callable[[], None]]] = {
            "ours": ("gatekeeper: select_id_file (blocks) + write_file", ours),
            "per_line": ("the per-line rules (before) + write_file", per_line),
            "v_blocks": ("validation alone, blocks (check, spool, digest)", validate_blocks),
            "v_lines": ("validation alone, per line (before)", validate_lines),
            "write_lines": ("IDs in memory: write() per line, fsync", write_lines),
            "joined": ("IDs in memory: one '\\n'.join, fsync", joined),
        }
        runs: dict[str, list[float]] = {k: [] for k in sides}
        for r in range(args.rounds):
            order = list(sides) if r % 2 == 0 else list(reversed(sides))
            for key in order:
                t0 = time.perf_counter()
                sides[key][1]()
                runs[key].append(time.perf_counter() - t0)
        same = (work / "ours.txt").read_bytes() == (work / "per-line.txt").read_bytes() \
            == src.read_bytes()
    load_after = os.getloadavg()

    med = {k: median(v) for k, v in runs.items()}
    rows = [(label, f"{med[k]:.3f}", f"{med[k] / n * 1e6:.3f}",
             ", ".join(f"{s:.3f}" for s in runs[k])) for k, (label, _) in sides.items()]
    print(f"an ID file of {n:,} IDs (19 digits, {n * 20 / 1e6:.0f} MB): validated and written")
    print(f"command: {command}")
    print(f"{machine_line()}, Python {platform.python_version()}")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other work "
          f"shares the cores); {args.rounds} rounds, order reversed every other round")
    print()
    print_table(("side", "median s", "µs per ID", "runs (s)"), rows)
    ours_s, per_id = med["ours"], med["v_blocks"] / n * 1e6
    print(f"validation, blocks vs per line: {med['v_lines'] / med['v_blocks']:.1f}x faster; "
          f"the rest of ours is the repeats pass (Selection.distinct) and the write")
    return print_goals([
        (f"{n:,}-ID file validated and written in <= {TOTAL_S:g} s ({ours_s:.3f} s)",
         ours_s <= TOTAL_S),
        (f"validation <= {PER_ID_US} µs per ID ({per_id:.3f} µs; per line "
         f"{med['v_lines'] / n * 1e6:.3f} µs)", per_id <= PER_ID_US),
        ("the file is byte-identical to the per-line rules' and to the input", same),
    ])


if __name__ == "__main__":
    sys.exit(main())
