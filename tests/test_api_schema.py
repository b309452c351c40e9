"""The HTTP API keeps its own contract: schemathesis, every check, against a real server."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from live import build_gate, start_server

from gatekeeper.ledger.store import EmbeddedServer

# Bounded and deterministic (schemathesis' own mode: no random seed, no example database),
# so the run is the same every time and takes seconds, not minutes.
EXAMPLES = 25

# The recipient and the quotas are the ones build_gate makes, so requests reach the ledger
# and are granted (every ID list the run sends fits acme's limit). POST /shares has one rule
# OpenAPI cannot state, between two fields: a filter's `until` must come after its `since`
# (400 otherwise); schemathesis' own advice for a cross-field rule is to allow that
# operation's rejection. Every other check stays as strict as "all checks" makes it.
CONFIG = """
[[operations]]
include-name = "POST /api/v1/shares"
parameters = { "query.entity" = "acme" }
checks.positive_data_acceptance.expected-statuses = [
  "2xx", "3xx", "400", "401", "403", "404", "409", "429", "5xx",
]

[[operations]]
include-name = "GET /api/v1/quota/entities/{name}"
parameters = { "path.name" = "acme" }

[[operations]]
include-name = "GET /api/v1/quota/users/{name}"
parameters = { "path.name" = "dan" }
"""


def test_schemathesis_with_every_check_finds_nothing_against_a_real_server(
        tmp_path: Path) -> None:
    # acme's limit is far above what any run can share, so a grant early in the run never
    # turns a later schema-valid request into a 429 the run would misread.
    gate = build_gate(tmp_path, None, config='[redis]\ndata_dir = "var"\n[limits]\n'
                      "post_ids_per_entity = 1_000_000_000_000", terms="Jane Doe")
    token = gate.users.create_token("dan", actor="t", channel="cli")
    (tmp_path / "schemathesis.toml").write_text(CONFIG)
    proc = start_server(tmp_path)
    try:
        run = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run",
             f"http://127.0.0.1:{proc.port}/api/v1/openapi.json",  # type: ignore[attr-defined]
             "--checks", "all", "-H", f"Authorization: Bearer {token}",
             "--max-examples", str(EXAMPLES),
             "--generation-deterministic",
             "--workers", "1", "--no-color"],
            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    finally:
        proc.terminate()
        proc.wait(10)
        EmbeddedServer(tmp_path / "var").stop()
    assert run.returncode == 0, run.stdout[-6000:] + run.stderr[-2000:]
    summary = run.stdout.strip().splitlines()[-1]
    assert "failure" not in summary and "error" not in summary, run.stdout[-3000:]
