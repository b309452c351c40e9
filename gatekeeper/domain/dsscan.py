"""The JSONL pass that answered previews and exports before the index (issue 14), kept as the
reference the index is checked against: `tests/test_dsindex.py` asserts the same numbers, and
`bench/datasets.py` times the index against it."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from exports.columns import expand
from gatekeeper.domain.seen import SeenIds

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.domain.hydrated import Selection, Tally


def scan_posts(gate: Gate, sel: Selection, tally: Tally | None = None
               ) -> Iterator[dict[str, Any]]:
    """`Selection.posts` as it read the whole JSONL."""
    n = 0
    seen = SeenIds()
    with contextlib.closing(gate.datasets.posts(sel.dataset, sel.filters)) as source:
        for post in source:
            for row in expand(post, whole_retweets=sel.whole_retweets, referenced=sel.referenced):
                if sel.limit is not None and n >= sel.limit:
                    return
                if not seen.add(int(row["id"])):
                    if tally is not None:
                        tally.duplicates += 1
                    continue
                cleaned = sel.deleted.cleaned(row)
                if cleaned is None:
                    continue
                n += 1
                yield cleaned


def scan_tally(gate: Gate, sel: Selection, with_users: bool) -> Tally:
    """`Selection.tally` as it read the whole JSONL."""
    from gatekeeper.domain.hydrated import Tally

    tally = Tally()
    authors: dict[str, dict[str, Any]] = {}
    for post in scan_posts(gate, sel, tally):
        tally.posts += 1
        author = post.get("author")
        if with_users and author and author.get("id") not in authors \
                and not sel.deleted.hides_user(author["id"]):
            authors[author["id"]] = author
    tally.authors = authors
    return tally
