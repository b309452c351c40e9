"""The demo dataset: realistic twarc2 pages, deterministic, multilingual, readable back."""

from __future__ import annotations

import gzip
import json
import os
import pty
import re
import sys
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from gatekeeper.domain.datasets import Datasets
from gatekeeper.domain.demo import DEMO_DATASET, TWITTER_EPOCH_MS, write_demo_dataset
from gatekeeper.domain.formats import iter_posts, iter_users
from gatekeeper.ledger.ledger import Ledger

ANCHOR = datetime(2026, 11, 20, 12, 0, tzinfo=UTC)
SCRIPTS = {
    "Latin": r"[A-Za-zÀ-ɏ]", "Cyrillic": r"[\u0400-\u04FF]", "Greek": r"[\u0370-\u03FF]",
    "Arabic": r"[\u0600-\u06FF]", "Devanagari": r"[\u0900-\u097F]",
    "Hangul": r"[\uAC00-\uD7AF]", "Kana": r"[\u3040-\u30FF]", "Han": r"[\u4E00-\u9FFF]",
}
LANG_SCRIPT = {"ru": "Cyrillic", "el": "Greek", "ar": "Arabic", "hi": "Devanagari",
               "ko": "Hangul", "zh": "Han", "en": "Latin", "es": "Latin", "tr": "Latin"}


def ms_of(created_at: str) -> int:
    return int(datetime.fromisoformat(created_at).timestamp() * 1000)


@pytest.fixture(scope="module")
def demo_posts(tmp_path_factory: pytest.TempPathFactory) -> list[dict[str, Any]]:
    """The full-size demo (100,000 posts) as iter_posts reads it back."""
    path = tmp_path_factory.mktemp("demo") / "demo.jsonl.gz"
    write_demo_dataset(path, anchor=ANCHOR)
    return list(iter_posts(path))


def test_the_demo_dataset_is_called_demo() -> None:
    assert DEMO_DATASET == "demo"


def test_same_seed_and_anchor_give_the_same_bytes(tmp_path: Path) -> None:
    a, b, c = tmp_path / "a.jsonl.gz", tmp_path / "b.jsonl.gz", tmp_path / "c.jsonl.gz"
    write_demo_dataset(a, posts=2_000, seed=7, anchor=ANCHOR)
    write_demo_dataset(b, posts=2_000, seed=7, anchor=ANCHOR)
    write_demo_dataset(c, posts=2_000, seed=8, anchor=ANCHOR)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_pages_look_like_twarc2_search_output(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    write_demo_dataset(path, posts=1_050, anchor=ANCHOR)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    pages = [json.loads(line) for line in gzip.decompress(path.read_bytes()).splitlines()]
    assert [len(p["data"]) for p in pages] == [100] * 10 + [50]
    for i, page in enumerate(pages):
        data, meta = page["data"], page["meta"]
        assert set(page) == {"data", "includes", "meta", "__twarc"}
        assert meta["result_count"] == len(data)
        assert (meta["newest_id"], meta["oldest_id"]) == (data[0]["id"], data[-1]["id"])
        assert ("next_token" in meta) == (i < len(pages) - 1)
        assert {"url", "version", "retrieved_at"} <= set(page["__twarc"])
        users = {u["id"] for u in page["includes"]["users"]}
        assert {p["author_id"] for p in data} <= users
        for ref in page["includes"].get("tweets", []):
            assert ref["author_id"] in users and ref["id"] not in {p["id"] for p in data}
        for user in page["includes"]["users"]:
            assert {"id", "username", "name", "created_at", "description", "location",
                    "verified", "public_metrics"} <= set(user)
            assert re.fullmatch(r"[A-Za-z0-9_]{1,15}", user["username"])
    ids = [int(p["id"]) for page in pages for p in page["data"]]
    assert ids == sorted(ids, reverse=True)  # newest first, as a search returns them


def test_entity_offsets_point_at_their_text(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    write_demo_dataset(path, posts=2_000, anchor=ANCHOR)
    checked = Counter()
    for post in iter_posts(path):
        for kind, items in post.get("entities", {}).items():
            for e in items:
                token = post["text"][e["start"]:e["end"]]
                expected = {"hashtags": "#" + e.get("tag", ""),
                            "mentions": "@" + e.get("username", ""), "urls": e.get("url")}[kind]
                assert token == expected
                checked[kind] += 1
    assert min(checked[k] for k in ("hashtags", "mentions", "urls")) > 50


def test_default_anchor_is_now(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl.gz"
    write_demo_dataset(path, posts=300)
    now = datetime.now(UTC)
    for post in iter_posts(path):
        created = datetime.fromisoformat(post["created_at"])
        assert now - timedelta(days=60, minutes=5) <= created <= now


@pytest.mark.slow
def test_a_hundred_thousand_posts_read_back_with_their_authors(
        demo_posts: list[dict[str, Any]]) -> None:
    assert len(demo_posts) == 100_000
    assert len({p["id"] for p in demo_posts}) == 100_000
    for p in demo_posts:
        assert p["author"] is not None and p["author"]["id"] == p["author_id"]
    authors = {p["author_id"] for p in demo_posts}
    assert 4_000 <= len(authors) <= 5_000


@pytest.mark.slow
def test_ids_are_snowflakes_of_their_created_at_within_sixty_days(
        demo_posts: list[dict[str, Any]]) -> None:
    low = ms_of(ANCHOR.isoformat()) - 60 * 86_400_000
    for p in demo_posts:
        assert re.fullmatch(r"[1-9][0-9]{18}", p["id"])
        ms = ms_of(p["created_at"])
        assert (int(p["id"]) >> 22) + TWITTER_EPOCH_MS == ms
        assert low <= ms < ms_of(ANCHOR.isoformat())
        assert p["conversation_id"] and p["public_metrics"]["like_count"] >= 0


@pytest.mark.slow
def test_text_spans_many_languages_and_scripts_matching_lang(
        demo_posts: list[dict[str, Any]]) -> None:
    langs = Counter(p["lang"] for p in demo_posts)
    assert {"en", "es", "fr", "de", "pt", "ja", "ko", "zh", "ar", "ru", "el", "hi", "in",
            "tr", "it", "und"} <= set(langs)
    text = "".join(p["text"] for p in demo_posts[:20_000])
    for script, pattern in SCRIPTS.items():
        assert re.search(pattern, text), script
    for p in demo_posts[:20_000]:
        if p["lang"] in LANG_SCRIPT:
            assert re.search(SCRIPTS[LANG_SCRIPT[p["lang"]]], p["text"]), p
        if p["lang"] == "ja":
            assert re.search(SCRIPTS["Kana"] + "|" + SCRIPTS["Han"], p["text"]), p


@pytest.mark.slow
def test_awkward_text_for_exports_is_present(demo_posts: list[dict[str, Any]]) -> None:
    texts = [p["text"] for p in demo_posts]
    assert sum(t[:1] in "=+-@" for t in texts) > 100  # formula-like cells
    assert sum("\n" in t for t in texts) > 100
    assert sum(bool(re.search(r"[\x00-\x08\x0b\x0c\x0e-\x1f]", t)) for t in texts) > 10
    assert sum(bool(re.search(r"[\U0001F300-\U0001FAFF]", t)) for t in texts) > 10_000
    assert sum("https://t.co/" in t for t in texts) > 10_000
    kinds = Counter(r["type"] for p in demo_posts for r in p.get("referenced_tweets", []))
    assert min(kinds["retweeted"], kinds["replied_to"], kinds["quoted"]) > 1_000


def test_the_demo_registers_as_a_dataset(redis_client: Any, tmp_path: Path) -> None:
    path = tmp_path / "demo.jsonl.gz"
    write_demo_dataset(path, posts=1_000, anchor=ANCHOR)
    datasets = Datasets(redis_client, Ledger(redis_client), tmp_path / "datasets")
    info = datasets.add(DEMO_DATASET, path, actor="demo", channel="cli")
    assert info.posts == 1_000 and info.file == "demo.jsonl.gz"
    assert len(info.languages) >= 10
    assert info.users == len(list(iter_users(path)))


def test_serve_demo_loads_only_into_an_empty_store(tmp_path: Path) -> None:
    from gatekeeper import config as config_mod
    from gatekeeper.domain import demo
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger.store import EmbeddedServer

    (tmp_path / "config.toml").write_text('[redis]\ndata_dir = "var"\n')
    gate = Gate(config_mod.load(tmp_path / "config.toml"))
    try:
        loaded = demo.load(gate, posts=2_000)
        assert loaded is not None
        assert loaded.posts == 2_000 and gate.datasets.info("demo").posts == 2_000
        assert {gate.users.get(u).role for u in loaded.passwords} == {
            "analyst", "data", "compliance", "admin"}
        kinds = {e.name: (e.kind, e.exemption() is not None, e.terms is not None)
                 for e in gate.entities.all()}
        assert kinds == {"harbour-data": ("commercial", False, False),
                         "acme-analytics": ("commercial", False, True),
                         "northfield-university": ("academic", True, True),
                         "globex-media": ("commercial", False, True),
                         "acme-analytics-labs": ("commercial", False, True)}
        role, password = loaded.passwords["dan"]
        assert gate.users.check_password("dan", password).role == role == "data"
        assert gate.users.user_for_token(loaded.token).name == "dan"
        assert password in loaded.describe() and loaded.token in loaded.describe()
        assert demo.load(gate, posts=10) is None  # never into a store that holds data
        # The dataset, its index and ID sidecar, and the manifests of what the demo's shares
        # delivered.
        assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == [
            "demo.ids", "demo.index.parquet", "demo.jsonl.gz", "manifests"]
    finally:
        EmbeddedServer(tmp_path / "var").stop()


# --- the story: who runs gatekeeper, and five weeks of its use (issue 13 item 9) ----------------

DAY = 86_400_000


@pytest.fixture
def story(redis_client: Any, tmp_path: Path, quick_password_hashes: None) -> tuple[Any, Any]:
    """The demo (2,000 posts) loaded into an empty store on each backend; an analyst's daily
    limit (R6) small enough that the small demo's exports reach it."""
    from gatekeeper import config as config_mod
    from gatekeeper.domain import demo
    from gatekeeper.domain.gate import Gate

    (tmp_path / "config.toml").write_text(
        '[limits]\nhydrated_per_recipient = 1000\n[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    loaded = demo.load(gate, posts=2_000)
    assert loaded is not None
    return gate, loaded


def test_the_officer_and_admin_belong_to_the_organisation_running_gatekeeper(
        story: tuple[Any, Any]) -> None:
    from gatekeeper.domain import demostory

    gate, loaded = story
    users = {name: gate.users.get(name) for name in loaded.passwords}
    assert {n: (u.role, u.entity) for n, u in users.items()} == {
        "ana": ("analyst", "acme-analytics"),  # a customer's analyst exports for herself
        "dan": ("data", demostory.OPERATOR), "carla": ("compliance", demostory.OPERATOR),
        "ada": ("admin", demostory.OPERATOR)}
    operator = gate.entities.get(demostory.OPERATOR)
    # It receives nothing: no attestation (R8), so no share could go to it, and none did.
    assert operator.terms is None and operator.parent is None
    from gatekeeper.domain import dashboard

    assert dashboard.overview(gate).row(demostory.OPERATOR).own.used == 0
    customers = {e.name for e in gate.entities.all() if e.terms is not None}
    assert demostory.OPERATOR not in customers
    assert all(u.entity not in customers for u in users.values()
               if u.role in ("compliance", "admin"))
    text = loaded.describe()
    assert f"{demostory.OPERATOR} runs gatekeeper" in text
    assert "carla  compliance  harbour-data" in text and "ada    admin       harbour-data" in text


def test_the_history_fills_the_dashboards_charts_on_at_least_14_of_the_last_30_days(
        story: tuple[Any, Any]) -> None:
    from gatekeeper.domain import dashboard

    gate, loaded = story
    ov = dashboard.overview(gate)
    active = sorted(d for d, n in ov.daily_total().items() if n > 0 and d in ov.days)
    assert len(active) >= 14, active
    assert len(ov.days) == 30
    # Five weeks, the store's clock afterwards: nothing written is in the future.
    now = gate.clock.now_ms()
    assert now - 37 * DAY < loaded.since_ms < now - 33 * DAY
    rows = {r.name: r for r in ov.entities}
    assert rows["acme-analytics"].own.used > 0 and rows["northfield-university"].own.used > 0
    assert rows["northfield-university"].own.limit is None  # R3: exempt, counted


def test_the_history_is_the_librarys_own_records_in_order_and_its_chains_verify(
        story: tuple[Any, Any]) -> None:
    from gatekeeper.domain.audit import AuditLog
    from gatekeeper.ledger import chain

    gate, loaded = story
    records = list(AuditLog(gate.client).records())
    times = [int(r["id"].split("-")[0]) for r in records]
    assert times == sorted(times) and times[0] == loaded.since_ms + 9 * 3_600_000
    assert times[-1] < gate.clock.now_ms()
    seen = {(r["kind"], r["outcome"], r.get("rule") or "") for r in records}
    for kind in ("share.posts", "share.users", "export.xlsx", "export.pdf"):
        assert {(kind, "granted", ""), (kind, "delivered", "")} <= seen, kind
    assert {("deletions.posts", "ingested", "R9"), ("dataset.add", "changed", "R11"),
            ("entity.terms", "changed", "R8"), ("token.create", "changed", "R12")} <= seen
    assert ("share.posts", "denied", "R8") in seen  # globex-media before it attested
    assert ("export.xlsx", "refused", "R6") in seen  # ana past her daily limit
    assert ("share.posts", "replayed", "") in seen  # a retry with its key, counted once
    assert any(r.get("removed_r9") for r in records)  # the deletion list at work
    days = {t // DAY for t in times}
    assert len(days) >= 20
    assert all(r.problem is None for r in chain.verify(gate.client))


def test_every_delivery_of_the_demo_exports_included_has_its_manifest(
        story: tuple[Any, Any]) -> None:
    """Issue 15: the story's exports went round hydrated.export and wrote no manifest."""
    from gatekeeper.domain.audit import AuditLog

    gate, _loaded = story
    delivered = [r for r in AuditLog(gate.client).records() if r["outcome"] == "delivered"]
    kinds = {r["kind"] for r in delivered}
    assert {"export.xlsx", "export.pdf", "share.posts"} <= kinds
    for r in delivered:
        assert r.get("manifest"), (r["kind"], r["share_id"])
        got = gate.manifests.read(r["manifest"])
        assert got.meta["delivery"] == r["share_id"]
        if r["kind"].startswith("export."):  # every post granted, with its author
            assert got.posts.size == int(r["granted"]) and got.users.size > 0
    assert sorted(gate.manifests.listed()) == sorted(r["manifest"] for r in delivered)


def test_the_demos_one_r10_flag_is_its_intended_example_and_is_explained(
        story: tuple[Any, Any]) -> None:
    """The first demo was flagged by accident: one "Demo Signatory" attested for the company
    and the university. Now the one flag is the story's: acme-analytics-labs."""
    from gatekeeper.domain import dashboard, demostory

    gate, loaded = story
    flags = dashboard.overview(gate).flags
    assert [f.entities for f in flags] == [demostory.SPLIT_EXAMPLE]
    attested = {e.name: e.terms.by for e in gate.entities.all() if e.terms is not None}
    assert attested["acme-analytics"] == attested["acme-analytics-labs"]
    assert len(set(attested.values())) == len(attested) - 1  # everyone else their own
    assert "R10 on the dashboard, on purpose: acme-analytics-labs" in loaded.describe()
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert "acme-analytics-labs" in readme and "on purpose" in readme


def test_without_history_everything_happens_now_and_nothing_is_counted(
        redis_client: Any, tmp_path: Path, quick_password_hashes: None) -> None:
    from gatekeeper import config as config_mod
    from gatekeeper.domain import dashboard, demo
    from gatekeeper.domain.gate import Gate

    (tmp_path / "config.toml").write_text('[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    before = gate.clock.now_ms()
    loaded = demo.load(gate, posts=300, history=False)
    assert loaded is not None and loaded.since_ms is None
    ov = dashboard.overview(gate)
    assert not ov.daily_total() and not ov.flags
    assert gate.datasets.info("demo").added_at >= datetime.fromtimestamp(
        before // 1000, UTC).isoformat().replace("+00:00", "")[:19]


# --- what serve --demo says while it builds --------------------------------------------------


def _demo_gate(redis_client: Any, tmp_path: Path) -> Any:
    from gatekeeper import config as config_mod
    from gatekeeper.domain.gate import Gate

    (tmp_path / "config.toml").write_text('[datasets]\ndir = "datasets"\n')
    return Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)


def test_serve_demo_piped_says_a_few_plain_lines_stage_by_stage(
        redis_client: Any, tmp_path: Path, quick_password_hashes: None,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from gatekeeper.channels.cli import serve

    serve.load_demo(_demo_gate(redis_client, tmp_path), posts=2_000)
    out, err = capsys.readouterr()
    assert out.startswith("demo loaded: dataset 'demo' (2,000 posts)")
    assert err.splitlines() == [
        "demo: generating posts 0/2,000", "demo: generating posts 2,000/2,000",
        "demo: registering dataset 100%",
        *(f"demo: history: week {w} of 5" for w in range(1, 6)),
        "demo: history: 5 weeks written"]


def test_piped_progress_is_a_line_per_stage_and_quarter_never_a_redraw() -> None:
    """The full-size build as it reports (ten chunks of posts, the file read 1 MiB at a time,
    five weeks): a log gets about a dozen plain lines, each stage's quarters in order."""
    import io

    from gatekeeper.channels.cli.serve import DemoProgress

    log = io.StringIO()
    shown = DemoProgress(log, terminal=False)
    for n in range(0, 100_001, 10_000):
        shown("posts", n, 100_000)
    for n in range(1 << 20, 30 << 20, 1 << 20):
        shown("bytes", n, 29 << 20)
    for week in range(6):
        shown("weeks", week, 5)
    shown.close()
    assert log.getvalue().splitlines() == [
        "demo: generating posts 0/100,000", "demo: generating posts 30,000/100,000",
        "demo: generating posts 50,000/100,000", "demo: generating posts 80,000/100,000",
        "demo: generating posts 100,000/100,000",
        "demo: registering dataset 3%", "demo: registering dataset 27%",
        "demo: registering dataset 51%", "demo: registering dataset 75%",
        "demo: registering dataset 100%",
        *(f"demo: history: week {w} of 5" for w in range(1, 6)),
        "demo: history: 5 weeks written"]


def test_serve_demo_on_a_terminal_redraws_one_line_in_place(
        redis_client: Any, tmp_path: Path, quick_password_hashes: None,
        monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    """A real terminal (a pty) on stderr: the stages under way share a line redrawn with
    carriage returns; each stage's last words stay."""
    from gatekeeper.channels.cli import serve

    master, slave = pty.openpty()
    seen = bytearray()

    def drain() -> None:
        while True:
            try:
                chunk = os.read(master, 65536)
            except OSError:  # the slave side closed
                return
            if not chunk:
                return
            seen.extend(chunk)

    reader = threading.Thread(target=drain)
    reader.start()
    with open(slave, "w", encoding="utf-8", closefd=True) as terminal, \
            monkeypatch.context() as patch:
        patch.setattr(sys, "stderr", terminal)
        serve.load_demo(_demo_gate(redis_client, tmp_path), posts=2_000)
    reader.join(timeout=30)
    os.close(master)
    shown = seen.decode()
    assert "\r\x1b[Kdemo: generating posts" in shown
    finals = [line.rsplit("\r\x1b[K", 1)[-1] for line in shown.replace("\r\n", "\n").split("\n")
              if line]
    assert finals[:1] == ["demo: generating posts 2,000/2,000"]
    assert {"demo: history: 5 weeks written", "demo: registering dataset 100%"} <= set(finals)
    assert capsys.readouterr().out.startswith("demo loaded: dataset 'demo' (2,000 posts)")
