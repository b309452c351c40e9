"""Datasets: the three line formats, filters, and registering a file atomically with its audit."""

from __future__ import annotations

import gzip
import hashlib
import json
from dataclasses import FrozenInstanceError
from pathlib import Path
from typing import Any

import pytest
import redis

from gatekeeper.domain import datasets as ds_mod
from gatekeeper.domain import lines
from gatekeeper.domain.datasets import Datasets, iter_post_ids
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.formats import iter_posts, iter_users
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.errors import BadInput, Conflict, NotFound, StoreUnavailable
from gatekeeper.rules.r9 import Deleted

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
POST_FILES = ["two_tweets.jsonl", "kpop.jsonl", "geo_tweets.jsonl"]
COMPLIANCE_FILES = {"tweets_compliance.jsonl": 2, "users_compliance.jsonl": 1}  # first bad line

V1_TWEET = {
    "created_at": "Wed Oct 10 20:19:24 +0000 2018",
    "id": 1050118621198921728,
    "id_str": "1050118621198921728",
    "full_text": "To make room for more expression, we will now count all emojis as equal 🎉",
    "text": "To make room for more expression…",
    "lang": "en",
    "retweet_count": 161,
    "favorite_count": 295,
    "reply_count": 12,
    "quote_count": 3,
    "in_reply_to_status_id_str": "1050118621198921700",
    "in_reply_to_user_id_str": "6253282",
    "user": {
        "id": 6253282, "id_str": "6253282", "name": "Twitter API", "screen_name": "TwitterAPI",
        "location": "San Francisco, CA", "description": "The Real Twitter API.",
        "verified": True, "followers_count": 6133636, "friends_count": 12, "listed_count": 12936,
        "statuses_count": 3656, "created_at": "Wed May 23 06:01:13 +0000 2007",
        "profile_image_url_https": "https://pbs.twimg.com/profile_images/942858479592554497/"
                                   "BbazLO9L_normal.jpg",
    },
}


def pages(path: Path) -> list[dict[str, Any]]:
    """The sample's lines parsed with the stdlib, independently of the code under test."""
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()
            if line.strip()]


def write_lines(path: Path, lines: list[Any], *, gz: bool = False) -> Path:
    text = "".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines)
    path.write_bytes(gzip.compress(text.encode()) if gz else text.encode())
    return path


def post(pid: str, text: str = "hello", *, lang: str = "en",
         created_at: str = "2026-11-01T12:00:00.000Z", author: dict | None = None) -> dict:
    author = author or {"id": "42", "username": "Alice", "name": "Alice A."}
    return {"id": pid, "text": text, "lang": lang, "created_at": created_at,
            "author_id": author["id"], "author": author}


# --- reading the samples ------------------------------------------------------------------------


def test_every_sample_file_is_covered_by_these_tests() -> None:
    assert {p.name for p in SAMPLES.glob("*.jsonl")} == {
        *POST_FILES, "users.jsonl", *COMPLIANCE_FILES}


@pytest.mark.parametrize("name", POST_FILES)
def test_sample_pages_yield_exactly_their_data_posts_with_authors_from_includes(
        name: str) -> None:
    lines = pages(SAMPLES / name)
    expected = [p for page in lines for p in page["data"]]
    referenced = {t["id"] for page in lines for t in page.get("includes", {}).get("tweets", [])}
    posts = list(iter_posts(SAMPLES / name))
    assert len(posts) == sum(len(page["data"]) for page in lines)
    assert [p["id"] for p in posts] == [p["id"] for p in expected]
    assert [p["text"] for p in posts] == [p["text"] for p in expected]
    for page in lines:
        users = {u["id"]: u for u in page["includes"]["users"]}
        for p in page["data"]:
            got = next(x for x in posts if x["id"] == p["id"])
            assert got["author"] == users[p["author_id"]]
    outside = referenced - {p["id"] for p in expected}  # referenced, not collected
    assert not outside & {p["id"] for p in posts}
    assert list(iter_post_ids(SAMPLES / name)) == [p["id"] for p in expected]


def test_referenced_posts_in_includes_are_not_posts_of_the_dataset() -> None:
    path = SAMPLES / "two_tweets.jsonl"
    referenced = [t["id"] for page in pages(path) for t in page["includes"]["tweets"]]
    assert referenced
    assert not set(referenced) & {p["id"] for p in iter_posts(path)}


def test_user_lookup_pages_hold_no_posts_and_are_read_as_users() -> None:
    path = SAMPLES / "users.jsonl"
    assert list(iter_posts(path)) == []
    distinct: dict[str, Any] = {}
    for page in pages(path):
        for user in page["data"]:
            distinct.setdefault(user["id"], {**user, "__twarc": page["__twarc"]})
    assert list(iter_users(path)) == list(distinct.values())


def test_users_of_a_posts_file_are_its_distinct_authors_only() -> None:
    path = SAMPLES / "kpop.jsonl"
    [page] = pages(path)
    by_id = {u["id"]: u for u in page["includes"]["users"]}
    authors = list(dict.fromkeys(p["author_id"] for p in page["data"]))
    assert [u["id"] for u in iter_users(path)] == authors
    assert list(iter_users(path)) == [by_id[a] for a in authors]
    assert len(by_id) > len(authors)  # mentioned users are not authors


@pytest.mark.parametrize(("name", "line"), COMPLIANCE_FILES.items())
def test_compliance_files_are_not_posts_and_say_where_to_send_them(name: str, line: int) -> None:
    with pytest.raises(BadInput) as err:
        list(iter_posts(SAMPLES / name))
    assert err.value.details == {"file": str(SAMPLES / name), "line": line}
    assert f"line {line}" in err.value.message and "deletions add" in err.value.message


@pytest.mark.parametrize("name", [*POST_FILES, "users.jsonl"])
def test_gzip_and_plain_give_identical_results(name: str, tmp_path: Path) -> None:
    plain = SAMPLES / name
    gz = tmp_path / (name + ".gz")
    gz.write_bytes(gzip.compress(plain.read_bytes()))
    assert list(iter_posts(gz)) == list(iter_posts(plain))
    assert list(iter_users(gz)) == list(iter_users(plain))
    assert list(iter_post_ids(gz)) == list(iter_post_ids(plain))


def test_gzip_is_recognised_by_its_magic_bytes_not_its_name(tmp_path: Path) -> None:
    plain = SAMPLES / "kpop.jsonl"
    disguised = tmp_path / "looks_plain.jsonl"
    disguised.write_bytes(gzip.compress(plain.read_bytes()))
    misnamed = tmp_path / "not_really.jsonl.gz"
    misnamed.write_bytes(plain.read_bytes())
    assert list(iter_posts(disguised)) == list(iter_posts(misnamed)) == list(iter_posts(plain))


def test_concatenated_gzip_members_are_all_read(tmp_path: Path) -> None:
    a, b = SAMPLES / "kpop.jsonl", SAMPLES / "geo_tweets.jsonl"
    both = tmp_path / "both.jsonl.gz"
    both.write_bytes(gzip.compress(a.read_bytes()) + gzip.compress(b.read_bytes()))
    assert [p["id"] for p in iter_posts(both)] == [
        p["id"] for p in [*iter_posts(a), *iter_posts(b)]]


def test_a_truncated_gzip_file_is_bad_input(tmp_path: Path) -> None:
    cut = tmp_path / "cut.jsonl.gz"
    data = gzip.compress((SAMPLES / "kpop.jsonl").read_bytes())
    cut.write_bytes(data[: len(data) // 2])
    with pytest.raises(BadInput, match="truncated"):
        list(iter_posts(cut))


def test_lines_split_across_read_chunks_parse_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = SAMPLES / "kpop.jsonl"
    expected = list(iter_posts(path))
    gz = tmp_path / "kpop.jsonl.gz"
    gz.write_bytes(gzip.compress(path.read_bytes()))
    monkeypatch.setattr(lines, "CHUNK", 7)
    assert list(iter_posts(path)) == expected
    assert list(iter_posts(gz)) == expected


def test_blank_lines_crlf_and_a_byte_order_mark_are_tolerated(tmp_path: Path) -> None:
    path = tmp_path / "x.jsonl"
    path.write_bytes(b"\xef\xbb\xbf" + json.dumps(post("1")).encode() + b"\r\n\r\n   \n"
                     + json.dumps(post("2")).encode() + b"\r\n\n")
    assert [p["id"] for p in iter_posts(path)] == ["1", "2"]


# --- the other formats --------------------------------------------------------------------------


def test_v1_tweets_are_converted_to_the_v2_shape(tmp_path: Path) -> None:
    path = write_lines(tmp_path / "v1.jsonl", [V1_TWEET])
    [p] = iter_posts(path)
    assert p["id"] == "1050118621198921728"
    assert p["text"] == V1_TWEET["full_text"]
    assert p["created_at"] == "2018-10-10T20:19:24.000Z"
    assert p["author_id"] == "6253282"
    assert p["lang"] == "en"
    assert p["public_metrics"] == {"retweet_count": 161, "reply_count": 12, "like_count": 295,
                                   "quote_count": 3}
    assert p["referenced_tweets"] == [{"type": "replied_to", "id": "1050118621198921700"}]
    assert p["in_reply_to_user_id"] == "6253282"
    author = p["author"]
    assert (author["id"], author["username"], author["name"]) == (
        "6253282", "TwitterAPI", "Twitter API")
    assert author["created_at"] == "2007-05-23T06:01:13.000Z"
    assert author["public_metrics"] == {"followers_count": 6133636, "following_count": 12,
                                        "tweet_count": 3656, "listed_count": 12936}


def test_v1_tweet_with_only_text_and_an_offset_converts_to_utc(tmp_path: Path) -> None:
    tweet = {"id_str": "20", "text": "just setting up my twttr",
             "created_at": "Tue Mar 21 22:50:14 +0200 2006",
             "user": {"id_str": "12", "screen_name": "jack", "name": "jack"}}
    [p] = iter_posts(write_lines(tmp_path / "v1.jsonl", [tweet]))
    assert (p["id"], p["text"], p["created_at"]) == ("20", "just setting up my twttr",
                                                     "2006-03-21T20:50:14.000Z")
    assert "public_metrics" not in p
    assert p["author"]["username"] == "jack"


def test_a_page_post_without_an_includes_entry_keeps_its_own_author_or_gets_none(
        tmp_path: Path) -> None:
    own = {"id": "9", "username": "bob"}
    page = {"data": [{"id": "1", "text": "a", "author_id": "9", "author": own},
                     {"id": "2", "text": "b", "author_id": "8"}],
            "includes": {"users": [{"id": "7", "username": "carol"}]}}
    got = list(iter_posts(write_lines(tmp_path / "p.jsonl", [page])))
    assert [p["author"] for p in got] == [own, None]


def test_numeric_ids_become_decimal_strings(tmp_path: Path) -> None:
    [p] = iter_posts(write_lines(tmp_path / "n.jsonl", [{"id": 12, "text": "x", "author_id": 3}]))
    assert (p["id"], p["author_id"]) == ("12", "3")


def test_single_v2_posts_keep_their_author_or_get_none(tmp_path: Path) -> None:
    flat = post("7", author={"id": "9", "username": "bob"})
    bare = {"id": "8", "text": "no author here", "author_id": "9"}
    got = list(iter_posts(write_lines(tmp_path / "v2.jsonl", [flat, bare])))
    assert got[0]["author"] == {"id": "9", "username": "bob"}
    assert got[1]["author"] is None


def test_formats_can_be_mixed_line_by_line_and_ids_agree(tmp_path: Path) -> None:
    [page] = pages(SAMPLES / "two_tweets.jsonl")
    single = {**page, "data": page["data"][0]}  # "data" may be a single object
    empty = {"meta": {"result_count": 0}, "__twarc": {}}
    path = write_lines(tmp_path / "mixed.jsonl", [page, V1_TWEET, post("5"), empty, single])
    ids = [p["id"] for p in iter_posts(path)]
    assert ids == [page["data"][0]["id"], V1_TWEET["id_str"], "5", page["data"][0]["id"]]
    assert list(iter_post_ids(path)) == ids


def test_a_lone_surrogate_is_replaced_visibly_not_fatal(tmp_path: Path) -> None:
    path = tmp_path / "cut_emoji.jsonl"
    path.write_text('{"id": "1", "text": "cut emoji \\ud83d"}\n')
    [p] = iter_posts(path)
    assert p["text"] == "cut emoji \ufffd"


@pytest.mark.parametrize(("line", "what"), [
    ("{not json", "not valid JSON"),
    ("[1, 2]", "expected a JSON object"),
    ('{"foo": 1}', "neither an X API v2 response page"),
    ('{"data": [{"id": "1"}]}', "neither a post"),
    ('{"data": 5}', '"data" must be a list'),
    ('{"id": "12ab", "text": "x"}', "decimal ID"),
    ('{"id": "1", "text": "x", "author_id": ["1"]}', '"author_id" must be a decimal ID'),
    ('{"data": [{"id": "u1", "username": "bob"}]}', '"id" must be a decimal ID'),
    ('{"id": true, "text": "x"}', "decimal ID"),
    ('{"id": "1", "text": "x", "created_at": "last tuesday"}', "created_at"),
    ('{"id_str": "1", "text": "x"}', "v1.1 tweet needs"),
])
def test_a_malformed_line_is_reported_with_file_and_line_number(
        tmp_path: Path, line: str, what: str) -> None:
    path = tmp_path / "bad.jsonl"
    path.write_text(json.dumps(post("1")) + "\n\n" + line + "\n" + json.dumps(post("2")) + "\n")
    with pytest.raises(BadInput) as err:
        list(iter_posts(path))
    assert (err.value.details["file"], err.value.details["line"]) == (str(path), 3)
    assert str(path) in err.value.message and "line 3" in err.value.message
    assert what in err.value.message


def test_a_missing_file_is_bad_input(tmp_path: Path) -> None:
    with pytest.raises(BadInput, match="cannot read"):
        list(iter_posts(tmp_path / "nope.jsonl"))


# --- filters ------------------------------------------------------------------------------------

POSTS = [
    post("1", "Guten Morgen, STRASSE", lang="de", created_at="2026-10-31T23:59:59.999Z"),
    post("2", "Die Straße ist lang", lang="DE", created_at="2026-11-01T00:00:00.000Z"),
    post("3", "Hello world", created_at="2026-11-01T12:00:00.000Z",
         author={"id": "77", "username": "BobSmith"}),
    post("4", "안녕하세요 세계", lang="ko", created_at="2026-11-02T00:00:00.000Z"),
]


def selected(**values: Any) -> list[str]:
    f = Filters.parse(values)
    return [p["id"] for p in POSTS if f.matches(p)]


def test_since_is_inclusive_and_until_exclusive() -> None:
    assert selected(since="2026-11-01") == ["2", "3", "4"]
    assert selected(until="2026-11-01") == ["1"]
    assert selected(since="2026-11-01T00:00:00Z", until="2026-11-02T00:00:00Z") == ["2", "3"]


def test_times_accept_offsets_and_naive_means_utc() -> None:
    assert selected(since="2026-11-01T14:00:00+02:00") == selected(since="2026-11-01T12:00:00")
    assert selected(since="2026-11-01T12:00:00") == ["3", "4"]
    assert selected(until="2026-11-01T00:00:00.0005Z") == ["1", "2"]


def test_lang_is_exact_and_case_insensitive() -> None:
    assert selected(lang="de") == ["1", "2"]
    assert selected(lang="DE") == ["1", "2"]
    assert selected(lang="deu") == []


def test_contains_is_a_casefolded_substring() -> None:
    assert selected(contains="strasse") == ["1", "2"]
    assert selected(contains="WORLD") == ["3"]
    assert selected(contains="세계") == ["4"]


def test_author_is_a_username_with_or_without_at_or_a_numeric_id() -> None:
    assert selected(author="bobsmith") == ["3"]
    assert selected(author="@BOBSMITH") == ["3"]
    assert selected(author="77") == ["3"]
    assert selected(author="42") == ["1", "2", "4"]
    assert selected(author="nobody") == []


def test_filters_combine_with_and() -> None:
    assert selected(lang="de", contains="straße", since="2026-11-01") == ["2"]
    assert selected(author="alice", lang="ko") == ["4"]


def test_empty_values_mean_no_filter_and_the_dict_form_round_trips() -> None:
    assert Filters.parse({"lang": "", "since": None, "contains": "  "}).is_empty
    assert Filters.parse(None) == Filters() and Filters().to_dict() == {}
    f = Filters.parse({"since": "2026-11-01", "until": "2026-11-02T00:00:00.250+01:00",
                       "lang": "EN", "contains": "Straße", "author": "@Bob"})
    assert f.to_dict() == {"since": "2026-11-01T00:00:00Z", "until": "2026-11-01T23:00:00.250Z",
                           "lang": "en", "contains": "Straße", "author": "bob"}
    assert Filters.parse(f.to_dict()) == f
    assert not f.is_empty
    with pytest.raises(FrozenInstanceError):
        f.lang = "de"  # type: ignore[misc]


@pytest.mark.parametrize(("values", "field"), [
    ({"since": "yesterday"}, "since"),
    ({"until": "2026-13-01"}, "until"),
    ({"since": "2026-11-02", "until": "2026-11-01"}, "until"),
    ({"lang": "english!"}, "lang"),
    ({"author": "two words"}, "author"),
    ({"contains": 5}, "contains"),
    ({"lang": ["en"]}, "lang"),
    ({"colour": "red"}, "colour"),
])
def test_bad_filter_values_are_refused_naming_the_field(values: dict, field: str) -> None:
    with pytest.raises(BadInput) as err:
        Filters.parse(values)
    assert err.value.details["field"] == field
    assert field in err.value.message


def test_a_post_without_a_time_is_in_no_time_range() -> None:
    assert not Filters.parse({"since": "2000-01-01"}).matches({"id": "1", "text": "x"})


# --- the registry -------------------------------------------------------------------------------


@pytest.fixture
def datasets(redis_client: redis.Redis, tmp_path: Path) -> Datasets:
    return Datasets(redis_client, Ledger(redis_client), tmp_path / "datasets")


def audit_records(redis_client: redis.Redis) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in fields.items()}
            for _, fields in redis_client.xrange(keys.SYS_AUDIT)]


def listing(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


def test_a_copy_of_many_chunks_is_byte_identical_and_a_refused_one_leaves_no_copy_thread(
        datasets: Datasets, tmp_path: Path) -> None:
    import threading

    many = [post(str(10**12 + i), "x" * 300) for i in range(12_000)]  # ~5 MB: chunks of 1 MB
    source = write_lines(tmp_path / "many.jsonl", many)
    info = datasets.add("many", source, actor="admin", channel="cli")
    copy = (datasets.directory / info.file).read_bytes()
    assert copy == source.read_bytes() and info.bytes == len(copy)
    assert info.sha256 == hashlib.sha256(copy).hexdigest() and info.posts == 12_000
    bad = write_lines(tmp_path / "bad.jsonl", [*many, "{cut", *many])
    with pytest.raises(BadInput, match=r"bad\.jsonl, line 12001"):
        datasets.add("bad", bad, actor="admin", channel="cli")
    assert not [t for t in threading.enumerate() if t.name == "dataset-copy"]
    assert listing(datasets.directory) == ["many.ids", "many.index.parquet", "many.jsonl"]


def test_add_copies_the_file_and_registers_it_with_its_audit_record(
        datasets: Datasets, redis_client: redis.Redis) -> None:
    source = SAMPLES / "kpop.jsonl"
    info = datasets.add("kpop", source, actor="admin", channel="cli")
    [page] = pages(source)
    assert info.posts == 100 and info.file == "kpop.jsonl"
    assert info.users == len({p["author_id"] for p in page["data"]})
    assert list(info.languages) == sorted({p["lang"] for p in page["data"]})
    assert info.first_created_at == min(p["created_at"] for p in page["data"])
    assert info.last_created_at == max(p["created_at"] for p in page["data"])
    assert info.sha256 == hashlib.sha256(source.read_bytes()).hexdigest()
    assert info.added_by == "admin" and info.added_at.endswith("Z")
    assert datasets.path("kpop").read_bytes() == source.read_bytes()
    assert listing(datasets.directory) == ["kpop.ids", "kpop.index.parquet", "kpop.jsonl"]
    assert json.loads(redis_client.hget(keys.DATASETS, "kpop")) == info.to_dict()
    assert datasets.info("kpop") == info and datasets.list() == [info]
    [record] = audit_records(redis_client)
    assert {k: record[k] for k in ("kind", "outcome", "rule", "actor", "channel", "dataset")} == {
        "kind": "dataset.add", "outcome": "changed", "rule": "R11", "actor": "admin",
        "channel": "cli", "dataset": "kpop"}


def test_a_gzip_source_is_stored_as_jsonl_gz_whatever_its_name(
        datasets: Datasets, tmp_path: Path) -> None:
    source = tmp_path / "upload.jsonl"
    source.write_bytes(gzip.compress((SAMPLES / "kpop.jsonl").read_bytes()))
    info = datasets.add("k", source, actor="admin", channel="cli")
    assert info.file == "k.jsonl.gz"
    assert datasets.path("k").read_bytes() == source.read_bytes()
    assert list(datasets.post_ids("k")) == list(iter_post_ids(SAMPLES / "kpop.jsonl"))


@pytest.mark.parametrize("name", ["../x", "a/b", "/etc/passwd", "..", ".hidden", "", "a" * 65])
def test_names_that_could_leave_the_directory_are_refused(
        datasets: Datasets, redis_client: redis.Redis, tmp_path: Path, name: str) -> None:
    with pytest.raises(BadInput):
        datasets.add(name, SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    with pytest.raises(NotFound):
        datasets.path(name)
    assert redis_client.hlen(keys.DATASETS) == 0 and audit_records(redis_client) == []
    assert listing(datasets.directory) == [] and not (tmp_path / "x.jsonl").exists()


def test_a_registry_entry_pointing_outside_the_directory_is_refused(
        datasets: Datasets, redis_client: redis.Redis) -> None:
    datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    tampered = {**datasets.info("kpop").to_dict(), "file": "../../escape.jsonl"}
    redis_client.hset(keys.DATASETS, "kpop", json.dumps(tampered))
    with pytest.raises(NotFound, match="outside"):
        datasets.path("kpop")


def test_unknown_dataset_is_not_found_at_the_call(datasets: Datasets) -> None:
    for lookup in (datasets.info, datasets.path, datasets.posts, datasets.post_ids,
                   datasets.author_ids):
        with pytest.raises(NotFound):
            lookup("nope")


def test_adding_an_existing_name_is_a_conflict_and_changes_nothing(
        datasets: Datasets, redis_client: redis.Redis) -> None:
    first = datasets.add("d", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    with pytest.raises(Conflict):
        datasets.add("d", SAMPLES / "geo_tweets.jsonl", actor="other", channel="api")
    assert datasets.info("d") == first and len(audit_records(redis_client)) == 1
    assert datasets.path("d").read_bytes() == (SAMPLES / "kpop.jsonl").read_bytes()
    assert listing(datasets.directory) == ["d.ids", "d.index.parquet", "d.jsonl"]


@pytest.mark.parametrize("content", [
    b'{"id": "1", "text": "fine"}\n{"id": "2", "text": "fine"}\n{broken\n',
    (SAMPLES / "users.jsonl").read_bytes(),  # valid, but holds no posts
    b"\n\n",
])
def test_an_invalid_file_registers_nothing_and_leaves_no_file_behind(
        datasets: Datasets, redis_client: redis.Redis, tmp_path: Path, content: bytes) -> None:
    source = tmp_path / "in.jsonl"
    source.write_bytes(content)
    with pytest.raises(BadInput):
        datasets.add("bad", source, actor="admin", channel="cli")
    assert listing(datasets.directory) == []
    assert redis_client.hlen(keys.DATASETS) == 0 and audit_records(redis_client) == []


def test_the_copy_is_never_visible_half_written(
        datasets: Datasets, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[list[str]] = []
    read = ds_mod._Tee.read

    def watching(self: Any, n: int) -> bytes:
        seen.append([f for f in listing(datasets.directory) if not f.startswith(".")])
        return read(self, n)

    monkeypatch.setattr(lines, "CHUNK", 4096)
    monkeypatch.setattr(ds_mod._Tee, "read", watching)
    datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    assert len(seen) > 50 and all(visible == [] for visible in seen)
    assert listing(datasets.directory) == ["kpop.ids", "kpop.index.parquet", "kpop.jsonl"]


def test_a_store_failure_while_registering_removes_the_copy(
        datasets: Datasets, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    def down(*args: Any, **kwargs: Any) -> None:
        raise StoreUnavailable("down")

    monkeypatch.setattr(datasets.ledger, "record", down)
    with pytest.raises(StoreUnavailable):
        datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    assert listing(datasets.directory) == [] and redis_client.hlen(keys.DATASETS) == 0


def test_a_file_left_by_an_interrupted_add_is_replaced(datasets: Datasets) -> None:
    datasets.directory.mkdir(parents=True)
    (datasets.directory / "kpop.jsonl.gz").write_bytes(b"half")
    (datasets.directory / "kpop.index.parquet").write_bytes(b"half")
    datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    assert listing(datasets.directory) == ["kpop.ids", "kpop.index.parquet", "kpop.jsonl"]


def test_list_is_sorted_by_name(datasets: Datasets) -> None:
    for name in ("b", "a", "c"):
        datasets.add(name, SAMPLES / "geo_tweets.jsonl", actor="admin", channel="cli")
    assert [i.name for i in datasets.list()] == ["a", "b", "c"]


def test_selections_apply_filters_and_agree_with_iter_posts(datasets: Datasets) -> None:
    datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    every = list(iter_posts(SAMPLES / "kpop.jsonl"))
    assert list(datasets.post_ids("kpop")) == [p["id"] for p in every]
    ko = Filters.parse({"lang": "ko"})
    assert [p["id"] for p in datasets.posts("kpop", ko)] == [
        p["id"] for p in every if p["lang"] == "ko"]
    assert list(datasets.post_ids("kpop", ko)) == [p["id"] for p in every if p["lang"] == "ko"]
    one = every[0]["author"]["username"]
    by_author = Filters.parse({"author": one.upper()})
    assert list(datasets.post_ids("kpop", by_author)) == [
        p["id"] for p in every if p["author"]["username"] == one]


def test_author_ids_are_distinct_in_first_seen_order(datasets: Datasets, tmp_path: Path) -> None:
    a, b = {"id": "1", "username": "a"}, {"id": "2", "username": "b"}
    source = write_lines(tmp_path / "s.jsonl", [post("10", author=b), post("11", author=a),
                                                 post("12", author=b, lang="de")])
    datasets.add("s", source, actor="admin", channel="cli")
    assert list(datasets.author_ids("s")) == ["2", "1"]
    assert list(datasets.author_ids("s", Filters.parse({"lang": "de"}))) == ["2"]
    assert list(datasets.author_ids("s", Filters.parse({"author": "a"}))) == ["1"]


def test_affected_counts_posts_hidden_by_a_deletion_list(datasets: Datasets) -> None:
    deleted = Deleted(1, posts=frozenset({1440717170493689866}), users=frozenset(
        {int(next(iter_posts(SAMPLES / "geo_tweets.jsonl"))["author_id"])}))
    datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="admin", channel="cli")
    datasets.add("geo", SAMPLES / "geo_tweets.jsonl", actor="admin", channel="cli")
    assert datasets.affected(deleted) == {"geo": 1, "kpop": 1}
    assert datasets.affected(deleted, before=deleted.without("users", deleted.users)) == {
        "geo": 1}
