"""Audit records (R11) as people read them: on the dashboard, on /audit, in CSV and XLSX files and
in the monthly report.

A record holds what the decision was, not sentences: a refusal by the ledger has no `message`,
its `available_at` is epoch ms or -1 (never), `time` is epoch ms and older records hold a Python
repr in `filters`. `describe` gives every record the one message all pages and files show, and
`for_people` turns a record into a row of a file a person opens: every time ISO 8601 in UTC,
every structured field JSON. JSONL keeps the records exactly as stored (the hash chain is
computed over them; `gatekeeper audit verify` reads them that way).
"""

from __future__ import annotations

import ast
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any

from gatekeeper.domain.auditfilter import iso_ms
from gatekeeper.rules import fits

# Fields holding epoch milliseconds (the ledger's own clock).
TIME_FIELDS = ("time", "closes_at", "created", "until_ms", "from_ms")
STRUCTURED = ("filters",)  # fields holding an object: JSON in a file, never a Python repr
# Inside an entity record's `facts` (JSON), the keys that hold epoch ms ("permit_until").
FACT_TIMES = ("_at", "_from", "_until")


def _int(value: Any) -> int | None:
    try:
        return int(str(value))
    except ValueError:
        return None


def describe(record: Mapping[str, Any], when: Callable[[int], str] = iso_ms) -> str:
    """The message a reader sees for `record`: its own, or what a refusal or conflict means
    (nothing was counted), with when the whole request fits again — or that it never does."""
    message = str(record.get("message") or "")
    outcome, rule = record.get("outcome", ""), record.get("rule", "")
    if not message and outcome == "conflict":
        message = "Idempotency-Key already used for a different request; nothing was counted"
    elif not message and outcome == "refused":
        n = _int(record.get("requested"))
        what = f"{n:,}" if n is not None else "the request"
        message = f"{what} would pass the {rule} limit; refused whole, nothing was counted"
    whole = fits.of_record(record) if outcome == "refused" else None
    if whole is not None:
        note = whole.text(when)
        message = f"{message.rstrip('.')}. {note[0].upper()}{note[1:]}." if message else note
    return message


def json_text(value: Any) -> str:
    """A structured field as JSON text: JSON stays as it is, a Python repr (older records)
    is read safely and written as JSON; anything else is returned unchanged."""
    text = str(value)
    try:
        json.loads(text)
        return text
    except ValueError:
        pass
    try:
        parsed = ast.literal_eval(text)
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        return text
    if isinstance(parsed, dict | list):
        return json.dumps(parsed, sort_keys=True, ensure_ascii=False)
    return text


def _facts(text: str) -> str:
    """An entity record's facts with their times as ISO 8601 UTC, still JSON."""
    try:
        facts = json.loads(text)
    except ValueError:
        return text
    if not isinstance(facts, dict):
        return text
    for k, v in facts.items():
        ms = _int(v) if k.endswith(FACT_TIMES) and str(v).isdigit() else None
        if ms is not None:
            facts[k] = iso_ms(ms)
    return json.dumps(facts, sort_keys=True, ensure_ascii=False)


def for_people(record: Mapping[str, Any]) -> dict[str, Any]:
    """One record as a row of a CSV or XLSX file: times ISO 8601 UTC, "never fits whole …"
    instead of -1, structured fields JSON, and the message the pages show."""
    row = dict(record)
    for name in TIME_FIELDS:
        ms = _int(row.get(name, ""))
        if ms is not None and ms >= 0:
            row[name] = iso_ms(ms)
    whole = fits.of_record(record)
    if whole is not None:
        row["available_at"] = iso_ms(whole.at_ms) if whole.at_ms is not None else \
            whole.text(iso_ms)
    for name in STRUCTURED:
        if row.get(name):
            row[name] = json_text(row[name])
    if row.get("facts"):
        row["facts"] = _facts(str(row["facts"]))
    message = describe(record)
    if message:
        row["message"] = message
    return row


def rows_for_people(records: Iterable[Mapping[str, Any]]) -> Iterator[dict[str, Any]]:
    """`for_people` over a stream of records, one at a time."""
    for record in records:
        yield for_people(record)
