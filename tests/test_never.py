"""'Never' is never 1969 (issue 13): a refusal that can never fit whole — it is more than a limit —
says "never fits whole — send the first N" (a share of IDs) or "export the first N" (hydrated
objects) on every page, file, CLI line, API answer and in the monthly report; `available_at`
stays machine-readable (null); and nothing anywhere shows a time before 2000 for it.

The ledger's answer for "never" is -1 (epoch ms): read as a time it is 1969-12-31 23:59 UTC, and
the CSV guard against formulas made it '-1. gatekeeper.rules.fits decides for every reader."""

from __future__ import annotations

import csv
import io
import json
import re
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import pdfplumber
import pytest
import redis
from click.testing import Result
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, share_ids, sign_in

from gatekeeper import config as config_mod
from gatekeeper.domain import auditrows
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.report import month_report
from gatekeeper.ledger.clock import FixedClock
from gatekeeper.rules import fits
from gatekeeper.rules.errors import QuotaExceeded

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

CONFIG = "[limits]\npost_ids_per_entity = 100\nhydrated_per_recipient = 30"
NEVER_SEND = "never fits whole — send the first 70"
# A date or year before 2000 as any reader would see it: 1969-12-31, 31/12/1969, "1970".
BEFORE_2000 = re.compile(r"(?<![\d.])1[0-9]{3}-[01][0-9]-[0-3][0-9]|\b19[0-9]{2}\b")


def no_time_before_2000(text: str) -> None:
    found = BEFORE_2000.findall(text)
    assert not found, found
    assert "'-1" not in text


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    """acme with 30 of its 100 Post IDs shared, then 150 asked for: refused, never fits whole."""
    g = build_gate(tmp_path, redis_client, config=CONFIG, terms="Ana Example")
    share_ids(g, tmp_path, "acme", 30)
    with pytest.raises(QuotaExceeded):
        share_ids(g, tmp_path, "acme", 150)
    return g


def test_fits_decides_never_for_minus_one_and_any_time_before_2000() -> None:
    iso = str
    assert fits.fit(-1, first=70, kind="share.posts") == fits.Fit(None, 70, "send")
    assert fits.fit("-1", first="30", kind="export.pdf").text(iso) == \
        "never fits whole — export the first 30"
    assert fits.fit("0", first=0).never  # 1970 is never a release time
    assert "1970" not in fits.fit(0).text(iso)  # type: ignore[union-attr]
    assert fits.fit(1_795_000_000_000).text(iso) == "fits whole again from 1795000000000"  # type: ignore[union-attr]
    assert fits.fit("") is None and fits.fit(None) is None


def test_the_api_answer_keeps_available_at_null_and_says_send_the_first_n(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    g = build_gate(tmp_path, redis_client, config=CONFIG, terms="Ana Example")
    share_ids(g, tmp_path, "acme", 30)
    with pytest.raises(QuotaExceeded) as refused:
        share_ids(g, tmp_path, "acme", 150)
    body = refused.value.to_dict()  # the API's and the CLI's JSON error body
    assert body["available_at"] is None and body["retry_after"] is None
    assert body["fits_now"] == 70 and body["remaining"] == 70
    assert NEVER_SEND in body["message"].lower()
    no_time_before_2000(json.dumps(body))


def test_the_audit_record_of_a_never_refusal_holds_how_many_fit_now(gate: Gate) -> None:
    refused = list(AuditLog(gate.client).records(AuditFilter.parse({"outcome": "refused"})))
    assert len(refused) == 1
    assert (refused[0]["available_at"], refused[0]["fits_now"]) == ("-1", "70")


def compliance(client: FlaskClient) -> FlaskClient:
    assert sign_in(client, "cora", PASSWORD) == 302
    return client


def test_the_dashboard_says_never_fits_whole_not_fits_again_from_1969(
        gate: Gate, client: FlaskClient) -> None:
    page = compliance(client).get("/dashboard").get_data(as_text=True)
    assert NEVER_SEND in page.lower()
    assert "Fits again from" not in page
    no_time_before_2000(page)


def test_the_audit_page_shows_the_message_of_refused_and_denied_rows(
        gate: Gate, client: FlaskClient) -> None:
    gate.entities.add("beta", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")  # no R8 terms: a share to it is denied
    with pytest.raises(Exception):  # noqa: B017 - Forbidden, recorded as denied
        share_ids(gate, Path(gate.config.datasets_dir).parent, "beta", 5)
    page = compliance(client).get("/audit").get_data(as_text=True)
    rows = re.findall(r'<tr data-id="[^"]*">(.*?)</tr>', page, re.S)
    messages = {re.search(r'class="outcome-(\w+)"', r).group(1):  # type: ignore[union-attr]
                re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ",
                       re.search(r'class="message">(.*?)</td>', r, re.S).group(1))).strip()  # type: ignore[union-attr]
                for r in rows}
    assert "150 would pass the R2 limit" in messages["refused"]
    assert NEVER_SEND in messages["refused"].lower()
    assert "R8" in messages["denied"] or "terms" in messages["denied"]
    no_time_before_2000(page)


def test_the_audit_csv_has_iso_times_in_utc_json_fields_and_never_not_minus_one(
        gate: Gate, client: FlaskClient) -> None:
    text = compliance(client).get("/audit/export?format=csv").get_data(as_text=True)
    no_time_before_2000(text)
    rows = list(csv.DictReader(io.StringIO(text.lstrip("\ufeff"))))
    refused = [r for r in rows if r["outcome"] == "refused"]
    assert refused[0]["available_at"] == NEVER_SEND
    assert NEVER_SEND in refused[0]["message"].lower()
    for r in rows:
        for column in ("at", "time"):
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r[column]), r[column]
        if r["other_fields"]:
            other = json.loads(r["other_fields"])
            # No JSON inside JSON: a structured field is an object here, not a string of JSON.
            assert not any(isinstance(v, str) and v[:1] in "{[" for v in other.values()), other


def test_the_audit_xlsx_says_never_fits_whole_and_has_no_date_before_2000(
        gate: Gate, client: FlaskClient) -> None:
    data = compliance(client).get("/audit/export?format=xlsx").get_data()
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        sheet = z.read("xl/worksheets/sheet1.xml").decode()
        about = z.read("xl/worksheets/sheet2.xml").decode()
    assert NEVER_SEND in sheet.lower()
    assert ">-1<" not in sheet
    no_time_before_2000(sheet + about)


def test_a_python_repr_of_filters_is_shown_as_json_and_times_in_facts_as_iso() -> None:
    from gatekeeper.domain import auditrows

    row = auditrows.for_people({"outcome": "granted", "time": "1795000000000",
                                "filters": "{'lang': 'ja', 'since': '2026-01-01'}"})
    assert json.loads(row["filters"]) == {"lang": "ja", "since": "2026-01-01"}
    assert row["time"] == "2026-11-18T11:06:40.000Z"
    facts = auditrows.for_people({"facts": '{"limit": "2000", "permit_until": "1795000000000"}'})
    assert json.loads(facts["facts"]) == {"limit": "2000",
                                          "permit_until": "2026-11-18T11:06:40.000Z"}


# --- the CLI --------------------------------------------------------------------------------------


def ids_file(path: Path, start: int, n: int) -> Path:
    path.write_text("".join(f"{start + i}\n" for i in range(n)))
    return path


def test_the_cli_says_send_the_first_n_and_its_audit_export_shows_no_1969(
        runner: Callable[..., Result], store_dir: Path) -> None:
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 0
    assert runner("entity", "accept-terms", "acme", "--by", "Jane Doe").exit_code == 0
    assert runner("user", "add", "dana", "--entity", "acme", "--role", "data",
                  "--password-stdin", input=PASSWORD + "\n").exit_code == 0
    ok = runner("share", "--as", "dana", "--entity", "acme", "--ids",
                str(ids_file(store_dir / "a.txt", 10, 30)), "--out", "a.out")
    assert ok.exit_code == 0, ok.output
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
               str(ids_file(store_dir / "b.txt", 500, 150)), "--out", "b.out")
    assert r.exit_code == 3
    assert NEVER_SEND in r.output.lower()
    no_time_before_2000(r.output)
    j = runner("share", "--as", "dana", "--entity", "acme", "--ids",
               str(store_dir / "b.txt"), "--out", "b.out", "--json")
    err = json.loads(j.stdout)
    assert err["available_at"] is None and err["fits_now"] == 70
    for fmt in ("csv", "xlsx", "jsonl"):
        out = store_dir / f"audit.{fmt}"
        assert runner("audit", "export", "--out", str(out)).exit_code == 0
        if fmt == "xlsx":
            with zipfile.ZipFile(out) as z:
                text = "".join(z.read(n).decode() for n in z.namelist() if n.endswith(".xml"))
        else:
            text = out.read_text()
        if fmt != "jsonl":  # JSONL keeps the records as stored: -1 is the ledger's value
            assert NEVER_SEND in text.lower()
        no_time_before_2000(text)


# --- the monthly report ---------------------------------------------------------------------------


def test_the_monthly_report_says_never_fits_whole(tmp_path: Path,
                                                  redis_client: redis.Redis) -> None:
    from exports.report_pdf import write_report_pdf

    start = int(datetime(2026, 3, 10, 9, tzinfo=UTC).timestamp() * 1000)
    clock = FixedClock(redis_client, start)
    (tmp_path / "config.toml").write_text(f'{CONFIG}\n[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=clock.client, clock=clock)
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    g.users.add("dan", entity="acme", role="data", password=PASSWORD, actor="t", channel="cli")
    share_ids(g, tmp_path, "acme", 30)
    clock.set(start + 3_600_000)
    with pytest.raises(QuotaExceeded):
        share_ids(g, tmp_path, "acme", 150)
    report = month_report(g, "2026-03", actor="cora")
    [event] = report.refusal_events
    assert NEVER_SEND in event.message.lower()
    buf = io.BytesIO()
    write_report_pdf(report, buf)
    with pdfplumber.open(io.BytesIO(buf.getvalue())) as pdf:
        text = " ".join(" ".join((p.extract_text() or "").split()) for p in pdf.pages)
    assert NEVER_SEND in text.lower()
    no_time_before_2000(text)


def test_an_export_that_never_fits_whole_says_export_the_first_n(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    from gatekeeper.domain.filters import Filters
    from gatekeeper.domain.hydrated import Selection, export

    g = build_gate(tmp_path, redis_client, config=CONFIG, terms="Ana Example", kpop=True)
    g.users.accept_terms("ana", actor="ana", channel="web")
    with pytest.raises(QuotaExceeded) as refused:
        export(g, g.users.get("ana"), Selection("kpop", Filters.parse({"contains": "a"}),
                                                g.deletions.current(), limit=40),
               fmt="xlsx", with_users=False, channel="web")
    body = refused.value.to_dict()
    assert body["available_at"] is None and body["fits_now"] == 30
    assert "never fits whole — export the first 30" in body["message"]
    [record] = AuditLog(g.client).records(AuditFilter.parse({"outcome": "refused"}))
    assert json.loads(record["filters"]) == {"contains": "a"}  # recorded as JSON, not a repr
    assert "never fits whole — export the first 30" in auditrows.describe(record).lower()
    no_time_before_2000(body["message"] + auditrows.describe(record))
