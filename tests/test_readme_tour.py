"""README.md's tour runs as written (issue 13 item 8), in the spirit of datasette's doc tests.

Every command of every indented block between `<!-- tour:start` and `<!-- tour:end -->` is run
in order by bash, from a scratch directory beside a `shared` directory (a link to the
repository's `../shared`, so `../shared/samples/...` resolves as it does for a reader), with the
real `gatekeeper` CLI in a subprocess on this checkout's code and a real embedded store;
`gatekeeper serve &` starts a real server that the tour's `curl` calls reach.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import free_port

from gatekeeper import config as config_mod
from gatekeeper.ledger.store import EmbeddedServer

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"

# The ONE place the test departs from the text, each with its reason (nothing is skipped):
# - `gatekeeper serve &` gets `--port` of a free port, and the `curl` calls that port instead of
#   the README's 8000, which another test run on this machine may hold;
# - `curl` gets `--fail --silent --show-error`, so an HTTP error fails the command (plain curl
#   exits 0 on a 4xx);
# - `$TOKEN` is what the tour's first `gatekeeper token create dana` printed, as the README says.
SERVE = "gatekeeper serve &"
README_URL = "http://127.0.0.1:8000"

# A few outputs that matter: (a piece of the command, what its stdout must contain).
EXPECTED_OUTPUT = [
    ("share --as dana --entity acme --ids ids.txt", "granted 100 of 100 Post IDs to acme"),
    ("--lang ko", "granted 26 of 26 Post IDs to acme"),
    ("--kind users", "User IDs to acme"),
    ("deletions add ../shared/samples/tweets_compliance.jsonl", "2 newly hidden"),
    ("deletions lift 1170025343920402432", "1170025343920402432"),
    # The deletion's notice, from ingest to acknowledgement: one recipient, one delivery.
    ("deletions add deleted.txt", "1 deletion notice opened"),
    ("notices show", "to entity acme"),
    ("notices show", "to-acme.txt"),
    ("notices export", "notice-acme/notice-"),
    ("trace \"$(jq", "to-acme.txt"),
    ("notices ack", "acknowledged: confirmed by Acme data office"),
    ("set-parent globex", "pools its Post IDs with acme"),
    ("token revoke", "revoked"),
]


def tour_commands(readme: str) -> list[str]:
    """The tour's shell commands in order: indented blocks, `\\` continuations joined."""
    start = readme.index("<!-- tour:start")
    end = readme.index("<!-- tour:end -->", start)
    commands: list[str] = []
    pending = ""
    for line in readme[start:end].splitlines():
        if not line.startswith("    ") or not line.strip():
            assert not pending, f"a continued command ends the block: {pending!r}"
            continue
        text = line.strip()
        if text.endswith("\\"):
            pending += text[:-1].rstrip() + " "
            continue
        commands.append(pending + text)
        pending = ""
    return commands


def code(command: str) -> str:
    """The command without its trailing `# comment` (none of the tour's has `#` otherwise)."""
    return command.split("  #")[0].strip()


def as_run(command: str, port: int) -> str:
    """The command as the test runs it: only the departures listed at SERVE above."""
    if command.startswith("curl "):
        command = "curl --fail --silent --show-error " + command[len("curl "):]
        return command.replace(README_URL, f"http://127.0.0.1:{port}")
    return command


def start_serve(cwd: Path, env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    """`gatekeeper serve` in the background, as `&` leaves it, once it answers /healthz."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(["gatekeeper", "serve", "--port", str(port)], cwd=cwd, env=env,
                                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 120  # a bound on a busy machine, not an assertion on speed
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"gatekeeper serve exited {proc.returncode}: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            time.sleep(0.1)
    proc.kill()
    pytest.fail(f"gatekeeper serve did not listen: {log.read_text()}")


@pytest.fixture
def scratch(tmp_path: Path) -> Iterator[Path]:
    """An empty `tour` directory beside `shared`; its embedded store is stopped afterwards."""
    if not (SHARED / "samples").is_dir():
        pytest.fail(f"the README's sample files are missing: {SHARED / 'samples'}")
    missing = [tool for tool in ("bash", "jq", "curl") if shutil.which(tool) is None]
    if missing:
        pytest.fail(f"the tour uses {', '.join(missing)}: `.ci/run` installs them")
    (tmp_path / "shared").symlink_to(SHARED)
    tour = tmp_path / "tour"
    tour.mkdir()
    yield tour
    EmbeddedServer(tour / "store").stop()


def tour_env(tmp_path: Path) -> dict[str, str]:
    """This checkout's code, this interpreter, no config or store from the caller's environment."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "gatekeeper"
    script.write_text(f'#!/bin/sh\nexec "{sys.executable}" -m gatekeeper "$@"\n')
    script.chmod(0o755)
    env = {k: v for k, v in os.environ.items()
           if k not in (config_mod.ENV_CONFIG, config_mod.ENV_REDIS_URL)}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env.get('PATH', '')}"
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO), env.get("PYTHONPATH")) if p)
    # `gatekeeper init` and config discovery must not see the caller's own files
    env["XDG_CONFIG_HOME"] = str(tmp_path / "xdg-config")
    env["XDG_DATA_HOME"] = str(tmp_path / "xdg-data")
    return env


def test_tour_extraction_finds_every_block_in_order() -> None:
    commands = tour_commands((REPO / "README.md").read_text(encoding="utf-8"))
    assert commands[0] == "gatekeeper init --path config.toml --data-dir store"
    assert commands[1].startswith("jq -r '.data[].id' ../shared/samples/kpop.jsonl > ids.txt")
    joined = next(c for c in commands if "--idempotency-key" in c)
    assert "--ids ids.txt --out to-acme.txt --purpose" in joined  # the `\` continuation
    assert commands[-1].startswith("gatekeeper token revoke")
    assert all(c.startswith(("gatekeeper ", "jq ", "echo ", "curl ")) for c in commands), commands
    bare = [code(c) for c in commands]
    assert [c for c in bare if c.startswith("gatekeeper serve")] == [SERVE]
    curls = [c for c in bare if c.startswith("curl ")]
    assert len(curls) == 2 and all(README_URL in c and "$TOKEN" in c for c in curls)
    assert bare.index("gatekeeper token create dana") < bare.index(SERVE) < bare.index(curls[0])


def test_every_tour_command_runs_as_written_in_a_scratch_directory(
        scratch: Path, tmp_path: Path) -> None:
    env = tour_env(tmp_path)
    commands = tour_commands((REPO / "README.md").read_text(encoding="utf-8"))
    port = free_port()
    server: subprocess.Popen[bytes] | None = None
    outputs: dict[str, str] = {}
    raw: dict[str, bytes] = {}
    try:
        for command in commands:
            if code(command).startswith("gatekeeper serve"):
                assert code(command) == SERVE, command  # any other form would block here
                server = start_serve(scratch, env, port, tmp_path / "serve.log")
                continue
            done = subprocess.run(["bash", "-o", "pipefail", "-c", as_run(command, port)],
                                  cwd=scratch, env=env, stdin=subprocess.DEVNULL,
                                  capture_output=True, timeout=300)
            out = done.stdout.decode(errors="replace")
            assert done.returncode == 0, (
                f"`{command}` exited {done.returncode}\n{out}\n{done.stderr.decode()}")
            if code(command) == "gatekeeper token create dana" and "TOKEN" not in env:
                env["TOKEN"] = out.strip()
            outputs[command] = out
            raw[command] = done.stdout
    finally:
        if server is not None:
            server.terminate()
            server.wait(timeout=60)

    for piece, wanted in EXPECTED_OUTPUT:
        matching = [out for command, out in outputs.items() if piece in command]
        assert len(matching) == 1, piece
        assert wanted in matching[0], (piece, matching[0])

    # the files the tour names are there and hold what it says; the API answered them too
    ids = (scratch / "ids.txt").read_text().split()
    assert next(out for c, out in outputs.items() if "@ids.txt" in c).split() == ids
    gz = next(body for c, body in raw.items() if "application/gzip" in c)
    assert len(gzip.decompress(gz).decode().split()) == 26  # the same 26 as `--lang ko`
    assert len(ids) == 100 and all(re.fullmatch(r"[1-9]\d{0,18}", i) for i in ids)
    assert (scratch / "to-acme.txt").read_text().split() == ids
    assert len((scratch / "ko.txt").read_text().split()) == 26
    audit_csv = (scratch / "audit-november.csv").read_text(encoding="utf-8-sig").splitlines()
    assert "outcome" in audit_csv[0] and len(audit_csv) > 10
    assert (scratch / "report-2026-10.pdf").read_bytes().startswith(b"%PDF")
    assert not (scratch / "store" / "datasets" / "kpop.jsonl").exists()  # `dataset remove`

    def cli_json(*args: str) -> object:
        done = subprocess.run(["gatekeeper", *args, "--json"], cwd=scratch, env=env,
                              stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              check=True, timeout=300)
        return json.loads(done.stdout)

    pool = cli_json("quota", "entity", "globex")
    assert isinstance(pool, dict) and pool["pool"]["name"] == "acme"
    assert pool["pool"]["limit"] == 3_000_000  # R4 permit on the pool's parent
    tokens = cli_json("token", "list")
    assert isinstance(tokens, list) and len(tokens) == 1  # two created, one revoked
