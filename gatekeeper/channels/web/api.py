"""The HTTP API for scripts (Bearer tokens): ID shares, quotas, deletions — never hydrated content.

Thin: every decision is the library's (shares, policy, ledger); this module only translates
HTTP to calls and errors to the JSON of SPEC.md.
"""

from __future__ import annotations

import contextlib
import math
import time
import zlib
from collections.abc import Iterator
from datetime import datetime
from http import HTTPStatus
from typing import IO, Any

import orjson
from flask import Blueprint, Response, current_app, g, jsonify, request

from gatekeeper import faults
from gatekeeper.channels.web import background, heavy
from gatekeeper.channels.web.extension import current_gate
from gatekeeper.channels.web.openapi import OPENAPI, problem_types
from gatekeeper.domain import denials, lines, manifests, quota, shares
from gatekeeper.domain.filters import Filters
from gatekeeper.domain.gate import Gate, ingest_deletion_stream
from gatekeeper.domain.users import User
from gatekeeper.rules import policy, roles
from gatekeeper.rules.errors import (
    BadInput,
    GatekeeperError,
    QuotaExceeded,
    Unauthorized,
)

bp = Blueprint("api", __name__, url_prefix="/api/v1")
READ = 1 << 20
SHARE_FIELDS = {"entity", "dataset", "filters", "kind", "allow_partial", "purpose"}


def gate() -> Gate:
    return current_gate()


def iter_lines(stream: IO[bytes], source: str = "upload",
               max_bytes: int = lines.MAX_LINE_BYTES) -> Iterator[bytes]:
    """Lines of a request body, read in large chunks (readline per ID is far too slow); a
    line longer than `max_bytes` is refused (413) once it passes the cap."""
    return lines.read(stream.read, source, max_bytes, READ)


def uploaded_lines() -> Iterator[bytes]:
    """The lines of this request's body, under the configured cap (datasets.max_line_mb)."""
    return iter_lines(request.stream, "upload", gate().config.max_line_bytes)


def json_body() -> dict[str, Any]:
    """This request's JSON object; 400 for anything else (deep nesting included: orjson
    stops at 1,024 levels where the stdlib parser would exhaust the stack)."""
    try:
        body = orjson.loads(request.get_data(cache=False).removeprefix(lines.BOM))
    except orjson.JSONDecodeError as exc:
        raise BadInput(f"the body is not valid JSON ({exc})") from None
    if not isinstance(body, dict):
        raise BadInput("the body must be a JSON object")
    return body


def bearer() -> User:
    """The user whose API token authorises this request."""
    if (checked := g.get("actor")) is not None:  # once per request (heavy.gated asks first)
        return checked
    header = request.headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("send an API token: Authorization: Bearer TOKEN")
    user = gate().users.user_for_token(token.strip())
    g.actor = user
    return user


def _flag(value: Any, name: str) -> bool:
    if isinstance(value, bool):
        return value
    if value is None:
        return False
    if str(value).lower() in ("1", "true", "yes"):
        return True
    if str(value).lower() in ("0", "false", "no", ""):
        return False
    raise BadInput(f"{name} must be true or false, not {value!r}")


def _heavy_upload() -> bool:
    """A dataset selection (a scan) or a large upload is heavy work; the token is checked
    first, so a request without a valid one never takes a place in line."""
    bearer()
    return request.mimetype == "application/json" or heavy.large_upload()


@bp.post("/shares")
@heavy.gated("share", when=_heavy_upload)
def create_share() -> Response:
    """Share IDs with an entity: a dataset selection (JSON) or an uploaded ID list (text)."""
    started = time.perf_counter()
    user = bearer()
    gk = gate()
    idem = request.headers.get("Idempotency-Key")
    if request.mimetype == "application/json":
        body = json_body()
        unknown = sorted(set(body) - SHARE_FIELDS)
        if unknown:
            raise BadInput(f"unknown field(s): {', '.join(unknown)}",
                           details=[{"field": f, "message": "unknown field"} for f in unknown])
        entity, kind = body.get("entity"), body.get("kind", "posts")
        dataset, purpose = body.get("dataset"), body.get("purpose")
        if not isinstance(entity, str) or not isinstance(dataset, str):
            raise BadInput('"entity" and "dataset" are required strings')
        filters_raw = body.get("filters")
        if filters_raw is not None and not isinstance(filters_raw, dict):
            raise BadInput('"filters" must be an object', field="filters")
        filters = Filters.parse(filters_raw)
        allow_partial = _flag(body.get("allow_partial"), "allow_partial")
        shown = filters.to_dict() if not filters.is_empty else None
        as_json = orjson.dumps(shown, option=orjson.OPT_SORT_KEYS).decode() if shown else None
        auth = shares.authorise(gk, actor=user, entity=entity, kind=kind, channel="api",
                                purpose=purpose, extra={"dataset": dataset,
                                                        **({"filters": as_json} if shown
                                                           else {})})
        gk.datasets.check(dataset)  # unknown dataset: 404 before any work
        selection = shares.select_from_dataset(gk, dataset, filters, kind,
                                               gk.deletions.current())
        request_parts: tuple[Any, ...] = (dataset, str(shown), purpose)
    elif request.mimetype in ("text/plain", ""):
        entity = request.args.get("entity")
        kind = request.args.get("kind", "posts")
        purpose = request.args.get("purpose")
        allow_partial = _flag(request.args.get("allow_partial"), "allow_partial")
        if not entity:
            raise BadInput("?entity=NAME is required with a text/plain ID list")
        auth = shares.authorise(gk, actor=user, entity=entity, kind=kind, channel="api",
                                purpose=purpose)
        selection = shares.select_id_stream(iter(lambda: request.stream.read(READ), b""),
                                            "upload", kind, gk.deletions.current(),
                                            gk.config.max_line_bytes)
        request_parts = (purpose,)
    else:
        raise BadInput(f"send application/json or text/plain, not {request.mimetype}")
    return _deliver(auth, selection, kind, allow_partial, idem, request_parts, started)


def _deliver(auth: shares.Authorised, selection: shares.Selection, kind: str,
             allow_partial: bool, idem: str | None, request_parts: tuple[Any, ...],
             started: float) -> Response:
    gk = gate()
    try:
        res = shares.reserve(gk, auth, selection, kind=kind, allow_partial=allow_partial,
                             idempotency_key=idem, request=request_parts)
    except BaseException:
        selection.close()
        raise
    try:
        faults.point("share.reserved")
        n = res.deliverable(selection)
        ids = selection.manifest_ids(n)  # a large list's, sorted: kept for the R10 check
        manifests.record_share(gk, res, selection.blocks(n), kind, ids)
        # The IDs are ready in the spool; once the response starts they are delivered, so
        # the share is settled first (refunded if the store fails before a byte is sent).
        res.commit_before_sending()
        faults.point("api.committed")
    except BaseException:
        if res.settled is None:  # failed before settling: nothing was sent
            res.refund()
        selection.close()
        raise
    gzip = "application/gzip" in request.headers.get("Accept", "")
    n = res.deliverable(selection)

    def body() -> Iterator[bytes]:
        z = zlib.compressobj(1, zlib.DEFLATED, 31) if gzip else None
        for i, chunk in enumerate(selection.head(n)):
            if i == 1:
                faults.point("api.streaming")
            # Level 1: IDs compress nearly as well, five times faster (bench/ids.py).
            yield z.compress(chunk) if z is not None else chunk
        if z is not None:
            yield z.flush()

    main = res.grant.counters[0]
    headers = {
        "X-Share-Id": res.grant.share_id,
        "X-Share-Status": res.grant.status,
        "X-Share-Requested": str(res.grant.requested),
        "X-Share-Granted": str(n),
        "X-Share-Removed-R9": str(res.removed),
        "X-Share-Repeats": str(selection.repeats),  # left out: each ID leaves once
        "X-Quota-Limit": "unlimited" if main.limit is None else str(main.limit),
        "X-Quota-Remaining": "unlimited" if main.remaining is None else str(main.remaining),
        "X-Quota-Window-Days": str(res.window_days),
    }
    if not gzip and n == selection.count:
        headers["Content-Length"] = str(selection.size)
    if main.limit is not None:  # the IETF fields beside X-Quota-* (none when unlimited)
        reset = None
        # The share is settled: a store lost now must not turn its delivery into an error,
        # so without the store the reset (the draft makes every field optional) is left out.
        with contextlib.suppress(GatekeeperError):
            reset = quota.seconds_to_next_release(gk, res.counters[0])
        headers.update(ratelimit_headers(main.limit, main.remaining, reset))
    m = current_app.extensions["gatekeeper.metrics"]
    m.decision("api", res.grant.status, main.rule)
    if res.grant.status != "replay":
        m.ids_shared.labels(kind).inc(n)
    m.latency.labels("shares").observe(time.perf_counter() - started)
    mimetype = "application/gzip" if gzip else "text/plain"
    resp = Response(body(), status=200, headers=headers, mimetype=mimetype)
    # Once the response is sent, R10's re-delivery check (issue 15) is queued for the
    # background runner (a heavy slot, not this worker thread); then the spooled IDs are
    # removed when the response closes, however the client leaves.
    runner = background.runner()
    resp.call_on_close(lambda: runner.check_soon(res, ids))
    resp.call_on_close(selection.close)
    return resp


@bp.get("/quota/entities/<name>")
def entity_quota(name: str) -> Response:
    """R2: an entity's Post IDs over the window (data, compliance, admin)."""
    user = bearer()
    roles.require_role(user, roles.MAY_READ_QUOTAS, "reading quotas")
    return quota_response(quota.entity_quota(gate(), name))


@bp.get("/quota/users/<name>")
def user_quota(name: str) -> Response:
    """R6: a recipient's hydrated objects today (the user themself, compliance, admin)."""
    user = bearer()
    if user.name != name:
        roles.require_role(user, roles.MAY_READ_OTHERS_QUOTA, "reading another user's quota")
    return quota_response(quota.user_quota(gate(), name))


def quota_response(q: dict[str, Any]) -> Response:
    """The quota object with the RateLimit headers of its tightest counter (the entity's own
    or its pool's, R10: the draft wants the one closest to its limit)."""
    tightest = min((c for c in (q, q.get("pool")) if c and c["remaining"] is not None),
                   key=lambda c: c["remaining"], default=q)
    resp = jsonify(q)
    releases = tightest["releases"]
    reset = None
    if tightest["limit"] is not None:
        reset = 0 if not releases else _seconds_between(q["as_of"], releases[0]["at"])
    resp.headers.update(ratelimit_headers(tightest["limit"], tightest["remaining"], reset))
    return resp


def _seconds_between(start: str, end: str) -> int:
    delta = datetime.fromisoformat(end) - datetime.fromisoformat(start)
    return max(0, math.ceil(delta.total_seconds()))


def ratelimit_headers(limit: int | None, remaining: int | None,
                      reset: int | None) -> dict[str, str]:
    """The IETF RateLimit fields (draft-ietf-httpapi-ratelimit-headers, the separate-field
    revisions): the limit, what remains, and delta-seconds until capacity next returns (0
    when nothing is used; none when unknown). An unlimited quota has no limit to advertise,
    and the draft has no value for "none": the fields are left out (they are optional)."""
    if limit is None or remaining is None:
        return {}
    out = {"RateLimit-Limit": str(limit), "RateLimit-Remaining": str(remaining)}
    if reset is not None:
        out["RateLimit-Reset"] = str(reset)
    return out


@bp.post("/deletions")
@heavy.gated("deletion list", when=_heavy_upload)
def add_deletions() -> Response:
    """R9: ingest a deletion list (plain IDs or batch-compliance JSONL); ?kind=posts|users."""
    user = bearer()
    roles.require_role(user, roles.MAY_INGEST_DELETIONS, "ingesting deletion lists")
    kind = request.args.get("kind")
    if kind is None:
        raise BadInput("?kind=posts or ?kind=users is required", rule="R9")
    gk = gate()
    report = ingest_deletion_stream(gk, uploaded_lines(), kind=kind, source="upload",
                                    actor=user.name, channel="api", scan=False)
    # The ingest stands and what its notices owe is queued in Redis (its own transaction):
    # they are opened in the background (background.py), not while a client waits (a scan
    # of a year of deliveries takes seconds). "notices" lists none opened by this request.
    answer = report.to_dict()
    with contextlib.suppress(GatekeeperError):  # the store gone since the commit: say nothing
        answer["notices_pending"] = gk.notices.pending()
    answer["notices_scan"] = "background"
    background.runner().scan_soon(user.name, "api")
    return jsonify(answer)


@bp.route("/exports", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
@bp.route("/exports/<path:_rest>", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
def hydrated_exports(_rest: str = "") -> Response:
    """R1/R5: hydrated content never leaves through the API — refused and audited."""
    refuse_automated_hydrated()
    raise AssertionError("unreachable")


def refuse_automated_hydrated() -> None:
    """Audit and raise the R5 refusal of hydrated content requested with a token."""
    refusal = policy.automated_hydrated()
    actor = None
    with contextlib.suppress(GatekeeperError):
        actor = bearer()
    # Through denials.record: a flood of these is bounded per source like every denial.
    denials.record(gate(), refusal, actor, {
        "actor": actor.name if actor else "unauthenticated", "channel": "api",
        "kind": "export.hydrated", "recipient": actor.name if actor else "",
        "entity": actor.entity if actor else "", "path": request.path})
    raise refusal


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(OPENAPI)


def error_response(exc: GatekeeperError) -> Response:
    """The JSON error of SPEC.md, with Retry-After and the RateLimit fields on a quota
    refusal (its reset is Retry-After: the draft wants both to name the same moment)."""
    body = exc.to_dict()
    retry = body.pop("retry_after", None)
    resp = error_json(body, exc.status)
    if retry is not None:
        resp.headers["Retry-After"] = str(retry)
    if isinstance(exc, QuotaExceeded):
        resp.headers.update(ratelimit_headers(body.get("limit"), body.get("remaining"), retry))
    if exc.status == 401:
        resp.headers["WWW-Authenticate"] = 'Bearer realm="gatekeeper"'
    return resp


PROBLEM = "application/problem+json"


def error_json(body: dict[str, Any], status: int) -> Response:
    """An error body as SPEC.md's JSON, or — when the client's Accept prefers it — as RFC
    9457 problem details whose extension members are that same body (error, rule, message
    and the quota fields stay where scripts read them). Plain JSON stays the default: an
    Accept of */*, application/json or none gets it."""
    accept = request.accept_mimetypes
    if accept.quality(PROBLEM) > accept.quality("application/json"):
        problem = problem_types.get(body["error"])
        resp = current_app.response_class(orjson.dumps({
            "type": f"{request.url_root}api/v1/openapi.json#/x-problem-types/{body['error']}",
            "title": problem["title"] if problem else HTTPStatus(status).phrase,
            "status": status,
            "detail": body["message"],
            "instance": request.path,
            **body,
        }), mimetype=PROBLEM)
    else:
        resp = jsonify(body)
    resp.status_code = status
    resp.headers.add("Vary", "Accept")
    return resp
