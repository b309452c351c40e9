"""Users of the service: their entity, role, password and API tokens (stored only as hashes).

Passwords are hashed with werkzeug's scrypt; API tokens are 256-bit random secrets stored as
SHA-256 digests (a fast hash suffices for a secret that cannot be guessed). Both are shown once.
A token's id is the first 12 hex digits of its digest: enough to name it, useless to use it.

Each user carries a session generation (`session`): web sessions remember it, and a sign-out,
a password change, a role change or disabling the user draws a new one, which ends every
session of that user at its next request (R12).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from dataclasses import dataclass
from typing import Any

import redis

from gatekeeper.domain.entities import Entities, check_name
from gatekeeper.ledger import keys
from gatekeeper.ledger.layout import index_pool_key
from gatekeeper.ledger.ledger import Ledger, iso
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules import policy, roles
from gatekeeper.rules.errors import BadInput, Conflict, NotFound, Unauthorized

TOKEN_PREFIX = "gk."
MIN_PASSWORD = 12
TOKEN_ID_LEN = 12
MAX_FAILURES = 5  # password checks per user name per LOCKOUT_S before a lockout
LOCKOUT_S = 900


# werkzeug's scrypt, imported on first use: werkzeug.security loads werkzeug's whole HTTP toolkit
# (~5 MB), which a CLI share or export never needs (bench/ids.py's 40 MB budget).
def generate_password_hash(password: str) -> str:
    from werkzeug.security import generate_password_hash as hash_password

    return hash_password(password)


def check_password_hash(stored: str, password: str) -> bool:
    from werkzeug.security import check_password_hash as check

    return check(stored, password)


@dataclass(frozen=True)
class User:
    name: str
    entity: str
    root: str
    role: str
    created_at_ms: int
    terms_version: str | None
    terms_at_ms: int | None
    disabled: bool = False
    session: str = ""  # the session generation; a new one ends the user's web sessions

    @property
    def accepted_terms(self) -> bool:
        return self.terms_at_ms is not None

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "entity": self.entity, "role": self.role,
                "disabled": self.disabled, "created_at": iso(self.created_at_ms),
                "terms": None if self.terms_at_ms is None else {
                    "version": self.terms_version, "at": iso(self.terms_at_ms)}}


def _check_password_length(password: str) -> None:
    if len(password) < MIN_PASSWORD:
        raise BadInput(f"R12: a password needs at least {MIN_PASSWORD} characters",
                       rule="R12")


def _token_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Users:
    """Reads and changes users and their tokens; every change is audited in the same script."""

    def __init__(self, client: redis.Redis, ledger: Ledger, entities: Entities) -> None:
        self.client = client
        self.ledger = ledger
        self.entities = entities
        self._dummy: str | None = None

    def _locate(self, name: str) -> tuple[str, str]:
        with failing_closed():
            entity = self.client.hget(keys.USERS, name)
        if entity is None:
            raise NotFound(f"no user named {name!r}")
        return text(entity), self.entities.root_of(text(entity))

    def _hash(self, name: str) -> tuple[dict[str, str], str]:
        _, root = self._locate(name)
        with failing_closed():
            raw = self.client.hgetall(keys.user(root, name))
        if not raw:
            raise NotFound(f"no user named {name!r}")
        return {text(k): text(v) for k, v in raw.items()}, root

    def get(self, name: str) -> User:
        h, root = self._hash(name)
        return User(name=h["name"], entity=h["entity"], root=root, role=h["role"],
                    created_at_ms=int(h["created_at"]),
                    terms_version=h.get("terms_version") or None,
                    terms_at_ms=int(h["terms_at"]) if h.get("terms_at") else None,
                disabled=h.get("disabled") == "1", session=h.get("session", ""))

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with failing_closed():
            names = sorted(text(n) for n in self.client.hkeys(keys.USERS))
        found = []
        for name in names:
            try:
                found.append(self.get(name))
            except NotFound:
                continue  # a name claimed by an add that did not finish
        return found

    def add(self, name: str, *, entity: str, role: str, password: str, actor: str,
            channel: str) -> User:
        check_name(name, "user")
        if role not in roles.ROLES:
            raise BadInput(f"role {role!r} is not one of {', '.join(roles.ROLES)}")
        _check_password_length(password)
        root = self.entities.get(entity).root
        with failing_closed():
            claimed = self.client.hsetnx(keys.USERS, name, entity)
            if not claimed and self.client.exists(keys.user(root, name)):
                raise Conflict(f"a user named {name!r} already exists")
        fields = {"name": name, "entity": entity, "role": role,
                  "session": secrets.token_hex(8),
                  "password_hash": generate_password_hash(password),
                  "created_at": "@now", "created_by": actor}
        self._record(root, keys.user(root, name), "create", fields, actor, channel, name,
                     entity, "user.add", "R12", f"role={role}")
        return self.get(name)

    def accept_terms(self, name: str, *, actor: str, channel: str) -> User:
        """R8: the user attests to X's terms before receiving any content."""
        user = self.get(name)
        fields = {"terms_version": policy.TERMS_VERSION, "terms_at": "@now"}
        self._record(user.root, keys.user(user.root, name), "update", fields, actor, channel,
                     name, user.entity, "user.terms", "R8",
                     f"accepted {', '.join(policy.TERMS)} ({policy.TERMS_VERSION})")
        return self.get(name)

    def check_password(self, name: str, password: str) -> User:
        """The user, if the password is right; Unauthorized otherwise (same answer either way).

        An unknown name is checked against a dummy hash of the same method, so it costs the
        same time as a wrong password: the answer's timing does not say which names exist.
        """
        try:
            h, _ = self._hash(name)
        except NotFound:
            h = None
        stored = h["password_hash"] if h is not None else self._dummy_hash()
        if not check_password_hash(stored, password) or h is None:
            raise Unauthorized("wrong user name or password")
        user = self.get(name)
        if user.disabled:
            raise Unauthorized("R12: this user is disabled; ask an admin", rule="R12")
        return user

    # --- the lifecycle: each change is audited, and each ends the user's sessions -----------

    def _change(self, name: str, fields: dict[str, str], actor: str, channel: str, kind: str,
                message: str) -> User:
        user = self.get(name)
        fields = {**fields, "session": secrets.token_hex(8)}
        self._record(user.root, keys.user(user.root, name), "update", fields, actor, channel,
                     name, user.entity, kind, "R12", message)
        return self.get(name)

    def _keep_an_admin(self, name: str) -> None:
        """R12: someone must remain who can administer; the last enabled admin stays one.

        Checked before the change, not inside its script: users live in their pools' slots, so
        no one script sees them all. Two admins disabling each other at the same instant could
        both pass; `gatekeeper user add --role admin` on the server still recovers from that.
        """
        user = self.get(name)
        if user.role not in roles.MAY_ADMINISTER or user.disabled:
            return
        if not any(u.name != name and u.role in roles.MAY_ADMINISTER and not u.disabled
                   for u in self.list_users()):
            raise Conflict(f"R12: {name} is the last enabled admin; add or enable another "
                           "admin first, so that someone can still administer users",
                           rule="R12")

    def set_disabled(self, name: str, disabled: bool, *, actor: str, channel: str) -> User:
        """Disable (or enable again) a user: no sign-in, no token, no session while disabled."""
        if disabled:
            self._keep_an_admin(name)
        return self._change(name, {"disabled": "1" if disabled else "0"}, actor, channel,
                            "user.disable" if disabled else "user.enable",
                            "disabled" if disabled else "enabled")

    def set_role(self, name: str, role: str, *, actor: str, channel: str) -> User:
        if role not in roles.ROLES:
            raise BadInput(f"role {role!r} is not one of {', '.join(roles.ROLES)}",
                           field="role", rule="R12")
        before = self.get(name).role
        if role not in roles.MAY_ADMINISTER:
            self._keep_an_admin(name)
        return self._change(name, {"role": role}, actor, channel, "user.role",
                            f"role {before} -> {role}")

    def set_password(self, name: str, password: str, *, actor: str, channel: str) -> User:
        _check_password_length(password)
        return self._change(name, {"password_hash": generate_password_hash(password)}, actor,
                            channel, "user.password", "password changed")

    def end_sessions(self, name: str, *, actor: str, channel: str) -> User:
        """Sign-out: every web session of the user ends, here and in other browsers."""
        return self._change(name, {}, actor, channel, "user.logout", "sessions ended")

    def list_tokens(self, name: str | None = None) -> list[dict[str, Any]]:
        """Live tokens (of one user or all): owner, id, prefix, created, last used."""
        rows = []
        for user in [self.get(name)] if name else self.list_users():
            with failing_closed():
                pipe = self.client.pipeline(transaction=False)
                pipe.hgetall(keys.tokens(user.root, user.name))
                pipe.hkeys(keys.tokens_revoked(user.root, user.name))
                pipe.hgetall(keys.tokens_used(user.root, user.name))
                created, revoked, used = pipe.execute()
            gone = {d.decode() for d in revoked}
            for digest, at in sorted(created.items(), key=lambda kv: int(kv[1])):
                d = digest.decode()
                if d in gone:
                    continue
                last = used.get(digest)
                rows.append({"user": user.name, "id": d[:TOKEN_ID_LEN],
                             "prefix": f"{TOKEN_PREFIX}{user.name}.",
                             "created_at": iso(int(at)),
                             "last_used": iso(int(last)) if last else None})
        return rows

    def revoke_token(self, token_id: str, *, actor: str, channel: str,
                     owner: str | None = None) -> dict[str, Any]:
        """Revoke the live token whose id (as `list_tokens` shows it) is `token_id`; it is
        refused from the next request on."""
        token_id = token_id.strip().lower()
        if len(token_id) < TOKEN_ID_LEN or not all(c in "0123456789abcdef" for c in token_id):
            raise BadInput(f"token id {token_id!r} is not the {TOKEN_ID_LEN} hex digits "
                           "`gatekeeper token list` shows", field="token_id", rule="R12")
        for user in [self.get(owner)] if owner else self.list_users():
            with failing_closed():
                stored = [text(d) for d in self.client.hkeys(keys.tokens(user.root,
                                                                            user.name))]
                for digest in stored:
                    if not digest.startswith(token_id):
                        continue
                    if self.client.hexists(keys.tokens_revoked(user.root, user.name), digest):
                        break
                    self._record(user.root, keys.tokens_revoked(user.root, user.name), "set",
                                 {digest: "@now"}, actor, channel, user.name, user.entity,
                                 "token.revoke", "R12",
                                 f"token sha256:{digest[:TOKEN_ID_LEN]}… revoked")
                    return {"user": user.name, "id": digest[:TOKEN_ID_LEN], "revoked": True}
        raise NotFound(f"no live API token with id {token_id!r} (see `gatekeeper token list`)")

    def _dummy_hash(self) -> str:
        # Made on first use (not at start-up: every CLI command opens a Users) with the same
        # function and defaults as add(), so it costs what a real user's check costs.
        if self._dummy is None:
            self._dummy = generate_password_hash(secrets.token_urlsafe(24))
        return self._dummy

    def sign_in(self, name: str, password: str) -> User:
        """check_password behind a lockout: at most MAX_FAILURES checks per name per LOCKOUT_S.

        Each attempt takes its number atomically (INCR) before the slow hash, so N
        simultaneous attempts run at most MAX_FAILURES hash checks, not N (a read-then-count
        let every attempt that read the count before the first failure was counted through).
        """
        key = keys.login_failures(name or "-")
        with failing_closed():
            # One MULTI: the counter is born with its expiry, so a crash cannot leave it
            # without one (EXPIRE ... NX needs Redis 7).
            pipe = self.client.pipeline()
            pipe.set(key, 0, ex=LOCKOUT_S, nx=True)
            pipe.incr(key)
            pipe.ttl(key)
            _, attempt, ttl = pipe.execute()
        if attempt > MAX_FAILURES:
            raise Unauthorized(f"too many failed sign-ins for this name; try again in "
                               f"{(max(1, ttl) + 59) // 60} minutes")
        try:
            user = self.check_password(name, password)
        except Unauthorized:
            with failing_closed():
                self.client.expire(key, LOCKOUT_S)  # each failure restarts the clock
            raise
        with failing_closed():
            # A success proves the password: earlier failures no longer count against it.
            self.client.delete(key)
        return user

    def create_token(self, name: str, *, actor: str, channel: str) -> str:
        """A new API token for `name`, returned once; only its SHA-256 is stored (R12)."""
        user = self.get(name)
        token = f"{TOKEN_PREFIX}{name}.{secrets.token_urlsafe(32)}"
        digest = _token_digest(token)
        self._record(user.root, keys.tokens(user.root, name), "set", {digest: "@now"}, actor,
                     channel, name, user.entity, "token.create", "R12",
                     f"token sha256:{digest[:12]}… created")
        return token

    def user_for_token(self, token: str) -> User:
        """The user a bearer token belongs to; Unauthorized if it is not a live token."""
        name, _, secret = token.removeprefix(TOKEN_PREFIX).rpartition(".")
        if not token.startswith(TOKEN_PREFIX) or not name or not secret:
            raise Unauthorized("malformed API token")
        try:
            user = self.get(name)
        except NotFound:
            raise Unauthorized("unknown API token") from None
        digest = _token_digest(token)
        with failing_closed():
            stored = self.client.hkeys(keys.tokens(user.root, name))
        if not any(hmac.compare_digest(digest, text(s)) for s in stored):
            raise Unauthorized("unknown API token")
        with failing_closed():
            if self.client.hexists(keys.tokens_revoked(user.root, name), digest):
                raise Unauthorized("R12: this API token was revoked", rule="R12")
            if user.disabled:
                raise Unauthorized("R12: the user of this API token is disabled", rule="R12")
            # Not audited: when a token was last used is an operator's hint, not a decision.
            pipe = self.client.pipeline()  # the hash and its pool's index entry, together
            pipe.hset(keys.tokens_used(user.root, name), digest, str(int(time.time() * 1000)))
            index_pool_key(pipe, keys.tokens_used(user.root, name))
            pipe.execute()
        return user

    def _record(self, root: str, hash_key: str, mode: str, fields: dict[str, Any], actor: str,
                channel: str, recipient: str, entity: str, kind: str, rule: str,
                message: str) -> None:
        self.ledger.record(
            hash_key, keys.audit(root), mode=mode, fields=fields,
            audit={"actor": actor, "entity": entity, "recipient": recipient,
                   "channel": channel, "kind": kind, "outcome": "changed", "rule": rule,
                   "message": message},
            subject=f"user {recipient!r}",
        )
