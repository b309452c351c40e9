"""The light readers: post ID, author ID and (for R9) the retweeted post and its author of
every post in a dataset file, decoded by msgspec against a schema of those few fields so the
rest of each line (entities, users, media: most of it) is skipped without being built. What
previews, ID shares and R9 read; the full readers are in formats.py, and a line that is not
page-shaped takes their path.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msgspec

from gatekeeper.domain import lines
from gatekeeper.domain.formats import load, records
from gatekeeper.domain.lines import MAX_LINE_BYTES
from gatekeeper.rules.r9 import Light, as_id, author_id_of, light_of


class _Id(msgspec.Struct):
    id: Any = None


class _Light(msgspec.Struct):
    """What ID-only work reads of a post; the decoder skips every other field unbuilt."""

    id: Any = None
    text: Any = None
    author_id: Any = None
    author: _Id | None = None


class _LightPage(msgspec.Struct):
    data: list[_Light] | _Light | None = None


class _Ref(msgspec.Struct):
    type: Any = None
    id: Any = None
    author_id: Any = None
    author: _Id | None = None


class _R9Light(_Light):
    """What R9 reads besides: which post a retweet repeats."""

    referenced_tweets: list[_Ref] | None = None


class _Included(msgspec.Struct):
    id: Any = None
    author_id: Any = None


class _Includes(msgspec.Struct):
    tweets: list[_Included] | None = None


class _R9Page(msgspec.Struct):
    data: list[_R9Light] | _R9Light | None = None
    includes: _Includes | None = None


_decode_light = msgspec.json.Decoder(_LightPage).decode
_decode_r9 = msgspec.json.Decoder(_R9Page).decode


def light_records(path: Path, *, retweets: bool = True,
                  max_line_bytes: int = MAX_LINE_BYTES) -> Iterator[Light]:
    """The `Light` record of every post, in file order, building no post or user objects.

    A twarc2 page is decoded against a schema of the few fields needed, which skips context
    annotations, entities, users and media (most of a line) without allocating them; other
    lines take the full path. Gives what `light_of` gives for the posts `iter_posts` yields.
    With ``retweets=False`` the last two fields are None and references and ``includes`` are
    skipped too: ID-only work that needs no R9 decision stays as fast as it was. Assumes a
    file `Datasets.add` has validated.
    """
    name = str(path)
    decode = _decode_r9 if retweets else _decode_light
    with lines.opened(path) as read:
        for number, line in lines.numbered(lines.chunks(read, name), name, max_line_bytes):
            try:
                page: Any = decode(line)
            except msgspec.DecodeError:
                page = None  # not page-shaped: the full path below says what it is
            if page is None or page.data is None:
                for is_post, post in records(load(line, name, number), (name, number)):
                    if is_post:
                        yield light_of(post) if retweets else (
                            post["id"], as_id(author_id_of(post)), None, None)
                continue
            data = page.data
            items = data if type(data) is list else (data,)
            if not retweets:
                for item in items:
                    if item.text is not None:  # users (lookup pages) have none
                        author = item.author_id or (item.author.id if item.author else None)
                        yield (item.id if type(item.id) is str else str(item.id),
                               author if author is None or type(author) is str else str(author),
                               None, None)
                continue
            originals: dict[str, Any] | None = None
            for item in items:
                if item.text is None:
                    continue
                pid = item.id if type(item.id) is str else str(item.id)
                author = item.author_id or (item.author.id if item.author else None)
                if author is not None and type(author) is not str:
                    author = str(author)
                refs = item.referenced_tweets
                ref = next((r for r in refs if r.type == "retweeted"), None) if refs else None
                if ref is None:
                    yield pid, author, None, None
                    continue
                by = ref.author_id or (ref.author.id if ref.author else None)
                if not by:
                    if originals is None:
                        tweets = page.includes.tweets if page.includes else None
                        originals = {str(t.id): t.author_id for t in tweets or ()
                                     if t.author_id}
                    by = originals.get(str(ref.id))
                yield pid, author, as_id(ref.id), as_id(by)


def light_posts(path: Path, max_line_bytes: int = MAX_LINE_BYTES
                ) -> Iterator[tuple[str, str | None]]:
    """(post ID, author ID) of every post, in file order (see `light_records`)."""
    for pid, author, _, _ in light_records(path, retweets=False,
                                           max_line_bytes=max_line_bytes):
        yield pid, author
