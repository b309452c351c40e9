"""What every benchmark prints the same way: the machine, a side-by-side table, the goals."""

from __future__ import annotations

import json
import os
import platform
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def cpu_model() -> str:
    """The CPU's model name, as /proc/cpuinfo gives it."""
    try:
        lines = Path("/proc/cpuinfo").read_text().splitlines()
    except OSError:
        lines = []
    return next((line.split(":", 1)[1].strip() for line in lines
                 if line.startswith("model name")), platform.processor())


def machine_line() -> str:
    """One line: cores, CPU and kernel."""
    return f"machine: nproc={os.cpu_count()}, CPU {cpu_model()}, Linux {platform.release()}"


def print_table(head: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    """A table, first column left-aligned and the others right-aligned, ruled above and below."""
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)

    def show(cells: Sequence[str]) -> None:
        print("  ".join(c.ljust(w) if i == 0 else c.rjust(w)
                        for i, (c, w) in enumerate(zip(cells, widths, strict=True))))

    show(head)
    print(line)
    for r in rows:
        show(r)
    print(line)


def print_goals(goals: Sequence[tuple[str, bool]]) -> int:
    """PASS/FAIL per goal; the exit code: 0 when every goal holds."""
    print()
    for text, ok in goals:
        print(f"{'PASS' if ok else 'FAIL'}  {text}")
    return 0 if all(ok for _, ok in goals) else 1


def own_peak_mb() -> float:
    """This process's own peak RSS in MB: VmHWM of its address space.

    Not ``ru_maxrss``: on Linux that survives ``execve``, so a child started by a process that
    had grown large reports the parent's size at fork time, whatever it used itself."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024  # kB
    raise OSError("no VmHWM in /proc/self/status")


# A fresh interpreter started with `python -c`: it notes its own VmHWM before importing
# anything, imports one bench module (whose top level imports nothing heavy) and calls one of its
# functions, then reports the function's figures with its own VmHWM at the end. So a side's peak
# is that side's: its interpreter, its imports and its work — never the parent's size (a parent
# at 211 MB made a 10.9 MB child report 211 MB through ru_maxrss, which Linux keeps across
# execve), nor what the bench's own module would have imported for the other sides.
CHILD = """
import json, sys
def hwm():
    for line in open("/proc/self/status"):
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
baseline = hwm()
root, bench, module, function, *args = sys.argv[1:]
sys.path[:0] = [root, bench]
result = getattr(__import__(module), function)(*args)
result.update(baseline_mb=baseline, peak_mb=hwm())
print(json.dumps(result))
"""


def run_fresh(label: str, module: str, function: str, args: Sequence[object],
              root: Path) -> dict:
    """`module.function(*args)` (args as strings) in a fresh interpreter; its result dict, with
    ``peak_mb``, the child's own VmHWM at the end, and ``baseline_mb``, the bare interpreter's."""
    done = subprocess.run([sys.executable, "-c", CHILD, str(root), str(Path(__file__).parent),
                           module, function, *map(str, args)],
                          capture_output=True, text=True, check=False, cwd=root)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def run_child(label: str, args: Sequence[str], cwd: Path) -> dict:
    """Run this Python on `args` in a fresh process; its last stdout line, read as JSON.

    Each side of a comparison runs alone, so its peak memory is its own."""
    done = subprocess.run([sys.executable, *args], capture_output=True, text=True, check=False,
                          cwd=cwd)
    if done.returncode != 0:
        raise SystemExit(f"{label} failed:\n{done.stderr}")
    return json.loads(done.stdout.strip().splitlines()[-1])
