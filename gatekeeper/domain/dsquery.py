"""Selections answered from a dataset's index (`gatekeeper.domain.dsindex`), not its JSONL.

One pass over the index's row groups, reading only the columns the question needs: the filter
(`Filters.matches`, column by column), then the rows an export would write (`exports.columns.
expand`: referenced posts first, then the post), then R9 (`Deleted.hides_light`, over whole
columns) and the duplicates (a post stored twice leaves once, as first found) — giving the same
numbers as the JSONL pass of `hydrated.Selection`, which `tests/test_dsindex.py` checks.

What is not asked is not read: post IDs only when duplicates, R9 or referenced posts need them,
authors by their dense ordinal (`uord`), usernames by their hash (`uname`), and a row group whose
created_at statistics lie outside since/until is skipped unread.

Over ~400 lines for a reason: which columns a question reads and what it computes from them
must change together, and tests/test_dsindex.py holds the whole against the JSONL pass.
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

from gatekeeper.domain.dsindex import BAD, footer, name_hash
from gatekeeper.domain.filters import Filters
from gatekeeper.rules.r9 import Deleted

_I64 = np.int64


@dataclass
class Counted:
    """What a selection holds: posts, duplicates left out, the rows that leave (index row, and
    which referenced post of it, -1 for the post itself) in file order, and the distinct
    authors of the Users sheet in first-seen order, with the row where each was first met."""

    posts: int
    duplicates: int
    rows: np.ndarray
    refs: np.ndarray
    author_keys: np.ndarray  # one per author: its User ID, or its ordinal in the index
    author_rows: np.ndarray
    author_refs: np.ndarray

    @property
    def authors(self) -> list[tuple[int, int, int]]:
        """(author key, index row, ref) of each author's first row."""
        return list(zip(self.author_keys.tolist(), self.author_rows.tolist(),
                        self.author_refs.tolist(), strict=True))


class _Seen:
    """Which IDs earlier batches met: a sorted array (8 bytes an ID), or, when only a few
    known IDs can repeat, a set of those."""

    def __init__(self, only: list[str] | None = None) -> None:
        self.only = None if only is None else np.array(sorted({int(i) for i in only}), _I64)
        self.met: set[int] = set()
        self.sorted = np.zeros(0, _I64)

    def first(self, ids: np.ndarray) -> np.ndarray:
        """Whether each of `ids` (in order) is the first of its ID so far; records them."""
        if self.only is not None:
            first = np.ones(len(ids), bool)
            if len(self.only):
                for i in np.nonzero(np.isin(ids, self.only))[0].tolist():
                    ident = int(ids[i])
                    if ident in self.met:
                        first[i] = False
                    self.met.add(ident)
            return first
        first = np.zeros(len(ids), bool)
        # Those met before first (usually most), then the first of each of the rest.
        fresh = np.nonzero(~np.isin(ids, self.sorted))[0] if len(self.sorted) \
            else np.arange(len(ids))
        if not len(fresh):
            return first
        uniq, at = np.unique(ids[fresh], return_index=True)
        first[fresh[at]] = True
        self.sorted = np.union1d(self.sorted, uniq)
        return first


DICTIONARY = ["lang", "username"]  # read as dictionaries: compared once per distinct value


def _equal(column: Any, value: str) -> Any:
    """`column == value`, on a dictionary column by its dictionary."""
    if pa.types.is_dictionary(column.type):
        hits = pc.indices_nonzero(pc.fill_null(pc.equal(column.dictionary, value), False))
        return pc.is_in(column.indices, value_set=pc.cast(hits, column.indices.type))
    return pc.equal(column, value)


def _mask(batch: pa.RecordBatch, f: Filters, names_exact: bool) -> pa.Array | None:
    """Which rows `f` selects; None: all. `names_exact`: no two usernames of the index share
    a hash (its footer says), so `author` compares hashes."""
    conds: list[Any] = []
    if f.lang is not None:
        conds.append(_equal(batch["lang"], f.lang))
    if f._since is not None or f._until is not None:
        created, raw = batch["created"], batch["created_raw"]
        plain = raw.null_count == len(raw)  # no time only text gives: the times alone
        ts: Any = None
        text: Any = None
        for bound, op in ((f._since, pc.greater_equal), (f._until, pc.less)):
            if bound is None:
                continue
            at = pa.scalar(datetime.fromisoformat(bound), pa.timestamp("ms", tz="UTC"))
            one = op(created, at)
            ts = one if ts is None else pc.and_kleene(ts, one)
            if not plain:
                other = op(raw, bound)
                text = other if text is None else pc.and_kleene(text, other)
        conds.append(pc.fill_null(ts if plain else pc.if_else(pc.is_valid(created), ts, text),
                                  False))
    if f._needle is not None:
        conds.append(pc.match_substring(batch["text"], f._needle))
    if f.author is not None:
        cond = pc.equal(batch["uname"], name_hash(f.author)[0]) if names_exact \
            else _equal(batch["username"], f.author)
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


def _columns(filters: Filters, deleted: Deleted, referenced: bool, users: bool, *,
             names_exact: bool, ids: bool = True) -> list[str]:
    cols = {"pid"} if ids else set()
    if filters.lang is not None:
        cols.add("lang")
    if filters.since is not None or filters.until is not None:
        cols |= {"created", "created_raw"}
    if filters.contains is not None:
        cols.add("text")
    if filters.author is not None:
        cols.add("uname" if names_exact else "username")
        if filters.author.isdigit():  # a User ID is compared with the author column too
            cols.add("author")
    if deleted.listed:
        cols |= {"author", "rt", "rt_author"}
    if users:  # by ID with referenced posts (which have no ordinal) or to hide them (R9)
        cols.add("uord" if not referenced else "user")
        if deleted.users:
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


def _groups(pf: pq.ParquetFile, filters: Filters) -> Iterator[tuple[int, int, int]]:
    """(row group, its first row, its rows) of the groups `filters` may select rows of: one
    whose created_at statistics lie wholly outside since/until (and holds no time only text
    gives) has none."""
    meta = pf.metadata
    bounds = None
    if filters._since is not None or filters._until is not None:
        names = [meta.schema.column(i).name for i in range(meta.num_columns)]
        created, raw = names.index("created"), names.index("created_raw")
        low, high = (None if b is None else pa.scalar(datetime.fromisoformat(b),
                                                      pa.timestamp("ms", tz="UTC")).value
                     for b in (filters._since, filters._until))
        bounds = (created, raw, low, high)
    start = 0
    for g in range(meta.num_row_groups):
        group = meta.row_group(g)
        n = group.num_rows
        if bounds is None or not _outside(group, *bounds):
            yield g, start, n
        start += n


def _outside(group: Any, created: int, raw: int, low: int | None, high: int | None) -> bool:
    stats, text = group.column(created).statistics, group.column(raw).statistics
    if text is None or not text.has_null_count or text.null_count != group.num_rows:
        return False  # a time only text gives is compared as text
    if stats is not None and stats.has_null_count and stats.null_count == group.num_rows:
        return True  # no post with a time: in no time range
    if stats is None or not stats.has_min_max:
        return False
    return (low is not None and stats.max_raw < low) or (high is not None
                                                          and stats.min_raw >= high)


def _read(pf: pq.ParquetFile, filters: Filters, cols: list[str]
          ) -> Iterator[tuple[np.ndarray, pa.RecordBatch]]:
    """(index rows, batch) of the row groups `_groups` keeps, `cols` of them."""
    groups = list(_groups(pf, filters))
    if not groups:
        return
    row_type = np.int32 if pf.metadata.num_rows < 2**31 else _I64
    # Read as one stream; a batch's rows are mapped back to the index's numbering.
    starts = np.array([g[1] for g in groups], _I64)
    sizes = np.array([g[2] for g in groups], _I64)
    within = np.concatenate([[0], np.cumsum(sizes)[:-1]])
    shift = starts - within
    skipped = bool(shift.any())
    at = 0
    for batch in pf.iter_batches(batch_size=int(sizes.max()), row_groups=[g[0] for g in groups],
                                 columns=cols, use_threads=False):
        n = batch.num_rows
        rows = np.arange(at, at + n, dtype=_I64)
        if skipped:
            rows += shift[np.searchsorted(within, rows, side="right") - 1]
        at += n
        yield rows.astype(row_type, copy=False), batch


def _batches(pf: pq.ParquetFile, filters: Filters, deleted: Deleted, referenced: bool,
             with_users: bool, ids: bool) -> Iterator[dict[str, np.ndarray]]:
    """A row group at a time, the rows the selection gives in file order (a post's referenced
    posts first, with `referenced`): ids (without `ids`: none read, zeros), rows, refs, hidden
    (R9), users (0: none), uord (the author's ordinal, without `referenced`)."""
    names_exact = bool(footer(pf).get("names_exact"))
    cols = _columns(filters, deleted, referenced, with_users, names_exact=names_exact,
                    ids=ids or referenced or deleted.listed)
    posts = pa.array(sorted(deleted.posts), pa.int64())
    users = pa.array(sorted(deleted.users), pa.int64())
    for rows, batch in _read(pf, filters, cols):
        mask = _mask(batch, filters, names_exact)
        if mask is not None:
            batch = batch.filter(mask)
            rows = rows[np.asarray(mask.to_numpy(zero_copy_only=False), bool)]
        n = batch.num_rows
        if not n:
            continue
        listed = deleted.listed
        zeros = np.zeros(n, _I64)
        have = batch.schema.names
        own = {"ids": _np(batch["pid"]) if "pid" in have else zeros,
               "author": _np(batch["author"]) if listed else zeros,
               "rt": _np(batch["rt"]) if listed else zeros,
               "rt_author": _np(batch["rt_author"]) if listed else zeros,
               "users": _np(batch["user"]) if "user" in have else zeros}
        uord = _np(batch["uord"]) if "uord" in have else zeros
        if referenced:
            lens = _np(pc.list_value_length(batch["ref_ids"]))
            total = n + int(lens.sum())
            at = np.cumsum(lens + 1) - 1  # each post after its referenced posts
            is_ref = np.ones(total, bool)
            is_ref[at] = False
            names = {"ids": "ref_ids", "author": "ref_authors", "rt": "ref_rt",
                     "rt_author": "ref_rt_authors", "users": "ref_users"}
            expanded: dict[str, np.ndarray] = {}
            for key, ref_name in names.items():
                out = np.zeros(total, _I64)
                out[at] = own[key]
                if ref_name in have:
                    out[is_ref] = _np(pc.list_flatten(batch[ref_name]))
                expanded[key] = out
            refs = (np.arange(total, dtype=_I64) - np.repeat(at - lens, lens + 1)
                    ).astype(np.int32)
            refs[at] = -1
            rows = np.repeat(rows, lens + 1)
            own = expanded
        else:
            refs = np.full(n, -1, np.int32)
        hidden = _hidden(deleted, own["ids"], own["author"], own["rt"], own["rt_author"],
                         posts, users) if listed else np.zeros(len(own["ids"]), bool)
        yield {"ids": own["ids"], "rows": rows, "refs": refs, "hidden": hidden,
               "users": own["users"], "uord": uord}


class _Ordinals:
    """The authors met so far, by their ordinal in the index: an array of booleans (one byte
    an author of the dataset), no hashing."""

    def __init__(self, authors: int) -> None:
        self.met = np.zeros(authors + 1, bool)
        self.met[0] = True  # no author (or one whose ID is not one): never counted

    def first(self, ords: np.ndarray) -> np.ndarray:
        """Where (in order) each author of `ords` not met before is first met; records them."""
        fresh = np.nonzero(~self.met[ords])[0]
        if not len(fresh):
            return fresh
        new, at = np.unique(ords[fresh], return_index=True)
        self.met[new] = True
        return np.sort(fresh[at])


def count(pf: pq.ParquetFile, filters: Filters, deleted: Deleted, *, limit: int | None,
          referenced: bool, with_users: bool, repeated: list[str] | None,
          rows: bool = True) -> Counted:
    """What `hydrated.Selection.tally` counts and `posts` writes, in one pass a row group at
    a time: memory holds the current row group, the IDs met (only the few the file repeats,
    when known), the rows that leave and the authors met — never every row at once.
    `repeated`: the post IDs the file holds more than once (`DatasetInfo.repeated_posts`);
    when it is known and empty, no post ID is read. Without `rows` (a tally), the rows that
    leave are counted, not kept (`Counted.rows` and `refs` are empty)."""
    seen = _Seen(None if referenced else repeated)
    ids = referenced or repeated is None or bool(repeated)
    by_id = _Seen()  # authors by User ID: referenced posts have no ordinal
    by_ordinal = _Ordinals(int(footer(pf)["users"])) if with_users and not referenced else None
    hidden_users = pa.array(sorted(deleted.users), pa.int64())
    posts = duplicates = 0
    out: dict[str, list[np.ndarray]] = {k: [] for k in ("rows", "refs", "a_ids", "a_rows",
                                                         "a_refs")}
    for b in _batches(pf, filters, deleted, referenced, with_users, ids):
        if limit is not None and posts >= limit:
            break
        first = seen.first(b["ids"]) if ids else np.ones(len(b["rows"]), bool)
        kept = first & ~b["hidden"]
        if limit is not None:
            # The export loop stops at the row after the limit-th that leaves.
            total = np.cumsum(kept)
            if len(total) and posts + int(total[-1]) >= limit:
                upto = int(np.searchsorted(total, limit - posts, side="left")) + 1
                first, kept = first[:upto], kept[:upto]
                b = {k: v[:upto] for k, v in b.items()}
        posts += int(kept.sum())
        duplicates += int((~first).sum())
        at = np.nonzero(kept)[0]
        if rows:
            out["rows"].append(b["rows"][at])
            out["refs"].append(b["refs"][at])
        if with_users:
            users = b["users"][at]
            ok = (users != 0) & (users != BAD) if by_ordinal is None \
                else np.ones(len(at), bool)
            if deleted.users:
                ok &= ~_is_in(users, hidden_users)
            at = at[ok]
            if by_ordinal is not None:
                keys = b["uord"][at]
                new = by_ordinal.first(keys)
            else:
                keys = users[ok]
                new = np.nonzero(by_id.first(keys))[0]
            out["a_ids"].append(keys[new])
            out["a_rows"].append(b["rows"][at[new]])
            out["a_refs"].append(b["refs"][at[new]])

    def joined(key: str, dtype: Any) -> np.ndarray:
        return np.concatenate(out[key]) if out[key] else np.zeros(0, dtype)

    return Counted(posts, duplicates, joined("rows", np.int32), joined("refs", np.int32),
                   joined("a_ids", _I64), joined("a_rows", np.int32), joined("a_refs", np.int32))


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
    names_exact = bool(footer(pf).get("names_exact"))
    need = sorted(set(cols) | set(_columns(filters, Deleted(0, frozenset(), frozenset()),
                                           False, False, names_exact=names_exact)))
    for _, batch in _read(pf, filters, need):
        mask = _mask(batch, filters, names_exact)
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


def newly_hidden_ids(pf: pq.ParquetFile, deleted: Deleted, before: Deleted) -> np.ndarray:
    """The Post IDs of the dataset's posts `deleted` hides that `before` did not (issue 15:
    what a deletion list newly hides of what may have been delivered), sorted."""
    cols = ["author", "pid", "rt", "rt_author"]
    lists = [(d, pa.array(sorted(d.posts), pa.int64()), pa.array(sorted(d.users), pa.int64()))
             for d in (deleted, before)]
    found = [np.zeros(0, _I64)]
    for batch in pf.iter_batches(batch_size=1 << 16, columns=cols, use_threads=False):
        pid, author, rt, rt_author = (_np(batch[c]) for c in ("pid", "author", "rt",
                                                               "rt_author"))
        now, was = (_hidden(d, pid, author, rt, rt_author, posts, users) if d.listed
                    else np.zeros(batch.num_rows, bool) for d, posts, users in lists)
        found.append(pid[now & ~was & (pid > 0)])
    return np.sort(np.concatenate(found)).astype(np.uint64)  # not np.unique: it hashes
