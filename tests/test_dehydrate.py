"""Issue 14 item 6: an ID share of a whole dataset reads its ID sidecar (no pyarrow, no numpy)
and gives exactly what the index path gives — the same ID file, counts, request digest and
manifest — for datasets with repeated posts, retweets and odd IDs, under every kind of R9 list,
granted whole or in part; the sidecar is written by `dataset add` and never read stale."""

from __future__ import annotations

import hashlib
import json
import random
from pathlib import Path
from typing import Any

import pytest
import redis
from hypothesis import given, settings
from hypothesis import strategies as st
from live import build_gate

from gatekeeper.domain import dsids, manifest_stream, manifests, shares
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.rules.r9 import Deleted

pytestmark = pytest.mark.usefixtures("quick_password_hashes")

USERS = [str(100 + i) for i in range(12)]


def pages(path: Path, seed: int, posts: int = 600) -> Path:
    """twarc2-like pages: posts stored again (overlapping collections), retweets of posts the
    file holds and of posts it does not, retweets naming an original that is not an ID, posts
    without an author."""
    rnd = random.Random(seed)
    made: list[dict[str, Any]] = []
    lines = []
    while posts > 0:
        data = []
        for _ in range(min(posts, rnd.randint(1, 40))):
            posts -= 1
            if made and rnd.random() < 0.08:
                data.append(dict(rnd.choice(made)))  # stored again
                continue
            post: dict[str, Any] = {"id": str(rnd.randint(1460 * 10**15, 1461 * 10**15)),
                                    "text": "x", "author_id": rnd.choice(USERS)}
            if rnd.random() < 0.05:
                del post["author_id"]
            if rnd.random() < 0.3:
                original = rnd.choice([*(p["id"] for p in made[-50:]), "not-an-id", "7"])
                post["referenced_tweets"] = [{"type": "retweeted", "id": original,
                                              "author_id": rnd.choice(USERS)}]
            made.append(post)
            data.append(post)
        lines.append(json.dumps({"data": data, "includes": {}}))
    path.write_text("\n".join(lines) + "\n")
    return path


def make_gate(tmp_path: Path, client: redis.Redis, limit: int = 100_000) -> Gate:
    """acme and beta (R8 terms accepted), each with `limit` Post IDs in 30 days."""
    g = build_gate(tmp_path, client, terms="Jane Doe",
                   config=f"[limits]\npost_ids_per_entity = {limit}\n")
    g.entities.add("beta", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.entities.accept_terms("beta", by="Jane Doe", actor="t", channel="cli")
    return g


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return make_gate(tmp_path, redis_client)


def index_only(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    """The share path as it was: the dataset's index, read by pyarrow."""
    monkeypatch.setattr(gate.datasets, "id_sidecar", lambda name: None)


def deletion_lists(path: Path) -> dict[str, Deleted]:
    """R9 lists over what `pages` wrote: none, posts (some stored twice, some retweeted),
    users, both."""
    rnd = random.Random(7)
    ids = sorted({int(p["id"]) for line in path.read_text().splitlines()
                  for p in json.loads(line)["data"]})
    posts = frozenset(rnd.sample(ids, len(ids) // 10))
    users = frozenset({int(USERS[1]), int(USERS[5])})
    return {"none": Deleted(0, frozenset(), frozenset()),
            "posts": Deleted(1, posts, frozenset()),
            "users": Deleted(2, frozenset(), users),
            "both": Deleted(3, posts, users)}


def selected(sel: shares.Selection) -> tuple[bytes, int, int, int, str]:
    return (b"".join(sel.head(sel.count)), sel.count, sel.removed, sel.repeats, sel.digest)


@pytest.mark.parametrize(("seed", "block"), [(1, dsids.BLOCK), (2, 16), (3, 7)])
def test_the_sidecar_selects_what_the_index_selects_under_every_deletion_list(
        gate: Gate, tmp_path: Path, seed: int, block: int,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """`block`: rows a share reads at a time (small: an ID's rows fall in different blocks)."""
    monkeypatch.setattr(dsids, "BLOCK", block)
    path = pages(tmp_path / f"p{seed}.jsonl", seed)
    gate.datasets.add("p", path, actor="t", channel="cli")
    for what, deleted in deletion_lists(path).items():
        with shares.select_from_dataset(gate, "p", None, "posts", deleted) as fast:
            assert fast.dehydrated is not None, what
            got = selected(fast)
            lines = got[0].split()
            assert got[2] + got[3] > 0, what  # something was left out: the test bites
            for n in (fast.count, fast.count // 2, 1, 0):
                made = [x for block in fast.dehydrated.sorted_ids(n) for x in block]
                assert made == sorted(int(i) for i in lines[:n]), (what, n)
        with monkeypatch.context() as m:
            index_only(gate, m)
            with shares.select_from_dataset(gate, "p", None, "posts", deleted) as slow:
                assert slow.dehydrated is None
                assert got == selected(slow), what


def test_a_dataset_holding_many_repeats_counts_them_as_the_index_does(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Past 1,000 repeated posts the dataset records none (`MAX_REPEATED`) and the index path
    deduplicates after the fact (`Selection.distinct`): the sidecar's flags give the same."""
    monkeypatch.setattr(dsids, "BLOCK", 64)
    path = pages(tmp_path / "a.jsonl", 4, posts=1500)
    text = path.read_text()
    path.write_text(text + text + text)  # every post three times
    gate.datasets.add("r", path, actor="t", channel="cli")
    assert gate.datasets.info("r").repeated_posts is None
    for what, deleted in deletion_lists(tmp_path / "a.jsonl").items():
        with shares.select_from_dataset(gate, "r", None, "posts", deleted) as fast:
            assert fast.dehydrated is not None
            got = selected(fast)
        with monkeypatch.context() as m:
            index_only(gate, m)
            with shares.select_from_dataset(gate, "r", None, "posts", deleted) as slow:
                assert got == selected(slow), what


def settled(gate: Gate, root: str) -> list[dict[str, str]]:
    return [r for r in ({k.decode(): v.decode() for k, v in f.items()}
                        for _i, f in gate.client.xrange(keys.audit(root)))
            if r.get("outcome") == "delivered"]


def share(gate: Gate, tmp_path: Path, entity: str, **kw: Any) -> tuple[bytes, dict[str, str],
                                                                        Any]:
    out = tmp_path / f"{entity}.txt"
    shares.share_to_file(gate, actor="dan", entity=entity, dataset="p", out=out,
                         purpose="t", **kw)
    [record] = settled(gate, entity)
    data = gate.manifests.read_bytes(record["manifest"])
    assert hashlib.sha256(data).hexdigest() == record["manifest_sha256"]
    return out.read_bytes(), record, manifests.decode(data)


@pytest.mark.parametrize("partial", [False, True])
def test_a_cli_share_from_the_sidecar_delivers_and_records_what_the_index_path_does(
        redis_client: redis.Redis, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        partial: bool) -> None:
    # Partial: fewer IDs left in the 30 days (123) than the dataset holds; the first 123 leave.
    gate = make_gate(tmp_path, redis_client, 123 if partial else 100_000)
    monkeypatch.setattr(dsids, "BLOCK", 16)  # the 123rd ID in a block of its own
    path = pages(tmp_path / "p.jsonl", 5)
    gate.datasets.add("p", path, actor="t", channel="cli")
    deleted = deletion_lists(path)["both"]
    monkeypatch.setattr(gate.deletions, "current", lambda: deleted)
    monkeypatch.setattr(manifests, "parse_lines", lambda *a: pytest.fail("spool parsed"))
    fast = share(gate, tmp_path, "acme", allow_partial=partial)
    monkeypatch.undo()
    monkeypatch.setattr(gate.deletions, "current", lambda: deleted)
    index_only(gate, monkeypatch)
    slow = share(gate, tmp_path, "beta", allow_partial=partial)
    assert fast[0] == slow[0]
    assert fast[0].count(b"\n") == 123 if partial else fast[0].count(b"\n") > 300
    assert fast[2].posts.tolist() == slow[2].posts.tolist() == sorted(
        int(i) for i in fast[0].split())
    assert fast[2].meta.keys() == slow[2].meta.keys()
    same = ("removed_r9", "repeats", "manifest_posts", "manifest_users", "requested",
            "granted", "kind", "dataset")
    assert {k: fast[1].get(k) for k in same} == {k: slow[1].get(k) for k in same}
    # Trace's spans of both manifests say the same (the lowest and highest Post ID).
    spans = [gate.client.hget(keys.MANIFEST_SPANS, r[1]["manifest"]) for r in (fast, slow)]
    assert spans[0] == spans[1] == f"{min(fast[2].posts)} {max(fast[2].posts)} - -".encode()


# --- the sidecar: written with the index, never read stale --------------------------------------


def test_dataset_add_writes_the_id_sidecar_beside_the_index_and_remove_deletes_it(
        gate: Gate, tmp_path: Path) -> None:
    path = pages(tmp_path / "p.jsonl", 6)
    gate.datasets.add("p", path, actor="t", channel="cli")
    stored = gate.datasets.path("p")
    sidecar = dsids.sidecar_path(stored.parent, "p")
    assert dsids.describes(sidecar, dsids.identity(stored))
    with dsids.Sidecar(sidecar) as opened:
        rows = [int(i) for _f, text, *_ in opened.blocks() for i in text.split()]
    assert rows == [int(p["id"]) for line in path.read_text().splitlines()
                    for p in json.loads(line)["data"]]
    gate.datasets.remove("p", actor="t", channel="cli")
    assert not sidecar.exists()


@pytest.mark.parametrize("harm", ["missing", "truncated", "other version", "stale"])
def test_a_missing_damaged_or_stale_sidecar_is_rebuilt_before_a_share_reads_it(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, harm: str) -> None:
    gate.datasets.add("p", pages(tmp_path / "p.jsonl", 8), actor="t", channel="cli")
    stored = gate.datasets.path("p")
    sidecar = dsids.sidecar_path(stored.parent, "p")
    if harm == "missing":
        sidecar.unlink()
    elif harm == "truncated":
        sidecar.write_bytes(sidecar.read_bytes()[:-5])
    elif harm == "other version":
        monkeypatch.setattr(dsids, "VERSION", dsids.VERSION + 1)
    else:  # the JSONL changed under the same name: the sidecar no longer describes it
        pages(stored, 9, posts=300)
    none = Deleted(0, frozenset(), frozenset())
    with shares.select_from_dataset(gate, "p", None, "posts", none) as fast:
        assert fast.dehydrated is not None
        got = selected(fast)
    assert dsids.describes(sidecar, dsids.identity(stored))
    if harm == "stale":
        # The file as it is now, each ID once. (The index path would repeat a post the new
        # file holds twice: it trusts the repeats `add` recorded of the old file.)
        rows = [p["id"] for line in stored.read_text().splitlines()
                for p in json.loads(line)["data"]]
        assert got[0].decode().split() == list(dict.fromkeys(rows)) and len(rows) == 300
        return
    with monkeypatch.context() as m:
        index_only(gate, m)
        with shares.select_from_dataset(gate, "p", None, "posts", none) as slow:
            assert got == selected(slow)


def test_a_sidecar_whose_ids_are_not_all_plain_is_not_read_the_index_is(
        gate: Gate, tmp_path: Path) -> None:
    """The readers refuse such IDs in a dataset today; should one reach a sidecar (a value
    equal to the NONE sentinel), the share reads the index instead."""
    gate.datasets.add("p", pages(tmp_path / "p.jsonl", 10), actor="t", channel="cli")
    stored = gate.datasets.path("p")
    with open(dsids.sidecar_path(stored.parent, "p"), "wb") as out:
        writer = dsids.Writer(out)
        writer.row(5, dsids.NONE, None, None)
        writer.finish(dsids.identity(stored))
    assert gate.datasets.id_sidecar("p") is None
    none = Deleted(0, frozenset(), frozenset())
    with shares.select_from_dataset(gate, "p", None, "posts", none) as sel:
        assert sel.dehydrated is None and sel.count > 500


# --- the manifest, encoded a block at a time without numpy ---------------------------------------


ID = st.integers(min_value=0, max_value=2**63 - 1)
SNOWFLAKE = st.integers(min_value=1460 * 10**15, max_value=1460 * 10**15 + 10**13)


@settings(max_examples=150, deadline=None)
@given(ids=st.lists(st.one_of(ID, SNOWFLAKE), max_size=3000), cut=st.integers(1, 700),
       kind=st.sampled_from(["posts", "users"]), block=st.sampled_from([1, 7, 256, 1 << 16]),
       step=st.sampled_from([1, 5, 1 << 13]))
def test_the_block_encoder_makes_the_manifest_the_numpy_encoder_makes(
        ids: list[int], cut: int, kind: str, block: int, step: int) -> None:
    """Byte for byte, with blocks of every size (the table, the frames, the checksum) made
    a step of any size at a time."""
    ordered = sorted(set(ids))
    meta = {"delivery": "d" * 32, "at_ms": 5, "recipient": "acme"}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(manifests, "BLOCK_IDS", block)
        mp.setattr(manifest_stream, "BLOCK_IDS", block)
        mp.setattr(manifest_stream, "STEP", step)
        want = manifests.encode(ordered if kind == "posts" else (),
                                ordered if kind == "users" else (), meta)
        got = b"".join(manifest_stream.encode_sorted(
            [ordered[i:i + cut] for i in range(0, len(ordered), cut)], len(ordered), meta,
            kind))
    assert got == want
    a = manifests.decode(got)
    assert (a.posts if kind == "posts" else a.users).tolist() == ordered
    assert a.meta == meta


def test_the_block_encoder_refuses_ids_out_of_order_or_not_as_many_as_said() -> None:
    with pytest.raises(ValueError, match="out of order"):
        b"".join(manifest_stream.encode_sorted([[5, 9], [7]], 3))
    with pytest.raises(ValueError, match="was given"):
        b"".join(manifest_stream.encode_sorted([[5, 9]], 3))


# --- the pass itself, against R9's own rules, on any rows ----------------------------------------


class Sink:
    def __init__(self) -> None:
        self.kept: list[bytes] = []
        self.named: list[bytes] = []
        self.removed = self.repeats = 0

    def add_rows(self, kept: bytes, count: int, named: bytes) -> None:
        got = kept.split()
        assert len(got) == count
        self.kept += got
        self.named.append(named)


def as_light(value: int | None) -> str | None:
    return None if value is None else "?" if value == dsids.BAD else str(value)


SMALL = st.integers(1, 12)  # few values: IDs repeat, lists hit
ROW = st.tuples(SMALL, st.one_of(st.none(), SMALL, st.just(dsids.BAD)),
                st.one_of(st.none(), SMALL, st.just(dsids.BAD)),
                st.one_of(st.none(), SMALL, st.just(dsids.BAD)))


@settings(max_examples=300, deadline=None)
@given(rows=st.lists(ROW, max_size=60), posts=st.frozensets(SMALL, max_size=4),
       users=st.frozensets(SMALL, max_size=4), block=st.integers(1, 9),
       n=st.integers(0, 60))
def test_the_pass_keeps_counts_and_names_what_r9_and_the_index_path_would(
        tmp_path_factory: pytest.TempPathFactory, rows: list[tuple[int, Any, Any, Any]],
        posts: frozenset[int], users: frozenset[int], block: int, n: int) -> None:
    from gatekeeper.domain import dehydrate

    path = tmp_path_factory.mktemp("pass") / "x.ids"
    original = dsids.BLOCK
    dsids.BLOCK = block
    try:
        with open(path, "wb") as out:
            writer = dsids.Writer(out)
            for row in rows:
                writer.row(*row)
            writer.finish({"t": 1})
    finally:
        dsids.BLOCK = original
    deleted = Deleted(1, posts, users)
    # The index path's rules (`shares.select_from_dataset`), row by row.
    kept: list[bytes] = []
    removed = repeats = 0
    dropped: set[int] = set()
    met: set[int] = set()
    for pid, author, rt, rt_author in rows:
        if deleted.hides_light((str(pid), as_light(author), as_light(rt), as_light(rt_author))):
            removed, repeats = (removed + 1, repeats) if pid not in dropped else \
                (removed, repeats + 1)
            dropped.add(pid)
        elif pid in met:
            repeats += 1
        else:
            met.add(pid)
            kept.append(str(pid).encode())
    sink = Sink()
    with dsids.Sidecar(path) as sidecar:
        done = dehydrate.dehydrate(sidecar, sink, deleted)
        assert (sink.kept, sink.removed, sink.repeats) == (kept, removed, repeats)
        assert b"".join(sink.named) == b"".join(str(r[0]).encode() + b"\n" for r in rows)
        n = min(n, len(kept))
        made = [x for part in done.sorted_ids(n) for x in part]
        assert made == sorted(int(i) for i in kept[:n])
        done.close()
