"""A post (or user) as one flat row of twarc-csv columns, shared by the spreadsheet and PDF writers.

The columns are a subset of twarc-csv's ``DEFAULT_TWEET_COLUMNS`` / ``DEFAULT_USER_COLUMNS``, in
its order and under its names, plus ``url``: the post's address on X. Values are Python objects
that say what kind of cell they want, so every writer types them the same way:

- IDs (``id``, ``*_id``, ``*.id``) are ``str``: spreadsheets lose digits past 15;
- counts are ``int``; flags (``possibly_sensitive``, ``*.verified``, ``*.protected``) ``bool``;
- times (``created_at``, ``author.created_at``) are naive UTC ``datetime`` s (a time X wrote in a
  form that cannot be read stays the ``str`` it was);
- lists are JSON text, as twarc-csv writes them: hashtags ``["#tag"]``, mentions ``["@name"]``,
  URLs expanded, ID lists as strings;
- text is the post's own text, unchanged (twarc-csv's ``merge_retweets`` is not applied);
- a field the post does not have is ``None``.

Writers decide what their medium cannot hold (XML-illegal characters, cell length).
"""

from __future__ import annotations

import ast
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
    "reply_settings", "edit_history_tweet_ids", "possibly_sensitive",
    "withheld.copyright", "withheld.country_codes",
    "entities.cashtags", "entities.hashtags", "entities.mentions", "entities.urls",
    "attachments.media_keys",
    "author.id", "author.created_at", "author.username", "author.name", "author.description",
    "author.url", "author.location", "author.pinned_tweet_id", "author.profile_image_url",
    "author.protected",
    "author.public_metrics.followers_count", "author.public_metrics.following_count",
    "author.public_metrics.listed_count", "author.public_metrics.tweet_count",
    "author.verified",
    "geo.coordinates.coordinates", "geo.place_id",
    "url",
]

USER_COLUMNS: list[str] = [
    "id", "created_at", "username", "name", "description", "location", "pinned_tweet_id",
    "profile_image_url", "protected",
    "public_metrics.followers_count", "public_metrics.following_count",
    "public_metrics.listed_count", "public_metrics.tweet_count",
    "url", "verified", "withheld.country_codes",
]

# What a column holds, for writers that size or align columns by kind.
TIME_COLUMNS = frozenset({"created_at", "author.created_at"})
TEXT_COLUMNS = frozenset({"text", "author.description", "description"})

_EMPTY: dict[str, Any] = {}


def _id(value: Any) -> str | None:
    return None if value is None or value == "" else str(value)


def _json(value: Any) -> str | None:
    if not value:
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


def _tags(items: Any, key: str, prefix: str) -> str | None:
    if not items:
        return None
    return _json([prefix + str(e.get(key, "")) for e in items if isinstance(e, dict)])


def _urls(items: Any) -> str | None:
    if not items:
        return None
    # twarc-csv: the media's display URL, otherwise where the link goes
    return _json([str(u.get("display_url") if "media_key" in u else
                      u.get("expanded_url") or u.get("url") or "")
                  for u in items if isinstance(u, dict)])


def _profile_url(user: dict[str, Any]) -> Any:
    """twarc-csv's author.url: the expanded link of the profile, not its t.co form."""
    urls = ((user.get("entities") or _EMPTY).get("url") or _EMPTY).get("urls")
    if urls and isinstance(urls[-1], dict) and urls[-1].get("expanded_url"):
        return urls[-1]["expanded_url"]
    return user.get("url") or None


def post_url(post_id: Any, username: Any) -> str:
    """The post's address on X (the web path when the author's username is not known); the
    spreadsheet's ``url`` column and the PDF's link."""
    if username:
        return f"https://x.com/{username}/status/{post_id}"
    return f"https://x.com/i/web/status/{post_id}"


def row(post: dict[str, Any]) -> list[Any]:
    """The post's values, one per name in COLUMNS."""
    g = post.get
    author = g("author") or _EMPTY
    ag = author.get
    am = ag("public_metrics") or _EMPTY
    pm = g("public_metrics") or _EMPTY
    ent = g("entities") or _EMPTY
    mentions = ent.get("mentions") or ()
    withheld = g("withheld") or _EMPTY
    geo = g("geo") or _EMPTY
    text = g("text")

    replied = retweeted = quoted = _EMPTY
    for ref in g("referenced_tweets") or ():
        kind = ref.get("type") if isinstance(ref, dict) else None
        if kind == "replied_to":
            replied = ref
        elif kind == "retweeted":
            retweeted = ref
        elif kind == "quoted":
            quoted = ref
    # A reference flattened by twarc2 carries its post and author; otherwise the names come
    # from the mentions X puts in the text: the replied-to user, and a retweet's "RT @name:".
    reply_user = _id(g("in_reply_to_user_id") or replied.get("author_id"))
    reply_name = (replied.get("author") or _EMPTY).get("username")
    if reply_user and not reply_name:
        reply_name = next((m.get("username") for m in mentions
                           if isinstance(m, dict) and str(m.get("id")) == reply_user), None)
    rt_user = retweeted.get("author_id")
    rt_name = (retweeted.get("author") or _EMPTY).get("username")
    if retweeted and rt_user is None and isinstance(text, str) and text.startswith("RT @"):
        first = mentions[0] if mentions else _EMPTY
        if isinstance(first, dict) and first.get("start") == 3:
            rt_user, rt_name = first.get("id"), first.get("username")

    post_id = _id(g("id"))
    username = ag("username")
    withheld_codes = withheld.get("country_codes")
    coordinates = (geo.get("coordinates") or _EMPTY).get("coordinates")
    return [
        post_id, _id(g("conversation_id")),
        _id(replied.get("id")), _id(retweeted.get("id")), _id(quoted.get("id")),
        _id(g("author_id") or ag("id")), reply_user, reply_name,
        _id(rt_user), rt_name,
        _id(quoted.get("author_id")), (quoted.get("author") or _EMPTY).get("username"),
        time_of(g("created_at")), text, g("lang"), g("source"),
        pm.get("impression_count"), pm.get("reply_count"), pm.get("retweet_count"),
        pm.get("quote_count"), pm.get("like_count"),
        g("reply_settings"), _json([str(i) for i in g("edit_history_tweet_ids") or ()]),
        g("possibly_sensitive"),
        withheld.get("copyright"), _json(withheld_codes),
        _tags(ent.get("cashtags"), "tag", "$"), _tags(ent.get("hashtags"), "tag", "#"),
        _tags(mentions, "username", "@"), _urls(ent.get("urls")),
        _json((g("attachments") or _EMPTY).get("media_keys")),
        _id(ag("id")), time_of(ag("created_at")), username, ag("name"),
        ag("description") or None, _profile_url(author), ag("location") or None,
        _id(ag("pinned_tweet_id")), ag("profile_image_url"), ag("protected"),
        am.get("followers_count"), am.get("following_count"), am.get("listed_count"),
        am.get("tweet_count"), ag("verified"),
        _json(coordinates), _id(geo.get("place_id")),
        post_url(post_id, username),
    ]


def user_row(user: dict[str, Any]) -> list[Any]:
    """The user's values, one per name in USER_COLUMNS."""
    g = user.get
    pm = g("public_metrics") or _EMPTY
    return [
        _id(g("id")), time_of(g("created_at")), g("username"), g("name"),
        g("description") or None, g("location") or None, _id(g("pinned_tweet_id")),
        g("profile_image_url"), g("protected"),
        pm.get("followers_count"), pm.get("following_count"), pm.get("listed_count"),
        pm.get("tweet_count"),
        _profile_url(user), g("verified"), _json((g("withheld") or _EMPTY).get("country_codes")),
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
# spaces, capitalised); the filters in words too, whether given as a mapping or as its repr.
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
    if isinstance(value, str) and value.startswith("{") and value.endswith("}"):
        try:
            value = ast.literal_eval(value)  # the repr of a dict of plain values, never code
        except (ValueError, SyntaxError):
            return value
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
