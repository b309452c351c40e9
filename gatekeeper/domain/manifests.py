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

import contextlib
import hashlib
import io
import json
import os
import re
import struct
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
VERSION = 1
LEVEL = 1  # zstd level: as small as level 9 on these planes (bench/manifests.py), 15x faster
HEADER = struct.Struct("<3sBI")  # magic, version, meta length
COUNTS = struct.Struct("<QQ")  # posts, users
MAX_META = 1 << 16
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
    """Write the byte planes of `ids` (sorted) into `out`, a uint8 array of 11 bytes an ID:
    8 planes of the millisecond deltas, then 3 of the low 22 bits. A slice of IDs at a time
    (`PLANE_STEP`): the temporaries stay small and warm in the cache — whole-array ones (3 of
    12 MB at 1.5M IDs) cost more in fresh pages than in arithmetic."""
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


def encode(posts: Any, users: Any = (), meta: dict[str, Any] | None = None) -> bytes:
    """A manifest of the Post IDs and User IDs (any order, repeats ignored) and `meta`."""
    import numpy as np
    import zstandard

    p, u = as_ids(posts), as_ids(users)
    about = json.dumps(meta or {}, sort_keys=True, separators=(",", ":")).encode()
    if len(about) > MAX_META:
        raise ValueError("a manifest's meta is at most 64 KiB")
    # malloc'd, not mapped as domain/seen.py's arrays: a mapping's fresh pages cost ~15 ms
    # more CPU here at 1.5M IDs (measured), and it is freed within the call.
    payload = np.empty(11 * (p.size + u.size), dtype=np.uint8)
    _planes(p, payload[:11 * p.size])
    _planes(u, payload[11 * p.size:])
    packed = zstandard.ZstdCompressor(level=LEVEL, write_checksum=True).compress(
        memoryview(payload))  # type: ignore[arg-type]
    return HEADER.pack(MAGIC, VERSION, len(about)) + about + COUNTS.pack(p.size, u.size) + packed


@dataclass(frozen=True)
class Decoded:
    posts: Ids
    users: Ids
    meta: dict[str, Any]


def decode(data: bytes, where: str = "the manifest") -> Decoded:
    """The IDs and meta of a manifest; anything truncated or corrupt is BadManifest, named."""
    import zstandard

    view = memoryview(data)
    if len(view) < HEADER.size or bytes(view[:3]) != MAGIC:
        raise BadManifest(f"{where} is not a gatekeeper manifest (no GKM header)")
    _magic, version, meta_len = HEADER.unpack_from(view)
    if version != VERSION:
        raise BadManifest(f"{where} is manifest version {version}; this gatekeeper reads "
                          f"version {VERSION}")
    at = HEADER.size + meta_len
    if meta_len > MAX_META or len(view) < at + COUNTS.size:
        raise BadManifest(f"{where} is truncated (header)")
    try:
        meta = json.loads(bytes(view[HEADER.size:at]))
    except ValueError:
        raise BadManifest(f"{where}: its meta is not JSON (corrupt)") from None
    if not isinstance(meta, dict):
        raise BadManifest(f"{where}: its meta is not a JSON object (corrupt)")
    n_posts, n_users = COUNTS.unpack_from(view, at)
    size = 11 * (n_posts + n_users)  # bounds what a hostile frame may inflate to
    if size > 11 * (1 << 40):
        raise BadManifest(f"{where} claims {n_posts + n_users:,} IDs (corrupt)")
    try:
        payload = zstandard.ZstdDecompressor().decompress(
            bytes(view[at + COUNTS.size:]), max_output_size=max(size, 1))
    except zstandard.ZstdError as exc:
        raise BadManifest(f"{where} is truncated or corrupt ({exc})") from None
    if len(payload) != size:
        raise BadManifest(f"{where} holds {len(payload)} bytes of IDs, not the {size} its "
                          "counts say (corrupt)")
    body = memoryview(payload)
    return Decoded(_unplanes(body[:11 * n_posts], n_posts),
                   _unplanes(body[11 * n_posts:], n_users), meta)


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


class Manifests:
    """The manifests beside the datasets: a directory, or the object store of a URL."""

    def __init__(self, client: redis.Redis, datasets: Path | str) -> None:
        self.client = client
        self.url = datasets if isinstance(datasets, str) and "://" in datasets else None
        self.directory = None if self.url else Path(datasets) / "manifests"
        self._stores: dict[str, ObjectStore] = {}

    def _store(self, month: str) -> ObjectStore:
        """The object store under PREFIX/manifests/MONTH (ObjectStore keys are flat names)."""
        from gatekeeper.domain.dsstore import ObjectStore

        assert self.url is not None
        if month not in self._stores:
            base, _, query = self.url.partition("?")
            url = f"{base.rstrip('/')}/manifests/{month}" + (f"?{query}" if query else "")
            self._stores[month] = ObjectStore(url, self.client)
        return self._stores[month]

    def where(self, name: str) -> str:
        month, delivery = self._split(name)
        if self.directory is not None:
            return str(self.directory / month / (delivery + SUFFIX))
        return self._store(month).where(delivery + SUFFIX)

    @staticmethod
    def _split(name: str) -> tuple[str, str]:
        month, _, delivery = name.partition("/")
        if not MONTH_RE.fullmatch(month) or not DELIVERY_RE.fullmatch(delivery):
            raise NotFound(f"no manifest is named {name!r}")
        return month, delivery

    def write(self, delivery: str, at_ms: int, posts: Any, users: Any = (),
              meta: dict[str, Any] | None = None) -> Ref:
        """Store a delivery's manifest whole, and index it by delivery time. A failure raises
        InsufficientStorage (or StoreUnavailable) before anything names the manifest."""
        name = name_of(delivery, at_ms)
        p, u = as_ids(posts), as_ids(users)
        data = encode(p, u, {"delivery": delivery, "at_ms": at_ms, **(meta or {})})
        return self.store(name, at_ms, data, int(p.size), int(u.size))

    def store(self, name: str, at_ms: int, data: bytes, posts: int, users: int) -> Ref:
        """`write`'s second half: store the encoded manifest `data` whole, then index it."""
        month, delivery = self._split(name)
        try:
            if self.directory is not None:
                # As spool.publish: unnamed until complete and synced, then linked.
                with spool.Unnamed(self.directory / month) as unnamed:
                    unnamed.file.write(data)
                    unnamed.name_as(self.directory / month / (delivery + SUFFIX))
            else:
                with spool.anonymous() as fh:  # ObjectStore.upload copies a local file
                    fh.write(data)
                    self._store(month).upload(fh, delivery + SUFFIX)
        except OSError as exc:
            raise InsufficientStorage(f"the manifest {self.where(name)} could not be written "
                                      f"({exc.strerror or exc})") from exc
        with failing_closed():
            self.client.zadd(keys.MANIFESTS, {name: at_ms})
        return Ref(name, hashlib.sha256(data).hexdigest(), posts, users)

    def store_stream(self, name: str, at_ms: int, chunks: Iterable[bytes], posts: int,
                     users: int) -> Ref:
        """`store` for a manifest encoded a chunk at a time (`manifest_v1.encode_sorted`):
        the same file, written as the chunks come, never whole in memory."""
        month, delivery = self._split(name)
        sha = hashlib.sha256()
        try:
            with contextlib.ExitStack() as stack:
                if self.directory is not None:
                    unnamed = stack.enter_context(spool.Unnamed(self.directory / month))
                    fh = unnamed.file
                else:
                    fh = stack.enter_context(spool.anonymous())
                fh.flush()
                for chunk in chunks:  # unbuffered: each chunk once in memory
                    os.write(fh.fileno(), chunk)
                    sha.update(chunk)
                if self.directory is not None:
                    unnamed.name_as(self.directory / month / (delivery + SUFFIX))
                else:
                    self._store(month).upload(fh, delivery + SUFFIX)
        except OSError as exc:
            raise InsufficientStorage(f"the manifest {self.where(name)} could not be written "
                                      f"({exc.strerror or exc})") from exc
        with failing_closed():
            self.client.zadd(keys.MANIFESTS, {name: at_ms})
        return Ref(name, sha.hexdigest(), posts, users)

    def read_bytes(self, name: str) -> bytes:
        month, delivery = self._split(name)
        if self.directory is not None:
            try:
                return (self.directory / month / (delivery + SUFFIX)).read_bytes()
            except FileNotFoundError:
                raise NotFound(f"the manifest {self.where(name)} is missing") from None
        with self._store(month).open(delivery + SUFFIX) as fh:
            out = io.BytesIO()
            while chunk := fh.read(1 << 20):
                out.write(chunk)
            return out.getvalue()

    def read(self, name: str) -> Decoded:
        return decode(self.read_bytes(name), self.where(name))

    def exists(self, name: str) -> bool:
        try:
            self.read_bytes(name)
        except NotFound:
            return False
        return True

    def listed(self, since_ms: int = 0, until_ms: int | None = None) -> list[str]:
        """The manifests delivered in [since, until], oldest first (the Redis index)."""
        with failing_closed():
            names = self.client.zrangebyscore(keys.MANIFESTS, since_ms,
                                              "+inf" if until_ms is None else until_ms)
        return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def record_share(gate: Gate, res: Reservation, lines: Iterable[bytes], kind: str,
                 ids: Ids | None = None) -> None:
    """Store an ID share's manifest — `lines`, the IDs it delivers, newline-ended — after the
    reservation and before a byte leaves or the share is committed; the commit's audit record
    names it. `ids`, if given, are those IDs already read, sorted and unique (a large list
    granted whole: `Selection.manifest_ids`), and `lines` is left unread. A replay sends the
    first delivery's IDs again (or fewer, R9): that delivery's manifest holds them, so none is
    written."""
    if res.grant.status == "replay":
        return
    if ids is None:
        ids = parse_lines(lines)
    ref = gate.manifests.write(
        res.grant.share_id, res.grant.now_ms, ids if kind == "posts" else (),
        ids if kind == "users" else (), _share_meta(res))
    res.audit.update(ref.audit())
    faults.point("manifest.written")


def _share_meta(res: Reservation) -> dict[str, Any]:
    return {k: res.audit.get(k) for k in ("recipient", "entity", "channel", "kind", "actor")}


def record_share_alongside(gate: Gate, res: Reservation, ids: Ids, kind: str,
                           write: Callable[[Callable[[], None]], None]) -> None:
    """`record_share` for IDs already read (sorted, unique: `Selection.manifest_ids`), made
    and stored while `write` writes the delivery (another thread: numpy, zstd and the fsync
    let go of the GIL). `write` is handed `stored`, which waits for the manifest and names it
    in the audit record: `write` calls it after its bytes are written and before any can be
    read (the CLI's file is still unnamed). So a delivery still never appears without its
    manifest; what is new is that a crash while the file is written may leave no manifest —
    nor any file, the reservation closed as counted (abandoned) as before. It adds ~0.03 s to
    a 1.5M-ID share where the manifest first took ~0.15 s (bench/manifests.py)."""
    if res.grant.status == "replay":  # as record_share: the first delivery's manifest holds them
        write(lambda: None)
        return
    from concurrent.futures import ThreadPoolExecutor

    share, at_ms = res.grant.share_id, res.grant.now_ms
    meta = {"delivery": share, "at_ms": at_ms, **_share_meta(res)}
    p, u = (ids, None) if kind == "posts" else (None, ids)
    name = name_of(share, at_ms)

    def make() -> Ref:
        data = encode(() if p is None else p, () if u is None else u, meta)
        return gate.manifests.store(name, at_ms, data, int(ids.size) if p is not None else 0,
                                    int(ids.size) if u is not None else 0)

    done = False

    def stored() -> None:
        nonlocal done
        res.audit.update(making.result().audit())
        done = True
        faults.point("manifest.written")

    with ThreadPoolExecutor(1, "gatekeeper-manifest") as pool:  # waits for it, whatever happens
        making = pool.submit(make)
        write(stored)
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
