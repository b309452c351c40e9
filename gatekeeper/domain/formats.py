"""Reading X data files: the formats analysts already have, detected per line, streamed.

- X API v2 response pages as twarc2 writes them, ``{"data": [...], "includes": {...}, ...}``
  (``data`` may also be one object). Each post gets its author from ``includes.users`` as
  ``post["author"]``. ``includes.tweets`` are referenced posts, not posts of the file.
  A user-lookup page (``data`` holds User objects) holds no posts: `iter_posts` skips it and
  `iter_users` reads it; pages with no ``data`` (zero results, errors only) are skipped too.
- single v2 post objects (``id``, ``text``, maybe ``author``), e.g. twarc2 ``flatten`` output;
- v1.1 tweet objects (``id_str``, ``full_text``/``text``, ``user{}``), converted to the v2 shape.

Every post yielded has a decimal string ``id``, a ``text``, ``created_at`` as X writes it
(``2021-05-18T19:24:56.000Z``) when the line had one, and ``author`` (a User dict or None). A
page's ``includes`` are resolved into its posts once (`Includes`), as twarc2's flatten writes
them: each ``referenced_tweets`` entry carries the referenced post when the page has it (a
retweet's original: its text, metrics and ``author_id`` — a retweet carries its original's
content, so R9 needs both; v1.1 ``retweeted_status.user`` gives the author too), media, poll
and place are attached, and the page's ``__twarc`` and ``matching_rules`` go on each post.
Files are read in large chunks, gzip detected by its magic bytes, so memory stays flat; a line
longer than ``datasets.max_line_mb`` is refused (`gatekeeper.domain.lines`). Every Post and
User ID is checked to be what ID files hold (`is_id`), since shares, R9 and the exports rely on it.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Generator, Iterator
from datetime import UTC, date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import orjson

from gatekeeper.domain import lines
from gatekeeper.domain.includes import Includes
from gatekeeper.domain.lines import MAX_LINE_BYTES
from gatekeeper.rules.errors import BadInput

_ID = re.compile(rb"[1-9][0-9]{0,18}")
_ID_TEXT = re.compile(r"[1-9][0-9]{0,18}")  # [0-9]: ASCII digits only, unlike \d
_MAX_ID_TEXT = str(2**63 - 1)  # 19-digit strings compare as their numbers do


def is_id(token: bytes) -> bool:
    """Whether `token` is a Post/User ID as X writes them: a positive decimal below 2^63."""
    return _ID.fullmatch(token) is not None and int(token) < 2**63


X_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")  # sorts as it compares
MONTHS = {m: i for i, m in enumerate(
    ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"), 1)}

Record = tuple[bool, dict[str, Any]]  # (is a post, the object): users come out as False


def _bad(name: str, line: int, what: str) -> BadInput:
    return BadInput(f"{name}, line {line}: {what}", file=name, line=line)


def x_time(dt: datetime) -> str:
    """A time as X writes created_at, rounded up to the millisecond (bounds never widen)."""
    dt = dt.astimezone(UTC)
    if dt.microsecond % 1000:
        dt += timedelta(microseconds=1000 - dt.microsecond % 1000)
    return dt.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def parse_time(value: Any) -> datetime | None:
    """ISO 8601 (date only, naive = UTC) or v1.1's "Wed Oct 10 20:19:24 +0000 2018"."""
    if isinstance(value, datetime):
        dt = value
    elif isinstance(value, date):
        dt = datetime(value.year, value.month, value.day)
    elif isinstance(value, str):
        try:
            dt = datetime.fromisoformat(value.strip())
        except ValueError:
            # Parsed by hand: strptime's %a/%b follow the process locale.
            try:
                _, mon, day, hms, off, year = value.split()
                h, m, s = map(int, hms.split(":"))
                sign = -1 if off[0] == "-" else 1
                tz = timezone(sign * timedelta(hours=int(off[1:3]), minutes=int(off[3:5])))
                dt = datetime(int(year), MONTHS[mon], int(day), h, m, s, tzinfo=tz)
            except (ValueError, KeyError, IndexError):
                return None
    else:
        return None
    dt = dt if dt.tzinfo is not None else dt.replace(tzinfo=UTC)
    try:
        x_time(dt)  # every time taken can be written in UTC as X writes it...
    except OverflowError:  # ...but not 9999-12-31T23:59:59.9999 or 0001-01-01T00:00+01:00
        return None
    return dt


def load(line: bytes, name: str, number: int) -> Any:
    try:
        return orjson.loads(line)  # the fastest full parse (msgspec's is ~10% slower here)
    except orjson.JSONDecodeError:
        pass
    # orjson refuses some JSON the stdlib takes (lone surrogates from cut emoji, NaN): take
    # it, with each lone surrogate replaced visibly by U+FFFD.
    try:
        text = json.dumps(json.loads(line), ensure_ascii=False)
    except ValueError as exc:
        raise _bad(name, number, f"not valid JSON ({exc})") from None
    except RecursionError:  # orjson stops at 1024 levels; the stdlib at the stack's end
        raise _bad(name, number, "not valid JSON (nested too deeply)") from None
    return json.loads(text.encode("utf-16", "surrogatepass").decode("utf-16", "replace"))


# --- the three formats --------------------------------------------------------------------------


def _id(value: Any, where: tuple[str, int], label: str, key: str) -> str:
    """`value` as the decimal ID string an ID file holds (a JSON number is taken as its digits).

    Exactly `is_id`: shares, R9 lookups and the exports' Users sheet all rely on it, so a
    dataset holding anything else ("007", "0", "bob") is refused at `dataset add`.
    """
    text = str(value) if type(value) is int else value
    if type(text) is str and _ID_TEXT.fullmatch(text) is not None and (
            len(text) < 19 or text <= _MAX_ID_TEXT):
        return text
    shown = value[:40] + "…" if isinstance(value, str) and len(value) > 40 else value
    field = f"{label.rstrip(': ')}.{key}" if label else key
    raise BadInput(
        f'{where[0]}, line {where[1]}: {label}"{key}" must be a decimal ID as X writes it '
        f"(1-19 digits, no leading zero, below 2^63), not {shown!r}",
        file=where[0], line=where[1], field=field,
        value=shown if isinstance(shown, str) else repr(shown)[:60])


def _decimal(obj: dict[str, Any], key: str, where: tuple[str, int], label: str) -> str:
    """Check `obj[key]` is an ID and store it as its decimal string."""
    obj[key] = _id(obj.get(key), where, label, key)
    return obj[key]


def _user(user: dict[str, Any], where: tuple[str, int], label: str) -> dict[str, Any]:
    _decimal(user, "id", where, label)
    return user


def _post(post: dict[str, Any], author: Any, where: tuple[str, int], label: str) -> dict:
    """A v2 post checked and normalised in place: decimal IDs, X's created_at, author."""
    _decimal(post, "id", where, label)
    author_id = None
    if post.get("author_id") is not None:
        author_id = _decimal(post, "author_id", where, label)
    if author is not None:
        if not isinstance(author, dict):
            raise _bad(*where, f'{label}"author" must be a User object')
        # The exports show this author while R9 checks author_id: they must be one user.
        embedded = author.get("id")
        if embedded != author_id or author_id is None:  # else checked as author_id
            author["id"] = embedded = _id(embedded, where, label, "author.id")
        if author_id is None:
            post["author_id"] = embedded  # R9 and the exports look for the author here
        elif embedded != author_id:
            raise _bad(*where, f'{label}"author.id" {embedded!r} is not the post\'s '
                               f'"author_id" {author_id!r}')
    if not isinstance(post.get("text"), str):
        raise _bad(*where, f'{label}"text" must be a string')
    created = post.get("created_at")
    if created is not None and not (isinstance(created, str) and X_TIME.fullmatch(created)):
        dt = parse_time(created)
        if dt is None:
            raise _bad(*where, f'{label}"created_at" {created!r} is not a date and time')
        post["created_at"] = x_time(dt)
    post["author"] = author
    return post


def _page(obj: dict[str, Any], where: tuple[str, int]) -> Iterator[Record]:
    data = obj.get("data")
    items = [] if data is None else [data] if isinstance(data, dict) else data
    includes = obj.get("includes") or {}
    users = (includes.get("users") or []) if isinstance(includes, dict) else None
    if not isinstance(items, list) or not isinstance(users, list):
        raise _bad(*where, '"data" must be a list or an object and "includes.users" a list')
    page: Includes | None = None
    stamp = {k: obj[k] for k in ("__twarc", "matching_rules") if k in obj}
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            raise _bad(*where, f"data[{i}] is not a JSON object")
        if "text" in item:
            if page is None:  # built once per page, and only for pages of posts
                by_id: dict[str, Any] = {}
                for j, u in enumerate(users):
                    if not isinstance(u, dict):
                        raise _bad(*where, f"includes.users[{j}] is not a JSON object")
                    by_id[_decimal(u, "id", where, f"includes.users[{j}]: ")] = u
                page = Includes(includes, by_id)
            author = page.users.get(str(item.get("author_id"))) or item.get("author")
            page.resolve(item)
            item.update(stamp)
            yield True, _post(item, author, where, f"data[{i}]: ")
        elif "username" in item and "id" in item:
            if "__twarc" in stamp:
                item["__twarc"] = stamp["__twarc"]
            yield False, _user(item, where, f"data[{i}]: ")
        else:
            raise _bad(*where, f'data[{i}] is neither a post (no "text") nor a user')


def _v1(t: dict[str, Any], where: tuple[str, int]) -> dict[str, Any]:
    """A v1.1 tweet in the v2 shape (what twarc-csv and the exports expect)."""
    user = t.get("user")
    text = t.get("full_text") or (t.get("extended_tweet") or {}).get("full_text") or t.get("text")
    if not isinstance(user, dict) or not isinstance(text, str):
        raise _bad(*where, "a v1.1 tweet needs full_text or text and a user object")
    when = parse_time(t.get("created_at"))
    uid, pid = ("id_str" if "id_str" in user else "id"), ("id_str" if "id_str" in t else "id")
    author = {
        "id": _id(user.get(uid), where, "", f"user.{uid}"), "username": user.get("screen_name"),
        "name": user.get("name"), "description": user.get("description"),
        "location": user.get("location"), "verified": user.get("verified"),
        "protected": user.get("protected"), "url": user.get("url"),
        "profile_image_url": user.get("profile_image_url_https"),
        "created_at": x_time(c) if (c := parse_time(user.get("created_at"))) else None,
    }
    counts = {"followers_count": "followers_count", "friends_count": "following_count",
              "statuses_count": "tweet_count", "listed_count": "listed_count"}
    if any(k in user for k in counts):
        author["public_metrics"] = {v: user[k] for k, v in counts.items() if k in user}
    post: dict[str, Any] = {"id": _id(t.get(pid), where, "", pid), "text": text,
                            "created_at": x_time(when) if when else t.get("created_at"),
                            "author_id": author["id"], "lang": t.get("lang")}
    metrics = {"retweet_count": "retweet_count", "reply_count": "reply_count",
               "favorite_count": "like_count", "quote_count": "quote_count"}
    if any(k in t for k in metrics):
        post["public_metrics"] = {v: t[k] for k, v in metrics.items() if k in t}
    refs = [{"type": kind, "id": ref} for kind, ref in (
        ("quoted", t.get("quoted_status_id_str")),
        ("replied_to", t.get("in_reply_to_status_id_str"))) if ref]
    original = t.get("retweeted_status")
    if isinstance(original, dict) and (rt := _v1_id(original)):
        by = original.get("user")
        ref = {"type": "retweeted", "id": rt}
        if isinstance(by, dict) and (by_id := _v1_id(by)):
            ref["author_id"] = by_id
        refs.insert(0, ref)
    if refs:
        post["referenced_tweets"] = refs
    if t.get("in_reply_to_user_id_str"):
        post["in_reply_to_user_id"] = t["in_reply_to_user_id_str"]
    return _post(post, {k: v for k, v in author.items() if v is not None}, where, "")


def _v1_id(obj: dict[str, Any]) -> str | None:
    """A v1.1 object's ID: ``id_str``, or ``id`` as a decimal string."""
    value = obj.get("id_str") or obj.get("id")
    return None if value is None or value == "" else str(value)


def records(obj: Any, where: tuple[str, int]) -> Iterator[Record]:
    """The posts and users one parsed line holds, whatever its format."""
    if not isinstance(obj, dict):
        raise _bad(*where, f"expected a JSON object, found {type(obj).__name__}")
    if "data" in obj or ("id" not in obj and ("meta" in obj or "errors" in obj)):
        yield from _page(obj, where)
    elif "id_str" in obj or ("user" in obj and ("full_text" in obj or "text" in obj)):
        yield True, _v1(obj, where)
    elif "text" in obj and "id" in obj:
        yield True, _post(obj, obj.get("author"), where, "")
    elif "username" in obj and "id" in obj:
        yield False, _user(obj, where, "")
    elif "action" in obj and "id" in obj:
        raise _bad(*where, "this is an X batch-compliance record, not a post "
                           "(deletion lists go to `gatekeeper deletions add`)")
    else:
        shown = ", ".join(sorted(obj)[:8]) or "none"
        raise _bad(*where, "neither an X API v2 response page, a v2 post nor a v1.1 tweet "
                           f"(keys: {shown})")


def read_records(read: Callable[[int], bytes], name: str,
                 max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Record]:
    """The posts and users of a whole input, line by line (see `iter_posts`)."""
    for number, line in lines.numbered(lines.chunks(read, name), name, max_line_bytes):
        yield from records(load(line, name, number), (name, number))


def iter_posts(path: Path, max_line_bytes: int = MAX_LINE_BYTES
               ) -> Generator[dict[str, Any], None, None]:
    """Stream the posts of a dataset file (JSONL or gzip), each with ``author`` attached.

    Raises BadInput naming the file and the 1-based line of the first malformed line, and
    LineTooLong for a line longer than `max_line_bytes`.
    """
    with lines.opened(path) as read:
        for is_post, obj in read_records(read, str(path), max_line_bytes):
            if is_post:
                yield obj


def iter_users(path: Path, max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[dict[str, Any]]:
    """Stream the distinct User objects of a file: user-lookup pages, or the posts' authors."""
    seen: set[Any] = set()
    with lines.opened(path) as read:
        for is_post, obj in read_records(read, str(path), max_line_bytes):
            user = obj.get("author") if is_post else obj
            if user is not None and user.get("id") not in seen:
                seen.add(user.get("id"))
                yield user


def distinct(ids: Iterator[Any]) -> Iterator[str]:
    seen: set[str] = set()
    for value in ids:
        if value is not None and (value := str(value)) not in seen:
            seen.add(value)
            yield value


