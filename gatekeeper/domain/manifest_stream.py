"""A manifest (version 2) encoded in bounded memory without numpy (issue 14 item 6).

`encode_sorted` gives, chunk by chunk, exactly the bytes of `manifests.encode` for IDs already
sorted and unique, handed over in pieces of any size — a dataset share's sidecar keeps them so
(`gatekeeper.domain.dsids`). Each block of `manifests.BLOCK_IDS` IDs is packed as
`manifests._pack_block` packs it — its millisecond deltas in as few byte planes as the largest
needs, then the low 22 bits' 3 planes, zstd with the same parameters — by `array` and strided
`bytes` slices at C speed; the frames wait in an anonymous spool until the block table (which
comes first) is known. One block of Python ints in memory at a time: a dataset share stays
within its 40 MB (bench/ids.py). tests/test_dehydrate.py pins the bytes to `manifests.encode`.

KEEP IN STEP with `gatekeeper.domain.manifests`: the block layout is its (`VERSION`).
"""

from __future__ import annotations

import os
import zlib
from array import array
from collections.abc import Callable, Iterable, Iterator, Sequence
from operator import sub
from typing import TYPE_CHECKING, Any

from gatekeeper import faults
from gatekeeper.domain import manifests, spool
from gatekeeper.domain.manifests import (
    BLOCK_IDS,
    CHECK,
    COUNTS2,
    ENTRY,
    HASH_LOG,
    HEADER,
    LEVEL,
    LOW_BITS,
    MAGIC,
    MAX_ID,
    VERSION,
)

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger.reservation import Reservation

READ = 1 << 17  # bytes of frames copied out at a time
STEP = 1 << 11  # IDs of a block made Python ints at once: ~100 KB
_LOW_THIRD = bytes(b & ((1 << (LOW_BITS - 16)) - 1) for b in range(256))  # bits 16-21 of 24


def _blocks(pieces: Iterable[Sequence[int]]) -> Iterator[array[int]]:
    """The IDs again, cut where `manifests.encode` cuts them: every BLOCK_IDS (8 bytes an ID)."""
    block = array("Q")
    for piece in pieces:
        at = 0
        while at < len(piece):
            take = BLOCK_IDS - len(block)
            block.extend(piece[at:at + take])
            at += take
            if len(block) == BLOCK_IDS:
                yield block
                block = array("Q")
    if block:
        yield block


def pack_block(block: array[int], packer: Callable[[bytes | bytearray], bytes]
               ) -> tuple[int, bytes]:
    """`manifests._pack_block` without numpy: (delta width, frame). Two passes of STEP IDs
    at a time as Python ints — the first finds the widest delta, the second lays each plane
    straight into the one buffer zstd reads (11 bytes an ID at most, no copy of it)."""
    n, first = len(block), block[0] >> LOW_BITS
    widest = 0
    for at in range(0, n, STEP):
        piece = block[max(at - 1, 0):at + STEP]  # with the ID before it: order across pieces
        if any(map(int.__ge__, piece[:-1], piece[1:])):
            raise ValueError("manifest IDs out of order, too large or more than said")
        highs = [x >> LOW_BITS for x in piece]
        widest = max(widest, *map(sub, highs[1:], highs[:-1]), 0)
    width = (widest.bit_length() + 7) // 8  # bytes of the largest delta (0: none)
    out = bytearray((width + 3) * n)
    for at in range(0, n, STEP):
        piece = block[at:at + STEP]
        highs = [x >> LOW_BITS for x in piece]
        end = at + len(piece)
        if width:
            before = first if at == 0 else block[at - 1] >> LOW_BITS
            deltas = array("Q", map(sub, highs, [before, *highs[:-1]])).tobytes()
            for p in range(width):
                out[p * n + at:p * n + end] = deltas[p::8]
        raw = piece.tobytes()
        out[width * n + at:width * n + end] = raw[0::8]
        out[(width + 1) * n + at:(width + 1) * n + end] = raw[1::8]
        out[(width + 2) * n + at:(width + 2) * n + end] = raw[2::8].translate(_LOW_THIRD)
    return width, packer(out)


def encode_sorted(pieces: Iterable[Sequence[int]], n: int, meta: dict[str, Any] | None = None,
                  kind: str = "posts") -> Iterator[bytes]:
    """`manifests.encode` of `n` Post IDs (or, with kind "users", User IDs) given ascending
    and unique in `pieces`, as chunks of bytes; ValueError if they are not what was said."""
    import zstandard

    about = manifests._meta_bytes(meta)
    params = zstandard.ZstdCompressionParameters.from_level(
        LEVEL, hash_log=HASH_LOG, write_checksum=1)
    packer = zstandard.ZstdCompressor(compression_params=params).compress
    entries = bytearray()
    with spool.anonymous(buffering=0) as frames:
        fd, offset, seen, last = frames.fileno(), 0, 0, -1
        for block in _blocks(pieces):
            if block[0] <= last or block[-1] >= MAX_ID or seen + len(block) > n:
                raise ValueError("manifest IDs out of order, too large or more than said")
            width, frame = pack_block(block, packer)
            view = memoryview(frame)
            while view:
                view = view[os.write(fd, view):]
            entries += ENTRY.pack(block[0], block[-1], len(block), offset, len(frame), width)
            offset += len(frame)
            seen, last = seen + len(block), block[-1]
        if seen != n:
            raise ValueError(f"a manifest of {n:,} IDs was given {seen:,}")
        posts, users = (n, 0) if kind == "posts" else (0, n)
        head = bytearray(HEADER.pack(MAGIC, VERSION, len(about)) + about
                         + COUNTS2.pack(posts, users, BLOCK_IDS)) + entries
        yield bytes(head + CHECK.pack(zlib.crc32(head)))
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, READ):
            yield chunk


def record_share(gate: Gate, res: Reservation, ids: Iterable[Sequence[int]], n: int,
                 kind: str, file: str | None = None) -> None:
    """`manifests.record_share` for the `n` IDs a share delivers, given ascending and unique
    in pieces (a dataset's sidecar): encoded a block at a time, stored as it comes, indexed
    with the lowest and highest ID (trace's spans) seen on the way."""
    if res.grant.status == "replay":  # the first delivery's manifest holds them
        return
    share, at_ms = res.grant.share_id, res.grant.now_ms
    # The same meta as the index path's manifest (`manifests.record_share`).
    meta = {"delivery": share, "at_ms": at_ms, **manifests._share_meta(res, file)}
    ends: list[int] = []

    def watched() -> Iterator[Sequence[int]]:
        for piece in ids:
            if len(piece):
                ends[:] = [ends[0] if ends else piece[0], piece[-1]]
            yield piece

    def spans() -> str:  # asked once every chunk was written
        span = f"{ends[0]} {ends[1]}" if ends else "- -"
        return f"{span} - -" if kind == "posts" else f"- - {span}"

    ref = gate.manifests.store_stream(manifests.name_of(share, at_ms), at_ms,
                                      encode_sorted(watched(), n, meta, kind),
                                      n if kind == "posts" else 0, n if kind == "users" else 0,
                                      spans)
    res.audit.update(ref.audit())
    faults.point("manifest.written")
