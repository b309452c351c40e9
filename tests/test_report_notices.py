"""The monthly report's deletion notices read bounded, saying the same (issue 15 follow-up), and
the notices' indexes: each recipient's open ones, the acknowledged ones (layout 5), kept by the
transaction that opens or acknowledges a notice; `Notices.pages` a cursor that neither skips
nor repeats a notice while others are opened or acknowledged. Both backends.

The report's notices used to be counted over every notice ever opened (`listing()`); they are
now counted over the notices opened in the month, open now or acknowledged since its start.
`reference` below is the old count, kept here to compare against: the report's JSON must be
the same, byte for byte, for every month and moment."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from live import PASSWORD

from gatekeeper import config as config_mod
from gatekeeper.domain import noticeboard
from gatekeeper.domain.figures import NoticeLate, NoticeMonth
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.notices import Notice, Scan, _notice
from gatekeeper.domain.report import month_bounds, month_report
from gatekeeper.ledger import chain, keys, layout
from gatekeeper.ledger.clock import FixedClock
from gatekeeper.ledger.store import text
from gatekeeper.rules.errors import StoreUnavailable

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

HOUR = 3_600_000
DAY = 24 * HOUR


def ms(when: str) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp() * 1000)


@pytest.fixture
def clock(redis_client: redis.Redis) -> FixedClock:
    return FixedClock(redis_client, ms("2026-01-01T00:00:00"))


@pytest.fixture
def gate(tmp_path: Path, clock: FixedClock) -> Gate:
    (tmp_path / "config.toml").write_text('[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=clock.client, clock=clock)
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.add("beta", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    for name, entity, role in (("cora", "acme", "compliance"), ("ana", "acme", "analyst"),
                               ("bob", "beta", "analyst")):
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="t",
                    channel="cli")
    return g


def fields(ident: int, kind: str, name: str, entity: str, opened: int, deadline: int,
           posts: int) -> dict[str, Any]:
    """A notice's hash as Notices._make makes it."""
    delivery = {"delivery": f"{ident:032x}"[::-1], "channel": "web", "kind": "export.xlsx",
                "delivered_ms": opened - 5 * DAY, "file": None, "posts": posts, "users": 0}
    return {"id": f"{ident:032x}", "recipient_kind": kind, "recipient": name,
            "entity": entity, "opened_ms": opened, "deadline_ms": deadline,
            "deliveries": json.dumps([delivery]), "posts": posts, "users": 0, "state": "open",
            "sources": json.dumps(["list.txt"]), "file": f"2026-01/{ident:032x}"}


def seed_old(gate: Gate, made: list[dict[str, Any]], acked: dict[str, int]) -> None:
    """Notices as a version before layout 5 left them: hashes and the three sets it kept."""
    pipe = gate.client.pipeline(transaction=False)
    for f in made:
        ident = f["id"]
        done = acked.get(ident)
        state = {"state": "acknowledged", "acked_by": "Jo", "acked_ms": done, "acked_note": "",
                 "acked_actor": "cora"} if done is not None else {}
        pipe.hset(keys.notice(ident), mapping={**f, **state})
        if done is None:
            pipe.zadd(keys.NOTICES_OPEN, {ident: f["deadline_ms"]})
        pipe.zadd(keys.NOTICES_ALL, {ident: f["opened_ms"]})
        pipe.zadd(keys.notices_of(f["recipient_kind"], f["recipient"]), {ident: f["opened_ms"]})
    pipe.execute()


def open_notices(gate: Gate, made: list[dict[str, Any]]) -> None:
    """Open notices through the scan's own commit (Notices._commit), under its lock."""
    token = "test-host 1 token"
    assert gate.notices._lock(token)
    try:
        gate.notices._commit([(f, f["recipient_kind"], f["recipient"]) for f in made], [],
                             Scan(token=token), "cora", "cli", made[0]["deadline_ms"] - DAY)
    finally:
        gate.notices._unlock(token)


def every_notice(gate: Gate) -> list[Notice]:
    ids = gate.client.zrevrange(keys.NOTICES_ALL, 0, -1)
    return [_notice({text(k): text(v) for k, v in gate.client.hgetall(keys.notice(text(i)))
                     .items()}) for i in ids]


def reference(gate: Gate, start: int, end: int, now_ms: int
              ) -> tuple[list[NoticeMonth], list[NoticeLate]]:
    """noticeboard.month as it was: the same count over every notice ever opened, read
    whole — so the bounded read (`touching`) must leave out none that counts."""
    return noticeboard.counted(every_notice(gate), start, end, now_ms)


def report_json(gate: Gate, month: str, now_ms: int) -> str:
    return json.dumps(month_report(gate, month, actor="cora", now_ms=now_ms).to_dict(),
                      sort_keys=True, default=str)


MOMENTS = [("2026-01", "2026-01-20T00:00:00"), ("2026-01", "2026-05-01T00:00:00"),
           ("2026-02", "2026-02-14T13:00:00"), ("2026-02", "2026-05-01T00:00:00"),
           ("2026-03", "2026-03-03T12:00:00"), ("2026-03", "2026-05-01T00:00:00"),
           ("2026-04", "2026-04-30T23:59:59")]


def assert_same_as_before(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    for month, now in MOMENTS:
        start, end = month_bounds(month)
        assert noticeboard.month(gate, start, end, ms(now)) == \
            reference(gate, start, end, ms(now)), (month, now)
        ours = report_json(gate, month, ms(now))
        with monkeypatch.context() as m:
            m.setattr(noticeboard, "month", lambda g, s, e, n: reference(g, s, e, n))
            before = report_json(gate, month, ms(now))
        assert ours == before, (month, now)


def history(gate: Gate, clock: FixedClock) -> list[dict[str, Any]]:
    """Notices of every kind a month can see, an older version's first: opened and
    acknowledged before the month, in it, after it; open for months; a scan a day late (its
    deadline before its opening); one recipient under two entities; ties on the opening time."""
    old = [fields(1, "person", "ana", "acme", ms("2026-01-05T10:00:00"),
                  ms("2026-01-06T09:00:00"), 3),
           fields(2, "entity", "acme", "acme", ms("2026-01-05T10:00:00"),
                  ms("2026-01-06T09:00:00"), 7),
           fields(3, "entity", "beta", "beta", ms("2026-01-28T10:00:00"),
                  ms("2026-01-29T09:00:00"), 2),
           fields(4, "person", "bob", "beta", ms("2026-02-27T23:00:00"),
                  ms("2026-02-28T22:00:00"), 5),
           fields(5, "person", "ana", "beta", ms("2026-02-10T00:00:00"),
                  ms("2026-02-09T12:00:00"), 1),  # opened a day late: due before it opened
           fields(6, "entity", "acme", "acme", ms("2026-03-02T08:00:00"),
                  ms("2026-03-03T07:00:00"), 4)]
    seed_old(gate, old, {old[0]["id"]: ms("2026-01-05T20:00:00"),  # in time, in January
                         old[2]["id"]: ms("2026-02-02T00:00:00"),  # late, in February
                         old[3]["id"]: ms("2026-02-28T21:00:00")})  # in time, at the edge
    return old


def later(gate: Gate, clock: FixedClock, old: bool = True) -> None:
    """Notices this version opens and acknowledges (March and April), some at one moment."""
    tied = ms("2026-03-10T00:00:00")
    open_notices(gate, [fields(10 + i, "person" if i % 2 else "entity",
                               ("ana", "acme", "bob", "beta")[i % 4],
                               ("acme", "acme", "beta", "beta")[i % 4], tied, tied + 20 * HOUR,
                               i + 1) for i in range(6)])
    open_notices(gate, [fields(20, "person", "bob", "beta", ms("2026-04-02T00:00:00"),
                               ms("2026-04-03T00:00:00"), 9)])
    clock.set(ms("2026-03-10T10:00:00"))
    gate.notices.ack(f"{10:032x}", by="Jo", actor="cora", channel="cli")
    clock.set(ms("2026-03-12T00:00:00"))
    gate.notices.ack(f"{13:032x}", by="Jo", actor="cora", channel="cli")  # late
    if old:
        gate.notices.ack(f"{5:032x}", by="Jo", actor="cora", channel="cli")  # old, late
    clock.set(ms("2026-04-02T10:00:00"))
    gate.notices.ack(f"{20:032x}", by="Jo", actor="cora", channel="cli")


def test_the_reports_notices_are_the_same_before_and_after_the_index(
        gate: Gate, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    history(gate, clock)
    assert not gate.notices.indexed()  # an older version's store: every notice is read
    assert_same_as_before(gate, monkeypatch)
    assert layout.index_notices(gate.client) == 6
    assert gate.notices.indexed()
    assert_same_as_before(gate, monkeypatch)
    later(gate, clock)
    assert_same_as_before(gate, monkeypatch)


def test_the_report_reads_only_the_notices_its_month_can_count(
        gate: Gate, clock: FixedClock) -> None:
    history(gate, clock)
    layout.index_notices(gate.client)
    later(gate, clock)
    start, end = month_bounds("2026-03")
    read = {n.id for n in gate.notices.touching(start, end)}
    # January's notices acknowledged in January or February: nothing to count in March.
    assert {f"{i:032x}" for i in (1, 3, 4)}.isdisjoint(read)
    assert {f"{i:032x}" for i in (2, 5, 6, *range(10, 16))} <= read
    assert len(read) < gate.client.zcard(keys.NOTICES_ALL)


def test_a_fresh_store_indexes_its_notices_from_the_first(gate: Gate, clock: FixedClock,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    assert not gate.notices.indexed()
    later(gate, clock, old=False)
    assert gate.notices.indexed()  # the first notice opened on an empty store
    assert_same_as_before(gate, monkeypatch)


def open_index(gate: Gate, kind: str, name: str) -> list[str]:
    return [text(i) for i in gate.client.zrange(keys.notices_open_of(kind, name), 0, -1)]


def test_opened_is_in_the_recipients_open_index_and_acknowledged_leaves_it(
        gate: Gate, clock: FixedClock) -> None:
    t = ms("2026-03-10T00:00:00")
    open_notices(gate, [fields(1, "person", "ana", "acme", t, t + DAY, 2),
                        fields(2, "person", "ana", "acme", t, t + DAY, 3),
                        fields(3, "entity", "acme", "acme", t, t + DAY, 4)])
    assert open_index(gate, "person", "ana") == [f"{1:032x}", f"{2:032x}"]
    assert [n.id for n in gate.notices.open_for_entity("acme")] == [f"{3:032x}"]
    clock.set(t + HOUR)
    gate.notices.ack(f"{1:032x}", by="Jo", actor="cora", channel="cli")
    assert open_index(gate, "person", "ana") == [f"{2:032x}"]
    assert [n.id for n in gate.notices.open_for_person("ana")] == [f"{2:032x}"]
    assert gate.client.zscore(keys.NOTICES_ACKED, f"{1:032x}") == t + HOUR


def test_a_fault_inside_the_acknowledgement_changes_neither_the_notice_nor_its_indexes(
        gate: Gate, clock: FixedClock, monkeypatch: pytest.MonkeyPatch) -> None:
    t = ms("2026-03-10T00:00:00")
    open_notices(gate, [fields(1, "person", "ana", "acme", t, t + DAY, 2)])
    ident = f"{1:032x}"

    def crash(*_a: Any, **_k: Any) -> None:  # after the state and the indexes are queued
        raise ConnectionError("the connection dropped")

    monkeypatch.setattr(chain, "append", crash)
    clock.set(t + HOUR)
    with pytest.raises(StoreUnavailable):
        gate.notices.ack(ident, by="Jo", actor="cora", channel="cli")
    assert gate.notices.get(ident).open
    assert open_index(gate, "person", "ana") == [ident]
    assert gate.client.zscore(keys.NOTICES_OPEN, ident) is not None
    assert gate.client.zscore(keys.NOTICES_ACKED, ident) is None
    monkeypatch.undo()
    gate.notices.ack(ident, by="Jo", actor="cora", channel="cli")
    assert open_index(gate, "person", "ana") == []
    assert gate.client.zscore(keys.NOTICES_ACKED, ident) == t + HOUR


def test_the_upgrade_indexes_an_older_versions_notices_and_the_pages_read_them(
        gate: Gate, clock: FixedClock) -> None:
    history(gate, clock)
    assert open_index(gate, "person", "ana") == []
    # Before the upgrade the open notices come from the recipient's whole history.
    assert [n.id for n in gate.notices.open_for_person("ana")] == [f"{5:032x}"]
    done = gate.upgrade(actor="t", channel="cli")
    assert done["notices"] == 6 and gate.notices.indexed()
    assert open_index(gate, "person", "ana") == [f"{5:032x}"]
    assert open_index(gate, "entity", "acme") == [f"{2:032x}", f"{6:032x}"]
    assert [text(i) for i in gate.client.zrange(keys.NOTICES_ACKED, 0, -1)] == \
        [f"{i:032x}" for i in (1, 3, 4)]
    assert gate.upgrade(actor="t", channel="cli")["notices"] == 0  # once


def ranked(gate: Gate, open_only: bool) -> list[str]:
    if open_only:
        return [text(i) for i in gate.client.zrange(keys.NOTICES_OPEN, 0, -1)]
    return [text(i) for i in gate.client.zrevrange(keys.NOTICES_ALL, 0, -1)]


@pytest.mark.parametrize("open_only", [False, True])
def test_pages_give_the_listing_in_order_a_page_at_a_time(gate: Gate, clock: FixedClock,
                                                          open_only: bool) -> None:
    t = ms("2026-03-10T00:00:00")
    # 23 notices, most opened at one moment (one scan) and due at one moment.
    open_notices(gate, [fields(i, "person", "ana", "acme", t + (i // 10) * HOUR,
                               t + DAY + (i // 10) * HOUR, 1) for i in range(1, 24)])
    pages = [[n.id for n in page] for page in gate.notices.pages(open_only, size=5)]
    assert [len(p) for p in pages] == [5, 5, 5, 5, 3]
    assert [i for p in pages for i in p] == ranked(gate, open_only)
    assert [n.id for n in gate.notices.listing(open_only)] == ranked(gate, open_only)


def test_pages_neither_skip_nor_repeat_while_notices_are_opened_and_acknowledged(
        gate: Gate, clock: FixedClock) -> None:
    t = ms("2026-03-10T00:00:00")
    open_notices(gate, [fields(i, "person", "ana", "acme", t, t + DAY, 1) for i in range(1, 21)])
    before = ranked(gate, True)
    clock.set(t + HOUR)
    seen: list[str] = []
    pages = gate.notices.pages(True, size=4)
    seen += [n.id for n in next(pages)]
    # One given and one not given yet are acknowledged; the last given leaves the set.
    for ident in (seen[0], before[6], seen[-1]):
        gate.notices.ack(ident, by="Jo", actor="cora", channel="cli")
    open_notices(gate, [fields(99, "person", "bob", "beta", t, t + DAY, 1)])  # among them
    for page in pages:
        seen += [n.id for n in page]
    assert len(seen) == len(set(seen))
    assert set(before) - {before[6]} <= set(seen)
    # Newest first: new notices come in ahead of the cursor and are not given twice.
    seen_all: list[str] = []
    pages = gate.notices.pages(False, size=3)
    seen_all += [n.id for n in next(pages)]
    open_notices(gate, [fields(100 + i, "entity", "acme", "acme", t + DAY, t + 2 * DAY, 1)
                        for i in range(4)])
    for page in pages:
        seen_all += [n.id for n in page]
    assert len(seen_all) == len(set(seen_all)) == 21


@pytest.mark.parametrize("open_only", [False, True])
def test_the_cli_lists_notices_a_page_at_a_time_with_the_same_json(
        gate: Gate, clock: FixedClock, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        open_only: bool) -> None:
    from click.testing import CliRunner

    from gatekeeper.channels.cli import context as cli_context
    from gatekeeper.channels.cli import main as cli
    from gatekeeper.domain import notices as notices_mod

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli.main, ["--config", str(tmp_path / "config.toml"), "notices",
                                          "list", *(["--open"] if open_only else []), *args],
                               catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    monkeypatch.setattr(cli_context, "Gate", lambda _config: gate)
    assert run("--json") == "[]\n"
    history(gate, clock)
    later(gate, clock)
    read: list[int] = []
    pages = notices_mod.Notices.pages

    def counted(self: Any, open_only: bool = False, size: int | None = None) -> Any:
        for page in pages(self, open_only, size):
            read.append(len(page))
            yield page

    monkeypatch.setattr(notices_mod, "PAGE", 3)
    monkeypatch.setattr(notices_mod.Notices, "pages", counted)
    whole = [n.to_dict() for n in gate.notices.listing(open_only)]
    read.clear()
    assert run("--json") == json.dumps(whole, indent=2, ensure_ascii=False) + "\n"
    assert len(read) > 1 and max(read) == 3  # streamed, a page of 3 at a time
    lines = run().splitlines()
    assert lines[0].split() == ["id", "to", "recipient", "opened", "deadline", "deliveries",
                                "ids", "state"]
    assert [line.split()[0] for line in lines[1:]] == [n["id"] for n in whole]


def test_a_long_grid_draws_exactly_what_it_drew_cell_by_cell() -> None:
    """The report's long tables (`_Grid`) format each (string, font subset) once: the PDF is
    byte for byte the one drawn a text object call per cell, as before."""
    import io

    from reportlab.pdfbase.pdfmetrics import stringWidth
    from reportlab.pdfgen import canvas
    from reportlab.platypus import Frame

    from exports import report_pdf

    class CellByCell(report_pdf._Grid):
        def draw(self) -> None:  # the drawing before formatting was shared (text part)
            c, h = self.canv, self.row_h
            top = h * (len(self.rows) + 1)
            text = c.beginText()
            text.setFont(self.font, self.size)
            text.setFillColor(report_pdf.colors.black)
            xs = [sum(self.widths[:i]) for i in range(len(self.widths))]
            for i, row in enumerate([self.head, *self.rows]):
                y = top - h * (i + 1) + 2 + (h - 4 - self.size) / 2 + 1
                for j, value in enumerate(row):
                    if not value:
                        continue
                    x = xs[j] + 6
                    if j in self.numeric:
                        x = xs[j] + self.widths[j] - 6 - stringWidth(value, self.font,
                                                                     self.size)
                    text.setTextOrigin(x, y)
                    text.textOut(value)
            c.drawText(text)

    class Ours(report_pdf._Grid):
        def draw(self) -> None:  # only the text part, to compare like with like
            c = self.canv
            c.saveState()
            real = c.rect, c.line
            c.rect = c.line = lambda *_a, **_k: None  # type: ignore[method-assign]
            try:
                super().draw()
            finally:
                c.rect, c.line = real  # type: ignore[method-assign]
            c.restoreState()

    font = report_pdf._Fonts().base
    rows = [[f"user-{i % 37:05d}", "person" if i % 3 else "entity", f"{i % 7:,}",
             f"{(i * 7919) % 100_000:,}", "", "Zoë Ünal" if i % 11 == 0 else "-"]
            for i in range(300)]
    head = ["recipient", "to", "opened", "IDs", "empty", "name"]

    def pdf(kind: type[report_pdf._Grid]) -> bytes:
        buf = io.BytesIO()
        c = canvas.Canvas(buf, invariant=1, pageCompression=0)
        grid = kind(head, rows[:60], [120, 60, 50, 80, 40, 90], (2, 3), font)
        Frame(0, 0, 800, 1200).addFromList([grid], c)
        c.showPage()
        c.save()
        return buf.getvalue()

    def text_ops(data: bytes) -> bytes:  # the grid's text object: BT ... ET
        return data[data.rindex(b"BT"):data.rindex(b"ET") + 2]

    ours, before = text_ops(pdf(Ours)), text_ops(pdf(CellByCell))
    assert ours.count(b" Tj") == 60 * 5 + 6  # every cell but the empty ones, and the header
    assert ours == before
