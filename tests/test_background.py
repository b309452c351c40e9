"""Work an API answer owes, off the request path (channels/web/background.py): the notices an API
deletion ingest owes are opened by the server's runner after the answer, in a heavy slot; R10's
check of an API share runs there too, not on the worker thread (both backends; the real server,
killed between answer and scan, is tests/test_notices_faults.py)."""

from __future__ import annotations

import json
import os
import socket
import threading
from pathlib import Path
from typing import Any

import pytest
import redis
from flask import Flask
from flask.testing import FlaskClient
from live import PASSWORD, share_ids, sign_in

from gatekeeper import config as config_mod
from gatekeeper.channels.web import background, heavy
from gatekeeper.domain import redelivery
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.notices import Notices
from gatekeeper.ledger import keys
from gatekeeper.ledger.clock import FixedClock

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

A = 1_600_000_000_000_000_000
T = 1_795_000_000_000
DAY = 86_400_000
WAIT_S = 60  # a safety net only: nothing here is timed


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    """acme with dan (data) and cora (compliance), on a clock the test moves."""
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 100000\n[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client,
             clock=FixedClock(redis_client, T))
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    for name, role in (("dan", "data"), ("cora", "compliance")):
        g.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                    channel="cli")
    return g


def ingest(client: FlaskClient, gate: Gate, ids: list[int]) -> dict[str, Any]:
    token = gate.users.create_token("cora", actor="t", channel="cli")
    resp = client.post("/api/v1/deletions?kind=posts", data="".join(f"{i}\n" for i in ids),
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    return dict(json.loads(resp.get_data()))


def test_an_api_ingest_answers_before_its_notices_scan_which_opens_them_in_a_heavy_slot(
        gate: Gate, app: Flask, client: FlaskClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    share_ids(gate, tmp_path, "acme", 10, start=A)
    started, release, seen = threading.Event(), threading.Event(), {}
    scan = Notices.scan

    def slow_scan(self: Notices, **kw: Any) -> Any:
        started.set()
        seen["slots"] = app.extensions[heavy.KEY].running
        seen["thread"] = threading.current_thread().name
        release.wait(WAIT_S)
        return scan(self, **kw)

    monkeypatch.setattr(Notices, "scan", slow_scan)
    answer = ingest(client, gate, [A + 3, A + 99])
    # Answered while the scan has not opened anything: the ingest stands, its notice is owed.
    assert answer["listed"] == 2 and answer["new"] == 2 and answer["notices"] == []
    assert (answer["notices_scan"], answer["notices_pending"]) == ("background", 2)
    assert gate.notices.listing() == [] and A + 3 in gate.deletions.current().posts
    assert started.wait(WAIT_S)  # the runner took it up, in one of the heavy slots
    assert seen == {"slots": 1, "thread": "gatekeeper-background"}
    # Compliance sees on the notices page that some are still being opened.
    assert sign_in(client, "cora", PASSWORD) == 302
    assert "2 ID(s) of recent deletion lists are" in client.get("/notices").get_data(as_text=True)
    release.set()
    assert background.runner(app).drain()
    [notice] = gate.notices.listing()
    assert (notice.recipient, notice.posts) == ("acme", 1)
    assert gate.notices.ids(notice.id).posts().tolist() == [A + 3]
    assert gate.notices.pending() == 0
    opened = [f for _i, f in gate.client.xrange(keys.SYS_AUDIT)
              if f.get(b"kind") == b"notices.open"]
    assert [(f[b"actor"], f[b"channel"]) for f in opened] == [(b"cora", b"api")]
    page = client.get("/notices").get_data(as_text=True)
    assert notice.id in page and "notices-pending" not in page


def test_a_scan_told_busy_is_tried_again_until_the_other_scan_lets_go(
        gate: Gate, app: Flask, client: FlaskClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(background, "RETRY_S", (0.05, 0.2))
    share_ids(gate, tmp_path, "acme", 10, start=A)
    # Another scanner on this host, alive (this process), holds the lock.
    gate.client.set(keys.NOTICES_LOCK, f"{socket.gethostname()} {os.getpid()} other")
    ingest(client, gate, [A + 5])
    runner = background.runner(app)
    assert not runner.drain(0.5)  # waiting to try again, nothing opened twice meanwhile
    assert gate.notices.listing() == []
    gate.client.delete(keys.NOTICES_LOCK)  # the other scan ended (without these IDs)
    assert runner.drain()
    [notice] = gate.notices.listing()
    assert gate.notices.ids(notice.id).posts().tolist() == [A + 5]


def test_an_api_shares_r10_check_runs_in_a_heavy_slot_off_the_worker_thread(
        gate: Gate, app: Flask, client: FlaskClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    first = share_ids(gate, tmp_path, "acme", 3, start=5)  # 5, 6, 7
    assert isinstance(gate.clock, FixedClock)
    gate.clock.set(T + 40 * DAY)
    seen: list[tuple[str, int]] = []
    compare = redelivery._compare

    def watched(*args: Any) -> Any:
        seen.append((threading.current_thread().name, app.extensions[heavy.KEY].running))
        return compare(*args)

    monkeypatch.setattr(redelivery, "_compare", watched)
    token = gate.users.create_token("dan", actor="t", channel="cli")
    resp = client.post("/api/v1/shares?entity=acme&purpose=t", data="6\n7\n8\n",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200 and resp.get_data(as_text=True) == "6\n7\n8\n"
    resp.close()
    assert background.runner(app).drain()
    assert seen == [("gatekeeper-background", 1)]
    [found] = redelivery.findings(gate)
    assert found.ids == 2 and found.earlier == [(first.audit["manifest"], T, 2)]
    assert app.extensions[heavy.KEY].running == 0  # given back


def test_an_r10_check_with_nothing_older_to_compare_takes_no_heavy_slot(
        gate: Gate, app: Flask, client: FlaskClient, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The check after nearly every share finds no delivery 30 days older (two Redis
    commands): it must not wait in the heavy line, nor hold a slot a preview then cannot get."""
    work = app.extensions[heavy.KEY]
    taken = [work.acquire("an export") for _ in range(work.slots)]  # every slot busy
    checked: list[int] = []
    after = redelivery.after_share

    def watched(*args: Any) -> Any:
        got = after(*args)
        checked.append(work.running)
        return got

    monkeypatch.setattr(redelivery, "after_share", watched)
    token = gate.users.create_token("dan", actor="t", channel="cli")
    resp = client.post("/api/v1/shares?entity=acme&purpose=t", data="6\n7\n8\n",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200
    resp.close()
    assert background.runner(app).drain(10)  # done while every slot is still taken
    assert checked == [work.slots] and redelivery.findings(gate) == []
    for slot in taken:
        slot.release()


def test_owed_work_waits_its_turn_for_a_slot_and_takes_no_place_in_the_line() -> None:
    work = heavy.HeavyWork(slots=1, queue=1, wait_s=WAIT_S)
    running = work.acquire("an export")
    got: list[heavy.Slot] = []
    owed = threading.Thread(target=lambda: got.append(work.acquire_owed()))
    owed.start()
    while not work._line:  # the owed work is in line
        threading.Event().wait(0.01)
    assert work.running == 1 and work.waiting == 0 and not got
    # A request may still wait in the line's one place (the owed work is not one of them) ...
    second: list[heavy.Slot] = []
    waiter = threading.Thread(target=lambda: second.append(work.acquire("a preview")))
    waiter.start()
    while work.waiting < 1:
        threading.Event().wait(0.01)
    running.release()  # ... and the owed work, first in line, runs first
    owed.join(WAIT_S)
    assert len(got) == 1 and not second and work.running == 1
    got[0].release()
    waiter.join(WAIT_S)
    assert len(second) == 1
    second[0].release()
    assert work.running == 0 and work.waiting == 0
