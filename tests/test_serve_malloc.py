"""`gatekeeper serve` tunes glibc's malloc so that the server's memory stays flat across large
uploads (bench/ids.py: 99 → 237 MB over 18 uploads before; 99 MB after each now). Checked in a
fresh interpreter through glibc's own account of its mapped blocks (mallinfo2)."""

from __future__ import annotations

import json
import platform
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from gatekeeper.channels.cli import serve

ROOT = Path(__file__).resolve().parents[1]
glibc = pytest.mark.skipif(platform.libc_ver()[0] != "glibc", reason="glibc's malloc only")

PROBE = textwrap.dedent("""
    import ctypes, json, sys
    from gatekeeper.channels.cli.serve import tune_malloc

    class Info(ctypes.Structure):  # struct mallinfo2 (glibc 2.33+)
        _fields_ = [(n, ctypes.c_size_t) for n in ("arena", "ordblks", "smblks", "hblks",
                    "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]

    libc = ctypes.CDLL(None)
    libc.mallinfo2.restype = Info
    done = tune_malloc(json.loads(sys.argv[2])) if sys.argv[1] == "tuned" else {}
    big = bytes(8 << 20)  # freed: by default glibc's mmap threshold rises to 8 MB
    del big
    held = bytes(2 << 20)
    print(json.dumps({"done": done, "mapped": libc.mallinfo2().hblkhd}))
""")


def probe(side: str, environ: dict[str, str] | None = None) -> dict[str, object]:
    """In a fresh interpreter: tune (or not), free 8 MB, hold 2 MB; what glibc has mapped."""
    out = subprocess.run([sys.executable, "-c", PROBE, side, json.dumps(environ or {})],
                         cwd=ROOT, check=True,
                         capture_output=True, text=True, env={"PYTHONPATH": str(ROOT)})
    got: dict[str, object] = json.loads(out.stdout)
    return got


@glibc
def test_after_a_large_block_is_freed_the_next_megabytes_are_still_mapped_and_given_back() -> None:
    default, tuned = probe("default"), probe("tuned")
    assert tuned["done"] == {"MALLOC_MMAP_THRESHOLD_": serve.MMAP_THRESHOLD,
                             "MALLOC_ARENA_MAX": serve.ARENAS}
    assert int(tuned["mapped"]) >= 2 << 20  # type: ignore[call-overload]  # its own mapping
    assert int(default["mapped"]) < 2 << 20  # type: ignore[call-overload]  # kept in the heap


@glibc
def test_a_malloc_setting_in_the_environment_is_left_to_glibc() -> None:
    both = {"MALLOC_ARENA_MAX": "4", "MALLOC_MMAP_THRESHOLD_": "65536"}
    assert probe("tuned", both)["done"] == {}
    assert probe("tuned", {"MALLOC_ARENA_MAX": "4"})["done"] == {
        "MALLOC_MMAP_THRESHOLD_": serve.MMAP_THRESHOLD}
