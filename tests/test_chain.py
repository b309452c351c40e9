"""R11: the audit streams are hash chains; `audit verify` names the first record tampered with,
and signed checkpoints catch a truncated tail and refuse another key's signature."""

from __future__ import annotations

import base64
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from click.testing import Result
from conftest import real_client

from gatekeeper.config import ENV_REDIS_URL, AuditConfig
from gatekeeper.domain import checkpoints
from gatekeeper.ledger import chain, keys
from gatekeeper.ledger.ledger import Ledger
from gatekeeper.rules.errors import QuotaExceeded
from gatekeeper.rules.limits import Counter, Limit, Window

POOL = keys.audit("acme")
WINDOW = Window("30d", 30 * 86_400_000, 600_000)


def write_log(redis_client: redis.Redis, n: int = 6) -> Ledger:
    """n records in acme's stream through record.lua, plus take/settle and a Python append."""
    redis_client.sadd(keys.AUDIT_STREAMS, POOL)
    ledger = Ledger(redis_client)
    for i in range(n):
        ledger.record(keys.placeholder("acme"), POOL, mode="audit", fields={},
                      audit={"actor": "ann", "kind": "test", "outcome": "changed", "n": i})
    pipe = redis_client.pipeline(transaction=True)
    chain.append(pipe, keys.SYS_AUDIT, {"actor": "ann", "kind": "deletions.lift", "n": 1})
    pipe.execute()
    # A second apart, as a busy day spreads them: verify's ranges are cut at milliseconds, so
    # several processes each read some (the IDs are not hashed; the chain stays whole).
    rewrite(redis_client, POOL, [(f"{(i + 1) * 1000}-0".encode(), f)
                           for i, (_, f) in enumerate(entries(redis_client))])
    return ledger


def entries(redis_client: redis.Redis,
            stream: str = POOL) -> list[tuple[bytes, dict[bytes, bytes]]]:
    return redis_client.xrange(stream)


def rewrite(redis_client: redis.Redis, stream: str,
            records: list[tuple[bytes, dict[bytes, bytes]]]) -> None:
    """What someone with Redis access does: a stream only grows at its end, so to change the
    past they delete it and add the records back under the IDs they choose."""
    redis_client.delete(stream)
    for rid, fields in records:
        redis_client.xadd(stream, fields, id=rid)


@pytest.fixture(params=[1, 4], ids=["one-process", "four-processes"])
def workers(request: pytest.FixtureRequest) -> int:
    """Verify in one process, and in four forked ones each reading ranges of the stream: every
    tampering is named the same either way, wherever the ranges are cut."""
    return request.param


def problem(redis_client: redis.Redis, **kw: Any) -> chain.Problem | None:
    found = [r.problem for r in chain.verify(redis_client, **kw) if r.problem is not None]
    assert len(found) <= 1
    return found[0] if found else None


def test_every_script_appends_records_with_a_sequence_and_a_chained_hash(
        redis_client: redis.Redis) -> None:
    ledger = write_log(redis_client, 2)
    counter = Counter(keys.counter("acme", "r2", "acme"), "R2", WINDOW, Limit(10), amount=5)
    ledger.take("acme", [counter], requested=5, share_id="s1", audit={"actor": "ann"})
    ledger.settle("acme", "s1", [counter], delivered=True, audit={"actor": "ann"})
    more = Counter(counter.key, "R2", WINDOW, Limit(10), amount=6)
    with pytest.raises(QuotaExceeded):
        ledger.take("acme", [more], requested=6, share_id="s2", audit={"actor": "ann"})
    records = entries(redis_client)
    assert [int(f[b"seq"]) for _, f in records] == [1, 2, 3, 4, 5]
    prev = b""
    for _, f in records:
        flat = [x for kv in f.items() for x in kv][:-2]
        assert f[b"hash"] == chain.record_hash(prev, flat)
        prev = f[b"hash"]
    head = redis_client.hgetall(keys.chain_of(POOL))
    assert head == {b"seq": b"5", b"hash": prev, b"id": records[-1][0]}
    # The refusal index copies the refused record whole, its seq and hash included.
    copy = redis_client.xrange(keys.refusals_of(POOL))[-1]
    assert copy == records[-1]
    assert problem(redis_client) is None


def test_a_clean_log_verifies_with_counts(redis_client: redis.Redis, workers: int) -> None:
    write_log(redis_client)
    results = {r.stream: r for r in chain.verify(redis_client, workers=workers)}
    assert results[POOL].records == 6 and results[POOL].seq == 6
    assert results[keys.SYS_AUDIT].seq == 1
    assert all(r.problem is None for r in results.values())


def test_an_edited_field_is_named(redis_client: redis.Redis, workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    records[2][1][b"actor"] = b"mallory"
    rewrite(redis_client, POOL, records)
    p = problem(redis_client, workers=workers)
    assert p is not None and (p.stream, p.id, p.seq) == (POOL, records[2][0].decode(), 3)
    assert "edited" in p.what


def test_a_deleted_record_is_named_by_the_one_after_it(redis_client: redis.Redis,
                                                        workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    redis_client.xdel(POOL, records[3][0])
    p = problem(redis_client, workers=workers)
    assert p is not None and (p.id, p.seq) == (records[4][0].decode(), 5)
    assert "seq 4–4 are missing" in p.what and "removed" in p.what


def test_reordered_records_are_named(redis_client: redis.Redis, workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    swapped = list(records)
    swapped[1], swapped[2] = (records[1][0], records[2][1]), (records[2][0], records[1][1])
    rewrite(redis_client, POOL, swapped)
    p = problem(redis_client, workers=workers)
    assert p is not None and (p.id, p.seq) == (records[1][0].decode(), 3)


def test_an_inserted_record_is_named(redis_client: redis.Redis, workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    fake = dict(records[2][1])
    fake[b"actor"] = b"mallory"  # a copy of record 3, seq and hash included, edited
    renumbered = [(f"{i + 1}-0".encode(), f) for i, (_, f) in
                  enumerate([*records[:3], (b"", fake), *records[3:]])]
    rewrite(redis_client, POOL, renumbered)
    p = problem(redis_client, workers=workers)
    assert p is not None and (p.id, p.seq) == ("4-0", 3)
    assert "reordered or inserted" in p.what


def test_an_inserted_record_without_chain_fields_is_named(redis_client: redis.Redis,
                                                          workers: int) -> None:
    write_log(redis_client)
    added = redis_client.xadd(POOL, {"time": "1", "actor": "mallory", "outcome": "changed"})
    p = problem(redis_client, workers=workers)
    assert p is not None and p.seq is None and "no seq/hash after the chain began" in p.what
    assert p.id == added.decode()


def test_a_truncated_tail_is_found_by_the_chain_head(redis_client: redis.Redis,
                                                     workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    redis_client.xdel(POOL, records[-1][0], records[-2][0])
    p = problem(redis_client, workers=workers)
    assert p is not None and (p.id, p.seq) == (records[-3][0].decode(), 4)
    assert "chain head says seq 6" in p.what


def test_a_truncated_tail_with_its_head_rewritten_is_found_only_by_a_checkpoint(
        redis_client: redis.Redis, workers: int) -> None:
    write_log(redis_client)
    pinned = {POOL: {6: redis_client.hget(keys.chain_of(POOL), "hash").decode()}}
    records = entries(redis_client)
    redis_client.xdel(POOL, records[-1][0], records[-2][0])
    redis_client.hset(keys.chain_of(POOL), mapping={"seq": 4, "hash": records[-3][1][b"hash"],
                                              "id": records[-3][0]})
    assert problem(redis_client, workers=workers) is None  # the hole a chain alone cannot show
    p = problem(redis_client, pinned=pinned, workers=workers)
    assert p is not None and p.seq == 4 and "truncated tail" in p.what
    assert "checkpoint recorded seq 6" in p.what


def test_records_from_before_the_chain_are_legacy_not_a_failure(redis_client: redis.Redis,
                                                                 workers: int) -> None:
    for _ in range(3):
        redis_client.xadd(POOL, {"time": "1", "actor": "old"})
    write_log(redis_client, 2)
    old = entries(redis_client)[2][0]  # the third record, renumbered by write_log
    assert b"seq" not in entries(redis_client)[2][1] and b"seq" in entries(redis_client)[3][1]
    result = next(r for r in chain.verify(redis_client, workers=workers) if r.stream == POOL)
    assert result.problem is None and result.legacy_until == old.decode()
    assert result.seq == 2


def test_since_verifies_from_a_time_onto_the_record_before(redis_client: redis.Redis,
                                                           workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    records[1][1][b"actor"] = b"mallory"  # before --since: not read
    rewrite(redis_client, POOL, records)
    since = int(records[3][0].split(b"-")[0])
    result = next(r for r in chain.verify(redis_client, since_ms=since, workers=workers)
                  if r.stream == POOL)
    assert result.problem is None and result.seq == 6
    assert problem(redis_client, workers=workers) is not None


def test_a_seq_that_is_not_a_number_is_named_not_a_crash(redis_client: redis.Redis,
                                                         workers: int) -> None:
    write_log(redis_client)
    records = entries(redis_client)
    records[2][1][b"seq"] = b"three"
    rewrite(redis_client, POOL, records)
    p = problem(redis_client, workers=workers)
    assert p is not None and p.id == records[2][0].decode() and "not a number" in p.what


def test_every_record_is_checked_whichever_range_reads_it(redis_client: redis.Redis) -> None:
    """Forty records a second apart in four processes' sixteen ranges: an edit of any one of
    them — first, last, either side of a cut — is named, and the clean log's counts add up."""
    write_log(redis_client, 40)
    clean = entries(redis_client)
    result = next(r for r in chain.verify(redis_client, workers=4) if r.stream == POOL)
    assert (result.problem, result.records, result.seq) == (None, 40, 40)
    assert result.last_id == clean[-1][0].decode()
    for i in range(40):
        records = entries(redis_client)
        records[i][1][b"n"] = b"-1"
        rewrite(redis_client, POOL, records)
        p = problem(redis_client, workers=4)
        assert p is not None and (p.id, p.seq) == (clean[i][0].decode(), i + 1), i
        rewrite(redis_client, POOL, clean)
    assert problem(redis_client, workers=4) is None


def test_records_appended_while_verifying_are_not_a_truncated_tail(
        redis_client: redis.Redis, workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    """The chain head is read before the log: a record appended after the log was read (the
    server keeps working during an audit) is not mistaken for a removed tail."""
    ledger = write_log(redis_client)
    parallel = chain._parallel

    def then_append(c: Any, stream: str, *args: Any) -> Any:
        parts = parallel(c, stream, *args)
        if stream == POOL:
                ledger.record(keys.placeholder("acme"), POOL, mode="audit", fields={},
                          audit={"actor": "ann", "kind": "test", "outcome": "changed"})
        return parts

    monkeypatch.setattr(chain, "_parallel", then_append)
    result = next(r for r in chain.verify(redis_client, workers=workers) if r.stream == POOL)
    assert result.problem is None and result.seq == 6
    monkeypatch.undo()
    assert next(r for r in chain.verify(redis_client) if r.stream == POOL).seq == 7


def test_a_long_stream_is_verified_by_forked_processes_only_when_forking_is_safe(
        redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch) -> None:
    write_log(redis_client)
    monkeypatch.setattr(chain.threading, "active_count", lambda: 1)
    assert chain._workers(redis_client, POOL, None) == 1  # 6 records: not worth a fork
    assert chain._workers(redis_client, POOL, 3) == 3  # asked for
    monkeypatch.setattr(chain, "PARALLEL_MIN", 6)
    assert chain._workers(redis_client, POOL, None) == min(8, 2 * (os.cpu_count() or 1))
    monkeypatch.setattr(chain.threading, "active_count", lambda: 2)  # e.g. inside the server
    assert chain._workers(redis_client, POOL, None) == 1


# --- the CLI on a real server ----------------------------------------------------------------


@pytest.fixture
def cli(runner: Callable[..., Result], real_server: dict[str, str], store_dir: Path,
        monkeypatch: pytest.MonkeyPatch) -> tuple[Callable[..., Result], redis.Redis]:
    """`gatekeeper` on the session's real Redis server, with a signing key configured."""
    url = real_server.get("url") or f"unix://{real_server['unix_socket_path']}"
    monkeypatch.setenv(ENV_REDIS_URL, url)
    runner("audit", "keygen", "--out", str(store_dir / "audit.key"))
    with open(store_dir / "config.toml", "a") as fh:
        fh.write('[audit]\nsigning_key_file = "audit.key"\ncheckpoint_dir = "cps"\n')
    r = real_client(real_server)
    r.flushall()
    yield runner, r
    r.flushall()
    r.close()


def test_cli_verify_passes_a_clean_log_and_names_an_edited_record(cli: Any) -> None:
    run, r = cli
    write_log(r)
    ok = run("audit", "verify")
    assert ok.exit_code == 0, ok.output
    assert "7 audit records in 2 streams verified" in ok.output
    records = entries(r)
    records[4][1][b"outcome"] = b"refused"
    rewrite(r, POOL, records)
    bad = run("audit", "verify")
    assert bad.exit_code == 6
    assert f"{POOL}: record {records[4][0].decode()}, seq 5: its fields do not hash" in bad.output


def test_cli_checkpoint_finds_a_truncated_tail(cli: Any, store_dir: Path) -> None:
    run, r = cli
    write_log(r)
    out = run("audit", "checkpoint")
    assert out.exit_code == 0, out.output
    [cp] = (store_dir / "cps").glob("checkpoint-*.txt")
    text = cp.read_text()
    assert text.startswith(checkpoints.ORIGIN + "\n") and "\n\n\u2014 gatekeeper-audit " in text
    assert f"stream {POOL} " in text
    records = entries(r)
    r.xdel(POOL, records[-1][0])
    r.hset(keys.chain_of(POOL), mapping={"seq": 5, "hash": records[-2][1][b"hash"]})
    assert run("audit", "verify").exit_code == 0  # without the checkpoint, nothing shows
    bad = run("audit", "verify", "--checkpoints", str(store_dir / "cps"))
    assert bad.exit_code == 6 and "truncated tail" in bad.output


def test_cli_refuses_a_checkpoint_signed_with_another_key(cli: Any, store_dir: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    run, r = cli
    write_log(r)
    other = store_dir / "other.key"
    checkpoints.generate(other)
    key = checkpoints.load_key(AuditConfig(signing_key_file=other))
    checkpoints.write(r, key, store_dir / "cps")
    bad = run("audit", "verify", "--checkpoints", str(store_dir / "cps"))
    assert bad.exit_code == 6 and "not signed by the configured key" in bad.output


def test_cli_refuses_a_checkpoint_altered_after_signing(cli: Any, store_dir: Path) -> None:
    run, r = cli
    write_log(r)
    run("audit", "checkpoint")
    [cp] = (store_dir / "cps").glob("checkpoint-*.txt")
    cp.write_text(cp.read_text().replace(" 6 ", " 7 ", 1))
    bad = run("audit", "verify", "--checkpoints", str(store_dir / "cps"))
    assert bad.exit_code == 6 and "signature does not verify" in bad.output


def test_cli_public_key_lets_an_auditor_verify_without_the_private_key(
        cli: Any, store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    run, r = cli
    write_log(r)
    run("audit", "checkpoint")
    vkey = run("audit", "public-key").output.strip()
    assert vkey.startswith("gatekeeper-audit+")
    (store_dir / "config.toml").write_text('[redis]\ndata_dir = "var"\n')  # no key here
    ok = run("audit", "verify", "--checkpoints", str(store_dir / "cps"), "--public-key", vkey)
    assert ok.exit_code == 0, ok.output
    assert "against 1 signed checkpoint\n" in ok.output


def test_checkpoint_without_a_key_says_how_to_make_one(
        runner: Callable[..., Result], store_dir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GATEKEEPER_AUDIT_KEY", raising=False)
    out = runner("audit", "checkpoint")
    assert out.exit_code == 2
    assert "gatekeeper audit keygen --out FILE" in out.output
    assert not (store_dir / "checkpoints").exists()


def test_keygen_writes_a_0600_key_and_never_overwrites_it(runner: Callable[..., Result],
                                                          store_dir: Path) -> None:
    out = runner("audit", "keygen", "--out", str(store_dir / "k.pem"))
    assert out.exit_code == 0 and "gatekeeper-audit+" in out.output
    assert stat.S_IMODE(os.stat(store_dir / "k.pem").st_mode) == 0o600
    again = runner("audit", "keygen", "--out", str(store_dir / "k.pem"))
    assert again.exit_code == 2 and "never overwritten" in again.output


def test_a_signing_key_from_the_environment_as_a_base64_seed(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GK_TEST_KEY", base64.b64encode(bytes(range(32))).decode())
    key = checkpoints.load_key(AuditConfig(signing_key_env="GK_TEST_KEY"))
    public = checkpoints.parse_vkey(checkpoints.vkey(key.public_key()))
    assert checkpoints.key_id(public) == checkpoints.key_id(key.public_key())


def test_values_holding_nul_and_byte_1_are_chained_unambiguously(redis_client: redis.Redis) -> None:
    ledger = write_log(redis_client, 1)
    for message in ("a\x00b", "a\x01\x02b", "\x01", "tail\x00"):
        ledger.record(keys.placeholder("acme"), POOL, mode="audit", fields={},
                      audit={"actor": "ann", "message": message})
    assert problem(redis_client) is None  # the script and the verifier stuff alike
    prev = b""
    for _, f in entries(redis_client):  # and so does chain.record_hash, from the raw fields
        assert chain.record_hash(prev, [x for kv in f.items() for x in kv][:-2]) == f[b"hash"]
        prev = f[b"hash"]
    # Moving bytes between fields, or splitting one, never keeps the hash.
    h = chain.record_hash
    assert len({h(b"", [b"k", b"a\x00b"]), h(b"", [b"k\x00a", b"b"]),
                h(b"", [b"k", b"a", b"b"]), h(b"", [b"k", b"a\x01\x02b"]),
                h(b"", [b"k", b"a\x01", b"b"])}) == 5


def test_the_monthly_report_writes_a_checkpoint_and_prints_it(cli: Any, store_dir: Path) -> None:
    import pypdf

    run, r = cli
    write_log(r)
    out = run("report", "--month", "2026-10", "--out", str(store_dir / "r.pdf"))
    assert out.exit_code == 0, out.output
    [cp] = (store_dir / "cps").glob("checkpoint-*.txt")
    text = " ".join(p.extract_text() for p in pypdf.PdfReader(store_dir / "r.pdf").pages)
    assert "Audit checkpoint" in text
    assert cp.name[:20] in text.replace("\n", "")


def test_the_server_thread_writes_a_checkpoint_at_start(cli: Any, store_dir: Path) -> None:
    _run, r = cli
    write_log(r)

    class Gate:
        client = r
        config = type("C", (), {"audit": AuditConfig(
            signing_key_file=store_dir / "audit.key", checkpoint_dir=store_dir / "bg",
            checkpoint_minutes=60)})

    thread = checkpoints.in_background(Gate())
    assert thread is not None and thread.daemon
    for _ in range(1000):  # the first one is written at once; wait for the file, not a time
        if list((store_dir / "bg").glob("checkpoint-*.txt")):
            break
        thread.join(0.01)
    [cp] = (store_dir / "bg").glob("checkpoint-*.txt")
    public = checkpoints.load_key(Gate.config.audit).public_key()
    assert {h.stream for h in checkpoints.read(cp, public).heads} == {POOL, keys.SYS_AUDIT}


def test_no_server_thread_when_checkpoint_minutes_is_0(tmp_path: Path) -> None:
    class Gate:
        config = type("C", (), {"audit": AuditConfig(checkpoint_minutes=0)})

    assert checkpoints.in_background(Gate()) is None


def test_a_chain_rewritten_with_recomputed_hashes_is_caught_by_a_checkpoint(
        redis_client: redis.Redis) -> None:
    write_log(redis_client)
    pinned = {POOL: {5: entries(redis_client)[4][1][b"hash"].decode()}}
    records = entries(redis_client)
    records[1][1][b"actor"] = b"mallory"
    prev = b""
    for _, fields in records:  # what someone who knows the scheme does: rehash every record
        fields.pop(b"hash")
        fields[b"hash"] = chain.record_hash(prev, [x for kv in fields.items() for x in kv])
        prev = fields[b"hash"]
    rewrite(redis_client, POOL, records)
    redis_client.hset(keys.chain_of(POOL), "hash", prev)
    assert problem(redis_client) is None  # a consistent chain: only a pinned head shows it
    p = problem(redis_client, pinned=pinned)
    assert p is not None and (p.id, p.seq) == (records[4][0].decode(), 5)
    assert "rewritten" in p.what


def test_cli_verify_json_is_one_document_either_way_and_reports_legacy(cli: Any) -> None:
    import json

    run, r = cli
    r.xadd(POOL, {"time": "1", "actor": "old"})
    write_log(r)
    old = entries(r)[0][0].decode()  # renumbered by write_log
    ok = run("audit", "verify", "--json")
    assert ok.exit_code == 0, ok.output
    data = json.loads(ok.output)
    pool = next(s for s in data["streams"] if s["stream"] == POOL)
    assert data["ok"] and pool["legacy_until"] == old and pool["seq"] == 6
    text = run("audit", "verify").output
    assert f"unchained legacy records up to {old}" in text
    records = entries(r)
    r.xdel(POOL, records[3][0])
    bad = run("audit", "verify", "--json")
    assert bad.exit_code == 6
    err = json.loads(bad.stdout)  # the message goes to stderr as well
    assert err["error"] == "audit_chain_broken" and err["rule"] == "R11"
    assert err["problems"] == [f"{POOL}: record {records[4][0].decode()}, seq 4: records seq "
                               "3–3 are missing before it: removed"]
