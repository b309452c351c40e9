"""The export button in a real browser: Debian's chromium, headless, driven by Playwright.

It signs in, accepts X's terms, exports an XLSX and a PDF and opens both; then an export past the
day's allowance shows the message and downloads nothing. A screenshot of the export page is
saved to test-artifacts/export-page.png.
"""

from __future__ import annotations

import io
from collections.abc import Iterator
from pathlib import Path

import pytest
from live import ARTIFACTS, serving
from openpyxl import load_workbook
from playwright.sync_api import Browser, Page
from pypdf import PdfReader

from gatekeeper import config as config_mod
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("browser")
    (directory / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\nhydrated_per_recipient = 60\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="test", channel="cli")
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                   channel="cli")
    with serving(directory) as site:
        yield site


def choose(page: Page, site: str, **filters: str) -> None:
    page.goto(f"{site}/export")
    page.select_option("#dataset", "kpop")
    for name, value in filters.items():
        page.fill(f"#{name}", value)
    page.click("#preview-button")


def test_analyst_exports_xlsx_and_pdf_then_hits_the_allowance(site: str,
                                                              browser: Browser) -> None:
    posts = list(iter_posts(SAMPLES / "kpop.jsonl"))
    japanese = [p for p in posts if p.get("lang") == "ja"]
    context = browser.new_context(accept_downloads=True)
    page = context.new_page()

    page.goto(f"{site}/login")
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}/terms")  # no export before X's terms (R8)
    page.check("#agree")
    page.click("#accept")
    page.wait_for_url(f"{site}/export")

    choose(page, site, lang="ja")
    assert f"{len(japanese)} posts match" in page.inner_text("#preview")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "export-page.png"), full_page=True)
    with page.expect_download() as info:
        page.click("#export-button")
    xlsx = info.value
    assert xlsx.suggested_filename.endswith(".xlsx")
    book = load_workbook(io.BytesIO(Path(xlsx.path()).read_bytes()), read_only=True)
    rows = list(book.worksheets[0].iter_rows(values_only=True))
    book.close()
    header = list(rows[0])
    assert [r[header.index("id")] for r in rows[1:]] == [p["id"] for p in japanese]
    assert [r[header.index("text")] for r in rows[1:]] == [p["text"] for p in japanese]

    choose(page, site, lang="in")
    page.select_option("#format", "pdf")
    with page.expect_download() as info:
        page.click("#export-button")
    pdf = info.value
    assert pdf.suggested_filename.endswith(".pdf")
    text = "".join(p.extract_text() for p in PdfReader(pdf.path()).pages)
    for post in (p for p in posts if p.get("lang") == "in"):
        assert post["id"] in text

    left = 60 - len(japanese) - sum(1 for p in posts if p.get("lang") == "in")
    choose(page, site)  # all 100 posts: more than the rest of today's allowance
    downloads: list[object] = []
    page.on("download", lambda d: downloads.append(d))
    page.click("#export-button")
    page.wait_for_selector("#refusal")
    message = page.inner_text("#refusal")
    assert "nothing was counted" in message
    assert f"{left} of 60 remain" in message
    assert page.inner_text("#remaining") == str(left)
    page.screenshot(path=str(ARTIFACTS / "export-refused.png"), full_page=True)
    assert downloads == []
    context.close()
