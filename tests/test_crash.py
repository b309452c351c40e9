"""Crashes, one at a time, on the real embedded Redis, CLI and `gatekeeper serve`.

Each test pins one behaviour the code before 8b6696c..HEAD got wrong; its comment says what
that code did. See test_faults.py for the seeded mix of every fault at every failpoint.
"""

from __future__ import annotations

import errno
import os
import signal
import stat
import time
import urllib.parse
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from faultkit import Answer, Client, Lab, Run, Server, alert, leftovers

from gatekeeper.domain import quota, shares
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.errors import BadInput

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

MakeLab = Callable[..., Lab]


@pytest.fixture
def make_lab(tmp_path: Path) -> Iterator[MakeLab]:
    """A lab (config, store, TMPDIR) with entity acme, data user dan and analyst ana; every
    server it starts is killed and its store stopped afterwards."""
    labs: list[Lab] = []

    bases: list[Path] = []

    def make(posts: int = 0, limits: str = "") -> Lab:
        bases.append(tmp_path / f"lab{len(bases)}")
        lab = Lab(bases[-1], limits=limits, dataset_posts=posts)
        labs.append(lab)
        lab.entity("acme")
        lab.user("dan", "acme", "data")
        lab.user("ana", "acme", "analyst")
        return lab

    yield make
    for lab in labs:
        for server in lab.servers:
            server.stop()
    for base in bases:  # also the store of a lab that failed half-way
        EmbeddedServer(base / "var").stop()


def share(lab: Lab, n: int, out: Path, key: str | None = None,
          failpoint: str | None = None) -> Run:
    ids = lab.work / "ids.txt"
    if not ids.exists():
        ids.write_text("".join(f"{1_500_000_000_000_000_000 + i}\n" for i in range(n)))
    args = ["share", "--as", "dan", "--entity", "acme", "--ids", str(ids), "--out", str(out)]
    return lab.cli(*args, *(["--idempotency-key", key] if key else []), failpoint=failpoint)


def outcomes(lab: Lab, kind: str) -> list[str]:
    return [f[b"outcome"].decode() for _, f in lab.gate.client.xrange(keys.audit("acme"))
            if f.get(b"kind") == kind.encode()]


def words(text: str) -> str:
    return " ".join(text.split())


def said(got: Answer) -> str:
    """What an answer said, for assertion messages: the error page's message, or its size."""
    if got.body.startswith((b"PK", b"%PDF")):
        return f"{got.status}: a {len(got.body):,}-byte export"
    return f"{got.status}: {alert(got.text)}"


def test_kill_9_of_the_server_mid_export_leaves_no_readable_byte_in_its_tmpdir(
        make_lab: MakeLab) -> None:
    # Old code: hydrated.export wrote the file to TMPDIR/gatekeeper-export-*/export.xlsx and
    # unlinked it only once it was complete, so a kill -9 while writing left a readable
    # spreadsheet of hydrated posts there (2.3 MB of a 40,000-row export), that nothing
    # removed, not even a restart.
    lab = make_lab(posts=40_000)
    server = lab.server()
    browser = Client(server.port)
    browser.sign_in("ana")
    body = urllib.parse.urlencode(browser.export_fields("posts", "xlsx", 40_000)).encode()
    conn = browser.send("POST", "/export", body,
                        {"Content-Type": "application/x-www-form-urlencoded"})
    try:
        # Kill once the server holds a megabyte of the export in a file in its TMPDIR.
        deadline = time.monotonic() + 120
        while max((size for _, size in server.fds_under(lab.tmpdir)), default=0) < 1 << 20:
            assert not server.exited(0.01), "the server ended before the export was written"
            assert time.monotonic() < deadline, "the export never reached a megabyte"
        os.kill(server.pid, signal.SIGKILL)
        assert server.exited(60) and server.status == -signal.SIGKILL
    finally:
        conn.close()
    assert leftovers(lab) == []
    lab.server()  # a restart (and its start-up sweep) finds nothing either
    assert leftovers(lab) == []


def test_the_store_stopping_after_the_id_file_is_written_exits_5_and_keeps_the_ids_counted(
        make_lab: MakeLab) -> None:
    # Old code: the commit's StoreUnavailable reached the person as "the Redis store cannot be
    # reached ...; nothing was released" while the 1,000 IDs were at --out (and counted only
    # as an open reservation, which nothing ever closed).
    lab = make_lab()
    out = lab.work / "out.txt"

    run = share(lab, 1000, out, key="k1", failpoint="deliver.written:kill-store")

    assert run.status == 5, run.stderr
    message = words(run.stderr)
    assert f"1,000 IDs at {out} — delivered" in message and "stays counted" in message, message
    assert "nothing was released" not in message
    assert out.read_text() == (lab.work / "ids.txt").read_text()
    assert not lab.store.running()
    lab.store_up()
    assert lab.cli("quota", "entity", "acme", "--json").json()["used"] == 1000
    # The reservation is open: a retry with the same key delivers nothing until it is closed.
    retry = share(lab, 1000, lab.work / "retry.txt", key="k1")
    assert retry.status == 4 and "in progress" in words(retry.stderr)
    assert not (lab.work / "retry.txt").exists()
    assert outcomes(lab, "share.posts") == ["granted", "in_progress"]


@pytest.mark.parametrize(("point", "recovery"), [
    ("export.reserved", "cli"), ("export.writing", "cli"), ("export.written", "server")])
def test_the_store_stopping_during_an_export_answers_503_and_refunds_once_it_is_back(
        make_lab: MakeLab, point: str, recovery: str) -> None:
    # Old code: an export whose commit failed was answered 503 with "nothing was released"
    # but its reservation stayed charged: 30,000 of the recipient's R6 allowance (and of the
    # entity's R2) consumed for an export nobody received. (export.reserved: even the new code
    # answered "nothing was released" without saying nothing was delivered.)
    lab = make_lab(posts=3000)
    server = lab.server()
    browser = Client(server.port)
    browser.sign_in("ana")
    fields = browser.export_fields("posts", "xlsx", 3000)
    server.failpoint(f"{point}:kill-store")

    got = browser.form("/export", fields)

    assert got.status == 503, said(got)
    assert "nothing was delivered" in alert(got.text), said(got)
    assert b"PK\x03\x04" not in got.body  # no XLSX (a zip); a CSRF token may hold "PK"
    assert not lab.store.running()
    assert len(list((lab.data_dir / "pending").glob("*.json"))) == 1  # owed, on disk
    lab.store_up()
    if recovery == "cli":  # the next command of any process sends what is owed
        assert lab.cli("quota", "user", "ana", "--json").json()["used"] == 0
    else:  # the server's recovery thread does, within seconds
        deadline = time.monotonic() + 60
        while quota.user_quota(lab.gate, "ana")["used"]:
            assert time.monotonic() < deadline, "the server never sent the refund"
            time.sleep(0.1)
    assert quota.user_quota(lab.gate, "ana")["used"] == 0
    assert quota.entity_quota(lab.gate, "acme")["used"] == 0
    assert outcomes(lab, "export.xlsx") == ["granted", "refunded"]
    assert leftovers(lab) == []


def test_a_full_disk_while_writing_the_id_file_delivers_and_counts_nothing(
        make_lab: MakeLab) -> None:
    # Old code: a real ENOSPC was answered the same way, but the ID file was a named .part
    # beside --out (a kill at this moment left it there, see test_faults) and there was no
    # failpoint to reach this moment: this test fails there for want of one.
    lab = make_lab()
    out = lab.work / "out.txt"

    run = share(lab, 5000, out, failpoint="share.writing:enospc")

    assert run.status in (2, 5), run.stderr
    message = words(run.stderr)
    assert "No space left on device" in message, message
    assert "nothing was delivered or counted" in message, message
    assert not out.exists()
    assert [p.name for p in lab.work.iterdir() if p.name != "ids.txt"] == []
    assert quota.entity_quota(lab.gate, "acme")["used"] == 0
    assert outcomes(lab, "share.posts") == ["granted", "refunded"]


def test_store_sweep_closes_a_reservation_left_open_past_the_timeout_as_counted(
        make_lab: MakeLab) -> None:
    # Old code: a share whose process died between counting and delivering stayed 'reserved'
    # for ever; a retry with its key was replayed although nothing had been delivered, and
    # there was no `store sweep`.
    lab = make_lab(limits="reservation_timeout_minutes = 1")
    assert share(lab, 300, lab.work / "out.txt", key="k1", failpoint="share.reserved:kill").killed
    swept = lab.cli("store", "sweep", "--json")
    assert (swept.status, swept.json()["abandoned"], swept.json()["open"]) == (0, 0, 1)
    # Two minutes later (the index says when it was reserved), the sweep closes it.
    client = lab.gate.client
    [(share_id, reserved_at)] = client.zrange(keys.reserved("acme"), 0, -1, withscores=True)
    client.zadd(keys.reserved("acme"), {share_id: reserved_at - 120_000}, xx=True)

    swept = lab.cli("store", "sweep", "--json")

    assert (swept.status, swept.json()["abandoned"], swept.json()["open"]) == (0, 1, 0)
    [closed] = [f for _, f in client.xrange(keys.audit("acme"))
                if f[b"outcome"] == b"abandoned"]
    assert (closed[b"kind"], closed[b"of"], closed[b"granted"]) == (
        b"share.abandoned", b"share.posts", b"300")
    assert closed[b"share_id"] == share_id
    assert quota.entity_quota(lab.gate, "acme")["used"] == 300  # counted: it may have left
    # Counted for good now, so a retry with the key gets the IDs without counting them again.
    retry = share(lab, 300, lab.work / "retry.txt", key="k1")
    assert retry.status == 0 and "already shared" in retry.stdout
    assert quota.entity_quota(lab.gate, "acme")["used"] == 300


def test_a_ledger_sweep_closes_only_reservations_older_than_its_timeout(
        make_lab: MakeLab) -> None:
    lab = make_lab()
    assert share(lab, 50, lab.work / "out.txt", failpoint="share.reserved:kill").killed
    client = lab.gate.client
    [(share_id, reserved_at)] = client.zrange(keys.reserved("acme"), 0, -1, withscores=True)
    ledger = Ledger(client, reservation_timeout_ms=60_000)

    early = ledger.sweep("acme", now_ms=int(reserved_at) + 59_999)
    late = ledger.sweep("acme", now_ms=int(reserved_at) + 60_000)

    assert early == {"abandoned": 0, "open": 1}
    assert late == {"abandoned": 1, "open": 0}
    assert client.hget(keys.share("acme", share_id.decode()), "status") == b"abandoned"
    assert outcomes(lab, "share.abandoned") == ["abandoned"]
    assert quota.entity_quota(lab.gate, "acme")["used"] == 50


def test_an_export_spool_that_cannot_be_created_refunds_and_answers_507(
        make_lab: MakeLab) -> None:
    # Found by test_faults (export.reserved:enospc): the spool was created after the
    # reservation and outside the code that refunds a failed export, so a TMPDIR that could
    # not take it answered 500 and left the reservation open — counted, then closed as
    # counted: R6 allowance consumed for nothing delivered.
    lab = make_lab(posts=500)
    server: Server = lab.server()
    browser = Client(server.port)
    browser.sign_in("ana")
    fields = browser.export_fields("posts", "xlsx", 500)
    lab.tmpdir.rmdir()  # the server's TMPDIR is gone: no spool can be created there
    try:
        got = browser.form("/export", fields)
    finally:
        lab.tmpdir.mkdir()

    assert got.status == 507, said(got)
    assert "nothing was delivered or counted" in alert(got.text), said(got)
    assert quota.user_quota(lab.gate, "ana")["used"] == 0
    assert outcomes(lab, "export.xlsx") == ["granted", "refunded"]
    assert not server.exited(0)


def test_a_directory_fsync_failing_after_the_id_file_is_linked_leaves_no_uncounted_file(
        make_lab: MakeLab, monkeypatch: pytest.MonkeyPatch) -> None:
    # Found reading spool.publish for the suite: the ID file was linked at --out, then the
    # directory's fsync failed; the share was refunded and the answer said "nothing was
    # delivered or counted" — with the 200 IDs at --out, delivered and uncounted (R2).
    lab = make_lab()
    out = lab.work / "out.txt"
    ids = lab.work / "ids.txt"
    ids.write_text("".join(f"{1_500_000_000_000_000_000 + i}\n" for i in range(200)))
    fsync = os.fsync

    def failing_on_directories(fd: int) -> None:
        # --out's directory only: the share's manifest (datasets/manifests/) is stored first.
        if stat.S_ISDIR(os.fstat(fd).st_mode) and os.readlink(f"/proc/self/fd/{fd}") == str(
                lab.work):
            raise OSError(errno.EIO, os.strerror(errno.EIO))
        fsync(fd)

    monkeypatch.setattr(os, "fsync", failing_on_directories)
    with pytest.raises(BadInput, match="nothing was delivered or counted"):
        shares.share_to_file(lab.gate, actor="dan", entity="acme", ids_path=ids, out=out)
    monkeypatch.undo()

    assert not out.exists()
    assert [p.name for p in lab.work.iterdir()] == ["ids.txt"]
    assert quota.entity_quota(lab.gate, "acme")["used"] == 0
    assert outcomes(lab, "share.posts") == ["granted", "refunded"]
