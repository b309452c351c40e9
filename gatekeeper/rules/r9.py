"""R9, decided here and only here: what a deletion-list record means, and what may leave.

Content deleted, protected, suspended or withheld on X never leaves again once a list naming it
is ingested. What a record of X's batch-compliance jobs (or compliance streams) asks for is
read from its ``action`` and ``reason``:

- hide: ``delete``, ``deactivate``, ``suspend``, ``protect``, ``withhold``, ``drop`` (and
  their past forms, and the streams' ``user_…``/``status_…`` names) — and a plain ID line;
- scrub geo: ``scrub_geo`` — the post stays, its location leaves no export;
- reversal: ``undelete``, ``reactivate``, ``unsuspend``, ``unprotect``, ``unwithhold``,
  ``undrop`` — recorded for a compliance officer, lifting nothing by itself (lifting one ID
  is a person's decision, audited: `gatekeeper deletions lift`);
- anything else is refused by name, and the whole list with it.

`Deleted` then decides for each post, whichever exit it is headed for (ID share, hydrated
export, the ingest report): hidden when the post or its author is listed, and — since a retweet
carries its original's content — when the retweeted post or that post's author is listed.
Quotes and replies carry their own text: only their own ID and author count.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any


# What R9 reads of a post, whatever format it came in (the readers in `formats` yield it).
def author_id_of(post: dict[str, Any]) -> Any:
    return post.get("author_id") or (post.get("author") or {}).get("id")


# What ID-only work (and R9) reads of a post: (id, author ID, retweeted original's ID, the
# original's author ID); IDs are decimal strings, unknown ones None.
Light = tuple[str, str | None, str | None, str | None]


def as_id(value: Any) -> str | None:
    """An ID as a decimal string (X writes some as numbers), None when unknown."""
    return value if value is None or type(value) is str else str(value)


def retweet_of(post: dict[str, Any]) -> tuple[str | None, str | None] | None:
    """(original's ID, its author's ID) when the post is a retweet, else None."""
    refs = post.get("referenced_tweets")
    if not isinstance(refs, list):
        return None
    for ref in refs:
        if isinstance(ref, dict) and ref.get("type") == "retweeted":
            author = ref.get("author")
            author_id = ref.get("author_id") or (author.get("id") if isinstance(author, dict)
                                                 else None)
            return as_id(ref.get("id")), as_id(author_id)
    return None


def light_of(post: dict[str, Any]) -> Light:
    """The `Light` record of a post as the readers yield it."""
    rt, rt_author = retweet_of(post) or (None, None)
    return str(post["id"]), as_id(author_id_of(post)), rt, rt_author


HIDE, SCRUB, REVERSE = "hide", "scrub_geo", "reversal"
_WORDS = {
    HIDE: ("delete", "deleted", "deactivate", "deactivated", "suspend", "suspended", "protect",
           "protected", "withhold", "withheld", "drop", "dropped"),
    SCRUB: ("scrub_geo",),
    REVERSE: ("undelete", "undeleted", "reactivate", "reactivated", "unsuspend", "unsuspended",
              "unprotect", "unprotected", "unwithhold", "unwithheld", "undrop", "undropped"),
}
MEANING = {word: meaning for meaning, words in _WORDS.items() for word in words}
# X's compliance streams name events user_protect, status_withheld, …: the same words.
PREFIXES = ("user_", "status_", "tweet_", "post_")
KNOWN = ("hide: " + ", ".join(_WORDS[HIDE][::2]) + "; scrub_geo; reversal (lifts nothing): "
         + ", ".join(_WORDS[REVERSE][::2]))
GEO_FIELDS = ("geo", "place", "coordinates")  # v2 "geo" (coordinates, place_id); v1.1's two


class UnknownAction(ValueError):
    """A record whose action (or, without one, reason) R9 does not know."""

    def __init__(self, field: str, value: Any) -> None:
        super().__init__(f"{field} {value!r} is not a compliance action R9 knows ({KNOWN})")
        self.field, self.value = field, value


def _meaning(value: Any) -> str | None:
    if not isinstance(value, str):
        return None
    word = value.strip().lower()
    if word in MEANING:
        return MEANING[word]
    for prefix in PREFIXES:
        if word.startswith(prefix) and word[len(prefix):] in MEANING:
            return MEANING[word[len(prefix):]]
    return None


def disposition(action: Any, reason: Any) -> str:
    """HIDE, SCRUB or REVERSE for one record; UnknownAction when the action is not known.

    X's batch jobs say ``"action": "delete"`` and tell why in ``reason``: a reason of
    ``scrub_geo`` under it scrubs rather than hides. Where action and reason disagree
    otherwise, the post is hidden (the conservative reading). A reason R9 does not know is
    left to the action; without an action it must be known.
    """
    if action is not None and action != "":
        meaning = _meaning(action)
        if meaning is None:
            raise UnknownAction("action", action)
        why = _meaning(reason)
        if meaning == HIDE and why == SCRUB:
            return SCRUB
        if meaning == SCRUB and why == HIDE:
            return HIDE
        return meaning
    if reason is not None and reason != "":
        meaning = _meaning(reason)
        if meaning is None:
            raise UnknownAction("reason", reason)
        return meaning
    return HIDE  # a bare ID: listed, so hidden


@dataclass(frozen=True)
class Deleted:
    """The deletion lists as of one version: IDs hidden, and IDs whose geo is scrubbed."""

    version: int
    posts: frozenset[int]
    users: frozenset[int]
    geo_posts: frozenset[int] = frozenset()
    geo_users: frozenset[int] = frozenset()

    @property
    def listed(self) -> bool:
        """Whether anything is hidden at all (else no post needs a look)."""
        return bool(self.posts or self.users)

    def hides_light(self, light: Light) -> bool:
        """Whether a post (its `Light` record) may not leave."""
        if not (self.posts or self.users):
            return False
        pid, author, rt, rt_author = light
        try:
            if int(pid) in self.posts or (rt is not None and int(rt) in self.posts):
                return True
            return bool(self.users) and (
                (author is not None and int(author) in self.users)
                or (rt_author is not None and int(rt_author) in self.users))
        except (TypeError, ValueError):
            return True  # a post we cannot identify cannot be shown to be allowed

    def hides(self, post: dict[str, Any]) -> bool:
        """Whether a post, as the readers in `gatekeeper.domain.formats` yield it, may not leave."""
        try:
            light = light_of(post)
        except (KeyError, TypeError, ValueError):
            return True
        return self.hides_light(light)

    def hides_user(self, user_id: Any) -> bool:
        """Whether a User ID (a share of authors, a Users sheet) may not leave."""
        try:
            return int(user_id) in self.users
        except (TypeError, ValueError):
            return True

    def scrubs(self, post: dict[str, Any]) -> tuple[str, ...]:
        """The geo fields of `post` that must not leave (scrub_geo of it, of its author, or
        of the post it retweets)."""
        present = tuple(f for f in GEO_FIELDS if f in post)
        if not present or not (self.geo_posts or self.geo_users):
            return ()
        pid, author, rt, rt_author = light_of(post)
        ids = {int(i) for i in (pid, rt) if i is not None}
        authors = {int(i) for i in (author, rt_author) if i is not None}
        if ids & self.geo_posts or authors & self.geo_users:
            return present
        return ()

    def cleaned(self, post: dict[str, Any]) -> dict[str, Any] | None:
        """The post as it may leave: None when hidden, else without its scrubbed geo."""
        if self.hides(post):
            return None
        scrub = self.scrubs(post)
        return {k: v for k, v in post.items() if k not in scrub} if scrub else post

    def without(self, kind: str, ids: frozenset[int]) -> Deleted:
        """These lists minus `ids` of `kind`: what was hidden before they were listed."""
        if kind == "posts":
            return replace(self, posts=self.posts - ids)
        return replace(self, users=self.users - ids)
