"""The compliance dashboard in a real browser: Debian's chromium, headless, driven by Playwright.

A real server over the embedded Redis holds the demo data plus a few entities and shares: one
pool near its limit, a child entity, a written permission and a near-duplicate name. The
compliance officer signs in, opens /dashboard and sees the figures; then records a permission on
an entity's page. Screenshots go to test-artifacts/dashboard.png and entity-page.png.
"""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest
from live import ARTIFACTS, serving, share_ids, sign_in_page
from playwright.sync_api import Browser

from gatekeeper import config as config_mod
from gatekeeper.domain import demo, shares
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import charges

LIMIT = 6_000  # small enough that the demo's 5,000 posts bring a pool near it


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    directory = tmp_path_factory.mktemp("dashboard")
    (directory / "config.toml").write_text(
        f'[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = {LIMIT}\n'
        '[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    loaded = demo.load(gate, posts=5_000, history=False)  # figures from this test alone
    assert loaded is not None
    # The demo's commercial customer gets every demo post (near its limit), through a child.
    gate.entities.add("acme-analytics-eu", kind="commercial", research=False,
                      parent="acme-analytics", actor="t", channel="cli")
    gate.entities.accept_terms("acme-analytics-eu", by="Demo Signatory", actor="t",
                               channel="cli")
    shares.share_to_file(gate, actor="dan", entity="acme-analytics", dataset="demo",
                         out=directory / "demo-ids.txt", purpose="browser test")
    share_ids(gate, directory, "acme-analytics-eu", 400)
    share_ids(gate, directory, "northfield-university", 12_000)
    for name in ("globex", "Acme_Analytics_Ltd"):
        gate.entities.add(name, kind="commercial", research=False, parent=None, actor="t",
                          channel="cli")
        gate.entities.accept_terms(name, by=f"{name} legal", actor="t", channel="cli")
    until = int((datetime.now(UTC) + timedelta(days=90)).timestamp() * 1000)
    gate.entities.permit("globex", limit=20_000, until_ms=until, reference="X-PERM-7",
                         actor="t", channel="cli")
    share_ids(gate, directory, "globex", 2_500)
    with contextlib.suppress(Exception):
        share_ids(gate, directory, "acme-analytics", 1_000)  # over the limit: refused (R2)
    ana = gate.users.get("ana")  # an analyst's hydrated objects today (R6)
    gate.ledger.take(ana.root, [charges.hydrated_counter(ana, 41_000, gate.config.limits)],
                     requested=41_000, share_id=uuid.uuid4().hex,
                     audit={"actor": "ana", "entity": ana.entity, "recipient": "ana",
                            "channel": "web", "kind": "export.xlsx"})
    with serving(directory) as site:
        yield site, loaded.passwords["carla"][1]


def test_compliance_officer_reads_the_dashboard_and_records_a_permission(
        site: tuple[str, str], browser: Browser) -> None:
    url, password = site
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    sign_in_page(page, url, "carla", password, "/dashboard")

    rows = page.locator("#entities tbody tr")
    names = [rows.nth(i).get_attribute("data-entity") for i in range(rows.count())]
    # Near the limit first: the pool and its child (5,400 of 6,000), then by ratio.
    assert names[:2] == ["acme-analytics", "acme-analytics-eu"]
    assert names[-1] == "northfield-university"  # exempt (R3): no limit, listed last
    acme = page.locator('tr[data-entity="acme-analytics"]')
    assert acme.locator(".used").inner_text() == "5,400"
    assert acme.locator(".limit").inner_text() == "6,000"
    assert acme.locator(".ratio").inner_text() == "90%"
    globex = page.locator('tr[data-entity="globex"]')
    assert globex.locator(".used").inner_text() == "2,500"
    assert globex.locator(".limit").inner_text() == "20,000"
    assert "R4 permission" in globex.locator(".basis").inner_text()
    uni = page.locator('tr[data-entity="northfield-university"]')
    assert uni.locator(".used").inner_text() == "12,000"
    assert uni.locator(".limit").inner_text() == "no limit"
    assert page.inner_text("#n-near") == "2"
    ana = page.locator('#recipients tr[data-user="ana"]')
    assert ana.locator(".used").inner_text() == "41,000"
    assert ana.locator(".limit").inner_text() == "50,000"
    assert page.inner_text("#n-users-near") == "1"
    assert "Acme_Analytics_Ltd" in page.inner_text("#flags")
    refusals = page.inner_text("#refusals")
    assert "refused" in refusals and "acme-analytics" in refusals
    assert page.locator("#report-link").get_attribute("href").startswith("/report?month=")
    assert "all pools" in page.locator("svg.chart-daily").get_attribute("aria-label")
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "dashboard.png"), full_page=True)

    page.fill("#q", "acme")
    page.click("#search-button")
    page.wait_for_url("**/dashboard?q=acme*")
    assert page.locator("#entities tbody tr").count() == 3

    page.click('a.entity-name:text("acme-analytics-eu")')
    page.wait_for_url(f"{url}/entities/acme-analytics-eu")
    assert page.inner_text("#used") == "400"
    assert "5,400 of 6,000" in page.inner_text("#pool-usage")
    until = (datetime.now(UTC) + timedelta(days=30)).date().isoformat()
    page.fill("#limit-input", "50,000")
    page.fill("#until", until)
    page.fill("#reference", "X-EU-1")
    page.click("#permission-button")
    page.wait_for_selector("#flash")
    assert page.inner_text("#limit") == "50,000"
    assert "X-EU-1" in page.inner_text("#fact-permission")
    assert "entity.permit" in page.inner_text("#changes")
    page.screenshot(path=str(ARTIFACTS / "entity-page.png"), full_page=True)
    context.close()


def test_compliance_officer_links_a_flagged_entity_to_its_parent(
        site: tuple[str, str], browser: Browser) -> None:
    """The splitting flag (R10) names Acme_Analytics_Ltd; the officer links it to
    acme-analytics from its page, and the dashboard shows it pooled."""
    url, password = site
    context = browser.new_context(viewport={"width": 1360, "height": 900})
    page = context.new_page()
    sign_in_page(page, url, "carla", password, "/entities/Acme_Analytics_Ltd")
    assert "Acme_Analytics_Ltd" in page.inner_text("#entity-flags")
    page.fill("#parent-input", "acme-analytics")
    page.fill("#parent-reason", "the same company under its legal name")
    page.click("#parent-button")
    page.wait_for_selector("#flash")
    assert "now pools its Post IDs with acme-analytics" in page.inner_text("#flash")
    assert "child of acme-analytics" in page.inner_text("#fact-pool")
    assert "Formerly the root of its own pool (Acme_Analytics_Ltd)" in page.inner_text(
        "#fact-pool")
    assert "entity.parent" in page.inner_text("#changes")
    page.screenshot(path=str(ARTIFACTS / "entity-linked.png"), full_page=True)
    page.goto(f"{url}/dashboard?q=acme")
    ltd = page.locator('tr[data-entity="Acme_Analytics_Ltd"]')
    assert ltd.locator(".pool").inner_text().startswith("acme-analytics: ")
    context.close()
