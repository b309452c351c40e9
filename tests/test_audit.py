"""The audit log (R11) read back: merge order, pages, filters, files, the /audit page, the CLI —
and that nothing can edit or delete it. Reader tests run on fakeredis and on a real Redis."""

from __future__ import annotations

import ast
import csv
import io
import json
import random
import re
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import click
import orjson
import pytest
import redis
from auditkit import Spy, all_pages
from click.testing import CliRunner, Result
from flask import Flask
from flask.testing import FlaskClient
from live import sign_in

from exports import auditlog as writers
from exports.xlsx import FORMULA_START
from gatekeeper import config as config_mod
from gatekeeper.channels.cli import main as cli
from gatekeeper.channels.cli.audit import audit_cli
from gatekeeper.domain import audit, shares
from gatekeeper.domain.audit import AuditLog
from gatekeeper.domain.auditfilter import AuditFilter, iso_ms
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.rules.errors import AutomatedHydratedForbidden, BadInput, Forbidden, QuotaExceeded

ROOT = Path(__file__).resolve().parents[1]
PASSWORD = "correct horse battery"

# (pool root or None for the system stream, kind, outcome, entity, actor, rule) of every record
# the history below appends, in the order it appends them.
HISTORY = [
    ("acme", "entity.add", "changed", "acme", "admin", "R11"),
    ("uni", "entity.add", "changed", "uni", "admin", "R3"),
    ("acme", "entity.add", "changed", "acme-labs", "admin", "R10"),
    ("acme", "entity.terms", "changed", "acme", "admin", "R8"),
    ("acme", "entity.terms", "changed", "acme-labs", "admin", "R8"),
    ("acme", "user.add", "changed", "acme", "admin", "R12"),  # dana, data
    ("acme", "user.add", "changed", "acme", "admin", "R12"),  # cora, compliance
    ("acme", "user.add", "changed", "acme", "admin", "R12"),  # adam, admin
    ("uni", "user.add", "changed", "uni", "admin", "R12"),  # ana, analyst
    ("acme", "share.posts", "granted", "acme", "dana", ""),
    ("acme", "share.posts", "delivered", "acme", "dana", ""),
    ("uni", "share.posts", "denied", "uni", "dana", "R8"),
    ("acme", "share.posts", "refused", "acme", "dana", "R2"),
    ("acme", "share.posts", "partial", "acme-labs", "dana", "R2"),
    ("acme", "share.posts", "delivered", "acme-labs", "dana", ""),
    (None, "deletions.posts", "ingested", "", "cora", "R9"),
    ("uni", "user.terms", "changed", "uni", "ana", "R8"),
    (None, "export.hydrated", "denied", "", "unauthenticated", "R5"),
]


def without_stream(r: dict[str, str]) -> tuple[str, str, str, str, str]:
    return (r.get("kind", ""), r.get("outcome", ""), r.get("entity", ""), r.get("actor", ""),
            r.get("rule", ""))


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Gate:
    from werkzeug.security import generate_password_hash

    from gatekeeper.domain import users

    # Hashing is not under test here; scrypt's 0.1 s per user would dominate the suite.
    monkeypatch.setattr(users, "generate_password_hash",
                        lambda p: generate_password_hash(p, method="pbkdf2:sha256:1"))
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 10\n[datasets]\ndir = "datasets"\n')
    return Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)


def ids(path: Path, start: int, n: int) -> Path:
    path.write_text("".join(f"{start + i}\n" for i in range(n)))
    return path


def build_history(g: Gate, tmp: Path) -> None:
    """Append the records of HISTORY through the real library, each in its own millisecond
    (so the merged order is the order of the calls)."""

    def step() -> None:
        time.sleep(0.003)

    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="admin",
                   channel="cli")
    step()
    g.entities.add("uni", kind="academic", research=True, parent=None, actor="admin",
                   channel="cli")
    step()
    g.entities.add("acme-labs", kind="commercial", research=False, parent="acme",
                   actor="admin", channel="cli")
    step()
    for name in ("acme", "acme-labs"):
        g.entities.accept_terms(name, by="Jane Doe", actor="admin", channel="web")
        step()
    for name, entity, role in (("dana", "acme", "data"), ("cora", "acme", "compliance"),
                               ("adam", "acme", "admin"), ("ana", "uni", "analyst")):
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="admin",
                    channel="cli")
        step()
    shares.share_to_file(g, actor="dana", entity="acme", out=tmp / "a.txt",
                         ids_path=ids(tmp / "i1.txt", 10**12, 5), purpose="=HYPERLINK(1)",
                         channel="api")
    step()
    with pytest.raises(Forbidden):
        shares.share_to_file(g, actor="dana", entity="uni", out=tmp / "b.txt",
                             ids_path=ids(tmp / "i2.txt", 10**12, 3), channel="cli")
    step()
    with pytest.raises(QuotaExceeded):
        shares.share_to_file(g, actor="dana", entity="acme", out=tmp / "c.txt",
                             ids_path=ids(tmp / "i3.txt", 2 * 10**12, 20), channel="cli")
    step()
    shares.share_to_file(g, actor="dana", entity="acme-labs", out=tmp / "d.txt",
                         ids_path=ids(tmp / "i4.txt", 3 * 10**12, 10), allow_partial=True,
                         channel="cli")
    step()
    g.deletions.add(io.BytesIO(b"1\n2\n3\n"), kind="posts", source="list.txt", actor="cora",
                    channel="web")
    step()
    g.users.accept_terms("ana", actor="ana", channel="web")
    step()
    audit.record_denial(g.ledger, None, AutomatedHydratedForbidden("R5: not over the API"),
                        {"actor": "unauthenticated", "channel": "api",
                         "kind": "export.hydrated"})


@pytest.fixture
def history(gate: Gate, tmp_path: Path) -> Gate:
    build_history(gate, tmp_path)
    return gate


def pool_of(key: str) -> str | None:
    m = re.fullmatch(r"gk:\{e:(.+)\}:audit", key)
    return m.group(1) if m else None


def oracle(redis_client: redis.Redis) -> list[tuple[tuple[int, int], str, dict[str, str]]]:
    """Every record read the plain way (XRANGE each stream whole), sorted by (ID, stream)."""
    streams = {k.decode() for k in redis_client.smembers(keys.AUDIT_STREAMS)} | {keys.SYS_AUDIT}
    out = []
    for key in streams:
        for raw_id, fields in redis_client.xrange(key):
            ms, seq = map(int, raw_id.decode().split("-"))
            out.append(((ms, seq), key, {k.decode(): v.decode() for k, v in fields.items()}))
    return sorted(out, key=lambda t: (t[0], t[1]))


# --- reading: order, pages, ties --------------------------------------------------------------


def test_records_merge_every_stream_oldest_first_exactly_as_appended(history: Gate) -> None:
    got = list(AuditLog(history.client).records())
    assert [without_stream(r) for r in got] == [h[1:] for h in HISTORY]
    want = oracle(history.client)
    assert [(r["id"], dict((k, v) for k, v in r.items() if k not in ("id", "at")))
            for r in got] == [(f"{i[0]}-{i[1]}", f) for i, _k, f in want]
    # Which stream each landed in: pool records in the pool's stream, the rest in {sys}.
    assert [pool_of(k) for _i, k, _f in want] == [h[0] for h in HISTORY]


def test_records_carry_the_entry_id_and_iso_time_from_the_redis_clock(history: Gate) -> None:
    for r in AuditLog(history.client).records():
        ms = int(r["time"])
        assert r["at"] == iso_ms(ms)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", r["at"])
        assert abs(int(r["id"].split("-")[0]) - ms) < 1000


def test_share_records_carry_request_id_purpose_and_counts(history: Gate) -> None:
    rs = [r for r in AuditLog(history.client).records() if r["kind"] == "share.posts"]
    granted = rs[0]
    assert (granted["requested"], granted["granted"], granted["channel"]) == ("5", "5", "api")
    assert granted["request_id"] == granted["share_id"] == rs[1]["share_id"]
    assert granted["purpose"] == "=HYPERLINK(1)"
    partial = next(r for r in rs if r["outcome"] == "partial")
    assert (partial["requested"], partial["granted"]) == ("10", "5")


def test_streams_are_every_registered_pool_stream_and_the_system_stream(history: Gate) -> None:
    assert AuditLog(history.client).streams() == sorted(
        [keys.audit("acme"), keys.audit("uni"), keys.SYS_AUDIT])


@pytest.mark.parametrize("size", [1, 2, 3, 5, 16, 17, 100])
def test_pages_walk_newest_first_with_no_gaps_or_duplicates(history: Gate, size: int) -> None:
    log = AuditLog(history.client)
    assert all_pages(log, size=size) == list(log.records())[::-1]


def tie_streams(redis_client: redis.Redis) -> list[tuple[int, int, str, int]]:
    """Records written with chosen IDs: many share a millisecond, and even a whole ID, across
    four streams. Returns (ms, seq, stream, n) in merge order."""
    streams = [keys.audit("a"), keys.audit("b"), keys.audit("c"), keys.SYS_AUDIT]
    for k in streams[:3]:
        redis_client.sadd(keys.AUDIT_STREAMS, k)
    written = []
    n = 0
    for ms in (1000, 1001, 1002, 1500):
        for seq in range(3):
            for s, k in enumerate(streams):
                if (ms + seq + s) % 5 == 4:
                    continue  # not every stream at every ID
                redis_client.xadd(k, {"time": str(ms), "n": str(n), "actor": f"u{n % 3}"},
                            id=f"{ms}-{seq}")
                written.append((ms, seq, k, n))
                n += 1
    return sorted(written, key=lambda t: (t[0], t[1], t[2]))


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7, 50])
def test_pages_resume_exactly_across_ties_in_the_same_millisecond(redis_client: redis.Redis,
                                                                    size: int) -> None:
    written = tie_streams(redis_client)
    log = AuditLog(redis_client)
    assert [int(r["n"]) for r in log.records()] == [w[3] for w in written]
    assert [int(r["n"]) for r in all_pages(log, size=size)] == [w[3] for w in written[::-1]]
    f = AuditFilter(user="u1")
    assert [int(r["n"]) for r in all_pages(log, f, size=size)] == [
        w[3] for w in written[::-1] if w[3] % 3 == 1]


@pytest.mark.parametrize("seed", range(10))
def test_pages_and_records_agree_with_a_plain_sort_of_random_logs(redis_client: redis.Redis,
                                                                  seed: int) -> None:
    """Random streams, bursts of same-millisecond records, long gaps, filters and page sizes,
    with records appended between reads (so the page windows remembered are stale)."""
    rnd = random.Random(seed)
    streams = [keys.audit(f"s{i:02}") for i in range(rnd.choice([1, 2, 7, 40]))]
    redis_client.sadd(keys.AUDIT_STREAMS, *streams)
    streams.append(keys.SYS_AUDIT)
    last: dict[str, tuple[int, int]] = {}
    written: list[tuple[int, int, str, int]] = []
    clock = 1_700_000_000_000
    log = AuditLog(redis_client)
    for _round in range(3):
        for _ in range(rnd.randrange(1, 60)):
            clock += rnd.choice([0, 0, 0, 1, 2, 700, 86_400_000])
            key = rnd.choice(streams)
            prev = last.get(key, (0, 0))
            ident = (clock, 0) if clock > prev[0] else (prev[0], prev[1] + 1)
            n = len(written)
            redis_client.xadd(key, {"time": str(ident[0]), "n": str(n), "actor": f"u{n % 10}",
                              "recipient": f"u{n % 3}"}, id=f"{ident[0]}-{ident[1]}")
            last[key] = ident
            written.append((*ident, key, n))
        written.sort(key=lambda w: (w[0], w[1], w[2]))
        mid = written[len(written) // 2][0]
        for f, keep in [
            (AuditFilter(), lambda n, ms: True),
            (AuditFilter(user="u1"), lambda n, ms: n % 10 == 1 or n % 3 == 1),
            (AuditFilter(user="u7"), lambda n, ms: n % 10 == 7),
            (AuditFilter(since_ms=mid), lambda n, ms, mid=mid: ms >= mid),
            (AuditFilter(until_ms=mid + 1, user="u2"),
             lambda n, ms, mid=mid: ms <= mid and (n % 10 == 2 or n % 3 == 2)),
        ]:
            want = [w[3] for w in written if keep(w[3], w[0])]
            assert [int(r["n"]) for r in log.records(f)] == want
            for size in (1, 4, 50):
                got = [int(r["n"]) for r in all_pages(log, f, size=size)]
                assert got == want[::-1], (f, size)


def test_a_cursor_is_opaque_and_a_forged_one_is_bad_input_naming_before(
        redis_client: redis.Redis) -> None:
    tie_streams(redis_client)
    log = AuditLog(redis_client)
    _page, cursor = log.page(size=2)
    assert cursor is not None and re.fullmatch(r"[A-Za-z0-9_-]+", cursor)
    for bad in ("nonsense!", "AAAA", audit.encode_cursor((1, 2), "x")[:-3] + "***"):
        with pytest.raises(BadInput) as e:
            log.page(before=bad)
        assert e.value.details["field"] == "before"


def test_page_size_must_be_reasonable(redis_client: redis.Redis) -> None:
    for size in (0, -1, audit.MAX_PAGE + 1):
        with pytest.raises(BadInput):
            AuditLog(redis_client).page(size=size)


def test_an_empty_log_has_an_empty_page_and_no_cursor(redis_client: redis.Redis) -> None:
    assert AuditLog(redis_client).page() == ([], None)
    assert list(AuditLog(redis_client).records()) == []


def test_first_page_reads_every_stream_in_one_round_trip_then_only_what_it_needs(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    streams = [keys.audit(f"e{i:03}") for i in range(200)]
    redis_client.sadd(keys.AUDIT_STREAMS, *streams)
    pipe = redis_client.pipeline(transaction=False)
    for i in range(2000):  # record i in stream i % 200 at ms 10_000 + i
        pipe.xadd(streams[i % 200], {"time": str(10_000 + i), "n": str(i)},
                  id=f"{10_000 + i}-0")
    pipe.execute()
    monkeypatch.setattr(audit, "_HINTS", {})
    for visit in ("cold", "warm"):  # the second visit starts where the first page ended
        spy = Spy(monkeypatch)
        page, cursor = AuditLog(redis_client).page(size=50)
        assert [int(r["n"]) for r in page] == list(range(1999, 1949, -1)), visit
        assert cursor is not None
        assert [c[0] for c in spy.direct] == ["SMEMBERS"]
        # One pipelined round trip reads the newest of all 201 streams; at most one more
        # reads on only in the streams that hold more of the page. Never one per stream.
        assert len(spy.pipelines) <= 2, visit
        assert len(spy.pipelines[0]) == 201
        assert all(len(p) <= 51 for p in spy.pipelines[1:])
        assert all(int(c[-1]) <= 2 for p in spy.pipelines for c in p)  # COUNT: a record or two


def test_entity_filter_reads_only_that_entitys_pool_stream(
        history: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    page, _ = AuditLog(history.client).page(AuditFilter(entity="acme-labs"))
    assert [(r["kind"], r["outcome"]) for r in page] == [
        ("share.posts", "delivered"), ("share.posts", "partial"), ("entity.terms", "changed"),
        ("entity.add", "changed")]
    read = {c[1] for p in spy.pipelines for c in p}
    assert read == {keys.audit("acme")}
    assert "SMEMBERS" not in [c[0] for c in spy.direct]


def test_an_unknown_entity_matches_nothing(history: Gate) -> None:
    log = AuditLog(history.client)
    assert log.page(AuditFilter(entity="nobody")) == ([], None)
    assert list(log.records(AuditFilter(entity="nobody"))) == []


# --- filters ------------------------------------------------------------------------------------


@pytest.mark.parametrize(("query", "want"), [
    ({"entity": "uni"}, [h for h in HISTORY if h[3] == "uni"]),
    ({"user": "ana"}, [HISTORY[8], HISTORY[16]]),  # recipient of user.add, actor of terms
    ({"user": "dana"}, [h for h in HISTORY if h[4] == "dana"] + [HISTORY[5]]),
    ({"channel": "api"}, [HISTORY[9], HISTORY[10], HISTORY[17]]),
    ({"outcome": "denied"}, [HISTORY[11], HISTORY[17]]),
    ({"outcome": "DENIED", "rule": "r8"}, [HISTORY[11]]),
    ({"rule": "R2"}, [HISTORY[12], HISTORY[13]]),
    ({"rule": "R9", "entity": "acme"}, []),
])
def test_filters_select_records_by_entity_user_channel_outcome_and_rule(
        history: Gate, query: dict[str, str], want: list[tuple]) -> None:
    f = AuditFilter.parse(query)
    log = AuditLog(history.client)
    got = list(log.records(f))
    assert sorted(without_stream(r) for r in got) == sorted(h[1:] for h in want)
    assert all_pages(log, f, size=2) == got[::-1]


def test_time_filters_bound_the_append_time_since_inclusive_until_exclusive(
        redis_client: redis.Redis) -> None:
    written = tie_streams(redis_client)
    log = AuditLog(redis_client)
    f = AuditFilter.parse({"since": "1970-01-01T00:00:01.001Z",
                           "until": "1970-01-01T00:00:01.500+00:00"})
    want = [w[3] for w in written if 1001 <= w[0] < 1500]
    assert want and [int(r["n"]) for r in log.records(f)] == want
    assert [int(r["n"]) for r in all_pages(log, f, size=3)] == want[::-1]
    assert list(log.records(AuditFilter(until_ms=1000))) == []
    assert [int(r["n"]) for r in log.records(AuditFilter(since_ms=1500))] == [
        w[3] for w in written if w[0] >= 1500]


def test_filter_parse_reads_iso_8601_dates_and_times_naive_as_utc() -> None:
    f = AuditFilter.parse({"since": "2026-11-01", "until": "2026-11-01T12:30:00+01:00",
                           "entity": " acme ", "user": "", "channel": "WEB"})
    assert f.since_ms == datetime(2026, 11, 1, tzinfo=UTC).timestamp() * 1000
    assert f.until_ms == f.since_ms + 11.5 * 3_600_000
    assert (f.entity, f.user, f.channel) == ("acme", None, "web")
    assert f.to_dict() == {"since": "2026-11-01T00:00:00.000Z",
                           "until": "2026-11-01T11:30:00.000Z", "entity": "acme",
                           "channel": "web"}
    assert AuditFilter.parse(f.to_dict()) == f
    assert AuditFilter.parse({}).is_empty and AuditFilter.parse(None).is_empty


@pytest.mark.parametrize(("query", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
    ({"channel": "fax"}, "channel"),
    ({"rule": "R13"}, "rule"),
    ({"colour": "red"}, "colour"),
])
def test_a_bad_filter_is_bad_input_naming_the_field(query: dict[str, str], field: str) -> None:
    with pytest.raises(BadInput) as e:
        AuditFilter.parse(query)
    assert e.value.details["field"] == field
    assert e.value.status == 400 and e.value.exit_code == 2


def test_user_filter_matches_the_actor_or_the_recipient() -> None:
    f = AuditFilter(user="ana")
    assert f.matches({"actor": "ana", "recipient": "x"})
    assert f.matches({"actor": "cli:root", "recipient": "ana"})
    assert not f.matches({"actor": "anna", "recipient": "", "entity": "ana"})


# --- files --------------------------------------------------------------------------------------

RISKY = {"id": "5-0", "at": "1970-01-01T00:00:00.005Z", "time": "5", "actor": "=cmd|'/C calc'!A0",
         "entity": "@SUM(A1)", "recipient": "\tx", "channel": "web", "kind": "-2+3",
         "requested": "7", "granted": "0", "rule": "R8", "outcome": "denied",
         "request_id": "abc", "message": "line one\nline two, \"quoted\"\r\nthree",
         "purpose": "+x", "zeta": "an unusual field", "alpha": "日本語 ✓"}


def records_of(gate: Gate) -> list[dict[str, str]]:
    return [*AuditLog(gate.client).records(), RISKY]


def unquote(cell: str) -> str:
    return cell[1:] if cell[:1] == "'" and cell[1:2] in FORMULA_START else cell


def from_row(header: list[str], row: list[Any]) -> dict[str, str]:
    row = [*row, *[None] * (len(header) - len(row))]  # a reader may drop trailing empty cells
    rec = {k: "" if v is None else str(v) for k, v in zip(header, row, strict=True)}
    other = rec.pop(writers.OTHER)
    rec.update(json.loads(other) if other else {})
    return {k: v for k, v in rec.items() if v != ""}


def nonempty(r: dict[str, str]) -> dict[str, str]:
    return {k: v for k, v in r.items() if v != ""}


def structured(r: dict[str, str]) -> dict[str, Any]:
    """A record as a file's other_fields carry it: a field holding JSON text (an entity's
    `facts`) is the JSON value itself there — no JSON inside JSON."""
    return {k: json.loads(v) if v[:1] in ("{", "[") else v for k, v in nonempty(r).items()}


def test_csv_columns_are_the_spec_audit_fields_first_then_the_others_sorted() -> None:
    header = writers.HEADER_ROW
    assert header[:11] == ["at", "actor", "entity", "recipient", "channel", "kind",
                           "requested", "granted", "rule", "outcome", "request_id"]
    rest = header[11:-1]
    assert rest == sorted(rest) and header[-1] == writers.OTHER


def test_csv_round_trips_every_field_and_no_cell_can_run_as_a_formula(history: Gate) -> None:
    recs = records_of(history)
    out = io.BytesIO()
    assert writers.write_csv(iter(recs), out) == len(recs)
    data = out.getvalue()
    assert data.startswith("\ufeff".encode())
    rows = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert rows[0] == writers.HEADER_ROW
    for row in rows[1:]:
        for cell in row:
            assert not cell or cell[0] not in FORMULA_START, cell
    last = dict(zip(rows[0], rows[-1], strict=True))
    assert last["actor"] == "'=cmd|'/C calc'!A0" and last["entity"] == "'@SUM(A1)"
    assert last["kind"] == "'-2+3" and last["recipient"] == "'\tx"
    back = [from_row(rows[0], [unquote(c) for c in row]) for row in rows[1:]]
    assert back == [structured(r) for r in recs]


def test_jsonl_round_trips_every_record_exactly(history: Gate) -> None:
    recs = records_of(history)
    out = io.BytesIO()
    assert writers.write_jsonl(recs, out) == len(recs)
    lines = out.getvalue().splitlines()
    assert [orjson.loads(line) for line in lines] == recs


def test_xlsx_round_trips_every_field_with_numbers_typed(history: Gate) -> None:
    from openpyxl import load_workbook

    recs = records_of(history)
    out = io.BytesIO()
    assert writers.write_xlsx(recs, out, about={"exported_by": "cora",
                                                "filters": {"entity": "acme"}}) == len(recs)
    book = load_workbook(io.BytesIO(out.getvalue()), read_only=True)
    assert book.sheetnames == ["Audit log", "About this export"]
    rows = [list(r) for r in book["Audit log"].iter_rows(values_only=True)]
    about = dict(book["About this export"].iter_rows(values_only=True))
    book.close()
    header = rows[0]
    assert header == writers.HEADER_ROW
    share = next(r for r in rows if r[header.index("kind")] == "share.posts")
    assert isinstance(share[header.index("requested")], int)
    assert [from_row(header, row) for row in rows[1:]] == [structured(r) for r in recs]
    assert about["records"] == len(recs) and about["exported_by"] == "cora"
    assert json.loads(about["filters"]) == {"entity": "acme"}  # structured: JSON


class Recorder(io.RawIOBase):
    """A write-only stream that remembers when bytes arrived, relative to records read."""

    def __init__(self) -> None:
        self.writes: list[tuple[int, int]] = []  # (records read so far, bytes)
        self.read = 0

    def writable(self) -> bool:
        return True

    def write(self, b: Any) -> int:
        self.writes.append((self.read, len(b)))
        return len(b)


@pytest.mark.parametrize("write", [writers.write_csv, writers.write_jsonl, writers.write_xlsx])
def test_writers_stream_as_records_arrive(write: Callable[..., int]) -> None:
    sink = Recorder()

    def records() -> Iterator[dict[str, str]]:
        for i in range(20_000):
            sink.read = i
            yield {**RISKY, "n": str(i), "message": "x" * 40}

    assert write(records(), sink) == 20_000
    total = sum(n for _r, n in sink.writes)
    early = sum(n for r, n in sink.writes if r < 10_000)
    assert early > 0.3 * total  # much of the file was out before half the records were read


# --- the /audit page ----------------------------------------------------------------------------


@pytest.fixture
def app(history: Gate) -> Flask:
    from gatekeeper.channels.web.app import create_app

    return create_app(history, {"TESTING": True, "SECRET_KEY": "test"})


def login(client: FlaskClient, name: str) -> None:
    assert sign_in(client, name, PASSWORD) == 302


def rows_of(html: str) -> list[str]:
    return re.findall(r'<tr data-id="([^"]+)">', html)


def test_audit_page_lists_every_record_newest_first_for_compliance(client: FlaskClient,
                                                                   history: Gate) -> None:
    login(client, "cora")
    resp = client.get("/audit")
    assert resp.status_code == 200
    html = resp.get_data(as_text=True)
    assert rows_of(html) == [r["id"] for r in AuditLog(history.client).records()][::-1]
    for heading in ("Time (UTC)", "Actor", "Entity", "Recipient", "Channel", "Kind",
                    "Requested", "Granted", "Rule", "Outcome", "Request id", "Message"):
        assert f"<th>{heading}</th>" in html
    assert 'id="older"' not in html
    assert "=HYPERLINK(1)" in html  # shown as text, escaped by the template


def test_admin_may_read_the_audit_log_too(client: FlaskClient) -> None:
    login(client, "adam")
    assert client.get("/audit").status_code == 200


@pytest.mark.parametrize("who", ["ana", "dana"])
def test_other_roles_get_403_for_the_page_and_the_downloads(client: FlaskClient, who: str) -> None:
    login(client, who)
    assert client.get("/audit").status_code == 403
    assert client.get("/audit/export?format=csv").status_code == 403


def test_signed_out_visitors_are_sent_to_sign_in(client: FlaskClient) -> None:
    resp = client.get("/audit")
    assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert client.get("/audit/export?format=xlsx").status_code == 302


def test_older_links_walk_every_filtered_record_exactly_once(
        client: FlaskClient, history: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper.channels.web import auditlog as auditlog_pages

    monkeypatch.setattr(auditlog_pages, "PAGE_SIZE", 2)
    login(client, "cora")
    want = [r["id"] for r in AuditLog(history.client).records(AuditFilter(entity="acme"))]
    seen: list[str] = []
    url: str | None = "/audit?entity=acme&user=&channel="
    while url:
        html = client.get(url).get_data(as_text=True)
        seen += rows_of(html)
        m = re.search(r'<a href="([^"]+)" id="older">', html)
        url = m.group(1).replace("&amp;", "&") if m else None
        if url:
            assert "entity=acme" in url and "before=" in url
    assert seen == want[::-1]


def test_a_bad_filter_shows_its_message_and_400(client: FlaskClient) -> None:
    login(client, "cora")
    resp = client.get("/audit?since=last+tuesday")
    assert resp.status_code == 400
    assert "audit filter since" in resp.get_data(as_text=True)
    assert client.get("/audit?before=garbage").status_code == 400


@pytest.mark.parametrize("fmt", ["csv", "xlsx", "jsonl"])
def test_download_is_a_no_store_attachment_of_the_filtered_records(
        client: FlaskClient, history: Gate, fmt: str) -> None:
    login(client, "cora")
    resp = client.get(f"/audit/export?format={fmt}&entity=acme&outcome=delivered")
    assert resp.status_code == 200
    assert resp.headers["Cache-Control"] == "no-store"
    assert re.fullmatch(rf'attachment; filename="audit-\d{{8}}T\d{{6}}Z\.{fmt}"',
                        resp.headers["Content-Disposition"])
    body = resp.get_data()
    want = [r["id"] for r in AuditLog(history.client).records(
        AuditFilter(entity="acme", outcome="delivered"))]
    assert len(want) == 1
    if fmt == "csv":
        assert resp.mimetype == "text/csv"
        rows = list(csv.DictReader(io.StringIO(body.decode("utf-8-sig"))))
        got = [r["id"] for r in rows]
    elif fmt == "jsonl":
        got = [orjson.loads(line)["id"] for line in body.splitlines()]
    else:
        from openpyxl import load_workbook

        book = load_workbook(io.BytesIO(body), read_only=True)
        rows = list(book["Audit log"].iter_rows(values_only=True))
        book.close()
        got = [r[rows[0].index("id")] for r in rows[1:]]
    assert got == want


def test_download_of_a_bad_format_or_filter_is_400(client: FlaskClient) -> None:
    login(client, "cora")
    assert client.get("/audit/export?format=pdf").status_code == 400
    assert client.get("/audit/export?format=csv&rule=R99").status_code == 400


# --- the CLI ------------------------------------------------------------------------------------


def run_cli(gate: Gate, *args: str) -> Result:
    """`gatekeeper audit …` through a throwaway group wired like cli.main, over `gate`."""

    @click.group(cls=cli.Group)
    @click.pass_context
    def root(ctx: click.Context) -> None:
        obj = cli.Context(None)
        obj._gate = gate
        ctx.obj = obj

    root.add_command(audit_cli)
    return CliRunner().invoke(root, list(args), catch_exceptions=False)


def test_cli_export_writes_the_filtered_log_and_says_how_many(history: Gate,
                                                               tmp_path: Path) -> None:
    out = tmp_path / "sub" / "log.csv"
    r = run_cli(history, "audit", "export", "--entity", "acme", "--format", "csv",
                "--out", str(out))
    assert r.exit_code == 0, r.output
    want = list(AuditLog(history.client).records(AuditFilter(entity="acme")))
    assert r.output.strip() == f"{len(want)} audit records written to {out} (csv)"
    rows = list(csv.DictReader(io.StringIO(out.read_text("utf-8-sig"))))
    assert [row["id"] for row in rows] == [w["id"] for w in want]
    assert [p.name for p in out.parent.iterdir()] == ["log.csv"]  # no temporary file left


def test_cli_export_takes_the_format_from_the_suffix_and_reports_json(history: Gate,
                                                                       tmp_path: Path) -> None:
    out = tmp_path / "log.jsonl"
    r = run_cli(history, "audit", "export", "--since", "2000-01-01", "--rule", "R8",
                "--out", str(out), "--json")
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert data["records"] == 4 and data["format"] == "jsonl"
    assert data["filters"] == {"since": "2000-01-01T00:00:00.000Z", "rule": "R8"}
    assert [orjson.loads(x)["kind"] for x in out.read_bytes().splitlines()] == [
        "entity.terms", "entity.terms", "share.posts", "user.terms"]


def test_cli_export_xlsx_opens_in_a_spreadsheet(history: Gate, tmp_path: Path) -> None:
    from openpyxl import load_workbook

    out = tmp_path / "log.xlsx"
    r = run_cli(history, "audit", "export", "--format", "xlsx", "--out", str(out))
    assert r.exit_code == 0, r.output
    book = load_workbook(out, read_only=True)
    n = sum(1 for _ in book["Audit log"].iter_rows()) - 1
    book.close()
    assert n == len(HISTORY)


@pytest.mark.parametrize(("args", "message"), [
    (["--since", "soon", "--format", "csv"], "audit filter since"),
    (["--format", "csv", "--rule", "R0"], "audit filter rule"),
    ([], "give --format"),
])
def test_cli_bad_input_exits_2_and_writes_nothing(history: Gate, tmp_path: Path,
                                                  args: list[str], message: str) -> None:
    out = tmp_path / "log.out"
    r = run_cli(history, "audit", "export", "--out", str(out), *args)
    assert r.exit_code == 2
    assert message in r.output
    assert not out.exists() and not list(tmp_path.glob(".*.part"))


def test_cli_failed_write_leaves_neither_file_nor_temporary(history: Gate, tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch
                                                            ) -> None:
    def boom(*_a: Any, **_k: Any) -> int:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(writers, "write_csv", boom)
    out = tmp_path / "out" / "log.csv"
    r = run_cli(history, "audit", "export", "--format", "csv", "--out", str(out))
    assert r.exit_code == 2 and "No space left on device" in r.output
    assert list(out.parent.iterdir()) == []


def test_cli_xlsx_past_a_sheets_rows_is_bad_input_and_leaves_no_file(
        history: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(writers, "MAX_ROWS", 5)  # a sheet's row limit, made small
    out = tmp_path / "out" / "log.xlsx"
    r = run_cli(history, "audit", "export", "--out", str(out))
    assert r.exit_code == 2 and "a sheet holds no more" in r.output
    assert list(out.parent.iterdir()) == []


def test_gatekeeper_cli_has_the_audit_export_command() -> None:
    assert cli.main.commands["audit"] is audit_cli


# --- read-only: no route or code path edits or deletes the audit log ----------------------------


def test_every_audit_route_is_get_only(app: Flask) -> None:
    rules = [r for r in app.url_map.iter_rules() if r.rule.startswith("/audit")]
    assert {r.rule for r in rules} >= {"/audit", "/audit/export"}
    for r in rules:
        assert set(r.methods or ()) <= {"GET", "HEAD", "OPTIONS"}, r


def test_no_method_but_get_reaches_the_audit_log(client: FlaskClient, history: Gate) -> None:
    login(client, "cora")
    page = client.get("/audit").get_data(as_text=True)
    token = re.search(r'name="csrf_token" value="([^"]+)"', page)
    assert token
    before = list(AuditLog(history.client).records())
    for path in ("/audit", "/audit/export"):
        for method in ("post", "put", "patch", "delete"):
            resp = getattr(client, method)(path, data={"csrf_token": token.group(1)},
                                        headers={"X-CSRFToken": token.group(1)})
            assert resp.status_code == 405, (method, path)
    assert list(AuditLog(history.client).records()) == before


DESTRUCTIVE = {"delete", "unlink", "expire", "pexpire", "expireat", "pexpireat", "persist",
               "rename", "renamenx", "getdel", "srem", "spop", "smove", "restore", "move",
               "copy", "set", "xdel", "xtrim", "xsetid", "xgroup_destroy"}
LUA_DESTRUCTIVE = {"DEL", "UNLINK", "EXPIRE", "PEXPIRE", "EXPIREAT", "PEXPIREAT", "RENAME",
                   "RENAMENX", "GETDEL", "SREM", "SPOP", "SMOVE", "RESTORE", "SET", "XDEL",
                   "XTRIM", "XSETID"}


def package_files(suffix: str) -> list[Path]:
    return sorted(p for d in ("gatekeeper", "exports") for p in (ROOT / d).rglob(f"*{suffix}"))


def test_no_python_code_path_deletes_trims_or_expires_an_audit_stream() -> None:
    problems = []
    for path in package_files(".py"):
        source = path.read_text()
        # A deque's maxlen is no stream's.
        if re.search(r"\bx(del|trim)\b|(?<!deque\()\b(maxlen|minid)\s*=|['\"]X(DEL|TRIM)['\"]",
                     source, re.IGNORECASE):
            problems.append(f"{path}: XDEL/XTRIM/MAXLEN/MINID")
        for node in ast.walk(ast.parse(source)):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            name = node.func.attr.lower()
            args = " ".join(ast.unparse(a) for a in [*node.args, *node.keywords]).lower()
            if name in ("flushall", "flushdb"):
                problems.append(f"{path}:{node.lineno}: {name}")
            if name in DESTRUCTIVE and "audit" in args:
                problems.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
            if (name == "execute_command" and node.args
                    and isinstance(node.args[0], ast.Constant)
                    and str(node.args[0].value).upper() in LUA_DESTRUCTIVE and "audit" in args):
                problems.append(f"{path}:{node.lineno}: {ast.unparse(node)}")
    assert problems == []


# The one trimmed stream: a refusal index, a capped copy of an audit stream's latest refusals
# (for the dashboard), trimmed in _window.lua's index_refusal and nowhere else.
INDEX_FUNCTION = re.compile(r"local function index_refusal\(.*?\nend\n", re.S)
INDEX_CALL = re.compile(r"\bindex_refusal\(KEYS\[(\d+)\]")


def test_no_lua_script_deletes_trims_or_expires_its_audit_stream() -> None:
    problems = []
    scripts = package_files(".lua")
    assert len(scripts) >= 4
    definitions, calls = 0, []
    for path in scripts:
        text = path.read_text()
        audit_keys = {m.group(1) for m in re.finditer(r"--\s*KEYS\[(\d+)\][^\n]*audit", text)}
        documented = {m.group(1): m.group(2)
                      for m in re.finditer(r"--\s*KEYS\[(\d+)\]\s+([^\n]*)", text)}
        for m in INDEX_CALL.finditer(text):
            calls.append(path.name)
            if m.group(1) in audit_keys or "refusal index" not in documented.get(m.group(1), ""):
                problems.append(f"{path.name}: {m.group(0)} is not a refusal index")
        text, found = INDEX_FUNCTION.subn("", text)
        definitions += found
        if re.search(r"\b(XDEL|XTRIM|MAXLEN|MINID|FLUSHALL|FLUSHDB)\b", text, re.IGNORECASE):
            problems.append(f"{path.name}: XDEL/XTRIM/MAXLEN/MINID/FLUSH")
        for m in re.finditer(r"redis\.p?call\(\s*'(\w+)'\s*,\s*([^,)]+)", text):
            command, target = m.group(1).upper(), m.group(2).strip()
            k = re.fullmatch(r"KEYS\[(\d+)\]", target)
            if command in LUA_DESTRUCTIVE and ((k and k.group(1) in audit_keys)
                                               or "audit" in target.lower()):
                problems.append(f"{path.name}: {m.group(0)}")
    assert problems == []
    assert definitions == 1 and sorted(calls) == ["record.lua", "take.lua"]


READS_AND_APPENDS = {"XADD", "XRANGE", "XREVRANGE", "XLEN", "XINFO", "SADD", "SMEMBERS",
                     "SISMEMBER", "SCARD", "EXISTS", "TYPE", "EVALSHA", "EVAL", "SCRIPT"}


def test_building_a_history_only_appends_to_and_reads_audit_streams(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    spy = Spy(monkeypatch)
    original = redis.client.Pipeline.pipeline_execute_command
    queued: list[tuple[Any, ...]] = []

    def queue(pipe: Any, *args: Any, **kw: Any) -> Any:
        queued.append(args)
        return original(pipe, *args, **kw)

    monkeypatch.setattr(redis.client.Pipeline, "pipeline_execute_command", queue)
    build_history(gate, tmp_path)
    log = AuditLog(gate.client)
    list(log.records())
    all_pages(log, size=3)
    touching = [c for c in [*spy.direct, *queued]
                if c[0].upper() not in ("EVALSHA", "EVAL")
                and any(b":audit" in (a if isinstance(a, bytes) else str(a).encode())
                        for a in c[1:2])]
    assert touching, "the spy saw no audit command"
    assert {c[0].upper() for c in touching} <= READS_AND_APPENDS
    for c in touching:
        if c[0].upper() == "XADD":
            assert not {"MAXLEN", "MINID"} & {str(a).upper() for a in c}
    # Nothing was lost on the way: every stream still holds every record of the history.
    assert sum(gate.client.xlen(k) for k in log.streams()) == len(HISTORY)
