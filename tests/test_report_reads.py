"""The monthly report reads without a glossary (issue 13): the audit-against-ledger check says what
it compares and why the two agree, counts and plurals are right ("the top entity"), and daily
usage is drawn as bars (daily totals), never as a line. A month with one entity, built on
fakeredis and the real server with the gate's clock fixed in March 2026."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pytest
import redis
from live import ARTIFACTS, PASSWORD, SAMPLES
from reportlab.graphics.charts.barcharts import VerticalBarChart
from reportlab.graphics.charts.lineplots import LinePlot
from reportlab.graphics.shapes import Drawing

from exports import report_pdf
from gatekeeper import config as config_mod
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.hydrated import Selection, export
from gatekeeper.domain.report import ReportData, month_report
from gatekeeper.ledger.clock import FixedClock

pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture
def month(tmp_path: Path, redis_client: redis.Redis) -> ReportData:
    """March 2026: acme receives no ID file; its analyst ana exports 20 posts (they count
    toward R2 too) — the audit log has 0 Post IDs shared, the R2 counters 20."""
    start = int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp() * 1000)
    clock = FixedClock(redis_client, start)
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 100\nhydrated_per_recipient = 30\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=clock.client, clock=clock)
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    g.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                channel="cli")
    g.users.accept_terms("ana", actor="ana", channel="web")
    g.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    clock.set(start + 3_600_000)
    result = export(g, g.users.get("ana"),
                    Selection("kpop", Filters(), g.deletions.current(), limit=20),
                    fmt="xlsx", with_users=False, channel="web")
    result.file.close()
    return month_report(g, "2026-03", actor="cora")


def text_of(data: ReportData) -> str:
    buf = io.BytesIO()
    report_pdf.write_report_pdf(data, buf)
    ARTIFACTS.mkdir(exist_ok=True)
    (ARTIFACTS / "report-one-entity.pdf").write_bytes(buf.getvalue())
    with pdfplumber.open(io.BytesIO(buf.getvalue())) as pdf:
        return " ".join(" ".join((p.extract_text() or "").split()) for p in pdf.pages)


def test_the_check_says_what_is_compared_and_why_0_shared_agrees_with_20_counted(
        month: ReportData) -> None:
    [r2] = [c for c in month.checks if "R2" in c.what]
    assert (r2.audit, r2.ledger, r2.ok) == (0, 20, True)
    assert r2.audit_text == "0 shared + 20 exported"
    assert r2.note.startswith("They agree: exported posts count toward R2")
    text = text_of(month)
    assert "0 shared + 20 exported" in text
    assert "why they agree (or not)" in text
    assert "They agree" in text
    assert "audit records" not in text.split("Audit records against the ledger")[1][:200]


def test_one_entity_is_the_top_entity_not_the_top_1_entities(month: ReportData) -> None:
    text = text_of(month)
    assert "the top entity" in text
    assert "top 1 " not in text


def drawings(data: ReportData) -> list[Drawing]:
    found: list[Drawing] = []

    def walk(flowable: Any) -> None:
        if isinstance(flowable, Drawing):
            found.append(flowable)
        for inner in getattr(flowable, "_content", []) or []:
            walk(inner)

    for f in report_pdf._Report(data).build():
        walk(f)
    return found


def test_daily_usage_is_drawn_as_bars_never_as_a_line(month: ReportData) -> None:
    charts = [c for d in drawings(month) for c in d.contents]
    assert not any(isinstance(c, LinePlot) for c in charts)
    stacked = [c for c in charts if isinstance(c, VerticalBarChart)
               and c.categoryAxis.style == "stacked"]
    assert len(stacked) == 1  # the top entities' days, one bar a day split by entity
    assert len(stacked[0].categoryAxis.categoryNames) == 31
