"""Issue 14 item 3: `[datasets] dir` may be an S3-compatible object store, shared by servers.

A `moto` S3 server runs on a free loopback port for the session (no skip: without moto the
tests fail). Credentials come from the environment only. What a dataset in the store answers —
previews, tallies, export rows, ID shares — equals what the same file answers from a
directory; two Gates over one Redis and one store see each other's datasets; remove and a
failed add leave no object; a stale or missing index in the store is rebuilt.
"""

from __future__ import annotations

import hashlib
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pyarrow.fs as pafs
import pytest
import redis

from gatekeeper import config as config_mod
from gatekeeper.domain import dsindex, dsstore
from gatekeeper.domain.datasets import Datasets
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.domain.hydrated import Selection
from gatekeeper.ledger import keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.errors import (
    BadInput,
    ConfigError,
    Conflict,
    InsufficientStorage,
    NotFound,
    StoreUnavailable,
)
from gatekeeper.rules.r9 import Deleted
from tests.test_dsindex import FILTERS, SAMPLES, deletions, generated

KEY_ID, SECRET = "testing-key", "testing-secret"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A moto S3 server on loopback (`moto_server`, the console script of moto[server])."""
    port = _free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    script = Path(sys.executable).with_name("moto_server")
    command = [str(script)] if script.exists() else ["moto_server"]
    with open(log, "wb") as out:
        proc = subprocess.Popen([*command, "-H", "127.0.0.1", "-p", str(port)],
                                stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"moto_server did not start: {log.read_text()}") \
                        from None
                time.sleep(0.1)
        yield f"127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def store_url(moto_endpoint: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket's URL, the credentials in the environment only."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY_ID)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    bucket = f"gk-{uuid.uuid4().hex[:12]}"
    admin().create_dir(bucket)
    return (f"s3://{bucket}/data?endpoint_override={moto_endpoint}&scheme=http"
            f"&region=us-east-1")


_ADMIN: dict[str, pafs.S3FileSystem] = {}


def admin() -> pafs.S3FileSystem:
    """What the tests look into the store with (the code under test never creates buckets)."""
    return _ADMIN["fs"]


@pytest.fixture(autouse=True)
def _admin(moto_endpoint: str) -> None:
    _ADMIN["fs"] = pafs.S3FileSystem(access_key=KEY_ID, secret_key=SECRET,
                                     endpoint_override=moto_endpoint, scheme="http",
                                     region="us-east-1", allow_bucket_creation=True)


def objects(url: str) -> list[str]:
    prefix = url.split("://", 1)[1].split("?")[0]
    infos = admin().get_file_info(pafs.FileSelector(prefix, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == pafs.FileType.File)


def key_of(url: str, file: str) -> str:
    return url.split("://", 1)[1].split("?")[0] + "/" + file


def answers(datasets: Datasets, name: str) -> list[Any]:
    """Everything a preview, an export and an ID share read of a dataset."""
    gate: Any = SimpleNamespace(datasets=datasets)
    out: list[Any] = []
    for deleted in deletions_of(datasets, name)[::3]:  # none; posts and users together
        for filters in FILTERS[:2] + FILTERS[3::3]:  # every shape: none, lang, time, author,
            # contains, all together (each read through the store costs a few requests)
            for referenced in (False, True):
                sel = Selection(name, filters, deleted, whole_retweets=not referenced,
                                referenced=referenced)
                tally = sel.tally(gate, with_users=True)
                out.append((tally.posts, tally.duplicates, list(tally.authors.items()),
                            list(sel.posts(gate))))
            out.append((list(datasets.post_ids(name, filters)),
                        list(datasets.light(name, filters)),
                        list(datasets.author_ids(name, filters))))
    out.append(list(datasets.posts(name)))
    return out


_DELETED: dict[str, Any] = {}


def deletions_of(datasets: Datasets, name: str) -> Any:
    return _DELETED[name[1:]]


def test_a_dataset_in_the_store_answers_as_the_same_dataset_in_a_directory(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    local = Datasets(redis_client, Ledger(redis_client), tmp_path / "datasets")
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    sources = [SAMPLES / "kpop.jsonl", generated(tmp_path / "g1.jsonl", 1),
               generated(tmp_path / "g2.jsonl.gz", 2, gz=True),
               generated(tmp_path / "g3.jsonl", 3, bom=True)]
    for n, source in enumerate(sources):
        here = local.add(f"l{n}", source, actor="t", channel="cli")
        there = remote.add(f"r{n}", source, actor="t", channel="cli")
        assert (there.posts, there.users, there.sha256, there.bytes, there.repeated_posts) == \
            (here.posts, here.users, here.sha256, here.bytes, here.repeated_posts)
        with admin().open_input_file(key_of(store_url, there.file)) as fh:
            assert fh.read() == source.read_bytes()  # the JSONL is stored as given, byte for byte
        _DELETED[str(n)] = deletions(local.path(f"l{n}"), n)
        assert answers(remote, f"r{n}") == answers(local, f"l{n}")
    assert objects(store_url) == sorted(
        f"r{n}{suffix}" for n, source in enumerate(sources)
        for suffix in (".index.parquet", ".jsonl.gz" if source.name.endswith(".gz")
                       else ".jsonl"))
    assert not list((tmp_path / "datasets").glob("r*"))  # nothing of the store's on disk


def _gate(tmp_path: Path, client: redis.Redis, url: str, name: str) -> Gate:
    directory = tmp_path / name
    directory.mkdir()
    (directory / "config.toml").write_text(f'[datasets]\ndir = "{url}"\n')
    config = config_mod.load(directory / "config.toml")
    assert config.datasets_url == url
    return Gate(config, client=client)


def test_two_servers_sharing_a_store_see_the_datasets_the_other_adds_and_removes(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    one, two = (_gate(tmp_path, redis_client, store_url, n) for n in ("one", "two"))
    kpop = one.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    assert two.datasets.list() == [kpop]
    ids = list(one.datasets.post_ids("kpop"))
    assert list(two.datasets.post_ids("kpop")) == ids and len(ids) == kpop.posts
    hidden = Deleted(1, frozenset(map(int, ids)), frozenset())
    assert two.datasets.affected(hidden) == {"kpop": kpop.posts}  # R9 impact, from the store
    geo = two.datasets.add("geo", SAMPLES / "geo_tweets.jsonl", actor="t", channel="cli")
    assert [i.name for i in one.datasets.list()] == ["geo", "kpop"]
    assert list(one.datasets.posts("geo")) == list(two.datasets.posts("geo"))
    assert len(list(one.datasets.posts("geo"))) == geo.posts
    two.datasets.remove("kpop", actor="t", channel="cli")
    with pytest.raises(NotFound):
        one.datasets.check("kpop")
    assert objects(store_url) == ["geo.index.parquet", "geo.jsonl"]
    assert redis_client.get(keys.DATASETS_LOCK) is None  # every lock released


def test_remove_deletes_the_objects_and_is_audited(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    assert objects(store_url) == ["kpop.index.parquet", "kpop.jsonl"]
    remote.remove("kpop", actor="admin", channel="cli")
    assert objects(store_url) == []
    assert remote.list() == []
    kinds = [f[b"kind"] for _, f in redis_client.xrange(keys.SYS_AUDIT)]
    assert kinds == [b"dataset.add", b"dataset.remove"]
    with pytest.raises(NotFound):
        remote.check("kpop")


def test_a_failed_add_leaves_no_object_and_registers_nothing(
        redis_client: redis.Redis, tmp_path: Path, store_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    empty = tmp_path / "users.jsonl"
    empty.write_text('{"data": []}\n')
    with pytest.raises(BadInput):
        remote.add("e", empty, actor="t", channel="cli")
    upload = dsstore.ObjectStore.upload

    def second_fails(self: dsstore.ObjectStore, src: Any, file: str) -> None:
        if file.endswith(dsindex.SUFFIX):  # the JSONL is up; its index is refused
            raise OSError(28, "quota exceeded")
        upload(self, src, file)

    monkeypatch.setattr(dsstore.ObjectStore, "upload", second_fails)
    with pytest.raises(InsufficientStorage):
        remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    assert objects(store_url) == []
    assert remote.list() == [] and redis_client.get(keys.DATASETS_LOCK) is None
    monkeypatch.setattr(dsstore.ObjectStore, "upload", upload)
    assert remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli").posts == 100


def test_a_missing_or_stale_index_in_the_store_is_rebuilt_before_use(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    source = generated(tmp_path / "g.jsonl", 7)
    remote.add("g", source, actor="t", channel="cli")
    index_key = key_of(store_url, "g" + dsindex.SUFFIX)

    def now() -> tuple[int, list[str]]:
        sel = Selection("g", Filters(contains="strasse"), deletions(source, 7)[0])
        tally = sel.tally(SimpleNamespace(datasets=remote), with_users=False)
        return tally.posts, list(remote.post_ids("g"))

    want = now()
    admin().delete_file(index_key)  # missing
    assert now() == want and "g.index.parquet" in objects(store_url)

    # The JSONL replaced under the index (a restore by hand): the index follows it.
    changed = source.read_bytes().replace(b"Stra\\u00dfe", b"plain  ")
    assert changed != source.read_bytes()
    with admin().open_output_stream(key_of(store_url, "g.jsonl"), compression=None) as out:
        out.write(changed)
    got = now()
    assert got != want and got[0] < want[0]
    with admin().open_input_file(index_key) as fh:
        assert dsindex.describes(fh, remote.remote.identity("g.jsonl"))  # type: ignore[union-attr]


def test_the_config_takes_a_store_url_but_never_credentials(tmp_path: Path) -> None:
    good = "s3://bucket/prefix?endpoint_override=127.0.0.1:9000&scheme=http&region=us-east-1"
    (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{good}"\n')
    assert config_mod.load(tmp_path / "config.toml").datasets_url == good
    for bad in ("s3://bucket/p?secret_key=x", "s3://bucket/p?access_key=k",
                "s3://key:secret@bucket/p", "ftp://bucket/p"):
        (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{bad}"\n')
        with pytest.raises(ConfigError, match=r"datasets\.dir"):
            config_mod.load(tmp_path / "config.toml")
    (tmp_path / "config.toml").write_text('[datasets]\ndir = "data/sets"\n')
    config = config_mod.load(tmp_path / "config.toml")
    assert config.datasets_url is None and config.datasets_dir == tmp_path / "data" / "sets"


def test_the_store_lock_is_released_only_by_its_holder(
        redis_client: redis.Redis, store_url: str) -> None:
    store = dsstore.ObjectStore(store_url, redis_client)
    with store.locked():
        assert not redis_client.set(keys.DATASETS_LOCK, "other", nx=True, px=1000)
        redis_client.set(keys.DATASETS_LOCK, "other")  # it expired and another server took it
    assert redis_client.get(keys.DATASETS_LOCK) == b"other"  # not deleted by the old holder


def test_an_unreachable_store_is_said_plainly_and_counts_as_unavailable(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    away = Datasets(redis_client, Ledger(redis_client), store_url.replace(
        store_url.split("endpoint_override=")[1].split("&")[0], f"127.0.0.1:{_free_port()}"))
    with pytest.raises(StoreUnavailable, match="cannot be reached") as err:
        away.check("kpop")
    assert "secret" not in err.value.message and SECRET not in err.value.message


def test_the_cli_adds_shows_and_removes_a_dataset_in_the_store(
        store_dir: Path, runner: Any, store_url: str) -> None:
    config = store_dir / "config.toml"
    config.write_text(config.read_text() + f'[datasets]\ndir = "{store_url}"\n')
    added = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"))
    assert added.exit_code == 0, added.output
    assert objects(store_url) == ["kpop.index.parquet", "kpop.jsonl"]
    shown = runner("dataset", "show", "kpop")
    assert shown.exit_code == 0 and "100" in shown.output, shown.output
    assert not (store_dir / "datasets").exists()  # nothing written on the local disk
    removed = runner("dataset", "remove", "kpop")
    assert removed.exit_code == 0, removed.output
    assert objects(store_url) == []


def test_two_servers_adding_one_name_at_once_register_it_once(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    one, two = (_gate(tmp_path, redis_client, store_url, n) for n in ("one", "two"))
    outcomes: list[str] = []

    def add(gate: Gate, source: Path) -> None:
        try:
            gate.datasets.add("same", source, actor="t", channel="cli")
            outcomes.append(source.name)
        except Conflict:
            outcomes.append("conflict")

    threads = [threading.Thread(target=add, args=(one, SAMPLES / "kpop.jsonl")),
               threading.Thread(target=add, args=(two, SAMPLES / "geo_tweets.jsonl"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(outcomes)[0] == "conflict" and len(outcomes) == 2, outcomes
    [winner] = [o for o in outcomes if o != "conflict"]
    assert one.datasets.info("same").sha256 == hashlib.sha256(
        (SAMPLES / winner).read_bytes()).hexdigest()
    with admin().open_input_file(key_of(store_url, "same.jsonl")) as fh:
        assert fh.read() == (SAMPLES / winner).read_bytes()  # the winner's bytes, whole
    assert objects(store_url) == ["same.index.parquet", "same.jsonl"]
