"""Every refusal and failure gatekeeper can answer, with its HTTP status, exit code and rule.

Web, API and CLI all translate these the same way, so one refusal reads the same everywhere.
Exit codes (SPEC.md): 2 bad input or usage, 3 refused by a quota, 4 refused by policy,
5 store (or the disk under it) unavailable.
"""

from __future__ import annotations

from typing import Any


class GatekeeperError(Exception):
    """Base of every error gatekeeper reports to a person or a script."""

    status: int = 500
    exit_code: int = 1
    code: str = "internal_error"
    rule: str | None = None
    # Set once the refusal has its audit record (R11), so the error handlers do not add a second.
    audited: bool = False

    def __init__(self, message: str, *, rule: str | None = None, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        if rule is not None:
            self.rule = rule
        self.details = details

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body of SPEC.md: {"error", "rule", "message", ...details}."""
        return {"error": self.code, "rule": self.rule, "message": self.message, **self.details}


class ChainBroken(GatekeeperError):
    """The audit log fails verification (R11): a record was edited, removed, reordered or
    inserted, or a checkpoint is not signed by the configured key. Exit 6, apart from every
    refusal, so a scheduled `gatekeeper audit verify` can alert on it alone."""

    exit_code = 6
    code = "audit_chain_broken"
    rule = "R11"


class ConfigError(GatekeeperError):
    """The configuration file or environment is invalid; start-up stops."""

    exit_code = 2
    code = "bad_config"


class BadInput(GatekeeperError):
    """The request itself is malformed; nothing was counted or written."""

    status = 400
    exit_code = 2
    code = "bad_request"


class LineTooLong(BadInput):
    """A line of a file or upload is longer than ``datasets.max_line_mb``; nothing was read
    past it, counted or written."""

    status = 413
    code = "too_large"


class NotFound(GatekeeperError):
    """A named entity, user or share does not exist."""

    status = 404
    exit_code = 2
    code = "not_found"


class Conflict(GatekeeperError):
    """The name is taken, or an idempotency key was reused for a different request."""

    status = 409
    exit_code = 2
    code = "conflict"


class PoolMoved(GatekeeperError):
    """The pool joined another pool (R10) while the request was made; nothing was changed.

    Callers re-read the entity (and so its new pool) and try once more.
    """

    status = 409
    exit_code = 2
    code = "pool_moved"
    rule = "R10"


class InProgress(GatekeeperError):
    """A request with this idempotency key is still being delivered; retry later (R2).

    Nothing is delivered or counted for the retry: the first attempt may still be refunded.
    """

    status = 409
    exit_code = 4
    code = "in_progress"
    rule = "R2"


class Unauthorized(GatekeeperError):
    """No valid credentials were presented."""

    status = 401
    exit_code = 4
    code = "unauthorized"
    rule = "R12"  # credentials: so its audit record (R11) can be found by rule


class Forbidden(GatekeeperError):
    """Refused by policy (R1, R5, R8, role); nothing was counted."""

    status = 403
    exit_code = 4
    code = "forbidden"


class QuotaExceeded(GatekeeperError):
    """Refused by a quota (R2 or R6); nothing was counted."""

    status = 429
    exit_code = 3
    code = "quota_exceeded"


class StoreUnavailable(GatekeeperError):
    """Redis cannot be reached: the answer is no (fail closed)."""

    status = 503
    exit_code = 5
    code = "store_unavailable"


class DatasetStoreUnavailable(GatekeeperError):
    """The object store holding the datasets (`[datasets] dir = "s3://…"`) cannot be reached or
    stopped answering mid-read: said with its URL, never its credentials. The same answer as
    StoreUnavailable (503, exit 5, "store_unavailable") but not a subclass: that one means Redis,
    whose failure a delivery answers differently (a refund kept on disk, its own message); here
    Redis answers, so whatever was reserved is given back at once."""

    status = 503
    exit_code = 5
    code = "store_unavailable"


class Busy(GatekeeperError):
    """Every slot for heavy work (exports, previews that scan, large uploads) is taken and the
    line to wait for one is full, or the wait ran out: nothing was run, counted or recorded.
    Retry after ``retry_after`` seconds (the Retry-After header). Light pages and /healthz
    still answer: the slots leave server threads free for them."""

    status = 503
    exit_code = 5  # the CLI never meets it; with the store's code, "try again later"
    code = "busy"


class InsufficientStorage(GatekeeperError):
    """A file could not be written (the disk or its quota is full, an I/O error): nothing
    half-written is left, and what was reserved for it is given back."""

    status = 507
    exit_code = 5
    code = "insufficient_storage"


class AutomatedHydratedForbidden(Forbidden):
    """Hydrated content was asked for over an automated channel (R1, R5)."""

    code = "automated_hydrated_export_forbidden"
    rule = "R5"
