"""The export page keeping up with the person (issue 13, item 1) in a real browser: Debian's
chromium, headless, driven by Playwright, against a real `gatekeeper serve`.

On a dataset of 3,000 posts (written here; an export takes a second or two) an analyst
double-clicks Export: exactly one POST leaves the browser and one grant is audited (no R5
replay), the button stays disabled while the export runs, and the page says what is happening —
"Counting the selection…", then rows written, then done. The export is held at a known row by
the `export.writing:hold` failpoint until the page has shown its progress, so the test waits on
what the page says, never on a clock. After the download the allowance shown has dropped by the
exported objects and the form carries a fresh ticket; switching to PDF and clicking Export
downloads the same selection as a PDF (a second grant). Times are shown in the browser's zone
(Asia/Tokyo here) with a distance beside them; no Content-Security-Policy violation is logged.
Screenshots go to test-artifacts/export-progress-*.png.
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live import ARTIFACTS, PASSWORD, SAMPLES, serving, sign_in_page
from openpyxl import load_workbook
from playwright.sync_api import Browser, Page, expect

from gatekeeper import config as config_mod
from gatekeeper import faults
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys

POSTS = 3000  # 30 copies of the kpop page (100 posts), each post with an ID of its own
LIMIT = 7_000  # two exports of the selection fit, a third does not
WAIT_MS = 120_000  # bounds on waiting for the page, generous for a machine under load


@dataclass
class Site:
    url: str
    gate: Gate
    release: Path  # the export.writing hold lets go once this file exists


def big_dataset(path: Path) -> None:
    page = json.loads((SAMPLES / "kpop.jsonl").read_text())
    with path.open("w") as out:
        for copy in range(POSTS // len(page["data"])):
            for i, post in enumerate(page["data"]):
                post["id"] = str(9 * 10**17 + copy * 1000 + i)
            out.write(json.dumps(page) + "\n")


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Site]:
    directory = tmp_path_factory.mktemp("export-page")
    (directory / "config.toml").write_text(
        f'[redis]\ndata_dir = "var"\n[datasets]\ndir = "datasets"\n'
        f"[limits]\nhydrated_per_recipient = {LIMIT}\n")
    gate = Gate(config_mod.load(directory / "config.toml"))
    big_dataset(directory / "big.jsonl")
    gate.datasets.add("big", directory / "big.jsonl", actor="t", channel="cli")
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                   channel="cli")
    gate.users.accept_terms("ana", actor="ana", channel="web")
    release = directory / "release"
    env = {faults.ENV: "export.writing:hold", faults.ENV_RELEASE: str(release)}
    with serving(directory, env) as url:
        yield Site(url, gate, release)


def audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.audit("acme"))]


# Every text the export form's status line shows, with whether the button was disabled then,
# reported to the test as the page changes (the test cannot evaluate script in the page while
# its form's POST is pending, and string predicates would be eval, which the CSP refuses).
WATCH = """() => {
  const status = document.querySelector('#export-status');
  const button = document.querySelector('#export-button');
  new MutationObserver(() => window.reportStatus(status.textContent, button.disabled))
    .observe(status, {childList: true, characterData: true, subtree: true});
}"""


def shot(page: Page, name: str) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / f"export-progress-{name}.png"), full_page=True)


def shot_pending(page: Page, name: str) -> None:
    """A screenshot while the page's POST is pending (page.screenshot waits for it), through
    chromium's own protocol. The session stays attached: detaching it here lost the download
    that followed."""
    ARTIFACTS.mkdir(exist_ok=True)
    cdp = page.context.new_cdp_session(page)
    png = cdp.send("Page.captureScreenshot", {"format": "png"})["data"]
    (ARTIFACTS / f"export-progress-{name}.png").write_bytes(base64.b64decode(png))


def press(page: Page, selector: str, clicks: int = 1) -> None:
    """A person's click (or double click) with the mouse. Not page.click(): that waits for the
    navigation the click starts, and this one is held until the test releases it."""
    button = page.locator(selector)
    button.scroll_into_view_if_needed()
    box = button.bounding_box()
    assert box is not None
    page.mouse.click(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2,
                     click_count=clicks)


def until(page: Page, done: Callable[[], bool], what: object) -> None:
    """Let the page run until `done()` (a bound, not a timed assertion: a broken page fails
    the test instead of hanging it)."""
    deadline = time.monotonic() + WAIT_MS / 1000
    while not done():
        assert time.monotonic() < deadline, what
        page.wait_for_timeout(50)


def test_export_page_shows_progress_blocks_a_double_click_and_is_ready_for_the_next_format(
        site: Site, browser: Browser) -> None:
    context = browser.new_context(accept_downloads=True, locale="en-US",
                                  timezone_id="Asia/Tokyo")
    page = context.new_page()
    console: list[str] = []
    page.on("console", lambda m: console.append(f"{m.type}: {m.text}"))
    page.on("pageerror", lambda e: console.append(f"pageerror: {e}"))
    posts: list[str] = []
    page.on("request", lambda r: posts.append(r.url) if r.method == "POST" else None)
    previews: list[str] = []
    page.on("request", lambda r: previews.append(r.url) if r.is_navigation_request() else None)
    seen: list[tuple[str, bool]] = []
    page.expose_binding("reportStatus", lambda _source, text, disabled: seen.append(
        (text, disabled)) if text and (not seen or seen[-1] != (text, disabled)) else None)
    sign_in_page(page, site.url, "ana", PASSWORD, "/export")
    assert page.get_attribute("#since", "type") == "date"
    assert page.get_attribute("#until", "type") == "date"

    page.select_option("#dataset", "big")
    page.evaluate(WATCH.replace("#export-status", "#selection .status")
                  .replace("#export-button", "#preview-button"))
    press(page, "#preview-button", clicks=2)
    page.wait_for_selector("#export-form")
    assert seen == [("Counting the selection…", True)]  # said, and disabled, while counting
    assert len([u for u in previews if "dataset=big" in u]) == 1  # one preview for two clicks
    seen.clear()
    assert page.inner_text("#preview").startswith(f"{POSTS:,} posts match")
    assert page.inner_text("#remaining") == f"{LIMIT:,}"
    ticket = page.input_value("#export-form input[name=ticket]")
    page.evaluate(WATCH)
    posts.clear()

    writing = (f"Preparing your file… 0 of {POSTS:,} rows written", True)
    with page.expect_download(timeout=WAIT_MS) as info:
        press(page, "#export-button", clicks=2)
        # Held at row 100 until the page has said so, with its button disabled.
        until(page, lambda: writing in seen, seen)
        shot_pending(page, "running")
        site.release.touch()
    xlsx = info.value
    assert xlsx.suggested_filename.endswith(".xlsx")
    expect(page.locator("#export-button")).to_be_enabled(timeout=WAIT_MS)
    shot(page, "done")

    assert posts == [f"{site.url}/export"]  # the double click sent one POST
    assert seen[0] == ("Counting the selection…", True)
    assert all(disabled for text, disabled in seen[:-1])  # until the page is ready again
    assert seen[-1][0].startswith("Done: your file is downloading.") and not seen[-1][1]
    book = load_workbook(io.BytesIO(Path(xlsx.path()).read_bytes()), read_only=True)
    assert sum(1 for _row in book.worksheets[0].iter_rows(values_only=True)) == POSTS + 1
    book.close()

    # The page now shows the allowance after this export, and a fresh ticket in the form.
    assert page.inner_text("#remaining") == f"{LIMIT - POSTS:,}"
    assert page.inner_text("#used") == f"{POSTS:,}"
    assert page.inner_text("#preview-remaining") == f"{LIMIT - POSTS:,}"
    assert page.get_attribute("#used-bar", "width") == str(round(1000 * POSTS / LIMIT, 1))
    assert page.input_value("#export-form input[name=ticket]") != ticket
    # More frees up a day on, shown in the browser's zone with the distance beside it.
    frees = page.inner_text("#frees-up")
    assert "GMT+9" in frees and ("(in 24 hours)" in frees or "(in 23 hours)" in frees), frees
    assert page.get_attribute("#next-release time", "title").endswith(" UTC")

    page.select_option("#format", "pdf")
    seen.clear()
    with page.expect_download(timeout=WAIT_MS) as info:
        press(page, "#export-button")
    pdf = info.value
    assert pdf.suggested_filename.endswith(".pdf")
    assert Path(pdf.path()).read_bytes().startswith(b"%PDF-")
    until(page, lambda: bool(seen) and seen[-1][0].startswith("Done"), seen)
    expect(page.locator("#export-button")).to_be_enabled(timeout=WAIT_MS)
    left = LIMIT - 2 * POSTS
    assert page.inner_text("#remaining") == f"{left:,}"
    assert page.is_visible("#preview-over")  # the selection is now more than is left
    shot(page, "second-format")

    records = audit(site.gate)
    grants = [r["kind"] for r in records if r.get("outcome") == "granted"]
    assert grants == ["export.xlsx", "export.pdf"]
    assert not [r for r in records if r.get("rule") == "R5"]  # no replay was refused
    assert posts == [f"{site.url}/export"] * 2

    # A third export does not fit: its refusal page replaces this one, as without the script.
    downloads: list[object] = []
    page.on("download", lambda d: downloads.append(d))
    press(page, "#export-button")
    page.wait_for_selector("#refusal", timeout=WAIT_MS)
    assert "nothing was counted" in page.inner_text("#refusal")
    assert f"{left:,} of {LIMIT:,} remain" in " ".join(page.inner_text("#refusal").split())
    assert page.inner_text("#remaining") == f"{left:,}"
    assert page.is_enabled("#export-first")
    shot(page, "refused")
    assert downloads == []
    assert [r["outcome"] for r in audit(site.gate)][-1] == "refused"
    assert not [m for m in console if "Content Security Policy" in m or "pageerror" in m], \
        console
    context.close()
