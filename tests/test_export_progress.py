"""The export page keeping up (issue 13, item 1) with Flask's test client, on both backends:
the progress an export writes as it goes, the fresh allowance and ticket after a download,
who may read them, and the page's markup for dates and times."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from live import PASSWORD, build_gate, form_token, sign_in, sign_in_agreeing

from gatekeeper.domain import hydrated, progress
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
KPOP = list(iter_posts(SAMPLES / "kpop.jsonl"))
JAPANESE = [p for p in KPOP if p.get("lang") == "ja"]
LIMIT = 60


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return build_gate(tmp_path, redis_client, kpop=True,  # fake and real
                      users=(("ana", "analyst"), ("abe", "analyst"), ("dan", "data")),
                      config=f"[limits]\nhydrated_per_recipient = {LIMIT}")


def signed_in(client: FlaskClient, name: str = "ana") -> None:
    sign_in_agreeing(client, name, PASSWORD)


def export_page(client: FlaskClient, **query: str) -> str:
    resp = client.get("/export", query_string={"dataset": "kpop", **query})
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def form_of(page: str, form_id: str = "export-form") -> str:
    start = page.index(f'id="{form_id}"')
    return page[page.rindex("<form", 0, start):page.index("</form>", start)]


def progress_url(form: str) -> str:
    m = re.search(r'data-progress="([^"]+)"', form)
    assert m, "the export form names no progress"
    return m.group(1)


def post_export(client: FlaskClient, form: str, fmt: str = "xlsx",
                **extra: str) -> tuple[int, bytes]:
    data = {name: value for name, value in re.findall(r'name="([^"]+)" value="([^"]*)"', form)}
    data.update(format=fmt, **extra)
    resp = client.post("/export", data=data)
    try:
        return resp.status_code, resp.get_data()
    finally:
        resp.close()


def polled(client: FlaskClient, url: str) -> tuple[int, Any, Any]:
    resp = client.get(url)
    return resp.status_code, resp.get_json(silent=True), resp.headers


def r6_used(gate: Gate) -> int:
    from gatekeeper.domain import quota

    return quota.user_quota(gate, "ana")["used"]


def test_an_export_leaves_its_progress_for_its_page_and_figures_only(
        client: FlaskClient, gate: Gate) -> None:
    signed_in(client)
    form = form_of(export_page(client, lang="ja"))
    url = progress_url(form)
    status, body, _ = polled(client, url)
    assert (status, body) == (404, {"state": "unknown"})  # not started yet
    status, _ = post_export(client, form)
    assert status == 200
    status, body, headers = polled(client, url)
    assert status == 200 and headers["Cache-Control"] == "no-store"
    assert body == {"state": "done", "written": len(JAPANESE), "total": len(JAPANESE)}
    # Figures only: no post, author, text or ID of the export is in the store's record.
    pid = url.rsplit("/", 1)[1]
    raw = gate.client.get(keys.export_progress("acme", "ana", pid))
    assert set(json.loads(raw)) == {"state", "written", "total"}
    for post in JAPANESE:
        assert post["id"].encode() not in raw and post["author_id"].encode() not in raw
    assert 0 < gate.client.ttl(keys.export_progress("acme", "ana", pid)) <= progress.TTL_S


def test_progress_is_named_by_a_hash_of_the_ticket_never_the_ticket(
        client: FlaskClient) -> None:
    signed_in(client)
    form = form_of(export_page(client, lang="ja"))
    ticket = form_token(form, "ticket")
    assert ticket not in progress_url(form)
    assert progress_url(form) == f"/export/progress/{progress.progress_id(ticket)}"


# Several people at once: clients of their own, none kept in a `with` block (the `client`
# fixture's keeps its last request's context, whose signed-in user the next client would see).


def test_another_analyst_cannot_read_someones_progress(app: Any) -> None:
    ana, abe = app.test_client(), app.test_client()
    signed_in(ana)
    form = form_of(export_page(ana, lang="ja"))
    assert post_export(ana, form)[0] == 200
    url = progress_url(form)
    assert polled(ana, url)[0] == 200
    signed_in(abe, "abe")
    status, body, _ = polled(abe, url)
    assert (status, body) == (404, {"state": "unknown"})
    assert polled(ana, url)[1]["state"] == "done"


def test_only_an_analyst_reads_progress_or_fresh_state(app: Any) -> None:
    ana, anonymous, data_team = app.test_client(), app.test_client(), app.test_client()
    signed_in(ana)
    form = form_of(export_page(ana, lang="ja"))
    assert post_export(ana, form)[0] == 200
    url = progress_url(form)
    for path in (url, "/export/state"):
        resp = anonymous.get(path)
        assert resp.status_code == 302 and "/login" in resp.headers["Location"]
    assert sign_in(data_team, "dan", PASSWORD) == 302
    for path in (url, "/export/state"):
        assert data_team.get(path).status_code == 403
    assert polled(ana, url)[0] == 200


def test_a_token_cannot_read_progress_or_state_r5(client: FlaskClient, gate: Gate) -> None:
    token = gate.users.create_token("ana", actor="t", channel="cli")
    for path in ("/export/progress/" + "0" * 32, "/export/state"):
        resp = client.get(path, headers={"Authorization": f"Bearer {token}"})
        assert resp.status_code == 403
        assert resp.get_json()["rule"] == "R5"


def test_a_malformed_progress_name_is_unknown(client: FlaskClient) -> None:
    signed_in(client)
    for pid in ("x" * 32, "0" * 31, "*"):
        assert polled(client, f"/export/progress/{pid}")[:2] == (404, {"state": "unknown"})


def test_fresh_state_shows_the_new_allowance_and_a_ticket_for_the_other_format(
        client: FlaskClient, gate: Gate) -> None:
    signed_in(client)
    form = form_of(export_page(client, lang="ja"))
    assert post_export(client, form)[0] == 200
    resp = client.get("/export/state")
    assert resp.status_code == 200 and resp.headers["Cache-Control"] == "no-store"
    state = resp.get_json()
    assert (state["used"], state["remaining"], state["limit"]) == (
        len(JAPANESE), LIMIT - len(JAPANESE), LIMIT)
    assert state["next_release"].endswith("Z") and state["window"]
    old = form_token(form, "ticket")
    assert state["ticket"] != old
    assert state["progress_url"] == f"/export/progress/{progress.progress_id(state['ticket'])}"
    # The page swaps the ticket into its form: the same selection leaves again as a PDF.
    again = form.replace(old, state["ticket"])
    status, body = post_export(client, again, fmt="pdf")
    assert status == 200 and body.startswith(b"%PDF-")
    assert r6_used(gate) == 2 * len(JAPANESE)
    grants = [f for _i, f in gate.client.xrange(keys.audit("acme"))
              if f.get(b"outcome") == b"granted"]
    assert [f[b"kind"] for f in grants] == [b"export.xlsx", b"export.pdf"]


def test_fresh_state_needs_the_terms_r8(client: FlaskClient) -> None:
    assert sign_in(client, "ana", PASSWORD) == 302
    resp = client.get("/export/state")
    assert resp.status_code == 403 and "R8" in resp.get_data(as_text=True)


def test_a_refused_export_says_refused_and_its_page_renders_as_before(
        client: FlaskClient, gate: Gate) -> None:
    signed_in(client)
    page = export_page(client)  # all 100 posts: more than the allowance of 60
    form = form_of(page)
    status, body = post_export(client, form)
    assert status == 429
    html = body.decode()
    assert 'id="refusal"' in html and "nothing was counted" in html
    assert polled(client, progress_url(form))[1] == {"state": "refused", "written": 0,
                                                     "total": 0}
    # The offer of the first N carries the new page's ticket and progress, like the form.
    offer = form_of(html, "export-first")
    pid = progress.progress_id(form_token(offer, "ticket"))
    assert progress_url(offer) == f"/export/progress/{pid}"
    assert r6_used(gate) == 0


def test_a_replayed_ticket_leaves_the_first_clicks_progress_alone(
        client: FlaskClient) -> None:
    signed_in(client)
    form = form_of(export_page(client, lang="ja"))
    assert post_export(client, form)[0] == 200
    assert post_export(client, form)[0] == 403  # R5: the ticket is spent
    assert polled(client, progress_url(form))[1]["state"] == "done"


def test_export_reports_rows_as_the_writer_takes_them(gate: Gate) -> None:
    gate.users.accept_terms("ana", actor="ana", channel="web")
    user = gate.users.get("ana")
    heard: list[tuple[int, int]] = []
    selection = hydrated.Selection("kpop", Filters(lang="ja"), gate.deletions.current())
    result = hydrated.export(gate, user, selection, fmt="xlsx", with_users=False,
                             channel="web", progress=lambda n, m: heard.append((n, m)))
    result.file.close()
    n = len(JAPANESE)
    assert heard == [(i, n) for i in range(n + 1)]


def test_progress_writes_are_bounded_by_time_and_rows(gate: Gate,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    clock = [100.0]
    monkeypatch.setattr(progress.time, "monotonic", lambda: clock[0])
    track = progress.ExportProgress(gate, gate.users.get("ana"), "t" * 32)
    writes: list[str] = []
    monkeypatch.setattr(track, "state", lambda state, n=0, m=0: writes.append(f"{n}"))
    total = 50_000
    for n in range(total + 1):
        clock[0] += 0.0001  # 10,000 rows a second: the row bound is the rarer
        track.rows(n, total)
    assert len(writes) == 1 + 10  # the first, then one each 0.5 s (5,000 rows)
    track = progress.ExportProgress(gate, gate.users.get("ana"), "u" * 32)
    writes.clear()
    monkeypatch.setattr(track, "state", lambda state, n=0, m=0: writes.append(f"{n}"))
    for n in range(total + 1):
        clock[0] += 0.01  # 100 rows a second: the 1,000-row bound is the rarer
        track.rows(n, total)
    assert writes == [str(n) for n in range(0, total + 1, progress.EVERY_ROWS)]


def test_progress_keys_move_with_their_pool(gate: Gate) -> None:
    track = progress.ExportProgress(gate, gate.users.get("ana"), "ticket")
    track.state("writing", 5, 10)
    assert gate.client.zscore(keys.pool_keys("acme"), track.key) is not None


def test_dates_are_picked_with_date_inputs_without_past_placeholders(
        client: FlaskClient) -> None:
    signed_in(client)
    page = export_page(client)
    for name in ("since", "until"):
        tag = re.search(rf'<input[^>]*id="{name}"[^>]*>', page)
        assert tag and 'type="date"' in tag.group(0) and "placeholder" not in tag.group(0)
    assert not re.search(r'placeholder="\d{4}-\d\d-\d\d"', page)


def test_times_are_written_as_utc_for_the_script_to_show_locally(
        client: FlaskClient, gate: Gate) -> None:
    signed_in(client)
    assert post_export(client, form_of(export_page(client, lang="ja")))[0] == 200
    page = export_page(client)  # over the allowance: the preview says when more frees up
    times = re.findall(r'<time datetime="([^"]+)" data-local>([^<]+)</time>', page)
    assert len(times) == 2  # the allowance card's and the preview's
    for at, shown in times:
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ", at)
        assert re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d UTC", shown)
        # To the minute, rounded up: "from" is never early.
        assert shown.replace(" UTC", "") >= at[:16].replace("T", " ")
    assert '<script src="/static/times.js" defer></script>' in page
    assert '<script src="/static/export.js" defer></script>' in page
    assert "<script>" not in page  # nothing inline: the CSP allows this site's files only


def test_the_local_time_markup_rounds_up_to_the_minute(app: Any) -> None:
    from gatekeeper.channels.web.pages import local_time

    with app.app_context():
        assert str(local_time("2026-11-29T08:00:01Z")) == (
            '<time datetime="2026-11-29T08:00:01Z" data-local>2026-11-29 08:01 UTC</time>')
        assert str(local_time("2026-11-29T23:59:00Z")).endswith(">2026-11-29 23:59 UTC</time>")
        assert str(local_time(None)) == ""
        assert str(local_time(1_795_939_201_000)) == str(local_time("2026-11-29T08:00:01Z"))
