"""The demo dataset: realistic twarc2 pages, deterministic, multilingual, readable back."""

from __future__ import annotations

import gzip
import json
import re
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
        assert kinds == {"acme-analytics": ("commercial", False, True),
                         "northfield-university": ("academic", True, True)}
        role, password = loaded.passwords["dan"]
        assert gate.users.check_password("dan", password).role == role == "data"
        assert gate.users.user_for_token(loaded.token).name == "dan"
        assert password in loaded.describe() and loaded.token in loaded.describe()
        assert demo.load(gate, posts=10) is None  # never into a store that holds data
        assert sorted(p.name for p in (tmp_path / "datasets").iterdir()) == [
            "demo.index.parquet", "demo.jsonl.gz"]
    finally:
        EmbeddedServer(tmp_path / "var").stop()
