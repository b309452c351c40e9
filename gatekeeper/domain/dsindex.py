"""A dataset's columnar index (issue 14): one Apache Parquet file beside its JSONL, built once.

The index holds, one row per post as the readers in `gatekeeper.domain.formats` yield it (before
R9), what filters, counts, R9 and ID shares read — post ID, created_at, lang, author ID and
username, the text casefolded (what `Filters.contains` compares), the retweeted post and its
author — the rows the post adds with "referenced posts" (their IDs, authors, what they retweet,
the author the Users sheet shows), and where the whole post is: its line's byte offset and length
in the (decompressed) JSONL and its place among the posts of that line. The JSONL stays the
source of truth: the file's footer records the index version and the JSONL's identity (size,
mtime and a sampled fingerprint), and an index that does not match them is rebuilt before use
(`Datasets.index`), never read.

pyarrow, not DuckDB: its wheel reads and writes S3-compatible stores itself, where DuckDB's
httpfs extension is downloaded at run time from a host we may not reach.

IDs are int64. An ID a line holds that is not one (a reference X wrote oddly) is stored as BAD:
R9 hides such a row, as `Deleted.hides_light` does when int() fails.

So that a preview's cost follows what it asks, not the file's size (version 2), each row also
holds its author as a dense ordinal (`uord`: distinct authors counted with an array of
booleans, no hashing of IDs) and its username as a 64-bit hash (`uname`: `author` compares an
integer column, not a string one). The footer says how many ordinals there are and whether two
usernames of the file share a hash (then `author` reads the names themselves). The columns a
preview reads are written plain and lightly compressed; text and lists with zstd.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from gatekeeper.domain import dsids, lines, spool
from gatekeeper.domain.dsids import identity
from gatekeeper.domain.formats import Record, load, records
from gatekeeper.rules.errors import BadInput
from gatekeeper.rules.r9 import author_id_of, retweet_of

VERSION = 2
ROWS = 65_536  # posts per row group: what a build holds in memory at once
META = b"gatekeeper.index"
SUFFIX = ".index.parquet"
BAD = -(2**63)  # an ID that is not one
_MAX = 2**63

_IDS = pa.list_(pa.int64())
SCHEMA = pa.schema([
    ("pid", pa.int64()), ("created", pa.timestamp("ms", tz="UTC")),
    ("created_raw", pa.string()),  # only an X-shaped time no calendar holds (compared as text)
    ("lang", pa.string()), ("author", pa.int64()), ("username", pa.string()),
    ("text", pa.string()), ("rt", pa.int64()), ("rt_author", pa.int64()),
    ("user", pa.int64()),  # the Users sheet's key: the attached author's ID, null without one
    ("ref_ids", _IDS), ("ref_authors", _IDS), ("ref_rt", _IDS), ("ref_rt_authors", _IDS),
    ("ref_users", _IDS),
    ("offset", pa.int64()), ("length", pa.int64()), ("position", pa.int32()),
    ("uord", pa.int32()),  # `user` as a dense ordinal from 1 (0: no user, or BAD)
    ("uname", pa.int64()),  # name_hash(username)
])
# Previews read these whole: no dictionary (decoding one costs more than it saves), lz4 (zstd
# takes 2-4x longer to decompress). lang, username and created_raw hold few distinct values.
_APPENDED = [f.name for f in SCHEMA if f.name not in ("uord", "uname")]
_HOT = ["pid", "created", "author", "rt", "rt_author", "user", "uord", "uname"]
_DICTIONARY = ["lang", "username", "created_raw"]
_WRITER = {"compression": {f.name: "lz4" if f.name in _HOT else "zstd" for f in SCHEMA},
           "use_dictionary": _DICTIONARY}


def name_hash(name: str) -> tuple[int, int]:
    """A username's two independent 64-bit hashes (signed): the first is stored per row, the
    second tells, while the index is built, two names that share the first apart."""
    digest = hashlib.blake2b(name.encode("utf-8", "surrogatepass"), digest_size=16).digest()
    return (int.from_bytes(digest[:8], "little", signed=True),
            int.from_bytes(digest[8:], "little", signed=True))


class _Sorted:
    """Keys met so far, sorted, with a value each (8 + 8 bytes a key): what the builder keeps
    of every user and every username instead of a Python dict (~100 bytes an entry)."""

    def __init__(self) -> None:
        self.keys = np.zeros(0, np.int64)
        self.values = np.zeros(0, np.int64)

    def find(self, keys: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(where each of `keys` (sorted, distinct) is or would go, whether it is there)."""
        at = np.searchsorted(self.keys, keys)
        found = at < len(self.keys)
        found[found] = self.keys[at[found]] == keys[found]
        return at, found

    def insert(self, at: np.ndarray, keys: np.ndarray, values: np.ndarray) -> None:
        self.keys = np.insert(self.keys, at, keys)
        self.values = np.insert(self.values, at, values)


def _int(value: Any) -> int | None:
    """An ID as R9 reads it (int() of it), None when absent, BAD when int() fails or it does
    not fit."""
    if value is None:
        return None
    try:
        n = int(value)
    except (TypeError, ValueError):
        return BAD
    return n if -_MAX < n < _MAX else BAD


def _user(post: dict[str, Any]) -> int | None:
    author = post.get("author")
    if not author:
        return None
    key = _int(author.get("id")) if isinstance(author, dict) else None
    return BAD if key is None else key


def _time(value: Any) -> tuple[datetime | None, str | None]:
    if not isinstance(value, str):
        return None, None
    try:
        return datetime.fromisoformat(value), None
    except ValueError:
        return None, value


class Builder:
    """Rows appended a post at a time, written a row group at a time to `out`."""

    def __init__(self, out: IO[bytes], ids: IO[bytes] | None = None) -> None:
        self._writer = pq.ParquetWriter(out, SCHEMA, **_WRITER)
        # The ID sidecar (`dsids`), written in the same pass when given its file.
        self.ids = dsids.Writer(ids) if ids is not None else None
        self._cols: dict[str, list[Any]] = {name: [] for name in _APPENDED}
        self.rows = 0
        self._open = True
        self._users = _Sorted()  # User ID -> ordinal
        self._names = _Sorted()  # first hash -> second hash
        self.names_exact = True  # no two usernames share a first hash
        self._hashed: dict[str, tuple[int, int]] = {}  # names recently hashed (most recur)
        self._append = tuple(self._cols[name].append for name in _APPENDED)

    def add(self, post: dict[str, Any], offset: int, length: int, position: int) -> None:
        self.row(post, _int(post["id"]), _int(author_id_of(post)), offset, length, position)

    def row(self, post: dict[str, Any], pid: int | None, author_id: int | None, offset: int,
            length: int, position: int) -> None:
        """`add`, given the post's ID and author ID as `_int` reads them: `dataset add` has
        computed them already."""
        # Called once a post (10 million times for 10 million posts): appends bound once.
        (pid_at, created_at, created_raw, lang, author_at, username, text, rt_at, rt_author_at,
         user_at, ref_ids, ref_authors, ref_rt, ref_rt_authors, ref_users, offset_at,
         length_at, position_at) = self._append
        pid_at(pid)
        created, raw = _time(post.get("created_at"))
        created_at(created)
        created_raw(raw)
        lang(str(post.get("lang") or "").lower())
        author_at(author_id)
        author = post.get("author")
        username(str((author or {}).get("username") or "").lower())
        text(str(post.get("text") or "").casefold())
        refs = post.get("referenced_tweets")
        if refs is None:  # most posts: no retweet, nothing referenced
            rt_at(None)
            rt_author_at(None)
            rt_id = rt_author_id = None
            rows: Any = ()
        else:
            rt, rt_author = retweet_of(post) or (None, None)
            rt_id, rt_author_id = _int(rt), _int(rt_author)
            rt_at(rt_id)
            rt_author_at(rt_author_id)
            rows = [r for r in refs if isinstance(r, dict) and "text" in r
                    and r.get("id") is not None] if isinstance(refs, list) else ()
        user_at(_user(post) if author else None)
        if rows:  # exports.columns.referenced_rows: the referenced posts the file holds
            ref_rts = [retweet_of(r) or (None, None) for r in rows]
            ref_ids([_int(r["id"]) for r in rows])
            ref_authors([_int(author_id_of(r)) for r in rows])
            ref_rt([_int(x[0]) for x in ref_rts])
            ref_rt_authors([_int(x[1]) for x in ref_rts])
            ref_users([_user(r) for r in rows])
        else:
            ref_ids(None)
            ref_authors(None)
            ref_rt(None)
            ref_rt_authors(None)
            ref_users(None)
        offset_at(offset)
        length_at(length)
        position_at(position)
        if self.ids is not None:
            self.ids.row(pid, author_id, rt_id, rt_author_id)
        self.rows += 1
        if len(self._cols["pid"]) >= ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._cols["pid"]:
            return
        self.write({f.name: pa.array(self._cols[f.name], f.type) for f in SCHEMA
                    if f.name in self._cols})
        for values in self._cols.values():
            values.clear()

    def write(self, arrays: dict[str, pa.Array]) -> None:
        """Write one row group of every column but those derived here (`uord`, `uname`)."""
        arrays = {**arrays, "uord": pa.array(self._ordinals(arrays["user"]), pa.int32()),
                  "uname": pa.array(self._hashes(arrays["username"]), pa.int64())}
        self._writer.write_batch(pa.record_batch([arrays[f.name] for f in SCHEMA],
                                                 schema=SCHEMA))

    def _ordinals(self, user: pa.Array) -> np.ndarray:
        """Each row's user as its ordinal: numbered from 1 as first met, 0 for none or BAD
        (which the Users sheet skips)."""
        ids = user.fill_null(0).to_numpy(zero_copy_only=False)
        out = np.zeros(len(ids), np.int32)
        real = np.nonzero((ids != 0) & (ids != BAD))[0]
        uniq, first, inverse = np.unique(ids[real], return_index=True, return_inverse=True)
        at, found = self._users.find(uniq)
        ords = np.zeros(len(uniq), np.int64)
        ords[found] = self._users.values[at[found]]
        new = np.nonzero(~found)[0]
        new = new[np.argsort(first[new], kind="stable")]
        ords[new] = np.arange(len(self._users.keys) + 1, len(self._users.keys) + 1 + len(new))
        self._users.insert(at[~found], uniq[~found], ords[~found])
        out[real] = ords[inverse.reshape(-1)]
        return out

    def _hashes(self, username: pa.Array) -> np.ndarray:
        """Each row's `name_hash(username)[0]`, hashing each distinct name once; notes whether
        two names of the file share it."""
        encoded = username.dictionary_encode()
        known = self._hashed
        if len(known) > 1 << 17:
            known.clear()  # bounded: ~20 MB
        pairs = []
        for name in encoded.dictionary.to_pylist():
            pair = known.get(name)
            if pair is None:
                pair = known[name] = name_hash(name)
            pairs.append(pair)
        first = np.array([p[0] for p in pairs], np.int64)
        second = np.array([p[1] for p in pairs], np.int64)
        uniq, at_first = np.unique(first, return_index=True)
        if len(uniq) < len(first):
            self.names_exact = False
        at, found = self._names.find(uniq)
        if (self._names.values[at[found]] != second[at_first[found]]).any():
            self.names_exact = False
        self._names.insert(at[~found], uniq[~found], second[at_first[~found]])
        return first[encoded.indices.to_numpy(zero_copy_only=False)]

    def finish(self, source: dict[str, Any]) -> None:
        """Write the last rows and the footer, which names the JSONL the index describes."""
        self._flush()
        self._writer.add_key_value_metadata(
            {META: json.dumps({"version": VERSION, "source": source, "rows": self.rows,
                               "users": len(self._users.keys),
                               "names_exact": self.names_exact})})
        self._writer.close()
        self._open = False
        if self.ids is not None:
            self.ids.finish(source)

    def abandon(self) -> None:
        """Stop writing (the file is anonymous: unnamed, it leaves nothing); idempotent."""
        if self._open:
            self._open = False
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()
        if self.ids is not None:
            self.ids.abandon()


def placed_records(read: Callable[[int], bytes], name: str, max_line_bytes: int,
                   builder: Builder) -> Iterator[Record]:
    """`formats.read_records`, every post also added to `builder` with its place: the byte
    offset and length of its line in the decompressed file, and its place among the line's
    posts."""
    for number, start, line in lines.placed(read, name, max_line_bytes):
        if not line or line.isspace():
            continue
        position = 0
        for is_post, obj in records(load(line, name, number), (name, number)):
            if is_post:
                builder.add(obj, start, len(line), position)
                position += 1
            yield is_post, obj


# --- which JSONL an index describes -------------------------------------------------------------


def index_path(directory: Path, name: str) -> Path:
    return directory / (name + SUFFIX)


def footer(pf: pq.ParquetFile) -> dict[str, Any]:
    """What the index's footer records (`Builder.finish`)."""
    recorded: dict[str, Any] = json.loads((pf.metadata.metadata or {})[META])
    return recorded


def describes(index: Path | Any, source: dict[str, Any]) -> bool:
    """Whether `index` (a path, or an open object-store file) is a complete index of this
    version for the JSONL of `source`."""
    try:
        meta = pq.read_metadata(index).metadata or {}
        recorded = json.loads(meta[META])
    except (OSError, pa.ArrowException, KeyError, ValueError):
        return False  # missing, cut short or not ours: rebuilt
    return bool(recorded.get("version") == VERSION and recorded.get("source") == source)


def build(data: Path, index: Path, max_line_bytes: int,
          progress: Callable[[int], None] | None = None, ids: Path | None = None
          ) -> dict[str, Any]:
    """(Re)build the index of `data` at `index` (and its ID sidecar at `ids`, if given); each
    appears only complete (spool.Unnamed). What it records of `data`."""
    source = identity(data)
    with spool.Unnamed(index.parent) as out, spool.Unnamed(index.parent) as sidecar:
        builder = Builder(out.file, sidecar.file if ids is not None else None)
        try:
            with lines.opened(data) as raw:
                read = raw
                if progress is not None:
                    def read(n: int) -> bytes:
                        chunk = raw(n)
                        progress(len(chunk))
                        return chunk
                for _ in placed_records(read, str(data), max_line_bytes, builder):
                    pass
        except BaseException:
            builder.abandon()
            raise
        if identity(data) != source:
            builder.abandon()
            raise BadInput(f"{data}: changed while it was being indexed; the index was not "
                           "written", file=str(data))
        builder.finish(source)
        out.name_as(index)
        if ids is not None:
            sidecar.name_as(ids)
    return source
