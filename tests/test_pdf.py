"""The PDF export, read back with pdfplumber (glyph by glyph, with positions) and compared with
the posts it was written from."""

from __future__ import annotations

import io
import re
import tracemalloc
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pytest
from bidi import get_display
from pdfminer.pdftypes import resolve1

from exports.columns import NOTICE
from exports.fonts import fontset
from exports.pdf import COLUMNS, PdfWriter, write_pdf
from gatekeeper.domain.demo import demo_pages
from gatekeeper.domain.formats import iter_posts

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
ABOUT = {"recipient": "ana (acme-analytics)", "time": "2025-01-01 12:00:00 UTC",
         "dataset": "kpop", "filters": "lang in (ko, ja, in)"}
RTL = re.compile("[\u0590-\u08ff\ufb1d-\ufdff\ufe70-\ufefc]")
TEXT = [c.title for c in COLUMNS].index("text")
EMOJI = re.compile("[\U0001f000-\U0001faff\u2600-\u27bf\u200d\ufe0f\U000e0020-\U000e007f]+")
ARABIC = "لا أستطيع التوقف عن التفكير في المباراة"


def post(text: str, pid: str = "1440717170493689866", **fields: Any) -> dict[str, Any]:
    return {"id": pid, "text": text, "created_at": "2021-09-22T16:38:35.000Z", "lang": "und",
            "author": {"id": "7", "username": "someone", "name": "Some One"}, **fields}


def export(posts: Any, about: Any = ABOUT) -> tuple[bytes, PdfWriter]:
    buf = io.BytesIO()
    writer = PdfWriter(buf, about=about)
    for p in posts:
        writer.add(p)
    writer.close()
    return buf.getvalue(), writer


def pages(data: bytes, column: int | None = None, writer: PdfWriter | None = None
          ) -> list[list[str]]:
    """Each page's lines of glyphs, left to right as drawn (grouped by baseline, sorted by x),
    of the whole page or of one column of the table: the visual order, not a reader's guess."""
    out = []
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            chars = page.chars
            if column is not None:
                assert writer is not None
                x0 = writer.x[column]
                chars = [c for c in chars if x0 <= c["x0"] < x0 + writer.widths[column]
                         and c["matrix"][5] > writer.bottom]  # not the footer
            by_line: dict[float, list[Any]] = {}
            for c in chars:
                by_line.setdefault(round(c["matrix"][5], 2), []).append(c)
            out.append([_join(sorted(cs, key=lambda c: c["matrix"][4]))
                        for _, cs in sorted(by_line.items(), reverse=True)])
    return out


def _join(chars: list[Any]) -> str:
    """Glyphs of one line as text; a gap wider than a space between two of them reads as one."""
    text, right = [], None
    for c in chars:
        if right is not None and c["x0"] - right > 1.5:
            text.append(" ")
        text.append(c["text"])
        right = c["x1"]
    return "".join(text)


def squash(text: str) -> str:
    return re.sub(r"\s+", "", text)


def column_text(data: bytes, writer: PdfWriter, column: int) -> str:
    """One column of the table, every page, title block and header rows left out, whitespace
    removed."""
    title = COLUMNS[column].title
    return "".join(squash(line) for page in pages(data, column, writer)
                   for line in page[page.index(title) + 1:])


def demo_posts(n: int, seed: int = 1) -> Iterator[dict[str, Any]]:
    """Generated posts in fifteen languages, each with its author, as iter_posts yields them."""
    for page in demo_pages(n, seed, anchor=datetime(2026, 1, 1, tzinfo=UTC)):
        users = {u["id"]: u for u in page["includes"]["users"]}
        for p in page["data"]:
            p["author"] = users.get(p["author_id"])
            yield p


@pytest.fixture(scope="module")
def kpop() -> tuple[list[dict[str, Any]], bytes, PdfWriter]:
    posts = list(iter_posts(SAMPLES / "kpop.jsonl"))
    data, writer = export(posts)
    return posts, data, writer


def test_every_kpop_post_reads_back_with_its_id_and_its_text(kpop: Any) -> None:
    posts, data, writer = kpop
    assert writer.rows == len(posts) == 100
    ids = column_text(data, writer, [c.title for c in COLUMNS].index("post ID"))
    text = column_text(data, writer, TEXT)
    checked = 0
    for p in posts:
        assert p["id"] in ids
        assert f"https://x.com/{p['author']['username']}/status/{p['id']}" in text
        if not RTL.search(p["text"]):  # wrapped lines of Latin, Hangul, kana: same glyphs
            shown = p["text"].replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
            assert squash(fontset().clean(shown)[0]) in text
            checked += 1
    assert checked > 90


def test_write_pdf_returns_the_rows_written_and_ends_with_eof(kpop: Any) -> None:
    posts, _, _ = kpop
    buf = io.BytesIO()
    assert write_pdf(iter(posts), buf, about=ABOUT) == len(posts)
    assert buf.getvalue().startswith(b"%PDF-1.7") and buf.getvalue().endswith(b"%%EOF\n")


def test_cross_reference_table_points_at_every_object(kpop: Any) -> None:
    _, data, _ = kpop
    start = int(data.rsplit(b"startxref\n", 1)[1].split()[0])
    head, entries = data[start:].split(b"\n", 1)[0], data[start:].split(b"\n")[2:]
    assert head == b"xref"
    size = int(data[start:].split(b"\n")[1].split()[1])
    for num in range(1, size):
        offset = int(entries[num][:10])
        assert data[offset:].startswith(b"%d 0 obj\n" % num)


def test_fonts_are_embedded_truetype_subsets_none_left_to_the_reader(kpop: Any) -> None:
    _, data, _ = kpop
    names = set()
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            for ref in resolve1(resolve1(page.page_obj.resources)["Font"]).values():
                font = resolve1(ref)
                descriptor = resolve1(font["FontDescriptor"])
                assert font["Subtype"].name == "TrueType"
                assert resolve1(descriptor["FontFile2"]).get_data()[:4] == b"\0\1\0\0"
                assert "ToUnicode" in font
                names.add(font["BaseFont"].name.split("+")[1])
    assert {"NotoSans-Regular", "WenQuanYiMicroHei", "NotoSansSymbols2-Regular"} <= names


def test_each_script_is_drawn_by_the_font_that_has_it() -> None:
    data, _ = export([post(f"Привет Γειά 안녕 こんにちは 你好 {ARABIC} ❤ क")])
    fonts: dict[str, str] = {}
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for c in pdf.pages[0].chars:
            fonts[c["text"]] = c["fontname"].split("+")[1]
    assert fonts["П"] == fonts["Γ"] == "NotoSans-Regular"
    assert fonts["안"] == fonts["こ"] == fonts["你"] == "WenQuanYiMicroHei"
    assert fonts["لا"] == fonts["ت"] == "NotoSansArabic-Regular"
    assert fonts["❤"] == "NotoSansSymbols2-Regular"
    assert fonts["क"] == "NotoSansDevanagari-Regular"


def test_arabic_is_joined_by_harfbuzz_and_drawn_right_to_left() -> None:
    data, writer = export([post(ARABIC)])
    (line,) = [ln for ln in pages(data, TEXT, writer)[0] if RTL.search(ln)]
    # Each glyph reads as its letter (lam-alef, one ligature glyph, as both): the visual order
    # is bidi's, right to left, with the first word, lam-alef, the rightmost glyph.
    assert line == get_display(ARABIC).replace("ال", "لا")
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        chars = [c for c in pdf.pages[0].chars if RTL.search(c["text"])]
        rightmost = max(chars, key=lambda c: c["x1"])
    assert rightmost["text"] == "لا"
    assert rightmost["x1"] == pytest.approx(writer.x[TEXT] + writer.widths[TEXT] - 3, abs=0.5)


def test_arabic_inside_latin_text_keeps_the_latin_order_around_it() -> None:
    data, writer = export([post("score مرحبا بالعالم today")])
    (line,) = [ln for ln in pages(data, TEXT, writer)[0] if RTL.search(ln)]
    assert line.startswith("score ") and line.endswith(" today")
    assert line == get_display("score مرحبا بالعالم today").replace("ال", "لا")


def test_a_character_no_font_has_is_shown_as_its_code_point_and_counted() -> None:
    data, writer = export([post("private \U0010fffd and hieroglyph \U00013083 end")])
    assert writer.replaced == 2
    text = "".join(pages(data, TEXT, writer)[0])
    assert "private [U+10FFFD] and hieroglyph [U+13083] end" in text
    assert "Characters replaced 2 (no embedded font has them" in "\n".join(pages(data)[0])


def test_control_characters_and_noncharacters_are_shown_not_dropped() -> None:
    data, writer = export([post("bell\x07 nul\x00 esc\x1b[31m bad\ufffe tab\tend")])
    text = "".join(pages(data, TEXT, writer)[0])
    assert "bell[U+0007] nul[U+0000] esc[U+001B][31m bad[U+FFFE] tab end" in text
    assert writer.replaced == 4


def test_cjk_wraps_between_characters_and_latin_between_words() -> None:
    japanese = "今日は新しいアルバムのことばかり考えている" * 12
    latin = " ".join(f"word{i:03d}" for i in range(120))
    data, writer = export([post(japanese), post(latin, pid="2")])
    lines = [ln for ln in pages(data, TEXT, writer)[0] if ln not in ("text", "")]
    jp = [ln for ln in lines if re.search("[\u3040-\u9fff]", ln)]
    assert len(jp) > 1 and "".join(jp) == japanese
    words = [ln for ln in lines if "word" in ln]
    assert len(words) > 1
    assert all(re.fullmatch(r"word\d{3}( word\d{3})*", ln) for ln in words)
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        right = writer.x[TEXT] + writer.widths[TEXT]
        assert all(c["x1"] <= right for c in pdf.pages[0].chars if c["x0"] < right - 5)


def test_a_post_longer_than_a_page_continues_on_the_next_page() -> None:
    long = " ".join(f"w{i:05d}" for i in range(4_000))  # X Premium posts run to 25,000
    data, writer = export([post("before", pid="1"), post(long, pid="2"),
                           post("after", pid="3")])
    assert len(writer.pages) > 2
    text = column_text(data, writer, TEXT)
    assert "before" + squash(long) in text.replace("https://x.com/someone/status/1", "")
    assert text.endswith("afterhttps://x.com/someone/status/3")


def test_pages_are_numbered_n_of_m() -> None:
    data, writer = export(demo_posts(300))
    total = len(writer.pages)
    assert total > 3
    for number, lines in enumerate(pages(data), 1):
        assert f"page {number} of {total}" in lines[-1]


def test_title_block_names_recipient_time_dataset_filters_count_and_notice(kpop: Any) -> None:
    _, data, _ = kpop
    first = "\n".join(pages(data)[0])
    for line in ("Recipient ana (acme-analytics)", "Exported (UTC) 2025-01-01 12:00:00 UTC",
                 "Dataset kpop", "Filters lang in (ko, ja, in)", "Posts 100"):
        assert line in first
    for _, text in NOTICE:
        assert squash(text.format(recipient=ABOUT["recipient"])) in squash(first)
    for phrase in ("must not be made publicly available", "Terms of Service, Privacy Policy,",
                   "Developer Agreement and Developer Policy", "within 24 hours"):
        assert squash(phrase) in squash(first)


def test_every_page_repeats_the_notice_in_its_footer() -> None:
    data, _ = export(demo_posts(100))
    for lines in pages(data):
        assert "hydrated X content for ana (acme-analytics): not to be made publicly " \
               "available (R7)" in lines[-1]


def test_no_posts_still_give_a_page_with_the_title_block_and_notice() -> None:
    data, writer = export([])
    assert writer.rows == 0 and len(writer.pages) == 1
    first = "\n".join(pages(data)[0])
    assert "Posts 0" in first and "page 1 of 1" in first
    assert "within 24 hours" in first


def test_each_row_links_to_its_post_on_x() -> None:
    data, _ = export([post("hello", pid="123"), post("again", pid="456", author=None,
                                                     author_id="9")])
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        uris = [a["uri"] for a in pdf.pages[0].annots]
    assert uris == ["https://x.com/someone/status/123", "https://x.com/i/web/status/456"]


def test_demo_posts_in_fifteen_languages_need_no_placeholder_but_for_controls_and_emoji(
) -> None:
    # No emoji font with outlines ships with Debian (Noto Color Emoji is bitmaps): the emoji
    # Noto Sans Symbols 2 lacks are the other placeholders, one for each emoji or sequence.
    posts = list(demo_posts(2_000, seed=3))
    controls = sum(1 for p in posts for ch in p["text"]
                   if ch in "\x07\x0b\x1b\x00\x1f\ufffe")
    _, writer = export(posts)
    emoji = sum(fontset().clean(EMOJI.sub(" ", p["text"]))[1] for p in posts)
    no_emoji = [{**p, "text": EMOJI.sub(" ", p["text"])} for p in posts]
    _, plain = export(no_emoji)
    assert plain.replaced == controls == emoji
    assert writer.replaced > controls


def test_memory_stays_flat_from_500_to_5000_posts() -> None:
    class Sink:
        def write(self, data: bytes) -> int:
            return len(data)

    about = {"recipient": "ana"}
    write_pdf(demo_posts(300), Sink(), about=about)  # fonts loaded, caches warm
    peaks = []
    for n in (500, 5_000):
        tracemalloc.start()
        try:
            assert write_pdf(demo_posts(n), Sink(), about=about) == n
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
    assert peaks[1] < peaks[0] * 1.3, peaks


def test_a_referenced_post_added_as_a_row_says_so_under_its_id() -> None:
    from exports.columns import REFERENCED_KEY

    quoted = post("the quoted one", pid="1440717170493689800", **{REFERENCED_KEY: "quoted"})
    replied = post("the one replied to", pid="1440717170493689801",
                   **{REFERENCED_KEY: "replied_to"})
    data, writer = export([quoted, replied, post("the file's own post")])
    ids = column_text(data, writer, len(COLUMNS) - 1)
    assert ids == ("1440717170493689800referenced(quoted)"
                   "1440717170493689801referenced(repliedto)1440717170493689866")
