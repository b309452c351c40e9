"""The export form's two twarc-csv options, end to end: retweets whole (default) or as they are,
and referenced posts as rows of their own — counted toward R6, checked by R9, recorded in the
file's About block and in the audit record."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
import redis
from flask.testing import FlaskClient
from live import sign_in_agreeing
from openpyxl import load_workbook

from exports.columns import REFERENCED
from gatekeeper import config as config_mod
from gatekeeper.domain import quota
from gatekeeper.domain.formats import iter_posts
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"
SPANISH = [p for p in iter_posts(SAMPLES / "kpop.jsonl") if p.get("lang") == "es"]
RETWEETS = [p for p in SPANISH if any(r.get("type") == "retweeted" and "text" in r
                                      for r in p.get("referenced_tweets") or ())]


@pytest.fixture
def gate(tmp_path: Path, redis_client: redis.Redis) -> Gate:
    (tmp_path / "config.toml").write_text(
        '[limits]\nhydrated_per_recipient = 30\npost_ids_per_entity = 1000\n'
        '[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=redis_client)
    g.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="test", channel="cli")
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    g.users.add("ana", entity="acme", role="analyst", password=PASSWORD, actor="t",
                channel="cli")
    return g


def signed_in(client: FlaskClient) -> None:
    sign_in_agreeing(client, "ana", PASSWORD)


def used(gate: Gate) -> int:
    return quota.user_quota(gate, "ana")["used"]


def audit(gate: Gate) -> list[dict[str, str]]:
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _i, f in gate.client.xrange(keys.audit("acme"))]


def download(client: FlaskClient, **options: str) -> dict[str, Any]:
    """Export the Spanish posts with these form options: the sheets as lists of dicts."""
    resp = client.get("/export", query_string={"dataset": "kpop", "lang": "es", **options})
    assert resp.status_code == 200
    form = resp.get_data(as_text=True)
    form = form[form.index('id="export-form"'):]
    for name, value in options.items():  # the preview form carries them to the export form
        assert f'name="{name}" value="{value}"' in form
    data = {"format": "xlsx", **dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))}
    resp = client.post("/export", data=data)
    try:
        assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
        body = resp.get_data()
    finally:
        resp.close()
    book = load_workbook(io.BytesIO(body), read_only=True)
    rows = list(book["Posts"].iter_rows(values_only=True))
    about = dict(r[:2] for r in book["About this export"].iter_rows(values_only=True))
    book.close()
    width = len(rows[0])  # read-only sheets end a row at its last filled cell
    return {"header": list(rows[0]), "rows": [dict(zip(rows[0], r + (None,) * (width - len(r)),
                                                       strict=True)) for r in rows[1:]],
            "about": about}


def test_retweets_are_whole_by_default_and_as_they_are_when_asked(client: FlaskClient,
                                                                  gate: Gate) -> None:
    assert RETWEETS  # the sample has retweets whose original the page includes
    signed_in(client)
    whole = download(client)
    rt = RETWEETS[0]
    original = next(r for r in rt["referenced_tweets"] if r["type"] == "retweeted")
    row = next(r for r in whole["rows"] if r["id"] == rt["id"])
    assert row["text"] == original["text"] != rt["text"]
    assert row["public_metrics.like_count"] == original["public_metrics"]["like_count"]
    assert row["author_id"] == rt["author_id"] and row["id"] == rt["id"]
    assert whole["about"]["Retweets"].startswith("whole")
    assert whole["about"]["Referenced posts"] == "not added"
    assert REFERENCED not in whole["header"]

    kept = download(client, retweets_as_is="1")
    row = next(r for r in kept["rows"] if r["id"] == rt["id"])
    assert row["text"] == rt["text"]
    assert kept["about"]["Retweets"].startswith("as they are")
    options = [a.get("options") for a in audit(gate) if a.get("kind") == "export.xlsx"
               and a.get("outcome") == "granted"]
    assert options == ["retweets whole; referenced posts not added",
                       "retweets as they are; referenced posts not added"]


def test_referenced_posts_are_rows_counted_toward_r6(client: FlaskClient, gate: Gate) -> None:
    signed_in(client)
    got = download(client, referenced="1")
    assert got["header"][-1] == REFERENCED
    marked = [r for r in got["rows"] if r[REFERENCED]]
    originals = {r["id"] for p in RETWEETS for r in p["referenced_tweets"]}
    assert {r["id"] for r in marked} == originals
    assert {r[REFERENCED] for r in marked} == {"retweeted"}
    assert {r["id"] for r in got["rows"] if not r[REFERENCED]} == {p["id"] for p in SPANISH}
    assert used(gate) == len(got["rows"]) > len(SPANISH)
    assert got["about"]["Referenced posts"].startswith("added as rows of their own")
    assert [a.get("options") for a in audit(gate) if a.get("kind") == "export.xlsx"
            and a.get("outcome") == "granted"] == ["retweets whole; referenced posts added"]


def test_r9_applies_to_referenced_posts(client: FlaskClient, gate: Gate) -> None:
    original = next(r for r in RETWEETS[0]["referenced_tweets"] if r["type"] == "retweeted")
    gate.deletions.add(iter([original["author_id"].encode()]), kind="users", source="t",
                       actor="t", channel="cli")
    signed_in(client)
    got = download(client, referenced="1")
    ids = {r["id"] for r in got["rows"]}
    # the original's author is listed: neither the original's row nor its retweets leave
    assert original["id"] not in ids
    assert not ids & {p["id"] for p in RETWEETS}
    assert used(gate) == len(got["rows"])
