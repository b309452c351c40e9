"""Which Post/User IDs a selection has met already, without a set of ints (~100 bytes an ID:
1.5 million IDs would add 150 MB to a share whose whole budget is 50 MB, bench/ids.py).

- `SeenIds` answers exactly, in ~7 bytes an ID: for hydrated exports, whose posts cost far more
  to read than the look-up, and for the IDs R9 leaves out of a share;
- `maybe_repeated` finds, from a bitmap of ~2 bytes an ID, the few IDs of a spooled ID file
  that may be repeated: ID shares keep every ID in a spool anyway, and settle those after the
  fact (`gatekeeper.domain.shares.Selection.distinct`), exactly;
- `repeated_ids` finds the repeated IDs of a large spooled ID file exactly, with numpy (8 bytes
  an ID, ~0.05 µs an ID: no Python per ID); a share of a few IDs does not load numpy for it.
  The sorted array it reads them from (`sorted_ids`) is also the share's manifest, once its
  repeats are gone (`unique_of`): no second parse, no second sort (issue 15).
"""

from __future__ import annotations

import mmap
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

_M16 = 0xFFFF


class SeenIds:
    """An exact set of IDs (decimal integers below 2^63) in about 7 bytes each.

    An ID goes to one of 2^16 buckets by its low bits mixed with its time bits (a Snowflake
    ID's low bits are a per-millisecond sequence, mostly small; an old ID's high bits are all
    zero); the bucket, a bytearray, holds the ID's bits above the low 16 as 6 bytes, which with
    the bucket number give the whole ID back. A look-up searches one bucket in C.
    """

    __slots__ = ("_buckets",)

    def __init__(self) -> None:
        self._buckets: list[bytearray | None] = [None] * (_M16 + 1)

    def add(self, value: int) -> bool:
        """Record `value`; whether it is new."""
        i = (value ^ (value >> 22)) & _M16
        key = (value >> 16).to_bytes(6, "little")
        bucket = self._buckets[i]
        if bucket is None:
            self._buckets[i] = bytearray(key)
            return True
        at = bucket.find(key)
        while at >= 0:
            if not at % 6:  # a match across two entries is no match
                return False
            at = bucket.find(key, at + 1)
        bucket += key
        return True


def maybe_repeated(chunks: Iterable[bytes], count: int) -> set[bytes]:
    """The IDs of an ID file (`chunks` of whole newline-ended lines, `count` lines in all)
    that may occur more than once: every one that does, and some (~3%) that only share a bit
    of the bitmap with another. One tight loop, ~2 bytes a line."""
    width = max(16, min(28, (16 * count).bit_length()))  # 16-32 bits a line
    bits = bytearray(1 << (width - 3))
    mask = (1 << width) - 1
    maybes: set[bytes] = set()
    for chunk in chunks:
        ids = chunk.split(b"\n")
        ids.pop()  # after the last newline
        for ident in ids:
            h = hash(ident) & mask  # computed in C, and kept on the bytes for the set
            byte = bits[h >> 3]
            bit = 1 << (h & 7)
            if byte & bit:
                maybes.add(ident)
            else:
                bits[h >> 3] = byte | bit
    return maybes


def repeated_ids(chunks: Iterable[bytes], count: int) -> set[bytes]:
    """The IDs that occur more than once in `chunks`: whole lines, each a canonical ID (1-19
    digits, no leading zero, below 2^63, as a spool holds them) ended by a newline; `count`
    lines in all. Exact: every line is read as its number (a uint64) into one array, which is
    sorted; equal neighbours are the repeats."""
    return repeats_of(sorted_ids(chunks, count))


def sorted_ids(chunks: Iterable[bytes], count: int) -> np.ndarray:
    """The numbers of the `count` lines of `chunks` (as `repeated_ids` takes them), sorted,
    repeats included: a uint64 array in its own mapping. numpy loads here, not with this
    module: a share that never holds a large list loads none."""
    values = _mapped(count)
    filled = 0
    for chunk in chunks:
        got = _numbers(chunk)
        values[filled:filled + len(got)] = got
        filled += len(got)
    if filled != count:
        raise ValueError(f"{filled} lines read where {count} were spooled")
    values.sort()
    return values


def repeats_of(values: np.ndarray) -> set[bytes]:
    """The numbers that occur more than once in `values` (sorted), as ID lines are written."""
    import numpy as np

    same = values[1:] == values[:-1]
    if not same.any():
        return set()
    return {b"%d" % v for v in np.unique(values[1:][same]).tolist()}


def unique_of(values: np.ndarray) -> np.ndarray:
    """`values` (sorted) without repeats: itself when it has none (np.unique hashes since
    numpy 2.3, many times slower on sorted input), else a copy in a mapping of its own."""
    import numpy as np

    if values.size < 2:
        return values
    keep = np.empty(values.size, dtype=bool)
    keep[0] = True
    np.not_equal(values[1:], values[:-1], out=keep[1:])
    kept = int(np.count_nonzero(keep))
    if kept == values.size:
        return values
    out = _mapped(kept)
    np.compress(keep, values, out=out)
    return out


def _mapped(count: int) -> np.ndarray:
    """An uninitialised uint64 array of `count` values, unmapped with it. Mapped here, not
    malloc'd: freeing a malloc'd block this large would raise glibc's mmap threshold to its
    size, and a server's threads would then keep every later buffer below it in their arenas
    (tens of MB, bench/idfile.py)."""
    import numpy as np

    return np.frombuffer(mmap.mmap(-1, max(8 * count, 1)), np.uint64, count)


def _numbers(block: bytes) -> np.ndarray:
    """The numbers of the newline-ended decimal lines of `block`, in no particular order."""
    import numpy as np
    from numpy.lib.stride_tricks import sliding_window_view

    data = np.frombuffer(block, np.uint8)
    width = block.find(b"\n")
    lines = len(block) // (width + 1)
    # Nearly always every line has the same length (Post IDs are 19 digits for years): then
    # the block is a (lines, width + 1) table as it is, if no other newline hides in it.
    if lines * (width + 1) == len(block) and block[width::width + 1] == b"\n" * lines:
        digits = data.reshape(lines, width + 1)[:, :width] - np.uint8(48)
        if not digits.size or digits.max() <= 9:
            return _horner(digits)
    ends = np.flatnonzero(data == 10)
    starts = np.empty_like(ends)
    starts[:1] = 0
    starts[1:] = ends[:-1] + 1
    widths = ends - starts
    out = [_horner(sliding_window_view(data, w)[starts[widths == w]] - np.uint8(48))
           for w in np.flatnonzero(np.bincount(widths)).tolist()]
    return np.concatenate(out) if out else np.empty(0, np.uint64)


def _horner(digits: np.ndarray) -> np.ndarray:
    """The numbers whose decimal digits are the rows of `digits` (uint8, 1-19 columns)."""
    import numpy as np

    columns = np.ascontiguousarray(digits.T)  # a column at a time, each contiguous
    value = columns[0].astype(np.uint64)
    for column in columns[1:]:
        value *= np.uint64(10)
        value += column
    return value
