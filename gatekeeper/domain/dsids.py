"""A dataset's ID sidecar (issue 14 item 6): what an ID share of the whole dataset reads, as
plain fixed-width sections beside the index, read without pyarrow or numpy.

`dataset add` (and every index build) writes ``NAME.ids`` beside ``NAME.index.parquet``, one
entry per index row (post), in file order:

- ``text``: each post's ID as the share writes it (decimal, newline-ended), so that a share
  copies bytes and never formats a number; ``offsets`` says where every `BLOCK` rows start in it;
- ``pid`` and ``author``: the post's ID and its author's as little-endian int64 (what R9 checks);
- ``flags``: one byte a post — `FIRST` (the first row of its ID), `DUP` (its ID is on more than
  one row: overlapping collections);
- ``rt``: (row, retweeted post, its author) for the rows that retweet (R9 hides a retweet of a
  hidden post);
- ``sorted`` and ``firstpos``: the distinct IDs ascending, each with the row it first appears
  on — what a manifest (sorted IDs) of a grant of the first N is made from in bounded memory.

A trailer (JSON, then its length and `MAGIC`) records the version, the section offsets and the
JSONL's identity, as the index's footer does: a sidecar that does not describe the JSONL as it
is now is rebuilt with the index (`Datasets.reindex`), never read. A dataset whose IDs are not
all plain (an ID that is not a number, a negative one, a value equal to `NONE`) is marked so,
and its shares read the index instead.

numpy loads only while a sidecar is written (`Writer.finish`, inside `dataset add`).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

from gatekeeper.domain import spool

VERSION = 1
SUFFIX = ".ids"
MAGIC = b"GKIDS\x00\x00\x01"
TAIL = struct.Struct("<I8s")  # trailer length, magic
BLOCK = 1 << 13  # rows a share reads at a time (~250 KB of sections: memory is the goal)
BAD = -(2**63)  # an ID that is not one (as dsindex.BAD)
NONE = BAD + 1  # no ID (no author, no retweet)
FIRST, DUP = 1, 2
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


def sidecar_path(directory: Path, name: str) -> Path:
    return directory / (name + SUFFIX)


# --- writing (inside an index build) ------------------------------------------------------------


class Writer:
    """A sidecar written a post at a time beside an index build (`dsindex.Builder`): the
    sections spooled to anonymous files, joined into `out` by `finish`."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self._files = {name: spool.anonymous() for name in ("text", "pid", "author", "rt")}
        self._text: list[str] = []
        self._pid = array("q")
        self._author = array("q")
        self._rt = array("q")
        self.rows = 0
        self.retweets = 0
        self.plain = True  # every ID a non-negative number, no value equal to NONE
        self._offsets = array("q", [0])
        self._text_bytes = 0

    def row(self, pid: int | None, author: int | None, rt: int | None,
            rt_author: int | None) -> None:
        """One post: its ID, author, and retweeted post and its author, as `dsindex._int`
        reads them (None: absent; BAD: not an ID)."""
        if pid is None or pid < 0:
            self.plain = False
            pid = BAD if pid is None else pid
        self._pid.append(pid)
        self._text.append(str(pid))
        self._author.append(self._value(author))
        if rt is not None or rt_author is not None:
            self._rt.extend((self.rows, self._value(rt), self._value(rt_author)))
            self.retweets += 1
        self.rows += 1
        if self.rows % BLOCK == 0:
            self._flush()

    def _value(self, value: int | None) -> int:
        if value is None:
            return NONE
        if value == NONE:
            self.plain = False
        return value

    def _flush(self) -> None:
        text = ("\n".join(self._text) + "\n").encode() if self._text else b""
        self._files["text"].write(text)
        self._text_bytes += len(text)
        self._offsets.append(self._text_bytes)
        for name, values in (("pid", self._pid), ("author", self._author), ("rt", self._rt)):
            self._files[name].write(values.tobytes())
            del values[:]
        self._text.clear()

    def finish(self, source: dict[str, Any]) -> None:
        """Write the sections and the trailer naming the JSONL `source` (numpy sorts here)."""
        import numpy as np

        if self.rows % BLOCK:
            self._flush()
        pid_file = self._files["pid"]
        pid_file.flush()
        pid_file.seek(0)
        pids = np.fromfile(pid_file, dtype=np.dtype("<i8"), count=self.rows) if self.rows \
            else np.zeros(0, "<i8")
        order = np.argsort(pids, kind="stable")  # stable: a run's first is its first row
        ordered = pids[order]
        del pids  # 8 bytes a post for the order, 8 for the sorted IDs, 3 for the masks
        starts = np.ones(self.rows, dtype=bool)
        np.not_equal(ordered[1:], ordered[:-1], out=starts[1:])
        ends = np.ones(self.rows, dtype=bool)
        ends[:-1] = starts[1:]
        flags = np.zeros(self.rows, dtype=np.uint8)
        flags[order[starts]] |= FIRST
        alone = starts & ends
        flags[order[~alone]] |= DUP  # not alone in its run
        duplicated = int(np.count_nonzero(starts & ~ends))
        distinct = int(np.count_nonzero(starts))
        del ends, alone
        sections: dict[str, list[int]] = {}

        def put(name: str, data: Any) -> None:
            at = self.out.tell()
            if isinstance(data, bytes | memoryview):
                self.out.write(data)
            else:  # a spooled section
                data.flush()
                data.seek(0)
                while chunk := data.read(spool.BUFFER):
                    self.out.write(chunk)
            sections[name] = [at, self.out.tell() - at]

        def put_firsts(name: str, values: Any) -> None:
            """The first of each run of `values` (in sorted order), a slice at a time."""
            at = self.out.tell()
            for i in range(0, self.rows, 1 << 20):
                part = values[i:i + (1 << 20)][starts[i:i + (1 << 20)]]
                self.out.write(part.astype("<i8").data)
            sections[name] = [at, self.out.tell() - at]

        for name in ("text", "pid", "author", "rt"):
            put(name, self._files[name])
            self._files[name].close()
        put("offsets", self._offsets.tobytes())
        put("flags", flags.data)
        del flags
        put_firsts("sorted", ordered)
        put_firsts("firstpos", order)
        del order, ordered
        trailer = json.dumps({"version": VERSION, "source": source, "rows": self.rows,
                              "distinct": distinct, "duplicated": duplicated,
                              "retweets": self.retweets, "plain": self.plain, "block": BLOCK,
                              "sections": sections}, sort_keys=True).encode()
        self.out.write(trailer + TAIL.pack(len(trailer), MAGIC))

    def abandon(self) -> None:
        for fh in self._files.values():
            fh.close()


# --- reading (a share) --------------------------------------------------------------------------


def trailer(path: Path) -> dict[str, Any] | None:
    """What a sidecar's trailer records; None when it is missing, cut short or not ours."""
    try:
        with open(path, "rb") as fh:
            size = fh.seek(0, os.SEEK_END)
            if size < TAIL.size:
                return None
            fh.seek(size - TAIL.size)
            length, magic = TAIL.unpack(fh.read(TAIL.size))
            if magic != MAGIC or length > size - TAIL.size:
                return None
            fh.seek(size - TAIL.size - length)
            meta = json.loads(fh.read(length))
    except (OSError, ValueError):
        return None
    if not isinstance(meta, dict):
        return None
    end = size - TAIL.size - length
    sections = meta.get("sections")
    if not isinstance(sections, dict) or any(
            not isinstance(v, list) or len(v) != 2 or v[0] < 0 or v[1] < 0 or sum(v) > end
            for v in sections.values()):
        return None
    return meta


def describes(path: Path, source: dict[str, Any]) -> bool:
    """Whether `path` is a complete sidecar of this version for the JSONL of `source`."""
    meta = trailer(path)
    return bool(meta and meta.get("version") == VERSION and meta.get("source") == source)


class Sidecar:
    """An open sidecar: its sections read a block of rows at a time (`os.pread`)."""

    def __init__(self, path: Path) -> None:
        meta = trailer(path)
        if meta is None:
            raise ValueError(f"{path} is not an ID sidecar")
        self.meta = meta
        self.rows: int = meta["rows"]
        self.block: int = meta["block"]
        self._fd = os.open(path, os.O_RDONLY)
        self._sections: dict[str, list[int]] = meta["sections"]
        self._offsets = memoryview(self._read("offsets", 0, None)).cast("q")

    def _read(self, name: str, at: int, size: int | None) -> bytes:
        start, length = self._sections[name]
        size = length - at if size is None else min(size, length - at)
        data = os.pread(self._fd, size, start + at) if size > 0 else b""
        if len(data) != max(size, 0):
            raise OSError(f"the ID sidecar's {name} section is cut short")
        return data

    def _ints(self, name: str, first: int, count: int) -> memoryview:
        return memoryview(self._read(name, 8 * first, 8 * count)).cast("q")

    def blocks(self, authors: bool = False) -> Iterator[tuple[int, bytes, memoryview,
                                                              memoryview | None, bytes]]:
        """(first row, the rows' ID lines, their IDs, their authors (if asked), their flags),
        `block` rows at a time, in file order."""
        for k, first in enumerate(range(0, self.rows, self.block)):
            count = min(self.block, self.rows - first)
            text = self._read("text", self._offsets[k], self._offsets[k + 1] - self._offsets[k])
            yield (first, text, self._ints("pid", first, count),
                   self._ints("author", first, count) if authors else None,
                   self._read("flags", first, count))

    def retweets(self) -> Iterator[tuple[int, int, int]]:
        """(row, retweeted post, its author) of every row that retweets, by row."""
        step = 3 * self.block
        for at in range(0, 3 * self.meta["retweets"], step):
            values = self._ints("rt", at, min(step, 3 * self.meta["retweets"] - at))
            yield from zip(values[0::3], values[1::3], values[2::3], strict=True)

    def sorted_blocks(self) -> Iterator[tuple[memoryview, memoryview]]:
        """(distinct IDs ascending, the row each first appears on), `block` at a time."""
        distinct = self.meta["distinct"]
        for first in range(0, distinct, self.block):
            count = min(self.block, distinct - first)
            yield self._ints("sorted", first, count), self._ints("firstpos", first, count)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    def __enter__(self) -> Sidecar:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
