"""A deletion list's notices survive a crash (issue 15 item 2), under fault injection as in the
trust suite: the real embedded Redis and the real CLI, SIGKILLed after the ingest committed and
before its notices were opened — once the pending IDs were taken into a scan's batch, once its
notice files were written. The ingest stands; nothing is opened twice; the next scan (`notices
scan`, or the next ingest's) opens exactly the notices owed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import Lab

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
