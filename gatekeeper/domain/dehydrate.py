"""An ID share of a whole dataset, read from its ID sidecar (issue 14 item 6): no pyarrow, no
numpy, memory bounded by a block of rows whatever the dataset's size.

The same IDs, order, counts and request digest as `shares.select_from_dataset` over the index:
each post (row) is hidden or not by R9 exactly as `Deleted.hides_light` decides on its `Light`
record; an ID leaves once, at its first row R9 does not hide; `removed` counts the IDs with a
hidden row, `repeats` every other row left out — both as the index path counts them
(tests/test_dehydrate.py runs both on the same datasets). Only the IDs on more than one
row (`dsids.DUP`, usually none) are remembered, and only when something is listed; a dataset
with more of them than `MAX_DUPLICATED` is read through the index.

The manifest of a grant of the first N (all, or a partial grant's share) is made from the
sidecar's sorted IDs in blocks (`manifest_stream.encode_sorted`): the sorted IDs whose first kept
row comes no later than the N-th kept ID's, less those R9 left out.
"""

from __future__ import annotations

import os
from array import array
from bisect import bisect_right
from collections.abc import Callable, Iterator, Sequence
from typing import Protocol

from gatekeeper.domain import spool
from gatekeeper.domain.dsids import BAD, DUP, FIRST, NONE, Sidecar
from gatekeeper.rules.r9 import Deleted

MAX_DUPLICATED = 100_000  # IDs on more than one row remembered while R9 lists anything


class Sink(Protocol):
    """Where the kept IDs go (`shares.Selection`)."""

    removed: int
    repeats: int

    def add_rows(self, kept: bytes, count: int, named: bytes) -> None: ...


def fits(sidecar: Sidecar, deleted: Deleted) -> bool:
    """Whether a share of this sidecar's dataset may be read from it (else: the index)."""
    return not deleted.listed or sidecar.meta["duplicated"] <= MAX_DUPLICATED


def _hidden(deleted: Deleted, first: int, pids: memoryview, authors: memoryview | None,
            retweets: list[tuple[int, int, int]]) -> set[int]:
    """The rows of a block (offsets from `first`) R9 hides: `Deleted.hides_light` on ints."""
    posts, users = deleted.posts, deleted.users
    hidden: set[int] = set()
    if posts and not posts.isdisjoint(pids):
        hidden.update(i for i, p in enumerate(pids) if p in posts)
    if users and authors is not None and (not users.isdisjoint(authors) or BAD in authors):
        hidden.update(i for i, a in enumerate(authors) if a in users or a == BAD)
    for row, rt, rt_author in retweets:
        # An ID that is not one (BAD) cannot be shown to be allowed: hidden, as int() fails.
        if rt == BAD or (rt != NONE and rt in posts) or (users and (
                rt_author == BAD or (rt_author != NONE and rt_author in users))):
            hidden.add(row - first)
    return hidden


class Dehydrated:
    """What the pass over a sidecar left: enough to name the manifest of any first N kept."""

    def __init__(self, sidecar: Sidecar) -> None:
        self.sidecar = sidecar
        self.kept = 0
        # Where each kept ID came from, for a partial grant's manifest: per block, the kept
        # count before it and its first row — every row kept (the usual block) — or where in
        # `_rows` (int64 a kept ID) its rows are.
        self._blocks: list[tuple[int, int, int | None]] = []
        self._rows = spool.anonymous(buffering=1 << 16)
        self._spooled = 0
        self.excluded: set[int] = set()  # IDs with no row kept (R9)
        self.first_kept: dict[int, int] = {}  # an ID on several rows: the row it left from

    def _keep_block(self, first: int, count: int) -> None:
        self._blocks.append((self.kept, first, None))
        self.kept += count

    def _keep_rows(self, rows: Sequence[int]) -> None:
        self._blocks.append((self.kept, -1, self._spooled))
        self._rows.write(array("q", rows).tobytes())
        self._spooled += len(rows)
        self.kept += len(rows)

    def row_of(self, k: int) -> int:
        """The row of the k-th kept ID (from 0)."""
        before, first, spooled = self._blocks[bisect_right(self._blocks, (k, 2**63)) - 1]
        if spooled is None:
            return first + k - before
        self._rows.flush()
        data = os.pread(self._rows.fileno(), 8, 8 * (spooled + k - before))
        return int.from_bytes(data, "little", signed=True)

    def sorted_ids(self, n: int) -> Iterator[Sequence[int]]:
        """The first `n` kept IDs, ascending, in blocks."""
        if n <= 0:
            return
        last = self.row_of(n - 1) if n < self.kept else None
        excluded, first_kept = self.excluded, self.first_kept
        for ids, rows in self.sidecar.sorted_blocks():
            if last is None and not excluded and not first_kept:
                yield ids
            elif not excluded and not first_kept:
                assert last is not None
                yield [x for x, r in zip(ids, rows, strict=True) if r <= last]
            else:
                end = self.sidecar.rows if last is None else last
                yield [x for x, r in zip(ids, rows, strict=True)
                       if x not in excluded and first_kept.get(x, r) <= end]

    def close(self) -> None:
        self._rows.close()
        self.sidecar.close()


def dehydrate(sidecar: Sidecar, sink: Sink, deleted: Deleted,
              progress: Callable[[int], None] | None = None) -> Dehydrated:
    """Every post ID of the sidecar's dataset R9 lets leave, once each, into `sink`."""
    out = Dehydrated(sidecar)
    listed = deleted.listed
    retweets = sidecar.retweets() if listed else iter(())
    pending = next(retweets, None)
    dropped: set[int] = set()  # IDs on several rows, with a hidden row
    try:
        for first, text, pids, authors, flags in sidecar.blocks(authors=bool(deleted.users)):
            count = len(pids)
            block_rts: list[tuple[int, int, int]] = []
            while pending is not None and pending[0] < first + count:
                block_rts.append(pending)
                pending = next(retweets, None)
            hidden = _hidden(deleted, first, pids, authors, block_rts) if listed else set()
            # Every row kept, as it is: no row hidden, no later row of an ID, and — while R9
            # lists anything — no first row of an ID that comes again (it must be remembered).
            if not hidden and DUP not in flags and not (listed and DUP | FIRST in flags):
                sink.add_rows(text, count, text)
                out._keep_block(first, count)
            else:
                _mixed(out, sink, first, text, pids, flags, hidden, dropped, listed)
            if progress is not None:
                progress(count)
        out.excluded.update(dropped.difference(out.first_kept))
        return out
    except BaseException:
        out.close()
        raise


def _mixed(out: Dehydrated, sink: Sink, first: int, text: bytes, pids: memoryview,
           flags: bytes, hidden: set[int], dropped: set[int], listed: bool) -> None:
    """A block with rows R9 hides or IDs on several rows: row by row."""
    lines = text.split(b"\n")
    kept: list[bytes] = []
    rows: list[int] = []
    if not listed:  # nothing hides a row: an ID leaves from its first row
        for i, flag in enumerate(flags):
            if flag & FIRST:
                kept.append(lines[i])
                rows.append(first + i)
            else:
                sink.repeats += 1
    else:
        first_kept = out.first_kept
        for i, flag in enumerate(flags):
            pid = pids[i]
            if flag & DUP:
                if i in hidden:
                    if pid in dropped:
                        sink.repeats += 1
                    else:
                        dropped.add(pid)
                        sink.removed += 1
                elif pid in first_kept:
                    sink.repeats += 1
                else:
                    first_kept[pid] = first + i
                    kept.append(lines[i])
                    rows.append(first + i)
            elif i in hidden:
                sink.removed += 1
                out.excluded.add(pid)
            else:
                kept.append(lines[i])
                rows.append(first + i)
    sink.add_rows(b"\n".join(kept) + b"\n" if kept else b"", len(kept), text)
    out._keep_rows(rows)

