"""Delivery manifests (issue 15 item 1): the codec, where manifests are stored, and that every
granted ID share (CLI, API) and hydrated export has one whose IDs are exactly what it delivered,
named by the committed delivery's audit record (both backends; the object store on moto)."""

from __future__ import annotations

import hashlib
import io
import struct
import zlib
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from live import build_gate, export_spanish, share_ids

from gatekeeper import config as config_mod
from gatekeeper.domain import manifests
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.manifests import BadManifest, decode, encode
from gatekeeper.ledger import keys
from tests.test_s3 import _admin, moto_endpoint, objects, store_url  # noqa: F401 - fixtures

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
IDS = st.integers(min_value=0, max_value=2**63 - 1)
EPOCH_MS = 1288834974657  # X's snowflake epoch


@st.composite
def snowflakes(draw: st.DrawFn) -> list[int]:
    """Time-clustered X IDs: increasing milliseconds, a few workers, small sequences."""
    t = draw(st.integers(1_500_000_000_000, 1_800_000_000_000)) - EPOCH_MS
    out = []
    for gap, worker, seq in draw(st.lists(st.tuples(st.integers(0, 5000), st.integers(0, 1023),
                                                    st.integers(0, 4095)), max_size=300)):
        t += gap
        out.append(t << 22 | worker << 12 | seq)
    return out


# --- the codec ----------------------------------------------------------------------------------


@settings(max_examples=200, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(IDS, max_size=400), st.lists(IDS, max_size=200),
       st.dictionaries(st.text(max_size=8), st.text(max_size=8), max_size=3))
def test_any_ids_round_trip_sorted_and_unique(posts: list[int], users: list[int],
                                              meta: dict[str, str]) -> None:
    got = decode(encode(posts, users, meta))
    assert got.posts.tolist() == sorted(set(posts))
    assert got.users.tolist() == sorted(set(users))
    assert got.meta == meta


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(snowflakes(), snowflakes())
def test_time_clustered_snowflakes_round_trip(posts: list[int], users: list[int]) -> None:
    got = decode(encode(posts, users))
    assert got.posts.tolist() == sorted(set(posts))
    assert got.users.tolist() == sorted(set(users))


def test_time_clustered_ids_take_under_three_bytes_each() -> None:
    import random

    rng = random.Random(15)
    t, ids = 1_700_000_000_000 - EPOCH_MS, []
    for _ in range(50_000):
        t += int(rng.expovariate(1 / 400))
        ids.append(t << 22 | rng.choice((325, 326, 327, 337, 341, 343)) << 12 | rng.randrange(8))
    assert len(encode(ids)) / len(set(ids)) <= 3


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(IDS.filter(bool), max_size=300), st.lists(st.integers(1, 200), max_size=20),
       st.integers(1, 400))
def test_id_lines_parse_the_same_however_the_spool_is_cut(
        ids: list[int], cuts: list[int], block: int) -> None:
    data = b"".join(b"%d\n" % i for i in ids)
    chunks, at = [], 0
    for size in [*cuts, len(data)]:
        chunks.append(data[at:at + size])
        at += size
    manifests.PARSE_BLOCK, kept = block, manifests.PARSE_BLOCK
    try:
        assert manifests.parse_lines(chunks).tolist() == ids
    finally:
        manifests.PARSE_BLOCK = kept


def test_sorted_unique_ids_are_taken_as_they_are_and_still_checked() -> None:
    import numpy as np

    ids = np.array([1, 5, 9], dtype=np.uint64)
    assert manifests.as_ids(ids) is ids
    assert manifests.as_ids(np.array([9, 1, 5, 5], dtype=np.uint64)).tolist() == [1, 5, 9]
    with pytest.raises(ValueError, match="below 2"):
        manifests.as_ids(np.array([1, 2**63], dtype=np.uint64))


@settings(max_examples=25, suppress_health_check=[HealthCheck.too_slow], deadline=None)
@given(snowflakes(), st.lists(IDS, max_size=300), st.sampled_from([1, 7, 64]),
       st.integers(1, 3))
def test_blocks_packed_in_reused_buffers_and_threads_are_the_bytes_of_fresh_ones(
        posts: list[int], users: list[int], block: int, threads: int) -> None:
    """A packer reuses its buffers block after block (a wide block after a narrow one leaves
    nothing behind), and blocks packed on several threads land in their order."""
    import numpy as np

    kept = manifests.BLOCK_IDS
    manifests.BLOCK_IDS = block
    try:
        p, u = manifests.as_ids(posts), manifests.as_ids(users)
        got = b"".join(manifests.encode_parts(p, u, {"d": 1}, threads=threads,
                                              sorted_unique=True))
        fresh = [manifests._pack_block(ids[at:at + block]) for ids in (p, u)
                 for at in range(0, ids.size, block)]
    finally:
        manifests.BLOCK_IDS = kept
    head = manifests.read_header(got)
    frames = [got[head.body_at + b.offset:head.body_at + b.offset + b.length]
              for b in head.blocks or ()]
    assert [(b.width, f) for b, f in zip(head.blocks or (), frames, strict=True)] == fresh
    back = decode(got)
    assert back.posts.tolist() == sorted(set(posts)) and back.users.tolist() == sorted(set(users))
    assert isinstance(back.posts, np.ndarray)


def test_id_lines_that_are_not_ids_are_refused() -> None:
    for bad in (b"12\n3", b"1a\n", b"\n", b"12\n1a\n", b"12345678901234567890\n"):
        with pytest.raises(ValueError):
            manifests.parse_lines([bad])


def test_the_fourth_byte_is_the_version_and_another_version_is_refused_by_name() -> None:
    data = encode([1, 2, 3])
    assert data[:3] == b"GKM" and data[3] == manifests.VERSION
    with pytest.raises(BadManifest, match="version 9; this gatekeeper reads versions 1 and 2"):
        decode(data[:3] + bytes([9]) + data[4:], "m.gkm")


def test_every_truncation_is_rejected_with_a_clear_error() -> None:
    data = encode(list(range(10**17, 10**17 + 5000, 7)), [12, 783214], {"delivery": "x"})
    for cut in range(len(data)):
        with pytest.raises(BadManifest, match=r"m\.gkm"):
            decode(data[:cut], "m.gkm")


def test_a_corrupt_byte_in_the_counts_or_ids_is_rejected() -> None:
    data = encode(list(range(10**17, 10**17 + 3000, 3)), [5, 6])
    start = data.index(b"}") + 1  # after the meta: the counts and the zstd frame
    for at in range(start, len(data), max(1, (len(data) - start) // 300)):
        bad = bytearray(data)
        bad[at] ^= 0x5A
        with pytest.raises(BadManifest):
            decode(bytes(bad))


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(max_size=200), st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1))
def test_hostile_bytes_raise_only_bad_manifest(tail: bytes, n_posts: int, n_users: int) -> None:
    for data in (tail, b"GKM\x01" + struct.pack("<I", 2) + b"{}" +
                 struct.pack("<QQ", n_posts, n_users) + tail):
        with pytest.raises(BadManifest):
            decode(data)


def test_a_frame_of_sorted_ids_whose_sum_wraps_is_rejected() -> None:
    import numpy as np
    import zstandard

    deltas = np.array([2**40, 2**63, 2**63], dtype="<u8")  # adds up past 2^64
    payload = deltas.view(np.uint8).reshape(-1, 8).T.tobytes() + bytes(9)
    data = (b"GKM\x01" + struct.pack("<I", 2) + b"{}" + struct.pack("<QQ", 3, 0)
            + zstandard.ZstdCompressor().compress(payload))
    with pytest.raises(BadManifest, match="do not add up"):
        decode(data)


# --- storage ------------------------------------------------------------------------------------


def test_a_manifest_is_stored_by_month_whole_and_indexed_by_delivery_time(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    store = manifests.Manifests(redis_client, tmp_path / "datasets")
    at = 1_764_400_000_000  # 2025-11-29
    ref = store.write("a" * 32, at, [3, 1, 2], [9])
    assert ref.name == f"2025-11/{'a' * 32}" and (ref.posts, ref.users) == (3, 1)
    path = tmp_path / "datasets" / "manifests" / "2025-11" / f"{'a' * 32}.gkm"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == ref.sha256
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left
    assert store.read(ref.name).posts.tolist() == [1, 2, 3]
    assert store.read(ref.name).meta == {"delivery": "a" * 32, "at_ms": at}
    store.write("b" * 32, at + 86_400_000 * 40, [4])
    assert store.listed() == [ref.name, f"2026-01/{'b' * 32}"]
    assert store.listed(until_ms=at) == [ref.name]
    assert redis_client.zscore(keys.MANIFESTS, ref.name) == at


def test_a_manifest_write_that_fails_names_nothing_and_indexes_nothing(
        tmp_path: Path, redis_client: redis.Redis) -> None:
    (tmp_path / "datasets").mkdir()
    (tmp_path / "datasets" / "manifests").write_text("not a directory")
    store = manifests.Manifests(redis_client, tmp_path / "datasets")
    with pytest.raises(manifests.InsufficientStorage, match="could not be written"):
        store.write("c" * 32, 1_764_400_000_000, [1])
    assert store.listed() == []


def test_a_manifest_in_the_object_store_is_one_object_under_its_month(
        tmp_path: Path, redis_client: redis.Redis, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("store_url")
    store = manifests.Manifests(redis_client, url)
    ref = store.write("d" * 32, 1_764_400_000_000, list(range(10**18, 10**18 + 1000)), [7])
    base, _, query = url.partition("?")
    assert objects(f"{base}/manifests/2025-11?{query}") == [f"{'d' * 32}.gkm"]
    assert store.read(ref.name).posts.size == 1000
    assert hashlib.sha256(store.read_bytes(ref.name)).hexdigest() == ref.sha256
    assert not store.exists(f"2025-11/{'e' * 32}")


# --- every delivery has its manifest ------------------------------------------------------------


def settled(gate: Gate, root: str = "acme") -> list[dict[str, str]]:
    """The committed deliveries' audit records."""
    return [r for r in ({k.decode(): v.decode() for k, v in f.items()}
                        for _i, f in gate.client.xrange(keys.audit(root)))
            if r.get("outcome") == "delivered"]


def check_manifest(gate: Gate, record: dict[str, str]) -> Any:
    """The manifest a committed delivery's audit record names, checked against its sha256."""
    data = gate.manifests.read_bytes(record["manifest"])
    assert hashlib.sha256(data).hexdigest() == record["manifest_sha256"]
    got = decode(data)
    assert (str(got.posts.size), str(got.users.size)) == (record["manifest_posts"],
                                                          record["manifest_users"])
    assert got.meta["delivery"] == record["share_id"]
    return got


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return build_gate(tmp_path, redis_client, terms="Jane Doe", kpop=True, config=(
        "[limits]\nhydrated_per_recipient = 1000\npost_ids_per_entity = 100000\n"))


def test_a_cli_share_commits_with_the_manifest_of_exactly_the_ids_in_its_file(
        gate: Gate, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 2500, start=1_600_000_000_000_000_000)
    delivered = [int(i) for i in (tmp_path / "out.txt").read_text().split()]
    [record] = settled(gate)
    got = check_manifest(gate, record)
    assert got.posts.tolist() == sorted(delivered) and got.users.size == 0
    assert got.meta["recipient"] == "acme" and got.meta["channel"] == "cli"


def test_a_partial_share_records_only_what_it_granted(gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.domain import shares

    ids = tmp_path / "ids.txt"
    ids.write_text("".join(f"{i}\n" for i in range(10**18, 10**18 + 100_050)))
    shares.share_to_file(gate, actor="dan", entity="acme", ids_path=ids,
                         out=tmp_path / "out.txt", purpose="t", allow_partial=True)
    delivered = [int(i) for i in (tmp_path / "out.txt").read_text().split()]
    assert len(delivered) == 100_000
    [record] = settled(gate)
    assert check_manifest(gate, record).posts.tolist() == delivered


def large_list(tmp_path: Path) -> tuple[Path, list[int]]:
    """An ID file of 100,000 lines (`shares.EXACT_FROM`: repeats found by numpy), shuffled,
    ten of them repeats; the IDs it holds."""
    import random

    from gatekeeper.domain import shares

    rng = random.Random(15)
    ids = [1_600_000_000_000_000_000 + rng.randrange(1 << 40) for _ in range(shares.EXACT_FROM)]
    ids[-10:] = ids[:10]
    rng.shuffle(ids)
    path = tmp_path / "large.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return path, ids


def test_a_large_list_shared_whole_is_recorded_from_the_ids_it_was_checked_with(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Issue 15: the sorted IDs the repeats pass read are the manifest — the spool is not
    parsed again — and the manifest is stored before the file is named (made alongside)."""
    from gatekeeper.domain import shares

    path, ids = large_list(tmp_path)
    out = tmp_path / "out.txt"
    monkeypatch.setattr(manifests, "parse_lines", lambda *a: pytest.fail("parsed again"))
    store = manifests.Manifests.store_stream
    seen_out: list[bool] = []

    def storing(self: manifests.Manifests, *args: Any) -> manifests.Ref:
        seen_out.append(out.exists())
        return store(self, *args)

    monkeypatch.setattr(manifests.Manifests, "store_stream", storing)  # every store's way
    res = shares.share_to_file(gate, actor="dan", entity="acme", ids_path=path, out=out,
                               purpose="t")
    delivered = [int(i) for i in out.read_text().split()]
    assert res.grant.granted == len(set(ids)) == len(delivered) and seen_out == [False]
    [record] = settled(gate)
    assert check_manifest(gate, record).posts.tolist() == sorted(set(ids)) == sorted(delivered)


def test_a_large_list_whose_manifest_cannot_be_stored_delivers_nothing(
        gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.domain import shares
    from gatekeeper.rules.errors import InsufficientStorage

    path, _ids = large_list(tmp_path)
    (tmp_path / "datasets" / "manifests").write_text("not a directory")
    with pytest.raises(InsufficientStorage, match="nothing was delivered or counted"):
        shares.share_to_file(gate, actor="dan", entity="acme", ids_path=path,
                             out=tmp_path / "out.txt", purpose="t")
    assert not (tmp_path / "out.txt").exists()
    assert settled(gate) == []


def test_an_api_share_of_a_large_list_is_recorded_without_parsing_it_again(
        gate: Gate, client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    path, ids = large_list(tmp_path)
    monkeypatch.setattr(manifests, "parse_lines", lambda *a: pytest.fail("parsed again"))
    token = gate.users.create_token("dan", actor="t", channel="cli")
    resp = client.post("/api/v1/shares?entity=acme&purpose=t", data=path.read_bytes(),
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    sent = [int(i) for i in resp.get_data(as_text=True).split()]
    resp.close()
    [record] = settled(gate)
    assert check_manifest(gate, record).posts.tolist() == sorted(set(ids)) == sorted(sent)


def test_a_replay_delivers_under_the_first_manifest_and_writes_none(
        gate: Gate, tmp_path: Path) -> None:
    share_ids(gate, tmp_path, "acme", 10, key="k1")
    share_ids(gate, tmp_path, "acme", 10, key="k1")
    [record] = settled(gate)
    assert gate.manifests.listed() == [record["manifest"]]


def test_an_api_share_commits_with_the_manifest_of_exactly_the_ids_it_sent(
        gate: Gate, client: FlaskClient) -> None:
    token = gate.users.create_token("dan", actor="t", channel="cli")
    body = "".join(f"{i}\n" for i in range(10**18 + 5, 10**18 + 4005, 2)) + f"{10**18 + 5}\n"
    resp = client.post("/api/v1/shares?entity=acme&purpose=t", data=body,
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    sent = [int(i) for i in resp.get_data(as_text=True).split()]
    resp.close()
    [record] = settled(gate)
    assert record["manifest"].endswith(resp.headers["X-Share-Id"])
    assert check_manifest(gate, record).posts.tolist() == sorted(sent)


def spanish_posts() -> list[dict[str, Any]]:
    from gatekeeper.domain.formats import iter_posts

    return [p for p in iter_posts(SAMPLES / "kpop.jsonl") if p.get("lang") == "es"]


def test_a_hydrated_export_commits_with_the_manifest_of_its_posts_and_users(
        gate: Gate, client: FlaskClient) -> None:
    from openpyxl import load_workbook

    book = load_workbook(io.BytesIO(export_spanish(client)), read_only=True)
    header, *rows = list(book["Posts"].iter_rows(values_only=True))
    book.close()
    spanish = spanish_posts()
    assert sorted(r[header.index("id")] for r in rows) == sorted(p["id"] for p in spanish)
    [record] = settled(gate)
    got = check_manifest(gate, record)
    originals = [r for p in spanish for r in p.get("referenced_tweets") or ()
                 if r.get("type") == "retweeted" and "text" in r]
    assert originals  # what a whole retweet delivers of another post
    assert got.posts.tolist() == sorted({int(p["id"]) for p in spanish + originals})
    assert got.users.tolist() == sorted({int(p["author_id"]) for p in spanish + originals})
    assert got.meta["recipient"] == "ana" and record["kind"] == "export.xlsx"


def test_a_share_whose_manifest_cannot_be_stored_is_refunded_and_delivers_nothing(
        gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.rules.errors import InsufficientStorage

    (tmp_path / "datasets" / "manifests").write_text("not a directory")
    with pytest.raises(InsufficientStorage, match="nothing was delivered or counted"):
        share_ids(gate, tmp_path, "acme", 10)
    assert not (tmp_path / "out.txt").exists()
    assert settled(gate) == []


def test_a_share_to_a_store_url_keeps_its_manifest_in_the_object_store(
        tmp_path: Path, redis_client: redis.Redis, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("store_url")
    g = build_gate(tmp_path, redis_client, terms="Jane Doe")
    (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{url}"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    share_ids(g, tmp_path, "acme", 300)
    [record] = settled(g)
    assert check_manifest(g, record).posts.size == 300
    assert not (tmp_path / "datasets" / "manifests").exists()


# --- version 2: blocks, a checked table, one block read at a time -------------------------------


def small_blocks(size: int) -> Any:
    """manifests.BLOCK_IDS set to `size` for a with-block (hypothesis: no fixtures)."""
    import contextlib

    @contextlib.contextmanager
    def setting() -> Any:
        kept, manifests.BLOCK_IDS = manifests.BLOCK_IDS, size
        try:
            yield
        finally:
            manifests.BLOCK_IDS = kept

    return setting()


@settings(max_examples=150, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(IDS, max_size=300), st.lists(IDS, max_size=100), st.integers(1, 40))
def test_version_2_round_trips_in_blocks_and_each_block_alone(
        posts: list[int], users: list[int], block: int) -> None:
    with small_blocks(block):
        data = encode(posts, users, {"m": 1})
    assert data[3] == 2
    got = decode(data)
    assert got.posts.tolist() == sorted(set(posts)) and got.users.tolist() == sorted(set(users))
    head = manifests.read_header(data)
    assert head.blocks is not None
    for kind, ids in (("posts", sorted(set(posts))), ("users", sorted(set(users)))):
        mine = [b for b in head.blocks if b.kind == kind]
        assert [b.count for b in mine] == [len(ids[i:i + block])
                                           for i in range(0, len(ids), block)]
        assert head.span(kind) == ((ids[0], ids[-1]) if ids else None)
        for b in mine:
            at = head.body_at + b.offset
            part = manifests.unpack_block(b, data[at:at + b.length]).tolist()
            assert part[0] == b.first and part[-1] == b.last
            assert all(head.block_for(kind, i) == b for i in part)


@settings(max_examples=100, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(IDS, max_size=300), st.lists(IDS, max_size=100))
def test_version_1_manifests_are_still_read(posts: list[int], users: list[int]) -> None:
    got = decode(manifests.encode_v1(posts, users, {"delivery": "x"}))
    assert got.posts.tolist() == sorted(set(posts)) and got.users.tolist() == sorted(set(users))
    assert got.meta == {"delivery": "x"}


def v2_sample() -> bytes:
    with small_blocks(500):  # about 2 blocks of IDs 7 ms (and a little) apart, then users
        return encode([10**17 + i * (7 << 22 | 12345) for i in range(1000)],
                      [12, 783214, 2**40], {"delivery": "x"})


def test_every_truncation_of_a_version_2_manifest_is_rejected_by_name() -> None:
    data = v2_sample()
    for cut in range(len(data)):
        with pytest.raises(BadManifest, match=r"m\.gkm"):
            decode(data[:cut], "m.gkm")


def test_a_corrupt_byte_anywhere_in_a_version_2_manifest_is_rejected() -> None:
    data = v2_sample()
    start = data.index(b"}") + 1  # after the meta: counts, block table, checksum, frames
    for at in range(start, len(data)):
        bad = bytearray(data)
        bad[at] ^= 0x5A
        with pytest.raises(BadManifest):
            decode(bytes(bad))


def resealed(data: bytes, table: bytes) -> bytes:
    """`data` with its block table replaced by `table` and the header's checksum made anew:
    a header that passes its checksum and lies."""
    head = manifests.read_header(data)
    table_at = head.body_at - manifests.CHECK.size - len(table)
    front = data[:table_at] + table
    return front + manifests.CHECK.pack(zlib.crc32(front)) + data[head.body_at:]


@pytest.mark.parametrize("field,value", [
    (0, 10**17 + 1), (1, 10**17 + 10), (1, 2**63), (2, 499), (2, 501), (3, 1), (4, 1),
    (4, 10**6), (5, 9), (5, 0), (0, 0)])
def test_a_block_table_that_lies_is_rejected_even_with_a_good_checksum(field: int,
                                                                       value: int) -> None:
    data = v2_sample()
    head = manifests.read_header(data)
    assert head.blocks is not None
    table_at = head.body_at - manifests.CHECK.size - len(head.blocks) * manifests.ENTRY.size
    entries = [list(manifests.ENTRY.unpack_from(data, table_at + i * manifests.ENTRY.size))
               for i in range(len(head.blocks))]
    entries[1 if field != 0 or value else 0][field] = value
    table = b"".join(manifests.ENTRY.pack(*e) for e in entries)
    with pytest.raises(BadManifest, match=r"m\.gkm"):
        decode(resealed(data, table), "m.gkm")


@settings(max_examples=300, suppress_health_check=[HealthCheck.too_slow])
@given(st.integers(0, 2**64 - 1), st.integers(0, 2**64 - 1), st.integers(0, 2**32 - 1),
       st.binary(max_size=300), st.binary(max_size=100))
def test_hostile_version_2_headers_with_good_checksums_raise_only_bad_manifest(
        n_posts: int, n_users: int, block_ids: int, table: bytes, tail: bytes) -> None:
    front = b"GKM\x02" + struct.pack("<I", 2) + b"{}" + struct.pack(
        "<QQI", n_posts, n_users, block_ids) + table
    data = front + struct.pack("<I", zlib.crc32(front)) + tail
    with pytest.raises(BadManifest):
        decode(data)


def test_a_header_is_read_from_its_first_bytes_and_asks_for_the_rest() -> None:
    data = v2_sample()
    head = manifests.read_header(data)
    with pytest.raises(manifests.NeedMore) as more:
        manifests.read_header(data[:20], "m.gkm", size=len(data))
    assert more.value.wanted <= head.body_at
    assert manifests.read_header(data[:head.body_at], size=len(data)) == head
    with pytest.raises(BadManifest, match="not the"):  # the file is shorter than it says
        manifests.read_header(data[:head.body_at], "m.gkm", size=len(data) - 1)
