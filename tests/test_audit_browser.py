"""The audit log page in a real browser (Debian's chromium, Playwright) at 1280 px wide: no column
is clipped — every cell's text fits inside it and the table needs no sideways scroll — and
refused and denied rows show their message. Screenshot: test-artifacts/audit-1280.png."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import ARTIFACTS, PASSWORD, serving, share_ids, sign_in_page
from playwright.sync_api import Browser

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate
from gatekeeper.rules.errors import Forbidden, QuotaExceeded

pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("audit-browser")
    (directory / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 100\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    for name, terms in (("acme", True), ("initech-research-and-development-labs", False)):
        gate.entities.add(name, kind="commercial", research=False, parent=None, actor="t",
                          channel="cli")
        if terms:
            gate.entities.accept_terms(name, by="Jane Doe", actor="t", channel="cli")
    for name, role in (("dan", "data"), ("cora", "compliance")):
        gate.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                       channel="cli")
    share_ids(gate, directory, "acme", 30)
    with pytest.raises(QuotaExceeded):  # never fits whole
        share_ids(gate, directory, "acme", 150)
    with pytest.raises(Forbidden):  # R8: no terms
        share_ids(gate, directory, "initech-research-and-development-labs", 5)
    with serving(directory) as site:
        yield site


CLIPPED = """() => {
  const wrap = document.querySelector('.audit-table');
  const out = [];
  if (wrap.scrollWidth > wrap.clientWidth)
    out.push('table scrolls: ' + wrap.scrollWidth + ' > ' + wrap.clientWidth);
  for (const cell of document.querySelectorAll('#audit-records th, #audit-records td')) {
    const r = cell.getBoundingClientRect();
    if (cell.scrollWidth > cell.clientWidth + 1 || r.right > window.innerWidth)
      out.push(cell.tagName + ' ' + cell.textContent.trim().slice(0, 40) + ': '
               + cell.scrollWidth + ' > ' + cell.clientWidth);
  }
  return out;
}"""


def test_at_1280_px_no_column_is_clipped_and_refusals_show_their_message(
        browser: Browser, site: str) -> None:
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        sign_in_page(page, site, "cora", PASSWORD, "/audit")
        ARTIFACTS.mkdir(exist_ok=True)
        page.screenshot(path=str(ARTIFACTS / "audit-1280.png"), full_page=True)
        problems = page.evaluate(CLIPPED)
        assert problems == [], "\n".join(problems)
        refused = page.locator("#audit-records tr", has=page.locator(".outcome-refused"))
        assert "never fits whole — send the first 70" in \
            refused.locator(".message").inner_text().lower()
        denied = page.locator("#audit-records tr", has=page.locator(".outcome-denied"))
        assert denied.locator(".message").inner_text().strip()
    finally:
        page.close()
