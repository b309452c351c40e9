"""Manifest codec VERSION 1, encoded in bounded memory without numpy (issue 14 item 6).

`encode_sorted` gives, chunk by chunk, exactly the bytes of `manifests.encode` (version 1) for
IDs already sorted and unique, handed over in blocks — a dataset share's sidecar keeps them so
(`gatekeeper.domain.dsids`). The byte planes (`manifests._planes`: 8 of the millisecond deltas,
3 of the low 22 bits, each plane over every ID) are laid out in an anonymous spool a block at a
time — a block's deltas and low bits packed by `array`, its planes taken by strided `bytes`
slices at C speed — and the spool is fed to zstd with its size pledged, which compresses it
to the same frame as the one-shot call (tests/test_dehydrate.py pins both, hypothesis).

KEEP IN STEP with `gatekeeper.domain.manifests`: when its format changes (version 2: blocks),
this encoder changes with it (or goes, if the new format is made a block at a time).
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Iterable, Iterator, Sequence
from operator import sub
from typing import TYPE_CHECKING, Any

from gatekeeper import faults
from gatekeeper.domain import manifests, spool
from gatekeeper.domain.manifests import COUNTS, HEADER, LEVEL, LOW_BITS, MAGIC, MAX_ID, MAX_META

if TYPE_CHECKING:
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger.reservation import Reservation

VERSION = 1
READ = 1 << 17  # bytes of planes fed to zstd at a time
STEP = 1 << 13  # IDs turned into planes at a time: a few hundred KB of Python ints
_LOW_THIRD = bytes(b & ((1 << (LOW_BITS - 16)) - 1) for b in range(256))  # bits 16-21 of 24


def _pieces(blocks: Iterable[Sequence[int]]) -> Iterator[Sequence[int]]:
    for block in blocks:
        if len(block) <= STEP:
            yield block
        else:
            for at in range(0, len(block), STEP):
                yield block[at:at + STEP]


def encode_sorted(blocks: Iterable[Sequence[int]], n: int, meta: dict[str, Any] | None = None,
                  kind: str = "posts") -> Iterator[bytes]:
    """`manifests.encode` of `n` Post IDs (or, with kind "users", User IDs) given ascending
    and unique in `blocks`, as chunks of bytes; ValueError if they are not what was said."""
    import zstandard

    about = json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()
    if len(about) > MAX_META:
        raise ValueError("a manifest's meta is at most 64 KiB")
    counts = (n, 0) if kind == "posts" else (0, n)
    yield HEADER.pack(MAGIC, VERSION, len(about)) + about + COUNTS.pack(*counts)
    with spool.anonymous(buffering=0) as planes:  # written at offsets, read back whole
        fd = planes.fileno()
        at, before, last = 0, 0, -1
        for block in _pieces(blocks):
            k = len(block)
            if not k:
                continue
            if block[0] <= last or block[-1] >= MAX_ID or at + k > n:
                raise ValueError("manifest IDs out of order, too large or more than said")
            highs = [x >> LOW_BITS for x in block]
            deltas = array("Q", map(sub, highs, [before, *highs[:-1]])).tobytes()
            for p in range(8):
                os.pwrite(fd, deltas[p::8], p * n + at)
            # The low 22 bits are the IDs' first 22 bits (little-endian): their bytes as they are.
            raw = array("Q", block).tobytes() if not isinstance(block, memoryview) else \
                block.tobytes()
            os.pwrite(fd, raw[0::8], 8 * n + at)
            os.pwrite(fd, raw[1::8], 9 * n + at)
            os.pwrite(fd, raw[2::8].translate(_LOW_THIRD), 10 * n + at)
            before, last = highs[-1], block[-1]
            at += k
        if at != n:
            raise ValueError(f"a manifest of {n:,} IDs was given {at:,}")
        packer = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compressobj(
            size=11 * n)
        os.lseek(fd, 0, os.SEEK_SET)
        while chunk := os.read(fd, READ):
            if out := packer.compress(chunk):
                yield out
        yield packer.flush()


def record_share(gate: Gate, res: Reservation, ids: Iterable[Sequence[int]], n: int,
                 kind: str) -> None:
    """`manifests.record_share` for the `n` IDs a share delivers, given ascending and unique
    in blocks (a dataset's sidecar): encoded and stored a block at a time."""
    if res.grant.status == "replay":  # the first delivery's manifest holds them
        return
    share, at_ms = res.grant.share_id, res.grant.now_ms
    # The same meta as the index path's manifest (`manifests.record_share`).
    meta = {"delivery": share, "at_ms": at_ms, **manifests._share_meta(res)}
    ref = gate.manifests.store_stream(manifests.name_of(share, at_ms), at_ms,
                                      encode_sorted(ids, n, meta, kind),
                                      n if kind == "posts" else 0, n if kind == "users" else 0)
    res.audit.update(ref.audit())
    faults.point("manifest.written")
