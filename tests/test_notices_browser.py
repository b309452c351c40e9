"""A deletion notice acknowledged in a real browser: Debian's chromium, headless, Playwright.

A real server over the embedded Redis: dan shared ten Post IDs with acme, then a deletion list
hid one of them — one open notice. The compliance officer sees it on /dashboard, opens it and
records acme's confirmation with the button; the dashboard then shows none open. A screenshot
of the notice page goes to test-artifacts/notice-page.png. Before that (this module's tests
run in order on one site: the officer's acknowledgement closes the notice), dan, of acme's data
team, finds the notice on /data where he lands and downloads the IDs to delete and the letter
(test-artifacts/data-notices.png).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from live import ARTIFACTS, PASSWORD, serving, share_ids, sign_in_page
from playwright.sync_api import Browser

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate, ingest_deletion_stream


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("notices")
    (directory / "config.toml").write_text('[redis]\ndata_dir = "var"\n'
                                           '[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    for name, role in (("dan", "data"), ("cora", "compliance")):
        gate.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                       channel="cli")
    share_ids(gate, directory, "acme", 10, start=1_700_000_000_000_000_000)
    [notice] = ingest_deletion_stream(gate, [b"1700000000000000003\n"], kind="posts",
                                      source="x-list.txt", actor="cora",
                                      channel="cli").notices
    with serving(directory) as url:
        yield url, notice


def test_the_data_team_finds_its_entitys_notice_on_its_page_and_downloads_the_ids(
        site: tuple[str, str], browser: Browser) -> None:
    url, notice = site
    context = browser.new_context(viewport={"width": 1360, "height": 900}, accept_downloads=True)
    page = context.new_page()
    sign_in_page(page, url, "dan", PASSWORD, "/data")
    assert page.inner_text("#n-entity-open") == "1"
    card = page.locator(f'#entity-notices [data-notice="{notice}"]')
    assert "Delete by" in card.inner_text() and "left" in card.inner_text()
    assert "out.txt" in card.inner_text()  # the file the share was written to
    assert "your compliance officer records the deletion" in page.inner_text("#entity-notices")
    with page.expect_download() as got:
        card.get_by_text("Post IDs to delete").click()
    download = got.value
    assert download.suggested_filename == f"notice-{notice}-posts.txt"
    assert Path(download.path()).read_text().split() == ["1700000000000000003"]
    with page.expect_download() as got:
        card.get_by_text("the letter (PDF)").click()
    assert Path(got.value.path()).read_bytes()[:5] == b"%PDF-"
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "data-notices.png"), full_page=True)
    context.close()


def test_compliance_acknowledges_a_notice_from_the_dashboard(
        site: tuple[str, str], browser: Browser) -> None:
    url, notice = site
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    sign_in_page(page, url, "cora", PASSWORD, "/dashboard")
    assert page.inner_text("#n-notices-open") == "1"
    assert page.inner_text("#n-notices-overdue") == "0"
    row = page.locator(f'#open-notices tr[data-notice="{notice}"]')
    assert "23 h 59 min left" in row.inner_text() or "24 h left" in row.inner_text()

    row.locator("a.entity-name").click()
    page.wait_for_url(f"{url}/notices/{notice}")
    assert "Deletion notice to entity acme" in page.inner_text("h1")
    page.fill("#by", "Jane Doe (acme DPO)")
    page.fill("#note", "e-mail of today")
    page.click("#ack-button")
    page.wait_for_selector("#flash")
    assert "acknowledged" in page.inner_text("#flash")
    assert "Jane Doe (acme DPO)" in page.inner_text("#acknowledged")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "notice-page.png"), full_page=True)

    page.goto(f"{url}/dashboard")
    assert page.inner_text("#n-notices-open") == "0"
    context.close()
