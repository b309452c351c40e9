"""The CLI end to end on the real embedded store: shares, refusals, exit codes, audit."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import redis
from click.testing import Result

from gatekeeper import config as config_mod
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer

PASSWORD = "correct horse battery"

Run = Callable[..., Result]


def db(store_dir: Path) -> redis.Redis:
    return EmbeddedServer(store_dir / "var").client(decode_responses=True)


def audit(store_dir: Path, root: str) -> list[dict[str, str]]:
    return [fields for _id, fields in db(store_dir).xrange(keys.audit(root))]


def ids_file(path: Path, start: int, n: int) -> Path:
    path.write_text("".join(f"{start + i}\n" for i in range(n)))
    return path


def quota(runner: Run, kind: str, name: str) -> dict:
    r = runner("quota", kind, name, "--json")
    assert r.exit_code == 0, r.output
    return json.loads(r.output)


def test_share_writes_the_ids_and_counts_them(runner: Run, acme: Path) -> None:
    src = ids_file(acme / "ids.txt", 1_000_000_000_000, 60)
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(src), "--out", "o.txt",
            "--purpose", "replication study", "--json")
    assert r.exit_code == 0, r.output
    body = json.loads(r.output)
    assert (body["status"], body["requested"], body["granted"]) == ("granted", 60, 60)
    assert body["quota"] == {"rule": "R2", "limit": 100, "used": 60, "remaining": 40,
                             "window": "30d"}
    assert (acme / "o.txt").read_text() == src.read_text()
    q = quota(runner, "entity", "acme")
    assert (q["used"], q["limit"], q["remaining"], q["window"]) == (60, 100, 40, "30d")
    assert [r["amount"] for r in q["releases"]] == [60]
    granted = [a for a in audit(acme, "acme") if a.get("kind") == "share.posts"]
    assert [a["outcome"] for a in granted] == ["granted", "delivered"]
    assert granted[0]["purpose"] == "replication study"
    assert granted[0]["channel"] == "cli" and granted[0]["actor"] == "dana"


def test_share_over_limit_is_refused_whole_and_counts_nothing(runner: Run, acme: Path) -> None:
    runner("share", "--as", "dana", "--entity", "acme", "--ids",
        str(ids_file(acme / "a.txt", 10, 70)), "--out", "a.out")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
            str(ids_file(acme / "b.txt", 500, 40)), "--out", "b.out", "--json")
    assert r.exit_code == 3
    err = json.loads(r.stdout)
    assert err["error"] == "quota_exceeded" and err["rule"] == "R2"
    assert (err["limit"], err["used"], err["requested"], err["remaining"]) == (100, 70, 40, 30)
    assert err["available_at"] == q_release(runner)
    assert "R2" in r.stderr and "nothing was counted" in r.stderr
    assert not (acme / "b.out").exists()
    assert quota(runner, "entity", "acme")["used"] == 70
    assert audit(acme, "acme")[-1]["outcome"] == "refused"


def q_release(runner: Run) -> str:
    return quota(runner, "entity", "acme")["releases"][0]["at"]


def test_partial_share_delivers_exactly_the_remaining_allowance(runner: Run, acme: Path) -> None:
    runner("share", "--as", "dana", "--entity", "acme", "--ids",
        str(ids_file(acme / "a.txt", 10, 70)), "--out", "a.out")
    src = ids_file(acme / "b.txt", 500, 40)
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(src), "--out", "b.out",
            "--allow-partial")
    assert r.exit_code == 0, r.output
    assert "PARTIAL: granted 30 of 40" in r.output
    assert (acme / "b.out").read_text().splitlines() == src.read_text().splitlines()[:30]
    assert quota(runner, "entity", "acme")["remaining"] == 0


def test_bad_id_lines_are_all_reported_and_nothing_is_counted(runner: Run, acme: Path) -> None:
    src = acme / "bad.txt"
    src.write_text("123\nabc\n\n0\n9223372036854775808\n456\n12 34\n")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(src), "--out", "o.txt",
            "--json")
    assert r.exit_code == 2
    err = json.loads(r.stdout)
    assert err["error"] == "bad_request"
    assert [d["line"] for d in err["details"]] == [2, 4, 5, 7]
    assert "line 2: 'abc'" in r.stderr
    assert not (acme / "o.txt").exists()
    assert quota(runner, "entity", "acme")["used"] == 0
    assert not [a for a in audit(acme, "acme") if a.get("kind") == "share.posts"]


def test_share_to_an_entity_without_terms_is_refused_r8_and_audited(runner: Run,
                                                                   acme: Path) -> None:
    runner("entity", "add", "beta", "--kind", "commercial")
    r = runner("share", "--as", "dana", "--entity", "beta", "--ids",
            str(ids_file(acme / "a.txt", 10, 5)), "--out", "o.txt")
    assert r.exit_code == 4
    assert "R8" in r.stderr
    assert not (acme / "o.txt").exists()
    denied = audit(acme, "beta")[-1]
    assert (denied["outcome"], denied["rule"], denied["actor"]) == ("denied", "R8", "dana")
    assert quota(runner, "entity", "beta")["used"] == 0


def test_only_the_data_role_may_share(runner: Run, acme: Path) -> None:
    runner("user", "add", "ana", "--entity", "acme", "--role", "analyst", "--password-stdin",
        input=PASSWORD + "\n")
    r = runner("share", "--as", "ana", "--entity", "acme", "--ids",
            str(ids_file(acme / "a.txt", 10, 5)), "--out", "o.txt")
    assert r.exit_code == 4
    assert "role" in r.stderr
    assert audit(acme, "acme")[-1]["outcome"] == "denied"


def test_retry_with_the_same_idempotency_key_is_counted_once(runner: Run, acme: Path) -> None:
    src = ids_file(acme / "a.txt", 10, 25)
    args = ("share", "--as", "dana", "--entity", "acme", "--ids", str(src), "--out", "o.txt",
            "--idempotency-key", "job-42", "--json")
    first = json.loads(runner(*args).output)
    (acme / "o.txt").unlink()
    second = runner(*args)
    assert second.exit_code == 0
    again = json.loads(second.output)
    assert again["status"] == "replay" and again["share_id"] == first["share_id"]
    assert (acme / "o.txt").read_text() == src.read_text()
    assert quota(runner, "entity", "acme")["used"] == 25
    src.write_text("99\n")  # same key, different request
    assert runner(*args).exit_code == 2


def test_academic_research_entity_is_counted_but_never_refused(runner: Run, acme: Path) -> None:
    runner("entity", "add", "uni", "--kind", "academic", "--research")
    runner("entity", "accept-terms", "uni", "--by", "Prof. X")
    r = runner("share", "--as", "dana", "--entity", "uni", "--ids",
            str(ids_file(acme / "a.txt", 10, 250)), "--out", "o.txt")
    assert r.exit_code == 0, r.output
    q = quota(runner, "entity", "uni")
    assert (q["limit"], q["used"], q["remaining"]) == (None, 250, None)
    assert q["exemption"]["rule"] == "R3" and q["exemption"]["recorded_by"].startswith("cli:")


def test_academic_without_research_purpose_is_not_exempt(runner: Run, acme: Path) -> None:
    runner("entity", "add", "uni", "--kind", "academic")
    q = quota(runner, "entity", "uni")
    assert q["limit"] == 100 and q["exemption"] is None
    assert runner("entity", "add", "corp", "--kind", "commercial", "--research").exit_code == 2


def test_written_permission_raises_the_limit_until_its_date(runner: Run, acme: Path) -> None:
    r = runner("entity", "permit", "acme", "--limit", "1000", "--until", "2999-12-31",
            "--reference", "X-legal-123")
    assert r.exit_code == 0, r.output
    q = quota(runner, "entity", "acme")
    assert q["limit"] == 1000
    assert q["permission"] == {"limit": 1000, "until": "3000-01-01T00:00:00Z",
                               "reference": "X-legal-123"}
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
            str(ids_file(acme / "a.txt", 10, 500)), "--out", "o.txt")
    assert r.exit_code == 0, r.output
    assert runner("entity", "permit", "acme", "--limit", "5", "--until", "2000-01-01",
               "--reference", "old").exit_code == 2
    permits = [a for a in audit(acme, "acme") if a.get("kind") == "entity.permit"]
    assert len(permits) == 1  # the refused one (date already over) recorded nothing
    assert (permits[0]["rule"], permits[0]["outcome"]) == ("R4", "changed")
    assert "X-legal-123" in permits[0]["message"]


@pytest.mark.parametrize(("typed", "limit"), [("1 500", 1500), ("1,500", 1500),
                                             ("unlimited", None)])
def test_the_cli_reads_a_permission_as_the_compliance_page_does(
        runner: Run, acme: Path, typed: str, limit: int | None) -> None:
    r = runner("entity", "permit", "acme", "--limit", typed, "--until", "2999-12-31",
            "--reference", "X-legal-7", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["permission"]["limit"] == limit


@pytest.mark.parametrize("typed", ["+5", "0", "lots", str(2**53)])
def test_the_cli_refuses_a_permission_limit_the_compliance_page_refuses(
        runner: Run, acme: Path, typed: str) -> None:
    r = runner("entity", "permit", "acme", "--limit", typed, "--until", "2999-12-31",
            "--reference", "X-legal-7")
    assert r.exit_code == 2
    assert "R4: the limit must be a positive number" in r.output
    assert not [a for a in audit(acme, "acme") if a.get("kind") == "entity.permit"]


def test_child_entity_is_pooled_with_its_parent(runner: Run, acme: Path) -> None:
    runner("entity", "add", "acme-labs", "--kind", "commercial", "--parent", "acme")
    runner("entity", "accept-terms", "acme-labs", "--by", "Jane Doe")
    runner("share", "--as", "dana", "--entity", "acme", "--ids",
        str(ids_file(acme / "a.txt", 10, 80)), "--out", "a.out")
    r = runner("share", "--as", "dana", "--entity", "acme-labs", "--ids",
            str(ids_file(acme / "b.txt", 10, 30)), "--out", "b.out")
    assert r.exit_code == 3  # the pool has only 20 left, though the child used nothing
    q = quota(runner, "entity", "acme-labs")
    assert q["used"] == 0 and q["pool"]["name"] == "acme" and q["pool"]["used"] == 80


def test_user_ids_are_recorded_not_capped(runner: Run, acme: Path) -> None:
    r = runner("share", "--as", "dana", "--entity", "acme", "--kind", "users", "--ids",
            str(ids_file(acme / "u.txt", 10, 300)), "--out", "u.out")
    assert r.exit_code == 0, r.output
    q = quota(runner, "entity", "acme")
    assert q["used"] == 0 and q["user_ids"] == 300


def test_write_failure_refunds_the_reservation_and_leaves_no_file(runner: Run, acme: Path) -> None:
    (acme / "blocker").write_text("a file where a directory should be")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
            str(ids_file(acme / "a.txt", 10, 50)), "--out", str(acme / "blocker" / "o.txt"))
    assert r.exit_code == 2
    assert "refunded" in r.stderr
    assert quota(runner, "entity", "acme")["used"] == 0
    assert [a["outcome"] for a in audit(acme, "acme") if a.get("kind") == "share.posts"] == [
        "granted", "refunded"]
    assert sorted(p.name for p in acme.iterdir() if p.name.startswith(".")) == []


def test_store_unreachable_fails_closed_with_exit_5(runner: Run, acme: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(config_mod.ENV_REDIS_URL, "redis://127.0.0.1:1/0")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
            str(ids_file(acme / "a.txt", 10, 5)), "--out", "o.txt", "--json")
    assert r.exit_code == 5
    assert json.loads(r.stdout)["error"] == "store_unavailable"
    assert "nothing was released" in r.stderr
    assert not (acme / "o.txt").exists()


def test_unknown_names_are_bad_input(runner: Run, acme: Path) -> None:
    assert runner("quota", "entity", "nobody").exit_code == 2
    assert runner("quota", "user", "nobody").exit_code == 2
    assert runner("entity", "add", "bad name!", "--kind", "commercial").exit_code == 2
    assert runner("entity", "add", "acme", "--kind", "commercial").exit_code == 2


def test_tokens_are_shown_once_and_stored_only_hashed(runner: Run, acme: Path) -> None:
    r = runner("token", "create", "dana")
    assert r.exit_code == 0
    token = r.output.strip()
    dump = db(acme)
    everything = "".join(
        str(dump.dump(k)) for k in dump.scan_iter("*") if dump.type(k) != "stream")
    assert token not in everything and token.rsplit(".", 1)[1] not in everything
    assert PASSWORD not in everything
    user_hash = dump.hgetall(keys.user("acme", "dana"))
    assert user_hash["password_hash"].startswith("scrypt:")


def test_quota_user_reports_the_r6_window(runner: Run, acme: Path) -> None:
    q = quota(runner, "user", "dana")
    assert (q["kind"], q["limit"], q["used"], q["remaining"], q["window"]) == (
        "user", 50_000, 0, 50_000, "rolling-24h")


def test_counts_survive_a_restart_of_the_embedded_store(runner: Run, acme: Path) -> None:
    runner("share", "--as", "dana", "--entity", "acme", "--ids",
        str(ids_file(acme / "a.txt", 10, 42)), "--out", "o.txt")
    before = quota(runner, "entity", "acme")
    assert runner("store", "stop").output.strip() == "stopped"
    assert not EmbeddedServer(acme / "var").running()
    after = quota(runner, "entity", "acme")  # starts the store again from its AOF
    assert after["used"] == before["used"] == 42
    assert after["releases"] == before["releases"]
    assert (acme / "var" / "appendonlydir").exists() or list((acme / "var").glob("*.aof*"))


def test_counts_survive_a_killed_store(runner: Run, acme: Path) -> None:
    runner("share", "--as", "dana", "--entity", "acme", "--ids",
        str(ids_file(acme / "a.txt", 10, 17)), "--out", "o.txt")
    pid = int((acme / "var" / "redis.pid").read_text())
    os.kill(pid, 9)  # no shutdown, no final save: only appendfsync always keeps the count
    assert quota(runner, "entity", "acme")["used"] == 17


def test_successive_processes_share_one_embedded_store(store_dir: Path) -> None:
    env = {**os.environ, config_mod.ENV_CONFIG: str(store_dir / "config.toml")}
    env.pop(config_mod.ENV_REDIS_URL, None)

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run([sys.executable, "-m", "gatekeeper", *args], env=env,
                              capture_output=True, text=True, check=False)

    assert cli("entity", "add", "acme", "--kind", "commercial").returncode == 0
    listed = cli("entity", "list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [e["name"] for e in json.loads(listed.stdout)] == ["acme"]


SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def sample_pages(name: str) -> list[dict]:
    """The response pages of a sample file, parsed independently of gatekeeper."""
    return [json.loads(line) for line in (SAMPLES / name).read_text().splitlines() if line]


def test_share_from_a_dataset_dehydrates_the_filtered_selection(runner: Run, acme: Path) -> None:
    runner("entity", "add", "uni", "--kind", "academic", "--research")
    runner("entity", "accept-terms", "uni", "--by", "Prof. X")
    r = runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"), "--json")
    assert r.exit_code == 0, r.output
    posts = [p for page in sample_pages("kpop.jsonl") for p in page["data"]]
    assert json.loads(r.output)["posts"] == len(posts)

    r = runner("share", "--as", "dana", "--entity", "uni", "--dataset", "kpop", "--out", "all.txt")
    assert r.exit_code == 0, r.output
    assert (acme / "all.txt").read_text().split() == [p["id"] for p in posts]

    r = runner("share", "--as", "dana", "--entity", "uni", "--dataset", "kpop", "--lang", "ja",
            "--out", "ja.txt")
    assert r.exit_code == 0, r.output
    assert (acme / "ja.txt").read_text().split() == [p["id"] for p in posts if p["lang"] == "ja"]

    r = runner("share", "--as", "dana", "--entity", "uni", "--dataset", "kpop", "--kind", "users",
            "--out", "users.txt")
    authors = list(dict.fromkeys(p["author_id"] for p in posts))
    assert (acme / "users.txt").read_text().split() == authors
    assert quota(runner, "entity", "uni")["user_ids"] == len(authors)


def test_deletions_remove_posts_and_posts_by_deleted_users(runner: Run, acme: Path) -> None:
    runner("dataset", "add", "kpop", str(SAMPLES / "kpop.jsonl"))
    posts = [p for page in sample_pages("kpop.jsonl") for p in page["data"]]
    gone_post = posts[0]["id"]
    gone_author = posts[1]["author_id"]
    (acme / "tweets_compliance.jsonl").write_text(
        json.dumps({"id": gone_post, "action": "delete", "reason": "deleted"}) + "\n")
    (acme / "gone.txt").write_text(f"{gone_author}\n")
    r = runner("deletions", "add", str(acme / "tweets_compliance.jsonl"), "--json")
    assert r.exit_code == 0, r.output
    report = json.loads(r.output)
    assert (report["kind"], report["listed"], report["datasets"]["kpop"]) == ("posts", 1, 1)
    assert runner("deletions", "add", str(acme / "gone.txt")).exit_code == 2  # posts or users?
    r = runner("deletions", "add", str(acme / "gone.txt"), "--kind", "users", "--json")
    by_author = sum(1 for p in posts if p["author_id"] == gone_author and p["id"] != gone_post)
    assert json.loads(r.output)["datasets"]["kpop"] == by_author  # newly hidden, not a total

    ids = acme / "ids.txt"
    ids.write_text(f"{gone_post}\n42\n")
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids", str(ids), "--out", "x.txt")
    assert r.exit_code == 0 and "R9: 1 deleted/withheld ID was left out" in r.output
    assert (acme / "x.txt").read_text() == "42\n"

    r = runner("share", "--as", "dana", "--entity", "acme", "--dataset", "kpop", "--out", "o.txt",
            "--allow-partial", "--json")
    assert r.exit_code == 0, r.output
    shared = (acme / "o.txt").read_text().split()
    assert gone_post not in shared
    assert not {p["id"] for p in posts if p["author_id"] == gone_author} & set(shared)
    expected = [p["id"] for p in posts
                if p["id"] != gone_post and p["author_id"] != gone_author]
    assert shared == expected[:99]  # the limit of 100 in this test's config, 1 used above
    sys_audit = [f for _i, f in db(acme).xrange(keys.SYS_AUDIT)]
    assert [a["rule"] for a in sys_audit if a["kind"].startswith("deletions.")] == ["R9", "R9"]


def test_samples_compliance_files_ingest(runner: Run, acme: Path) -> None:
    r = runner("deletions", "add", str(SAMPLES / "tweets_compliance.jsonl"), "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["listed"] == 2
    r = runner("deletions", "add", str(SAMPLES / "users_compliance.jsonl"), "--json")
    assert json.loads(r.output)["kind"] == "users"
    assert json.loads(r.output)["new"] == 1  # the same user listed twice
    bad = acme / "bad_tweets.jsonl"
    bad.write_text('{"id": "12"}\n{"action": "delete"}\nnot json\n')
    r = runner("deletions", "add", str(bad))
    assert r.exit_code == 2 and "line 2" in r.stderr
    assert db(acme).scard(keys.deleted("posts")) == 2  # the bad file ingested nothing


def test_deletions_lift_is_a_compliance_officers_audited_decision(runner: Run, acme: Path) -> None:
    r = runner("user", "add", "cora", "--entity", "acme", "--role", "compliance",
            "--password-stdin", input=PASSWORD + "\n")
    assert r.exit_code == 0, r.output
    (acme / "tweets_job.jsonl").write_text(
        '{"id": "12", "action": "delete"}\n{"id": "13", "action": "delete"}\n'
        '{"id": "12", "action": "undelete"}\n')
    r = runner("deletions", "add", str(acme / "tweets_job.jsonl"))
    assert r.exit_code == 0 and "1 reversal recorded; they lift nothing" in r.output
    lift = ("deletions", "lift", "12", "--reason", "X reports it undeleted")
    r = runner(*lift, "--as", "dana")
    assert r.exit_code == 4 and "R12" in r.stderr
    r = runner(*lift, "--as", "cora", "--json")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["reversal"]["action"] == "undelete"
    assert runner(*lift, "--as", "cora").exit_code == 2  # no longer listed
    r = runner("share", "--as", "dana", "--entity", "acme", "--ids",
            str(ids_file(acme / "ids.txt", 12, 2)), "--out", "o.txt")
    assert r.exit_code == 0 and (acme / "o.txt").read_text() == "12\n"
    lifts = [a for _i, a in db(acme).xrange(keys.SYS_AUDIT) if a["kind"] == "deletions.lift"]
    assert [(a["rule"], a["actor"], a["channel"]) for a in lifts] == [("R9", "cora", "cli")]
    assert "X reports it undeleted" in lifts[0]["message"]


def test_an_unknown_compliance_action_is_refused_by_name(runner: Run, acme: Path) -> None:
    bad = acme / "tweets_job.jsonl"
    bad.write_text('{"id": "12", "action": "delete"}\n{"id": "13", "action": "tweet_edit"}\n')
    r = runner("deletions", "add", str(bad))
    assert r.exit_code == 2
    assert f"[R9] {bad}" in r.stderr and "line 2" in r.stderr and "'tweet_edit'" in r.stderr
    assert db(acme).scard(keys.deleted("posts")) == 0


def test_a_retry_after_a_new_deletion_list_is_the_same_request(runner: Run, acme: Path) -> None:
    src = ids_file(acme / "a.txt", 10, 20)
    args = ("share", "--as", "dana", "--entity", "acme", "--ids", str(src), "--out", "o.txt",
            "--idempotency-key", "job-7", "--json")
    first = json.loads(runner(*args).output)
    (acme / "gone.txt").write_text("12\n")
    assert runner("deletions", "add", str(acme / "gone.txt"), "--kind", "posts").exit_code == 0
    again = runner(*args)
    assert again.exit_code == 0, again.output
    assert json.loads(again.output)["share_id"] == first["share_id"]
    assert "12" not in (acme / "o.txt").read_text().split()  # R9 from the moment of ingest
    assert len((acme / "o.txt").read_text().split()) == 19
    assert quota(runner, "entity", "acme")["used"] == 20  # the first delivery, counted once
