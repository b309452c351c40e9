"""Issue 14 item 1: a dataset's columnar index answers as its JSONL does, and is never stale.

Every count a preview shows and every row an export writes, read through the index, equals what
the JSONL pass gave (`gatekeeper.domain.dsscan`, today's code kept as the reference): for the
samples and for generated pages with duplicates, references, R9 deletions, every filter shape,
limits, referenced rows and both retweet modes; on fakeredis and a real server.
"""

from __future__ import annotations

import gzip
import json
import os
import random
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis

from gatekeeper.domain import dsindex
from gatekeeper.domain.datasets import Datasets, iter_post_ids
from gatekeeper.domain.dsscan import scan_posts, scan_tally
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.hydrated import Selection
from gatekeeper.domain.light import light_records
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.r9 import Deleted, light_of

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
WORDS = ["Straße", "STRASSE", "café", "Kpop", "ＫＰＯＰ", "hello", "ß", "İstanbul", "news"]


def generated(path: Path, seed: int, *, gz: bool = False, bom: bool = False) -> Path:
    """twarc2-like pages: repeated posts, retweets/quotes/replies resolved from includes (some
    only named), flattened single posts, odd reference IDs, posts without time or author."""
    rnd = random.Random(seed)
    users = [{"id": str(100 + i), "username": f"User_{i}", "name": f"u{i}"} for i in range(12)]
    made: list[dict[str, Any]] = []
    out: list[bytes] = []
    for page in range(14):
        data, tweets = [], []
        for _ in range(rnd.randint(1, 9)):
            if made and rnd.random() < 0.12:
                data.append(dict(rnd.choice(made)))  # stored again
                continue
            pid = str(rnd.randint(10**15, 10**15 + 400))
            author = rnd.choice(users)
            post: dict[str, Any] = {
                "id": pid, "author_id": author["id"],
                "text": " ".join(rnd.choice(WORDS) for _ in range(3)),
                "lang": rnd.choice(["en", "EN", "ko", "de", None]),
                "created_at": f"2024-0{rnd.randint(1, 3)}-1{rnd.randint(0, 9)}T"
                              f"{rnd.randint(10, 23)}:00:00.000Z"}
            if rnd.random() < 0.1:
                del post["created_at"]
            kind = rnd.random()
            if kind < 0.5:
                ref = str(rnd.randint(10**15, 10**15 + 400))
                rtype = rnd.choice(["retweeted", "quoted", "replied_to"])
                post["referenced_tweets"] = [{"type": rtype, "id": ref}]
                if rnd.random() < 0.7:  # the original is in includes
                    by = rnd.choice(users)
                    original: dict[str, Any] = {"id": ref, "author_id": by["id"],
                                                "text": "orig " + rnd.choice(WORDS)}
                    if rnd.random() < 0.2:
                        original["referenced_tweets"] = [
                            {"type": "retweeted", "id": str(rnd.randint(1, 50)),
                             "author_id": rnd.choice(users)["id"]}]
                    tweets.append(original)
                elif rnd.random() < 0.3:
                    post["referenced_tweets"].append({"type": "quoted", "id": "not-an-id"})
            made.append(post)
            data.append(post)
        line: dict[str, Any] = {"data": data, "includes": {"users": users, "tweets": tweets},
                                "__twarc": {"url": f"u{page}"}}
        out.append(json.dumps(line).encode())
        if page % 5 == 2:
            out.append(b"")  # blank lines keep their bytes
            flat = dict(rnd.choice(made))
            flat["author"] = next(u for u in users if u["id"] == flat["author_id"])
            out.append(json.dumps(flat).encode())
    body = (b"\xef\xbb\xbf" if bom else b"") + b"\n".join(out) + b"\n"
    path.write_bytes(gzip.compress(body) if gz else body)
    return path


FILTERS = [Filters(), Filters(lang="en"), Filters(lang="ko"),
           Filters(since="2024-02-01", until="2024-03-15T12:00:00Z"), Filters(since="2024-02-12"),
           Filters(author="user_3"), Filters(author="@USER_5"), Filters(author="103"),
           Filters(contains="strasse"), Filters(contains="ß"), Filters(contains="kpop"),
           Filters(contains="ＫＰＯＰ"), Filters(contains="the"), Filters(contains="istanbul"),
           Filters(lang="en", contains="caf", since="2024-01-15")]


def deletions(path: Path, seed: int) -> list[Deleted]:
    """No list; some posts; some users; posts and users together (incl. retweeted ones)."""
    rnd = random.Random(seed)
    lights = list(light_records(path))
    posts = {int(x[0]) for x in rnd.sample(lights, min(5, len(lights)))}
    posts |= set([int(x[2]) for x in lights if x[2] and x[2].isdigit()][:3])
    users = {int(x[1]) for x in rnd.sample(lights, min(2, len(lights))) if x[1]}
    return [Deleted(0, frozenset(), frozenset()), Deleted(1, frozenset(posts), frozenset()),
            Deleted(2, frozenset(), frozenset(users)),
            Deleted(3, frozenset(posts), frozenset(users | {101}), frozenset(posts))]


@pytest.fixture
def datasets(redis_client: redis.Redis, tmp_path: Path) -> Datasets:
    return Datasets(redis_client, Ledger(redis_client), tmp_path / "datasets")


def sources(tmp_path: Path) -> list[Path]:
    return [SAMPLES / "kpop.jsonl", SAMPLES / "geo_tweets.jsonl", SAMPLES / "two_tweets.jsonl",
            generated(tmp_path / "g1.jsonl", 1), generated(tmp_path / "g2.jsonl.gz", 2, gz=True),
            generated(tmp_path / "g3.jsonl", 3, bom=True)]


def test_previews_and_export_rows_from_the_index_equal_the_jsonl_pass(
        datasets: Datasets, tmp_path: Path) -> None:
    gate: Any = SimpleNamespace(datasets=datasets)
    checked = 0
    for n, source in enumerate(sources(tmp_path)):
        name = f"d{n}"
        datasets.add(name, source, actor="t", channel="cli")
        for deleted in deletions(datasets.path(name), n)[n % 2::2]:  # none or users; or both
            for i, filters in enumerate(FILTERS):
                for referenced in (False, True):
                    for limit in ((None, 3, 0)[i % 3],):
                        sel = Selection(name, filters, deleted, limit=limit,
                                        whole_retweets=not referenced, referenced=referenced)
                        want = scan_tally(gate, sel, with_users=True)
                        got = sel.tally(gate, with_users=True)
                        shown = (name, deleted.version, filters, referenced, limit)
                        assert (got.posts, got.duplicates) == (want.posts, want.duplicates), \
                            shown
                        assert list(got.authors.items()) == list(want.authors.items()), shown
                        assert list(sel.posts(gate)) == list(scan_posts(gate, sel)), shown
                        checked += 1
    assert checked == 6 * 2 * len(FILTERS) * 2


def test_ids_light_records_authors_and_r9_impact_come_from_the_index_unchanged(
        datasets: Datasets, tmp_path: Path) -> None:
    for n, source in enumerate(sources(tmp_path)):
        name = f"d{n}"
        datasets.add(name, source, actor="t", channel="cli")
        path = datasets.path(name)
        for filters in FILTERS:
            posts = [p for p in iter_posts(path) if filters.matches(p)]
            assert list(datasets.post_ids(name, filters)) == [p["id"] for p in posts]
            assert list(datasets.light(name, filters)) == [light_of(p) for p in posts]
            assert list(datasets.light(name, filters, retweets=False)) == [
                (p["id"], p["author_id"], None, None) for p in posts]
            assert list(datasets.author_ids(name, filters)) == list(dict.fromkeys(
                p["author_id"] for p in posts if p["author_id"]))
        assert list(datasets.post_ids(name)) == list(iter_post_ids(path))
    for deleted in deletions(datasets.path("d3"), 3)[1:]:
        before = deleted.without("posts", frozenset(list(deleted.posts)[:2]))
        for now, then in ((deleted, None), (deleted, before)):
            want = {}
            for info in datasets.list():
                hit = sum(1 for light in light_records(datasets.path(info.name))
                          if now.hides_light(light) and not (then and then.hides_light(light)))
                if hit:
                    want[info.name] = hit
            assert datasets.affected(now, then) == want


def answers(datasets: Datasets, name: str) -> tuple[Any, ...]:
    gate: Any = SimpleNamespace(datasets=datasets)
    sel = Selection(name, Filters(contains="strasse"),
                    Deleted(1, frozenset(), frozenset({103})), referenced=True)
    tally = sel.tally(gate, with_users=True)
    return tally.posts, tally.duplicates, list(tally.authors), list(datasets.post_ids(name))


def test_a_missing_damaged_old_or_stale_index_is_rebuilt_before_use(
        datasets: Datasets, tmp_path: Path) -> None:
    datasets.add("g", generated(tmp_path / "g.jsonl", 7), actor="t", channel="cli")
    index = dsindex.index_path(datasets.directory, "g")
    info = datasets.info("g")
    assert info.index is not None and info.index["version"] == dsindex.VERSION
    assert info.index["bytes"] == info.bytes
    want = answers(datasets, "g")
    good = index.read_bytes()

    index.unlink()  # missing
    assert answers(datasets, "g") == want and index.read_bytes() == good

    index.write_bytes(good[: len(good) // 2])  # cut short: no footer
    assert answers(datasets, "g") == want and index.read_bytes() == good

    damaged = bytearray(good)  # footer intact, column data spoiled
    for at in range(8, len(good) // 3):
        damaged[at] ^= 0x5A
    index.write_bytes(bytes(damaged))
    assert answers(datasets, "g") == want and index.read_bytes() == good

    # An index of another version is not read.
    meta = json.dumps({"version": dsindex.VERSION - 1, "source": dsindex.identity(
        datasets.path("g"))})
    index.write_bytes(good.replace(b'"version": %d' % dsindex.VERSION,
                                   b'"version": %d' % (dsindex.VERSION - 1)))
    assert not dsindex.describes(index, dsindex.identity(datasets.path("g"))), meta
    assert answers(datasets, "g") == want and index.read_bytes() == good

    # The JSONL changed under the index (a restore, a hand edit): the index follows it.
    path = datasets.path("g")
    text = path.read_bytes().replace(b"Stra\\u00dfe", b"plain  ")
    assert text != path.read_bytes()
    stat = path.stat()
    path.write_bytes(text)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with mtime kept
    changed = answers(datasets, "g")
    assert changed != want and changed[0] < want[0]
    assert dsindex.describes(index, dsindex.identity(path))


def test_a_failing_build_leaves_no_index_file(datasets: Datasets, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    datasets.add("g", generated(tmp_path / "g.jsonl", 8), actor="t", channel="cli")
    index = dsindex.index_path(datasets.directory, "g")
    index.unlink()
    calls = 0
    add = dsindex.Builder.add

    def failing(self: dsindex.Builder, *args: Any) -> None:
        nonlocal calls
        calls += 1
        if calls == 20:
            raise OSError(28, "No space left on device")
        add(self, *args)

    monkeypatch.setattr(dsindex, "ROWS", 8)  # several row groups written before the failure
    monkeypatch.setattr(dsindex.Builder, "add", failing)
    with pytest.raises(OSError):
        list(datasets.post_ids("g"))
    # No index, half or whole; the ID sidecar `add` wrote still describes the JSONL.
    assert sorted(p.name for p in datasets.directory.iterdir()) == ["g.ids", "g.jsonl"]
    monkeypatch.setattr(dsindex.Builder, "add", add)
    assert list(datasets.post_ids("g")) == list(iter_post_ids(datasets.path("g")))


def test_add_builds_the_index_in_its_one_pass_and_skip_bad_lines_indexes_the_copy(
        datasets: Datasets, tmp_path: Path) -> None:
    from gatekeeper.domain import salvage

    source = generated(tmp_path / "g.jsonl", 9)
    bad = tmp_path / "bad.jsonl"
    bad.write_bytes(source.read_bytes() + b'{"broken\n' + source.read_bytes())
    skipped = salvage.Skipped()
    datasets.add("b", bad, actor="t", channel="cli", skipped=skipped)
    assert skipped.count == 1
    assert list(datasets.post_ids("b")) == list(iter_post_ids(datasets.path("b")))
    assert dsindex.describes(dsindex.index_path(datasets.directory, "b"),
                             dsindex.identity(datasets.path("b")))


def test_answers_hold_when_the_index_has_many_row_groups(
        datasets: Datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Author ordinals and name hashes carried from row group to row group, groups skipped by
    their time statistics: still the JSONL pass's answers."""
    monkeypatch.setattr(dsindex, "ROWS", 3)
    gate: Any = SimpleNamespace(datasets=datasets)
    for n, source in enumerate(sources(tmp_path)[2:]):
        name = f"m{n}"
        datasets.add(name, source, actor="t", channel="cli")
        groups = pq_groups(datasets, name)
        assert groups > 3 or n == 0, groups
        for deleted in deletions(datasets.path(name), n)[n % 2::2]:
            for i, filters in enumerate(FILTERS):
                for referenced in (False, True):
                    sel = Selection(name, filters, deleted, limit=(None, 4)[i % 2],
                                    referenced=referenced)
                    want, got = scan_tally(gate, sel, True), sel.tally(gate, True)
                    shown = (name, deleted.version, filters, referenced)
                    assert (got.posts, got.duplicates) == (want.posts, want.duplicates), shown
                    assert list(got.authors.items()) == list(want.authors.items()), shown
                    assert list(sel.posts(gate)) == list(scan_posts(gate, sel)), shown
            assert list(datasets.author_ids(name, filters)) == list(dict.fromkeys(
                p["author_id"] for p in iter_posts(datasets.path(name))
                if filters.matches(p) and p["author_id"]))


def pq_groups(datasets: Datasets, name: str) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(dsindex.index_path(datasets.directory, name)).metadata
               .num_row_groups)


def timed(path: Path, posts: int) -> Path:
    """Pages of posts in time order (as a collection is), no post twice."""
    users = [{"id": str(500 + i), "username": f"Name_{i}"} for i in range(7)]
    lines = []
    for page in range(0, posts, 5):
        data = [{"id": str(10**15 + i), "author_id": users[i % 7]["id"], "lang": "en",
                 "text": f"post {i}", "created_at": f"2024-01-{1 + i // 4:02d}T12:00:00.000Z"}
                for i in range(page, min(page + 5, posts))]
        lines.append(json.dumps({"data": data, "includes": {"users": users}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def test_a_preview_reads_only_the_columns_and_row_groups_it_asks_for(
        datasets: Datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Cost follows what is asked: no post IDs when none repeat and no R9 list, authors by
    ordinal, usernames by hash, and row groups wholly outside since/until not read."""
    import pyarrow.parquet as pq

    monkeypatch.setattr(dsindex, "ROWS", 10)
    datasets.add("t", timed(tmp_path / "t.jsonl", 100), actor="t", channel="cli")
    assert datasets.info("t").repeated_posts == []
    reads: list[tuple[list[str], list[int] | None]] = []
    iter_batches = pq.ParquetFile.iter_batches

    def spy(self: pq.ParquetFile, *args: Any, **kwargs: Any) -> Any:
        reads.append((sorted(kwargs["columns"]), kwargs.get("row_groups")))
        return iter_batches(self, *args, **kwargs)

    monkeypatch.setattr(pq.ParquetFile, "iter_batches", spy)
    gate: Any = SimpleNamespace(datasets=datasets)
    none = Deleted(0, frozenset(), frozenset())
    for filters, columns, groups in [
            (Filters(), ["uord"], list(range(10))),
            (Filters(lang="en"), ["lang", "uord"], list(range(10))),
            (Filters(author="name_3"), ["uname", "uord"], list(range(10))),
            (Filters(since="2024-01-05", until="2024-01-09"),
             ["created", "created_raw", "uord"], [1, 2, 3])]:
        reads.clear()
        sel = Selection("t", filters, none)
        got, want = sel.tally(gate, True), scan_tally(gate, sel, True)
        assert (got.posts, list(got.authors)) == (want.posts, list(want.authors)), filters
        assert reads == [(columns, groups)], filters
    reads.clear()  # an R9 list needs the post IDs
    sel = Selection("t", Filters(), Deleted(1, frozenset({10**15 + 3}), frozenset()))
    assert sel.tally(gate, True).posts == 99
    assert "pid" in reads[0][0]


def test_usernames_sharing_a_hash_are_told_apart_by_the_names_themselves(
        datasets: Datasets, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The index notes when two usernames of the file share the stored hash, and `author` then
    compares the names: the answer stays exact."""
    def weak(name: str) -> tuple[int, int]:
        return len(name), sum(map(ord, name))  # user_3 and user_5 collide

    monkeypatch.setattr(dsindex, "name_hash", weak)
    monkeypatch.setattr("gatekeeper.domain.dsquery.name_hash", weak)
    datasets.add("g", generated(tmp_path / "g.jsonl", 4), actor="t", channel="cli")
    import pyarrow.parquet as pq

    index = pq.ParquetFile(dsindex.index_path(datasets.directory, "g"))
    assert dsindex.footer(index)["names_exact"] is False
    gate: Any = SimpleNamespace(datasets=datasets)
    for author in ("user_3", "user_5", "103"):
        sel = Selection("g", Filters(author=author), Deleted(0, frozenset(), frozenset()))
        got, want = sel.tally(gate, True), scan_tally(gate, sel, True)
        assert want.posts > 0
        assert (got.posts, list(got.authors)) == (want.posts, list(want.authors)), author
        assert list(datasets.post_ids("g", Filters(author=author))) == [
            p["id"] for p in iter_posts(datasets.path("g")) if Filters(author=author).matches(p)]
