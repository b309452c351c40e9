"""Posts read back from a dataset's JSONL at the places its index gives (exports, the Users
sheet): only those lines are parsed. A plain file is read at each line's offset; a gzip file
has no offsets to seek to, so it is decompressed from the start and only the wanted lines are
parsed."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

from gatekeeper.domain import lines
from gatekeeper.domain.formats import load, records
from gatekeeper.domain.lines import GZIP_MAGIC
from gatekeeper.rules.errors import BadInput

Place = tuple[int, int, int, int]  # (index row, line offset, line length, post's place in it)


def _posts(line: bytes, name: str) -> list[dict[str, Any]]:
    """The posts of one line, in order: parsed once however many of them are wanted (a page
    holds 100; an export may want a dozen of them)."""
    return [obj for is_post, obj in records(load(line, name, 0), (name, 0)) if is_post]


def _post(posts: list[dict[str, Any]], name: str, position: int) -> dict[str, Any]:
    if position < len(posts):
        return posts[position]
    raise BadInput(f"{name}: no post {position} in the line its index names; the index is "
                   "stale", file=name)


def posts_at(fh: Any, name: str, places: Iterable[Place], max_line_bytes: int
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index row, post) at each place, in the order given (ascending offsets), read from
    `fh`, a seekable binary reader of the JSONL (a local file or an object-store object)."""
    gz = fh.read(2) == GZIP_MAGIC
    if not gz:
        last: tuple[int, list[dict[str, Any]]] | None = None
        for row, offset, length, position in places:
            if last is None or last[0] != offset:
                fh.seek(offset)
                last = (offset, _posts(fh.read(length), name))
            yield row, _post(last[1], name, position)
        return
    fh.seek(0)
    yield from _gzip_at(fh.read, name, iter(places), max_line_bytes)


def _gzip_at(read: Any, name: str, places: Iterator[Place], max_line_bytes: int
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    want = next(places, None)
    if want is None:
        return
    for _number, start, line in lines.placed(read, name, max_line_bytes):
        posts = _posts(line, name) if want[1] == start else None
        while want is not None and want[1] == start:
            yield want[0], _post(posts or [], name, want[3])
            want = next(places, None)
        if want is None:
            return
    if want is not None:
        raise BadInput(f"{name}: ends before a line its index names; the index is stale",
                       file=name)
