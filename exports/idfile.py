"""ID files: one decimal ID per line, nothing else (R1: what may leave automatically)."""

from __future__ import annotations

from collections.abc import Iterable
from itertools import islice
from typing import BinaryIO

CHUNK = 65_536


def write_ids(ids: Iterable[str | int], stream: BinaryIO, limit: int | None = None) -> int:
    """Write up to `limit` IDs to `stream`, one per line; return how many were written."""
    written = 0
    it = iter(ids) if limit is None else islice(ids, limit)
    while True:
        chunk = [str(i) for i in islice(it, CHUNK)]
        if not chunk:
            return written
        stream.write(("\n".join(chunk) + "\n").encode("ascii"))
        written += len(chunk)
