"""A CLI share loads only what it uses (issue 14 item 6): no web stack, no export writers, no
signing keys — each command's module is imported when that command runs — and a dehydrate of a
whole dataset neither pyarrow nor numpy, so that it comes near bench/ids.py's 40 MB."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner
from live import build_gate

from gatekeeper.channels.cli import main as cli

ROOT = Path(__file__).resolve().parents[1]
# What a share never uses: the web (Flask and what it brings), the export writers (exports/,
# reportlab, openpyxl, HarfBuzz), the audit checkpoints' Ed25519 keys, the server.
UNUSED = ("flask", "werkzeug", "jinja2", "reportlab", "openpyxl", "uharfbuzz", "exports",
          "cryptography.hazmat", "waitress", "prometheus_client", "flask_login", "flask_wtf")
# `python -m gatekeeper ARGS`, then what it had imported.
PROBE = """
import json, runpy, sys
sys.argv = ["gatekeeper", *sys.argv[1:]]
try:
    runpy.run_module("gatekeeper", run_name="__main__", alter_sys=True)
    code = 0
except SystemExit as exc:
    code = exc.code
print(json.dumps({"code": code, "modules": sorted(sys.modules)}))
"""


def run(store_dir: Path, *args: str) -> tuple[int, set[str], str]:
    proc = subprocess.run(
        [sys.executable, "-c", PROBE, "--config", str(store_dir / "config.toml"), *args],
        capture_output=True, text=True, timeout=120, cwd=store_dir,
        env={**os.environ, "PYTHONPATH": ":".join(
            p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)})
    result = json.loads(proc.stdout.splitlines()[-1])
    return result["code"], set(result["modules"]), proc.stderr


def unused_loaded(modules: set[str]) -> list[str]:
    return sorted(m for m in modules if any(m == u or m.startswith(u + ".") for u in UNUSED))


@pytest.fixture
def shared_store(store_dir: Path) -> Path:
    """The embedded store of `store_dir` with acme, its data-team user dan and kpop."""
    build_gate(store_dir, None, kpop=True, terms="Jane Doe", config='[redis]\ndata_dir = "var"')
    return store_dir


@pytest.mark.parametrize("source", ["dataset", "ids"])
def test_a_cli_share_imports_no_web_export_or_signing_library(shared_store: Path,
                                                               source: str) -> None:
    ids = shared_store / "ids.txt"
    ids.write_text("".join(f"{1460000000000000000 + i}\n" for i in range(100)))
    what = ["--dataset", "kpop"] if source == "dataset" else ["--ids", str(ids)]
    code, modules, err = run(shared_store, "share", "--as", "dan", "--entity", "acme",
                             "--purpose", "test", *what, "--out", str(shared_store / "o.txt"))
    assert code == 0, err
    assert (shared_store / "o.txt").read_text().count("\n") == 100
    assert unused_loaded(modules) == []
    # A whole dataset is read from its ID sidecar (gatekeeper.domain.dehydrate): neither the
    # index's engine nor numpy, its manifest made a block at a time; an ID file's manifest
    # parses the spool with numpy (gatekeeper.domain.manifests, issue 15). zstd either way.
    assert "pyarrow" not in modules
    assert ("numpy" in modules) == (source == "ids")
    assert "msgspec" not in modules  # the JSONL readers' decoder: no JSONL is read
    assert "zstandard" in modules
    assert "gatekeeper.channels.cli.shares" in modules
    assert "gatekeeper.channels.cli.audit" not in modules


def test_a_large_id_file_loads_numpy_for_its_repeats_and_still_no_pyarrow(
        shared_store: Path) -> None:
    """From `EXACT_FROM` IDs on, repeats are found by numpy, imported then and only then; the
    dataset index's pyarrow is never needed for an ID file."""
    from gatekeeper.domain.shares import EXACT_FROM

    ids = shared_store / "ids.txt"
    ids.write_text("".join(f"{1460000000000000000 + i}\n" for i in range(EXACT_FROM)) + "7\n7\n")
    code, modules, err = run(shared_store, "share", "--as", "dan", "--entity", "acme",
                             "--purpose", "test", "--ids", str(ids), "--out",
                             str(shared_store / "o.txt"))
    assert code == 0, err
    assert (shared_store / "o.txt").read_text().count("\n") == EXACT_FROM + 1  # 7 once
    assert "numpy" in modules
    assert "pyarrow" not in modules
    assert unused_loaded(modules) == []


def test_every_command_is_still_listed_and_runs(shared_store: Path) -> None:
    listed = CliRunner().invoke(cli.main, ["--help"])
    assert listed.exit_code == 0
    for name in cli.COMMANDS:
        assert f"  {name} " in listed.output or f"  {name}\n" in listed.output, name
    assert cli.main.commands["audit"].name == "audit"  # looked up by name, as tests do
    code, modules, err = run(shared_store, "audit", "verify")
    assert code == 0, err
    assert "gatekeeper.domain.checkpoints" in modules


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(cli.main, ["sahre"])
    assert result.exit_code == 2
    assert "No such command 'sahre'" in result.output
