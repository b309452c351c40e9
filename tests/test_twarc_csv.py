"""The XLSX export against twarc-csv itself: same columns, same order, the same value in every
shared cell, on the real samples and on generated pages that carry every ``includes`` kind.

twarc-csv runs in a subprocess (its pandas warns about ``applymap``, and this suite turns
warnings into errors); our side is the export's own path: `formats` reads the file, `expand`
makes the rows, `write_xlsx` writes them and openpyxl reads the file back.
"""

from __future__ import annotations

import copy
import csv
import io
import json
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import openpyxl
import pytest
from twarc.expansions import flatten

from exports.columns import COLUMNS, REFERENCED, USER_COLUMNS, expand, time_of
from exports.xlsx import write_xlsx
from gatekeeper.domain.formats import iter_posts, iter_users
from gatekeeper.domain.light import light_records
from gatekeeper.rules.r9 import light_of

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
POST_SAMPLES = ["kpop.jsonl", "two_tweets.jsonl", "geo_tweets.jsonl"]
ABOUT = {"recipient": "ana", "time": "2025-01-01T12:00:00Z"}

# --- the deliberate differences, all of them, in one place (README "Exports" says the same) ----
#
# 1. Text keeps real newlines and CRs; twarc-csv writes "\n" as backslash-n and drops "\r".
# 2. Times are date cells (naive UTC); twarc-csv writes X's text ("2021-05-18T19:24:56.000Z").
# 3. Counts are integers; twarc-csv's pandas writes "12.0" once a column of a batch has a gap.
#    Flags are booleans (twarc-csv: "True"/"False").
# 4. Lists are compact JSON with characters as themselves; twarc-csv's json.dumps escapes
#    non-ASCII and adds spaces: compared as JSON values.
# 5. IDs are text cells whatever X wrote (twarc-csv's are text too, as X writes them).
# 6. The writer's safety: a string is never a formula (same text, quote-prefixed), characters
#    XML cannot hold become visible replacements, over-long text is cut with a marker — none of
#    which occurs in the compared data, so the cells compare equal.
# 7. With referenced posts as rows, our Posts sheet ends with a "referenced" column (the kind of
#    reference) that twarc-csv has no column for.
LIST_COLUMNS = frozenset(
    c for c in COLUMNS + USER_COLUMNS
    if c.startswith(("entities.", "author.entities.", "attachments.media", "matching_rules",
                     "context_annotations"))
    or c in ("edit_history_tweet_ids", "withheld.country_codes", "author.withheld.country_codes",
             "attachments.poll.options", "attachments.poll_ids", "geo.coordinates.coordinates",
             "geo.geo.bbox"))


def same(column: str, ours: Any, theirs: str) -> bool:
    """Whether our cell holds what twarc-csv's CSV cell holds, after the differences above."""
    if ours is None:
        return theirs == ""
    if isinstance(ours, bool):  # 3 (before int: a bool is an int)
        return theirs == str(ours)
    if isinstance(ours, int):  # 3
        return theirs != "" and float(theirs) == ours
    if isinstance(ours, datetime):  # 2
        return time_of(theirs) == ours
    if column in LIST_COLUMNS:  # 4
        return theirs != "" and json.loads(ours) == json.loads(theirs)
    return ours.replace("\r", "").replace("\n", "\\n") == theirs  # 1


TWARC = r"""
import json, sys, warnings
warnings.simplefilter("ignore")
from dataframe_converter import DataFrameConverter
from csv_writer import CSVConverter
for job in json.loads(sys.argv[1]):
    converter = DataFrameConverter(**job["options"])
    with open(job["in"]) as i, open(job["out"], "w", newline="") as o:
        CSVConverter(i, o, converter=converter, hide_progress=True).process()
"""


def twarc_csv(tmp: Path, path: Path, **options: Any) -> tuple[list[str], list[dict[str, str]]]:
    """twarc-csv's header and rows for `path` (``twarc2 csv`` with these options)."""
    out = tmp / f"{path.stem}-{len(list(tmp.iterdir()))}.csv"
    job = [{"in": str(path), "out": str(out), "options": options}]
    subprocess.run([sys.executable, "-c", TWARC, json.dumps(job)], check=True,
                   capture_output=True, timeout=120)
    with out.open(newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        rows = list(reader)
        return list(reader.fieldnames or []), rows


def ours(posts: Iterator[dict[str, Any]] | list[dict[str, Any]], *, whole: bool = True,
         referenced: bool = False, users: list[dict[str, Any]] | None = None) -> Any:
    rows = (r for p in posts for r in expand(p, whole_retweets=whole, referenced=referenced))
    buf = io.BytesIO()
    write_xlsx(rows, buf, about=ABOUT, users=users, referenced=referenced)
    return openpyxl.load_workbook(io.BytesIO(buf.getvalue()))


def sheet(ws: Any) -> tuple[list[str], list[dict[str, Any]]]:
    rows = ws.iter_rows(values_only=True)
    header = list(next(rows))
    return header, [dict(zip(header, r, strict=True)) for r in rows]


def compare(theirs: list[dict[str, str]], mine: list[dict[str, Any]], columns: list[str]
            ) -> list[str]:
    """Every differing shared cell, as "row N, column: ours != theirs"."""
    assert len(mine) == len(theirs)
    return [f"row {i}, {c}: {m[c]!r} != {t[c]!r}"
            for i, (m, t) in enumerate(zip(mine, theirs, strict=True)) for c in columns
            if not same(c, m[c], t[c])]


def unique(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """First row of each id: twarc-csv drops repeated ids (duplicates are another part's)."""
    seen: set[Any] = set()
    out = []
    for r in rows:
        if r["id"] not in seen:
            seen.add(r["id"])
            out.append(r)
    return out


# --- generated pages with every includes kind ---------------------------------------------------


def _user(uid: str, name: str, **more: Any) -> dict[str, Any]:
    return {"id": uid, "username": name, "name": f"{name.title()} Ω", "created_at":
            "2014-02-14T22:26:08.000Z", "description": f"bio of {name} #tag $CASH @other\nline 2",
            "location": "Zürich", "profile_image_url": f"https://pbs.twimg.com/{name}.jpg",
            "protected": False, "verified": True, "verified_type": "blue",
            "pinned_tweet_id": "1500000000000000009", "url": "https://t.co/u",
            "public_metrics": {"followers_count": 5, "following_count": 0, "listed_count": 1,
                               "tweet_count": 123},
            "entities": {"url": {"urls": [{"start": 0, "end": 20, "url": "https://t.co/u",
                                           "expanded_url": f"https://{name}.example/",
                                           "display_url": f"{name}.example"}]},
                         "description": {
                             "hashtags": [{"start": 15, "end": 19, "tag": "tag"}],
                             "cashtags": [{"start": 20, "end": 25, "tag": "CASH"}],
                             "mentions": [{"start": 26, "end": 32, "username": "other"}],
                             "urls": [{"start": 0, "end": 1, "url": "https://t.co/d",
                                       "expanded_url": "https://d.example/x"}]}},
            **more}


def _tweet(tid: str, author: str, text: str, **more: Any) -> dict[str, Any]:
    return {"id": tid, "author_id": author, "conversation_id": tid, "text": text, "lang": "en",
            "created_at": "2023-03-01T10:00:00.000Z", "source": "Twitter Web App",
            "reply_settings": "everyone", "possibly_sensitive": False,
            "edit_history_tweet_ids": [tid],
            "edit_controls": {"edits_remaining": 5, "is_edit_eligible": True,
                              "editable_until": "2023-03-01T10:30:00.000Z"},
            "public_metrics": {"retweet_count": 1, "reply_count": 2, "like_count": 3,
                               "quote_count": 4, "impression_count": 500, "bookmark_count": 6},
            **more}


def full_pages() -> list[dict[str, Any]]:
    """Two pages: posts with media (variants, alt text), a poll, a place with its bbox, withheld
    content and authors, edit controls, context annotations, entity annotations, cashtags,
    quotes, replies and retweets of posts in includes.tweets (one original not included),
    matching rules and twarc's metadata; the second page repeats nothing of the first."""
    ann = [{"domain": {"id": "10", "name": "Person", "description": "Named people"},
            "entity": {"id": "1", "name": "Ana Ñ"}}]
    original = _tweet("1500000000000000001", "11", "the original\nwith a newline 🇰🇷 & <b>",
                      attachments={"media_keys": ["3_1"], "poll_ids": ["1599"]},
                      entities={"hashtags": [{"start": 0, "end": 3, "tag": "orig"}],
                                "urls": [{"start": 0, "end": 5, "url": "https://t.co/m",
                                          "expanded_url": "https://x.com/a/status/1/photo/1",
                                          "display_url": "pic.x.com/m", "media_key": "3_1"}]},
                      context_annotations=ann)
    original["public_metrics"] = {"retweet_count": 900, "reply_count": 80, "like_count": 7000,
                                  "quote_count": 60, "impression_count": 99999,
                                  "bookmark_count": 50}
    quoted = _tweet("1500000000000000002", "12", "quoted post, withheld in DE",
                    withheld={"copyright": False, "country_codes": ["DE", "FR"],
                              "scope": "tweet"})
    replied = _tweet("1500000000000000003", "13", "the post replied to")
    data = [
        _tweet("1600000000000000001", "14", "RT @alice: the original\nwith a newline",
               referenced_tweets=[{"type": "retweeted", "id": original["id"]}],
               entities={"mentions": [{"start": 3, "end": 9, "username": "alice", "id": "11"}]},
               public_metrics={"retweet_count": 900, "reply_count": 0, "like_count": 0,
                               "quote_count": 0, "impression_count": 0, "bookmark_count": 0}),
        _tweet("1600000000000000002", "15", "quoting you $GME #stock @bob https://t.co/z",
               referenced_tweets=[{"type": "quoted", "id": quoted["id"]}],
               entities={"cashtags": [{"start": 12, "end": 16, "tag": "GME"}],
                         "hashtags": [{"start": 17, "end": 23, "tag": "stock"}],
                         "mentions": [{"start": 24, "end": 28, "username": "bob", "id": "12"}],
                         "urls": [{"start": 29, "end": 52, "url": "https://t.co/z",
                                   "expanded_url": "https://example.org/page"}],
                         "annotations": [{"start": 0, "end": 4, "probability": 0.5,
                                          "type": "Other", "normalized_text": "quoting"}]},
               geo={"place_id": "01a9a39529b27f36",
                    "coordinates": {"type": "Point", "coordinates": [-73.99, 40.73]}},
               context_annotations=ann),
        _tweet("1600000000000000003", "14", "@carol a reply =1+1",
               referenced_tweets=[{"type": "replied_to", "id": replied["id"]}],
               in_reply_to_user_id="13",
               attachments={"media_keys": ["7_2", "3_missing"]},
               withheld={"copyright": True, "country_codes": [], "scope": "tweet"}),
        _tweet("1600000000000000004", "15", "RT @gone: an original no one included",
               referenced_tweets=[{"type": "retweeted", "id": "1500000000000000099"}]),
    ]
    media = [
        {"media_key": "3_1", "type": "photo", "url": "https://pbs.twimg.com/media/a.jpg",
         "alt_text": "a cat, asleep — ünïcode", "width": 10, "height": 20},
        {"media_key": "7_2", "type": "video", "preview_image_url": "https://pbs.twimg.com/p.jpg",
         "duration_ms": 1000, "alt_text": "",
         "variants": [{"bit_rate": 632000, "content_type": "video/mp4",
                       "url": "https://video.twimg.com/v.mp4"},
                      {"content_type": "application/x-mpegURL",
                       "url": "https://video.twimg.com/v.m3u8"}],
         "public_metrics": {"view_count": 42}},
    ]
    poll = {"id": "1599", "options": [{"position": 1, "label": "yes", "votes": 3},
                                      {"position": 2, "label": "नहीं", "votes": 1}],
            "duration_minutes": 1440, "end_datetime": "2023-03-02T10:00:00.000Z",
            "voting_status": "closed"}
    place = {"id": "01a9a39529b27f36", "full_name": "Manhattan, NY", "name": "Manhattan",
             "country": "United States", "country_code": "US", "place_type": "city",
             "geo": {"type": "Feature", "bbox": [-74.026675, 40.683935, -73.910408, 40.877483]}}
    users = [_user("11", "alice"), _user("12", "bob", withheld={
        "country_codes": ["DE"], "scope": "user", "copyright": False}),
        _user("13", "carol", entities={}), _user("14", "dave", url=""),
        _user("15", "erin", verified=False, verified_type="none", withheld={
            "country_codes": ["IN", "TR"], "scope": "user", "copyright": True})]
    twarc = {"url": "https://api.twitter.com/2/tweets/search/stream?expansions=x",
             "version": "2.14.0", "retrieved_at": "2023-03-01T12:00:00+00:00"}
    rules = [{"id": "1611111111111111111", "tag": "cats ünï"}]
    page1 = {"data": data, "includes": {"users": users, "tweets": [original, quoted, replied],
                                        "media": media, "polls": [poll], "places": [place]},
             "matching_rules": rules, "__twarc": twarc}
    more = _tweet("1600000000000000005", "11", "second page, a quote of the original",
                  referenced_tweets=[{"type": "quoted", "id": original["id"]},
                                     {"type": "replied_to", "id": replied["id"]}],
                  in_reply_to_user_id="13")
    page2 = {"data": [more], "includes": {"users": [users[0], users[2]],
                                          "tweets": [original, replied], "media": media,
                                          "polls": [poll]},
             "__twarc": {**twarc, "retrieved_at": "2023-03-01T12:00:05+00:00"}}
    return [page1, page2]


def write_lines(path: Path, objects: list[Any]) -> Path:
    path.write_text("".join(json.dumps(o, ensure_ascii=False) + "\n" for o in objects),
                    encoding="utf-8")
    return path


@pytest.fixture
def generated(tmp_path: Path) -> Path:
    return write_lines(tmp_path / "generated.jsonl", full_pages())


def inputs(tmp_path: Path, name: str) -> Path:
    if name == "generated":
        return write_lines(tmp_path / "generated.jsonl", full_pages())
    return SAMPLES / name


# --- the tests ----------------------------------------------------------------------------------

CASES = [*POST_SAMPLES, "generated"]


@pytest.mark.parametrize("name", CASES)
def test_every_cell_matches_twarc_csv_with_retweets_whole(tmp_path: Path, name: str) -> None:
    path = inputs(tmp_path, name)
    header, theirs = twarc_csv(tmp_path, path)
    mine_header, mine = sheet(ours(iter_posts(path))["Posts"])
    assert mine_header == [*header, "url"] == COLUMNS
    assert compare(theirs, mine, header) == []


@pytest.mark.parametrize("name", CASES)
def test_every_cell_matches_twarc_csv_with_retweets_kept_as_they_are(tmp_path: Path,
                                                                     name: str) -> None:
    path = inputs(tmp_path, name)
    header, theirs = twarc_csv(tmp_path, path, merge_retweets=False)
    _, mine = sheet(ours(iter_posts(path), whole=False)["Posts"])
    assert compare(theirs, mine, header) == []


@pytest.mark.parametrize("name", CASES)
def test_every_cell_matches_twarc_csv_with_referenced_posts_inline(tmp_path: Path,
                                                                   name: str) -> None:
    path = inputs(tmp_path, name)
    header, theirs = twarc_csv(tmp_path, path, inline_referenced_tweets=True)
    mine_header, mine = sheet(ours(iter_posts(path), referenced=True)["Posts"])
    assert mine_header == [*header, "url", REFERENCED]
    assert compare(theirs, unique(mine), header) == []


def test_every_cell_of_the_users_sheet_matches_twarc_csv_users(tmp_path: Path) -> None:
    path = SAMPLES / "users.jsonl"
    header, theirs = twarc_csv(tmp_path, path, input_data_type="users")
    wb = ours([], users=list(iter_users(path)))
    mine_header, mine = sheet(wb["Users"])
    assert mine_header == header == USER_COLUMNS
    assert len(mine) == 91  # 96 users, 5 of them twice
    assert compare(theirs, mine, header) == []


def test_generated_pages_fill_every_column(tmp_path: Path, generated: Path) -> None:
    """The generated data is what the comparisons claim: no twarc-csv column left empty."""
    header, theirs = twarc_csv(tmp_path, generated)
    assert len(theirs) == 5
    empty = [c for c in header if not any(r[c] for r in theirs)]
    assert empty == []
    _, mine = sheet(ours(iter_posts(generated))["Posts"])
    assert [c for c in COLUMNS if all(r[c] is None for r in mine)] == []


def test_flattened_and_unflattened_files_give_the_same_rows(tmp_path: Path) -> None:
    """Quoted, replied-to and retweeted authors come from includes whether or not the file
    was flattened (before, on kpop: 78 retweeted usernames flattened, 0 unflattened)."""
    for name in ("kpop.jsonl", "generated"):
        path = inputs(tmp_path, name)
        pages = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        flat = write_lines(tmp_path / f"flat-{name}", [
            t for page in copy.deepcopy(pages) for t in flatten(page)])
        _, raw_rows = sheet(ours(iter_posts(path))["Posts"])
        _, flat_rows = sheet(ours(iter_posts(flat))["Posts"])
        assert raw_rows == flat_rows
        for column in ("retweeted_user_id", "retweeted_username"):
            assert sum(r[column] is not None for r in raw_rows) > 0
    _, kpop = sheet(ours(iter_posts(SAMPLES / "kpop.jsonl"))["Posts"])
    for column in ("retweeted_user_id", "retweeted_username"):  # twarc-csv's count
        assert sum(r[column] is not None for r in kpop) == 78


def test_a_retweet_row_is_whole_by_default_and_as_it_is_on_request(generated: Path) -> None:
    posts = list(iter_posts(generated))
    _, whole = sheet(ours(posts)["Posts"])
    _, kept = sheet(ours(posts, whole=False)["Posts"])
    assert whole[0]["id"] == kept[0]["id"] == "1600000000000000001"
    assert whole[0]["author.username"] == kept[0]["author.username"] == "dave"
    assert whole[0]["created_at"] == kept[0]["created_at"]
    assert whole[0]["text"] == "the original\nwith a newline 🇰🇷 & <b>"
    assert kept[0]["text"].startswith("RT @alice: ")
    assert (whole[0]["public_metrics.like_count"], kept[0]["public_metrics.like_count"]) == \
        (7000, 0)
    assert whole[0]["entities.hashtags"] == '["#orig"]' and kept[0]["entities.hashtags"] is None
    assert whole[0]["retweeted_username"] == kept[0]["retweeted_username"] == "alice"
    # an original the file does not hold: the retweet stays as it is either way
    assert whole[3]["text"] == kept[3]["text"] == "RT @gone: an original no one included"


def test_referenced_posts_are_rows_of_their_own_marked_with_the_reference(
        generated: Path) -> None:
    _, rows = sheet(ours(iter_posts(generated), referenced=True)["Posts"])
    marks = [(r["id"], r[REFERENCED]) for r in rows]
    assert marks[:2] == [("1500000000000000001", "retweeted"), ("1600000000000000001", None)]
    assert ("1500000000000000002", "quoted") in marks
    assert ("1500000000000000003", "replied_to") in marks
    assert "1500000000000000099" not in {i for i, _ in marks}  # named, not held: no row
    assert len(rows) == 5 + 3 + 2  # posts, page 1's references, page 2's


def test_spreadsheet_id_shares_and_r9_see_the_same_post_author_and_retweet(
        tmp_path: Path) -> None:
    """One reading of includes for every exit: the light reader (ID shares, previews, R9) and
    the full one (the exports) agree on each post's author and retweeted original, and the
    spreadsheet's cells say the same, flattened file or not."""
    for name in CASES:
        path = inputs(tmp_path, name)
        pages = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]
        flat = write_lines(tmp_path / f"flat-{name}", [
            t for page in copy.deepcopy(pages) for t in flatten(page) if "data" in page])
        for source in (path, flat):
            full = [light_of(p) for p in iter_posts(source)]
            assert list(light_records(source)) == full
            _, rows = sheet(ours(iter_posts(source), whole=False)["Posts"])
            assert [(r["id"], r["author_id"], r["referenced_tweets.retweeted.id"],
                     r["retweeted_user_id"]) for r in rows] == full
