"""A twarc2 page's ``includes`` resolved into its posts once, for every reader of the page.

X API v2 pages carry what their posts reference apart from them, in ``includes``: the users,
the referenced posts, media, polls and places. twarc2 ``flatten`` moves them into each post;
twarc-csv does that before it writes a row. The readers in `gatekeeper.domain.formats` do the
same here, once per page, so the spreadsheet, the PDF, ID shares and R9 all see one post with
one author and one set of references, whether or not the file was flattened first.
"""

from __future__ import annotations

from typing import Any


def _by(items: Any, key: str) -> dict[str, Any]:
    if not isinstance(items, list):
        return {}
    return {str(x[key]): x for x in items if isinstance(x, dict) and key in x}


class Includes:
    """A page's ``includes`` (users, tweets, media, places, polls), resolved into its posts as
    twarc2's ``flatten`` does, so every reader of a post — the XLSX and PDF writers, ID shares,
    R9 — sees the same post, author and references whether or not the file was flattened:

    - ``author`` (and each referenced post's ``author``) from ``includes.users``;
    - ``referenced_tweets[i]`` merged with the referenced post from ``includes.tweets`` (its
      text, entities, metrics, ``author_id`` and ``author``): a retweet carries its original's
      content, and R9 reads the original's author here;
    - ``attachments.media`` (one object per media key, ``{}`` for one X did not include) and
      ``attachments.poll`` (the last of ``poll_ids``); ``geo`` merged with its place.
    Posts already flattened (twarc2 flatten output) keep what they carry.
    """

    def __init__(self, includes: Any, users: dict[str, Any]) -> None:
        """`users`: ``includes.users`` by ID, checked by the reader."""
        self.users = users
        inc = includes if isinstance(includes, dict) else {}
        self.media = _by(inc.get("media"), "media_key")
        self.polls = _by(inc.get("polls"), "id")
        self.places = _by(inc.get("places"), "id")
        self.tweets: dict[str, Any] = {}
        for key, tweet in _by(inc.get("tweets"), "id").items():
            tweet = dict(tweet)  # resolved apart from the file's own includes entry
            self._own(tweet)
            self.tweets[key] = tweet
        for tweet in self.tweets.values():  # their own references: by ID, one level
            refs = tweet.get("referenced_tweets")
            if isinstance(refs, list):
                tweet["referenced_tweets"] = [self._ref(r, self.tweets) for r in refs]

    def _own(self, post: dict[str, Any], author: bool = True) -> None:
        """Author, media, poll and place of one post (not its references)."""
        if author and "author" not in post and post.get("author_id") is not None:
            post["author"] = self.users.get(str(post["author_id"])) or {}
        att = post.get("attachments")
        if isinstance(att, dict) and (att.get("media_keys") or att.get("poll_ids")):
            att = post["attachments"] = dict(att)
            keys = att.get("media_keys")
            if isinstance(keys, list) and "media" not in att:
                att["media"] = [self.media.get(str(k)) or {} for k in keys]
            polls = att.get("poll_ids")
            if isinstance(polls, list) and polls and "poll" not in att:
                att["poll"] = self.polls.get(str(polls[-1])) or {}
        geo = post.get("geo")
        if isinstance(geo, dict) and geo.get("place_id") is not None:
            place = self.places.get(str(geo["place_id"]))
            if place:
                post["geo"] = {**geo, **place}

    def _ref(self, ref: Any, tweets: dict[str, Any]) -> Any:
        if not isinstance(ref, dict):
            return ref
        found = tweets.get(str(ref.get("id")))
        if found is None or "text" in ref:  # unknown, or flattened already
            return ref
        return {**ref, **found, "type": ref.get("type")}

    def resolve(self, post: dict[str, Any]) -> None:
        """Resolve `post` in place (its author is `_post`'s to check and set)."""
        self._own(post, author=False)
        refs = post.get("referenced_tweets")
        if isinstance(refs, list) and self.tweets:
            post["referenced_tweets"] = [self._ref(r, self.tweets) for r in refs]
