"""A deletion list's notices survive a crash (issue 15 item 2), under fault injection as in the
trust suite: the real embedded Redis and the real CLI, SIGKILLed after the ingest committed and
before its notices were opened — once the pending IDs were taken into a scan's batch, once its
notice files were written. The ingest stands; nothing is opened twice; the next scan (`notices
scan`, or the next ingest's) opens exactly the notices owed. The same for a real `gatekeeper
serve` SIGKILLed after answering an API ingest, before or during its background scan: the
restarted server opens them. And a notice's download leaves no file when the server is killed."""

from __future__ import annotations

import json
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import WAIT_S, Client, Lab, leftovers

from gatekeeper import faults
from gatekeeper.ledger.store import EmbeddedServer

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

FIRST = 1_500_000_000_000_000_000


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    made = None
    try:
        made = Lab(tmp_path / "lab")
        made.entity("acme")
        made.user("dan", "acme", "data")
        made.user("cora", "acme", "compliance")
        yield made
    finally:
        if made is not None:
            made.gate.client.close()
            made.quiet()
        EmbeddedServer(tmp_path / "lab" / "var").stop()


def test_a_kill_between_the_ingest_and_its_notices_is_recovered_by_the_next_scan(
        lab: Lab) -> None:
    ids = lab.work / "ids.txt"
    ids.write_text("".join(f"{FIRST + i}\n" for i in range(100)))
    run = lab.cli("share", "--as", "dan", "--entity", "acme", "--ids", str(ids), "--out",
                  str(lab.work / "out.txt"), "--purpose", "t", "--json")
    assert run.status == 0, run.stderr

    def ingest(n: int, failpoint: str | None = None) -> object:
        listed = lab.work / f"tweets-{n}.txt"
        listed.write_text(f"{FIRST + n}\n{FIRST + 10**6 + n}\n")
        return lab.cli("deletions", "add", str(listed), "--json", failpoint=failpoint)

    # Killed once the pending IDs were moved into a batch; `notices scan` opens its notice.
    run = ingest(1, "notices.batched:kill")
    assert run.killed  # type: ignore[attr-defined]
    assert FIRST + 1 in lab.gate.deletions.current().posts  # the ingest stands
    assert lab.gate.notices.listing() == []
    run = lab.cli("notices", "scan", "--json")
    assert run.status == 0, run.stderr
    [first] = json.loads(run.stdout)["opened"]
    assert lab.gate.notices.ids(first).posts().tolist() == [FIRST + 1]

    # Killed after its notice file was written; the next ingest's scan opens both owed.
    assert ingest(2, "notices.written:kill").killed  # type: ignore[attr-defined]
    assert [n.id for n in lab.gate.notices.listing()] == [first]
    run = ingest(3)
    assert run.status == 0, run.stderr  # type: ignore[attr-defined]
    [second] = json.loads(run.stdout)["notices"]  # type: ignore[attr-defined]
    notice = lab.gate.notices.get(second)
    assert (notice.recipient, notice.posts) == ("acme", 2)
    assert lab.gate.notices.ids(second).posts().tolist() == [FIRST + 2, FIRST + 3]
    assert sorted(notice.sources) == sorted(str(lab.work / f"tweets-{n}.txt") for n in (2, 3))
    assert json.loads(lab.cli("notices", "scan", "--json").stdout)["opened"] == []
    assert len(lab.gate.notices.listing()) == 2 and lab.gate.notices.pending() == 0


# --- the API: the ingest answers, the server's runner opens the notices (background.py) -----


def _held(directory: Path, point: str) -> bool:
    """Wait until a thread of the server is held at `point` (a `pause` failpoint)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline:
        if list(directory.glob(f"{point}.*.held")):
            return True
        time.sleep(0.02)
    return False


def _opened(lab: Lab, n: int) -> list[str]:
    """The notices, once `n` are open (the runner works while the test waits; not timed)."""
    deadline = time.monotonic() + WAIT_S
    while time.monotonic() < deadline and len(lab.gate.notices.listing()) < n:
        time.sleep(0.05)
    return [notice.id for notice in lab.gate.notices.listing()]


def _api_ingest(lab: Lab, client: Client, token: str, n: int) -> dict[str, object]:
    answer = client.request("POST", "/api/v1/deletions?kind=posts",
                            f"{FIRST + n}\n{FIRST + 10**6 + n}\n".encode(),
                            {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"})
    assert answer.status == 200, answer.text  # old code: held in the request, no answer
    got: dict[str, object] = json.loads(answer.body)
    return got


def _shared(lab: Lab) -> str:
    ids = lab.work / "ids.txt"
    ids.write_text("".join(f"{FIRST + i}\n" for i in range(100)))
    run = lab.cli("share", "--as", "dan", "--entity", "acme", "--ids", str(ids), "--out",
                  str(lab.work / "out.txt"), "--purpose", "t", "--json")
    assert run.status == 0, run.stderr
    return lab.gate.users.create_token("cora", actor="lab", channel="cli")


def test_an_api_ingest_answers_before_its_scan_and_a_racing_cli_scan_opens_nothing_twice(
        lab: Lab) -> None:
    token = _shared(lab)
    held = lab.work / "held"
    held.mkdir()
    server = lab.server()
    try:
        server.setenv({faults.ENV_DIR: str(held)})
        server.failpoint("notices.batched:pause")  # the scan holds the lock and the batch
        answer = _api_ingest(lab, Client(server.port), token, 1)
        assert (answer["new"], answer["notices"], answer["notices_scan"]) == (
            2, [], "background")
        assert _held(held, "notices.batched")  # scanning in the server, after the answer
        assert lab.gate.notices.listing() == [] and FIRST + 1 in lab.gate.deletions.current().posts
        run = lab.cli("notices", "scan", "--json")  # the CLI races the server's runner
        assert run.status == 0, run.stderr
        assert (run.json()["busy"], run.json()["opened"]) == (True, [])
        (held / "notices.batched.go").touch()
        [notice] = _opened(lab, 1)
        assert lab.gate.notices.ids(notice).posts().tolist() == [FIRST + 1]
        # Compliance sees it on the notices page of the server.
        page = Client(server.port)
        page.sign_in("cora")
        assert notice in page.request("GET", "/notices").text
        assert lab.cli("notices", "scan", "--json").json()["opened"] == []
        assert [n.id for n in lab.gate.notices.listing()] == [notice]
        assert lab.gate.notices.pending() == 0
    finally:
        server.stop()


@pytest.mark.parametrize("point", ["notices.background", "notices.batched", "notices.written"])
def test_a_server_killed_after_answering_an_api_ingest_opens_exactly_what_was_owed_at_restart(
        lab: Lab, point: str) -> None:
    token = _shared(lab)
    held = lab.work / "held"
    held.mkdir()
    server = lab.server()
    try:
        server.setenv({faults.ENV_DIR: str(held)})
        server.failpoint(f"{point}:pause")
        answer = _api_ingest(lab, Client(server.port), token, 1)
        assert answer["notices"] == [] and answer["notices_pending"] == 2
        assert _held(held, point)
    finally:
        server.stop()  # SIGKILL between the answer and the notices
    assert server.status == -signal.SIGKILL
    assert lab.gate.notices.listing() == [] and FIRST + 1 in lab.gate.deletions.current().posts
    assert lab.gate.notices.pending() == 2  # queued, or in the batch the scan took
    again = lab.server()  # its start-up sees notices owed and its runner opens them
    try:
        [notice] = _opened(lab, 1)
        assert "opening the deletion notices owed" in again.log.read_text()
    finally:
        again.stop()
    assert lab.gate.notices.ids(notice).posts().tolist() == [FIRST + 1]
    assert lab.gate.notices.pending() == 0
    assert json.loads(lab.cli("notices", "scan", "--json").stdout)["opened"] == []
    assert [n.id for n in lab.gate.notices.listing()] == [notice]


def test_a_server_killed_mid_download_of_a_notice_leaves_no_file(lab: Lab) -> None:
    _shared(lab)
    listed = lab.work / "tweets.txt"
    listed.write_text(f"{FIRST + 7}\n")
    run = lab.cli("deletions", "add", str(listed), "--json")
    assert run.status == 0, run.stderr
    [notice] = json.loads(run.stdout)["notices"]
    held = lab.work / "held"
    held.mkdir()
    server = lab.server()
    try:
        client = Client(server.port)
        client.sign_in("cora")
        server.setenv({faults.ENV_DIR: str(held)})
        server.failpoint("notices.download:pause")  # the file written, nothing sent yet
        conn = client.send("GET", f"/notices/{notice}/files/letter.pdf", b"", {})
        try:
            assert _held(held, "notices.download")
            assert list(lab.tmpdir.iterdir()) == []  # the spool has no name
        finally:
            server.stop()  # SIGKILL mid-download
            conn.close()
    finally:
        server.stop()
    assert list(lab.tmpdir.iterdir()) == [] and leftovers(lab) == []
