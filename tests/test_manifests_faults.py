"""A delivery with no manifest is impossible (issue 15 item 1), under fault injection as in the
trust suite: the real embedded Redis, the real CLI and a real `gatekeeper serve`, SIGKILLed at
each failpoint of the reserve -> manifest -> deliver -> commit path. Whatever a kill leaves —
an ID file at --out, a committed share, an open reservation later closed as counted — its
manifest is there and holds exactly those IDs; a kill between the manifest and the commit
leaves only a manifest (its reservation is refunded or closed as counted, never delivered
without it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from faultkit import Client, Lab

from gatekeeper.domain.manifests import decode
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer

pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture
def lab(tmp_path: Path) -> Iterator[Lab]:
    """A lab (as test_crash's) with acme, data user dan and analyst ana, 300 posts; its
    servers and store are stopped afterwards."""
    made = None
    try:
        made = Lab(tmp_path / "lab", dataset_posts=300)
        made.entity("acme")
        made.user("dan", "acme", "data")
        made.user("ana", "acme", "analyst")
        yield made
    finally:
        for server in made.servers if made else ():
            server.stop()
        EmbeddedServer(tmp_path / "lab" / "var").stop()

FIRST = 1_500_000_000_000_000_000
# In the order the CLI passes them: its manifest is stored before write_file starts.
CLI_POINTS = ("manifest.written", "share.reserved", "share.writing", "deliver.written",
              "deliver.committed", None)


def records(lab: Lab) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in lab.gate.client.xrange(keys.audit("acme"))]


def manifest_ids(lab: Lab) -> dict[str, list[int]]:
    """Every stored manifest's delivery id -> its IDs (Post IDs, then User IDs)."""
    out = {}
    for name in lab.gate.manifests.listed():
        got = decode(lab.gate.manifests.read_bytes(name))
        out[got.meta["delivery"]] = got.posts.tolist() + got.users.tolist()
    return out


def check_committed(lab: Lab) -> dict[str, str]:
    """Every committed delivery names a manifest whose digest matches; share id -> name."""
    import hashlib

    named = {}
    for r in records(lab):
        if r.get("outcome") in ("delivered", "recounted"):
            assert r.get("manifest"), f"a committed delivery without a manifest: {r}"
            data = lab.gate.manifests.read_bytes(r["manifest"])
            assert hashlib.sha256(data).hexdigest() == r["manifest_sha256"]
            named[r["share_id"]] = r["manifest"]
    return named


def test_a_kill_at_every_cli_failpoint_never_leaves_a_delivery_without_its_manifest(
        lab: Lab) -> None:
    for n, point in enumerate(CLI_POINTS):
        ids = lab.work / f"ids-{n}.txt"
        first = FIRST + n * 1000
        ids.write_text("".join(f"{first + i}\n" for i in range(700)))
        out = lab.work / f"out-{n}.txt"
        run = lab.cli("share", "--as", "dan", "--entity", "acme", "--ids", str(ids), "--out",
                      str(out), "--purpose", "t", "--json",
                      failpoint=f"{point}:kill" if point else None)
        assert run.killed == (point is not None), (point, run.stderr)
        stored = manifest_ids(lab)
        wanted = list(range(first, first + 700))
        mine = [d for d, got in stored.items() if got == wanted]
        if out.exists():  # delivered (committed or not): its manifest holds exactly its IDs
            assert [int(i) for i in out.read_text().split()] == wanted
            assert len(mine) == 1, point
        if point in ("manifest.written", "share.reserved", "share.writing"):
            assert len(mine) == 1 and not out.exists()  # an orphan: nothing delivered
            assert not any(r.get("share_id") == mine[0] and r.get("outcome") == "delivered"
                           for r in records(lab))
        if point in (None, "deliver.committed"):
            assert check_committed(lab).get(mine[0]), point
    # Open reservations are closed as counted (abandoned) by the sweep: each of them that may
    # have delivered has its manifest (checked above); every committed one names its own.
    lab.gate.sweep()
    named = check_committed(lab)
    assert len(named) == 2 and set(named) <= set(manifest_ids(lab))


def test_a_kill_between_manifest_and_commit_on_the_api_and_the_export_delivers_nothing(
        lab: Lab) -> None:
    token = lab.gate.users.create_token("dan", actor="lab", channel="cli")
    for point in ("manifest.written", None):
        server = lab.server()
        server.failpoint(f"{point}:kill" if point else None)
        got = Client(server.port).share(token, "acme", list(range(FIRST, FIRST + 5000)), None)
        if point:
            assert got.status is None and server.exited(60)
        else:
            assert got.status == 200 and got.complete
            share = got.headers["x-share-id"]
            assert manifest_ids(lab)[share] == list(range(FIRST, FIRST + 5000))
            assert share in check_committed(lab)
            server.stop()
        server = lab.server()
        browser = Client(server.port)
        browser.sign_in("ana")
        server.failpoint(f"{point}:kill" if point else None)
        got = browser.export("posts", "xlsx", 120)
        if point:
            assert got.status is None and server.exited(60)
        else:
            assert got.status == 200 and got.body.startswith(b"PK"), got.text[:300]
            server.stop()
    stored = manifest_ids(lab)
    assert len(stored) == 4  # two orphans (killed before the commit), two delivered
    named = check_committed(lab)
    assert len(named) == 2 and set(named) <= set(stored)
    exported = [d for d in named if d != share]
    assert len([i for i in stored[exported[0]] if i >= 1_600_000_000_000_000_000]) == 120
