"""R9 end to end: what a deletion list hides (or scrubs) in every ID share, every hydrated export
and the ingest report, whatever shape carries the post — on fakeredis and on a real server."""

from __future__ import annotations

import io
import json
import random
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
import redis

from exports.columns import COLUMNS, row
from gatekeeper import config as config_mod
from gatekeeper.domain import formats, light
from gatekeeper.domain.deletions import Ingest
from gatekeeper.domain.demo import write_demo_dataset
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate, ingest_deletions, lift_deletion
from gatekeeper.domain.hydrated import Selection, export
from gatekeeper.domain.shares import select_from_dataset
from gatekeeper.ledger import keys
from gatekeeper.rules import r9
from gatekeeper.rules.errors import BadInput, Forbidden, NotFound

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"
PROTECTED = "762467268227833857"  # kpop.jsonl holds 20 retweets of this account, none by it
EVERYTHING = Filters(since="2000-01-01")  # matches every post, but takes the full-post path
GEO = ["geo.coordinates.coordinates", "geo.place_id"]

pytestmark = pytest.mark.usefixtures("quick_password_hashes")


@pytest.fixture
def gate(redis_client: redis.Redis, tmp_path: Path) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\npost_ids_per_entity = 1000000\nhydrated_per_recipient = 1000000\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    for name, role in (("ana", "analyst"), ("dana", "data"), ("cora", "compliance")):
        g.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t",
                    channel="cli")
    g.users.accept_terms("ana", actor="ana", channel="web")
    return g


def jsonl(path: Path, lines: list[Any]) -> Path:
    """A dataset file; each post gets a created_at (so that a time filter selects it)."""
    for line in lines:
        for post in line.get("data") or [line]:
            post.setdefault("created_at", "Wed Oct 10 20:19:24 +0000 2018" if "id_str" in post
                            else "2021-05-18T19:24:56.000Z")
    path.write_text("".join(json.dumps(x) + "\n" for x in lines))
    return path


def ingest(gate: Gate, tmp_path: Path, kind: str, *records: Any) -> Ingest:
    """Ingest a deletion list: IDs (plain lines) or batch-compliance records (dicts)."""
    path = tmp_path / f"list-{random.random()}.txt"
    path.write_text("".join((json.dumps(r) if isinstance(r, dict) else str(r)) + "\n"
                            for r in records))
    return ingest_deletions(gate, path, kind=kind, actor="cora", channel="cli")


def shared(gate: Gate, dataset: str) -> list[str]:
    """The Post IDs an ID share of the whole dataset delivers — the same by both paths."""
    found = []
    for filters in (Filters(), EVERYTHING):
        with select_from_dataset(gate, dataset, filters, "posts",
                                 gate.deletions.current()) as sel:
            found.append(b"".join(sel.head(sel.count)).decode().split())
    assert found[0] == found[1], "the ID fast path and the full-post path disagree"
    return found[0]


def exported(gate: Gate, dataset: str) -> list[dict[str, Any]]:
    """The posts a hydrated export of the whole dataset holds (and its count agrees)."""
    selection = Selection(dataset, Filters(), gate.deletions.current())
    posts = list(selection.posts(gate))
    assert selection.count(gate, with_users=False)[0] == len(posts)
    return posts


def ids(posts: list[dict[str, Any]]) -> list[str]:
    return [p["id"] for p in posts]


def kpop() -> list[tuple[str, str | None, str | None]]:
    """kpop.jsonl's posts as (id, retweeted original, its author), read with the stdlib,
    independently of the code under test."""
    out = []
    for line in (SAMPLES / "kpop.jsonl").read_text().splitlines():
        pg = json.loads(line)
        authors = {t["id"]: t["author_id"] for t in pg["includes"]["tweets"]}
        for p in pg["data"]:
            rt = next((r["id"] for r in p.get("referenced_tweets", ())
                       if r["type"] == "retweeted"), None)
            out.append((p["id"], rt, authors.get(rt)))
    return out


def page(posts: list[dict[str, Any]], tweets: list[dict[str, Any]] | None = None,
         users: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """A twarc2 response page."""
    return {"data": posts, "includes": {"users": users or [], "tweets": tweets or []}}


def v1(ident: str, user: str, **extra: Any) -> dict[str, Any]:
    """A v1.1 tweet."""
    return {"id_str": ident, "full_text": f"post {ident}", "lang": "en",
            "user": {"id_str": user, "screen_name": f"u{user}"}, **extra}


# --- whichever shape carries the author --------------------------------------------------------


SHAPES = {
    "v2 page, author_id": [page([{"id": "101", "text": "a", "author_id": "7"},
                                 {"id": "102", "text": "b", "author_id": "8"}],
                                users=[{"id": "7", "username": "seven"},
                                       {"id": "8", "username": "eight"}])],
    "v2 post, only an embedded author": [{"id": "101", "text": "a", "author": {"id": "7"}},
                                         {"id": "102", "text": "b", "author": {"id": "8"}}],
    "v2 page, only an embedded author": [page([{"id": "101", "text": "a", "author": {"id": "7"}},
                                               {"id": "102", "text": "b",
                                                "author": {"id": "8"}}])],
    "v1.1 tweet, user.id_str": [v1("101", "7"), v1("102", "8")],
}


@pytest.mark.parametrize("shape", SHAPES)
def test_a_deleted_users_posts_are_hidden_whatever_shape_carries_the_author(
        gate: Gate, tmp_path: Path, shape: str) -> None:
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", SHAPES[shape]), actor="t", channel="cli")
    report = ingest(gate, tmp_path, "users", "7")
    assert report.datasets == {"d": 1}
    assert shared(gate, "d") == ["102"]
    assert ids(exported(gate, "d")) == ["102"]


# --- retweets carry the original's content -----------------------------------------------------


def test_retweets_of_a_protected_account_are_hidden_from_shares_exports_and_the_report(
        gate: Gate, tmp_path: Path) -> None:
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    every = ids(exported(gate, "kpop"))
    report = ingest(gate, tmp_path, "users",
                    {"id": PROTECTED, "action": "protect", "reason": "protected",
                     "created_at": "2021-09-22T10:00:00.000Z"})
    assert report.datasets == {"kpop": 20}
    left = shared(gate, "kpop")
    assert len(left) == 80 and ids(exported(gate, "kpop")) == left
    retweets = {i for i, _rt, author in kpop() if author == PROTECTED}
    assert len(retweets) == 20 and left == [i for i in every if i not in retweets]


def test_retweets_of_a_deleted_post_are_hidden(gate: Gate, tmp_path: Path) -> None:
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    original = kpop()[0][1]  # kpop's first post is a retweet
    retweets = {i for i, rt, _author in kpop() if rt == original}
    assert len(retweets) > 1
    report = ingest(gate, tmp_path, "posts",
                    {"id": original, "action": "delete", "reason": "deleted"})
    assert report.datasets == {"kpop": len(retweets)}
    assert not retweets & set(shared(gate, "kpop"))
    assert not retweets & set(ids(exported(gate, "kpop")))


def test_v1_retweets_carry_their_original_and_its_author(gate: Gate, tmp_path: Path) -> None:
    original = {"id_str": "150", "full_text": "hi", "user": {"id_str": "7"}}
    lines = [v1("201", "9", retweeted_status=original),
             v1("202", "9", retweeted_status={**original, "id_str": "151"}),
             v1("203", "9")]
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", lines), actor="t", channel="cli")
    assert ingest(gate, tmp_path, "posts", "150").datasets == {"d": 1}
    assert shared(gate, "d") == ["202", "203"]
    assert ingest(gate, tmp_path, "users", "7").datasets == {"d": 1}  # 202 is 7's too
    assert shared(gate, "d") == ids(exported(gate, "d")) == ["203"]


def test_quotes_and_replies_keep_their_own_text_and_stay(gate: Gate, tmp_path: Path) -> None:
    listed_post, listed_user = "150", "7"
    refs = [{"type": "quoted", "id": listed_post}]
    reply = [{"type": "replied_to", "id": listed_post}]
    lines = [page([{"id": "301", "text": "quote", "author_id": "9", "referenced_tweets": refs},
                   {"id": "302", "text": "reply", "author_id": "9", "referenced_tweets": reply,
                    "in_reply_to_user_id": listed_user},
                   {"id": "303", "text": "own", "author_id": listed_user}],
                  tweets=[{"id": listed_post, "text": "orig", "author_id": listed_user}]),
             v1("304", "9", quoted_status_id_str=listed_post,
                quoted_status={"id_str": listed_post, "user": {"id_str": listed_user}}),
             v1("305", "9", in_reply_to_status_id_str=listed_post,
                in_reply_to_user_id_str=listed_user)]
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", lines), actor="t", channel="cli")
    ingest(gate, tmp_path, "posts", listed_post)
    report = ingest(gate, tmp_path, "users", listed_user)
    assert report.datasets == {"d": 1}  # only 303, the listed user's own post
    assert shared(gate, "d") == ids(exported(gate, "d")) == ["301", "302", "304", "305"]


# --- what each batch-compliance action does ----------------------------------------------------


HIDING = [{"action": a} for a in ("delete", "deactivate", "suspend", "protect", "withhold",
                                  "drop", "user_delete", "user_protect", "user_suspend",
                                  "user_withheld", "status_withheld", "withheld")] + [
    {"action": "delete", "reason": r} for r in ("deleted", "deactivated", "suspended",
                                                "protected", "withheld")]


@pytest.mark.parametrize("record", HIDING, ids=lambda r: "/".join(r.values()))
def test_every_hiding_action_hides(gate: Gate, tmp_path: Path, record: dict[str, str]) -> None:
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", SHAPES["v2 page, author_id"]),
                      actor="t", channel="cli")
    assert ingest(gate, tmp_path, "posts", {"id": "101", **record}).datasets == {"d": 1}
    assert ingest(gate, tmp_path, "users", {"id": "8", **record}).datasets == {"d": 1}
    assert shared(gate, "d") == ids(exported(gate, "d")) == []


def test_scrub_geo_keeps_the_post_and_removes_its_geo_from_every_export(
        gate: Gate, tmp_path: Path) -> None:
    gate.datasets.add("geo", SAMPLES / "geo_tweets.jsonl", actor="t", channel="cli")
    with_coordinates, with_place = list(formats.iter_posts(SAMPLES / "geo_tweets.jsonl"))
    assert with_coordinates["geo"]["coordinates"] and with_place["geo"]["place_id"]
    report = ingest(gate, tmp_path, "posts",
                    {"id": with_coordinates["id"], "action": "scrub_geo"},
                    {"id": with_place["id"], "action": "delete", "reason": "scrub_geo"})
    assert report.datasets == {} and report.to_dict()["scrub_geo"] == 2
    assert shared(gate, "geo") == [with_coordinates["id"], with_place["id"]]
    posts = exported(gate, "geo")
    assert ids(posts) == [with_coordinates["id"], with_place["id"]]
    for post in posts:
        assert not {"geo", "place", "coordinates"} & set(post)
        assert [row(post)[COLUMNS.index(c)] for c in GEO] == [None, None]
    # The file a person downloads: the rows are there, their geo cells are empty.
    done = export(gate, gate.users.get("ana"), Selection("geo", Filters(),
                                                         gate.deletions.current()),
                  fmt="xlsx", with_users=True, channel="web")
    book = openpyxl.load_workbook(io.BytesIO(done.file.read()), read_only=True)
    done.file.close()
    rows = list(book["Posts"].iter_rows(values_only=True))
    book.close()
    header = list(rows[0])
    assert [r[header.index("id")] for r in rows[1:]] == ids(posts)
    assert all(r[header.index(c)] is None for r in rows[1:] for c in GEO)


def test_scrub_geo_of_a_user_scrubs_their_posts(gate: Gate, tmp_path: Path) -> None:
    gate.datasets.add("geo", SAMPLES / "geo_tweets.jsonl", actor="t", channel="cli")
    first, second = formats.iter_posts(SAMPLES / "geo_tweets.jsonl")
    ingest(gate, tmp_path, "users", {"id": first["author_id"], "action": "scrub_geo"})
    posts = exported(gate, "geo")
    assert ids(posts) == [first["id"], second["id"]]
    assert "geo" not in posts[0] and posts[1]["geo"] == second["geo"]


def test_an_unknown_action_is_refused_by_name_and_nothing_is_ingested(
        gate: Gate, tmp_path: Path) -> None:
    path = jsonl(tmp_path / "tweets_job.jsonl", [{"id": "101", "action": "delete"},
                                                 {"id": "102", "action": "explode"}])
    version = gate.client.get(keys.DELETED_VERSION)
    with pytest.raises(BadInput) as refused:
        ingest_deletions(gate, path, kind=None, actor="cora", channel="cli")
    err = refused.value
    assert err.rule == "R9"
    assert str(path) in err.message and "line 2" in err.message
    assert "'explode'" in err.message and "action" in err.message
    assert err.details["details"][0] == {"line": 2, "field": "action", "value": "explode",
                                         "message": err.details["details"][0]["message"]}
    assert gate.client.scard(keys.deleted("posts")) == 0
    assert gate.client.get(keys.DELETED_VERSION) == version
    assert gate.client.xlen(keys.SYS_AUDIT) == 0


REVERSALS = ["undrop", "unprotect", "unsuspend", "undelete", "unwithhold", "user_undelete",
             "user_unprotect", "user_unsuspend", "reactivate"]


@pytest.mark.parametrize("action", REVERSALS)
def test_a_reversal_is_recorded_and_lifts_nothing(gate: Gate, tmp_path: Path,
                                                  action: str) -> None:
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", SHAPES["v2 page, author_id"]),
                      actor="t", channel="cli")
    ingest(gate, tmp_path, "posts", {"id": "101", "action": "delete"})
    report = ingest(gate, tmp_path, "posts", {"id": "101", "action": action})
    assert shared(gate, "d") == ids(exported(gate, "d")) == ["102"]
    assert (report.to_dict()["reversed"], report.new, report.datasets) == (1, 0, {})
    recorded = json.loads(gate.client.hget(keys.reversals("posts"), "101"))
    assert recorded["action"] == action and recorded["actor"] == "cora"
    last = gate.client.xrevrange(keys.SYS_AUDIT, count=1)[0][1]
    assert last[b"rule"] == b"R9" and b"1 reversal" in last[b"message"]


# --- lifting one listed ID --------------------------------------------------------------------


def test_a_compliance_officer_lifts_one_listed_id_with_a_reason(gate: Gate,
                                                                tmp_path: Path) -> None:
    gate.datasets.add("d", jsonl(tmp_path / "d.jsonl", SHAPES["v2 page, author_id"]),
                      actor="t", channel="cli")
    ingest(gate, tmp_path, "posts", "101", "102")
    ingest(gate, tmp_path, "posts", {"id": "101", "action": "undelete"})
    before = gate.deletions.current()  # cached in this process
    lifted = lift_deletion(gate, "101", kind="posts", reason="X reports it undeleted",
                           actor="cora", channel="cli")
    assert lifted["id"] == "101" and lifted["kind"] == "posts"
    assert gate.deletions.current().version > before.version
    assert shared(gate, "d") == ids(exported(gate, "d")) == ["101"]
    assert gate.client.hget(keys.reversals("posts"), "101") is None
    audit = gate.client.xrevrange(keys.SYS_AUDIT, count=1)[0][1]
    assert (audit[b"kind"], audit[b"rule"], audit[b"actor"], audit[b"outcome"]) == (
        b"deletions.lift", b"R9", b"cora", b"changed")
    assert b"X reports it undeleted" in audit[b"message"] and b"101" in audit[b"message"]


def test_lifting_needs_the_role_a_reason_and_a_listed_id(gate: Gate, tmp_path: Path) -> None:
    ingest(gate, tmp_path, "users", "7")
    audited = gate.client.xlen(keys.SYS_AUDIT)
    with pytest.raises(Forbidden) as refused:
        lift_deletion(gate, "7", kind="users", reason="r", actor="dana", channel="cli")
    assert refused.value.rule == "R12"
    with pytest.raises(BadInput):
        lift_deletion(gate, "7", kind="users", reason="  ", actor="cora", channel="cli")
    with pytest.raises(NotFound):
        lift_deletion(gate, "7", kind="posts", reason="r", actor="cora", channel="cli")
    with pytest.raises(BadInput):
        lift_deletion(gate, "seven", kind="users", reason="r", actor="cora", channel="cli")
    assert gate.client.sismember(keys.deleted("users"), "7")
    assert gate.client.xlen(keys.SYS_AUDIT) == audited


# --- the ingest report -------------------------------------------------------------------------


def test_the_ingest_reports_what_this_list_newly_hides(gate: Gate, tmp_path: Path) -> None:
    gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    gate.datasets.add("geo", SAMPLES / "geo_tweets.jsonl", actor="t", channel="cli")
    originals = [i for i, rt, _author in kpop() if rt is None]
    geo_post = next(formats.iter_posts(SAMPLES / "geo_tweets.jsonl"))["id"]
    assert ingest(gate, tmp_path, "posts", originals[0]).datasets == {"kpop": 1}
    assert ingest(gate, tmp_path, "posts", originals[0], originals[1],
                  geo_post).datasets == {"kpop": 1, "geo": 1}
    assert ingest(gate, tmp_path, "posts", originals[0]).datasets == {}
    # A user whose retweets are already hidden post by post adds only what is new.
    assert ingest(gate, tmp_path, "users", PROTECTED).datasets == {"kpop": 20}
    assert ingest(gate, tmp_path, "users", PROTECTED).datasets == {}


# --- one decision, every path ------------------------------------------------------------------


def test_the_light_path_and_the_full_path_decide_alike(gate: Gate, tmp_path: Path) -> None:
    demo = tmp_path / "demo.jsonl.gz"
    write_demo_dataset(demo, 3000, seed=5, anchor=datetime(2026, 1, 1, tzinfo=UTC))
    gate.datasets.add("demo", demo, actor="t", channel="cli")
    posts = list(formats.iter_posts(demo))
    rng = random.Random(9)
    originals = sorted({r[0] for p in posts if (r := r9.retweet_of(p))})
    rt_authors = sorted({r[1] for p in posts if (r := r9.retweet_of(p)) and r[1]})
    authors = sorted({p["author_id"] for p in posts})
    ingest(gate, tmp_path, "posts", *rng.sample(originals, 20),
           *rng.sample([p["id"] for p in posts], 20))
    ingest(gate, tmp_path, "users", *rng.sample(rt_authors, 3), *rng.sample(authors, 3))
    deleted = gate.deletions.current()
    lights = list(light.light_records(gate.datasets.path("demo")))
    assert lights == [r9.light_of(p) for p in posts]
    expected = [p["id"] for p in posts if not deleted.hides(p)]
    assert [lt[0] for lt in lights if not deleted.hides_light(lt)] == expected
    assert 0 < len(expected) < len(posts) - 40
    assert shared(gate, "demo") == ids(exported(gate, "demo")) == expected
