"""Delivery manifests (issue 15 item 1): exactly which Post IDs (and User IDs) a delivery held.

Every granted ID share and every hydrated export records its IDs here after the ledger reserved
it and before it is committed, so a committed delivery always has a manifest (its settle audit
record names it: id, sha256, counts). A crash in between leaves a manifest whose reservation
is then closed as counted (abandoned) or refunded — kept either way: the IDs may have left.

The codec (chosen by bench/manifests.py: ~2.4 bytes an ID for time-clustered X IDs; a 64-bit
roaring bitmap took 10-14): the IDs sorted and unique, each split as a snowflake is made —
``id >> 22`` (milliseconds since X's epoch) and the low 22 bits (worker and sequence). The
millisecond parts are delta-encoded (small numbers: posts collected together are close in
time), the low parts kept as they are (few distinct workers, small sequences); both are written
as byte planes (every value's first byte, then every second byte, ...) so that zstd sees long
runs of zeros and repeats, then compressed by zstd with a checksum. IDs that are not
snowflakes (old accounts' User IDs) take the same path, only less compactly.

    b"GKM" VERSION(1 byte) meta_len(u32) meta(JSON) posts(u64) users(u64) zstd(payload)

Stored beside the datasets, under the same rules: ``DIR/manifests/YYYY-MM/DELIVERY.gkm`` in a
directory (written whole: temporary, fsync, rename), or the same keys in the object store when
`[datasets] dir` is a URL (one upload; an object appears only complete). Never at a URL anyone
is handed. A month per folder, and a sorted set in Redis of every manifest by delivery time,
make a sweep by age and a trace over many manifests a range read, not a scan.

numpy and zstandard load only when a manifest is made or read.

Over ~400 lines for a reason: the format, its reader's checks against hostile bytes, and
the writers that must store a manifest before a delivery is committed change together (the
version byte ties them).
"""

from __future__ import annotations

import bisect
import contextlib
import hashlib
import io
import json
import os
import re
import struct
import zlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from gatekeeper import faults
from gatekeeper.domain import spool
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import BadInput, InsufficientStorage, NotFound

if TYPE_CHECKING:
    import numpy as np
    import numpy.typing as npt
    import redis

    from gatekeeper.domain.dsstore import ObjectStore
    from gatekeeper.domain.gate import Gate
    from gatekeeper.ledger.reservation import Reservation

    Ids = npt.NDArray[np.uint64]

MAGIC = b"GKM"
VERSION = 2  # written; READS are read
READS = (1, 2)
LEVEL = 1  # zstd level: as small as level 9 on these planes (bench/manifests.py), 15x faster
# A block's planes are ~330 KB: a 4 KB match table (2^12) instead of level 1's default finds
# nearly as much, in ~15 % less CPU (2.546 bytes an ID instead of 2.532; measured)
HASH_LOG = 12
HEADER = struct.Struct("<3sBI")  # magic, version, meta length
COUNTS = struct.Struct("<QQ")  # version 1: posts, users
COUNTS2 = struct.Struct("<QQI")  # version 2: posts, users, IDs a block
ENTRY = struct.Struct("<QQIQIB")  # version 2's block table: first, last, count, offset, length,
#                                   bytes of a millisecond delta
CHECK = struct.Struct("<I")  # version 2: crc32 of the header before it
MAKERS = 2  # threads packing a large share's blocks while its file is written
BLOCK_IDS = 1 << 16  # a trace decompresses one block: ~0.7 MB of planes, ~1 ms
MAX_BLOCK_IDS = 1 << 24
MAX_IDS = 1 << 40  # of a kind: bounds what a hostile header may make a reader allocate
MAX_META = 1 << 16
HEAD_READ = 1 << 14  # bytes read first for a header: most headers whole
LOW_BITS = 22  # a snowflake's worker (10 bits) and sequence (12 bits)
PARSE_BLOCK = 4 << 20  # bytes of ID lines parsed at once
PLANE_STEP = 1 << 15  # IDs split into byte planes at once
MAX_ID = 1 << 63  # IDs are below 2^63 (gatekeeper.domain.formats)
SUFFIX = ".gkm"
MONTH_RE = re.compile(r"\d{4}-\d{2}")
DELIVERY_RE = re.compile(r"[0-9a-f]{32}")  # a share's request id (uuid4 hex)


class BadManifest(BadInput):
    """A manifest that is truncated, corrupt, or of a version this gatekeeper cannot read."""

    status = 422
    code = "bad_manifest"


# --- the codec ----------------------------------------------------------------------------------


def as_ids(values: Any) -> Ids:
    """Any iterable of IDs (ints, or an integer numpy array) sorted, unique, as uint64."""
    import numpy as np

    arr = np.asarray(values if hasattr(values, "__len__") else list(values))
    if arr.size == 0:
        return np.zeros(0, dtype=np.uint64)
    if arr.dtype.kind not in "iu":
        arr = arr.astype(np.int64) if arr.dtype.kind != "O" else np.array(arr, dtype=np.uint64)
    if arr.dtype.kind == "i" and int(arr.min()) < 0:
        raise ValueError("an ID is never negative")
    ids = arr.astype(np.uint64, copy=False)
    if ids.size > 1 and bool((ids[1:] > ids[:-1]).all()):  # sorted and unique already: as is
        if int(ids[-1]) >= MAX_ID:
            raise ValueError(f"an ID is below 2^63, not {int(ids[-1])}")
        return ids
    ids = np.sort(ids)
    if int(ids[-1]) >= MAX_ID:
        raise ValueError(f"an ID is below 2^63, not {int(ids[-1])}")
    # np.unique hashes (numpy >= 2.3) and is many times slower than this on sorted input.
    keep = np.empty(ids.size, dtype=bool)
    keep[0] = True
    np.not_equal(ids[1:], ids[:-1], out=keep[1:])
    return ids if keep.all() else ids[keep]


def parse_lines(chunks: Iterable[bytes]) -> Ids:
    """IDs from newline-ended decimal lines (a share's spool, already validated; a line may be
    cut between chunks), read a digit column at a time for every line of one length at once
    (numpy: ~20 ns an ID, where ``int()`` per line takes ~150 ns)."""
    import numpy as np

    parts, pending, size = [], [], 0
    for chunk in chunks:  # in blocks of ~4 MB of whole lines: few numpy calls, little memory
        pending.append(chunk)
        size += len(chunk)
        if size >= PARSE_BLOCK:
            block = b"".join(pending)
            cut = block.rfind(b"\n") + 1
            if cut:
                parts.append(_parse_chunk(np, block[:cut]))
            pending, size = [block[cut:]], len(block) - cut
    if size:
        parts.append(_parse_chunk(np, b"".join(pending)))
    return np.concatenate(parts) if parts else np.zeros(0, dtype=np.uint64)


def _parse_chunk(np: Any, chunk: bytes) -> Ids:
    buf = np.frombuffer(chunk, dtype=np.uint8)
    ends = np.flatnonzero(buf == 10)
    if ends.size == 0 or ends[-1] != buf.size - 1:
        raise ValueError("ID lines end with a newline")
    starts = np.empty_like(ends)
    starts[0] = 0
    starts[1:] = ends[:-1] + 1
    lengths = ends - starts
    shortest, longest = int(lengths.min()), int(lengths.max())
    if shortest < 1 or longest > 19:
        raise ValueError("an ID line of 0 or more than 19 characters")
    if shortest == longest:  # every line one length (nearly always: 19 digits): no gathers
        return _digits(np, buf.reshape(ends.size, longest + 1), longest)
    out = np.zeros(ends.size, dtype=np.uint64)
    # Not np.unique: it hashes (numpy >= 2.3), seconds for a million values.
    for length in np.flatnonzero(np.bincount(lengths)).tolist():
        at = np.flatnonzero(lengths == length)
        out[at] = _digits(np, buf[starts[at, None] + np.arange(length + 1)], length)
    return out


def _digits(np: Any, rows: Any, length: int) -> Ids:
    """The numbers of `rows`, a matrix of ASCII digit lines `length` long (then a newline):
    four digits at a time in 16 bits, then into 64 (5 wide passes for 19 digits, not 19)."""
    digits = rows[:, :length] - np.uint8(48)
    if digits.size and int(digits.max()) > 9:  # also catches bytes below "0" (wrapped round)
        raise ValueError("an ID line holds something other than digits")
    value = np.zeros(rows.shape[0], dtype=np.uint64)
    for start in range(0, length, 4):
        group = digits[:, start].astype(np.uint16)
        for j in range(start + 1, min(start + 4, length)):
            group *= np.uint16(10)
            group += digits[:, j]
        value *= np.uint64(10 ** (min(start + 4, length) - start))
        value += group
    return value


def _planes(ids: Ids, out: Any) -> None:
    """Version 1's payload (kept to test its reader): the byte planes of `ids` (sorted) into
    `out`, 11 bytes an ID: 8 planes of the millisecond deltas, then 3 of the low 22 bits."""
    import numpy as np

    n = ids.size
    planes = out[:11 * n].reshape(11, n)
    shift, mask = np.uint64(LOW_BITS), np.uint64((1 << LOW_BITS) - 1)
    before = np.uint64(0)  # the first delta is the first ID's whole millisecond part
    for at in range(0, n, PLANE_STEP):
        part = ids[at:at + PLANE_STEP]
        high = part >> shift
        deltas = np.empty_like(high)
        deltas[0] = high[0] - before
        np.subtract(high[1:], high[:-1], out=deltas[1:])
        before = high[-1]
        planes[:8, at:at + part.size] = deltas.astype("<u8", copy=False).view(np.uint8
                                                                              ).reshape(-1, 8).T
        low = (part & mask).astype("<u8", copy=False).view(np.uint8).reshape(-1, 8)
        planes[8:, at:at + part.size] = low[:, :3].T


def _unplanes(data: memoryview, n: int) -> Ids:
    """Version 1's IDs from their payload."""
    import numpy as np

    raw = np.frombuffer(data, dtype=np.uint8)
    deltas = raw[:8 * n].reshape(8, n).T.copy().view("<u8").reshape(n)
    low = np.zeros((n, 4), dtype=np.uint8)
    low[:, :3] = raw[8 * n:11 * n].reshape(3, n).T
    high = np.cumsum(deltas, dtype=np.uint64)
    # Deltas of sorted IDs are small; a sum that wrapped round 2^64 shows as a step down.
    if n and (int(high[-1]) >= MAX_ID >> LOW_BITS or bool((high[1:] < high[:-1]).any())):
        raise BadManifest("the manifest's IDs do not add up (corrupt)")
    ids = (high << np.uint64(LOW_BITS)) | low.view("<u4").reshape(n).astype(np.uint64)
    if n > 1 and not bool((ids[1:] > ids[:-1]).all()):
        raise BadManifest("the manifest's IDs are not sorted and unique (corrupt)")
    return ids


def encode_v1(posts: Any, users: Any = (), meta: dict[str, Any] | None = None) -> bytes:
    """A version 1 manifest (one zstd frame of every ID): what gatekeeper wrote before
    version 2. Kept so the tests can make the files its reader must still read."""
    import numpy as np
    import zstandard

    p, u = as_ids(posts), as_ids(users)
    about = _meta_bytes(meta)
    payload = np.empty(11 * (p.size + u.size), dtype=np.uint8)
    _planes(p, payload[:11 * p.size])
    _planes(u, payload[11 * p.size:])
    packed = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compress(
        memoryview(payload))  # type: ignore[arg-type]
    return HEADER.pack(MAGIC, 1, len(about)) + about + COUNTS.pack(p.size, u.size) + packed


def _meta_bytes(meta: dict[str, Any] | None) -> bytes:
    about = json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()
    if len(about) > MAX_META:
        raise ValueError("a manifest's meta is at most 64 KiB")
    return about


# --- version 2: blocks, each its own zstd frame, found through a checked table ------------------


@dataclass(frozen=True)
class Block:
    """One block of a version 2 manifest: up to `block_ids` consecutive sorted IDs of one kind."""

    kind: str  # "posts" or "users"
    first: int
    last: int
    count: int
    offset: int  # of its frame, from the first frame's start
    length: int
    width: int  # bytes of each millisecond delta (0-8)


@dataclass(frozen=True)
class Header:
    """What a manifest says before its IDs: enough to know whether it may hold an ID, and
    which one block to read to find out. Version 1 has no table (`blocks` is None)."""

    version: int
    meta: dict[str, Any]
    posts: int
    users: int
    blocks: tuple[Block, ...] | None
    body_at: int  # where the first frame starts
    size: int  # the whole manifest's length

    def span(self, kind: str) -> tuple[int, int] | None:
        """The lowest and highest ID of `kind` it holds (None: none; version 1: unknown)."""
        mine = [b for b in self.blocks or () if b.kind == kind]
        return (mine[0].first, mine[-1].last) if mine else None

    def block_for(self, kind: str, ident: int) -> Block | None:
        """The one block that would hold `ident`, if any may."""
        mine = [b for b in self.blocks or () if b.kind == kind]
        at = bisect.bisect_right([b.first for b in mine], ident) - 1
        return mine[at] if at >= 0 and ident <= mine[at].last else None


class _Packer:
    """Packs blocks into frames, one after another, in buffers and a zstd context made once:
    fresh ones for every block were mapped and faulted in a page at a time (~2,700 page
    faults and ~1/5 of the CPU of a 1.5M-ID encode in a fresh process). One per thread."""

    def __init__(self, block_ids: int) -> None:
        import numpy as np
        import zstandard

        self.np = np
        self.high = np.empty(block_ids, dtype=np.uint64)
        self.deltas = np.empty(block_ids, dtype="<u8")
        self.low = np.empty(block_ids, dtype="<u8")
        self.planes = np.empty(11 * block_ids, dtype=np.uint8)
        params = zstandard.ZstdCompressionParameters.from_level(
            LEVEL, hash_log=HASH_LOG, write_checksum=1)
        self.zstd = zstandard.ZstdCompressor(compression_params=params)

    def pack(self, part: Ids) -> tuple[int, bytes]:
        """A block's frame: its millisecond parts as deltas from its first ID's (the table
        holds that ID), in as few byte planes as its largest delta needs, then the low 22
        bits' 3 planes — zstd level 1 with a checksum. Returns (delta width, frame)."""
        np, n = self.np, part.size
        high = np.right_shift(part, np.uint64(LOW_BITS), out=self.high[:n])
        deltas = self.deltas[:n]
        deltas[0] = 0
        np.subtract(high[1:], high[:-1], out=deltas[1:])
        width = (int(deltas.max()).bit_length() + 7) // 8
        planes = self.planes[:(width + 3) * n].reshape(width + 3, n)
        planes[:width] = deltas.view(np.uint8).reshape(n, 8)[:, :width].T
        low = np.bitwise_and(part, np.uint64((1 << LOW_BITS) - 1), out=self.low[:n])
        planes[width:] = low.view(np.uint8).reshape(n, 8)[:, :3].T
        return width, self.zstd.compress(memoryview(planes.reshape(-1)))  # type: ignore[arg-type]


def _pack_block(part: Ids) -> tuple[int, bytes]:
    """One block's (delta width, frame), as `encode` makes it (`_Packer.pack`)."""
    return _Packer(max(part.size, 1)).pack(part)


def encode(posts: Any, users: Any = (), meta: dict[str, Any] | None = None,
           threads: int = 1, *, sorted_unique: bool = False) -> bytes:
    """A manifest (version 2) of the Post IDs and User IDs (any order, repeats ignored) and
    `meta`. With `threads` > 1 its blocks are compressed that many at once (numpy and zstd
    let go of the GIL). `sorted_unique`: the arrays among them are uint64, already sorted and
    unique (`Selection.manifest_ids`' own), taken as they are — not checked again (~6 % of a
    1.5M-ID encode; a reader refuses a manifest whose IDs are not: `unpack_block`)."""
    return b"".join(encode_parts(posts, users, meta, threads, sorted_unique=sorted_unique))


def encode_parts(posts: Any, users: Any = (), meta: dict[str, Any] | None = None,
                 threads: int = 1, *, sorted_unique: bool = False) -> list[bytes]:
    """`encode`'s manifest as its header and its frames, to be written one after another
    (`Manifests.store_parts`): never joined into one copy in memory."""
    p, u = (ids if sorted_unique and hasattr(ids, "dtype") else as_ids(ids)
            for ids in (posts, users))
    about = _meta_bytes(meta)
    parts = [("posts", p[at:at + BLOCK_IDS]) for at in range(0, p.size, BLOCK_IDS)]
    parts += [("users", u[at:at + BLOCK_IDS]) for at in range(0, u.size, BLOCK_IDS)]
    largest = max((ids.size for _kind, ids in parts), default=1)
    if threads > 1 and len(parts) > 1:
        import threading
        from concurrent.futures import ThreadPoolExecutor

        mine = threading.local()

        def pack(ids: Ids) -> tuple[int, bytes]:
            if not hasattr(mine, "packer"):
                mine.packer = _Packer(largest)
            packer: _Packer = mine.packer
            return packer.pack(ids)

        with ThreadPoolExecutor(threads, "gatekeeper-manifest-block") as pool:
            packed = list(pool.map(pack, (ids for _kind, ids in parts)))
    else:
        packer = _Packer(largest)
        packed = [packer.pack(ids) for _kind, ids in parts]
    head = bytearray(HEADER.pack(MAGIC, VERSION, len(about)) + about
                     + COUNTS2.pack(p.size, u.size, BLOCK_IDS))
    offset = 0
    for (_kind, ids), (width, frame) in zip(parts, packed, strict=True):
        head += ENTRY.pack(int(ids[0]), int(ids[-1]), ids.size, offset, len(frame), width)
        offset += len(frame)
    head += CHECK.pack(zlib.crc32(head))
    return [bytes(head), *(frame for _width, frame in packed)]


def read_header(data: bytes | memoryview, where: str = "the manifest",
                size: int | None = None) -> Header:
    """The header of a manifest whose first bytes are `data` (all of it, or at least its
    header when `size`, the whole length, is given). Anything truncated, corrupt or out of
    bounds is BadManifest, named; a header that says more than `data` holds of it is
    NeedMore (read that many bytes and ask again)."""
    view = memoryview(data)
    whole = len(view) if size is None else size
    if len(view) < HEADER.size:
        _need(HEADER.size, whole, where)
    if bytes(view[:3]) != MAGIC:
        raise BadManifest(f"{where} is not a gatekeeper manifest (no GKM header)")
    _magic, version, meta_len = HEADER.unpack_from(view)
    if version not in READS:
        raise BadManifest(f"{where} is manifest version {version}; this gatekeeper reads "
                          f"versions {' and '.join(map(str, READS))}")
    if meta_len > MAX_META:
        raise BadManifest(f"{where} is corrupt (a meta of {meta_len:,} bytes)")
    at = HEADER.size + meta_len
    counts = COUNTS if version == 1 else COUNTS2
    if len(view) < at + counts.size:
        _need(at + counts.size, whole, where)
    meta = _meta_of(view[HEADER.size:at], where)
    if version == 1:
        n_posts, n_users = COUNTS.unpack_from(view, at)
        return Header(1, meta, n_posts, n_users, None, at + COUNTS.size, whole)
    n_posts, n_users, block_ids = COUNTS2.unpack_from(view, at)
    if not 0 < block_ids <= MAX_BLOCK_IDS or max(n_posts, n_users) > MAX_IDS:
        raise BadManifest(f"{where} is corrupt (claims {n_posts:,} posts and {n_users:,} "
                          f"users in blocks of {block_ids:,})")
    counts_of = [("posts", n_posts), ("users", n_users)]
    n_blocks = sum(-(-n // block_ids) for _kind, n in counts_of)
    table_at = at + COUNTS2.size
    body_at = table_at + n_blocks * ENTRY.size + CHECK.size
    if len(view) < body_at:
        _need(body_at, whole, where)
    (check,) = CHECK.unpack_from(view, body_at - CHECK.size)
    if zlib.crc32(view[:body_at - CHECK.size]) != check:
        raise BadManifest(f"{where}: its header does not match its checksum (corrupt)")
    blocks, offset = [], 0
    entries = ENTRY.iter_unpack(view[table_at:body_at - CHECK.size])
    for kind, n in counts_of:
        before = -1
        for at_id in range(0, n, block_ids):
            first, last, count, off, length, width = next(entries)
            if (count != min(block_ids, n - at_id) or not before < first <= last < MAX_ID
                    or (count == 1) != (first == last) or off != offset or length == 0
                    or width > 8):
                raise BadManifest(f"{where}: its block table is corrupt")
            blocks.append(Block(kind, first, last, count, off, length, width))
            before, offset = last, offset + length
    if whole != body_at + offset:
        raise BadManifest(f"{where} is {whole:,} bytes, not the {body_at + offset:,} its "
                          "header says (truncated or corrupt)")
    return Header(2, meta, n_posts, n_users, tuple(blocks), body_at, whole)


class NeedMore(Exception):
    """`read_header` was given too few bytes: read `wanted` of the manifest and ask again."""

    def __init__(self, wanted: int) -> None:
        super().__init__(wanted)
        self.wanted = wanted


def _need(wanted: int, whole: int, where: str) -> None:
    if wanted > whole:
        raise BadManifest(f"{where} is truncated (header)")
    raise NeedMore(wanted)


def _meta_of(raw: memoryview, where: str) -> dict[str, Any]:
    try:
        meta = json.loads(bytes(raw))
    except ValueError:
        raise BadManifest(f"{where}: its meta is not JSON (corrupt)") from None
    if not isinstance(meta, dict):
        raise BadManifest(f"{where}: its meta is not a JSON object (corrupt)")
    return meta


def unpack_block(block: Block, frame: bytes | memoryview, where: str = "the manifest") -> Ids:
    """The IDs of one block from its frame, checked against its table entry."""
    import numpy as np
    import zstandard

    n, width = block.count, block.width
    try:
        raw = zstandard.ZstdDecompressor().decompress(
            bytes(frame), max_output_size=n * (width + 3))
    except zstandard.ZstdError as exc:
        raise BadManifest(f"{where} is truncated or corrupt ({exc})") from None
    if len(raw) != n * (width + 3):
        raise BadManifest(f"{where} holds {len(raw)} bytes in a block of {n} IDs, not "
                          f"{n * (width + 3)} (corrupt)")
    planes = np.frombuffer(raw, dtype=np.uint8).reshape(width + 3, n)
    # Each plane widened and shifted into place: contiguous passes, no strided transpose.
    deltas = np.zeros(n, dtype=np.uint64)
    for i in range(width):
        deltas |= planes[i].astype(np.uint64) << np.uint64(8 * i)
    high = np.cumsum(deltas, dtype=np.uint64)
    high += np.uint64(block.first >> LOW_BITS)
    # Deltas of sorted IDs are small; a sum that wrapped round 2^64 shows as a step down.
    if int(high[-1]) != block.last >> LOW_BITS or bool((high[1:] < high[:-1]).any()):
        raise BadManifest(f"{where}: a block's IDs do not add up (corrupt)")
    ids = high << np.uint64(LOW_BITS)
    for i in range(3):
        ids |= planes[width + i].astype(np.uint64) << np.uint64(8 * i)
    if (int(ids[0]) != block.first or int(ids[-1]) != block.last
            or (n > 1 and not bool((ids[1:] > ids[:-1]).all()))):
        raise BadManifest(f"{where}: a block's IDs are not the sorted, unique IDs its table "
                          "says (corrupt)")
    return ids


@dataclass(frozen=True)
class Decoded:
    posts: Ids
    users: Ids
    meta: dict[str, Any]


def decode(data: bytes, where: str = "the manifest") -> Decoded:
    """The IDs and meta of a manifest (version 1 or 2); anything truncated or corrupt is
    BadManifest, named."""
    import numpy as np

    try:
        head = read_header(data, where)
    except NeedMore:  # the whole manifest was given: it cannot hold more
        raise BadManifest(f"{where} is truncated (header)") from None
    if head.blocks is None:
        return _decode_v1(memoryview(data), head, where)
    view = memoryview(data)
    got: dict[str, list[Ids]] = {"posts": [], "users": []}
    for block in head.blocks:
        at = head.body_at + block.offset
        got[block.kind].append(unpack_block(block, view[at:at + block.length], where))
    posts, users = (np.concatenate(got[k]) if got[k] else np.zeros(0, dtype=np.uint64)
                    for k in ("posts", "users"))
    return Decoded(posts, users, head.meta)


def _decode_v1(view: memoryview, head: Header, where: str) -> Decoded:
    import zstandard

    n_posts, n_users = head.posts, head.users
    size = 11 * (n_posts + n_users)  # bounds what a hostile frame may inflate to
    if size > 11 * (1 << 40):
        raise BadManifest(f"{where} claims {n_posts + n_users:,} IDs (corrupt)")
    try:
        payload = zstandard.ZstdDecompressor().decompress(
            bytes(view[head.body_at:]), max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise BadManifest(f"{where} is truncated or corrupt ({exc})") from None
    if len(payload) != size:
        raise BadManifest(f"{where} holds {len(payload)} bytes of IDs, not the {size} its "
                          "counts say (corrupt)")
    body = memoryview(payload)
    return Decoded(_unplanes(body[:11 * n_posts], n_posts),
                   _unplanes(body[11 * n_posts:], n_users), head.meta)


# --- storage ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ref:
    """What a delivery's audit record says of its manifest."""

    name: str  # MONTH/DELIVERY, the key under manifests/
    sha256: str
    posts: int
    users: int

    def audit(self) -> dict[str, str]:
        return {"manifest": self.name, "manifest_sha256": self.sha256,
                "manifest_posts": str(self.posts), "manifest_users": str(self.users)}


def name_of(delivery: str, at_ms: int) -> str:
    if not DELIVERY_RE.fullmatch(delivery):
        raise ValueError(f"a delivery id is 32 hex digits, not {delivery!r}")
    return f"{datetime.fromtimestamp(at_ms / 1000, UTC):%Y-%m}/{delivery}"


class Monthly:
    """Files kept a month per folder beside the datasets, under the same storage rules:
    ``DIR/FOLDER/YYYY-MM/STEM+SUFFIX`` in a directory (written whole: unnamed, synced,
    linked), or the same keys in the object store when `[datasets] dir` is a URL (one upload:
    an object appears only complete). Manifests here; deletion notices' ID files too."""

    FOLDER = ""
    SUFFIX = ""
    WHAT = "file"  # as errors name one

    def __init__(self, client: redis.Redis, datasets: Path | str) -> None:
        self.client = client
        self.url = datasets if isinstance(datasets, str) and "://" in datasets else None
        self.directory = None if self.url else Path(datasets) / self.FOLDER
        self._stores: dict[str, ObjectStore] = {}

    def _store(self, month: str) -> ObjectStore:
        """The object store under PREFIX/FOLDER/MONTH (ObjectStore keys are flat names)."""
        from gatekeeper.domain.dsstore import ObjectStore

        assert self.url is not None
        if month not in self._stores:
            base, _, query = self.url.partition("?")
            url = f"{base.rstrip('/')}/{self.FOLDER}/{month}" + (f"?{query}" if query else "")
            self._stores[month] = ObjectStore(url, self.client)
        return self._stores[month]

    def _where(self, month: str, stem: str) -> str:
        if self.directory is not None:
            return str(self.directory / month / (stem + self.SUFFIX))
        return self._store(month).where(stem + self.SUFFIX)

    def _put(self, month: str, stem: str, chunks: Iterable[bytes]) -> str:
        """Store the file given a chunk at a time (each chunk once in memory); its sha256. A
        failure raises InsufficientStorage (or StoreUnavailable) before anything names it."""
        sha = hashlib.sha256()
        try:
            with contextlib.ExitStack() as stack:
                if self.directory is not None:
                    unnamed = stack.enter_context(spool.Unnamed(self.directory / month))
                    fh = unnamed.file
                else:  # ObjectStore.upload copies a local file
                    fh = stack.enter_context(spool.anonymous())
                fh.flush()
                for chunk in chunks:  # unbuffered: each chunk once in memory
                    view = memoryview(chunk)
                    while view:  # a short write (a disk filling up) is no silent truncation
                        view = view[os.write(fh.fileno(), view):]
                    sha.update(chunk)
                if self.directory is not None:
                    unnamed.name_as(self.directory / month / (stem + self.SUFFIX))
                else:
                    self._store(month).upload(fh, stem + self.SUFFIX)
        except OSError as exc:
            raise InsufficientStorage(f"the {self.WHAT} {self._where(month, stem)} could not "
                                      f"be written ({exc.strerror or exc})") from exc
        return sha.hexdigest()

    def _get(self, month: str, stem: str) -> bytes:
        if self.directory is not None:
            try:
                return (self.directory / month / (stem + self.SUFFIX)).read_bytes()
            except FileNotFoundError:
                raise NotFound(f"the {self.WHAT} {self._where(month, stem)} is missing") \
                    from None
        with self._store(month).open(stem + self.SUFFIX) as fh:
            out = io.BytesIO()
            while chunk := fh.read(1 << 20):
                out.write(chunk)
            return out.getvalue()


class Manifests(Monthly):
    """The manifests beside the datasets: a directory, or the object store of a URL."""

    FOLDER = "manifests"
    SUFFIX = SUFFIX
    WHAT = "manifest"

    def where(self, name: str) -> str:
        return self._where(*self._split(name))

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        month, _, delivery = name.partition("/")
        if not MONTH_RE.fullmatch(month) or not DELIVERY_RE.fullmatch(delivery):
            raise NotFound(f"no manifest is named {name!r}")
        return month, delivery

    def write(self, delivery: str, at_ms: int, posts: Any, users: Any = (),
              meta: dict[str, Any] | None = None) -> Ref:
        """Store a delivery's manifest whole, and index it by delivery time. A failure raises
        InsufficientStorage (or StoreUnavailable) before anything names the manifest. Its
        blocks are packed MAKERS at a time: a delivery waits for it (an API share's response
        starts only once it is stored)."""
        name = name_of(delivery, at_ms)
        p, u = as_ids(posts), as_ids(users)
        parts = encode_parts(p, u, {"delivery": delivery, "at_ms": at_ms, **(meta or {})},
                             threads=MAKERS, sorted_unique=True)
        return self.store_parts(name, at_ms, parts, int(p.size), int(u.size))

    def store(self, name: str, at_ms: int, data: bytes, posts: int, users: int) -> Ref:
        """`write`'s second half: store the encoded manifest `data` whole, then index it."""
        return self.store_parts(name, at_ms, [data], posts, users)

    def store_parts(self, name: str, at_ms: int, parts: list[bytes], posts: int,
                    users: int) -> Ref:
        """`store` for a manifest given as `encode_parts` makes it (its header first)."""
        head = read_header(parts[0], self.where(name), sum(len(part) for part in parts))
        return self.store_stream(name, at_ms, parts, posts, users, lambda: _spans_text(head))

    def store_stream(self, name: str, at_ms: int, chunks: Iterable[bytes], posts: int,
                     users: int, spans: Callable[[], str]) -> Ref:
        """Store a manifest given a chunk at a time (`store`'s whole bytes, or
        `manifest_stream.encode_sorted`'s chunks: never whole in memory), then index it with its
        `spans` (`_spans_text`). As spool.publish: unnamed until complete and synced, then
        linked (or one upload: an object appears only complete); `spans()` is asked once the
        chunks are written. A failure raises
        InsufficientStorage (or StoreUnavailable) before anything names the manifest."""
        sha = self._put(*self._split(name), chunks)
        with failing_closed():
            pipe = self.client.pipeline(transaction=False)
            pipe.hset(keys.MANIFEST_SPANS, name, spans())
            pipe.zadd(keys.MANIFESTS, {name: at_ms})
            pipe.execute()
        return Ref(name, sha, posts, users)

    def read_bytes(self, name: str) -> bytes:
        return self._get(*self._split(name))

    def read(self, name: str) -> Decoded:
        return decode(self.read_bytes(name), self.where(name))

    @contextlib.contextmanager
    def _open(self, name: str) -> Iterator[IO[bytes]]:
        month, delivery = self._split(name)
        if self.directory is None:
            with self._store(month).open(delivery + SUFFIX) as reader:
                yield reader  # type: ignore[misc]
            return
        try:
            fh = (self.directory / month / (delivery + SUFFIX)).open("rb")
        except FileNotFoundError:
            raise NotFound(f"the manifest {self.where(name)} is missing") from None
        with fh:
            yield fh

    def header(self, name: str) -> Header:
        """A manifest's header, read without its IDs (a few KB; version 1: the whole file)."""
        with self._open(name) as fh:
            return self._header(fh, name)

    def _header(self, fh: IO[bytes], name: str) -> Header:
        where = self.where(name)
        size = fh.seek(0, io.SEEK_END)
        fh.seek(0)
        data = fh.read(min(size, HEAD_READ))
        while True:
            try:
                head = read_header(data, where, size)
            except NeedMore as more:
                data += fh.read(more.wanted - len(data))
                if len(data) < more.wanted:  # shorter than it was a moment ago
                    raise BadManifest(f"{where} is truncated (header)") from None
                continue
            if head.blocks is None:  # version 1: no table; its IDs are read whole
                data += fh.read()
                decode(data, where)  # checks it all, as a version 2 header is checked
            return head

    def find(self, name: str, kind: str, ident: int) -> Header | None:
        """The manifest's header if it holds `ident` among its `kind` ("posts"/"users"),
        else None: its header, then at most one block (version 1: the whole manifest)."""
        import numpy as np

        with self._open(name) as fh:
            head = self._header(fh, name)
            if head.blocks is None:
                fh.seek(0)
                ids = getattr(decode(fh.read(), self.where(name)), kind)
            else:
                block = head.block_for(kind, ident)
                if block is None:
                    return None
                fh.seek(head.body_at + block.offset)
                ids = unpack_block(block, fh.read(block.length), self.where(name))
        at = int(np.searchsorted(ids, np.uint64(ident)))
        return head if at < ids.size and int(ids[at]) == ident else None

    def spans(self, names: list[str]) -> list[tuple[tuple[int, int] | None, ...] | None]:
        """Each manifest's lowest and highest Post ID and User ID, from Redis (one read for
        them all): (posts span, users span), a span None when it holds none of that kind;
        None for a manifest stored without them (version 1)."""
        if not names:
            return []
        with failing_closed():
            raw = self.client.hmget(keys.MANIFEST_SPANS, names)
        return [None if r is None else _spans_of(r.decode() if isinstance(r, bytes) else r)
                for r in raw]

    def exists(self, name: str) -> bool:
        try:
            self.read_bytes(name)
        except NotFound:
            return False
        return True

    def indexed(self, name: str) -> bool:
        """Whether the index still names `name`: a file missing while it does is lost (an
        error); once it does not, the manifest was swept or refunded after a reader listed it
        (its entry goes first), and the reader passes it by."""
        with failing_closed():
            return self.client.zscore(keys.MANIFESTS, name) is not None

    def unindex(self, names: list[str]) -> None:
        """Take manifests out of the index and their spans with them (a sweep, once the files
        are gone): what trace and the sweep read stays one list."""
        if names:
            with failing_closed():
                pipe = self.client.pipeline(transaction=False)
                pipe.zrem(keys.MANIFESTS, *names)
                pipe.hdel(keys.MANIFEST_SPANS, *names)
                pipe.execute()

    def listed(self, since_ms: int = 0, until_ms: int | None = None) -> list[str]:
        """The manifests delivered in [since, until], oldest first (the Redis index)."""
        with failing_closed():
            names = self.client.zrangebyscore(keys.MANIFESTS, since_ms,
                                              "+inf" if until_ms is None else until_ms)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _spans_text(head: Header) -> str:
    """'PMIN PMAX UMIN UMAX' ('- -' for a kind it holds none of): kept in Redis beside the
    index, so a trace passes by a manifest that cannot hold an ID without opening it."""
    return " ".join(" ".join(map(str, head.span(k) or ("-", "-"))) for k in ("posts", "users"))


def _spans_of(text: str) -> tuple[tuple[int, int] | None, ...] | None:
    parts = text.split()
    if len(parts) != 4:
        return None  # not ours to trust: the manifest is opened instead
    return tuple(None if parts[i] == "-" else (int(parts[i]), int(parts[i + 1]))
                 for i in (0, 2))


def record_share(gate: Gate, res: Reservation, lines: Iterable[bytes], kind: str,
                 ids: Ids | None = None, file: str | None = None) -> None:
    """Store an ID share's manifest — `lines`, the IDs it delivers, newline-ended — after the
    reservation and before a byte leaves or the share is committed; the commit's audit record
    names it. `ids`, if given, are those IDs already read, sorted and unique (a large list
    granted whole: `Selection.manifest_ids`), and `lines` is left unread. A replay sends the
    first delivery's IDs again (or fewer, R9): that delivery's manifest holds them, so none is
    written. `file`: the name of the file it is written to (the CLI's), for trace."""
    if res.grant.status == "replay":
        return
    if ids is None:
        ids = parse_lines(lines)
    ref = gate.manifests.write(
        res.grant.share_id, res.grant.now_ms, ids if kind == "posts" else (),
        ids if kind == "users" else (), _share_meta(res, file))
    res.audit.update(ref.audit())
    faults.point("manifest.written")


def _share_meta(res: Reservation, file: str | None = None) -> dict[str, Any]:
    """Who, how and from what, as trace tells it (domain/trace.py)."""
    meta = {k: res.audit.get(k) for k in ("recipient", "entity", "channel", "kind", "actor")}
    return {**meta, **{k: v for k, v in (("dataset", res.audit.get("dataset")),
                                         ("file", file)) if v}}


def record_share_alongside(gate: Gate, res: Reservation, ids: Ids, kind: str,
                           write: Callable[[Callable[[], None]], None],
                           file: str | None = None) -> None:
    """`record_share` for IDs already read (sorted, unique: `Selection.manifest_ids`), made
    and stored while `write` writes the delivery (another thread: numpy, zstd and the fsync
    let go of the GIL). `write` is handed `stored`, which waits for the manifest and names it
    in the audit record: `write` calls it after its bytes are written and before any can be
    read (the CLI's file is still unnamed). So a delivery still never appears without its
    manifest; what is new is that a crash while the file is written may leave no manifest —
    nor any file, the reservation closed as counted (abandoned) as before. Its blocks are
    packed two at a time (MAKERS): the file is copied by the kernel in ~30 ms, so one thread
    left the share waiting for its manifest (+6 to +12 % on a 1.5M-ID share, two at a time
    -2 to +9 %: bench/manifests.py)."""
    if res.grant.status == "replay":  # as record_share: the first delivery's manifest holds them
        write(lambda: None)
        return
    from concurrent.futures import Future, ThreadPoolExecutor

    share, at_ms = res.grant.share_id, res.grant.now_ms
    meta = {"delivery": share, "at_ms": at_ms, **_share_meta(res, file)}
    p, u = (ids, None) if kind == "posts" else (None, ids)
    name = name_of(share, at_ms)

    def make() -> Ref:
        empty = ids[:0]
        parts = encode_parts(empty if p is None else p, empty if u is None else u, meta,
                             threads=MAKERS, sorted_unique=True)
        return gate.manifests.store_parts(name, at_ms, parts,
                                          int(ids.size) if p is not None else 0,
                                          int(ids.size) if u is not None else 0)

    done = False

    def stored() -> None:
        nonlocal done
        assert making is not None
        res.audit.update(making.result().audit())
        done = True
        faults.point("manifest.written")

    making: Future[Ref] | None = None
    try:
        with ThreadPoolExecutor(1, "gatekeeper-manifest") as pool:  # waits for it, whatever
            making = pool.submit(make)
            write(stored)
    except BaseException:
        # Stored, but the delivery failed: named in the refund's audit, so that the refund
        # takes it out of the index (Ledger.settle) — what never left is no delivery.
        if not done and making is not None and making.exception() is None:
            res.audit.update(making.result().audit())
        raise
    if not done:
        raise RuntimeError("a delivery was written without waiting for its manifest")


class Collector:
    """The Post IDs and User IDs of the rows an export writes, gathered as the writer takes
    them: the row's post and author and, for a retweet written whole (its original's text),
    the original and its author too — what R9 hides a retweet for."""

    def __init__(self) -> None:
        self.posts: list[int] = []
        self.users: list[int] = []

    def watch(self, rows: Iterable[dict[str, Any]], originals: bool) -> Iterable[dict[str, Any]]:
        for row in rows:
            self.add(row, originals)
            yield row

    def add(self, row: dict[str, Any], originals: bool = False) -> None:
        self._post(row)
        refs = row.get("referenced_tweets") if originals else None
        for ref in refs if isinstance(refs, list) else ():
            if isinstance(ref, dict) and ref.get("type") == "retweeted" and "text" in ref:
                self._post(ref)

    def _post(self, post: dict[str, Any]) -> None:
        ident = str(post.get("id") or "")
        if ident.isdecimal() and ident.isascii():
            self.posts.append(int(ident))
        author = post.get("author_id") or (post.get("author") or {}).get("id")
        if isinstance(author, str) and author.isdecimal() and author.isascii():
            self.users.append(int(author))
