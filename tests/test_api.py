"""The HTTP API end to end: the real server (`gatekeeper serve`, waitress) on a loopback port."""

from __future__ import annotations

import gzip
import json
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from live import Server, start_server

from gatekeeper import config as config_mod
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import EmbeddedServer
from gatekeeper.rules import policy
from gatekeeper.rules.errors import AutomatedHydratedForbidden

SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"
PASSWORD = "correct horse battery"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    directory = tmp_path_factory.mktemp("api")
    (directory / "config.toml").write_text(
        '[redis]\ndata_dir = "var"\n[limits]\npost_ids_per_entity = 100\n'
        '[server]\nmax_upload_mb = 1\n[datasets]\ndir = "datasets"\n')
    gate = Gate(config_mod.load(directory / "config.toml"))
    proc = start_server(directory)
    try:
        yield Server(proc.port, gate, directory)  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(10)
        EmbeddedServer(directory / "var").stop()


@dataclass
class Team:
    entity: str
    token: str
    user: str


def setup_team(server: Server, *, kind: str = "commercial", research: bool = False,
               terms: bool = True, role: str = "data") -> Team:
    """A fresh entity with a user of `role` and an API token."""
    suffix = uuid.uuid4().hex[:8]
    entity, user = f"ent-{suffix}", f"user-{suffix}"
    g = server.gate
    g.entities.add(entity, kind=kind, research=research, parent=None, actor="test",
                   channel="cli")
    if terms:
        g.entities.accept_terms(entity, by="Jane Doe", actor="test", channel="cli")
    g.users.add(user, entity=entity, role=role, password=PASSWORD, actor="test", channel="cli")
    return Team(entity, g.users.create_token(user, actor="test", channel="cli"), user)


def used(server: Server, team: Team) -> int:
    status, _, body = server.request("GET", f"/api/v1/quota/entities/{team.entity}",
                                     headers={"Authorization": f"Bearer {team.token}"})
    assert status == 200, body
    return json.loads(body)["used"]


def audit_records(server: Server, root: str | None) -> list[dict[str, str]]:
    stream = keys.SYS_AUDIT if root is None else keys.audit(root)
    return [{k.decode(): v.decode() for k, v in f.items()}
            for _id, f in server.gate.client.xrange(stream)]


def test_share_is_granted_with_the_id_file_and_quota_headers(server: Server) -> None:
    team = setup_team(server)
    ids = list(range(1_000_000, 1_000_040))
    status, headers, body = server.share_text(team.token, team.entity, ids)
    assert status == 200, body
    assert body.decode().splitlines() == [str(i) for i in ids]
    assert headers["content-type"].startswith("text/plain")
    assert headers["x-quota-limit"] == "100"
    assert headers["x-quota-remaining"] == "60"
    assert headers["x-quota-window-days"] == "30"
    assert headers["x-share-status"] == "granted" and headers["x-share-id"]
    assert used(server, team) == 40


def test_share_over_the_limit_is_429_with_available_at_and_retry_after(server: Server) -> None:
    team = setup_team(server)
    assert server.share_text(team.token, team.entity, list(range(1, 91)))[0] == 200
    status, headers, body = server.share_text(team.token, team.entity, list(range(100, 120)))
    assert status == 429
    err = json.loads(body)
    assert (err["error"], err["rule"]) == ("quota_exceeded", "R2")
    assert (err["limit"], err["used"], err["requested"], err["remaining"]) == (100, 90, 20, 10)
    _, _, q = server.request("GET", f"/api/v1/quota/entities/{team.entity}",
                             headers={"Authorization": f"Bearer {team.token}"})
    release = json.loads(q)["releases"][0]["at"]
    assert err["available_at"] == release  # the 90 leave the window together
    retry = int(headers["retry-after"])
    assert 29 * 86400 < retry <= 30 * 86400 + 600
    assert used(server, team) == 90
    assert audit_records(server, team.entity)[-1]["outcome"] == "refused"


def test_a_share_that_never_fits_whole_is_429_with_available_at_null_and_send_the_first_n(
        server: Server) -> None:
    team = setup_team(server)
    assert server.share_text(team.token, team.entity, list(range(1, 31)))[0] == 200
    status, headers, body = server.share_text(team.token, team.entity, list(range(100, 250)))
    assert status == 429
    err = json.loads(body)
    assert err["available_at"] is None and "retry-after" not in headers  # never: no time
    assert (err["remaining"], err["fits_now"]) == (70, 70)
    assert "never fits whole — send the first 70" in err["message"]
    assert b"1969" not in body and b"1970" not in body


def test_partial_share_returns_exactly_the_remaining_allowance(server: Server) -> None:
    team = setup_team(server)
    server.share_text(team.token, team.entity, list(range(1, 81)))
    ids = list(range(500, 550))
    status, headers, body = server.share_text(team.token, team.entity, ids,
                                              "&allow_partial=true")
    assert status == 200
    assert headers["x-share-status"] == "partial"
    assert body.decode().splitlines() == [str(i) for i in ids[:20]]
    assert headers["x-quota-remaining"] == "0"


def test_academic_research_entity_is_unlimited_but_counted(server: Server) -> None:
    team = setup_team(server, kind="academic", research=True)
    status, headers, _ = server.share_text(team.token, team.entity, list(range(1, 301)))
    assert status == 200
    assert headers["x-quota-limit"] == "unlimited"
    assert used(server, team) == 300


def test_permission_raises_the_limit_and_r2_returns_when_it_expires(server: Server) -> None:
    team = setup_team(server)
    seconds, micros = server.gate.client.time()
    until = seconds * 1000 + micros // 1000 + 2500
    server.gate.entities.permit(team.entity, limit=1000, until_ms=until, reference="X-1",
                                actor="test", channel="cli")
    status, headers, _ = server.share_text(team.token, team.entity, list(range(1, 151)))
    assert status == 200 and headers["x-quota-limit"] == "1000"
    time.sleep(max(0.0, (until - time.time() * 1000) / 1000) + 0.3)
    status, _, body = server.share_text(team.token, team.entity, [7])
    assert status == 429
    assert json.loads(body)["limit"] == 100


def test_idempotent_retry_returns_the_same_share_counted_once(server: Server) -> None:
    team = setup_team(server)
    ids = list(range(10, 40))
    key = {"Idempotency-Key": f"job-{uuid.uuid4()}"}
    first = server.share_text(team.token, team.entity, ids, headers=key)
    second = server.share_text(team.token, team.entity, ids, headers=key)
    assert first[0] == second[0] == 200
    assert first[1]["x-share-id"] == second[1]["x-share-id"]
    assert second[1]["x-share-status"] == "replay"
    assert first[2] == second[2]
    assert used(server, team) == 30
    conflict = server.share_text(team.token, team.entity, [1, 2], headers=key)
    assert conflict[0] == 409


def test_bad_upload_lists_every_bad_line_and_counts_nothing(server: Server) -> None:
    team = setup_team(server)
    status, _, body = server.share_text(team.token, team.entity, "12\nx1\n13\n\n-4\n1.5\n")
    assert status == 400
    err = json.loads(body)
    assert err["error"] == "bad_request"
    assert [d["line"] for d in err["details"]] == [2, 5, 6]
    assert used(server, team) == 0


def test_entity_without_terms_is_refused_403_r8_and_audited(server: Server) -> None:
    team = setup_team(server, terms=False)
    status, _, body = server.share_text(team.token, team.entity, [1, 2, 3])
    assert status == 403
    assert json.loads(body)["rule"] == "R8"
    assert audit_records(server, team.entity)[-1]["outcome"] == "denied"
    assert used(server, team) == 0


def test_wrong_role_and_missing_token_are_refused(server: Server) -> None:
    analyst = setup_team(server, role="analyst")
    status, _, body = server.share_text(analyst.token, analyst.entity, [1])
    assert status == 403 and json.loads(body)["rule"] == "R12"
    status, headers, _ = server.request("POST", "/api/v1/shares?entity=x", "1\n",
                                        {"Content-Type": "text/plain"})
    assert status == 401 and "bearer" in headers["www-authenticate"].lower()
    status, _, _ = server.share_text("gk.nobody.secret", analyst.entity, [1])
    assert status == 401


def test_deleted_ids_never_leave(server: Server) -> None:
    team = setup_team(server)
    compliance = setup_team(server, role="compliance")
    status, _, body = server.request(
        "POST", "/api/v1/deletions?kind=posts",
        '{"id":"5000","action":"delete","reason":"deleted"}\n5002\n',
        {"Authorization": f"Bearer {compliance.token}", "Content-Type": "text/plain"})
    assert status == 200, body
    assert json.loads(body)["listed"] == 2
    status, headers, body = server.share_text(team.token, team.entity, [5000, 5001, 5002, 5003])
    assert status == 200
    assert body.decode().split() == ["5001", "5003"]
    assert headers["x-share-removed-r9"] == "2"
    assert used(server, team) == 2
    assert server.share_text(team.token, team.entity, [5000],
                             headers={})[2] == b""  # nothing to deliver
    denied = server.request("POST", "/api/v1/deletions?kind=posts", "1\n",
                            {"Authorization": f"Bearer {team.token}"})
    assert denied[0] == 403


def test_hydrated_content_with_a_token_is_refused_r5_and_audited(server: Server) -> None:
    team = setup_team(server)
    for method, path in (("POST", "/api/v1/exports"), ("GET", "/api/v1/exports/x.xlsx"),
                         ("POST", "/export")):
        status, _, body = server.request(method, path, "{}",
                                         {"Authorization": f"Bearer {team.token}",
                                          "Content-Type": "application/json"})
        assert status == 403, (path, body)
        err = json.loads(body)
        assert (err["error"], err["rule"]) == ("automated_hydrated_export_forbidden", "R5")
    refusals = [a for a in audit_records(server, team.entity) if a.get("rule") == "R5"]
    assert len(refusals) == 3 and all(a["outcome"] == "denied" for a in refusals)


def test_the_r5_refusal_reads_the_same_on_the_api_and_the_cli(server: Server) -> None:
    team = setup_team(server)
    status, _, body = server.request("POST", "/api/v1/exports", "{}",
                                     {"Authorization": f"Bearer {team.token}",
                                      "Content-Type": "application/json"})
    assert status == 403
    with pytest.raises(AutomatedHydratedForbidden) as cli:
        policy.check_hydrated_channel("cli")
    assert json.loads(body)["message"] == cli.value.message


def test_upload_past_the_configured_size_is_413(server: Server) -> None:
    team = setup_team(server)
    body = "1234567890123456789\n" * 60_000  # 1.2 MB > max_upload_mb = 1
    status, _, out = server.share_text(team.token, team.entity, body)
    assert status == 413
    assert json.loads(out)["error"] == "too_large"
    assert used(server, team) == 0


def test_gzip_on_request(server: Server) -> None:
    team = setup_team(server)
    status, headers, body = server.share_text(team.token, team.entity, [11, 12, 13],
                                              headers={"Accept": "application/gzip"})
    assert status == 200 and headers["content-type"] == "application/gzip"
    assert gzip.decompress(body) == b"11\n12\n13\n"


def test_dataset_share_by_json_with_filters(server: Server) -> None:
    if "kpop-api" not in {d.name for d in server.gate.datasets.list()}:
        server.gate.datasets.add("kpop-api", SAMPLES / "kpop.jsonl", actor="test",
                                 channel="cli")
    team = setup_team(server, kind="academic", research=True)
    expected = list(server.gate.datasets.post_ids("kpop-api", Filters.parse({"lang": "ko"})))
    assert expected, "kpop.jsonl has Korean posts"
    status, headers, body = server.request(
        "POST", "/api/v1/shares",
        json.dumps({"entity": team.entity, "dataset": "kpop-api", "filters": {"lang": "ko"},
                    "purpose": "test"}),
        {"Authorization": f"Bearer {team.token}", "Content-Type": "application/json"})
    assert status == 200, body
    ids = body.decode().split()
    assert ids == expected and int(headers["x-share-granted"]) == len(ids)
    status, _, body = server.request(
        "POST", "/api/v1/shares", json.dumps({"entity": team.entity, "dataset": "nope"}),
        {"Authorization": f"Bearer {team.token}", "Content-Type": "application/json"})
    assert status == 404
    status, _, body = server.request(
        "POST", "/api/v1/shares",
        json.dumps({"entity": team.entity, "dataset": "kpop-api", "filters": {"since": "soon"}}),
        {"Authorization": f"Bearer {team.token}", "Content-Type": "application/json"})
    assert status == 400 and "since" in json.loads(body)["message"]


def test_quota_endpoints_return_the_quota_object(server: Server) -> None:
    team = setup_team(server)
    auth = {"Authorization": f"Bearer {team.token}"}
    status, _, body = server.request("GET", f"/api/v1/quota/entities/{team.entity}",
                                     headers=auth)
    q = json.loads(body)
    assert status == 200
    assert {"name", "kind", "limit", "used", "remaining", "window", "exemption", "permission",
            "releases"} <= set(q)
    status, _, body = server.request("GET", f"/api/v1/quota/users/{team.user}", headers=auth)
    assert status == 200 and json.loads(body)["window"] == "rolling-24h"
    other = setup_team(server)
    assert server.request("GET", f"/api/v1/quota/users/{other.user}", headers=auth)[0] == 403


def test_healthz_metrics_and_openapi(server: Server) -> None:
    team = setup_team(server)
    auth = {"Authorization": f"Bearer {team.token}"}
    server.share_text(team.token, team.entity, [1, 2])
    # A refusal (R2: 101 of 100) and a denial (R5) of its own, whatever ran before.
    assert server.share_text(team.token, team.entity, list(range(3, 104)))[0] == 429
    assert server.request("POST", "/api/v1/exports", "{}",
                          {**auth, "Content-Type": "application/json"})[0] == 403
    assert server.request("GET", "/healthz")[0] == 200
    status, headers, body = server.request("GET", "/metrics")
    text = body.decode()
    assert status == 200 and headers["content-type"].startswith("text/plain")
    assert 'gatekeeper_decisions_total{channel="api",outcome="granted",rule="R2"}' in text
    assert 'gatekeeper_ids_shared_total{kind="posts"}' in text
    assert 'gatekeeper_decisions_total{channel="api",outcome="refused",rule="R2"}' in text
    assert 'gatekeeper_decisions_total{channel="api",outcome="denied",rule="R5"}' in text
    assert "gatekeeper_request_seconds_bucket" in text
    status, _, body = server.request("GET", "/api/v1/openapi.json")
    assert status == 200 and json.loads(body)["openapi"].startswith("3.")


def test_openapi_documents_exactly_the_api_routes(server: Server) -> None:
    from gatekeeper.channels.web.app import create_app
    from gatekeeper.channels.web.openapi import OPENAPI

    app = create_app(server.gate)
    routes = set()
    for rule in app.url_map.iter_rules():
        if rule.rule.startswith("/api/") or rule.rule in ("/healthz", "/metrics"):
            path = rule.rule.replace("<name>", "{name}")
            if "<path:" in path:
                continue  # /api/v1/exports/<anything>: the same refusal as /api/v1/exports
            for method in rule.methods - {"HEAD", "OPTIONS"}:
                routes.add((path, method.lower()))
    documented = {(p, m) for p, ops in OPENAPI["paths"].items() for m in ops}
    assert {p for p, _ in routes} == {p for p, _ in documented}
    assert documented <= routes


def test_store_down_means_503_and_nothing_released(tmp_path: Path) -> None:
    (tmp_path / "config.toml").write_text('[redis]\nurl = "redis://127.0.0.1:1/0"\n')
    proc = start_server(tmp_path)
    try:
        conn = Server(proc.port, None, tmp_path)  # type: ignore[arg-type, attr-defined]
        assert conn.request("GET", "/healthz")[0] == 503
        status, _, body = conn.share_text("gk.x.y", "acme", [1])
        assert status == 503
        assert json.loads(body)["error"] == "store_unavailable"
    finally:
        proc.terminate()
        proc.wait(10)


def test_an_uploaded_list_with_repeats_delivers_and_counts_each_id_once(server: Server) -> None:
    team = setup_team(server)
    status, headers, body = server.share_text(team.token, team.entity, [5, 6, 5, 7, 6, 5])
    assert status == 200, body
    assert body == b"5\n6\n7\n"
    assert (headers["x-share-requested"], headers["x-share-granted"],
            headers["x-share-repeats"]) == ("3", "3", "3")
    assert used(server, team) == 3
    granted = [a for a in audit_records(server, team.entity)
               if a.get("kind") == "share.posts" and a.get("outcome") == "granted"]
    assert granted[0]["repeats"] == "3"


def _auth(team: Team, **extra: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {team.token}", **extra}


def test_a_grant_carries_the_ietf_ratelimit_headers_beside_the_x_quota_ones(
        server: Server) -> None:
    team = setup_team(server)
    status, headers, _ = server.share_text(team.token, team.entity, list(range(1, 41)))
    assert status == 200
    assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("100", "60")
    # delta-seconds until the 40 leave the 30-day window (its buckets end within 10 minutes
    # of it), never a timestamp
    assert 29 * 86400 < int(headers["ratelimit-reset"]) <= 30 * 86400 + 600
    assert headers["x-quota-remaining"] == "60"


def test_a_quota_get_carries_the_ratelimit_headers_and_zero_reset_when_nothing_is_used(
        server: Server) -> None:
    team = setup_team(server)
    path = f"/api/v1/quota/entities/{team.entity}"
    status, headers, _ = server.request("GET", path, headers=_auth(team))
    assert status == 200
    assert [headers[f"ratelimit-{h}"] for h in ("limit", "remaining", "reset")] == \
        ["100", "100", "0"]
    status, headers, _ = server.request("GET", f"/api/v1/quota/users/{team.user}",
                                        headers=_auth(team))
    assert status == 200 and headers["ratelimit-limit"].isdigit()
    assert headers["ratelimit-reset"] == "0"


def test_a_quota_refusal_carries_ratelimit_headers_whose_reset_is_retry_after(
        server: Server) -> None:
    team = setup_team(server)
    assert server.share_text(team.token, team.entity, list(range(1, 91)))[0] == 200
    status, headers, _ = server.share_text(team.token, team.entity, list(range(100, 120)))
    assert status == 429
    assert (headers["ratelimit-limit"], headers["ratelimit-remaining"]) == ("100", "10")
    assert headers["ratelimit-reset"] == headers["retry-after"]


def test_an_unlimited_entity_gets_no_ratelimit_headers(server: Server) -> None:
    team = setup_team(server, kind="academic", research=True)
    status, headers, _ = server.share_text(team.token, team.entity, list(range(1, 11)))
    assert status == 200 and headers["x-quota-limit"] == "unlimited"
    assert not any(h.startswith("ratelimit-") for h in headers)


def test_errors_are_problem_details_when_the_client_accepts_them(server: Server) -> None:
    team = setup_team(server)
    assert server.share_text(team.token, team.entity, list(range(1, 91)))[0] == 200
    status, headers, body = server.share_text(
        team.token, team.entity, list(range(100, 120)),
        headers={"Accept": "application/problem+json"})
    assert status == 429
    assert headers["content-type"] == "application/problem+json"
    p = json.loads(body)
    assert p["status"] == 429 and p["title"] and p["instance"] == "/api/v1/shares"
    assert p["type"].endswith("/api/v1/openapi.json#/x-problem-types/quota_exceeded")
    assert p["detail"] == p["message"]
    assert (p["error"], p["rule"], p["limit"], p["remaining"]) == \
        ("quota_exceeded", "R2", 100, 10)
    # the type is documented where it points
    _, _, doc = server.request("GET", "/api/v1/openapi.json")
    assert json.loads(doc)["x-problem-types"]["quota_exceeded"]["title"] == p["title"]


def test_plain_json_stays_the_default_for_errors(server: Server) -> None:
    for accept in ({}, {"Accept": "*/*"}, {"Accept": "application/json"}):
        status, headers, body = server.request("GET", "/api/v1/quota/entities/nobody",
                                               headers=accept)
        assert status == 401 and headers["content-type"] == "application/json"
        assert "type" not in json.loads(body)


def test_http_errors_are_problem_details_too_and_405_names_the_allowed_methods(
        server: Server) -> None:
    status, headers, body = server.request("DELETE", "/api/v1/quota/entities/x",
                                           headers={"Accept": "application/problem+json"})
    assert status == 405
    assert sorted(headers["allow"].split(", ")) == ["GET", "HEAD", "OPTIONS"]
    assert headers["content-type"] == "application/problem+json"
    assert json.loads(body)["error"] == "method_not_allowed"
    for path in ("/api/v1/shares", "/api/v1/deletions", "/healthz", "/metrics",
                 "/api/v1/openapi.json", "/api/v1/exports", "/login"):
        status, headers, _ = server.request("TRACE", path)
        assert status == 405 and "allow" in headers, path

