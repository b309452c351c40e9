"""Issue 15: delivery manifests kept for `[manifests] retention_days`, then removed by `gatekeeper
store sweep` (file or object and index entry, audited); what item 1 left (refunded deliveries'
manifests, temporary files and folder syncs under manifests/); and R10's flags for Post IDs
delivered again more than 30 days after their first delivery (both backends, a fixed clock)."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from live import PASSWORD

from gatekeeper import config as config_mod
from gatekeeper.channels.web import background
from gatekeeper.domain import manifests, redelivery, retention, spool
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.clock import FixedClock
from gatekeeper.rules.errors import NotFound
from tests.test_s3 import _admin, moto_endpoint, objects, store_url  # noqa: F401 - fixtures

DAY = 86_400_000
T = 1_795_000_000_000  # 2026-11-18, after the real now of these tests: the clock moves on
OLD = 1_700_000_000_000  # an mtime long before any cutoff here


def hexid(n: int) -> str:
    return f"{n:032x}"


def make_gate(tmp_path: Path, client: redis.Redis, datasets: str = "datasets",
              extra: str = "") -> Gate:
    (tmp_path / "config.toml").write_text(
        f'{extra}\n[limits]\npost_ids_per_entity = 100000\n[datasets]\ndir = "{datasets}"\n')
    gate = Gate(config_mod.load(tmp_path / "config.toml"), client=client,
                clock=FixedClock(client, T))
    gate.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("acme", by="Jane Doe", actor="t", channel="cli")
    gate.users.add("dan", entity="acme", role="data", password=PASSWORD, actor="t",
                   channel="cli")
    return gate


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    return make_gate(tmp_path, redis_client)


def swept_records(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.SYS_AUDIT)
            if f.get(b"kind") == b"manifests.swept"]


def write_aged(gate: Gate) -> dict[str, str]:
    """Manifests delivered 120, 95, 89 and 1 day(s) before T: their names by age."""
    names = {}
    for n, days in enumerate((120, 95, 89, 1)):
        names[str(days)] = gate.manifests.write(hexid(n + 1), T - days * DAY, [n + 10, 99]).name
    return names


# --- retention ----------------------------------------------------------------------------------


def test_a_sweep_removes_manifests_past_retention_and_they_stop_being_listed(
        gate: Gate, tmp_path: Path) -> None:
    names = write_aged(gate)
    done = gate.sweep(actor="carla", channel="cli")["manifests"]
    assert done["removed"] == 2
    assert done["oldest"] == {"manifest": names["120"], "delivered_ms": T - 120 * DAY}
    assert done["newest"] == {"manifest": names["95"], "delivered_ms": T - 95 * DAY}
    assert gate.manifests.listed() == [names["89"], names["1"]]
    # Trace's spans go with the index entries (one list for both).
    assert sorted(gate.client.hkeys(keys.MANIFEST_SPANS)) == sorted(
        n.encode() for n in (names["89"], names["1"]))
    for gone in (names["120"], names["95"]):
        assert not gate.manifests.exists(gone)
        assert not Path(gate.manifests.where(gone)).exists()
    assert gate.manifests.read(names["89"]).posts.tolist() == [12, 99]
    [record] = swept_records(gate)  # one chained record per sweep, naming what went
    assert (record["actor"], record["rule"], record["count"]) == ("carla", "R9", "2")
    assert names["120"] in record["oldest"] and names["95"] in record["newest"]
    assert record["retention_days"] == "90"
    # Nothing more to remove: the next sweep removes and records nothing.
    assert gate.sweep()["manifests"]["removed"] == 0
    assert len(swept_records(gate)) == 1


def test_retention_follows_the_config(tmp_path: Path, redis_client: redis.Redis) -> None:
    gate = make_gate(tmp_path, redis_client, extra="[manifests]\nretention_days = 31")
    names = write_aged(gate)
    assert gate.sweep()["manifests"]["removed"] == 3
    assert gate.manifests.listed() == [names["1"]]


def test_a_month_folder_whose_manifests_all_went_is_removed(gate: Gate) -> None:
    names = write_aged(gate)
    gate.sweep()
    folders = sorted(p.name for p in (gate.manifests.directory or Path()).iterdir())
    assert retention.month_of(T - 120 * DAY) not in folders
    assert {n.split("/")[0] for n in (names["89"], names["1"])} <= set(folders)


def test_a_crash_between_index_and_file_leaves_an_orphan_the_next_sweep_removes(
        gate: Gate) -> None:
    """The index entry goes first: a crash before the file leaves a file no reader is sent to
    (never an entry whose file is gone), and the next sweep removes it."""
    names = write_aged(gate)
    gate.client.zrem(keys.MANIFESTS, names["95"])  # the crash: entry gone, file kept
    path = Path(gate.manifests.where(names["95"]))
    os.utime(path, ns=(OLD * 10**6, OLD * 10**6))
    fresh = Path(gate.manifests.where(names["1"]))  # unindexed but new: being stored now
    gate.client.zrem(keys.MANIFESTS, names["1"])
    done = gate.sweep()["manifests"]
    assert done["removed"] == 1 and done["orphans_removed"] == [str(path)]
    assert not path.exists() and fresh.exists()
    [record] = swept_records(gate)
    assert record["orphans"] == "1"


def test_a_manifest_swept_after_a_reader_listed_it_reads_as_gone_not_as_an_error(
        gate: Gate) -> None:
    names = write_aged(gate)
    listed = gate.manifests.listed()  # a trace or notice lists, then the sweep runs
    gate.sweep()
    read = {n: retention.read_kept(gate.manifests, n) for n in listed}
    assert read[names["120"]] is None and read[names["95"]] is None
    assert read[names["1"]] is not None
    # A file missing while the index still names it is an error, said plainly.
    Path(gate.manifests.where(names["1"])).unlink()
    with pytest.raises(NotFound, match="missing"):
        retention.read_kept(gate.manifests, names["1"])


def test_a_sweep_in_the_object_store_removes_the_objects_and_their_entries(
        tmp_path: Path, redis_client: redis.Redis, request: pytest.FixtureRequest) -> None:
    url = request.getfixturevalue("store_url")
    gate = make_gate(tmp_path, redis_client, datasets=url)
    names = write_aged(gate)
    base, _, query = url.partition("?")

    def held(name: str) -> list[str]:
        return objects(f"{base}/manifests/{name.split('/')[0]}?{query}")

    assert held(names["120"]) == [names["120"].split("/")[1] + ".gkm"]
    orphan = gate.manifests.write(hexid(9), T - 100 * DAY, [5]).name
    gate.client.zrem(keys.MANIFESTS, orphan)  # crashed between the entry and the object
    done = gate.sweep()["manifests"]
    # The orphan was written now (its object's time): kept until it is older than retention.
    assert done["removed"] == 2 and done["orphans_removed"] == []
    assert gate.manifests.listed() == [names["89"], names["1"]]
    assert names["120"].split("/")[1] + ".gkm" not in held(names["120"])
    assert names["95"].split("/")[1] + ".gkm" not in held(names["95"])
    assert gate.manifests.read(names["89"]).posts.tolist() == [12, 99]
    assert retention.read_kept(gate.manifests, names["95"]) is None
    assert not (tmp_path / "datasets" / "manifests").exists()


def test_an_object_store_away_stops_the_manifest_sweep_not_the_others(
        gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    from gatekeeper.rules.errors import DatasetStoreUnavailable

    names = write_aged(gate)

    def away(*a: Any) -> None:
        raise DatasetStoreUnavailable("the dataset store s3://b cannot be reached")

    monkeypatch.setattr(retention, "_remove", away)
    done = gate.sweep()
    assert "cannot be reached" in done["manifests"]["error"] and done["refunds_owed"] == 0
    [record] = swept_records(gate)  # out of the index, recorded: the files are left over
    assert record["count"] == "2"
    monkeypatch.undo()
    # The entries went first: the files are orphans now, removed once old enough.
    for n in (names["120"], names["95"]):
        os.utime(gate.manifests.where(n), ns=(OLD * 10**6, OLD * 10**6))
    assert len(gate.sweep()["manifests"]["orphans_removed"]) == 2


def test_store_sweep_says_what_it_removed(tmp_path: Path, redis_client: redis.Redis,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    from click.testing import CliRunner

    from gatekeeper.channels.cli import context as cli_context
    from gatekeeper.channels.cli.main import main

    gate = make_gate(tmp_path, redis_client)
    names = write_aged(gate)
    monkeypatch.setattr(cli_context.Context, "gate", property(lambda self: gate))
    r = CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), "store", "sweep"],
                           catch_exceptions=False)
    assert r.exit_code == 0, r.output
    assert (f"removed 2 delivery manifests past 90 days' retention (delivered {names['120']} "
            f".. {names['95']})") in r.output
    r = CliRunner().invoke(main, ["--config", str(tmp_path / "config.toml"), "store", "sweep",
                                  "--json"], catch_exceptions=False)
    assert json.loads(r.output)["manifests"]["removed"] == 0


# --- what item 1 left ---------------------------------------------------------------------------


def share(gate: Gate, tmp_path: Path, ids: list[int], out: Path | None = None,
          entity: str = "acme") -> Any:
    from gatekeeper.domain import shares

    path = tmp_path / f"ids-{len(list(tmp_path.glob('ids-*')))}.txt"
    path.write_text("".join(f"{i}\n" for i in ids))
    return shares.share_to_file(gate, actor="dan", entity=entity, ids_path=path,
                                out=out or tmp_path / "out.txt", purpose="test")


@pytest.mark.parametrize("n", [10, 100_000])  # the spool parsed; a large list's own array
@pytest.mark.parametrize("fail", ["naming", "midway"])
def test_a_refunded_share_leaves_no_manifest_in_the_index(
        gate: Gate, tmp_path: Path, n: int, fail: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The ID file cannot be named (a folder is in its place), or the disk fills while it is
    written: nothing left, refunded — and its manifest, stored before (a large list's in
    another thread), no longer counts as a delivery for trace and notices."""
    from gatekeeper import faults
    from gatekeeper.rules.errors import BadInput

    (tmp_path / "taken").mkdir()
    if fail == "midway":
        monkeypatch.setenv(faults.ENV, "share.writing:enospc")
    with pytest.raises(BadInput, match="nothing was delivered or counted"):
        share(gate, tmp_path, list(range(10**18, 10**18 + n)),
              tmp_path / ("taken" if fail == "naming" else "out.txt"))
    monkeypatch.delenv(faults.ENV, raising=False)
    assert gate.manifests.listed() == []
    assert gate.client.hlen(keys.MANIFEST_SPANS) == 0  # trace's spans of it went too
    records = [{k.decode(): v.decode() for k, v in f.items()}
               for _i, f in gate.client.xrange(keys.audit("acme"))]
    [refund] = [r for r in records if r.get("outcome") == "refunded"]
    assert refund["manifest"]  # the refund names the manifest it withdrew
    share(gate, tmp_path, [1, 2, 3])  # a delivery that left is indexed as before
    assert len(gate.manifests.listed()) == 1


def test_temporary_files_a_crash_left_among_the_manifests_are_swept(gate: Gate) -> None:
    name = gate.manifests.write(hexid(1), T - DAY, [1]).name
    folder = Path(gate.manifests.where(name)).parent
    left = folder / ".gatekeeper-abc123.part"  # a named temporary (no O_TMPFILE), then a crash
    left.write_bytes(b"half a manifest")
    removed = gate.sweep()["files_removed"]
    assert str(left) in removed and not left.exists()
    assert gate.manifests.read(name).posts.tolist() == [1]


@pytest.mark.parametrize("tmpfile", [True, False])
def test_a_manifest_and_the_folders_made_for_it_are_synced_once_named(
        tmp_path: Path, redis_client: redis.Redis, monkeypatch: pytest.MonkeyPatch,
        tmpfile: bool) -> None:
    """A month's first manifest makes its folder: the new names (file in the month, month in
    manifests/, manifests/ in datasets/) reach the disk with the file, with or without
    O_TMPFILE (the named-temporary fallback renamed without syncing its folder)."""
    if not tmpfile:
        monkeypatch.setattr(spool, "_unnamed", lambda directory: None)
    synced: list[str] = []
    real = os.fsync

    def fsync(fd: int) -> None:
        synced.append(os.readlink(f"/proc/self/fd/{fd}"))
        real(fd)

    monkeypatch.setattr(os, "fsync", fsync)
    store = manifests.Manifests(redis_client, tmp_path / "datasets")
    ref = store.write(hexid(1), T, [1, 2])
    month = tmp_path / "datasets" / "manifests" / ref.name.split("/")[0]
    for folder in (month, month.parent, month.parent.parent):
        assert str(folder) in synced, (folder, synced)
    synced.clear()
    store.write(hexid(2), T, [3])  # the month's folder exists: only it is synced again
    assert str(month) in synced and str(month.parent) not in synced


# --- R10: re-delivery beyond 30 days ------------------------------------------------------------


def at(gate: Gate, ms: int) -> None:
    assert isinstance(gate.clock, FixedClock)
    gate.clock.set(ms)


def test_post_ids_delivered_again_after_30_days_flag_the_entity_with_the_deliveries(
        gate: Gate, tmp_path: Path) -> None:
    first = share(gate, tmp_path, list(range(1000, 1100)))  # day 0: 100 IDs
    at(gate, T + 10 * DAY)
    share(gate, tmp_path, list(range(1050, 1150)))  # within 30 days of the first: no flag
    assert redelivery.findings(gate) == []
    at(gate, T + 31 * DAY)
    again = share(gate, tmp_path, list(range(1090, 1200)))  # 10 of day 0's, 60 of day 10's
    [found] = redelivery.findings(gate)
    assert (found.entity, found.delivery, found.at_ms) == ("acme", again.audit["manifest"],
                                                          T + 31 * DAY)
    assert (found.ids, found.delivered) == (10, 110)
    assert found.earlier == [(first.audit["manifest"], T, 10)]
    at(gate, T + 45 * DAY)
    share(gate, tmp_path, list(range(1000, 1200)))  # day 0's 100 and day 10's 100: 150 IDs
    [flag] = redelivery.flags(gate)
    assert flag.entity == "acme" and [f.ids for f in flag.findings] == [10, 150]
    assert flag.ids == 160 and len(flag.findings[1].earlier) == 2
    assert (flag.first_ms, flag.last_ms) == (T + 31 * DAY, T + 45 * DAY)


def test_an_exempt_academic_entity_is_never_flagged(gate: Gate, tmp_path: Path) -> None:
    gate.entities.add("uni", kind="academic", research=True, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("uni", by="Dr. Who", actor="t", channel="cli")
    share(gate, tmp_path, [1, 2, 3], entity="uni")
    at(gate, T + 40 * DAY)
    share(gate, tmp_path, [1, 2, 3], entity="uni")
    assert redelivery.findings(gate) == []


def test_an_other_entitys_earlier_delivery_is_not_a_re_delivery(
        gate: Gate, tmp_path: Path) -> None:
    gate.entities.add("globex", kind="commercial", research=False, parent=None, actor="t",
                      channel="cli")
    gate.entities.accept_terms("globex", by="K. W.", actor="t", channel="cli")
    share(gate, tmp_path, [1, 2, 3], entity="globex")
    at(gate, T + 40 * DAY)
    share(gate, tmp_path, [1, 2, 3])
    assert redelivery.findings(gate) == []


def test_the_check_runs_after_the_delivery_and_never_fails_it(
        gate: Gate, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    share(gate, tmp_path, [1, 2, 3])
    at(gate, T + 40 * DAY)

    def broken(*a: Any) -> None:
        raise NotFound("the store lost it")

    monkeypatch.setattr(redelivery, "check", lambda *a: broken())
    res = share(gate, tmp_path, [1, 2, 3])
    assert res.settled == "delivered" and (tmp_path / "out.txt").read_text() == "1\n2\n3\n"


def test_a_share_refunded_is_never_compared(gate: Gate, tmp_path: Path) -> None:
    from gatekeeper.rules.errors import BadInput

    share(gate, tmp_path, [1, 2, 3])
    at(gate, T + 40 * DAY)
    (tmp_path / "taken").mkdir()
    with pytest.raises(BadInput):
        share(gate, tmp_path, [1, 2, 3], tmp_path / "taken")
    assert redelivery.findings(gate) == []


def test_an_api_share_is_checked_once_its_response_is_sent(
        gate: Gate, client: FlaskClient, tmp_path: Path) -> None:
    token = gate.users.create_token("dan", actor="t", channel="cli")
    first = share(gate, tmp_path, [5, 6, 7])
    at(gate, T + 40 * DAY)
    resp = client.post("/api/v1/shares?entity=acme&purpose=t", data="6\n7\n8\n",
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    assert resp.get_data(as_text=True) == "6\n7\n8\n"
    resp.close()
    assert background.runner(client.application).drain()  # run off the request path
    [found] = redelivery.findings(gate)
    assert found.ids == 2 and found.earlier == [(first.audit["manifest"], T, 2)]


def test_findings_and_entity_indexes_go_with_their_manifests_past_retention(
        gate: Gate, tmp_path: Path) -> None:
    share(gate, tmp_path, [1, 2, 3])
    at(gate, T + 40 * DAY)
    share(gate, tmp_path, [1, 2, 3])
    assert len(redelivery.findings(gate)) == 1
    at(gate, T + 131 * DAY)
    done = gate.sweep()["manifests"]
    assert done["removed"] == 2 and done["r10_findings_removed"] == 1
    assert redelivery.findings(gate) == []
    assert gate.client.zcard(keys.manifests_of("acme")) == 0


def redelivered_twice(gate: Gate, tmp_path: Path) -> tuple[Any, Any]:
    """acme gets IDs 1-100 at T, then 91-120 at T+40 days: 10 of them again."""
    first = share(gate, tmp_path, list(range(1, 101)))
    at(gate, T + 40 * DAY)
    return first, share(gate, tmp_path, list(range(91, 121)))


def test_the_dashboard_shows_re_deliveries_reading_one_key_and_no_manifest(
        gate: Gate, client: FlaskClient, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
        ) -> None:
    from live import sign_in

    gate.users.add("cora", entity="acme", role="compliance", password=PASSWORD, actor="t",
                   channel="cli")
    assert sign_in(client, "cora", PASSWORD) == 302
    page = client.get("/dashboard").get_data(as_text=True)
    assert 'id="redelivered"' in page and "No entity received Post IDs again" in page
    first, again = redelivered_twice(gate, tmp_path)
    monkeypatch.setattr(manifests.Manifests, "read_bytes",
                        lambda *a: pytest.fail("a page read a manifest"))
    page = client.get("/dashboard").get_data(as_text=True)
    section = page.split('id="redelivered-h"')[1].split("</section>")[0]
    assert "acme" in section and again.audit["manifest"] in section
    assert first.audit["manifest"] in section and "(10 of 30)" in section


def test_the_monthly_report_lists_the_months_re_deliveries(
        gate: Gate, tmp_path: Path) -> None:
    import io

    import pypdf

    from exports.report_pdf import write_report_pdf
    from gatekeeper.domain.report import month_report

    _first, again = redelivered_twice(gate, tmp_path)
    month = retention.month_of(T + 40 * DAY)
    at(gate, T + 80 * DAY)
    data = month_report(gate, month)
    [flag] = data.redelivered
    assert flag.entity == "acme" and flag.ids == 10
    assert [f.delivery for f in flag.findings] == [again.audit["manifest"]]
    assert data.summary()["redelivered_r10"] == {"entities": 1, "shares": 1, "post_ids": 10}
    assert month_report(gate, retention.month_of(T)).redelivered == []  # by the share's month
    buf = io.BytesIO()
    write_report_pdf(data, buf)
    text = " ".join(p.extract_text() or "" for p in pypdf.PdfReader(io.BytesIO(buf.getvalue()))
                    .pages)
    assert "Post IDs delivered again after 30 days" in text
    assert again.audit["manifest"].split("/")[1][:12] in text.replace("\n", "")
