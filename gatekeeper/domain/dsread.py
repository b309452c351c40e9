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


def _post(line: bytes, name: str, position: int) -> dict[str, Any]:
    at = 0
    for is_post, obj in records(load(line, name, 0), (name, 0)):
        if is_post:
            if at == position:
                return obj
            at += 1
    raise BadInput(f"{name}: no post {position} in the line its index names; the index is "
                   "stale", file=name)


def posts_at(fh: Any, name: str, places: Iterable[Place], max_line_bytes: int
             ) -> Iterator[tuple[int, dict[str, Any]]]:
    """(index row, post) at each place, in the order given (ascending offsets), read from
    `fh`, a seekable binary reader of the JSONL (a local file or an object-store object)."""
    gz = fh.read(2) == GZIP_MAGIC
    if not gz:
        last: tuple[int, bytes] | None = None
        for row, offset, length, position in places:
            if last is None or last[0] != offset:
                fh.seek(offset)
                last = (offset, fh.read(length))
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
        while want is not None and want[1] == start:
            yield want[0], _post(line, name, want[3])
            want = next(places, None)
        if want is None:
            return
    if want is not None:
        raise BadInput(f"{name}: ends before a line its index names; the index is stale",
                       file=name)
