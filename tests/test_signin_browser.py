"""Sign-in and the security headers in a real browser (Debian's chromium via Playwright) against
a real `gatekeeper serve`: the CSP blocks nothing on any page, the stylesheets apply, and a
`next` a browser would read as another host lands on this site."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from live import serving, sign_in_page
from playwright.sync_api import Browser

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate

PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    directory = tmp_path_factory.mktemp("signin")
    (directory / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    for name, role in (("ana", "analyst"), ("cora", "compliance")):
        gate.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                       channel="cli")
    gate.users.accept_terms("ana", actor="ana", channel="web")
    with serving(directory) as site:
        yield site


def test_no_page_trips_the_content_security_policy(site: str, browser: Browser) -> None:
    visited = 0
    for name, paths in (("ana", ("/export", "/terms")),
                        ("cora", ("/dashboard", "/audit", "/entities/acme"))):
        context = browser.new_context()
        page = context.new_page()
        blocked: list[str] = []
        page.on("console", lambda m, out=blocked: out.append(m.text)
                if "Content Security Policy" in m.text else None)
        page.goto(f"{site}/login")
        assert page.evaluate("getComputedStyle(document.body).backgroundColor") == \
            "rgb(246, 247, 249)"  # gatekeeper.css applied
        sign_in_page(page, site, name, PASSWORD, paths[0])
        for path in paths:
            page.goto(f"{site}{path}")
            visited += 1
            # The page's own stylesheet applied too (max-width differs per page).
            assert page.evaluate("getComputedStyle(document.querySelector('main')).maxWidth") \
                in ("980px", "1280px", "1600px")
        context.close()
        assert blocked == [], (name, blocked)
    assert visited == 5


def test_a_tab_in_next_does_not_leave_the_site(site: str, browser: Browser) -> None:
    context = browser.new_context()
    page = context.new_page()
    page.goto(f"{site}/login?next=/%09/evil.example")
    page.fill("#username", "ana")
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_load_state()
    assert page.url.startswith(site + "/")
    context.close()
