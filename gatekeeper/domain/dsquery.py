"""Selections answered from a dataset's index (`gatekeeper.domain.dsindex`), not its JSONL.

One pass over the index's row groups, reading only the columns the question needs: the filter
(`Filters.matches`, column by column), then the rows an export would write (`exports.columns.
expand`: referenced posts first, then the post), then R9 (`Deleted.hides_light`, over whole
columns) and the duplicates (a post stored twice leaves once, as first found) — giving the same
numbers as the JSONL pass of `hydrated.Selection`, which `tests/test_dsindex.py` checks.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from gatekeeper.domain.dsindex import BAD
from gatekeeper.domain.filters import Filters
from gatekeeper.rules.r9 import Deleted

_I64 = np.int64


@dataclass
class Picked:
    """The rows a selection gives, in file order, before the limit: where each comes from
    (index row, and which referenced post of it, -1 for the post itself), whether R9 hides it,
    whether it is the first of its ID, and its Users-sheet author (0: none)."""

    ids: np.ndarray
    rows: np.ndarray
    refs: np.ndarray
    hidden: np.ndarray
    first: np.ndarray
    users: np.ndarray | None

    def processed(self, limit: int | None) -> int:
        """How many rows the export loop looks at before `limit` rows have left."""
        n = len(self.ids)
        if limit is None:
            return n
        if limit <= 0:
            return 0
        kept = np.cumsum(self.first & ~self.hidden)
        return min(n, int(np.searchsorted(kept, limit, side="left")) + 1)


@dataclass
class Counted:
    posts: int
    duplicates: int
    # Each distinct author of the Users sheet, in first-seen order: their User IDs, and the
    # index row (and referenced post, -1 for the post itself) where each was first met.
    author_ids: np.ndarray
    author_rows: np.ndarray
    author_refs: np.ndarray
    picked: Picked
    upto: int  # rows processed

    @property
    def authors(self) -> list[tuple[int, int, int]]:
        """(User ID, index row, ref) of each author's first row."""
        return list(zip(self.author_ids.tolist(), self.author_rows.tolist(),
                        self.author_refs.tolist(), strict=True))


DICTIONARY = ["lang", "username"]  # read as dictionaries: compared once per distinct value


def _equal(column: Any, value: str) -> Any:
    """`column == value`, on a dictionary column by its dictionary."""
    if pa.types.is_dictionary(column.type):
        hits = pc.indices_nonzero(pc.fill_null(pc.equal(column.dictionary, value), False))
        return pc.is_in(column.indices, value_set=pc.cast(hits, column.indices.type))
    return pc.equal(column, value)


def _mask(batch: pa.RecordBatch, f: Filters) -> pa.Array | None:
    conds: list[Any] = []
    if f.lang is not None:
        conds.append(_equal(batch["lang"], f.lang))
    if f._since is not None or f._until is not None:
        created, raw = batch["created"], batch["created_raw"]
        ts: Any = None
        text: Any = None
        for bound, op in ((f._since, pc.greater_equal), (f._until, pc.less)):
            if bound is None:
                continue
            at = pa.scalar(datetime.fromisoformat(bound), pa.timestamp("ms", tz="UTC"))
            one, other = op(created, at), op(raw, bound)
            ts = one if ts is None else pc.and_kleene(ts, one)
            text = other if text is None else pc.and_kleene(text, other)
        conds.append(pc.fill_null(pc.if_else(pc.is_valid(created), ts, text), False))
    if f._needle is not None:
        conds.append(pc.match_substring(batch["text"], f._needle))
    if f.author is not None:
        cond = _equal(batch["username"], f.author)
        a = f.author
        if a.isdigit() and a[0] != "0" and int(a) < 2**63:
            cond = pc.or_kleene(cond, pc.equal(batch["author"], int(a)))
        conds.append(cond)
    if not conds:
        return None
    mask = conds[0]
    for cond in conds[1:]:
        mask = pc.and_kleene(mask, cond)
    return pc.fill_null(mask, False)


def _np(values: Any) -> np.ndarray:
    """An int64 column as numpy, null as 0 (no ID is 0: R9 and the Users sheet skip it)."""
    return pc.fill_null(values, 0).to_numpy(zero_copy_only=False).astype(_I64, copy=False)


def _columns(filters: Filters, deleted: Deleted, referenced: bool, users: bool) -> list[str]:
    cols = {"pid"}
    if filters.lang is not None:
        cols.add("lang")
    if filters.since is not None or filters.until is not None:
        cols |= {"created", "created_raw"}
    if filters.contains is not None:
        cols.add("text")
    if filters.author is not None:
        cols |= {"username", "author"}
    if deleted.listed:
        cols |= {"author", "rt", "rt_author"}
    if users:
        cols.add("user")
    if referenced:
        cols.add("ref_ids")
        if deleted.listed:
            cols |= {"ref_authors", "ref_rt", "ref_rt_authors"}
        if users:
            cols.add("ref_users")
    return sorted(cols)


def _is_in(values: np.ndarray, ids: pa.Array) -> np.ndarray:
    if not len(ids):
        return np.zeros(len(values), bool)
    found = pc.is_in(pa.array(values), value_set=ids)
    return np.asarray(found.to_numpy(zero_copy_only=False), bool)


def _hidden(deleted: Deleted, pid: np.ndarray, author: np.ndarray, rt: np.ndarray,
            rt_author: np.ndarray, posts: pa.Array, users: pa.Array) -> np.ndarray:
    """`Deleted.hides_light` over columns (BAD: an ID int() refuses, which it hides)."""
    hidden = (pid == BAD) | (rt == BAD) | _is_in(pid, posts) | _is_in(rt, posts)
    if deleted.users:
        hidden |= (author == BAD) | (rt_author == BAD) | _is_in(author, users) \
            | _is_in(rt_author, users)
    return hidden


def pick(pf: pq.ParquetFile, filters: Filters, deleted: Deleted, *, referenced: bool = False,
         with_users: bool = False, repeated: list[str] | None = None,
         refs_dedup: bool = True) -> Picked:
    """The rows of a selection, in file order (see `Picked`). `repeated`: the post IDs the
    file holds more than once, when known (`DatasetInfo.repeated_posts`)."""
    cols = _columns(filters, deleted, referenced, with_users)
    posts = pa.array(sorted(deleted.posts), pa.int64())
    users = pa.array(sorted(deleted.users), pa.int64())
    parts: dict[str, list[np.ndarray]] = {k: [] for k in ("ids", "rows", "refs", "hidden",
                                                           "users")}
    base = 0
    for batch in pf.iter_batches(batch_size=1 << 16, columns=cols, use_threads=False):
        n = batch.num_rows
        rows = np.arange(base, base + n, dtype=_I64)
        base += n
        mask = _mask(batch, filters)
        if mask is not None:
            batch = batch.filter(mask)
            rows = rows[np.asarray(mask.to_numpy(zero_copy_only=False), bool)]
            n = batch.num_rows
            if not n:
                continue
        listed = deleted.listed
        zeros = np.zeros(n, _I64)
        own = {"ids": _np(batch["pid"]),
               "author": _np(batch["author"]) if listed else zeros,
               "rt": _np(batch["rt"]) if listed else zeros,
               "rt_author": _np(batch["rt_author"]) if listed else zeros,
               "users": _np(batch["user"]) if with_users else zeros}
        if referenced:
            lens = _np(pc.list_value_length(batch["ref_ids"]))
            total = n + int(lens.sum())
            at = np.cumsum(lens + 1) - 1  # each post after its referenced posts
            is_ref = np.ones(total, bool)
            is_ref[at] = False
            names = {"ids": "ref_ids", "author": "ref_authors", "rt": "ref_rt",
                     "rt_author": "ref_rt_authors", "users": "ref_users"}
            cols_out: dict[str, np.ndarray] = {}
            for key, ref_name in names.items():
                out = np.zeros(total, _I64)
                out[at] = own[key]
                if ref_name in batch.schema.names:
                    out[is_ref] = _np(pc.list_flatten(batch[ref_name]))
                cols_out[key] = out
            refs = np.arange(total, dtype=_I64) - np.repeat(at - lens, lens + 1)
            refs[at] = -1
            rows = np.repeat(rows, lens + 1)
            own = cols_out
        else:
            refs = np.full(n, -1, _I64)
        parts["ids"].append(own["ids"])
        parts["rows"].append(rows)
        parts["refs"].append(refs)
        parts["users"].append(own["users"])
        parts["hidden"].append(
            _hidden(deleted, own["ids"], own["author"], own["rt"], own["rt_author"], posts, users)
            if listed else np.zeros(len(own["ids"]), bool))

    def joined(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(parts[key]) if parts[key] else np.zeros(0, dtype)

    ids = joined("ids", _I64)
    return Picked(ids=ids, rows=joined("rows", _I64), refs=joined("refs", _I64),
                  hidden=joined("hidden", bool), first=_first(ids, None if referenced
                                                               else repeated),
                  users=joined("users", _I64) if with_users else None)


def _first(ids: np.ndarray, repeated: list[str] | None) -> np.ndarray:
    """Whether each row is the first of its ID. Given the IDs the file repeats (usually
    none), only their rows are looked at; otherwise every ID is."""
    if repeated is not None:
        first = np.ones(len(ids), bool)
        if repeated:
            cand = np.nonzero(np.isin(ids, np.array([int(i) for i in repeated], _I64)))[0]
            met: set[int] = set()
            for i in cand.tolist():
                ident = int(ids[i])
                if ident in met:
                    first[i] = False
                met.add(ident)
        return first
    first = np.zeros(len(ids), bool)
    if len(ids):
        _, at = np.unique(ids, return_index=True)
        first[at] = True
    return first


def count(pf: pq.ParquetFile, filters: Filters, deleted: Deleted, *, limit: int | None,
          referenced: bool, with_users: bool, repeated: list[str] | None) -> Counted:
    """What `hydrated.Selection.tally` counts: posts, duplicates left out, and (with_users)
    the distinct authors the Users sheet shows, each with where it was first met."""
    picked = pick(pf, filters, deleted, referenced=referenced, with_users=with_users,
                  repeated=repeated)
    upto = picked.processed(limit)
    kept = picked.first[:upto] & ~picked.hidden[:upto]
    duplicates = int((~picked.first[:upto]).sum())
    found = np.zeros(0, _I64)
    rows = refs = found
    if with_users and picked.users is not None:
        at = np.nonzero(kept)[0]
        users = picked.users[:upto][at]
        ok = (users != 0) & (users != BAD)
        if deleted.users:
            ok &= ~_is_in(users, pa.array(sorted(deleted.users), pa.int64()))
        at, users = at[ok], users[ok]
        _, first = np.unique(users, return_index=True)
        first.sort()
        found, rows, refs = users[first], picked.rows[at[first]], picked.refs[at[first]]
    return Counted(int(kept.sum()), duplicates, found, rows, refs, picked, upto)


def places(pf: pq.ParquetFile, rows: np.ndarray) -> Iterator[tuple[int, int, int, int]]:
    """(index row, offset, length, position) of each of `rows` (sorted), read row group by
    row group."""
    start = 0
    at = 0
    for g in range(pf.metadata.num_row_groups):
        size = pf.metadata.row_group(g).num_rows
        end = start + size
        stop = int(np.searchsorted(rows, end, side="left"))
        if stop > at:
            table = pf.read_row_group(g, columns=["offset", "length", "position"],
                                      use_threads=False)
            local = rows[at:stop] - start
            offs = table["offset"].to_numpy()[local]
            lens = table["length"].to_numpy()[local]
            poss = table["position"].to_numpy()[local]
            for i in range(stop - at):
                yield int(rows[at + i]), int(offs[i]), int(lens[i]), int(poss[i])
            at = stop
        start = end
        if at >= len(rows):
            return


def batches(pf: pq.ParquetFile, filters: Filters, cols: list[str]) -> Iterator[pa.RecordBatch]:
    """The index's rows that match `filters`, `cols` of them, a row group at a time."""
    need = sorted(set(cols) | set(_columns(filters, Deleted(0, frozenset(), frozenset()),
                                           False, False)))
    for batch in pf.iter_batches(batch_size=1 << 16, columns=need, use_threads=False):
        mask = _mask(batch, filters)
        if mask is not None:
            batch = batch.filter(mask)
        if batch.num_rows:
            yield batch


def light_column(values: pa.Array) -> list[str | None]:
    """An ID column as `Light` holds IDs: decimal text, None when unknown, and for an ID that
    is not one, text int() refuses (so R9 hides it, as it hid the ID as written)."""
    return ["?" if v == BAD else None if v is None else str(v) for v in values.to_pylist()]


def newly_hidden(pf: pq.ParquetFile, deleted: Deleted, before: Deleted | None) -> int:
    """How many of the dataset's posts `deleted` hides that `before` (if given) did not."""
    cols = ["author", "pid", "rt", "rt_author"]
    lists = [(d, pa.array(sorted(d.posts), pa.int64()), pa.array(sorted(d.users), pa.int64()))
             for d in (deleted, before) if d is not None]
    n = 0
    for batch in pf.iter_batches(batch_size=1 << 16, columns=cols, use_threads=False):
        pid, author, rt, rt_author = (_np(batch[c]) for c in ("pid", "author", "rt",
                                                               "rt_author"))
        hides = [_hidden(d, pid, author, rt, rt_author, posts, users) if d.listed
                 else np.zeros(batch.num_rows, bool) for d, posts, users in lists]
        n += int((hides[0] & ~hides[1]).sum() if len(hides) > 1 else hides[0].sum())
    return n
