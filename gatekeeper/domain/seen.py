"""Which Post/User IDs a selection has met already, without a set of ints (~100 bytes an ID:
1.5 million IDs would add 150 MB to a share whose whole budget is 50 MB, bench/ids.py).

- `SeenIds` answers exactly, in ~7 bytes an ID: for hydrated exports, whose posts cost far more
  to read than the look-up, and for the IDs R9 leaves out of a share;
- `maybe_repeated` finds, from a bitmap of ~2 bytes an ID, the few IDs of a spooled ID file
  that may be repeated: ID shares keep every ID in a spool anyway, and settle those after the
  fact (`gatekeeper.domain.shares.Selection.distinct`), exactly.
"""

from __future__ import annotations

from collections.abc import Iterable

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
