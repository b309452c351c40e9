"""The OpenAPI document of the HTTP API, served at /api/v1/openapi.json and kept true by a test."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}
_PROBLEM = {"$ref": "#/components/schemas/Problem"}

# RFC 9457 problem types: an error's `type` is this document's URL with the fragment
# #/x-problem-types/CODE (a JSON Pointer to the entry), so every type a client sees is
# documented where it points. CODE is the `error` member of the plain JSON error.
problem_types: dict[str, dict[str, Any]] = {
    code: {"status": status, "title": title}
    for code, status, title in (
        ("bad_request", 400, "The request is malformed; nothing was counted"),
        ("unauthorized", 401, "No valid API token"),
        ("forbidden", 403, "Refused by policy or role"),
        ("automated_hydrated_export_forbidden", 403,
         "Hydrated content never leaves through the API (R5)"),
        ("not_found", 404, "No such entity, user, dataset or URL"),
        ("method_not_allowed", 405, "The URL does not take this method (see Allow)"),
        ("conflict", 409, "The Idempotency-Key was used for a different request"),
        ("in_progress", 409, "The first request with this Idempotency-Key is still being "
                             "delivered"),
        ("pool_moved", 409, "The entity's pool changed while the request ran (R10)"),
        ("too_large", 413, "The upload, or a line of it, is too large"),
        ("unsupported_media_type", 415, "The body's media type is not accepted"),
        ("quota_exceeded", 429, "Refused by a quota; nothing was counted"),
        ("store_unavailable", 503, "The store is unavailable; nothing was released"),
        ("busy", 503, "The server's slots for heavy work are all taken; nothing was run "
                      "or counted (see Retry-After)"),
        ("insufficient_storage", 507, "The server's disk is full; nothing was delivered"),
    )
}


def _id_below(top: int) -> str:
    """A regular expression for the decimal integers 1..top, no leading zero: what
    `formats.is_id` accepts (below 2^63), digit by digit for the longest length."""
    digits = str(top)
    alts = [f"[1-9][0-9]{{0,{len(digits) - 2}}}"]
    for i, d in enumerate(digits):
        low = 1 if i == 0 else 0
        if int(d) > low:
            rest = len(digits) - i - 1
            alts.append(f"{digits[:i]}[{low}-{int(d) - 1}]" + (f"[0-9]{{{rest}}}" if rest else ""))
    alts.append(digits)
    return "(?:" + "|".join(alts) + ")"


# An ID list as the server reads it: lines split at LF, each line blank or one ID with
# ASCII whitespace around it, an optional byte-order mark first.
ID_LIST = ("^\\ufeff?[ \\t\\n\\r\\v\\f]*(?:" + _id_below(2**63 - 1)
           + "(?:[ \\t\\r\\v\\f]*\\n[ \\t\\n\\r\\v\\f]*" + _id_below(2**63 - 1)
           + ")*)?[ \\t\\n\\r\\v\\f]*$")


_RATELIMIT_HEADERS = {
    name: {"description": text, "schema": {"type": "integer", "minimum": 0}}
    for name, text in {
        "RateLimit-Limit": "IETF draft-ietf-httpapi-ratelimit-headers: the quota's limit "
                           "(absent when unlimited)",
        "RateLimit-Remaining": "What the quota still allows in its window",
        "RateLimit-Reset": "Delta-seconds until capacity next returns (0 when nothing is "
                           "used; on a 429, the same moment as Retry-After)",
    }.items()
}


def _errors(*codes: int) -> dict[str, Any]:
    text = {400: "Bad input; `details` lists every bad line or field; nothing was counted",
            401: "No valid API token", 403: "Refused by policy (R1, R5, R8, role)",
            404: "No such entity, user or dataset",
            409: "in_progress: the first request with this Idempotency-Key is still being "
                 "delivered (retry after Retry-After; nothing was delivered or counted), or "
                 "conflict: the key was used for a different request",
            413: "Upload larger than server.max_upload_mb, or a line of it longer than "
                 "datasets.max_line_mb (`file`, `line`, `limit_bytes`)",
            429: "Refused by a quota (R2); nothing was counted",
            503: "store_unavailable: fail closed, nothing released; or busy: every slot "
                 "for heavy work (dataset shares, uploads over 1 MiB) is taken: nothing run "
                 "or counted, retry after Retry-After",
            507: "The server's disk is full; nothing was delivered"}
    out: dict[str, Any] = {}
    for c in codes:
        out[str(c)] = {"description": text[c],
                       "content": {"application/json": {"schema": _ERROR},
                                   "application/problem+json": {"schema": _PROBLEM}}}
    out.get("429", {}).setdefault("headers", {"Retry-After": {
        "description": "Seconds until the whole request would fit (absent when it never can)",
        "schema": {"type": "integer"}}, **_RATELIMIT_HEADERS})
    return out



_QUOTA_HEADERS = {
    name: {"description": text, "schema": {"type": "string"}}
    for name, text in {
        "X-Share-Id": "The share's id (also in the audit log)",
        "X-Share-Status": "granted, partial, or replay (same Idempotency-Key, counted once)",
        "X-Share-Requested": "IDs requested (after R9 removals)",
        "X-Share-Granted": "IDs in this file",
        "X-Share-Removed-R9": "IDs left out because they are on a deletion list (R9)",
        "X-Share-Repeats": "IDs left out because the list or dataset held them already "
                           "(each ID is delivered and counted once)",
        "X-Quota-Limit": "The entity's R2 limit, or 'unlimited'",
        "X-Quota-Remaining": "Post IDs the entity may still receive in the window",
        "X-Quota-Window-Days": "The window's length in days",
    }.items()
} | _RATELIMIT_HEADERS

# What each filter takes (gatekeeper.domain.filters); blank means "no filter" for every one.
_WS = "[ \\t\\n\\r\\v\\f]*"
_BLANK = {"pattern": f"^{_WS}$"}
_TIME: dict[str, Any] = {"type": "string", "anyOf": [
    {"format": "date"}, {"format": "date-time"}, _BLANK]}  # a date alone is midnight UTC
_LANG = {"type": "string",
         "pattern": f"^{_WS}(?:[A-Za-z]{{2,3}}(?:-[A-Za-z0-9]{{2,8}})*)?{_WS}$"}
_AUTHOR = {"type": "string", "pattern": f"^{_WS}(?:@?[A-Za-z0-9_]{{1,50}})?{_WS}$"}

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]


def _quota_path(summary: str) -> dict[str, Any]:
    """GET of a quota object (an entity's or a recipient's): the same answer, its own summary."""
    return {"get": {
        "summary": summary,
        "security": _SECURED,
        "parameters": [{"name": "name", "in": "path", "required": True,
                        "schema": {"type": "string"}}],
        "responses": {"200": {"description": "The quota object", "headers": _RATELIMIT_HEADERS,
                              "content": {"application/json": {
                                  "schema": {"$ref": "#/components/schemas/Quota"}}}},
                      **_errors(401, 403, 404, 503)},
    }}


_EXPORT_METHODS = ("get", "post", "put", "patch", "delete")
_REFUSED_EXPORT: dict[str, Any] = {
    "summary": "Always refused and audited, as is every path under it: hydrated content "
               "never leaves through the API (R5)",
    "responses": _errors(403),
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
    "x-problem-types": problem_types,
    "info": {
        "title": "gatekeeper",
        "version": "1",
        "description": "ID-only redistribution of X API content (R1), counted per entity (R2). "
                       "Hydrated content never leaves through this API (R5).",
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "message"],
                "properties": {
                    "error": {"type": "string"},
                    "rule": {"type": ["string", "null"]},
                    "message": {"type": "string"},
                    "details": {"type": "array", "items": {"type": "object"}},
                    "limit": {"type": ["integer", "null"]},
                    "used": {"type": "integer"},
                    "requested": {"type": "integer"},
                    "remaining": {"type": ["integer", "null"]},
                    "available_at": {"type": ["string", "null"], "format": "date-time",
                                     "description": "when the whole request fits again; null "
                                     "when it never does (it is more than the limit)"},
                    "fits_now": {"type": "integer", "description": "only when the request "
                                 "never fits whole: how many of it fit now (send or export "
                                 "the first N)"},
                },
            },
            "Problem": {
                "description": "RFC 9457 problem details, sent when Accept prefers "
                               "application/problem+json; the members of Error are "
                               "extension members",
                "allOf": [_ERROR, {
                    "type": "object",
                    "required": ["type", "title", "status", "detail", "instance"],
                    "properties": {
                        "type": {"type": "string", "format": "uri",
                                 "description": "#/x-problem-types/CODE of this document"},
                        "title": {"type": "string"},
                        "status": {"type": "integer"},
                        "detail": {"type": "string"},
                        "instance": {"type": "string", "format": "uri-reference"},
                    },
                }],
            },
            "Filters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "since": {**_TIME, "description": "created_at >= (ISO 8601)"},
                    "until": {**_TIME, "description": "created_at < (ISO 8601), after since"},
                    "lang": {**_LANG, "description": "a language code such as en or pt-BR"},
                    "contains": {"type": "string", "description": "case-insensitive"},
                    "author": {**_AUTHOR, "description": "username (@ optional) or user id"},
                },
            },
            "ShareRequest": {
                "type": "object",
                "required": ["entity", "dataset"],
                "additionalProperties": False,
                "properties": {
                    "entity": {"type": "string"},
                    "dataset": {"type": "string"},
                    "filters": {"$ref": "#/components/schemas/Filters"},
                    "kind": {"enum": ["posts", "users"], "default": "posts"},
                    "allow_partial": {"type": "boolean", "default": False},
                    "purpose": {"type": "string", "maxLength": 1000,
                                "description": "Recorded (R10)"},
                },
            },
            "Quota": {
                "type": "object",
                "required": ["name", "kind", "limit", "used", "remaining", "window",
                             "exemption", "permission", "releases"],
                "properties": {
                    "name": {"type": "string"},
                    "kind": {"enum": ["entity", "user"]},
                    "limit": {"type": ["integer", "null"]},
                    "used": {"type": "integer"},
                    "remaining": {"type": ["integer", "null"]},
                    "window": {"enum": ["30d", "rolling-24h", "calendar-day"]},
                    "exemption": {"type": ["object", "null"]},
                    "permission": {"type": ["object", "null"]},
                    "releases": {"type": "array", "items": {
                        "type": "object",
                        "properties": {"at": {"type": "string", "format": "date-time"},
                                       "amount": {"type": "integer"}}}},
                },
            },
        },
    },
    "paths": {
        "/api/v1/shares": {
            "post": {
                "summary": "Share IDs with an entity (R1, R2, R8, R9, R10)",
                "security": _SECURED,
                "parameters": [
                    {"name": "Idempotency-Key", "in": "header",
                     "schema": {"type": "string", "pattern": "^[!-~]{1,255}$"},
                     "description": "A retry with the same key returns the same share, "
                                    "counted once"},
                    {"name": "entity", "in": "query", "required": True,
                     "schema": {"type": "string", "minLength": 1},
                     "description": "The recipient entity of a text/plain upload, which has "
                                    "nowhere else to name it. Like kind, allow_partial and "
                                    "purpose here, it is not read with a JSON body, which "
                                    "carries its own"},
                    {"name": "kind", "in": "query", "schema": {"enum": ["posts", "users"]}},
                    {"name": "allow_partial", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "purpose", "in": "query",
                     "schema": {"type": "string", "maxLength": 1000}},
                ],
                # Not required: a body without a Content-Type is read as a text/plain ID list,
                # so none at all is an empty list (granted, zero IDs).
                "requestBody": {"required": False, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ShareRequest"}},
                    "text/plain": {"schema": {"type": "string", "pattern": ID_LIST,
                                              "description": "One decimal ID per line (1 to "
                                                             "2^63-1, no leading zero); blank "
                                                             "lines are skipped"}},
                }},
                "responses": {
                    "200": {"description": "The ID file (gzipped with Accept: application/gzip)",
                            "headers": _QUOTA_HEADERS,
                            "content": {"text/plain": {"schema": {"type": "string"}},
                                        "application/gzip": {"schema": {
                                            "type": "string", "format": "binary"}}}},
                    **_errors(400, 401, 403, 404, 409, 413, 429, 503, 507),
                },
            }
        },
        "/api/v1/quota/entities/{name}": _quota_path("An entity's R2 quota"),
        "/api/v1/quota/users/{name}": _quota_path("A recipient's R6 quota"),
        "/api/v1/deletions": {
            "post": {
                "summary": "Ingest a deletion list (R9): plain IDs or batch-compliance JSONL",
                "security": _SECURED,
                "parameters": [{"name": "kind", "in": "query", "required": True,
                                "schema": {"enum": ["posts", "users"]}}],
                "requestBody": {"required": True, "content": {
                    "text/plain": {"schema": {"type": "string"}},
                    "application/x-ndjson": {"schema": {"type": "string"}}}},
                "responses": {"200": {"description": "What was ingested (hidden, "
                                                     "scrub_geo, reversals recorded) and, per "
                                                     "stored dataset, the posts it newly hides; "
                                                     "answered once the ingest commits, its "
                                                     "deletion notices opened in the background "
                                                     "(notices_scan, notices_pending: IDs "
                                                     "still to match)",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}},
                              **_errors(400, 401, 403, 413, 503)},
            }
        },
        # Every method the route takes, so none of them is an undocumented answer.
        "/api/v1/exports": {method: _REFUSED_EXPORT for method in _EXPORT_METHODS},
        "/api/v1/openapi.json": {
            "get": {"summary": "This document",
                    "responses": {"200": {"description": "OpenAPI 3.1"}}}
        },
        "/healthz": {
            "get": {"summary": "200 when Redis answers, 503 when it does not",
                    "responses": {"200": {"description": "ok"},
                                  "503": {"description": "store unavailable"}}}
        },
        "/metrics": {
            "get": {"summary": "Prometheus text format; who may read it is server.metrics "
                               "(loopback by default, or a compliance/admin token)",
                    "responses": {"200": {"description": "metrics"}, **_errors(401, 403)}}
        },
    },
}
