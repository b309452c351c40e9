"""Bounded heavy work (issue 14): exports, previews and large uploads take a slot; light pages
and /healthz answer while every slot is busy.

End to end on a real `gatekeeper serve` (loopback): the failpoint ``heavy.admitted:pause``
holds a heavy request in its slot until the test lets it go, so "while it runs" is an event
the test waits for, never a duration.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from faultkit import Answer, Client, alert
from flask import Flask, Response
from live import PASSWORD, build_gate, sign_in, start_server

from gatekeeper import config as config_mod
from gatekeeper import faults
from gatekeeper.channels.web import heavy
from gatekeeper.channels.web.app import create_app
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules.errors import Busy, ConfigError

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

POINT = "heavy.admitted"


def until(done: Callable[[], bool], what: str) -> None:
    """Wait for an event the server makes observable (a held file, a gauge); a generous
    deadline only turns a hang into a failure that says what never happened."""
    deadline = time.monotonic() + 60
    while not done():
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.01)


@dataclass
class Site:
    """A real server whose heavy requests pause at POINT while `go` is absent."""

    gate: Gate
    port: int
    holds: Path
    token: str
    calls: list[threading.Thread] = field(default_factory=list)

    @property
    def go(self) -> Path:
        return self.holds / f"{POINT}.go"

    def hold(self) -> None:
        self.go.unlink(missing_ok=True)

    def release(self) -> None:
        self.go.touch()

    def held(self) -> int:
        return len(list(self.holds.glob(f"{POINT}.*.held")))

    def gauge(self, name: str) -> float:
        text = Client(self.port).request("GET", "/metrics").text
        for line in text.splitlines():
            if line.startswith(f"gatekeeper_heavy_{name} "):
                return float(line.split()[1])
        raise AssertionError(f"no gatekeeper_heavy_{name} in /metrics")

    def in_background(self, call: Callable[[], Answer]) -> list[Answer]:
        """Run `call` in a thread; its answer lands in the list returned."""
        out: list[Answer] = []
        t = threading.Thread(target=lambda: out.append(call()), daemon=True)
        t.start()
        self.calls.append(t)
        return out

    def audit(self, prefix: str) -> list[dict[str, str]]:
        return [{k.decode(): v.decode() for k, v in f.items()}
                for _, f in self.gate.client.xrange(keys.audit("acme"))
                if f.get(b"kind", b"").decode().startswith(prefix)]

    def share(self) -> Answer:
        """A data user's dataset share over the API: heavy (it scans the dataset)."""
        return Client(self.port).request(
            "POST", "/api/v1/shares",
            json.dumps({"entity": "acme", "dataset": "kpop", "purpose": "t"}).encode(),
            {"Authorization": f"Bearer {self.token}", "Content-Type": "application/json"})


@pytest.fixture
def make_site(tmp_path: Path) -> Iterator[Callable[[str], Site]]:
    procs = []

    def make(server: str, failpoint: str = f"{POINT}:pause") -> Site:
        gate = build_gate(tmp_path, None, config=f'[redis]\ndata_dir = "var"\n[server]\n{server}',
                          terms="Jane Doe", kpop=True, users=(("ana", "analyst"),
                                                              ("dan", "data")))
        gate.users.accept_terms("ana", actor="t", channel="cli")
        gate.users.accept_terms("dan", actor="t", channel="cli")
        token = gate.users.create_token("dan", actor="t", channel="cli")
        holds = tmp_path / "holds"
        holds.mkdir()
        (holds / f"{POINT}.go").touch()  # nothing held until a test says so
        proc = start_server(tmp_path, {faults.ENV: failpoint, faults.ENV_DIR: str(holds)})
        procs.append(proc)
        return Site(gate, proc.port, holds, token)  # type: ignore[attr-defined]

    yield make
    for proc in procs:
        proc.kill()
        proc.wait(10)
    EmbeddedServer(tmp_path / "var").stop()


def signed_in(site: Site) -> Client:
    browser = Client(site.port)
    browser.sign_in("ana")
    return browser


def full(site: Site, browser: Client) -> tuple[list[Answer], list[Answer]]:
    """One export running (held in its slot) and one waiting in line: K=1, Q=1 both taken.
    The forms (previews, heavy too) are fetched while nothing is held."""
    first, second = (browser.export_fields("kpop", "xlsx", 5) for _ in range(2))
    site.hold()
    running = site.in_background(lambda: browser.form("/export", first))
    until(lambda: site.held() == 1, "the first export holds the slot")
    waiting = site.in_background(lambda: browser.form("/export", second))
    until(lambda: site.gauge("waiting") == 1, "the second export waits in line")
    return running, waiting


SLOTS_1_LINE_1 = "threads = 4\nheavy_slots = 1\nheavy_queue = 1\n"


def test_a_heavy_request_beyond_the_slot_and_the_line_is_refused_503_with_retry_after_and_counts_nothing(  # noqa: E501
        make_site: Callable[..., Site]) -> None:
    # Old code: no slot, no line — every export and dataset share ran at once, each on a
    # waitress thread of its own, however many came (eight previews took all eight).
    site = make_site(SLOTS_1_LINE_1)
    browser = signed_in(site)
    third_form = browser.export_fields("kpop", "xlsx", 5)
    running, waiting = full(site, browser)

    third = browser.form("/export", third_form)
    assert third.status == 503, said(third)
    assert int(third.headers["retry-after"]) >= 1
    message = alert(third.text)
    assert "busy" in message and "1 running, 1 waiting" in message, message
    assert "nothing was counted" in message and "try again in" in message
    assert 'id="export-form"' not in third.text  # the form again, without a (heavy) preview
    api = site.share()
    assert api.status == 503 and int(api.headers["retry-after"]) >= 1
    body = json.loads(api.body)
    assert body["error"] == "busy" and "nothing was counted" in body["message"]
    assert site.audit("export.") == [] and site.audit("share.") == []  # nothing even started
    assert site.gauge("busy_total") == 2

    site.release()
    for t in site.calls:
        t.join(60)
    assert [a.status for a in running + waiting] == [200, 200]
    assert all(a.body.startswith(b"PK") for a in running + waiting)
    # The two that ran, each once; the refused export and share are in no record at all.
    assert sorted(r["outcome"] for r in site.audit("export.")) == \
        ["delivered", "delivered", "granted", "granted"]
    assert site.audit("share.") == []


def test_healthz_and_sign_in_answer_while_every_heavy_slot_and_place_in_line_is_taken(
        make_site: Callable[..., Site]) -> None:
    # Old code: eight previews at once took every waitress thread and /healthz waited 20 s
    # behind them; nothing kept a thread free for light pages.
    site = make_site(SLOTS_1_LINE_1)
    browser = signed_in(site)
    running, waiting = full(site, browser)

    health = Client(site.port).request("GET", "/healthz")
    login = Client(site.port).request("GET", "/login")
    home = browser.request("GET", "/export")  # no dataset chosen: no preview, light

    assert health.status == 200 and json.loads(health.body) == {"status": "ok"}
    assert login.status == 200 and 'name="password"' in login.text
    assert home.status == 200
    # ... answered while the heavy ones were still there: one held, one in line.
    assert site.held() == 1 and site.gauge("waiting") == 1
    assert running == [] and waiting == []
    site.release()
    for t in site.calls:
        t.join(60)
    assert [a.status for a in running + waiting] == [200, 200]


def test_a_heavy_request_that_fails_gives_its_slot_back(
        make_site: Callable[..., Site]) -> None:
    # One slot and no line: a slot kept by the failed export would refuse everything after.
    site = make_site("threads = 2\nheavy_slots = 1\nheavy_queue = 0\n",
                     failpoint="export.reserved:enospc")
    browser = signed_in(site)
    for _ in range(2):
        failed = browser.export("kpop", "xlsx", 5)  # its preview first, then the export
        assert failed.status == 507, said(failed)
    assert site.gauge("running") == 0
    assert browser.request("GET", "/export?dataset=kpop").status == 200  # a preview runs


def test_a_client_that_leaves_gives_its_slot_back_and_is_counted_nothing(
        make_site: Callable[..., Site]) -> None:
    site = make_site(SLOTS_1_LINE_1)
    browser = signed_in(site)
    first, later = (browser.export_fields("kpop", "xlsx", 5) for _ in range(2))
    site.hold()
    conn = browser.send("POST", "/export", _urlencoded(first),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    until(lambda: site.held() == 1, "the export holds the slot")
    conn.close()  # the person closed the tab
    site.release()
    until(lambda: site.gauge("running") == 0, "the slot is given back")
    assert site.audit("export.") == []  # nothing was written, counted or recorded for nobody
    assert browser.form("/export", later).status == 200


def test_a_request_whose_client_leaves_while_waiting_gives_up_its_place_in_line(
        make_site: Callable[..., Site]) -> None:
    site = make_site(SLOTS_1_LINE_1)
    browser = signed_in(site)
    first, second, third = (browser.export_fields("kpop", "xlsx", 5) for _ in range(3))
    site.hold()
    running = site.in_background(lambda: browser.form("/export", first))
    until(lambda: site.held() == 1, "the first export holds the slot")
    conn = browser.send("POST", "/export", _urlencoded(second),
                        {"Content-Type": "application/x-www-form-urlencoded"})
    until(lambda: site.gauge("waiting") == 1, "the second export waits in line")
    conn.close()
    until(lambda: site.gauge("waiting") == 0, "the one that left leaves the line")
    waiting = site.in_background(lambda: browser.form("/export", third))
    until(lambda: site.gauge("waiting") == 1, "the third export takes the place in line")
    site.release()
    for t in site.calls:
        t.join(60)
    assert [a.status for a in running + waiting] == [200, 200]
    assert sorted(r["outcome"] for r in site.audit("export.")) == \
        ["delivered", "delivered", "granted", "granted"]


def _urlencoded(fields: dict[str, str]) -> bytes:
    import urllib.parse

    return urllib.parse.urlencode(fields).encode()


def said(got: Answer) -> str:
    return f"{got.status}: {alert(got.text)}"


# --- which requests are heavy (the app in-process, fakeredis and a real server) ---------------


def test_only_heavy_requests_wait_for_a_slot_light_ones_and_small_uploads_never_do(
        tmp_path: Path, redis_client: Any) -> None:
    gate = build_gate(tmp_path, redis_client, kpop=True, terms="Jane Doe",
                      config="[server]\nthreads = 2\nheavy_slots = 1\nheavy_queue = 0",
                      users=(("ana", "analyst"), ("dan", "data")))
    gate.users.accept_terms("ana", actor="t", channel="cli")
    auth = {"Authorization": "Bearer " + gate.users.create_token("dan", actor="t",
                                                                 channel="cli")}
    app = create_app(gate, {"TESTING": True, "SECRET_KEY": "t", "WTF_CSRF_ENABLED": False})
    taken = app.extensions[heavy.KEY].acquire("export")  # the one slot, busy elsewhere
    api, web = app.test_client(), app.test_client()
    assert sign_in(web, "ana", PASSWORD) == 302

    small = api.post("/api/v1/shares?entity=acme", data="1\n2\n", headers=auth,
                     content_type="text/plain")
    assert small.status_code == 200 and small.get_data() == b"1\n2\n"
    small.close()  # its spool file
    assert web.get("/export").status_code == 200  # the form, no dataset: no preview
    large = api.post("/api/v1/shares?entity=acme", headers=auth, content_type="text/plain",
                     data="".join(f"{i}\n" for i in range(10**17, 10**17 + 60_000)))
    by_dataset = api.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop"},
                          headers=auth)
    stranger = api.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop"})
    preview = web.get("/export?dataset=kpop&lang=en")
    for busy in (large, by_dataset):
        assert busy.status_code == 503 and busy.get_json()["error"] == "busy"
        assert int(busy.headers["Retry-After"]) >= 1
    assert stranger.status_code == 401  # no token: no place in line, not even a 503
    assert preview.status_code == 503 and int(preview.headers["Retry-After"]) >= 1
    page = preview.get_data(as_text=True)
    assert "busy" in alert(page) and 'value="en"' in page  # the form as sent, no preview
    assert 'id="export-form"' not in page
    taken.release()
    assert web.get("/export?dataset=kpop").status_code == 200
    assert [r for r in gate.client.xrange(keys.audit("acme"))
            if r[1][b"kind"] == b"share.posts" and r[1][b"outcome"] == b"granted"] != []


# --- the slots themselves (no server) --------------------------------------------------------


def _app(work: heavy.HeavyWork) -> Flask:
    app = Flask(__name__)
    app.extensions[heavy.KEY] = work

    @app.get("/stream")
    @heavy.gated("export")
    def stream() -> Response:
        return Response(iter([b"a", b"b"]))

    @app.errorhandler(Busy)
    def busy(exc: Busy) -> tuple[str, int]:
        return exc.message, exc.status

    return app


def test_a_streamed_answer_holds_its_slot_until_it_is_read_or_closed() -> None:
    work = heavy.HeavyWork(1, 0, 1)
    client = _app(work).test_client()
    unread = client.get("/stream")
    assert work.running == 1
    assert client.get("/stream").status_code == 503  # the line is 0 long: refused at once
    unread.close()  # a client that leaves mid-download
    assert work.running == 0
    read = client.get("/stream")
    assert read.get_data() == b"ab" and work.running == 0


def test_a_wait_in_line_is_bounded_in_time() -> None:
    work = heavy.HeavyWork(1, 1, 0.05)
    taken = work.acquire("export")
    with pytest.raises(Busy, match=r"no slot freed up within 0\.05 s"):
        work.acquire("preview")
    assert work.waiting == 0
    taken.release()
    taken.release()  # once only
    assert work.running == 0
    work.acquire("preview").release()


def _server(tmp_path: Path, text: str) -> config_mod.ServerConfig:
    (tmp_path / "config.toml").write_text(f"[server]\n{text}")
    return config_mod.load(tmp_path / "config.toml").server


@pytest.mark.parametrize(("threads", "limits"), [(8, (1, 3)), (4, (1, 1)), (3, (1, 0)),
                                                 (2, (1, 0)), (16, (2, 6))])
def test_heavy_bounds_are_derived_from_threads_leaving_threads_for_light_pages(
        tmp_path: Path, threads: int, limits: tuple[int, int]) -> None:
    assert _server(tmp_path, f"threads = {threads}").heavy_limits() == limits
    assert sum(limits) < threads


@pytest.mark.parametrize("text", ["threads = 1", "threads = 4\nheavy_slots = 4",
                                  "threads = 4\nheavy_slots = 2\nheavy_queue = 2"])
def test_heavy_bounds_that_leave_no_thread_for_light_pages_stop_start_up(
        tmp_path: Path, text: str) -> None:
    with pytest.raises(ConfigError, match=r"server.heavy_slots \(\d\) \+ server.heavy_queue "
                                          r"\(\d\) must be less than server.threads"):
        _server(tmp_path, text)


def test_an_explicit_line_of_zero_refuses_at_once(tmp_path: Path) -> None:
    server = _server(tmp_path, "threads = 4\nheavy_slots = 2\nheavy_queue = 0")
    assert server.heavy_limits() == (2, 0)
    with pytest.raises(ConfigError, match="heavy_queue = -2 must be -1"):
        _server(tmp_path, "heavy_queue = -2")
