"""The ID memories behind duplicate removal (issue 12 item 4): exact whatever the IDs look like,
and a fraction of a set of ints' memory."""

from __future__ import annotations

import random

import pytest

from gatekeeper.domain.seen import SeenIds, maybe_repeated
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


def test_an_id_list_keeps_each_first_occurrence_in_order_exactly() -> None:
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
    from gatekeeper.domain import shares, spool

    lines = [str(1440717170493689866 + i * 7919).encode() for i in range(200_000)]
    monkeypatch.setattr(shares, "maybe_repeated", lambda chunks, n: set(lines[::50]))
    written: list[object] = []
    monkeypatch.setattr(spool, "anonymous", lambda real=spool.anonymous: written.append(1)
                        or real())
    with select_ids(iter(lines), "list", "posts", NOTHING) as sel:
        assert (sel.count, sel.repeats) == (len(lines), 0)
        assert b"".join(sel.head(sel.count)).split() == lines
    assert len(written) == 1  # the selection's own spool only: no copy was made
