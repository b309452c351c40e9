"""Signed checkpoints of the audit chains (R11), written outside Redis.

A checkpoint pins, for every audit stream, (stream, last record ID, seq, head hash), signed with
an Ed25519 key in the format of a C2SP signed note (https://c2sp.org/signed-note): a text body,
a blank line, then a signature line ``— NAME BASE64(key id ‖ signature)``, the key id being the
first 4 bytes of SHA-256(NAME ‖ "\\n" ‖ 0x01 ‖ public key). A chain shows an edited, removed or
inserted record by itself; what it cannot show is a tail cut off together with its head — a
checkpoint can (`chain.verify` with `pinned`), and one signed by another key is refused.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import hashlib
import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import redis
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gatekeeper.config import AuditConfig
from gatekeeper.domain import spool
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger import chain, clock, keys
from gatekeeper.ledger.store import failing_closed
from gatekeeper.rules.errors import BadInput, ChainBroken, ConfigError, GatekeeperError

NAME = "gatekeeper-audit"  # the key name in signature lines and the printed public key
ORIGIN = "gatekeeper audit log checkpoint"  # the body's first line
ALG_ED25519 = b"\x01"
LINE_RE = re.compile(r"^stream (\S+) (\d+-\d+) (\d+) ([0-9a-f]{40})$")
SIG_RE = re.compile(r"^\u2014 (\S+) ([A-Za-z0-9+/=]+)$")


def key_id(public: Ed25519PublicKey) -> bytes:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(NAME.encode() + b"\n" + ALG_ED25519 + raw).digest()[:4]


def vkey(public: Ed25519PublicKey) -> str:
    """The public key as a C2SP verifier key: NAME+KEYID+BASE64(0x01 ‖ key)."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return f"{NAME}+{key_id(public).hex()}+{base64.b64encode(ALG_ED25519 + raw).decode()}"


def parse_vkey(text: str) -> Ed25519PublicKey:
    """A verifier key as `vkey` prints it (what an auditor is given)."""
    parts = text.strip().split("+", 2)  # base64 may hold "+" too
    try:
        raw = base64.b64decode(parts[2], validate=True) if len(parts) == 3 else b""
    except binascii.Error:
        raw = b""
    if parts[0] != NAME or len(raw) != 33 or raw[:1] != ALG_ED25519:
        raise BadInput(f"{text.strip()!r} is not a {NAME} public key (as `gatekeeper audit "
                       "public-key` prints it)", rule="R11", field="public_key")
    public = Ed25519PublicKey.from_public_bytes(raw[1:])
    if key_id(public).hex() != parts[1]:
        raise BadInput(f"public key {text.strip()!r}: its key id does not match the key",
                       rule="R11", field="public_key")
    return public


def generate(out: Path) -> Ed25519PublicKey:
    """Write a new signing key (PEM, PKCS#8) to `out`, created 0600; refuse to overwrite."""
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    try:
        fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise BadInput(f"{out}: exists; a signing key is never overwritten (checkpoints "
                       "signed with it would no longer verify)", rule="R11") from None
    except OSError as exc:
        raise BadInput(f"{out}: cannot write the key ({exc.strerror})", rule="R11") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(pem)
    return private.public_key()


def load_key(cfg: AuditConfig) -> Ed25519PrivateKey:
    """The configured signing key: audit.signing_key_file, else the variable
    audit.signing_key_env (PEM, or the 32-byte seed in base64). None configured is an error
    that says how to make one."""
    source: str
    if cfg.signing_key_file is not None:
        source = f"audit.signing_key_file {cfg.signing_key_file}"
        try:
            data = cfg.signing_key_file.read_bytes()
        except OSError as exc:
            raise ConfigError(f"{source}: cannot read the signing key ({exc.strerror})",
                              rule="R11") from None
    elif os.environ.get(cfg.signing_key_env):
        source = f"${cfg.signing_key_env} (audit.signing_key_env)"
        data = os.environ[cfg.signing_key_env].encode()
    else:
        raise ConfigError(
            "no audit signing key: make one with `gatekeeper audit keygen --out FILE` and name "
            f"it as audit.signing_key_file in config.toml, or put it in ${cfg.signing_key_env} "
            "(audit.signing_key_env)", rule="R11")
    try:
        if data.lstrip().startswith(b"-----BEGIN"):
            key = serialization.load_pem_private_key(data, password=None)
        else:
            key = Ed25519PrivateKey.from_private_bytes(base64.b64decode(data.strip(),
                                                                        validate=True))
    except (ValueError, TypeError, binascii.Error):
        raise ConfigError(f"{source}: not an Ed25519 private key (PEM or base64 seed)",
                          rule="R11") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ConfigError(f"{source}: not an Ed25519 key", rule="R11")
    return key


@dataclass(frozen=True)
class Head:
    stream: str
    last_id: str
    seq: int
    hash: str


@dataclass(frozen=True)
class Checkpoint:
    path: Path | None
    time: str
    heads: list[Head]
    text: str


def heads(client: redis.Redis) -> list[Head]:
    """Every chained stream's head, as its chain-head hash holds it (written by each append)."""
    names = chain.streams(client)
    with failing_closed():
        pipe = client.pipeline(transaction=False)
        for s in names:
            pipe.hmget(keys.chain_of(s), "id", "seq", "hash")
        rows = pipe.execute()
    return [Head(s, i.decode(), int(q), h.decode())
            for s, (i, q, h) in zip(names, rows, strict=True) if i is not None]


def body(time: str, hs: list[Head]) -> str:
    lines = [ORIGIN, f"time {time}"]
    lines += [f"stream {h.stream} {h.last_id} {h.seq} {h.hash}" for h in hs]
    return "\n".join(lines) + "\n"


def sign(text: str, key: Ed25519PrivateKey) -> str:
    sig = key.sign(text.encode())
    line = base64.b64encode(key_id(key.public_key()) + sig).decode()
    return f"{text}\n\u2014 {NAME} {line}\n"


def write(client: redis.Redis, key: Ed25519PrivateKey, directory: Path) -> Checkpoint:
    """Sign the current heads and write them to DIRECTORY/checkpoint-TIME.txt, atomically."""
    ms = clock.now_ms(client)
    at = datetime.fromtimestamp(ms / 1000, UTC)
    stamp = at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
    hs = heads(client)
    text = sign(body(stamp, hs), key)
    path = directory / f"checkpoint-{at.strftime('%Y%m%dT%H%M%S')}{ms % 1000:03d}Z.txt"
    try:
        directory.mkdir(parents=True, exist_ok=True)
        spool.publish(path, lambda fh: fh.write(text.encode()))
    except OSError as exc:
        raise BadInput(f"{directory}: cannot write the checkpoint ({exc.strerror})",
                       rule="R11") from None
    return Checkpoint(path, stamp, hs, text)


def read(path: Path, public: Ed25519PublicKey) -> Checkpoint:
    """Parse one checkpoint file and check it is signed by `public`; ChainBroken if not."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ChainBroken(f"{path}: cannot read the checkpoint ({exc})") from None
    note, sep, sigs = text.rpartition("\n\n")
    if not sep:
        raise ChainBroken(f"{path}: not a signed checkpoint (no signature after a blank line)")
    note += "\n"
    want = key_id(public)
    found: list[str] = []
    for line in sigs.splitlines():
        m = SIG_RE.match(line)
        if m is None:
            continue
        raw = base64.b64decode(m.group(2))
        found.append(raw[:4].hex())
        if m.group(1) != NAME or raw[:4] != want:
            continue
        try:
            public.verify(raw[4:], note.encode())
        except InvalidSignature:
            raise ChainBroken(f"{path}: the signature does not verify: the checkpoint was "
                              "altered after it was signed") from None
        break
    else:
        raise ChainBroken(f"{path}: not signed by the configured key (key id {want.hex()}; "
                          f"signed by {', '.join(found) or 'no key'}): refused")
    lines = note.splitlines()
    if not lines or lines[0] != ORIGIN or len(lines) < 2 or not lines[1].startswith("time "):
        raise ChainBroken(f"{path}: signed, but not a {ORIGIN!r}")
    hs = []
    for n, line in enumerate(lines[2:], start=3):
        m = LINE_RE.match(line)
        if m is None:
            raise ChainBroken(f"{path}: line {n}: not a stream head: {line!r}")
        hs.append(Head(m.group(1), m.group(2), int(m.group(3)), m.group(4)))
    return Checkpoint(path, lines[1][5:], hs, text)


def read_dir(directory: Path, public: Ed25519PublicKey) -> list[Checkpoint]:
    """Every checkpoint in a directory, oldest first; each must be signed by `public`."""
    if not directory.is_dir():
        raise BadInput(f"{directory}: no such checkpoint directory", rule="R11")
    return [read(p, public) for p in sorted(directory.glob("checkpoint-*.txt"))]


def pinned(found: list[Checkpoint]) -> dict[str, dict[int, str]]:
    """stream -> seq -> hash, from every checkpoint (two that disagree are both kept as the
    first seen; the chain check then names the record)."""
    out: dict[str, dict[int, str]] = {}
    for cp in found:
        for h in cp.heads:
            out.setdefault(h.stream, {}).setdefault(h.seq, h.hash)
    return out


def latest(directory: Path) -> Path | None:
    """The newest checkpoint file in a directory (by name: its time), or None."""
    found = sorted(directory.glob("checkpoint-*.txt")) if directory.is_dir() else []
    return found[-1] if found else None


def after_report(gate: Gate) -> str:
    """Write a checkpoint for a monthly report and describe it in one line for the PDF, so the
    report pins the state of the log it was made from; or say why there is none."""
    cfg = gate.config.audit
    try:
        key = load_key(cfg)
        cp = write(gate.client, key, cfg.checkpoint_dir)
    except GatekeeperError as exc:
        return f"none written: {exc.message}"
    digest = hashlib.sha256(cp.text.encode()).hexdigest()
    return (f"{cp.path.name if cp.path else '-'} at {cp.time}: {len(cp.heads)} streams, "
            f"signed by {vkey(key.public_key()).split('+')[1]}, sha256 {digest[:32]}")


def in_background(gate: Gate) -> threading.Thread | None:
    """A server's daemon thread writing a checkpoint at start and every
    audit.checkpoint_minutes (None when that is 0). ConfigError when no key is configured."""
    cfg = gate.config.audit
    if cfg.checkpoint_minutes <= 0:
        return None
    key = load_key(cfg)

    def loop() -> None:
        stop = threading.Event()
        while True:
            with contextlib.suppress(Exception):  # a store away now is back at the next one
                write(gate.client, key, cfg.checkpoint_dir)
            if stop.wait(cfg.checkpoint_minutes * 60):
                return

    thread = threading.Thread(target=loop, name="gatekeeper-checkpoint", daemon=True)
    thread.start()
    return thread
