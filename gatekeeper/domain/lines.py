"""Lines of any input, with a cap on their length: the one line reader every file and upload
goes through (dataset files, ID files, uploaded ID lists, deletion lists).

A line is refused as soon as it passes the cap (config ``datasets.max_line_mb``), naming the
input, the line number and the cap; so a single 800 MB line in a 0.8 MB gzip costs 16 MB of
memory and 16 MB of reading, not 1.7 GB. A line spread over many chunks is collected as a list
of pieces and joined once, never rebuilt per chunk. A UTF-8 byte-order mark before the first
line (Windows editors write one) is dropped.
"""

from __future__ import annotations

import contextlib
import zlib
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

from gatekeeper.rules.errors import BadInput, LineTooLong

MAX_LINE_BYTES = 16 << 20  # datasets.max_line_mb's default, for callers without a config
CHUNK = 1 << 20  # bytes read at a time: large reads are what make gzip and splitting cheap
BOM = b"\xef\xbb\xbf"
GZIP_MAGIC = b"\x1f\x8b"


def size_text(n: int) -> str:
    """A byte count as a person reads a limit: 16 MB, 4 KB, 100 bytes."""
    for unit, shift in (("MB", 20), ("KB", 10)):
        if n >= 1 << shift and n % (1 << shift) == 0:
            return f"{n >> shift:,} {unit}"
    return f"{n:,} bytes"


def too_long(source: str, number: int, max_bytes: int) -> LineTooLong:
    return LineTooLong(
        f"{source}, line {number}: longer than the line limit of {size_text(max_bytes)} "
        "(datasets.max_line_mb); nothing was read past it",
        file=source, line=number, limit_bytes=max_bytes)


def split(chunks: Iterable[bytes], source: str,
          max_bytes: int = MAX_LINE_BYTES) -> Iterator[bytes]:
    """Every line of the bytes in `chunks`, without its newline, blank lines included (so a
    caller's count is the line number); LineTooLong for the first line over `max_bytes`."""
    number = 0  # lines yielded so far
    carry: list[bytes] = []  # the pieces of the line that has not ended yet
    carried = 0
    for chunk in chunks:
        pieces = chunk.split(b"\n")
        last = pieces.pop()
        if pieces:
            if carry:
                if carried + len(pieces[0]) > max_bytes:
                    raise too_long(source, number + 1, max_bytes)
                pieces[0] = b"".join([*carry, pieces[0]])
                carry, carried = [], 0
            if len(chunk) > max_bytes:  # only a chunk longer than the cap can hold such a line
                for i, piece in enumerate(pieces):
                    if len(piece) > max_bytes:
                        raise too_long(source, number + i + 1, max_bytes)
            if number == 0 and pieces[0].startswith(BOM):
                pieces[0] = pieces[0][len(BOM):]
            number += len(pieces)
            yield from pieces
        if last:
            carried += len(last)
            if carried > max_bytes:
                raise too_long(source, number + 1, max_bytes)
            carry.append(last)
    if carry:
        line = b"".join(carry)
        yield line.removeprefix(BOM) if number == 0 else line


def read(reader: Callable[[int], bytes], source: str, max_bytes: int = MAX_LINE_BYTES,
         size: int = CHUNK) -> Iterator[bytes]:
    """`split` over a reader (a file's or a request stream's ``read``), `size` bytes at a time."""
    return split(iter(lambda: reader(size), b""), source, max_bytes)


# --- reading files: gzip told by its magic bytes, decompressed in bounded pieces ---------------


def gunzip(raw: bytes, read: Callable[[int], bytes], name: str) -> Iterator[bytes]:
    d, eof = zlib.decompressobj(wbits=31), False
    while True:
        if not raw and not eof:
            raw = read(CHUNK)
            eof = not raw
        try:
            out = d.decompress(raw, CHUNK)  # bounded: a gzip bomb cannot blow memory up
        except zlib.error as exc:
            raise BadInput(f"{name}: not a valid gzip file ({exc})", file=name) from None
        if out:
            yield out
        if d.eof:  # end of one member; gzip allows several in a row
            raw = d.unused_data or (b"" if eof else read(CHUNK))
            if not raw:
                return
            d = zlib.decompressobj(wbits=31)
        else:
            raw = d.unconsumed_tail
            if eof and not raw and not out:
                raise BadInput(f"{name}: the gzip data ends early (truncated file?)", file=name)


def chunks(read: Callable[[int], bytes], name: str) -> Iterator[bytes]:
    """The decompressed content behind `read`, in large pieces; gzip is told by magic bytes."""
    head = read(CHUNK)
    if head[:2] == GZIP_MAGIC:
        yield from gunzip(head, read, name)
        return
    while head:
        yield head
        head = read(CHUNK)


def numbered(pieces: Iterator[bytes], name: str, max_bytes: int) -> Iterator[tuple[int, bytes]]:
    """Non-blank lines with their 1-based numbers; a line may span many chunks."""
    for number, line in enumerate(split(pieces, name, max_bytes), 1):
        if line and not line.isspace():
            yield number, line


def placed(read: Callable[[int], bytes], name: str, max_bytes: int
           ) -> Iterator[tuple[int, int, bytes]]:
    """(number, offset, line) for every line of the decompressed content behind `read`, blank
    lines included; `offset` is the line's first byte in that content (past a byte-order mark,
    which `split` drops from the first line) — where a dataset index says a post is."""
    head = bytearray()

    def noting(pieces: Iterator[bytes]) -> Iterator[bytes]:
        for piece in pieces:
            if len(head) < len(BOM):
                head.extend(piece[:len(BOM) - len(head)])
            yield piece

    offset = 0
    for number, line in enumerate(split(noting(chunks(read, name)), name, max_bytes), 1):
        if number == 1 and bytes(head) == BOM:
            offset = len(BOM)
        yield number, offset, line
        offset += len(line) + 1


@contextlib.contextmanager
def opened(path: Path) -> Iterator[Callable[[int], bytes]]:
    try:
        fh = open(path, "rb")  # noqa: SIM115 - closed below, after the caller's loop
    except OSError as exc:
        raise BadInput(f"{path}: cannot read the dataset file ({exc.strerror})",
                       file=str(path)) from None
    with fh:
        yield fh.read
