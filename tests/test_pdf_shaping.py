"""Issue 12, items 6 and 7 of the PDF export: every script shaped by HarfBuzz (the glyphs read
back from the PDF's content streams equal HarfBuzz's own shaping of the same font file), emoji
sequences kept whole, the X API's HTML entities shown as characters, the title block in words,
the fonts shipped inside the package, and a rendered page of the multilingual sample kept."""

from __future__ import annotations

import fnmatch
import hashlib
import io
import os
import re
import tomllib
from pathlib import Path
from typing import Any

import pdfplumber
import pypdfium2
import pytest
import uharfbuzz as hb
from live import ARTIFACTS
from pdfminer.pdftypes import resolve1

from exports.columns import about_rows
from exports.fonts import CHAIN, fontset
from exports.pdf import COLUMNS, PdfWriter
from gatekeeper.domain.formats import iter_posts

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
FONTDATA = Path(__file__).resolve().parents[1] / "exports" / "fontdata"
TEXT = [c.title for c in COLUMNS].index("text")
DEVANAGARI = "क्षत्रिय"
ARABIC = "لا أستطيع التوقف"
SHOW = re.compile(r"/F(\d+)s(\d+) [\d.]+ Tf|<([0-9a-f]*)>")


def post(text: str, pid: str = "1440717170493689866") -> dict[str, Any]:
    return {"id": pid, "text": text, "created_at": "2021-09-22T16:38:35.000Z", "lang": "und",
            "author": {"id": "7", "username": "someone", "name": "Some One"}}


def export(posts: list[dict[str, Any]], about: Any = None) -> tuple[bytes, PdfWriter]:
    buf = io.BytesIO()
    writer = PdfWriter(buf, about=about or {"recipient": "ana", "time": "2025-01-01 12:00"})
    for p in posts:
        writer.add(p)
    writer.close()
    return buf.getvalue(), writer


def drawn_glyphs(data: bytes, writer: PdfWriter) -> list[tuple[int, int, float]]:
    """(face, glyph id, advance in 1/1000 em) of every glyph the pages' content streams draw,
    in drawing order: each font resource's code is looked up in the subset the writer embedded
    for it, its advance in the font's /Widths."""
    fonts = writer.fonts
    out = []
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        for page in pdf.pages:
            resources = resolve1(resolve1(page.page_obj.resources)["Font"])
            contents = resolve1(page.page_obj.attrs["Contents"])
            stream = contents.get_data().decode("latin-1")
            face = sub = -1
            widths: list[float] = []
            for m in SHOW.finditer(stream):
                if m.group(1) is not None:
                    face, sub = int(m.group(1)), int(m.group(2))
                    widths = resolve1(resolve1(resources[f"F{face}s{sub}"])["Widths"])
                    continue
                codes = writer.enc.subsets[face][sub]
                for code in bytes.fromhex(m.group(3)):
                    gid = fonts.faces[face].charToGlyph[codes[code]]
                    out.append((face, gid, float(widths[code])))
    return out


def page_text(data: bytes) -> str:
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        return str(pdf.pages[0].extract_text())


def harfbuzz(text: str, font_file: str) -> list[int]:
    """HarfBuzz's own shaping of `text` with the font file, as any HarfBuzz user gets it."""
    return [gid for gid, _ in harfbuzz_advances(text, font_file)]


def harfbuzz_advances(text: str, font_file: str) -> list[tuple[int, float]]:
    """(glyph id, advance in 1/1000 em) as HarfBuzz shapes `text` with the font file."""
    blob = hb.Blob.from_file_path(str(FONTDATA / font_file))
    face = hb.Face(blob)
    buf = hb.Buffer()
    buf.add_str(text)
    buf.guess_segment_properties()
    hb.shape(hb.Font(face), buf)
    return [(i.codepoint, p.x_advance * 1000 / face.upem)
            for i, p in zip(buf.glyph_infos, buf.glyph_positions, strict=True)]


def face_index(font_file: str) -> int:
    return [f.resource for f in fontset().files].index(font_file)


@pytest.mark.parametrize(("text", "font_file"), [
    (DEVANAGARI, "NotoSansDevanagari-Regular.ttf"),
    ("हिन्दी", "NotoSansDevanagari-Regular.ttf"),
    (ARABIC.split()[2], "NotoSansArabic-Regular.ttf"),
    ("সত্যি", "NotoSansBengali-Regular.ttf"),
    ("ஸ்ரீ", "NotoSansTamil-Regular.ttf"),
    ("น้ำใจ", "NotoSansThai-Regular.ttf"),
    ("ខ្មែរ", "NotoSansKhmer-Regular.ttf"),
])
def test_glyphs_drawn_in_the_pdf_are_harfbuzzs_own_shaping_of_the_same_font(
        text: str, font_file: str) -> None:
    data, writer = export([post(text)])
    face = face_index(font_file)
    drawn = [(gid, width) for f, gid, width in drawn_glyphs(data, writer) if f == face]
    expected = harfbuzz_advances(text, font_file)
    assert [gid for gid, _ in drawn] == [gid for gid, _ in expected]
    assert [w for _, w in drawn] == pytest.approx([w for _, w in expected], abs=0.01)


def test_devanagari_has_its_conjuncts_and_the_short_i_before_its_consonant() -> None:
    data, writer = export([post(DEVANAGARI)])
    face = face_index("NotoSansDevanagari-Regular.ttf")
    drawn = [gid for f, gid, _ in drawn_glyphs(data, writer) if f == face]
    cmap = fontset().faces[face].charToGlyph
    # क्ष and त्र are one glyph each: four glyphs for eight characters, and the i-matra (a
    # glyph of its own) is drawn first of त्रि, left of the त्र it follows in the text.
    assert len(drawn) == 4 and drawn[-1] == cmap[ord("य")]
    assert cmap[ord("क")] not in drawn and cmap[ord("ष")] not in drawn
    assert [drawn[2]] == harfbuzz("त्र", "NotoSansDevanagari-Regular.ttf")
    assert drawn[1] != drawn[2]  # the i-matra's glyph, before त्र
    assert [drawn[0]] == harfbuzz("क्ष", "NotoSansDevanagari-Regular.ttf")
    text = "".join(page_text(data).split())
    assert DEVANAGARI in text.replace("\u2060", "")  # and it reads back as written


def test_arabic_is_shaped_in_visual_order_with_the_lam_alef_ligature() -> None:
    data, writer = export([post(ARABIC)])
    face = face_index("NotoSansArabic-Regular.ttf")
    drawn = [gid for f, gid, _ in drawn_glyphs(data, writer) if f == face]
    words = [harfbuzz(w, "NotoSansArabic-Regular.ttf") for w in ARABIC.split()]
    assert drawn == [g for w in reversed(words) for g in w]  # the first word rightmost
    assert len(words[0]) == 1  # لا is one glyph


def test_emoji_sequences_stay_one_symbol_never_their_parts() -> None:
    family, flag, tone, keycap = "👨\u200d👩\u200d👧", "🇧🇷", "👍🏽", "1\ufe0f\u20e3"
    data, writer = export([post(f"a {family} b {flag} c {tone} d {keycap} e")])
    text = "".join(page_text(data).split())
    assert "a[U+1F468+200D+1F469+200D+1F467]b[flagBR]c[U+1F44D+1F3FD]d[keycap1]e" in text
    assert writer.replaced == 4
    assert "👍" not in text and "[U+1F468]" not in text


def test_html_entities_of_the_x_api_are_shown_as_the_characters() -> None:
    data, _ = export([post("Tom &amp; Jerry &lt;3 &gt;_&lt; and &amp;lt; stays")])
    text = " ".join(page_text(data).split())
    assert "Tom & Jerry <3 >_< and &lt; stays" in text
    assert "&amp;" not in text


HYDRATED_ABOUT = {"recipient": "ana", "entity": "acme", "exported_at": "2025-01-01T12:00:00Z",
                  "dataset": "kpop", "filters": {"lang": "ko", "contains": "bts"},
                  "posts": "2", "export_id": "e-1", "notice": "Keep it private (R7)."}


def test_title_block_says_each_fact_once_in_words() -> None:
    data, _ = export([post("one"), post("two", pid="2")], about=HYDRATED_ABOUT)
    lines = page_text(data).split("\n")
    head = "\n".join(lines[:lines.index("created (UTC) author text lang likes reposts post ID")])
    for fact in ("Recipient ana", "Recipient's organisation acme",
                 "Exported (UTC) 2025-01-01T12:00:00Z", "Dataset kpop",
                 "Filters language ko; text contains bts", "Posts 2", "Export ID e-1",
                 "Keep it private (R7)."):
        assert head.count(fact) == 1, fact
    for raw in ("exported_at", "export_id", "{", "'lang'", "entity"):
        assert raw not in head
    assert head.count("Posts") == 1


def test_about_rows_label_in_words_for_xlsx_and_pdf_alike() -> None:
    rows = dict(about_rows({"recipient": "ana", "filters": {"since": "2025-01-01T00:00:00Z"},
                            "time": "now"}, {"posts": 3}))
    assert rows["Recipient"] == "ana" and rows["Exported (UTC)"] == "now"
    assert rows["Filters"] == "posted at or after 2025-01-01T00:00:00Z" and rows["Posts"] == 3
    assert dict(about_rows({"filters": "none"}, {}))["Filters"] == \
        "none: every post of the dataset"


def test_fonts_ship_inside_the_package_with_their_licences_and_checksums() -> None:
    sources = (FONTDATA / "SOURCES.md").read_text()
    for f in CHAIN:
        data = (FONTDATA / f.resource).read_bytes()
        assert hashlib.sha256(data).hexdigest() in sources, f.resource
    assert [f.resource for f in fontset().files] == [f.resource for f in CHAIN]
    for licence in ("OFL-1.1.txt", "LICENSE-Apache-2.0.txt"):
        assert (FONTDATA / licence).stat().st_size > 1000


def test_package_data_carries_every_font_file_into_the_wheel_and_sdist() -> None:
    # A fresh `pip install .` has only what [tool.setuptools.package-data] names.
    config = tomllib.loads((FONTDATA.parents[1] / "pyproject.toml").read_text())
    patterns = config["tool"]["setuptools"]["package-data"]["exports"]
    for path in FONTDATA.iterdir():
        assert any(fnmatch.fnmatch(f"fontdata/{path.name}", p) for p in patterns), path.name
    deps = " ".join(config["project"]["dependencies"])
    assert "fonts" not in deps and "uharfbuzz" in deps  # no font package, HarfBuzz


def test_rendered_first_page_of_the_multilingual_sample_is_kept_and_shows_its_text() -> None:
    posts = list(iter_posts(SAMPLES / "kpop.jsonl"))
    posts[0] = {**posts[0], "text": f"{DEVANAGARI} {ARABIC} ខ្មែរ น้ำใจ " + posts[0]["text"]}
    data, writer = export(posts)
    where = Path(os.environ.get("GATEKEEPER_TEST_ARTIFACTS") or ARTIFACTS)  # kept, as screenshots
    where.mkdir(parents=True, exist_ok=True)
    (where / "kpop-export.pdf").write_bytes(data)
    scale = 2.0
    page = pypdfium2.PdfDocument(data)[0]
    image = page.render(scale=scale).to_pil().convert("L")
    image.save(where / "kpop-export-page1.png")
    with pdfplumber.open(io.BytesIO(data)) as pdf:
        chars = pdf.pages[0].chars
        height = pdf.pages[0].height
        row = [c for c in chars if c["x0"] >= writer.x[TEXT] and "क" <= c["text"][:1] <= "ॿ"]
    assert row, "the Devanagari of the first post is on the first page"
    x0, x1 = min(c["x0"] for c in row), max(c["x1"] for c in row)
    top, bottom = min(c["top"] for c in row), max(c["bottom"] for c in row)
    box = (int(x0 * scale), int(top * scale), int(x1 * scale), int(bottom * scale))
    ink = sum(image.crop(box).histogram()[:128])
    assert ink > 50  # glyphs were drawn where the text is
    margin = image.crop((0, 0, int(20 * scale), int(height * scale)))
    assert margin.getextrema()[0] > 250  # and the margin is blank
    assert (where / "kpop-export-page1.png").stat().st_size > 10_000
