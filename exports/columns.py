r"""A post (or user) as one flat row of twarc-csv columns, for the spreadsheet and PDF writers.

The columns are twarc-csv 0.7's ``DEFAULT_TWEET_COLUMNS`` / ``DEFAULT_USER_COLUMNS``, in its
order and under its names, plus ``url`` (the post's address on X) at the end of a post row. The
posts are those `gatekeeper.domain.formats` yields — a page's ``includes`` already resolved into
each post as twarc2's ``flatten`` does — and every value is what twarc-csv's ``DataFrameConverter``
makes of the same post, with these deliberate differences (the only ones; tests/test_twarc_csv.py
checks every shared cell against twarc-csv after exactly these):

- text keeps its real newlines and carriage returns (twarc-csv writes ``\n`` as the two
  characters ``\`` ``n`` and drops ``\r``);
- times (``created_at``, ``author.created_at``, ``edit_controls.editable_until``,
  ``attachments.poll.end_datetime``, ``__twarc.retrieved_at``) are naive UTC ``datetime`` s, a
  real date cell (a time X wrote in a form that cannot be read stays the ``str`` it was);
- counts are ``int`` (twarc-csv's pandas writes ``12.0`` once a column of a batch has a gap);
  flags are ``bool``;
- lists are compact JSON with every character as itself (twarc-csv's ``json.dumps`` escapes
  non-ASCII as ``\uXXXX`` and puts a space after ``,`` and ``:``): the same JSON value;
- IDs (``id``, ``*_id``, ``*.id``) are ``str``, whatever X wrote: spreadsheets lose digits
  past 15;
- the writers then make cells safe: a string is never a formula, characters XML cannot hold are
  replaced visibly, text longer than a cell is cut with a marker (`exports.xlsx`).

`whole` is twarc-csv's ``merge_retweets`` (a retweet carries its original's text, entities,
attachments, context annotations and metrics, with its own id, author and time) and
`referenced_rows` its ``inline_referenced_tweets``; the export applies them, so the PDF and the
spreadsheet show the same rows. A field the post does not have is ``None``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

COLUMNS: list[str] = [
    "id", "conversation_id",
    "referenced_tweets.replied_to.id", "referenced_tweets.retweeted.id",
    "referenced_tweets.quoted.id",
    "author_id", "in_reply_to_user_id", "in_reply_to_username",
    "retweeted_user_id", "retweeted_username", "quoted_user_id", "quoted_username",
    "created_at", "text", "lang", "source",
    "public_metrics.impression_count", "public_metrics.reply_count",
    "public_metrics.retweet_count", "public_metrics.quote_count", "public_metrics.like_count",
    "public_metrics.bookmark_count",
    "reply_settings", "edit_history_tweet_ids",
    "edit_controls.edits_remaining", "edit_controls.editable_until",
    "edit_controls.is_edit_eligible",
    "possibly_sensitive",
    "withheld.scope", "withheld.copyright", "withheld.country_codes",
    "entities.annotations", "entities.cashtags", "entities.hashtags", "entities.mentions",
    "entities.urls",
    "context_annotations",
    "attachments.media", "attachments.media_keys",
    "attachments.poll.duration_minutes", "attachments.poll.end_datetime", "attachments.poll.id",
    "attachments.poll.options", "attachments.poll.voting_status", "attachments.poll_ids",
    "author.id", "author.created_at", "author.username", "author.name", "author.description",
    "author.entities.description.cashtags", "author.entities.description.hashtags",
    "author.entities.description.mentions", "author.entities.description.urls",
    "author.entities.url.urls",
    "author.url", "author.location", "author.pinned_tweet_id", "author.profile_image_url",
    "author.protected",
    "author.public_metrics.followers_count", "author.public_metrics.following_count",
    "author.public_metrics.listed_count", "author.public_metrics.tweet_count",
    "author.verified", "author.verified_type",
    "author.withheld.scope", "author.withheld.copyright", "author.withheld.country_codes",
    "geo.coordinates.coordinates", "geo.coordinates.type", "geo.country", "geo.country_code",
    "geo.full_name", "geo.geo.bbox", "geo.geo.type", "geo.id", "geo.name", "geo.place_id",
    "geo.place_type",
    "matching_rules",
    "__twarc.retrieved_at", "__twarc.url", "__twarc.version",
    "url",
]

USER_COLUMNS: list[str] = [
    "id", "created_at", "username", "name", "description",
    "entities.description.cashtags", "entities.description.hashtags",
    "entities.description.mentions", "entities.description.urls", "entities.url.urls",
    "location", "pinned_tweet_id", "profile_image_url", "protected",
    "public_metrics.followers_count", "public_metrics.following_count",
    "public_metrics.listed_count", "public_metrics.tweet_count",
    "url", "verified", "verified_type",
    "withheld.scope", "withheld.copyright", "withheld.country_codes",
    "__twarc.retrieved_at", "__twarc.url", "__twarc.version",
]

# With referenced posts as rows of their own, this column follows ``url``: the kind of
# reference (``quoted``, ``replied_to``, ``retweeted``) on a referenced post's row, empty on the
# file's own posts. A referenced row carries the key below.
REFERENCED = "referenced"
REFERENCED_KEY = "__referenced"

# What a column holds, for writers that size or align columns by kind.
TIME_COLUMNS = frozenset({"created_at", "author.created_at", "edit_controls.editable_until",
                          "attachments.poll.end_datetime", "__twarc.retrieved_at"})
TEXT_COLUMNS = frozenset({"text", "author.description", "description"})

_EMPTY: dict[str, Any] = {}
# What twarc-csv's merge_retweets takes from the original into a retweet's row.
MERGED = ("text", "entities", "attachments", "context_annotations", "public_metrics")


def _id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _json(value: Any) -> str | None:
    """A list as JSON text (an empty list is ``[]``, as twarc-csv writes it); None if absent."""
    if value is None:
        return None
    try:
        return orjson.dumps(value).decode()
    except TypeError:  # what orjson cannot encode (an int past 64 bits, an object) as text
        return json.dumps(value, ensure_ascii=False, default=str)


def time_of(value: Any) -> datetime | str | None:
    """X's ``created_at`` as a naive UTC datetime; text that is not a time stays as it was."""
    if not isinstance(value, str) or not value:
        return None if value is None or value == "" else str(value)
    try:  # X's own form ends in Z: UTC, parsed naive
        dt = datetime.fromisoformat(value[:-1] if value[-1] == "Z" else value)
    except ValueError:
        return value
    return dt if dt.tzinfo is None else dt.astimezone(UTC).replace(tzinfo=None)


def _dict(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, dict) else _EMPTY


def _tags(items: Any, key: str, prefix: str) -> str | None:
    if not isinstance(items, list):
        return None
    return _json([prefix + str(e.get(key, "")) for e in items if isinstance(e, dict)])


def _urls(items: Any) -> str | None:
    if not isinstance(items, list):
        return None
    # twarc-csv: the media's display URL, otherwise where the link goes
    return _json([str(u.get("display_url") if "media_key" in u else
                      u.get("expanded_url") or u.get("url") or "")
                  for u in items if isinstance(u, dict)])


def _entities(ent: Mapping[str, Any]) -> list[Any]:
    """cashtags, hashtags, mentions, urls as twarc-csv's ``_process_entities`` writes them."""
    return [_tags(ent.get("cashtags"), "tag", "$"), _tags(ent.get("hashtags"), "tag", "#"),
            _tags(ent.get("mentions"), "username", "@"), _urls(ent.get("urls"))]


def _profile(user: Mapping[str, Any], users_sheet: bool) -> tuple[Any, Any, list[Any]]:
    """(url, entities.url.urls, entities.description.*) of a user as twarc-csv writes them:
    the profile's URL is the last link of ``entities.url`` expanded, not its t.co form."""
    ent = _dict(user.get("entities"))
    url, links = user.get("url") or None, None
    urls = _dict(ent.get("url")).get("urls")
    if "url" in ent and isinstance(urls, list):
        if users_sheet:  # a user row: URLs as in a post's entities (media display URLs too)
            links = _urls(urls)
            shown = orjson.loads(links) if links else []
        else:
            shown = [str(u.get("expanded_url") or u.get("url") or "") for u in urls
                     if isinstance(u, dict)]
            links = _json(shown)
        if shown:
            url = shown[-1] or None
    desc = _entities(_dict(ent.get("description"))) if ent else [None] * 4
    return url, links, desc


def post_url(post_id: Any, username: Any) -> str:
    """The post's address on X (the web path when the author's username is not known); the
    spreadsheet's ``url`` column and the PDF's link."""
    if username:
        return f"https://x.com/{username}/status/{post_id}"
    return f"https://x.com/i/web/status/{post_id}"


def _refs(post: Mapping[str, Any]) -> dict[str, list[Mapping[str, Any]]]:
    out: dict[str, list[Mapping[str, Any]]] = {}
    refs = post.get("referenced_tweets")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict):
            out.setdefault(str(ref.get("type")), []).append(ref)
    return out


def whole(post: dict[str, Any]) -> dict[str, Any]:
    """A retweet as twarc-csv's ``merge_retweets`` writes it: the original's text, entities,
    attachments, context annotations and metrics (when the file has the original: flattened,
    or in the page's ``includes.tweets``), with the retweet's own id, author and time. Any
    other post is returned as it is; `post` is never changed."""
    retweeted = _refs(post).get("retweeted")
    if not retweeted:
        return post
    original = retweeted[-1]
    taken = {k: original[k] for k in MERGED if k in original}
    return {**post, **taken} if taken else post


def referenced_rows(post: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The posts `post` references (quoted, replied to, retweeted) that the file holds, as rows
    of their own (twarc-csv's ``--inline-referenced-tweets``): each with the referring post's
    ``__twarc`` and, under REFERENCED_KEY, the kind of reference. A reference the file only
    names (deleted, protected, not expanded) has no row."""
    rows = []
    refs = post.get("referenced_tweets")
    for ref in refs if isinstance(refs, list) else ():
        if isinstance(ref, dict) and "text" in ref and ref.get("id") is not None:
            item = {k: v for k, v in ref.items() if k != "type"}
            item["__twarc"] = post.get("__twarc")
            item[REFERENCED_KEY] = ref.get("type")
            rows.append(item)
    return rows


def expand(post: dict[str, Any], *, whole_retweets: bool = True,
           referenced: bool = False) -> list[dict[str, Any]]:
    """The rows one post gives, in twarc-csv's order: the posts it references first (with
    `referenced`), then the post itself; retweets whole unless `whole_retweets` is False."""
    rows = referenced_rows(post) if referenced else []
    rows.append(post)
    return [whole(r) for r in rows] if whole_retweets else rows


def row(post: Mapping[str, Any], referenced: bool = False) -> list[Any]:
    """The post's values, one per name in COLUMNS (and REFERENCED, when `referenced`)."""
    g = post.get
    author = _dict(g("author"))
    ag = author.get
    am = _dict(ag("public_metrics"))
    aw = _dict(ag("withheld"))
    pm = _dict(g("public_metrics"))
    ent = _dict(g("entities"))
    edit = _dict(g("edit_controls"))
    withheld = _dict(g("withheld"))
    att = _dict(g("attachments"))
    poll = _dict(att.get("poll"))
    geo = _dict(g("geo"))
    coords = _dict(geo.get("coordinates"))
    place_geo = _dict(geo.get("geo"))
    twarc = _dict(g("__twarc"))
    refs = _refs(post)

    # twarc-csv: the first reference of a kind gives its ID, the last its author
    def ref_id(kind: str) -> str | None:
        return _id(refs[kind][0].get("id")) if kind in refs else None

    def by(kind: str) -> tuple[str | None, Any]:
        last = refs[kind][-1] if kind in refs else _EMPTY
        name = _dict(last.get("author")).get("username")
        if kind == "replied_to":
            return None, name
        user = last.get("author_id")
        return _id(user), name if user is not None else None

    _, reply_name = by("replied_to")
    rt_user, rt_name = by("retweeted")
    quoted_user, quoted_name = by("quoted")
    author_url, author_links, author_desc = _profile(author, False)
    post_id = _id(g("id"))
    username = ag("username")
    values = [
        post_id, _id(g("conversation_id")),
        ref_id("replied_to"), ref_id("retweeted"), ref_id("quoted"),
        _id(g("author_id")), _id(g("in_reply_to_user_id")), reply_name,
        rt_user, rt_name, quoted_user, quoted_name,
        time_of(g("created_at")), g("text"), g("lang"), g("source"),
        pm.get("impression_count"), pm.get("reply_count"), pm.get("retweet_count"),
        pm.get("quote_count"), pm.get("like_count"), pm.get("bookmark_count"),
        g("reply_settings"), _json([str(i) for i in ids])
        if isinstance(ids := g("edit_history_tweet_ids"), list) else None,
        edit.get("edits_remaining"), time_of(edit.get("editable_until")),
        edit.get("is_edit_eligible"),
        g("possibly_sensitive"),
        withheld.get("scope"), withheld.get("copyright"), _json(withheld.get("country_codes")),
        _json(ent.get("annotations")), *_entities(ent),
        _json(g("context_annotations")),
        _json(att.get("media")), _json(att.get("media_keys")),
        poll.get("duration_minutes"), time_of(poll.get("end_datetime")), _id(poll.get("id")),
        _json(poll.get("options")), poll.get("voting_status"), _json(att.get("poll_ids")),
        _id(ag("id")), time_of(ag("created_at")), username, ag("name"),
        ag("description") or None, *author_desc, author_links,
        author_url, ag("location") or None, _id(ag("pinned_tweet_id")),
        ag("profile_image_url"), ag("protected"),
        am.get("followers_count"), am.get("following_count"), am.get("listed_count"),
        am.get("tweet_count"), ag("verified"), ag("verified_type"),
        aw.get("scope"), aw.get("copyright"), _json(aw.get("country_codes")),
        _json(coords.get("coordinates")), coords.get("type"), geo.get("country"),
        geo.get("country_code"), geo.get("full_name"), _json(place_geo.get("bbox")),
        place_geo.get("type"), _id(geo.get("id")), geo.get("name"), _id(geo.get("place_id")),
        geo.get("place_type"),
        _json(g("matching_rules")),
        time_of(twarc.get("retrieved_at")), twarc.get("url"), twarc.get("version"),
        post_url(post_id, username),
    ]
    if referenced:
        values.append(g(REFERENCED_KEY))
    return values


def user_row(user: Mapping[str, Any]) -> list[Any]:
    """The user's values, one per name in USER_COLUMNS."""
    g = user.get
    pm = _dict(g("public_metrics"))
    withheld = _dict(g("withheld"))
    twarc = _dict(g("__twarc"))
    url, links, desc = _profile(user, True)
    return [
        _id(g("id")), time_of(g("created_at")), g("username"), g("name"),
        g("description") or None, *desc, links,
        g("location") or None, _id(g("pinned_tweet_id")), g("profile_image_url"), g("protected"),
        pm.get("followers_count"), pm.get("following_count"), pm.get("listed_count"),
        pm.get("tweet_count"),
        url, g("verified"), g("verified_type"),
        withheld.get("scope"), withheld.get("copyright"), _json(withheld.get("country_codes")),
        time_of(twarc.get("retrieved_at")), twarc.get("url"), twarc.get("version"),
    ]


# --- the "About this export" block (R7, R8, R9), the same in every hydrated export ------------

NOTICE: list[tuple[str, str]] = [
    ("notice", "This file holds X content that {recipient} received under X's Developer Policy, "
               "by a non-automated download (R5)."),
    ("R7", "It must not be made publicly available: no attachment to a public post, no public "
           "repository, website or shared drive."),
    ("R8", "The recipient has agreed to X's Terms of Service, Privacy Policy, Developer "
           "Agreement and Developer Policy."),
    ("R9", "Content deleted, protected, suspended or withheld on X must be deleted from this "
           "file and every copy of it within 24 hours of a request by X or by its author."),
]


def _is_time(key: str) -> bool:
    key = key.lower()
    return "time" in key or key.endswith("_at") or key in ("date", "when")


# The About block's labels, in words (a key not named here is written with its underscores as
# spaces, capitalised); the filters (a mapping) in words too.
LABELS = {"recipient": "Recipient", "entity": "Recipient's organisation", "time": "Exported (UTC)",
          "exported_at": "Exported (UTC)", "time (UTC)": "Exported (UTC)", "dataset": "Dataset",
          "filters": "Filters", "posts": "Posts", "users": "Users", "export_id": "Export ID",
          "notice": "Notice", "columns": "Columns"}
FILTER_WORDS = {"since": "posted at or after", "until": "posted before", "lang": "language",
                "contains": "text contains", "author": "author"}


def label(key: str) -> str:
    """The About block's label of `key`, in words."""
    return LABELS.get(key) or key.replace("_", " ").capitalize()


def filters_in_words(value: Any) -> Any:
    """Filters as a reader says them: "language ko; posted before 2025-01-01T00:00:00Z"."""
    if isinstance(value, Mapping):
        return "; ".join(f"{FILTER_WORDS.get(str(k), str(k))} {v}" for k, v in value.items()
                         ) or "none: every post of the dataset"
    return "none: every post of the dataset" if value in ("none", "", None) else value


def about_rows(about: Mapping[str, Any], counts: Mapping[str, int]) -> list[tuple[str, Any]]:
    """(label, value) lines of the About block: what the caller recorded, the counts, the notice,
    each labelled in words (`label`), each fact once.

    ``about`` is written in its own order (recipient, time, dataset, filters, …); without a time
    (a key with "time" in it or ending in "_at") the moment of writing is recorded, in UTC.
    `counts` (rows written, by sheet) replace the caller's entries of the same name or follow
    them. A ``notice`` in ``about`` is written instead of NOTICE.
    """
    lines: list[tuple[str, Any]] = [
        (label(str(k)), counts.get(str(k), filters_in_words(v) if k == "filters" else v))
        for k, v in about.items() if k != "notice"]
    if not any(_is_time(str(k)) for k in about):
        lines.append((label("time (UTC)"), datetime.now(UTC).replace(tzinfo=None, microsecond=0)))
    lines += [(label(name), n) for name, n in counts.items() if name not in about]
    lines.append((label("columns"), "named as twarc-csv names them; IDs are text; times are "
                                     "UTC; lists are JSON; url is the post on X"))
    if about.get("notice"):
        return [*lines, (label("notice"), about["notice"])]
    recipient = about.get("recipient") or "the recipient"
    return lines + [(label(name), text.format(recipient=recipient)) for name, text in NOTICE]
