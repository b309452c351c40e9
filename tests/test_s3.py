"""Issue 14 item 3: `[datasets] dir` may be an S3-compatible object store, shared by servers.

A `moto` S3 server runs on a free loopback port for the session (no skip: without moto the
tests fail). Credentials come from the environment only. What a dataset in the store answers —
previews, tallies, export rows, ID shares — equals what the same file answers from a
directory; two Gates over one Redis and one store see each other's datasets; remove and a
failed add leave no object; a stale or missing index in the store is rebuilt.

The store dropping mid-operation is a real one: the code under test reaches moto through a
TCP relay (`Relay`) that, from the moment a request matching a pattern passes, drops every
connection and refuses new ones — until the test brings it back. The tests look into the
store directly.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import re
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
from flask import Flask
from flask.testing import FlaskClient
from live import sign_in_agreeing

from gatekeeper import config as config_mod
from gatekeeper import faults
from gatekeeper.domain import dsindex, dsstore, quota
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
    DatasetStoreUnavailable,
    InsufficientStorage,
    NotFound,
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
    assert not redis_client.smembers(keys.DATASETS_PENDING)  # removed at once: nothing owed
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
    with pytest.raises(DatasetStoreUnavailable, match="cannot be reached") as err:
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


# --- the store dropping mid-operation -----------------------------------------------------------


class Relay:
    """A TCP relay to moto that drops every connection, and refuses new ones, from the moment
    the `nth` request matching `pattern` reaches it (before that request is passed on): the
    store gone mid-operation, at a point the test chooses. `back()` brings it back. With
    `only`, just that request and every later match (pyarrow's retries too) are dropped; the
    rest pass: a store failing some reads while it answers others."""

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.pattern: re.Pattern[bytes] | None = None
        self.left = 0
        self.only = False
        self.requests: list[bytes] = []  # "METHOD path" of every request passed or dropped
        self.listening = False
        self.seen = 0  # requests matching `pattern` since it was set
        self.cut = threading.Event()
        self.lock = threading.Lock()
        self.sockets: list[socket.socket] = []
        self.port = 0
        self._listen()

    def _listen(self) -> None:
        self.listener = socket.socket()
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind(("127.0.0.1", self.port))
        self.port = self.listener.getsockname()[1]
        self.listener.listen(64)
        self.listening = True
        threading.Thread(target=self._accept, args=(self.listener,), daemon=True).start()

    def drop_at(self, pattern: bytes, nth: int = 1, *, only: bool = False) -> None:
        with self.lock:
            self.pattern, self.left, self.seen = re.compile(pattern), nth, 0
            self.only = only

    def count(self, pattern: bytes) -> None:
        """Count the requests matching `pattern`, dropping none."""
        self.drop_at(pattern, nth=0)

    def _accept(self, listener: socket.socket) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return  # closed: the store is away
            if self.cut.is_set() and not self.only:
                client.close()
                return  # away: nothing more is accepted
            # (With `only`, later connections are relayed as before: _pump drops each of them
            # that asks for a matching request, so pyarrow's retries fail at once instead of
            # waiting in the backlog for its request timeout.)
            try:
                up = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self.lock:
                self.sockets += [client, up]
            threading.Thread(target=self._pump, args=(client, up, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(up, client, False), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, requests: bool) -> None:
        with contextlib.suppress(OSError):
            while data := src.recv(65536):
                if requests and self._drops(data):
                    if self.only:
                        self.cut.set()
                        break  # this connection only
                    self.drop()
                    return
                dst.sendall(data)
        for s in (src, dst):
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)

    def _drops(self, data: bytes) -> bool:
        with self.lock:
            self.requests += re.findall(rb"(?m)^(?:GET|HEAD|PUT|POST|DELETE) [^ ?]+", data)
            if self.pattern is None:
                return False
            hits = len(self.pattern.findall(data))
            self.seen += hits
            return bool(self.left and self.seen >= self.left)

    def drop(self) -> None:
        self.cut.set()
        self.listening = False
        with contextlib.suppress(OSError):  # wakes the accept() blocked on it (Linux)
            self.listener.shutdown(socket.SHUT_RDWR)
        self.listener.close()
        with self.lock:
            self.pattern = None
            sockets, self.sockets = self.sockets, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def back(self) -> None:
        with self.lock:
            self.pattern = None
        self.cut.clear()
        if not self.listening:
            self._listen()


@pytest.fixture
def relay(moto_endpoint: str) -> Iterator[Relay]:
    host, port = moto_endpoint.rsplit(":", 1)
    r = Relay((host, int(port)))
    yield r
    r.drop()


@pytest.fixture
def relayed_url(store_url: str, relay: Relay, moto_endpoint: str) -> str:
    """The same bucket, reached through the relay."""
    return store_url.replace(moto_endpoint, f"127.0.0.1:{relay.port}")


def request_for(file: str, method: bytes = b"GET") -> bytes:
    return method + rb" /[^ ]*/" + re.escape(file.encode()) + rb"[ ?]"


def plainly(message: str, url: str) -> None:
    """The store's plain answer: its URL, never credentials, never a traceback."""
    assert "cannot be reached" in message and url.split("?")[0] in message, message
    assert SECRET not in message and KEY_ID not in message and "Traceback" not in message


def test_a_preview_whose_store_fails_a_read_is_the_plain_answer_never_a_rebuild(
        redis_client: redis.Redis, relay: Relay, relayed_url: str, moto_endpoint: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), relayed_url)
    remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    sel = Selection("kpop", Filters(lang="es"), Deleted(0, frozenset(), frozenset()))
    relay.count(request_for("kpop.index.parquet"))
    want = sel.tally(SimpleNamespace(datasets=remote), with_users=True)
    reads = relay.seen
    assert reads >= 2  # the footer checked, then the columns read
    host, port = moto_endpoint.rsplit(":", 1)
    # The first read of the index (its footer, checked) fails, then the last (its columns),
    # the store answering every other request (their retries fail too): a fresh server each
    # time. (Not every read in turn: each failed read waits out pyarrow's retries, ~6 s.)
    for nth in sorted({1, reads}):
        flaky = Relay((host, int(port)))
        server = Datasets(redis_client, Ledger(redis_client),
                          relayed_url.replace(f":{relay.port}&", f":{flaky.port}&"))
        flaky.drop_at(request_for("kpop.index.parquet"), nth, only=True)
        with pytest.raises(DatasetStoreUnavailable) as err:
            sel.tally(SimpleNamespace(datasets=server), with_users=True)
        assert flaky.cut.is_set(), nth
        plainly(err.value.message, relayed_url)
        assert redis_client.get(keys.DATASETS_LOCK) is None
        # Never taken for a damaged or stale index, so never rebuilt: a rebuild reads the
        # whole JSONL (minutes at 10M posts) for a network error.
        rebuilding = [r for r in flaky.requests
                      if (r.startswith(b"GET ") and r.endswith(b"/kpop.jsonl")) or
                      (r.startswith((b"PUT ", b"POST ")) and r.endswith(SUFFIX_BYTES))]
        assert rebuilding == [], (nth, flaky.requests)
        flaky.drop()
    assert sel.tally(SimpleNamespace(datasets=remote), with_users=True) == want


SUFFIX_BYTES = b"/kpop" + dsindex.SUFFIX.encode()


def test_an_index_rebuild_whose_store_drops_mid_read_writes_no_index(
        redis_client: redis.Redis, relay: Relay, relayed_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), relayed_url)
    remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    want = list(remote.post_ids("kpop"))
    admin().delete_file(key_of(relayed_url, "kpop.index.parquet"))  # to be rebuilt
    relay.drop_at(request_for("kpop.jsonl"))  # the rebuild's first read of the JSONL
    with pytest.raises(DatasetStoreUnavailable) as err:
        list(remote.post_ids("kpop"))
    plainly(err.value.message, relayed_url)
    assert objects(relayed_url) == ["kpop.jsonl"]  # no index, whole or partial
    assert redis_client.get(keys.DATASETS_LOCK) is None
    relay.back()
    assert list(remote.post_ids("kpop")) == want
    assert objects(relayed_url) == ["kpop.index.parquet", "kpop.jsonl"]


PASSWORD = "correct horse battery"


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis, relayed_url: str) -> Gate:
    """A server whose datasets are in the store, reached through the relay."""
    (tmp_path / "config.toml").write_text(
        '[limits]\nhydrated_per_recipient = 1000\npost_ids_per_entity = 1000\n'
        f'[datasets]\ndir = "{relayed_url}"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    g.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="test", channel="cli")
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                channel="cli")
    return g


def _signed_in(client: FlaskClient) -> None:
    sign_in_agreeing(client, "ana", PASSWORD)


def _export_form(client: FlaskClient) -> dict[str, str]:
    resp = client.get("/export", query_string={"dataset": "kpop", "lang": "es"})
    assert resp.status_code == 200
    form = resp.get_data(as_text=True)
    form = form[form.index('id="export-form"'):]
    return {"format": "xlsx", **dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))}


# The XLSX writer leaves the partial package's ZipFile open when its rows raise; collected after
# the export closed its spool, the ZipFile's __del__ fails to write to it (ignored, harmless:
# the partial file is discarded). Noticed in exports/xlsx.py, not this part's to change.
@pytest.mark.filterwarnings("ignore:Exception ignored in. <function ZipFile.__del__"
                            ":pytest.PytestUnraisableExceptionWarning")
def test_a_web_export_whose_store_drops_mid_read_is_a_plain_503_and_counts_nothing(
        app: Flask, gate: Gate, relay: Relay, relayed_url: str, tmp_path: Path,
        monkeypatch: pytest.MonkeyPatch) -> None:
    client = app.test_client()  # not kept in a `with`: it posts from another thread
    _signed_in(client)
    form = _export_form(client)  # previewed: the index read, the tally shown
    # Held once counted (reserved), nothing read of the posts yet; the store then drops at
    # the first post fetched from the JSONL at its offset.
    held = tmp_path / "failpoints"
    held.mkdir()
    monkeypatch.setenv(faults.ENV, "export.reserved:pause")
    monkeypatch.setenv(faults.ENV_DIR, str(held))
    answered: dict[str, Any] = {}
    def post() -> None:
        try:
            answered["resp"] = client.post("/export", data=form)
        except BaseException as exc:
            answered["exc"] = repr(exc)

    export = threading.Thread(target=post)
    export.start()
    deadline = time.monotonic() + 120
    while not list(held.glob("export.reserved.*.held")):
        assert export.is_alive() and time.monotonic() < deadline, answered
        time.sleep(0.01)
    assert quota.user_quota(gate, "ana")["used"] > 0  # reserved
    relay.drop_at(request_for("kpop.jsonl"))
    (held / "export.reserved.go").touch()
    export.join()
    monkeypatch.delenv(faults.ENV)
    resp = answered["resp"]
    assert resp.status_code == 503 and relay.cut.is_set()
    plainly(resp.get_data(as_text=True), relayed_url)
    assert quota.user_quota(gate, "ana")["used"] == 0  # given back, not committed
    relay.back()
    resp = client.post("/export", data=_export_form(client))
    try:
        assert resp.status_code == 200
        from openpyxl import load_workbook
        book = load_workbook(io.BytesIO(resp.get_data()), read_only=True)
        rows = list(book["Posts"].iter_rows(values_only=True))
        book.close()
    finally:
        resp.close()
    assert quota.user_quota(gate, "ana")["used"] == len(rows) - 1 > 0


def test_a_web_preview_whose_store_is_away_shows_the_plain_answer(
        client: FlaskClient, gate: Gate, relay: Relay, relayed_url: str) -> None:
    _signed_in(client)
    relay.drop_at(request_for("kpop.index.parquet"))
    resp = client.get("/export", query_string={"dataset": "kpop", "lang": "es"})
    assert resp.status_code != 500 and relay.cut.is_set()
    page = resp.get_data(as_text=True)
    plainly(page.replace("&#39;", "'"), relayed_url)
    relay.back()
    assert "cannot be reached" not in _page(client)


def _page(client: FlaskClient) -> str:
    resp = client.get("/export", query_string={"dataset": "kpop", "lang": "es"})
    assert resp.status_code == 200
    return resp.get_data(as_text=True)


def test_a_cli_share_whose_store_drops_mid_read_exits_5_and_counts_nothing(
        acme: Path, runner: Any, relay: Relay, relayed_url: str) -> None:
    config = acme / "config.toml"
    config.write_text(config.read_text() + f'[datasets]\ndir = "{relayed_url}"\n')
    assert runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl")).exit_code == 0
    relay.drop_at(request_for("kpop.index.parquet"), 2)  # past the footer: the columns
    share = ("share", "--as", "dana", "--entity", "acme", "--dataset", "kpop",
             "--out", "ids.txt")
    failed = runner(*share)
    assert failed.exit_code == 5 and relay.cut.is_set(), failed.output
    plainly(failed.output, relayed_url)
    assert not (acme / "ids.txt").exists() and list(acme.glob("ids.txt*")) == []
    relay.back()
    # The entity may share 100 IDs (store_dir's config), kpop holds 100: had the failed share
    # counted any, this one would be refused.
    done = runner(*share)
    assert done.exit_code == 0, done.output
    assert len((acme / "ids.txt").read_text().split()) == 100


def test_an_object_replaced_with_the_same_size_in_the_same_second_is_reindexed(
        redis_client: redis.Redis, tmp_path: Path, store_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), store_url)
    source = generated(tmp_path / "g.jsonl", 7)
    body = source.read_bytes()
    changed = body.replace(b"Stra\\u00dfe", b"xylophone  ")  # same size, other text
    assert changed != body and len(changed) == len(body)
    store = remote.remote
    assert store is not None
    for _ in range(50):  # until the replacement lands in the second the original did
        info = remote.add("g", source, actor="t", channel="cli")
        assert info.index is not None
        with admin().open_output_stream(key_of(store_url, "g.jsonl"), compression=None) as out:
            out.write(changed)
        now = store.identity("g.jsonl")
        if (now["bytes"], now["mtime_ns"]) == (info.index["bytes"], info.index["mtime_ns"]):
            break
        remote.remove("g", actor="t", channel="cli")
    else:
        pytest.fail("no replacement landed within the original's second in 50 tries")
    assert now["etag"] != info.index["etag"]  # what tells them apart
    local = Datasets(redis_client, Ledger(redis_client), tmp_path / "local")
    (tmp_path / "changed.jsonl").write_bytes(changed)
    local.add("c", tmp_path / "changed.jsonl", actor="t", channel="cli")
    local.add("o", source, actor="t", channel="cli")

    def strasse(datasets: Datasets, name: str) -> tuple[int, list[int]]:
        got = datasets.count(name, Filters(contains="xylophone"), Deleted(0, frozenset(),
                                                                        frozenset()))
        return got.posts, got.rows.tolist()

    assert strasse(remote, "g") == strasse(local, "c") != strasse(local, "o")
    with admin().open_input_file(key_of(store_url, "g.index.parquet")) as fh:
        assert dsindex.describes(fh, now)  # rebuilt for the replacement


def test_a_store_dropping_mid_add_leaves_no_object_once_it_is_back(
        redis_client: redis.Redis, tmp_path: Path, relay: Relay, relayed_url: str) -> None:
    (tmp_path / "config.toml").write_text(f'[datasets]\ndir = "{relayed_url}"\n')
    gate = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    relay.drop_at(request_for("kpop.index.parquet", b"(?:PUT|POST)"))  # the JSONL is up
    with pytest.raises(DatasetStoreUnavailable) as err:
        gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    plainly(err.value.message, relayed_url)
    assert "removed once the store is back" in err.value.message
    assert gate.datasets.list() == [] and redis_client.get(keys.DATASETS_LOCK) is None
    assert objects(relayed_url) == ["kpop.jsonl"]  # kept by the store that dropped
    assert redis_client.smembers(keys.DATASETS_PENDING) == {b"kpop"}
    assert gate.sweep()["files_removed"] == []  # still away: the mark stays
    assert redis_client.smembers(keys.DATASETS_PENDING) == {b"kpop"}
    relay.back()
    swept = gate.sweep()  # start-up and `gatekeeper store sweep`
    assert swept["files_removed"] == [f"{relayed_url.split('?')[0]}/kpop.jsonl"]
    assert objects(relayed_url) == []
    assert not redis_client.smembers(keys.DATASETS_PENDING)
    assert gate.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli").posts \
        == 100
    assert not redis_client.smembers(keys.DATASETS_PENDING)
    assert gate.sweep()["files_removed"] == []  # a registered dataset is never swept


def test_an_add_whose_store_drops_is_cleaned_by_the_next_add_of_the_name(
        redis_client: redis.Redis, relay: Relay, relayed_url: str) -> None:
    remote = Datasets(redis_client, Ledger(redis_client), relayed_url)
    relay.drop_at(request_for("kpop.index.parquet", b"(?:PUT|POST)"))
    with pytest.raises(DatasetStoreUnavailable):
        remote.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    relay.back()
    remote.add("kpop", SAMPLES / "geo_tweets.jsonl", actor="t", channel="cli")
    assert objects(relayed_url) == ["kpop.index.parquet", "kpop.jsonl"]
    with admin().open_input_file(key_of(relayed_url, "kpop.jsonl")) as fh:
        assert fh.read() == (SAMPLES / "geo_tweets.jsonl").read_bytes()
    assert not redis_client.smembers(keys.DATASETS_PENDING)


def test_an_api_dataset_share_whose_store_drops_mid_read_is_503_json_and_counts_nothing(
        client: FlaskClient, gate: Gate, relay: Relay, relayed_url: str) -> None:
    gate.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    gate.users.add("dee", entity="acme", role="data", password=PASSWORD, actor="t",
                   channel="cli")
    auth = {"Authorization": f"Bearer {gate.users.create_token('dee', actor='t', channel='cli')}"}
    relay.drop_at(request_for("kpop.index.parquet"), 2)  # past the footer: the columns
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop"},
                       headers=auth)
    assert resp.status_code == 503 and relay.cut.is_set()
    body = resp.get_json()
    assert body["error"] == "store_unavailable" and body["store"] == relayed_url.split("?")[0]
    plainly(body["message"], relayed_url)
    assert quota.entity_quota(gate, "acme")["used"] == 0
    relay.back()
    resp = client.post("/api/v1/shares", json={"entity": "acme", "dataset": "kpop"},
                       headers=auth)
    try:
        assert resp.status_code == 200 and len(resp.get_data().split()) == 100
    finally:
        resp.close()  # the ID file is streamed from its spool
    assert quota.entity_quota(gate, "acme")["used"] == 100
