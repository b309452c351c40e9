"""Uploaded ID lists validated a block at a time (issue 14 item 6): the per-line rules' outcome
in every case — the same IDs, order, digest, counts, and the same errors naming the same lines
and values — with no Python per line when the list is canonical."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path
from unittest import mock

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.domain import idlists, lines, shares
from gatekeeper.rules.errors import BadInput, LineTooLong
from gatekeeper.rules.r9 import Deleted

NOTHING = Deleted(0, frozenset(), frozenset())
MB = 1 << 20
BOM = b"\xef\xbb\xbf"
FIRST = 1_460_000_000_000_000_000  # 19-digit snowflakes, as real Post IDs are


def cut(data: bytes, sizes: list[int]) -> list[bytes]:
    """`data` in chunks of the given sizes, cycled: where a reader's chunks end is arbitrary."""
    chunks, i, k = [], 0, 0
    while i < len(data):
        size = sizes[k % len(sizes)]
        chunks.append(data[i:i + size])
        i, k = i + size, k + 1
    return chunks


def outcome(select: object) -> tuple[object, ...]:
    """What a selection came to: its IDs as spooled, digest and counts; or the error, whole."""
    try:
        sel = select()  # type: ignore[operator]
    except BadInput as exc:
        return (type(exc).__name__, exc.message, exc.details)
    with sel:
        return ("ok", b"".join(sel.head(sel.count)), sel.digest, sel.count, sel.removed,
                sel.repeats)


def both(data: bytes, sizes: list[int], cap: int = lines.MAX_LINE_BYTES,
         deleted: Deleted = NOTHING, kind: str = "posts") -> tuple[tuple, tuple]:
    """The per-line rules (`select_ids` over the line reader) with repeats found by the bitmap
    pass, and the block path with repeats found by numpy (`repeated_ids`, which large lists
    take), same input."""
    with mock.patch.object(shares, "EXACT_FROM", 10**9):
        old = outcome(lambda: shares.select_ids(lines.split(iter(cut(data, sizes)), "up", cap),
                                                "up", kind, deleted))
    with mock.patch.object(shares, "EXACT_FROM", 0):
        new = outcome(lambda: shares.select_id_stream(iter(cut(data, sizes)), "up", kind,
                                                      deleted, cap))
    return old, new


def ids(n: int, start: int = 0) -> list[bytes]:
    return [str(FIRST + (start + i) * 7919).encode() for i in range(n)]


# --- the two paths against each other ----------------------------------------------------------

PIECES = [
    b"1", b"7", b"123", b"9223372036854775807", b"9223372036854775808", b"9999999999999999999",
    b"1000000000000000000", b"12345678901234567890", b"0", b"01", b"00", b"-1", b"+1", b"1e5",
    b"1_000", b"\xd9\xa3", b"\xef", BOM, b" ", b"\t", b"\x0b", b"\x0c", b"\x1c", b"\x00",
    b"\r", b"\r\n", b"\n", b"\n", b"\n", b"abc", str(FIRST).encode(), b"9" * 19, b"9" * 18,
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(PIECES), max_size=60),
       st.lists(st.integers(1, 40), min_size=1, max_size=6),
       st.sampled_from([8, 19, 21, 40, lines.MAX_LINE_BYTES]),
       st.sets(st.sampled_from([1, 7, 123, FIRST, 2**63 - 1]), max_size=3),
       st.sampled_from(["posts", "users"]))
def test_the_block_path_ends_as_the_per_line_rules_on_hostile_input(
        parts: list[bytes], sizes: list[int], cap: int, hidden: set[int], kind: str) -> None:
    data = b"".join(parts)
    deleted = Deleted(1, frozenset(hidden), frozenset(hidden))
    try:
        old, new = both(data, sizes, cap, deleted, kind)
    except LineTooLong as exc:  # the old path raised it: so must the new, naming the same line
        with pytest.raises(LineTooLong) as again:
            shares.select_id_stream(iter(cut(data, sizes)), "up", kind, deleted, cap).close()
        assert again.value.message == exc.message and again.value.details == exc.details
        return
    assert new == old


@settings(max_examples=60, deadline=None)
@given(st.lists(st.integers(1, 2**63 - 1), max_size=300), st.sampled_from([b"\n", b"\r\n"]),
       st.lists(st.integers(1, 5000), min_size=1, max_size=4), st.booleans(),
       st.lists(st.integers(0, 299), max_size=12))
def test_the_block_path_ends_as_the_per_line_rules_on_valid_lists(
        values: list[int], eol: bytes, sizes: list[int], final_newline: bool,
        repeat: list[int]) -> None:
    listed = [str(v).encode() for v in values]
    listed += [listed[i % len(listed)] for i in repeat] if listed else []
    data = eol.join(listed) + (eol if final_newline and listed else b"")
    hidden = frozenset(values[1:3])
    for deleted in (NOTHING, Deleted(1, hidden, frozenset())):
        old, new = both(data, sizes, deleted=deleted)
        assert new == old and new[0] == "ok"


# --- the cases the fast path must still catch, in a list that is canonical around them ----------


def upload(data: bytes) -> shares.Selection:
    return shares.select_id_stream(iter(cut(data, [1 << 16])), "upload", "posts", NOTHING)


@pytest.mark.parametrize("bad", [b"12a", b"1 2", b"\x00", b"123\x00", b"0", b"0123",
                                 b"12345678901234567890", b"9223372036854775808", b"-5",
                                 b"\xd9\xa3\xd9\xa4", b"1e18"],
                         ids=["letter", "inner-space", "NUL", "trailing-NUL", "zero",
                              "leading-zero", "20-digit", "2^63", "negative", "arabic-digits",
                              "exponent"])
def test_a_bad_line_among_50_000_ids_is_named_with_its_line_and_value(bad: bytes) -> None:
    listed = ids(50_000)
    listed[37_000] = bad
    with pytest.raises(BadInput) as exc:
        upload(b"\n".join(listed) + b"\n")
    assert exc.value.details["invalid_lines"] == 1
    shown = bad.decode("utf-8", "replace")
    assert exc.value.details["details"] == [
        {"line": 37_001, "message": f"{shown!r} is not a Post/User ID (a positive decimal "
                                    "integer below 2^63)"}]
    assert f"e.g. line 37,001: {shown!r}" in exc.value.message or \
        f"e.g. line 37001: {shown!r}" in exc.value.message


def test_every_bad_line_is_counted_and_the_first_thousand_listed() -> None:
    listed = ids(30_000)
    for i in range(5, 30_000, 20):  # 1,500 bad lines, across many blocks
        listed[i] = b"x" + listed[i]
    with pytest.raises(BadInput) as exc:
        upload(b"\n".join(listed) + b"\n")
    assert exc.value.details["invalid_lines"] == 1_500
    listed_lines = [p["line"] for p in exc.value.details["details"]]
    assert listed_lines == list(range(6, 20_000, 20))
    assert "(first 1000 listed)" in exc.value.message


@pytest.mark.parametrize("shape", ["crlf", "no-final-newline", "blank-lines", "spaces", "bom",
                                   "crlf-no-final-newline"])
def test_lists_the_rules_allow_give_the_canonical_ids(shape: str) -> None:
    listed = ids(20_000)
    canonical = b"\n".join(listed) + b"\n"
    data = {
        "crlf": b"\r\n".join(listed) + b"\r\n",
        "no-final-newline": b"\n".join(listed),
        "blank-lines": b"\n\n".join(listed) + b"\n\n\n",
        "spaces": b"\n".join(b" \t" + i + b" " for i in listed) + b"\n",
        "bom": BOM + canonical,
        "crlf-no-final-newline": b"\r\n".join(listed),
    }[shape]
    with upload(data) as sel:
        assert sel.count == 20_000
        assert b"".join(sel.head(sel.count)) == canonical
        assert sel.digest == hashlib.sha256(canonical).hexdigest()


def test_an_id_listed_twice_across_blocks_leaves_once() -> None:
    listed = ids(100_000)
    listed.append(listed[3])
    with upload(b"\n".join(listed) + b"\n") as sel:
        assert (sel.count, sel.repeats) == (100_000, 1)


def test_an_800_mb_single_line_is_refused_at_the_cap_reading_little_past_it() -> None:
    read = 0

    def endless() -> Iterator[bytes]:  # 800 MB of digits, made as they are read
        nonlocal read
        for _ in range(800):
            read += MB
            yield b"7" * MB

    with pytest.raises(LineTooLong) as exc:
        shares.select_id_stream(endless(), "upload", "posts", NOTHING).close()
    assert (exc.value.details["file"], exc.value.details["line"]) == ("upload", 1)
    assert exc.value.details["limit_bytes"] == 16 * MB
    assert read <= 17 * MB


def test_a_long_line_after_a_bad_one_is_still_refused_as_too_long(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"1\nnope\n3\n" + b"4" * 5000 + b"\n5\n")
    with pytest.raises(LineTooLong) as exc:
        shares.select_id_file(path, "posts", NOTHING, max_line_bytes=4096)
    assert exc.value.details["line"] == 4


# --- no Python per line on the happy path --------------------------------------------------------


@pytest.mark.parametrize("eol", [b"\n", b"\r\n"], ids=["LF", "CRLF"])
def test_a_canonical_list_is_validated_without_looking_at_each_line(
        eol: bytes, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    def per_line(*args: object) -> None:
        raise AssertionError("a canonical list went line by line")

    monkeypatch.setattr(idlists.Checker, "line", per_line)
    monkeypatch.setattr(idlists, "is_id", per_line)
    path = tmp_path / "ids.txt"
    path.write_bytes(eol.join(ids(200_000)) + eol)
    with shares.select_id_file(path, "posts", NOTHING) as sel:
        assert sel.count == 200_000


@settings(max_examples=500, deadline=None)
@given(st.integers(1, 21), st.lists(st.text("0123456789", min_size=1, max_size=3)
                                     | st.sampled_from(["9", "92", "0", " ", "\r", "\x00", "a",
                                                        "\n", "٣"]), min_size=1, max_size=80),
       st.booleans())
def test_a_block_of_one_line_length_is_judged_as_the_regular_expression_judges_it(
        width: int, pieces: list[str], crlf: bool) -> None:
    """The table check (lines of one length) against the regular expression alone, on blocks
    cut into lines of `width` bytes from digits and what must not pass: a stray newline, a
    space, a "\\r", a NUL, a letter, a leading 0, 19 digits from 9, over 19 digits."""
    text = "".join(pieces).encode()
    body = text[:len(text) - len(text) % width] or text
    rows = [body[i:i + width] for i in range(0, len(body), width)]
    eol = b"\r\n" if crlf else b"\n"
    block = eol.join(rows) + eol
    assert idlists.canonical(block) == idlists.matched(block.replace(b"\r\n", b"\n"))


def test_a_table_of_19_digit_ids_from_9_is_compared_with_2_to_the_63() -> None:
    top = b"9223372036854775807\n"
    assert idlists.canonical(top * 3) == top * 3
    for bad in (b"9223372036854775808\n", b"9999999999999999999\n"):
        assert idlists.canonical(top + bad + top) is None
        assert idlists.canonical(bad + top) is None
    assert idlists.canonical(b"12345678901234567890\n" * 3) is None  # 20 digits: over 2^63


def test_the_canonical_check_refuses_what_the_per_line_rules_refuse() -> None:
    assert idlists.canonical(b"1\n22\n9223372036854775807\n") is not None
    assert idlists.canonical(b"1\r\n22\r\n") == b"1\n22\n"
    for block in (b"9223372036854775808\n", b"1\n9223372036854775808\n", b"1\n\n",
                  b"\n", b"01\n", b"1 \n", b"1\r\r\n", b"1\x00\n", b"12345678901234567890\n",
                  b"1\n9999999999999999999\n2\n"):
        assert idlists.canonical(block) is None, block


# --- writing a selection out (shares.write_file): the kernel's copy and the read-write one -------


def selected(ids: list[int]) -> shares.Selection:
    data = b"".join(b"%d\n" % i for i in ids)
    return shares.select_id_stream(cut(data, [7, 4096]), "ids.txt", "posts", NOTHING)


@pytest.mark.parametrize("n", [1, 2_999, 3_000])
def test_a_selection_is_written_whole_or_in_part_as_spooled(tmp_path: Path, n: int) -> None:
    ids = [FIRST + 7 * i for i in range(3_000)]
    pieces: list[int] = []
    with selected(ids) as sel, (tmp_path / "out.txt").open("w+b") as fh:
        fh.write(b"")  # as spool.publish hands it: an empty file, nothing buffered
        assert sel.write_to(fh, n, 1024, lambda: pieces.append(1)) == n
        fh.flush()
        fh.seek(0)
        assert fh.read() == b"".join(b"%d\n" % i for i in ids[:n])
    assert pieces  # every piece passes the fault point (share.writing)


def test_the_whole_selection_goes_through_the_kernel_in_pieces(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    calls: list[int] = []
    real = os.sendfile

    def sendfile(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        calls.append(count)
        return real(out_fd, in_fd, offset, min(count, 100_000))  # short copies, as allowed

    monkeypatch.setattr(os, "sendfile", sendfile)
    monkeypatch.setattr(shares, "SENDFILE_STEP", 300_000)
    ids = [FIRST + i for i in range(50_000)]  # 1,000,000 bytes
    pieces: list[int] = []
    with selected(ids) as sel, (tmp_path / "out.txt").open("w+b") as fh:
        assert sel.write_to(fh, len(ids), 1024, lambda: pieces.append(1)) == len(ids)
        fh.seek(0)
        assert fh.read() == b"".join(b"%d\n" % i for i in ids)
    assert len(calls) == 10 and max(calls) == 300_000 and len(pieces) == 10


def test_where_the_kernel_cannot_copy_the_selection_is_read_and_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    def refuses(*_: object) -> int:
        raise OSError(errno.EINVAL, "Invalid argument")

    monkeypatch.setattr(os, "sendfile", refuses)
    ids = [FIRST + i for i in range(5_000)]
    with selected(ids) as sel, (tmp_path / "out.txt").open("w+b") as fh:
        assert sel.write_to(fh, len(ids), 4096) == len(ids)
        fh.seek(0)
        assert fh.read() == b"".join(b"%d\n" % i for i in ids)


def test_a_full_disk_under_the_kernel_copy_is_an_error_not_a_short_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import errno
    import os

    real, sent = os.sendfile, []

    def fills(out_fd: int, in_fd: int, offset: int | None, count: int) -> int:
        if sent:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        sent.append(count)
        return real(out_fd, in_fd, offset, count)

    monkeypatch.setattr(os, "sendfile", fills)
    monkeypatch.setattr(shares, "SENDFILE_STEP", 4096)
    with selected([FIRST + i for i in range(5_000)]) as sel, \
            (tmp_path / "out.txt").open("w+b") as fh, pytest.raises(OSError) as err:
        sel.write_to(fh, 5_000, 4096)
    assert err.value.errno == errno.ENOSPC  # not read-and-written after half a copy


def test_a_spool_shorter_than_its_count_is_caught(tmp_path: Path) -> None:
    with selected([FIRST + i for i in range(5_000)]) as sel, \
            (tmp_path / "out.txt").open("w+b") as fh:
        sel._fh.truncate(1000)  # what "changed while it was being shared" guards against
        assert sel.write_to(fh, 5_000, 4096) != 5_000
