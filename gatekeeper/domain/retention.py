"""Manifest retention (issue 15 item 1): `gatekeeper store sweep` removes the manifests of
deliveries older than `[manifests] retention_days`, file (or object) and index entry, with one
chained audit record per sweep that removed any (R9: manifests exist to tell recipients of
deletions; past retention nobody is told).

Order, chosen for crashes and for readers: the index entry goes first, then the file. Every
reader (trace, notices, R10 flags) finds manifests through the index, so once the entry is
gone no reader asks for the file; a crash between the two leaves a file no index names — an
orphan the next sweep removes (a file of a month that began before the cutoff, written before
the cutoff, that the index does not name). The other order would leave, after a crash, an
index entry whose file is gone: a reader would take it for a lost manifest, an error. A reader
that listed an entry just before the sweep and opens its file just after finds it gone:
`read_kept` tells that (no longer indexed: swept, or refunded — skip it) from a file missing
while the index still names it (an error, raised).

The same sweep drops the R10 re-delivery findings and the per-entity index entries of
deliveries past retention (domain/redelivery.py), and `spool.sweep` looks in the manifests'
month folders for the temporary files a crash can leave there (no O_TMPFILE).
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, cast

from gatekeeper.domain import manifests as mf
from gatekeeper.ledger import keys
from gatekeeper.ledger.store import failing_closed, text
from gatekeeper.rules.errors import NotFound

if TYPE_CHECKING:
    from gatekeeper.domain.dsstore import ObjectStore
    from gatekeeper.domain.gate import Gate

DAY_MS = 86_400_000
BATCH = 500  # index entries removed per round trip


@dataclass
class Swept:
    """What a sweep removed: manifests past retention (oldest and newest by delivery time),
    orphaned files, and R10 findings of those deliveries."""

    cutoff_ms: int
    removed: int = 0
    oldest: tuple[str, int] | None = None  # (name, delivered at ms)
    newest: tuple[str, int] | None = None
    orphans: list[str] = field(default_factory=list)  # where each was
    findings: int = 0

    def to_dict(self) -> dict[str, Any]:
        def at(x: tuple[str, int] | None) -> dict[str, Any] | None:
            return None if x is None else {"manifest": x[0], "delivered_ms": x[1]}
        return {"cutoff_ms": self.cutoff_ms, "removed": self.removed, "oldest": at(self.oldest),
                "newest": at(self.newest), "orphans_removed": self.orphans,
                "r10_findings_removed": self.findings}


def cutoff_ms(gate: Gate) -> int:
    """Deliveries before this instant are past retention."""
    return gate.clock.now_ms() - gate.config.manifest_retention_days * DAY_MS


def month_of(at_ms: int) -> str:
    return f"{datetime.fromtimestamp(at_ms / 1000, UTC):%Y-%m}"


def read_kept(store: mf.Manifests, name: str) -> mf.Decoded | None:
    """The manifest `name`, or None when it was swept (or refunded) after the caller listed it:
    its index entry went first. A file missing while the index still names it raises NotFound."""
    try:
        return store.read(name)
    except NotFound:
        if not store.indexed(name):
            return None
        raise


def sweep(gate: Gate, *, actor: str, channel: str) -> Swept:
    """Remove every manifest delivered before the cutoff, index entry first; then orphans."""
    store, cut = gate.manifests, cutoff_ms(gate)
    done = Swept(cut)
    try:
        while True:
            with failing_closed():
                batch = gate.client.zrangebyscore(keys.MANIFESTS, "-inf", f"({cut}",
                                                  start=0, num=BATCH, withscores=True)
            if not batch:
                break
            named = [(text(n), int(at)) for n, at in cast("list[tuple[bytes, float]]", batch)]
            store.unindex([n for n, _ in named])  # the index entries and their spans
            # Out of the index: no reader is sent to them any more (a file left is an orphan).
            done.removed += len(named)
            done.oldest = done.oldest or named[0]
            done.newest = named[-1]
            for name, _at in named:
                _remove(store, name)
        done.orphans = _orphans(store, cut)
        from gatekeeper.domain import redelivery
        done.findings = redelivery.forget_before(gate, cut)
    finally:
        if done.removed or done.orphans:
            _audit(gate, done, actor, channel)
    return done


def _remove(store: mf.Manifests, name: str) -> None:
    month, delivery = store._split(name)
    if store.directory is not None:
        with contextlib.suppress(FileNotFoundError):
            (store.directory / month / (delivery + mf.SUFFIX)).unlink()
    else:
        store._store(month).remove(delivery + mf.SUFFIX)


def _orphans(store: mf.Manifests, cut: int) -> list[str]:
    """Manifest files of months begun before the cutoff, written before it, that the index
    does not name (a crash between a sweep's two steps, a refunded delivery, a crash before a
    manifest was indexed); a month folder left empty goes too. Written before the cutoff:
    a manifest being stored now is not indexed yet either."""
    last = month_of(cut)
    removed: list[str] = []
    for month in _months(store):
        if month > last:
            continue
        files = _files(store, month)
        names = [f"{month}/{f[:-len(mf.SUFFIX)]}" for f, _ in files]
        with failing_closed():
            pipe = store.client.pipeline(transaction=False)
            for n in names:
                pipe.zscore(keys.MANIFESTS, n)
            scores = pipe.execute() if names else []
        for (_file, mtime_ms), name, score in zip(files, names, scores, strict=True):
            if score is None and mtime_ms < cut:
                _remove(store, name)
                removed.append(store.where(name))
        if store.directory is not None:
            with contextlib.suppress(OSError):  # not empty: kept
                (store.directory / month).rmdir()
    return removed


def _root(store: mf.Manifests) -> ObjectStore:
    from gatekeeper.domain.dsstore import ObjectStore

    assert store.url is not None
    base, _, query = store.url.partition("?")
    return ObjectStore(f"{base.rstrip('/')}/manifests" + (f"?{query}" if query else ""),
                       store.client)


def _months(store: mf.Manifests) -> list[str]:
    if store.directory is not None:
        try:
            entries = list(os.scandir(store.directory))
        except FileNotFoundError:
            return []
        return sorted(e.name for e in entries if mf.MONTH_RE.fullmatch(e.name) and e.is_dir())
    import pyarrow.fs as pafs

    root = _root(store)
    with root._reaching():
        infos = root.fs.get_file_info(pafs.FileSelector(root.base, allow_not_found=True))
    return sorted(name for i in infos
                  if i.type == pafs.FileType.Directory
                  and mf.MONTH_RE.fullmatch(name := i.path.rsplit("/", 1)[-1]))


def _files(store: mf.Manifests, month: str) -> list[tuple[str, int]]:
    """(file name, modified ms) of the manifests in a month folder."""
    if store.directory is not None:
        out = []
        with contextlib.suppress(FileNotFoundError):
            for e in os.scandir(store.directory / month):
                if _is_manifest(e.name):
                    with contextlib.suppress(FileNotFoundError):
                        out.append((e.name, e.stat().st_mtime_ns // 1_000_000))
        return out
    import pyarrow.fs as pafs

    sub = store._store(month)
    with sub._reaching():
        infos = sub.fs.get_file_info(pafs.FileSelector(sub.base, allow_not_found=True))
    return [(name, (i.mtime_ns or 0) // 1_000_000) for i in infos
            if i.type == pafs.FileType.File and _is_manifest(name := i.path.rsplit("/", 1)[-1])]


def _is_manifest(file: str) -> bool:
    return file.endswith(mf.SUFFIX) and bool(mf.DELIVERY_RE.fullmatch(file[:-len(mf.SUFFIX)]))


def _audit(gate: Gate, done: Swept, actor: str, channel: str) -> None:
    def when(x: tuple[str, int] | None) -> str:
        return "" if x is None else f"{x[0]} ({_utc(x[1])})"
    days = gate.config.manifest_retention_days
    gate.ledger.record(
        keys.placeholder(None), keys.SYS_AUDIT, mode="audit", fields={},
        audit={"actor": actor, "channel": channel, "kind": "manifests.swept",
               "outcome": "removed", "rule": "R9", "count": str(done.removed),
               "orphans": str(len(done.orphans)), "oldest": when(done.oldest),
               "newest": when(done.newest),
               "retention_days": str(days),
               "message": f"{done.removed:,} delivery manifest(s) delivered before "
                          f"{_utc(done.cutoff_ms)} removed (retention {days} days)"
                          + (f", and {len(done.orphans):,} file(s) no index named"
                             if done.orphans else "")})


def _utc(at_ms: int) -> str:
    return f"{datetime.fromtimestamp(at_ms / 1000, UTC):%Y-%m-%d %H:%M} UTC"


def month_dirs(gate: Gate) -> list[Path]:
    """The manifests' month folders of a directory store (for spool.sweep's leftovers)."""
    store = gate.manifests
    if store.directory is None:
        return []
    return [store.directory / m for m in _months(store)]
