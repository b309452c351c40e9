"""Deletion notices where people look (issue 15 items 2-3, R9): an analyst's own open notices on
the export page with the files of what to delete (their own only), the compliance officer's
list, notice page and acknowledgement form (compliance only, CSRF), the dashboard's open
notices overdue first, the monthly report's notices per recipient, and the data team's page:
its own entity's open notices with their files, no one else's (both backends).

The store's clock is fixed (`FixedClock`) so that a notice can be overdue: March 2026, ana
exports 20 posts and bea 10, dan shares one of them to acme; at 11:00 a deletion list hides
that post (three notices, deadline 11:00 the next day); at 17:00 the next day a second list
hides a post only ana received (one notice).
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from live import PASSWORD, SAMPLES, form_token, sign_in

from exports import report_pdf
from gatekeeper import config as config_mod
from gatekeeper.channels.cli import context as cli_context
from gatekeeper.channels.cli import main as cli
from gatekeeper.domain import shares
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate, ingest_deletion_stream
from gatekeeper.domain.hydrated import Selection, export
from gatekeeper.domain.notices import Notice
from gatekeeper.domain.report import month_report
from gatekeeper.ledger import keys
from gatekeeper.ledger.clock import FixedClock

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

HOUR = 3_600_000
START = int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp() * 1000)


class World:
    def __init__(self, gate: Gate, clock: FixedClock, notices: dict[str, Notice],
                 later: Notice) -> None:
        self.gate, self.clock, self.later = gate, clock, later
        self.ana, self.bea, self.acme = notices["ana"], notices["bea"], notices["acme"]


def _export(g: Gate, who: str, limit: int) -> list[int]:
    result = export(g, g.users.get(who), Selection("kpop", Filters(), g.deletions.current(),
                                                   limit=limit),
                    fmt="xlsx", with_users=False, channel="web")
    result.file.close()
    [name] = [n for n in g.manifests.listed()
              if g.manifests.read(n).meta.get("delivery") == result.share_id]
    return [int(i) for i in g.manifests.read(name).posts.tolist()]


def _ingest(g: Gate, ids: list[int], source: str) -> list[str]:
    report = ingest_deletion_stream(g, [f"{i}\n".encode() for i in ids], kind="posts",
                                    source=source, actor="cora", channel="cli")
    return list(report.notices)


@pytest.fixture
def world(tmp_path: Path, redis_client: redis.Redis) -> World:
    clock = FixedClock(redis_client, START)
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 1000\nhydrated_per_recipient = 1000\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=clock.client, clock=clock)
    g.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    for name, role in (("ana", "analyst"), ("bea", "analyst"), ("dan", "data"),
                       ("cora", "compliance")):
        g.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                    channel="cli")
    for name in ("ana", "bea"):
        g.users.accept_terms(name, actor=name, channel="web")
    clock.set(START + HOUR)
    ana_posts = _export(g, "ana", 20)
    bea_posts = _export(g, "bea", 10)
    shared = sorted(set(ana_posts) & set(bea_posts))[0]
    only_ana = sorted(set(ana_posts) - set(bea_posts))[0]
    ids = tmp_path / "share.txt"
    ids.write_text(f"{shared}\n")
    shares.share_to_file(g, actor="dan", entity="acme", ids_path=ids, out=tmp_path / "out.txt",
                         purpose="t")
    clock.set(START + 2 * HOUR)
    first = [g.notices.get(i) for i in _ingest(g, [shared], "x-2026-03-10.txt")]
    assert len(first) == 3
    clock.set(START + 32 * HOUR)  # 17:00 the next day: the first three are 6 h overdue
    [later] = [g.notices.get(i) for i in _ingest(g, [only_ana], "x-2026-03-11.txt")]
    assert later.recipient == "ana"
    return World(g, clock, {n.recipient: n for n in first}, later)


@pytest.fixture
def app(world: World) -> Flask:
    from gatekeeper.channels.web.app import create_app

    return create_app(world.gate, {"TESTING": True, "SECRET_KEY": "test"})


@pytest.fixture
def people(app: Flask) -> Iterator[dict[str, FlaskClient]]:
    """A signed-in test client per person."""
    clients = {}
    for name in ("ana", "bea", "dan", "cora"):
        c = app.test_client()
        assert sign_in(c, name, PASSWORD) == 302
        clients[name] = c
    yield clients


def page(client: FlaskClient, url: str, status: int = 200) -> str:
    resp = client.get(url)
    assert resp.status_code == status, resp.get_data(as_text=True)[:400]
    return resp.get_data(as_text=True)


def audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.SYS_AUDIT)]


def test_an_analyst_sees_their_own_open_notices_on_the_export_page_overdue_marked(
        world: World, people: dict[str, FlaskClient]) -> None:
    # Where ana lands after signing in: the export page, with what she must delete.
    assert people["ana"].get("/").headers["Location"].endswith("/export")
    html = page(people["ana"], "/export")
    mine = html[html.index('id="my-notices"'):html.index('id="allowance"')]
    assert f'data-notice="{world.ana.id}"' in mine and f'data-notice="{world.later.id}"' in mine
    assert world.bea.id not in html and world.acme.id not in html
    # Deadline, time left or overdue, which file, how many to delete, and the downloads.
    assert "overdue by 6 h" in mine and "24 h left" in mine
    assert "2026-03-11 11:00 UTC" in mine  # the first deadline: the ingest + 24 h
    [delivery] = world.ana.deliveries
    assert delivery.file and re.fullmatch(r"kpop-ana-\d{8}T\d{6}\.xlsx", delivery.file)
    assert delivery.file in mine
    assert f"/notices/{world.ana.id}/files/posts.txt" in mine
    assert f"/notices/{world.ana.id}/files/letter.pdf" in mine
    # bea sees her own only.
    html = page(people["bea"], "/export")
    assert world.bea.id in html and world.ana.id not in html and world.later.id not in html
    # Acknowledged, it leaves the page.
    world.gate.notices.ack(world.ana.id, by="ana herself", actor="cora", channel="cli")
    html = page(people["ana"], "/export")
    assert world.ana.id not in html and world.later.id in html


def test_an_analyst_downloads_the_ids_to_delete_and_the_letter_of_their_own_notice_only(
        world: World, people: dict[str, FlaskClient]) -> None:
    ana = people["ana"]
    resp = ana.get(f"/notices/{world.ana.id}/files/posts.txt")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert f'filename="notice-{world.ana.id}-posts.txt"' in resp.headers["Content-Disposition"]
    assert [int(x) for x in resp.get_data(as_text=True).split()] == \
        world.gate.notices.ids(world.ana.id).posts().tolist()
    resp.close()
    resp = ana.get(f"/notices/{world.ana.id}/files/letter.pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    with pdfplumber.open(io.BytesIO(resp.get_data())) as pdf:
        letter = " ".join(p.extract_text() or "" for p in pdf.pages)
    resp.close()
    assert world.ana.id in letter and "ana" in letter
    exported = [r for r in audit(world.gate) if r.get("kind") == "notices.export"]
    assert [(r["actor"], r["channel"], r["request_id"]) for r in exported] == [
        ("ana", "web", world.ana.id)] * 2
    # Another analyst's notice, an entity's, an unknown one: all "no such notice".
    for ident in (world.bea.id, world.acme.id, "0" * 32):
        for name in ("posts.txt", "letter.pdf"):
            assert ana.get(f"/notices/{ident}/files/{name}").status_code == 404
    assert ana.get(f"/notices/{world.ana.id}/files/users.txt").status_code == 404  # none
    assert ana.get(f"/notices/{world.ana.id}/files/other.bin").status_code == 404
    resp = people["bea"].get(f"/notices/{world.bea.id}/files/posts.txt")
    assert resp.status_code == 200
    resp.close()
    # A data user downloads no analyst's notice (their own entity's: below); compliance any
    # notice's files.
    assert people["dan"].get(f"/notices/{world.ana.id}/files/posts.txt").status_code == 404
    resp = people["cora"].get(f"/notices/{world.acme.id}/files/posts.txt")
    assert resp.status_code == 200 and resp.get_data(as_text=True).split() == [
        str(i) for i in world.gate.notices.ids(world.acme.id).posts().tolist()]
    resp.close()
    assert len([r for r in audit(world.gate) if r.get("kind") == "notices.export"]) == 4


def test_only_compliance_sees_the_notice_pages_and_acknowledges(
        world: World, app: Flask, people: dict[str, FlaskClient]) -> None:
    for who in ("ana", "bea", "dan"):
        c = people[who]
        assert c.get("/notices").status_code == 403
        assert c.get(f"/notices/{world.ana.id}").status_code == 403
        token = form_token(page(c, "/account"))
        assert c.post(f"/notices/{world.ana.id}/ack",
                      data={"by": "me", "csrf_token": token}).status_code == 403
        assert "Notices</a>" not in page(c, "/account")
    assert world.gate.notices.get(world.ana.id).open
    assert "Notices</a>" in page(people["cora"], "/account")
    # Signed out: to the sign-in page.
    assert "/login" in app.test_client().get("/notices").headers["Location"]


def test_compliance_lists_open_notices_overdue_first_and_acknowledges_one(
        world: World, people: dict[str, FlaskClient]) -> None:
    cora = people["cora"]
    html = page(cora, "/notices")
    order = re.findall(r'<tr data-notice="([0-9a-f]{32})" class="([a-z]*)"', html)
    overdue = sorted([world.ana, world.bea, world.acme], key=lambda n: n.id)
    assert [i for i, _c in order[:3]] == [n.id for n in overdue]  # same deadline: by id
    assert [c for _i, c in order] == ["over"] * 3 + [""]
    assert order[3][0] == world.later.id
    assert "30 h" in html  # age of the first three against 24 h

    detail = page(cora, f"/notices/{world.acme.id}")
    assert "Deletion notice to entity acme" in detail and "overdue by 6 h" in detail
    assert "share.posts" in detail and 'id="ack"' in detail
    token = form_token(detail)
    # No one named: refused, nothing recorded.
    resp = cora.post(f"/notices/{world.acme.id}/ack", data={"by": " ", "csrf_token": token})
    assert resp.status_code == 400 and "--by" in resp.get_data(as_text=True)
    assert world.gate.notices.get(world.acme.id).open
    # Without the form's CSRF token: refused, nothing recorded.
    assert cora.post(f"/notices/{world.acme.id}/ack",
                     data={"by": "Jane Doe (acme DPO)"}).status_code == 400
    assert world.gate.notices.get(world.acme.id).open

    world.clock.set(START + 33 * HOUR)
    resp = cora.post(f"/notices/{world.acme.id}/ack",
                     data={"by": "Jane Doe (acme DPO)", "note": "mail of 11 March",
                           "csrf_token": token})
    assert resp.status_code == 302
    done = world.gate.notices.get(world.acme.id)
    assert (done.state, done.acked_by, done.acked_note, done.acked_actor) == (
        "acknowledged", "Jane Doe (acme DPO)", "mail of 11 March", "cora")
    [record] = [r for r in audit(world.gate) if r.get("kind") == "notices.ack"]
    assert (record["actor"], record["channel"], record["request_id"]) == (
        "cora", "web", world.acme.id)
    assert "after its deadline" in record["message"]
    detail = page(cora, resp.headers["Location"])
    assert "acknowledged late" in detail and "Jane Doe (acme DPO)" in detail
    assert 'id="ack"' not in detail
    # Once: a second confirmation is a conflict.
    resp = cora.post(f"/notices/{world.acme.id}/ack", data={"by": "x", "csrf_token": token})
    assert resp.status_code == 409
    assert world.acme.id not in page(cora, "/notices")
    assert world.acme.id in page(cora, "/notices?show=all")
    assert cora.get(f"/notices/{'0' * 32}").status_code == 404


def test_the_dashboard_shows_open_notices_against_24_hours_overdue_first(
        world: World, people: dict[str, FlaskClient]) -> None:
    html = page(people["cora"], "/dashboard")
    panel = html[html.index('id="notices-panel"'):html.index('id="daily-h"')]
    assert re.search(r'id="n-notices-open"[^>]*>4<', panel)
    assert re.search(r'id="n-notices-overdue"[^>]*>3<', panel)
    rows = re.findall(r'<tr data-notice="([0-9a-f]{32})" class="([a-z]*)"', panel)
    assert [c for _i, c in rows] == ["over"] * 3 + [""] and rows[3][0] == world.later.id
    assert "Age / 24 h" in panel and "/notices/" + world.later.id in panel


def test_the_dashboard_reads_a_bounded_number_of_notices(
        world: World, people: dict[str, FlaskClient], monkeypatch: pytest.MonkeyPatch) -> None:
    """However many notices are open, the dashboard reads their count and the first few."""
    from gatekeeper.domain import noticeboard

    monkeypatch.setattr(noticeboard, "SHOWN", 2)
    read: list[int] = []
    many = world.gate.notices._many

    def counted(ids: Any) -> list[Notice]:
        read.append(len(list(ids)))
        return many(ids)

    monkeypatch.setattr(world.gate.notices, "_many", counted)
    monkeypatch.setattr(world.gate.notices, "listing", lambda *a, **k: pytest.fail("read all"))
    html = page(people["cora"], "/dashboard")
    assert read == [2]
    assert "All 4 open notices" in html


def test_the_monthly_report_counts_notices_opened_acknowledged_and_overdue_per_recipient(
        world: World, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    g, clock = world.gate, world.clock
    clock.set(START + 34 * HOUR)
    g.notices.ack(world.bea.id, by="bea", actor="cora", channel="cli")  # late
    clock.set(START + 40 * HOUR)
    g.notices.ack(world.later.id, by="ana", actor="cora", channel="cli")  # in time
    data = month_report(g, "2026-03", actor="cora")
    rows = {(r.recipient_kind, r.recipient): r for r in data.notices}
    assert list(rows) == [("person", "ana"), ("person", "bea"), ("entity", "acme")]
    got = {k: (r.opened, r.acknowledged, r.acknowledged_late, r.overdue, r.open_at_end)
           for k, r in rows.items()}
    assert got == {("person", "ana"): (2, 1, 0, 1, 1), ("person", "bea"): (1, 1, 1, 1, 0),
                   ("entity", "acme"): (1, 0, 0, 1, 1)}
    assert rows[("person", "ana")].ids == world.ana.ids + world.later.ids
    assert [n.id for n in data.notices_overdue] == sorted(
        [world.ana.id, world.bea.id, world.acme.id])
    summary = data.summary()
    assert (summary["notices_opened"], summary["notices_acknowledged"],
            summary["notices_overdue"]) == (4, 2, 3)
    assert data.to_dict()["notices"][0]["recipient"] == "ana"
    # The month before saw none; the PDF lays them out.
    assert month_report(g, "2026-02", actor="cora").notices == []
    buf = io.BytesIO()
    report_pdf.write_report_pdf(data, buf)
    with pdfplumber.open(io.BytesIO(buf.getvalue())) as pdf:
        text = " ".join(" ".join((p.extract_text() or "").split()) for p in pdf.pages)
    assert "Deletion notices to the recipients (R9)" in text
    assert "Overdue notices" in text and world.acme.id in text
    assert "Deletion notices opened (R9) 4 2 acknowledged, 3 overdue" in text
    # The command says so too (and its --json summary carries the counts).
    monkeypatch.setattr(cli_context, "Gate", lambda _config: g)
    r = CliRunner().invoke(cli.main, ["--config", str(tmp_path / "config.toml"), "report",
                                      "--month", "2026-03", "--out", str(tmp_path / "r.pdf")],
                           catch_exceptions=False)
    assert r.exit_code == 0 and "4 deletion notices opened, 3 overdue" in r.output, r.output


# --- the data team's page: its own entity's open notices (R9) ---------------------------------

class Entities:
    """`World` and more: globex with its data user gil; two more lists reach acme's ID shares.

    At 18:00 the next day (START + 33 h) dan shares A1 and A2 to acme, gil G1 to globex; at
    19:00 a list hides A1 and G1 (acme's second notice, globex's first), at 20:00 one hides A2
    (acme's third). Seen at 21:00: acme's first notice is 10 h overdue, its second has 22 h
    left, its third 23 h."""

    def __init__(self, world: World, acme: list[Notice], globex: Notice,
                 clients: dict[str, FlaskClient]) -> None:
        self.world, self.gate = world, world.gate
        self.acme = [world.acme, *acme]  # nearest deadline first
        self.globex = globex
        self.clients = clients


def _share(g: Gate, tmp_path: Path, who: str, entity: str, ids: list[int], out: str) -> str:
    path = tmp_path / f"ids-{out}"
    path.write_text("".join(f"{i}\n" for i in ids))
    shares.share_to_file(g, actor=who, entity=entity, ids_path=path, out=tmp_path / out,
                         purpose="t")
    return out


A1, A2, G1 = 1_700_000_000_000_000_001, 1_700_000_000_000_000_002, 1_700_000_000_000_000_003


@pytest.fixture
def entities(world: World, app: Flask, people: dict[str, FlaskClient],
             tmp_path: Path) -> Entities:
    g, clock = world.gate, world.clock
    g.entities.add("globex", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("globex", by="Gil's lawyer", actor="t", channel="cli")
    g.users.add("gil", entity="globex", role="data", password=PASSWORD, actor="t",
                channel="cli")
    clock.set(START + 33 * HOUR)
    _share(g, tmp_path, "dan", "acme", [A1, A2], "to-acme-2.txt")
    _share(g, tmp_path, "gil", "globex", [G1], "to-globex.txt")
    clock.set(START + 34 * HOUR)
    second = {n.recipient: n for n in map(g.notices.get, _ingest(g, [A1, G1], "x-3.txt"))}
    assert set(second) == {"acme", "globex"}
    clock.set(START + 35 * HOUR)
    [third] = [g.notices.get(i) for i in _ingest(g, [A2], "x-4.txt")]
    assert third.recipient == "acme"
    clock.set(START + 36 * HOUR)
    gil = app.test_client()
    assert sign_in(gil, "gil", PASSWORD) == 302
    return Entities(world, [second["acme"], third], second["globex"], {**people, "gil": gil})


def entity_panel(html: str) -> str:
    assert 'id="entity-notices"' in html
    return html[html.index('id="entity-notices"'):html.index("Entities you share with")]


def test_a_data_user_sees_their_entitys_open_notices_on_the_data_page_overdue_first(
        entities: Entities) -> None:
    dan = entities.clients["dan"]
    # Where dan lands after signing in: the data page, with what acme must delete.
    assert dan.get("/").headers["Location"].endswith("/data")
    panel = entity_panel(page(dan, "/data"))
    order = re.findall(r'data-notice="([0-9a-f]{32})"', panel)
    assert order == [n.id for n in entities.acme]  # nearest deadline first, not newest first
    assert re.search(r'id="n-entity-open"[^>]*>3<', panel)
    assert re.search(r'id="n-entity-overdue"[^>]*>1<', panel)
    assert "overdue by 10 h" in panel and "22 h left" in panel and "23 h left" in panel
    assert "age 34 h / 24 h" in panel  # the first: the list came in at 11:00 the day before
    assert "2026-03-11 11:00 UTC" in panel  # its deadline: the ingest + 24 h
    # Each delivery: when, which file, the share's id; the downloads of what to delete.
    for n in entities.acme:
        for d in n.deliveries:
            assert f"<code>{d.delivery}</code>" in panel
        assert f"/notices/{n.id}/files/posts.txt" in panel
        assert f"/notices/{n.id}/files/letter.pdf" in panel
    assert "to-acme-2.txt" in panel and "out.txt" in panel
    # Compliance records the deletion: no form here, and the page says so.
    assert "your compliance officer records the deletion" in panel
    assert "/ack" not in panel and 'name="by"' not in panel
    # Nobody else's: not globex's, not the analysts' (their exports are theirs).
    html = page(dan, "/data")
    for other in (entities.globex, entities.world.ana, entities.world.bea,
                  entities.world.later):
        assert other.id not in html
    # gil sees globex's only.
    panel = entity_panel(page(entities.clients["gil"], "/data"))
    assert re.findall(r'data-notice="([0-9a-f]{32})"', panel) == [entities.globex.id]
    assert "to-globex.txt" in panel
    # Acknowledged (by compliance), a notice leaves the page; none open: no panel.
    entities.gate.notices.ack(entities.acme[0].id, by="acme DPO", actor="cora", channel="cli")
    panel = entity_panel(page(dan, "/data"))
    assert re.findall(r'data-notice="([0-9a-f]{32})"', panel) == [
        n.id for n in entities.acme[1:]]
    assert re.search(r'id="n-entity-overdue"[^>]*>0<', panel)
    entities.gate.notices.ack(entities.globex.id, by="globex DPO", actor="cora", channel="cli")
    assert 'id="entity-notices"' not in page(entities.clients["gil"], "/data")


def test_a_data_user_downloads_their_own_entitys_notice_files_and_no_one_elses(
        entities: Entities) -> None:
    dan, gil = entities.clients["dan"], entities.clients["gil"]
    acme = entities.acme[0]
    # The analysts' download route and code: the ID file and the letter, no-store, audited.
    resp = dan.get(f"/notices/{acme.id}/files/posts.txt")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    assert f'filename="notice-{acme.id}-posts.txt"' in resp.headers["Content-Disposition"]
    assert [int(x) for x in resp.get_data(as_text=True).split()] == \
        entities.gate.notices.ids(acme.id).posts().tolist()
    resp.close()
    resp = dan.get(f"/notices/{acme.id}/files/letter.pdf")
    assert resp.status_code == 200 and resp.mimetype == "application/pdf"
    with pdfplumber.open(io.BytesIO(resp.get_data())) as pdf:
        letter = " ".join(p.extract_text() or "" for p in pdf.pages)
    resp.close()
    assert acme.id in letter and "acme" in letter
    exported = [r for r in audit(entities.gate) if r.get("kind") == "notices.export"]
    assert [(r["actor"], r["channel"], r["request_id"]) for r in exported] == [
        ("dan", "web", acme.id)] * 2
    resp = gil.get(f"/notices/{entities.globex.id}/files/posts.txt")
    assert resp.status_code == 200 and resp.get_data(as_text=True).split() == [str(G1)]
    resp.close()
    # Another entity's notice, an analyst's, an unknown one: "no such notice", on every file.
    for client, ident in ((gil, acme.id), (dan, entities.globex.id),
                          (dan, entities.world.ana.id), (dan, "0" * 32)):
        for name in ("posts.txt", "users.txt", "letter.pdf", "other.bin"):
            assert client.get(f"/notices/{ident}/files/{name}").status_code == 404
    assert dan.get(f"/notices/{acme.id}/files/users.txt").status_code == 404  # none
    # An analyst of acme did not receive acme's ID shares: not hers either.
    assert entities.clients["ana"].get(f"/notices/{acme.id}/files/posts.txt").status_code == 404
    # A data user still neither lists nor acknowledges notices (compliance, R12).
    assert dan.get("/notices").status_code == 403
    assert dan.get(f"/notices/{acme.id}").status_code == 403
    assert entities.gate.notices.get(acme.id).open
    assert len([r for r in audit(entities.gate) if r.get("kind") == "notices.export"]) == 3


def test_the_data_page_reads_a_bounded_number_of_its_entitys_notices(
        entities: Entities, monkeypatch: pytest.MonkeyPatch) -> None:
    """However many notices its entity has open, the data page reads their count and the
    first few hashes, and never a whole listing or history."""
    from gatekeeper.domain import noticeboard

    monkeypatch.setattr(noticeboard, "SHOWN", 2)
    read: list[int] = []
    many = entities.gate.notices._many

    def counted(ids: Any) -> list[Notice]:
        ids = list(ids)
        read.append(len(ids))
        return many(ids)

    monkeypatch.setattr(entities.gate.notices, "_many", counted)
    for name in ("listing", "open_for_entity", "open_for_person"):
        monkeypatch.setattr(entities.gate.notices, name, lambda *a, **k: pytest.fail("all"))
    panel = entity_panel(page(entities.clients["dan"], "/data"))
    assert read == [2]
    assert re.findall(r'data-notice="([0-9a-f]{32})"', panel) == [
        n.id for n in entities.acme[:2]]
    assert re.search(r'id="n-entity-open"[^>]*>3<', panel)
    assert "The 2 nearest deadlines of 3 open notices" in panel


def test_an_entitys_notice_is_addressed_to_its_own_data_team_only_not_its_pools() -> None:
    """`rules.notices.addressed_to`: a person's notice to that person; an entity's to a
    data-team member of that very entity — not its analysts, not the data team of its pool's
    parent or of another child (each entity holds what was delivered to it)."""
    from types import SimpleNamespace

    from gatekeeper.rules import notices as policy

    def user(name: str, entity: str, role: str, root: str = "acme") -> Any:
        return SimpleNamespace(name=name, entity=entity, role=role, root=root,
                               accepted_terms=True)

    dan, lab = user("dan", "acme", "data"), user("lab", "acme-labs", "data")
    ana = user("ana", "acme", "analyst")
    assert policy.addressed_to(dan, policy.ENTITY, "acme")
    assert policy.addressed_to(lab, policy.ENTITY, "acme-labs")
    assert not policy.addressed_to(dan, policy.ENTITY, "acme-labs")  # the pool's child's
    assert not policy.addressed_to(lab, policy.ENTITY, "acme")  # the pool's parent's
    assert not policy.addressed_to(ana, policy.ENTITY, "acme")  # an analyst of it
    assert not policy.addressed_to(user("cora", "acme", "compliance"), policy.ENTITY, "acme")
    assert policy.addressed_to(ana, policy.PERSON, "ana")
    assert not policy.addressed_to(dan, policy.PERSON, "ana")  # an analyst's export
    assert not policy.addressed_to(ana, policy.PERSON, "bea")
