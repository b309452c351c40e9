"""Every page at 390 × 844 (a phone) in a real browser: Debian's chromium, headless, driven by
Playwright, against a real `gatekeeper serve` (issue 13, items 3 and 7).

Each role signs in through the form and lands on its own page; then every page it can open is
loaded at 390 px wide: the header does not overflow, "Sign out" and every header link are on
screen, the page itself never scrolls sideways, and every control is on screen or inside a box
that scrolls to it (a wide table scrolls inside its card).
Screenshots go to test-artifacts/small-<role>-<page>.png.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import ARTIFACTS, PASSWORD, serving, share_ids
from playwright.sync_api import Browser, Page

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate, ingest_deletion_stream

WIDTH, HEIGHT = 390, 844
# (user, role, where sign-in lands, every other page the role opens)
ROLES = (
    ("ana", "analyst", "/export", ("/terms", "/account")),
    ("dan", "data", "/data", ("/terms", "/account")),
    ("cora", "compliance", "/dashboard", ("/audit", "/entities/acme", "/notices", "/terms",
                                          "/account")),
    ("adam", "admin", "/admin/users", ("/dashboard", "/audit", "/entities/acme", "/notices",
                                       "/account")),
)


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("small")
    (directory / "config.toml").write_text('[redis]\ndata_dir = "var"\n'
                                           '[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    # Long names on purpose: the header shows them, and they must wrap, not widen it.
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("acme", by="Jo Acme", actor="t", channel="cli")
    for name, role, *_ in ROLES:
        gate.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                       channel="cli")
    gate.users.accept_terms("ana", actor="ana", channel="web")
    share_ids(gate, directory, "acme", 25)
    # A deletion list hides one of them: an open notice on /dashboard and /notices (R9).
    ingest_deletion_stream(gate, [b"3\n"], kind="posts", source="x.txt", actor="t",
                           channel="cli")
    gate.users.create_token("dan", actor="t", channel="cli")
    with serving(directory) as site:
        yield site


FITS = """() => {
  const out = [];
  const w = window.innerWidth;
  const header = document.querySelector('header');
  if (header.scrollWidth > header.clientWidth) out.push(`header scrolls: ${header.scrollWidth}`);
  const page = document.documentElement.scrollWidth;
  if (page > w) out.push(`page is ${page} px wide`);
  for (const el of header.querySelectorAll('a, button')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || r.left < 0 || r.right > w)
      out.push(`${el.textContent.trim()} at ${r.left}-${r.right}`);
  }
  // Every control of the page is on screen, or inside a box that scrolls sideways to it.
  const scrolls = (el) => {
    for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
      const x = getComputedStyle(p).overflowX;
      if ((x === 'auto' || x === 'scroll') && p.scrollWidth > p.clientWidth) return true;
    }
    return false;
  };
  for (const el of document.querySelectorAll('main a, main button, main input, main select')) {
    const r = el.getBoundingClientRect();
    if (r.width === 0 || el.type === 'hidden') continue;
    if ((r.left < 0 || r.right > w) && !scrolls(el))
      out.push(`${el.tagName} ${el.name || el.textContent.trim()} out of reach`);
  }
  return out;
}"""


def check(page: Page, role: str, path: str) -> None:
    assert page.evaluate(FITS) == [], (role, path)
    sign_out = page.get_by_role("button", name="Sign out")
    assert sign_out.is_visible() and sign_out.is_enabled()
    box = sign_out.bounding_box()
    assert box is not None and box["x"] >= 0 and box["x"] + box["width"] <= WIDTH, (role, path)
    ARTIFACTS.mkdir(exist_ok=True)
    name = path.strip("/").replace("/", "-") or "home"
    page.screenshot(path=str(ARTIFACTS / f"small-{role}-{name}.png"), full_page=True)


@pytest.mark.parametrize(("name", "role", "lands", "others"), ROLES, ids=[r[1] for r in ROLES])
def test_each_role_lands_on_its_page_and_every_page_fits_390_px(
        site: str, browser: Browser, name: str, role: str, lands: str,
        others: tuple[str, ...]) -> None:
    context = browser.new_context(viewport={"width": WIDTH, "height": HEIGHT})
    page = context.new_page()
    page.goto(f"{site}/login")
    assert page.evaluate(FITS) == []
    page.fill("#username", name)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"{site}{lands}")  # sign-in lands each role on its own page
    check(page, role, lands)
    for path in others:
        resp = page.goto(f"{site}{path}")
        assert resp is not None and resp.status == 200, (role, path)
        check(page, role, path)
    context.close()
