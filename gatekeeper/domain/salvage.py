"""`dataset add --skip-bad-lines`: keep every complete post of a collection that was cut off.

A twarc2 run stopped mid-write leaves its last line cut mid-JSON, or a gzip stream that stops
mid-member; a disk or a tool may spoil a line in the middle. With the flag, each such line is left
out and listed with its number and why, and the dataset's copy is rewritten to hold only the lines
kept, so no export, share or R9 check ever reads a skipped line (they read the copy). Without the
flag nothing here runs: the file is refused at its first bad line, as always.

The unit is the line: a twarc2 page that fails (one post with a bad ID, say) is skipped whole, so
a kept page is always a page as X sent it. A line past ``datasets.max_line_mb`` still refuses the
file: it is refused before it is read whole, to bound memory, so there is nothing to keep from it.
A gzip stream that ends early (or turns to garbage) keeps every line decompressed before the break;
the line it cuts, and the loss of what followed, are listed like any bad line.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import IO, Any

from gatekeeper.domain import lines
from gatekeeper.domain.formats import Record, load, read_records, records
from gatekeeper.rules.errors import BadInput

MAX_LISTED = 1000  # skipped lines listed in full; past this only counted
BATCH = 1 << 20  # bytes of kept lines written at a time


@dataclass
class Skipped:
    """The lines left out: how many, the first MAX_LISTED with their reasons, every number."""

    count: int = 0
    lines: list[dict[str, Any]] = field(default_factory=list)
    numbers: set[int] = field(default_factory=set)  # ints: bounded even for millions of lines

    def skip(self, number: int, reason: str) -> None:
        self.count += 1
        self.numbers.add(number)
        if len(self.lines) < MAX_LISTED:
            self.lines.append({"line": number, "reason": reason})


def words(n: int) -> str:
    """"1 bad line skipped", "2 bad lines skipped": how every channel says it."""
    return f"{n:,} bad line{'' if n == 1 else 's'} skipped"


def read(read: Callable[[int], bytes], name: str, max_line_bytes: int,
         skipped: Skipped | None) -> Iterator[Record]:
    """`formats.read_records` — or, given `skipped`, the same without the bad lines, each
    recorded in `skipped`."""
    if skipped is None:
        yield from read_records(read, name, max_line_bytes)
        return
    cut: list[str] = []
    last = 0
    for number, line in _lines(read, name, max_line_bytes, cut):
        last = number
        if not line or line.isspace():
            continue
        try:
            # Whole before any is yielded: a line that fails half-way gives nothing.
            found = list(records(load(line, name, number), (name, number)))
        except BadInput as exc:
            skipped.skip(number, _reason(exc, name, number))
            continue
        yield from found
    if cut:
        if last in skipped.numbers:  # the stream broke inside the last line
            for entry in skipped.lines[-1:]:
                if entry["line"] == last:
                    entry["reason"] += f"; {cut[0]}"
        else:
            after = f"after line {last:,} " if last else ""
            skipped.skip(last + 1, f"{cut[0]}: nothing {after}could be read")


def rewrite(read: Callable[[int], bytes], name: str, max_line_bytes: int, skipped: Skipped,
            out: IO[bytes], gz: bool) -> tuple[str, int]:
    """Write the source's lines that were not skipped to `out` (gzip again if it was gzip);
    the sha256 and size of what was written."""
    sink = _Hashing(out)
    target: Any = gzip.GzipFile(filename="", fileobj=sink, mode="wb", compresslevel=6,
                                mtime=0) if gz else sink
    batch: list[bytes] = []
    size = 0
    for number, line in _lines(read, name, max_line_bytes, []):
        if line and not line.isspace() and number not in skipped.numbers:
            batch.append(line)
            size += len(line) + 1
            if size >= BATCH:
                target.write(b"\n".join(batch) + b"\n")
                batch, size = [], 0
    if batch:
        target.write(b"\n".join(batch) + b"\n")
    if gz:
        target.close()  # the gzip trailer; `out` itself stays open
    return sink.sha.hexdigest(), sink.size


def _lines(read: Callable[[int], bytes], name: str, max_line_bytes: int,
           cut: list[str]) -> Iterator[tuple[int, bytes]]:
    """Every line with its 1-based number, blank ones too; a gzip stream that breaks ends the
    lines there, why in `cut`. A failing read is not a break: it still refuses the file."""
    failed: list[BaseException] = []

    def guarded(n: int) -> bytes:
        try:
            return read(n)
        except BaseException as exc:
            failed.append(exc)
            raise

    def until_break(pieces: Iterator[bytes]) -> Iterator[bytes]:
        try:
            yield from pieces
        except BadInput as exc:
            if failed:
                raise
            cut.append(exc.message.removeprefix(f"{name}: "))

    chunks = until_break(lines.chunks(guarded, name))
    return enumerate(lines.split(chunks, name, max_line_bytes), 1)


def _reason(exc: BadInput, name: str, number: int) -> str:
    """The error's words without the "FILE, line N: " the listing already gives."""
    return exc.message.removeprefix(f"{name}, line {number}: ")


class _Hashing:
    """A writer that hashes and counts what it passes on."""

    def __init__(self, out: IO[bytes]) -> None:
        self.out = out
        self.sha = hashlib.sha256()
        self.size = 0

    def write(self, data: bytes) -> int:
        self.out.write(data)
        self.sha.update(data)
        self.size += len(data)
        return len(data)

    def flush(self) -> None:
        self.out.flush()
