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
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import pyarrow as pa
import pyarrow.parquet as pq

from gatekeeper.domain import lines, spool
from gatekeeper.domain.formats import Record, load, records
from gatekeeper.rules.errors import BadInput
from gatekeeper.rules.r9 import author_id_of, retweet_of

VERSION = 1
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
])


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

    def __init__(self, out: IO[bytes]) -> None:
        self._writer = pq.ParquetWriter(out, SCHEMA, compression="zstd")
        self._cols: dict[str, list[Any]] = {name: [] for name in SCHEMA.names}
        self.rows = 0
        self._open = True

    def add(self, post: dict[str, Any], offset: int, length: int, position: int) -> None:
        c = self._cols
        c["pid"].append(_int(post["id"]))
        created, raw = _time(post.get("created_at"))
        c["created"].append(created)
        c["created_raw"].append(raw)
        c["lang"].append(str(post.get("lang") or "").lower())
        c["author"].append(_int(author_id_of(post)))
        c["username"].append(str((post.get("author") or {}).get("username") or "").lower())
        c["text"].append(str(post.get("text") or "").casefold())
        rt, rt_author = retweet_of(post) or (None, None)
        c["rt"].append(_int(rt))
        c["rt_author"].append(_int(rt_author))
        c["user"].append(_user(post))
        refs = post.get("referenced_tweets")
        rows = [r for r in refs if isinstance(r, dict) and "text" in r
                and r.get("id") is not None] if isinstance(refs, list) else ()
        if rows:  # exports.columns.referenced_rows: the referenced posts the file holds
            ref_rts = [retweet_of(r) or (None, None) for r in rows]
            c["ref_ids"].append([_int(r["id"]) for r in rows])
            c["ref_authors"].append([_int(author_id_of(r)) for r in rows])
            c["ref_rt"].append([_int(x[0]) for x in ref_rts])
            c["ref_rt_authors"].append([_int(x[1]) for x in ref_rts])
            c["ref_users"].append([_user(r) for r in rows])
        else:
            for name in ("ref_ids", "ref_authors", "ref_rt", "ref_rt_authors", "ref_users"):
                c[name].append(None)
        c["offset"].append(offset)
        c["length"].append(length)
        c["position"].append(position)
        self.rows += 1
        if len(c["pid"]) >= ROWS:
            self._flush()

    def _flush(self) -> None:
        if not self._cols["pid"]:
            return
        batch = pa.record_batch([pa.array(self._cols[f.name], f.type) for f in SCHEMA],
                                schema=SCHEMA)
        self._writer.write_batch(batch)
        for values in self._cols.values():
            values.clear()

    def finish(self, source: dict[str, Any]) -> None:
        """Write the last rows and the footer, which names the JSONL the index describes."""
        self._flush()
        self._writer.add_key_value_metadata(
            {META: json.dumps({"version": VERSION, "source": source, "rows": self.rows})})
        self._writer.close()
        self._open = False

    def abandon(self) -> None:
        """Stop writing (the file is anonymous: unnamed, it leaves nothing); idempotent."""
        if self._open:
            self._open = False
            with contextlib.suppress(OSError, pa.ArrowException):
                self._writer.close()


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


SAMPLES, SAMPLE = 16, 4096


def identity(path: Path) -> dict[str, Any]:
    """The JSONL's identity, cheaply: size, mtime and a sha256 of 16 blocks spread over it."""
    st = os.stat(path)
    sha = hashlib.sha256()
    with open(path, "rb") as fh:
        step = max(0, st.st_size - SAMPLE) / (SAMPLES - 1)
        for i in range(SAMPLES):
            fh.seek(int(i * step))
            sha.update(fh.read(SAMPLE))
    return {"bytes": st.st_size, "mtime_ns": st.st_mtime_ns, "fingerprint": sha.hexdigest()}


def index_path(directory: Path, name: str) -> Path:
    return directory / (name + SUFFIX)


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
          progress: Callable[[int], None] | None = None) -> dict[str, Any]:
    """(Re)build the index of `data` at `index`; it appears only complete (spool.Unnamed).
    What it records of `data`."""
    source = identity(data)
    with spool.Unnamed(index.parent) as out:
        builder = Builder(out.file)
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
    return source
