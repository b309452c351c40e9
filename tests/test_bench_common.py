"""Benchmarks that can fail (issue 14 item 6): a side's peak memory is its own fresh
interpreter's, whatever the size of the process that started it, and the export benches' sides
import only what their side needs."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture
def common(monkeypatch: pytest.MonkeyPatch) -> object:
    monkeypatch.syspath_prepend(str(BENCH))
    import common as module

    return module


def test_run_fresh_measures_the_childs_own_vmhwm_under_a_200_mb_parent(
        common: object, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "probe_side.py").write_text(
        "def grow(mb):\n"
        "    block = bytearray(int(mb) << 20)\n"
        "    for i in range(0, len(block), 4096):\n"
        "        block[i] = 1\n"
        "    return {'grown_mb': int(mb)}\n")
    monkeypatch.setenv("PYTHONPATH", ":".join(
        p for p in (str(tmp_path), os.environ.get("PYTHONPATH")) if p))
    ballast = bytearray(200 << 20)  # this process: 200 MB more, touched
    for i in range(0, len(ballast), 4096):
        ballast[i] = 1
    run = common.run_fresh  # type: ignore[attr-defined]
    small, big = run("small", "probe_side", "grow", [1], ROOT), \
        run("big", "probe_side", "grow", [64], ROOT)
    del ballast
    # The bare interpreter is ~10-15 MB: far below the 200 MB parent, which it never reports.
    assert small["baseline_mb"] < 60 and small["peak_mb"] < 60, small
    # ... and the work is seen: 64 MB more in the other child.
    assert 60 <= big["peak_mb"] - small["peak_mb"] <= 70, (small, big)


@pytest.mark.parametrize("module", ["exports_xlsx", "exports_pdf"])
def test_an_export_bench_module_imports_no_side_at_its_top(module: str) -> None:
    probe = (f"import json, sys; sys.path[:0] = [{str(ROOT)!r}, {str(BENCH)!r}]; "
             f"import {module}; print(json.dumps(sorted(sys.modules)))")
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          check=True, cwd=ROOT)
    modules = json.loads(done.stdout)
    heavy = [m for m in modules if m.split(".")[0] in (
        "gatekeeper", "exports", "reportlab", "openpyxl", "pandas", "twarc_csv", "redis",
        "uharfbuzz", "bidi", "orjson")]
    assert heavy == []
