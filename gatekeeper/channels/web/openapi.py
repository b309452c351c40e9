"""The OpenAPI document of the HTTP API, served at /api/v1/openapi.json and kept true by a test."""

from __future__ import annotations

from typing import Any

_ERROR = {"$ref": "#/components/schemas/Error"}


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
            503: "Store unavailable: fail closed, nothing released",
            507: "The server's disk is full; nothing was delivered"}
    out: dict[str, Any] = {}
    for c in codes:
        out[str(c)] = {"description": text[c],
                       "content": {"application/json": {"schema": _ERROR}}}
    out.get("429", {}).setdefault("headers", {"Retry-After": {
        "description": "Seconds until the whole request would fit",
        "schema": {"type": "integer"}}})
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
}

_SECURED: list[dict[str, list[str]]] = [{"bearer": []}]

OPENAPI: dict[str, Any] = {
    "openapi": "3.1.0",
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
            "Filters": {
                "type": "object",
                "additionalProperties": False,
                "properties": {
                    "since": {"type": "string", "description": "created_at >= (ISO 8601)"},
                    "until": {"type": "string", "description": "created_at < (ISO 8601)"},
                    "lang": {"type": "string"},
                    "contains": {"type": "string", "description": "case-insensitive"},
                    "author": {"type": "string", "description": "username or user id"},
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
                    {"name": "Idempotency-Key", "in": "header", "schema": {"type": "string"},
                     "description": "A retry with the same key returns the same share, "
                                    "counted once"},
                    {"name": "entity", "in": "query", "schema": {"type": "string"},
                     "description": "Recipient entity (text/plain uploads)"},
                    {"name": "kind", "in": "query", "schema": {"enum": ["posts", "users"]}},
                    {"name": "allow_partial", "in": "query", "schema": {"type": "boolean"}},
                    {"name": "purpose", "in": "query",
                     "schema": {"type": "string", "maxLength": 1000}},
                ],
                "requestBody": {"required": True, "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/ShareRequest"}},
                    "text/plain": {"schema": {"type": "string",
                                              "description": "One decimal ID per line"}},
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
        "/api/v1/quota/entities/{name}": {
            "get": {
                "summary": "An entity's R2 quota",
                "security": _SECURED,
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The quota object", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Quota"}}}},
                    **_errors(401, 403, 404, 503)},
            }
        },
        "/api/v1/quota/users/{name}": {
            "get": {
                "summary": "A recipient's R6 quota",
                "security": _SECURED,
                "parameters": [{"name": "name", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": {"description": "The quota object", "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/Quota"}}}},
                    **_errors(401, 403, 404, 503)},
            }
        },
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
                                                     "stored dataset, the posts it newly hides",
                                      "content": {"application/json": {"schema": {
                                          "type": "object"}}}},
                              **_errors(400, 401, 403, 413, 503)},
            }
        },
        "/api/v1/exports": {
            "post": {
                "summary": "Always refused: hydrated content never leaves through the API (R5)",
                "responses": _errors(403),
            }
        },
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
