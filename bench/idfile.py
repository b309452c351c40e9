"""Benchmark writing a 1,500,000-ID file: our path against the obvious ways, side by side.

Ours is what `gatekeeper share` does after the ledger granted: the validated IDs already sit in
a spool file (one per line), and `shares.write_file` copies the first N of them into a temporary
file beside --out, fsyncs it and renames it into place. The obvious alternatives write a list
of IDs with `print`/`write` per line or one `"\\n".join`. Goal: the 1.5M-ID file in ≤ 1 s.

Run from the repository root::

    python bench/idfile.py
"""

from __future__ import annotations

import os
import platform
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from gatekeeper.domain.deletions import Deleted
from gatekeeper.domain.shares import select_ids, write_file

N = 1_500_000
FIRST = 1_460_000_000_000_000_000  # 19-digit snowflakes, as real Post IDs are


def best_of(runs: int, fn: Callable[[], None]) -> float:
    times = []
    for _ in range(runs):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> int:
    ids = [str(FIRST + i * 7919) for i in range(N)]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        src = work / "ids.txt"
        src.write_text("\n".join(ids) + "\n")
        nothing = Deleted(0, frozenset(), frozenset())
        with open(src, "rb") as fh:
            selection = select_ids(fh, str(src), "posts", nothing)

        def ours() -> None:
            write_file(work / "ours.txt", selection, N)

        def per_line() -> None:
            with open(work / "per-line.txt", "w") as out:
                for i in ids:
                    out.write(i + "\n")
                out.flush()
                os.fsync(out.fileno())

        def joined() -> None:
            with open(work / "joined.txt", "w") as out:
                out.write("\n".join(ids) + "\n")
                out.flush()
                os.fsync(out.fileno())

        start = time.perf_counter()
        with open(src, "rb") as fh:
            select_ids(fh, str(src), "posts", nothing).close()
        validate = time.perf_counter() - start

        rows = [("gatekeeper write_file (spool copy, fsync, rename)", best_of(3, ours)),
                ("write() per line, fsync", best_of(3, per_line)),
                ("one '\\n'.join, fsync", best_of(3, joined))]
        same = (work / "ours.txt").read_bytes() == (work / "joined.txt").read_bytes()
        selection.close()

    print("writing a 1,500,000-ID file (19-digit IDs, 30 MB)")
    print("command: python bench/idfile.py")
    print(f"machine: nproc={os.cpu_count()}, Python {platform.python_version()}, "
          f"{platform.system()} {platform.release()}")
    print()
    print(f"{'writer':<52} {'seconds (best of 3)':>20}")
    print(f"{'-' * 52} {'-' * 20}")
    for label, seconds in rows:
        print(f"{label:<52} {seconds:>20.3f}")
    print(f"{'(reading + validating the upload first, once)':<52} {validate:>20.3f}")
    print()
    ok_time = rows[0][1] <= 1.0
    print(f"{'PASS' if ok_time else 'FAIL'}  1.5M-ID file written in <= 1 s ({rows[0][1]:.3f} s)")
    print(f"{'PASS' if same else 'FAIL'}  byte-identical to the obvious writer's file")
    return 0 if ok_time and same else 1


if __name__ == "__main__":
    sys.exit(main())
