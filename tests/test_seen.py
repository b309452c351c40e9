"""The ID memories behind duplicate removal (issue 12 item 4): exact whatever the IDs look like,
and a fraction of a set of ints' memory."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gatekeeper.domain import shares
from gatekeeper.domain.seen import SeenIds, maybe_repeated, repeated_ids, sorted_ids, unique_of
from gatekeeper.domain.shares import select_ids
from gatekeeper.rules.r9 import Deleted

NOTHING = Deleted(0, frozenset(), frozenset())


def ids_with_repeats(n: int, seed: int) -> list[int]:
    """Snowflake-shaped IDs (time bits, small sequence numbers), old small IDs, the extremes,
    and a tenth of them again, shuffled in."""
    rng = random.Random(seed)
    snow = [(rng.randrange(1 << 40) << 22) | rng.randrange(4) for _ in range(n)]
    old = [rng.randrange(1, 1 << 32) for _ in range(n // 10)]
    values = [*snow, *old, 1, 2**63 - 1, 1 << 16, (1 << 16) + 1]
    values += rng.sample(values, len(values) // 10)
    rng.shuffle(values)
    return values


def test_seen_ids_is_exact_for_snowflake_old_and_extreme_ids() -> None:
    seen, first = SeenIds(), set()
    for v in ids_with_repeats(50_000, 1):
        assert seen.add(v) == (v not in first), v
        first.add(v)


def in_bucket(key: bytes, bucket: int) -> int:
    """The ID stored as `key` (its bits above the low 16) in `bucket`."""
    k = int.from_bytes(key, "little")
    return (k << 16) | (bucket ^ ((k >> 6) & 0xFFFF))


def test_bytes_that_match_across_two_entries_are_not_a_hit() -> None:
    a, b = in_bucket(bytes([1, 2, 3, 4, 5, 6]), 1234), in_bucket(bytes([7, 8, 9, 10, 11, 12]), 1234)
    straddling = in_bucket(bytes([4, 5, 6, 7, 8, 9]), 1234)  # a's last 3 bytes, b's first 3
    seen = SeenIds()
    assert seen.add(a) and seen.add(b)
    assert seen.add(straddling) is True
    assert seen.add(straddling) is False and seen.add(a) is False and seen.add(b) is False


def test_maybe_repeated_holds_every_repeated_id() -> None:
    values = ids_with_repeats(100_000, 2)
    lines = [str(v).encode() for v in values]
    chunks = [b"".join(x + b"\n" for x in lines[i:i + 997]) for i in range(0, len(lines), 997)]
    maybes = maybe_repeated(iter(chunks), len(lines))
    counts: dict[bytes, int] = {}
    for x in lines:
        counts[x] = counts.get(x, 0) + 1
    repeated = {x for x, c in counts.items() if c > 1}
    assert repeated <= maybes
    assert len(maybes) < len(repeated) + len(counts) // 10  # a few extra, not a set of all


def repeated_by_counting(lines: list[bytes]) -> set[bytes]:
    counts: dict[bytes, int] = {}
    for x in lines:
        counts[x] = counts.get(x, 0) + 1
    return {x for x, c in counts.items() if c > 1}


def whole_lines(lines: list[bytes], size: int) -> list[bytes]:
    """`lines` as chunks of whole lines, each of about `size` bytes, as `Selection.head`
    gives them."""
    chunks, chunk = [], b""
    for x in lines:
        chunk += x + b"\n"
        if len(chunk) >= size:
            chunks, chunk = [*chunks, chunk], b""
    return [*chunks, chunk] if chunk else chunks


def test_repeated_ids_are_exactly_the_ids_listed_more_than_once() -> None:
    lines = [str(v).encode() for v in ids_with_repeats(100_000, 4)]
    assert repeated_ids(iter(whole_lines(lines, 1 << 20)), len(lines)) == \
        repeated_by_counting(lines)


def test_the_sorted_ids_without_repeats_are_the_distinct_ids() -> None:
    """What a large share's manifest is made of (issue 15): `sorted_ids` then `unique_of`."""
    values = ids_with_repeats(100_000, 5)
    lines = [str(v).encode() for v in values]
    got = sorted_ids(iter(whole_lines(lines, 1 << 16)), len(lines))
    assert got.tolist() == sorted(values)
    assert unique_of(got).tolist() == sorted(set(values))
    distinct = unique_of(got)
    assert unique_of(distinct) is distinct  # none repeated: the array itself, no copy
    assert unique_of(distinct[:1]).tolist() == distinct[:1].tolist()
    assert unique_of(distinct[:0]).size == 0


@pytest.mark.parametrize("width", [1, 17, 19])
def test_repeated_ids_reads_lists_of_one_width_as_numbers(width: int) -> None:
    """Lines of one length take the table path: the extremes of that width, and a repeat."""
    low, high = 10 ** (width - 1), min(10 ** width - 1, 2**63 - 1)
    values = [low, high, *range(low + 1, min(low + 5000, high))]
    lines = [str(v).encode() for v in [*values, values[3], high]]
    assert repeated_ids(iter(whole_lines(lines, 4096)), len(lines)) == \
        {str(values[3]).encode(), str(high).encode()}


def test_repeated_ids_is_not_fooled_by_short_lines_where_a_table_would_have_newlines() -> None:
    """b"123\\n1\\n2\\n456\\n" has a newline every 4th byte, as a table of 3-digit lines
    would: it is read line by line, 1 and 2 included."""
    chunk = b"123\n1\n2\n456\n"
    assert repeated_ids(iter([chunk, b"2\n", b"12\n"]), 6) == {b"2"}
    assert repeated_ids(iter([chunk, b"102\n"]), 5) == set()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.one_of(st.integers(1, 2**63 - 1), st.integers(1, 10**6),
                          st.sampled_from([1, 9, 10, 99, 10**18, 2**63 - 1, 9 * 10**18])),
                max_size=200),
       st.lists(st.integers(0, 400), max_size=20), st.integers(1, 600))
def test_repeated_ids_equals_counting_on_any_canonical_list(
        values: list[int], again: list[int], size: int) -> None:
    lines = [str(v).encode() for v in values]
    lines += [lines[i % len(lines)] for i in again] if lines else []
    assert repeated_ids(iter(whole_lines(lines, size)), len(lines)) == \
        repeated_by_counting(lines)


@pytest.mark.parametrize("exact_from", [0, 10**9], ids=["numpy", "bitmap"])
def test_an_id_list_keeps_each_first_occurrence_in_order_exactly(
        exact_from: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(shares, "EXACT_FROM", exact_from)
    values = ids_with_repeats(60_000, 3)
    lines = [str(v).encode() for v in values]
    with select_ids(iter(lines), "list", "posts", NOTHING) as sel:
        got = b"".join(sel.head(sel.count)).split()
        assert got == list(dict.fromkeys(lines))
        assert (sel.count, sel.repeats) == (len(got), len(lines) - len(got))
        assert sel.size == sum(len(x) + 1 for x in got)


def test_repeats_of_an_r9_id_count_as_repeats_not_as_more_removals() -> None:
    deleted = Deleted(1, frozenset({7}), frozenset())
    with select_ids(iter([b"7", b"8", b"7", b"8", b"9"]), "list", "posts", deleted) as sel:
        assert b"".join(sel.head(sel.count)) == b"8\n9\n"
        assert (sel.count, sel.removed, sel.repeats) == (2, 1, 2)


def test_a_list_whose_maybes_are_all_false_alarms_is_left_as_it_is(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A bitmap's false alarms (IDs that only share a bit) are confirmed by a second pass and
    change nothing: no ID is lost, none counted as a repeat, the spool is not rewritten."""
    from gatekeeper.domain import spool

    lines = [str(1440717170493689866 + i * 7919).encode() for i in range(200_000)]
    monkeypatch.setattr(shares, "EXACT_FROM", 10**9)  # the bitmap path, at any size
    monkeypatch.setattr(shares, "maybe_repeated", lambda chunks, n: set(lines[::50]))
    written: list[object] = []
    monkeypatch.setattr(spool, "anonymous", lambda real=spool.anonymous: written.append(1)
                        or real())
    with select_ids(iter(lines), "list", "posts", NOTHING) as sel:
        assert (sel.count, sel.repeats) == (len(lines), 0)
        assert b"".join(sel.head(sel.count)).split() == lines
    assert len(written) == 1  # the selection's own spool only: no copy was made
