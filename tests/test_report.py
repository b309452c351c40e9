"""The auditor's monthly report: a known month of history in, exact figures out, in the data and
in the PDF's text; the CLI writes the file atomically; the page is for compliance and admin.

The history is made through the library's own paths (entities, users, shares, exports, deletion
ingests), on fakeredis and on the real server, with the gate's clock fixed at chosen instants
(gatekeeper.ledger.clock.FixedClock) so that every record, stream ID and counter bucket falls
where the month under test needs it.
"""

from __future__ import annotations

import contextlib
import io
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pypdf
import pytest
import redis
from click.testing import CliRunner
from flask import Flask
from flask.testing import FlaskClient
from live import sign_in

from gatekeeper import config as config_mod
from gatekeeper.channels.cli import context as cli_context
from gatekeeper.channels.cli import main as cli
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain import shares
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate, ingest_deletions, set_parent
from gatekeeper.domain.hydrated import Selection, export
from gatekeeper.domain.report import month_report
from gatekeeper.ledger import keys
from gatekeeper.ledger.clock import FixedClock
from gatekeeper.rules.errors import BadInput, Conflict, Forbidden, QuotaExceeded
from gatekeeper.rules.periods import Pool, PoolLink, PoolMember

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"
MONTH = "2026-03"
FIRST_KPOP = 1440717170493689866  # the first post of kpop.jsonl


def ms(when: str) -> int:
    return int(datetime.fromisoformat(when).replace(tzinfo=UTC).timestamp() * 1000)


class Clock:
    """The gate's clock, moved by the test: a FixedClock every path of the library reads (the
    scripts' `now`, the audit records' stream IDs, Python's appends), so the same history is
    built on fakeredis and on the real server, whose TIME cannot be moved."""

    def __init__(self, client: redis.Redis) -> None:
        self.fixed = FixedClock(client, ms("2026-02-01T00:00:00"))

    def at(self, when: str) -> None:
        self.fixed.set(ms(when))


@pytest.fixture
def clock(redis_client: redis.Redis) -> Clock:
    return Clock(redis_client)


@pytest.fixture
def gate(tmp_path: Path, clock: Clock) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 1000\nhydrated_per_recipient = 30\n'
        '[datasets]\ndir = "datasets"\n')
    return Gate(config_mod.load(tmp_path / "config.toml"), client=clock.fixed.client,
                clock=clock.fixed)


def ids(start: int, n: int) -> list[bytes]:
    return [str(start + i).encode() for i in range(n)]


def share(gate: Gate, entity: str, lines: list[bytes], *, kind: str = "posts",
          partial: bool = False, key: str | None = None, fail: bool = False) -> Any:
    """An ID share the way the CLI and API make one: authorise, select, reserve, deliver."""
    auth = shares.authorise(gate, actor="dana", entity=entity, kind=kind, channel="cli",
                            purpose="study")
    with shares.select_ids(lines, "test", kind, gate.deletions.current()) as sel:
        res = shares.reserve(gate, auth, sel, kind=kind, allow_partial=partial,
                             idempotency_key=key)

        def write() -> None:
            if fail:
                raise OSError("disk full")

        if res.grant.status != "replay":
            with contextlib.suppress(OSError):  # refunded
                res.deliver(write)
        return res


def hydrate(gate: Gate, fmt: str, n: int) -> Any:
    selection = Selection("kpop", Filters(), gate.deletions.current(), limit=n)
    result = export(gate, gate.users.get("ana"), selection, fmt=fmt, with_users=False,
                    channel="web")
    result.file.close()
    return result


@pytest.fixture
def history(gate: Gate, clock: Clock, tmp_path: Path) -> Gate:
    """February's set-up, March's traffic (the month under test), and a share on April 1."""
    e, u = gate.entities, gate.users
    clock.at("2026-02-10T09:00:00")
    e.add("acme", kind="commercial", research=False, parent=None, actor="root", channel="cli")
    e.add("acme-labs", kind="commercial", research=False, parent="acme", actor="root",
          channel="cli")
    e.add("uni", kind="academic", research=True, parent=None, actor="root", channel="cli")
    e.add("poly", kind="academic", research=False, parent=None, actor="root", channel="cli")
    e.add("beta", kind="commercial", research=False, parent=None, actor="root", channel="cli")
    for name in ("acme", "acme-labs", "uni", "poly"):  # beta never attests (R8)
        e.accept_terms(name, by="山田 太郎", actor="root", channel="cli")
    u.add("dana", entity="acme", role="data", password=PASSWORD, actor="root", channel="cli")
    u.add("ana", entity="beta", role="analyst", password=PASSWORD, actor="root", channel="cli")
    u.add("cora", entity="acme", role="compliance", password=PASSWORD, actor="root",
          channel="cli")
    u.accept_terms("ana", actor="ana", channel="web")
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="root", channel="cli")
    clock.at("2026-02-20T09:00:00")
    e.permit("acme", limit=2000, until_ms=ms("2026-03-16T00:00:00"),
             reference="X-LGL-7 разрешение 許可", actor="cora", channel="web")
    clock.at("2026-02-25T12:00:00")
    share(gate, "acme", ids(10_000, 100))  # before the month: only in the 30-day totals

    clock.at("2026-03-02T10:00:00")
    share(gate, "acme", ids(20_000, 600), key="job-1")
    clock.at("2026-03-03T10:00:00")
    share(gate, "acme", ids(30_000, 50), kind="users")
    clock.at("2026-03-04T10:00:00")
    share(gate, "acme-labs", ids(40_000, 300))  # R10: charged to its pool (acme) too
    clock.at("2026-03-05T10:00:00")
    share(gate, "uni", ids(50_000, 2000))  # R3: exempt, counted
    clock.at("2026-03-06T10:00:00")
    assert share(gate, "acme", ids(20_000, 600), key="job-1").grant.status == "replay"
    clock.at("2026-03-06T11:00:00")
    with pytest.raises(Conflict):  # the key again (kept 7 days), for another request
        share(gate, "acme", ids(96_000, 5), key="job-1")
    clock.at("2026-03-07T10:00:00")
    with pytest.raises(Forbidden):
        share(gate, "beta", ids(60_000, 10))  # R8: denied
    clock.at("2026-03-08T10:00:00")
    assert share(gate, "acme", ids(70_000, 100), fail=True).settled == "refunded"
    clock.at("2026-03-10T10:00:00")
    listed = tmp_path / "tweets_deleted.txt"
    listed.write_text(f"{FIRST_KPOP}\n80000\n80001\n")
    ingest_deletions(gate, listed, kind=None, actor="cora", channel="cli")
    clock.at("2026-03-11T10:00:00")
    assert share(gate, "acme", ids(79_900, 200)).removed == 2  # 80000, 80001 withheld (R9)
    clock.at("2026-03-12T10:00:00")
    partial = share(gate, "acme", ids(90_000, 1500), partial=True)
    assert (partial.grant.status, partial.grant.granted) == ("partial", 802)
    clock.at("2026-03-13T10:00:00")
    with pytest.raises(QuotaExceeded):
        share(gate, "acme", ids(95_000, 10))  # R2: refused whole
    clock.at("2026-03-17T10:00:00")
    e.permit("beta", limit=5000, until_ms=ms("2026-05-01T00:00:00"), reference="X-LGL-8",
             actor="cora", channel="web")
    clock.at("2026-03-20T10:00:00")
    e.set_academic("uni", kind="academic", research=False, evidence="", actor="cora",
                   channel="web")
    clock.at("2026-03-21T10:00:00")
    e.set_academic("poly", kind="academic", research=True,
                   evidence="Πανεπιστήμιο ethics approval 2026/14", actor="cora", channel="web")
    clock.at("2026-03-22T12:00:00")
    hydrate(gate, "xlsx", 20)
    clock.at("2026-03-23T10:00:00")
    with pytest.raises(QuotaExceeded):
        hydrate(gate, "xlsx", 15)  # R6: 20 + 15 > 30 within 24 hours
    clock.at("2026-03-24T13:00:00")
    hydrate(gate, "pdf", 5)
    clock.at("2026-03-25T10:00:00")
    e.revoke_permit("beta", reason="superseded", actor="cora", channel="web")
    clock.at("2026-03-28T10:00:00")
    share(gate, "poly", ids(100_000, 500))
    clock.at("2026-04-01T00:00:30")
    share(gate, "poly", ids(110_000, 70))  # after the month
    clock.at("2026-04-02T09:00:00")
    return gate


def records_in_march(gate: Gate) -> int:
    streams = [keys.SYS_AUDIT, *(s.decode() for s in gate.client.smembers(keys.AUDIT_STREAMS))]
    return sum(len(gate.client.xrange(s, f"{ms('2026-03-01T00:00:00')}-0",
                                      f"{ms('2026-04-01T00:00:00') - 1}-18446744073709551615"))
               for s in streams)


# --- the data -----------------------------------------------------------------------------------


def test_month_totals_are_grants_minus_refunds_and_replays_count_zero(history: Gate) -> None:
    r = month_report(history, MONTH, actor="cora")
    rows = {e.name: e for e in r.entities}
    assert [e.name for e in r.entities] == ["uni", "acme", "poly", "acme-labs", "beta"]
    assert r.idle_entities == []
    acme = rows["acme"].totals
    assert acme.net == {"share.posts": 600 + 100 - 100 + 198 + 802, "share.users": 50,
                        "export.xlsx": 0, "export.pdf": 0}
    assert (acme.requests, acme.partial, acme.replays, acme.refunded, acme.refusals) == \
        (5, 1, 1, 100, 2)
    assert rows["acme-labs"].totals.net["share.posts"] == 300
    assert rows["uni"].totals.net["share.posts"] == 2000
    assert rows["poly"].totals.net["share.posts"] == 500  # April's 70 is not March's
    beta = rows["beta"].totals
    assert beta.net == {"share.posts": 0, "share.users": 0, "export.xlsx": 20, "export.pdf": 5}
    assert (beta.requests, beta.refusals) == (2, 2)  # R8 denial, R6 refusal
    assert {k: r.total(k) for k in ("share.posts", "share.users", "export.xlsx",
                                    "export.pdf")} == \
        {"share.posts": 4400, "share.users": 50, "export.xlsx": 20, "export.pdf": 5}
    people = {x.name: x for x in r.recipients}
    assert people["ana"].person and people["ana"].entity == "beta"
    assert people["ana"].totals.net["export.xlsx"] == 20
    assert not people["acme"].person and people["acme"].totals.net["share.posts"] == 1600
    assert r.records == records_in_march(history)


def test_refusals_are_grouped_by_rule_and_listed(history: Gate) -> None:
    r = month_report(history, MONTH)
    groups = {(g.rule, g.outcome): (g.count, g.requested, sorted(g.entities))
              for g in r.refusals}
    assert groups == {("R2", "refused"): (1, 10, ["acme"]),
                      ("R6", "refused"): (1, 15, ["beta"]),
                      ("R8", "denied"): (1, 0, ["beta"]),
                      ("idempotency", "conflict"): (1, 5, ["acme"])}
    assert r.refusal_count == 4
    assert [e.at_ms for e in r.refusal_events] == sorted(e.at_ms for e in r.refusal_events)


def test_peaks_use_the_limit_in_force_at_each_days_end(history: Gate) -> None:
    r = month_report(history, MONTH)
    rows = {e.name: e for e in r.entities}
    acme = rows["acme"]  # the pool's counter: acme and acme-labs
    assert acme.daily[1:12] == [600, 0, 300, 0, 0, 0, 0, 0, 0, 198, 802]  # refund taken back
    assert (acme.peak_day, acme.peak_day_amount) == ("2026-03-12", 802)
    # 100 on Feb 25 + March's 1,900 = 2,000: the R4 limit until March 16 (100%), then twice
    # R2's 1,000 once the permission lapsed (nothing more was granted: every share refused).
    assert (acme.peak_window, acme.peak_window_day, acme.peak_window_limit) == \
        (2000, "2026-03-16", 1000)
    assert acme.limit == 1000  # the permission ended on March 16
    uni = rows["uni"]  # exempt until March 20, then 2,000 against R2's 1,000
    assert (uni.peak_window, uni.peak_window_day, uni.peak_window_limit) == \
        (2000, "2026-03-20", 1000)
    assert uni.peak_percent == 200.0
    poly = rows["poly"]
    assert (poly.peak_window, poly.peak_window_limit, poly.limit) == (500, None, None)
    beta = rows["beta"]  # exported posts count toward R2; the permission was revoked Mar 25
    assert (beta.peak_window, beta.peak_window_day, beta.peak_window_limit) == \
        (25, "2026-03-25", 1000)
    assert rows["acme-labs"].peak_percent == 30.0
    ana = next(x for x in r.recipients if x.name == "ana")
    assert (ana.peak_day, ana.peak_day_amount, ana.limit) == ("2026-03-22", 20, 30)
    assert r.post_ids_daily[1] == 600 and sum(r.post_ids_daily) == 600 + 300 + 2000 + 198 + \
        802 + 20 + 5 + 500
    assert sum(r.user_ids_daily) == 50 and sum(r.hydrated_daily) == 25
    assert all(c.ok for c in r.checks), r.checks


def test_exemptions_and_permissions_in_force_during_the_month(history: Gate) -> None:
    r = month_report(history, MONTH)
    assert [(x.entity, x.from_ms, x.until_ms, x.evidence) for x in r.exemptions] == [
        ("poly", ms("2026-03-21T10:00:00"), None, "Πανεπιστήμιο ethics approval 2026/14"),
        ("uni", ms("2026-02-10T09:00:00"), ms("2026-03-20T10:00:00"), "")]
    assert [(p.entity, p.limit, p.from_ms, p.until_ms, p.ended, p.reference)
            for p in r.permissions] == [
        ("acme", 2000, ms("2026-02-20T09:00:00"), ms("2026-03-16T00:00:00"), "expiry",
         "X-LGL-7 разрешение 許可"),
        ("beta", 5000, ms("2026-03-17T10:00:00"), ms("2026-03-25T10:00:00"), "revoked",
         "X-LGL-8")]
    assert month_report(history, "2026-04").permissions == []  # April: none left


def test_deletion_ingests_and_their_effect(history: Gate) -> None:
    r = month_report(history, MONTH)
    assert [(d.kind, d.requested, d.actor) for d in r.deletions] == [("deletions.posts", 3,
                                                                       "cora")]
    assert (r.withheld_r9, r.shares_with_withheld) == (2, 1)
    assert r.deleted_now == {"posts": 3, "users": 0}
    assert r.datasets_affected == {"kpop": 1}


def test_a_month_is_yyyy_mm_and_not_in_the_future(history: Gate) -> None:
    for bad in ("2026-3", "2026-13", "March", "", "2026-03-01"):
        with pytest.raises(BadInput):
            month_report(history, bad)
    with pytest.raises(BadInput, match="not started"):
        month_report(history, "2026-05")  # the clock is at 2026-04-02
    assert month_report(history, "2026-02").entities  # February's set-up and one share


# --- the PDF ------------------------------------------------------------------------------------


def pdf_lines(data: bytes) -> list[str]:
    """The PDF's text, a line per baseline (pdfplumber groups the cells of a table row)."""
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return [" ".join(line.split()) for page in pdf.pages
                for line in (page.extract_text() or "").splitlines()]


def row(lines: list[str], first: str, *cells: str) -> None:
    """Some line starts with `first` and holds `cells` in order, space-separated."""
    want = " ".join((first, *cells))
    assert any(line.startswith(want) for line in lines), (want, [
        line for line in lines if line.startswith(first)])


@pytest.fixture
def pdf(history: Gate) -> bytes:
    from exports.report_pdf import write_report_pdf

    buf = io.BytesIO()
    write_report_pdf(month_report(history, MONTH, actor="cora"), buf)
    return buf.getvalue()


def test_the_pdf_carries_the_figures_of_the_data(pdf: bytes) -> None:
    lines = pdf_lines(pdf)
    text = " ".join(lines)  # paragraphs wrap
    assert "gatekeeper compliance report, 2026-03" in text
    assert "Generated by cora" in text and "Generated at 2026-04-02 09:00:00 UTC" in text
    assert "R1 IDs only to third parties" in text and "R12 credentials protected" in text
    # section 3: entity, kind, pool, Post IDs, User IDs, XLSX, PDF, answers, replays, refunded,
    # refusals
    row(lines, "acme commercial acme", "1,600", "50", "0", "0", "5 (1)", "1", "100", "2")
    row(lines, "acme-labs commercial acme", "300", "0", "0", "0", "1 (0)", "0", "0", "0")
    row(lines, "uni academic uni", "2,000")
    row(lines, "beta commercial beta", "0", "0", "20", "5", "2 (0)", "0", "0", "2")
    # section 4: entity, limit at month end, peak day, amount, 30-day peak, day, limit, %
    row(lines, "uni 1,000 2026-03-05", "2,000", "2,000", "2026-03-20", "1,000", "200.0%")
    row(lines, "acme 1,000 2026-03-12", "802", "2,000", "2026-03-16", "1,000", "200.0%")
    row(lines, "poly unlimited 2026-03-28", "500", "500", "2026-03-28", "unlimited", "-")
    row(lines, "ana beta 20 5 2 (0) 1 2026-03-22 20 66.7%")
    # section 6: rule, outcome, count, units requested, entities
    row(lines, "R2 refused", "1", "10", "1")
    row(lines, "R6 refused", "1", "15", "1")
    row(lines, "R8 denied", "1", "0", "1")
    row(lines, "idempotency conflict", "1", "5", "1")
    # section 7, in their own scripts
    assert "Πανεπιστήμιο ethics approval 2026/14" in text
    assert "X-LGL-7 разрешение 許可" in text
    row(lines, "acme 2,000 2026-02-20 09:00:00", "2026-03-16 00:00:00", "expiry")
    row(lines, "beta 5,000 2026-03-17 10:00:00", "2026-03-25 10:00:00", "revoked (cora)")
    # section 8
    row(lines, "2026-03-10 10:00:00 deletions.posts", "3", "cora", "cli")
    assert "2 IDs were left out of 1 share because" in text
    assert "The lists now hold 3 posts and 0 users" in text and "kpop: 1" in text
    # summary
    row(lines, "Post IDs granted (net)", "4,400")
    row(lines, "Refusals", "4")


def test_the_pdf_embeds_every_font_and_numbers_its_pages(pdf: bytes) -> None:
    reader = pypdf.PdfReader(io.BytesIO(pdf))
    n = len(reader.pages)
    fonts = set()
    for i, page in enumerate(reader.pages, start=1):
        assert f"page {i} of {n}" in page.extract_text()
        for font in page["/Resources"]["/Font"].values():
            font = font.get_object()
            fonts.add(str(font["/BaseFont"]))
            assert "/FontFile2" in font["/FontDescriptor"], font["/BaseFont"]
    assert any("WenQuanYi" in f or "wqy" in f.lower() for f in fonts), fonts  # 許可, 山田
    drawings = sum(len(re.findall(rb"\bre\b", p.get_contents().get_data()))
                   for p in reader.pages)
    assert drawings > 31  # the charts' bars at least


def test_a_name_too_wide_for_its_column_wraps_inside_it(gate: Gate, clock: Clock) -> None:
    from exports.report_pdf import write_report_pdf

    name = "the-university-of-somewhere-far-away.department-of-linguistics-x"  # 64, the most
    clock.at("2026-02-10T09:00:00")
    gate.entities.add(name, kind="commercial", research=False, parent=None, actor="root",
                      channel="cli")
    gate.entities.accept_terms(name, by="Jane Doe", actor="root", channel="cli")
    gate.users.add("dana", entity=name, role="data", password=PASSWORD, actor="root",
                   channel="cli")
    share(gate, name, ids(1, 7))
    clock.at("2026-03-01T00:00:00")
    buf = io.BytesIO()
    write_report_pdf(month_report(gate, "2026-02"), buf)
    with pdfplumber.open(buf) as pdf:
        page = next(p for p in pdf.pages
                    if "3 Entities" in (p.extract_text() or "").splitlines())
        # The entity column runs from the margin (36 pt) for 130 pt; its table comes first
        # under the heading (a chart of section 2 may end above it on the same page).
        words = page.extract_words()
        heading = min(w["top"] for w in words if w["text"] == "Entities")
        cell = sorted((w for w in words if w["top"] > heading
                       and w["x0"] < 36 + 130 and len(w["text"]) > 8 and w["text"] in name),
                      key=lambda w: w["top"])[:2]
        assert "".join(w["text"] for w in cell) == name
        assert max(w["x1"] for w in cell) <= 36 + 130


# --- pools (R10) ------------------------------------------------------------------------------

REASON = ("one company: globex has been acme's trading name since the merger (board minutes "
          "2026/3, §4; Überprüfung durch die Rechtsabteilung)")
LINKED = f"globex joined the pool of acme as a child of acme-labs: {REASON}"


@pytest.fixture
def pooled(gate: Gate, clock: Clock) -> Gate:
    """Pools made every way: a child in February; a child and an exempt child (R3) created in
    March; globex linked in March after 500 Post IDs; initech linked on April 1 inside the
    report's grace period, and hooli on April 5 after it."""
    e = gate.entities
    clock.at("2026-02-10T09:00:00")
    for name, parent in (("acme", None), ("acme-labs", "acme"), ("globex", None),
                         ("initech", None), ("hooli", None)):
        e.add(name, kind="commercial", research=False, parent=parent, actor="root",
              channel="cli")
    e.add("uni", kind="academic", research=True, parent=None, actor="root", channel="cli")
    for name in ("globex", "initech"):
        e.accept_terms(name, by="Pat Signer", actor="root", channel="cli")
    gate.users.add("dana", entity="acme", role="data", password=PASSWORD, actor="root",
                   channel="cli")
    clock.at("2026-02-25T12:00:00")
    share(gate, "globex", ids(10_000, 300))
    clock.at("2026-03-03T10:00:00")
    e.add("acme-eu", kind="commercial", research=False, parent="acme-labs", actor="root",
          channel="cli")
    clock.at("2026-03-04T10:00:00")
    e.add("uni-med", kind="academic", research=True, parent="uni", actor="root", channel="web")
    clock.at("2026-03-05T10:00:00")
    share(gate, "globex", ids(20_000, 200))  # delivered: a link waits for shares in flight
    clock.at("2026-03-09T10:00:00")
    link = set_parent(gate, "globex", parent="acme-labs", reason=REASON, actor="cora",
                      channel="cli")
    assert link.merged_post_ids == 500
    clock.at("2026-03-20T10:00:00")
    share(gate, "initech", ids(30_000, 100))
    clock.at("2026-04-01T00:30:00")
    set_parent(gate, "initech", parent="acme", reason="same owners", actor="cora",
               channel="cli")
    clock.at("2026-04-05T10:00:00")
    set_parent(gate, "hooli", parent="acme", reason="a brand of acme", actor="cora",
               channel="web")
    return gate


def test_pools_at_the_months_end_leave_out_links_made_after_it(pooled: Gate) -> None:
    r = month_report(pooled, MONTH)
    assert r.pools == [
        Pool("acme", [PoolMember("acme-labs", "acme", ms("2026-02-10T09:00:00"), "created"),
                      PoolMember("acme-eu", "acme-labs", ms("2026-03-03T10:00:00"), "created"),
                      PoolMember("globex", "acme-labs", ms("2026-03-09T10:00:00"), "linked")]),
        Pool("uni", [PoolMember("uni-med", "uni", ms("2026-03-04T10:00:00"), "created")])]
    rows = {e.name: e for e in r.entities}
    assert (rows["globex"].pool, rows["initech"].pool) == ("acme", "initech")
    assert all(c.ok for c in r.checks), r.checks
    april = month_report(pooled, "2026-04")
    assert [(m.entity, m.since_ms) for p in april.pools for m in p.members if p.root == "acme"
            ][-2:] == [("initech", ms("2026-04-01T00:30:00")),
                       ("hooli", ms("2026-04-05T10:00:00"))]
    assert [p.root for p in month_report(pooled, "2026-02").pools] == ["acme"]


def test_each_pool_join_of_the_month_is_listed_once_with_its_reason(pooled: Gate) -> None:
    r = month_report(pooled, MONTH)
    assert r.pool_joins == [
        PoolLink(ms("2026-03-03T10:00:00"), "root", "cli", "acme-eu", "acme-labs", "acme",
                 "created", "", 0, "kind=commercial research=no parent=acme-labs"),
        PoolLink(ms("2026-03-04T10:00:00"), "root", "web", "uni-med", "uni", "uni", "created",
                 "", 0, "kind=academic research=yes parent=uni"),
        PoolLink(ms("2026-03-09T10:00:00"), "cora", "cli", "globex", "acme-labs", "acme",
                 "linked", "globex", 500, LINKED)]
    summary = r.summary()
    assert (summary["pools"], summary["pool_links"], summary["pool_children_created"]) == \
        (2, 1, 2)
    april = month_report(pooled, "2026-04")
    assert [(j.entity, j.how, j.merged_post_ids) for j in april.pool_joins] == \
        [("initech", "linked", 100), ("hooli", "linked", 0)]
    assert april.summary()["pool_links"] == 2


def test_the_pdf_lists_the_pools_and_the_months_joins(pooled: Gate) -> None:
    from exports.report_pdf import write_report_pdf

    buf = io.BytesIO()
    write_report_pdf(month_report(pooled, MONTH), buf)
    lines = pdf_lines(buf.getvalue())
    text = " ".join(lines)
    assert "8 Pools (R10)" in lines
    # pools at the month's end: root, member, parent, since, joined
    row(lines, "acme acme-labs acme 2026-02-10 09:00:00 created as a child")
    row(lines, "acme acme-eu acme-labs 2026-03-03 10:00:00 created as a child")
    row(lines, "acme globex acme-labs 2026-03-09 10:00:00 linked")
    row(lines, "uni uni-med uni 2026-03-04 10:00:00 created as a child")
    assert not [line for line in lines if "initech" in line and "linked" in line]
    assert text.count("hooli") == 1  # in the idle entities' list only
    # the month's joins: time, entity, parent, pool, joined, former pool, merged, by, channel
    row(lines, "2026-03-03 10:00:00 acme-eu acme-labs acme created as a child - - root cli")
    row(lines, "2026-03-04 10:00:00 uni-med uni uni created as a child - - root web")
    row(lines, "2026-03-09 10:00:00 globex acme-labs acme linked globex 500 cora cli")
    assert LINKED in text  # the reason, whole, in its own scripts
    assert not any(REASON in line for line in lines)  # wrapped inside its column
    row(lines, "Pools at the month's end (R10)", "2", "4 members besides the roots")
    row(lines, "Pool links made (R10)", "1", "existing entities linked to a parent; 2 created")
    row(lines, "globex commercial acme", "200")
    row(lines, "initech commercial initech", "100")


def test_pool_joins_come_from_add_and_link_records_and_old_messages() -> None:
    from gatekeeper.rules.periods import pool_link

    old_child = {"kind": "entity.add", "entity": "b", "time": "5", "outcome": "changed",
                 "message": "kind=commercial research=no parent=a"}
    assert pool_link(old_child, {"a": "root"}) == PoolLink(5, "", "", "b", "a", "root",
                                                            "created", "", 0,
                                                            old_child["message"])
    old_root = {**old_child, "message": "kind=commercial research=no parent=-"}
    assert pool_link(old_root, {}) is None
    new_root = {**old_child, "facts": '{"parent": "", "root": "b"}'}
    assert pool_link(new_root, {}) is None
    closed = {"kind": "entity.pool_closed", "entity": "b", "time": "6", "parent": "a",
              "pool": "root", "former_pool": "b", "merged_post_ids": "3"}
    assert pool_link(closed, {}) is None  # the link's twin in the old pool's stream


# --- the command and the page -------------------------------------------------------------------


@pytest.fixture
def runner(history: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    monkeypatch.setattr(cli_context, "Gate", lambda _config: history)

    def invoke(*args: str) -> Any:
        return CliRunner().invoke(cli.main, ["--config", str(tmp_path / "config.toml"),
                                             "report", *args], catch_exceptions=False)

    return invoke


def test_cli_writes_the_report_atomically(runner: Any, tmp_path: Path) -> None:
    out = tmp_path / "reports" / "march.pdf"
    r = runner("--month", MONTH, "--out", str(out))
    assert r.exit_code == 0, r.output
    assert "compliance report for 2026-03" in r.output
    assert out.read_bytes().startswith(b"%PDF-") and out.read_bytes().rstrip().endswith(b"%%EOF")
    assert sorted(p.name for p in out.parent.iterdir()) == ["march.pdf"]
    row(pdf_lines(out.read_bytes()), "acme commercial acme", "1,600")


def test_cli_leaves_the_old_file_whole_when_writing_fails(runner: Any, tmp_path: Path,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    import exports.report_pdf

    out = tmp_path / "march.pdf"
    out.write_bytes(b"the previous report")

    def broken(_report: Any, stream: Any) -> int:
        stream.write(b"%PDF-1.4 half a file")
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(exports.report_pdf, "write_report_pdf", broken)
    r = runner("--month", MONTH, "--out", str(out))
    assert r.exit_code == 2 and "No space left on device" in r.output
    assert out.read_bytes() == b"the previous report"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".march")] == []


@pytest.mark.parametrize("month", ["2026-13", "26-03", "2026-05"])
def test_cli_refuses_a_bad_month_with_exit_2(runner: Any, tmp_path: Path, month: str) -> None:
    r = runner("--month", month, "--out", str(tmp_path / "x.pdf"))
    assert r.exit_code == 2 and "month" in r.output
    assert not (tmp_path / "x.pdf").exists()


def test_cli_defaults_to_the_previous_full_month_and_prints_json(runner: Any,
                                                                  tmp_path: Path) -> None:
    import json

    r = runner("--out", str(tmp_path / "r.pdf"), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert (data["month"], data["share.posts"], data["checks_ok"]) == ("2026-03", 4400, True)


@pytest.fixture
def app(history: Gate) -> Flask:
    return create_app(history, {"TESTING": True, "SECRET_KEY": "test"})


def login(client: FlaskClient, name: str) -> None:
    assert sign_in(client, name, PASSWORD) == 302


def test_page_sends_the_pdf_to_compliance_as_an_attachment(client: FlaskClient) -> None:
    login(client, "cora")
    resp = client.get("/report", query_string={"month": MONTH})
    assert resp.status_code == 200
    assert resp.mimetype == "application/pdf"
    assert resp.headers["Content-Disposition"] == \
        'attachment; filename="gatekeeper-report-2026-03.pdf"'
    body = resp.get_data()
    resp.close()  # runs call_on_close: the spooled file is released
    assert int(resp.headers["Content-Length"]) == len(body)
    lines = pdf_lines(body)
    assert "Generated by cora" in "\n".join(lines)
    row(lines, "beta commercial beta", "0", "0", "20", "5")
    assert client.get("/report", query_string={"month": "2026-3"}).status_code == 400


def test_page_is_refused_to_other_roles_and_to_strangers(client: FlaskClient) -> None:
    resp = client.get("/report")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    login(client, "ana")
    assert client.get("/report", query_string={"month": MONTH}).status_code == 403


def test_r3_r4_facts_come_from_the_records_fields_and_old_records_from_their_message() -> None:
    from gatekeeper.rules.periods import academic_fact, permit_fact

    new = {"rule": "R3", "message": "anything at all",
           "facts": '{"kind": "academic", "research": "1", "research_evidence": " NU-7 "}'}
    assert academic_fact(new) == (True, "NU-7")
    old = {"rule": "R3", "message": "kind=academic research=no; evidence: -"}
    assert academic_fact(old) == (False, "-")
    assert academic_fact({"rule": "R3", "facts": '{"terms_by": "x"}'}) is None
    permit = {"facts": '{"permit_limit": "3000000", "permit_until": "1798761600000", '
                       '"permit_reference": "X-1; with: colons"}', "message": "changed later"}
    assert permit_fact(permit) == (3_000_000, 1_798_761_600_000, "X-1; with: colons")
    old_permit = {"message": "limit unlimited until 2026-12-31T00:00:00Z; reference: X-2"}
    assert permit_fact(old_permit) == (None, 1_798_675_200_000, "X-2")


def test_a_pools_peak_counts_what_a_linked_entity_brought_from_its_link_on(
        gate: Gate, clock: Clock) -> None:
    """R10: the ledger merged globex's 300 Post IDs into acme's pool counter at the link, so
    acme's 30-day peak holds them from that day; before it, acme's own days are the pool."""
    clock.at("2026-03-01T09:00:00")
    for name in ("acme", "globex"):
        gate.entities.add(name, kind="commercial", research=False, parent=None, actor="root",
                          channel="cli")
        gate.entities.accept_terms(name, by="Pat Signer", actor="root", channel="cli")
    gate.users.add("dana", entity="acme", role="data", password=PASSWORD, actor="root",
                   channel="cli")
    clock.at("2026-03-02T10:00:00")
    share(gate, "acme", ids(1, 50))
    clock.at("2026-03-03T10:00:00")
    share(gate, "globex", ids(10_000, 300))
    clock.at("2026-03-05T10:00:00")
    set_parent(gate, "globex", parent="acme", reason="one firm", actor="cora", channel="cli")
    clock.at("2026-03-06T10:00:00")
    share(gate, "acme", ids(100, 100))
    r = month_report(gate, MONTH)
    rows = {e.name: e for e in r.entities}
    acme = rows["acme"]
    assert acme.daily[1] == 50 and acme.daily[5] == 100 and sum(acme.daily) == 150
    assert (acme.peak_window, acme.peak_window_day, acme.peak_window_limit) == (
        450, "2026-03-06", 1000)
    assert rows["globex"].peak_window == 300
    assert all(c.ok for c in r.checks), r.checks
