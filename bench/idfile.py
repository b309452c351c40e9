"""Benchmark an ID file of 1,500,000 IDs: validated and written, and uploaded to the API.

Ours is what a share does with an uploaded list or an ID file, minus the ledger: validate it
(`select_id_file`: blocks of whole lines checked at once, `gatekeeper.domain.idlists`), drop
R9 IDs and repeats (`Selection.distinct`: numpy over the spool for a list this large), spool
it, then `write_file` copies the first N IDs into an unnamed file beside --out, fsyncs it and
links it into place. Beside it, the same with the per-line rules this replaced (`select_ids`
over the line reader: strip, regex and int per line, ~1.4 µs an ID), validation alone both
ways, per ID, and for reference the obvious writers of a list already in memory: `write` per
line and one ``"\\n".join``, each fsynced. Each of these sides runs in a fresh interpreter
(bench/common.py `run_fresh`), so what it imports on the way (numpy) is in its time.

End to end: the same file POSTed to a real `gatekeeper serve` (waitress, loopback, an
embedded store; as bench/ids.py starts it) at ``/api/v1/shares``, timed from the request's
first byte to the response's last, over a connection opened beforehand; the IDs must come
back whole.

Every side runs ``--rounds`` times (3), the order reversed every other round; the table shows
medians and lists every run, with the load average beside them. Goals: validation + write
<= 1 s for 1.5M IDs; validation <= 0.15 µs an ID; the upload end to end <= 2 s; the same
bytes as the per-line rules. Exits 1 if a goal is missed.

Run from the repository root::

    python bench/idfile.py
"""

from __future__ import annotations

import argparse
import os
import platform
import secrets
import shlex
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # this checkout's package, whatever is installed
    sys.path.insert(0, str(ROOT))

from common import machine_line, print_goals, print_table, run_fresh  # noqa: E402

from gatekeeper.domain import idlists, lines  # noqa: E402
from gatekeeper.domain.shares import Selection, select_id_file, select_ids, write_file  # noqa: E402
from gatekeeper.rules.r9 import Deleted  # noqa: E402

FIRST = 1_460_000_000_000_000_000  # 19-digit snowflakes, as real Post IDs are
NOTHING = Deleted(0, frozenset(), frozenset())
TOTAL_S, PER_ID_US, UPLOAD_S = 1.0, 0.15, 2.0


# --- the sides, each run by `side` in a fresh interpreter ----------------------------------------


def ours(src: Path, work: Path) -> None:  # what `gatekeeper share --ids` does, the ledger aside
    with select_id_file(src, "posts", NOTHING) as sel:
        write_file(work / "ours.txt", sel, sel.count)


def per_line(src: Path, work: Path) -> None:  # the same with the per-line rules (before)
    with open(src, "rb") as fh, select_ids(lines.read(fh.read, str(src)), str(src), "posts",
                                           NOTHING) as sel:
        write_file(work / "per-line.txt", sel, sel.count)


def validate_blocks(src: Path, work: Path) -> None:  # checks, spool and digest; no repeats pass
    with open(src, "rb") as fh, Selection(str(src)) as sel:
        check = idlists.Checker(sel, str(src), frozenset())
        chunks = iter(lambda: fh.read(lines.CHUNK), b"")
        for number, block, count in idlists.blocks(chunks, str(src)):
            check.block(number, block, count)
        check.finish()


def validate_lines(src: Path, work: Path) -> None:
    with open(src, "rb") as fh, Selection(str(src)) as sel:
        check = idlists.Checker(sel, str(src), frozenset())
        for number, raw in enumerate(lines.read(fh.read, str(src)), 1):
            check.line(number, raw)
        check.finish()


def write_lines(ids: list[str], work: Path) -> None:
    with open(work / "write.txt", "w") as out:
        for i in ids:
            out.write(i + "\n")
        out.flush()
        os.fsync(out.fileno())


def joined(ids: list[str], work: Path) -> None:
    with open(work / "joined.txt", "w") as out:
        out.write("\n".join(ids) + "\n")
        out.flush()
        os.fsync(out.fileno())


FROM_FILE: dict[str, tuple[str, Callable[[Path, Path], None]]] = {
    "ours": ("gatekeeper: select_id_file (blocks) + write_file", ours),
    "per_line": ("the per-line rules (before) + write_file", per_line),
    "v_blocks": ("validation alone, blocks (check, spool, digest)", validate_blocks),
    "v_lines": ("validation alone, per line (before)", validate_lines),
}
IN_MEMORY: dict[str, tuple[str, Callable[[list[str], Path], None]]] = {
    "write_lines": ("IDs in memory: write() per line, fsync", write_lines),
    "joined": ("IDs in memory: one '\\n'.join, fsync", joined),
}
UPLOAD = "POST /api/v1/shares to `gatekeeper serve`, end to end"
UPLOAD_SMALL = "the same with a tenth of the IDs"
FLAT_MB = 30.0  # bench/ids.py's: the server's peak with all the IDs vs a tenth


def side(key: str, src: str, work: str) -> dict:
    """One side, timed, in this (fresh) interpreter: what it imports on the way is in it."""
    if key in IN_MEMORY:
        ids = Path(src).read_text().split("\n")[:-1]  # not timed: the list is in memory
        t0 = time.perf_counter()
        IN_MEMORY[key][1](ids, Path(work))
    else:
        t0 = time.perf_counter()
        FROM_FILE[key][1](Path(src), Path(work))
    return {"seconds": time.perf_counter() - t0}


# --- the upload ----------------------------------------------------------------------------------


class Server:
    """A real `gatekeeper serve` on loopback over an embedded store in `run_dir`, with an
    entity exempt from R2 (R3) so 1,500,000 IDs fit, a data-team user and its API token."""

    def __init__(self, run_dir: Path) -> None:
        import ids as bench_ids  # the server bench/ids.py uses: only this process needs it

        from gatekeeper import config as config_mod
        from gatekeeper.domain.gate import Gate

        self.bench_ids, self.run_dir = bench_ids, run_dir
        self.config = run_dir / "config.toml"
        self.config.write_text('[redis]\ndata_dir = "var"\n[server]\nmax_upload_mb = 100\n')
        gate = Gate(config_mod.load(self.config))
        entity, user = bench_ids.ENTITY, bench_ids.USER
        gate.entities.add(entity, kind="academic", research=True, parent=None, actor="bench",
                          channel="cli")
        gate.entities.accept_terms(entity, by="Bench Signatory", actor="bench", channel="cli")
        gate.users.add(user, entity=entity, role="data", password=secrets.token_urlsafe(16),
                       actor="bench", channel="cli")
        self.token = gate.users.create_token(user, actor="bench", channel="cli")
        self.proc, self.port = bench_ids.start_server(run_dir, self.config)

    def upload(self, path: Path, n: int) -> tuple[float, float]:
        """Seconds from the request's first byte to the response's last, and the server's
        peak MB meanwhile; exits if the IDs do not come back whole."""
        run = self.bench_ids.upload(self.port, self.token, path, n, False, self.proc.pid, UPLOAD)
        if run.note:
            raise SystemExit(f"the upload failed: {run.note}")
        return float(run.seconds), float(run.peak_mb)

    def stop(self) -> None:
        from gatekeeper.ledger.store import EmbeddedServer

        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        EmbeddedServer(self.run_dir / "var").stop()


# --- the run -------------------------------------------------------------------------------------


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ids", type=int, default=1_500_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.ids
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    load_before = os.getloadavg()
    labels = {**{k: v[0] for k, v in FROM_FILE.items()},
              **{k: v[0] for k, v in IN_MEMORY.items()}, "upload": UPLOAD,
              "upload_small": UPLOAD_SMALL}
    runs: dict[str, list[float]] = {k: [] for k in labels}
    server_mb: dict[str, list[float]] = {"upload": [], "upload_small": []}
    work = Path(tempfile.mkdtemp(prefix="gk-bench-idfile-"))
    server = None
    try:
        src = work / "ids.txt"
        src.write_text("".join(f"{FIRST + i * 7919}\n" for i in range(n)))
        small = work / "ids-small.txt"
        small.write_text("".join(f"{FIRST + i * 7919}\n" for i in range(n // 10)))
        uploads = {"upload": (src, n), "upload_small": (small, n // 10)}
        server = Server(work)
        server.upload(small, n // 10)  # a warm-up (numpy loaded), not counted
        for r in range(args.rounds):
            for key in list(labels) if r % 2 == 0 else list(reversed(labels)):
                if key in uploads:
                    seconds, peak = server.upload(*uploads[key])
                    runs[key].append(seconds)
                    server_mb[key].append(peak)
                else:
                    got = run_fresh(key, "idfile", "side", [key, src, work], ROOT)
                    runs[key].append(got["seconds"])
        same = (work / "ours.txt").read_bytes() == (work / "per-line.txt").read_bytes() \
            == src.read_bytes()
    finally:
        if server is not None:
            server.stop()
        shutil.rmtree(work, ignore_errors=True)
    load_after = os.getloadavg()

    med = {k: median(v) for k, v in runs.items()}
    rows = [(label, f"{med[k]:.3f}", f"{med[k] / n * 1e6:.3f}",
             ", ".join(f"{s:.3f}" for s in runs[k])) for k, label in labels.items()]
    print(f"an ID file of {n:,} IDs (19 digits, {n * 20 / 1e6:.0f} MB): validated and written, "
          "and uploaded")
    print(f"command: {command}")
    print(f"{machine_line()}, Python {platform.python_version()}")
    print(f"load average {load_before[0]:.1f} before, {load_after[0]:.1f} after (other work "
          f"shares the cores); {args.rounds} rounds, order reversed every other round; each "
          "side but the upload in a fresh interpreter")
    print()
    print_table(("side", "median s", "µs per ID", "runs (s)"), rows)
    ours_s, per_id, up_s = med["ours"], med["v_blocks"] / n * 1e6, med["upload"]
    print(f"validation, blocks vs per line: {med['v_lines'] / med['v_blocks']:.1f}x faster")
    peak = {k: max(v) for k, v in server_mb.items()}
    print(f"server peak (its RSS polled every 10 ms and VmHWM): {peak['upload']:.0f} MB with "
          f"{n:,} IDs, {peak['upload_small']:.0f} MB with {n // 10:,} (runs: "
          + "; ".join(", ".join(f"{x:.0f}" for x in v) for v in server_mb.values()) + ")")
    return print_goals([
        (f"{n:,}-ID file validated and written in <= {TOTAL_S:g} s ({ours_s:.3f} s)",
         ours_s <= TOTAL_S),
        (f"validation <= {PER_ID_US} µs per ID ({per_id:.3f} µs; per line "
         f"{med['v_lines'] / n * 1e6:.3f} µs)", per_id <= PER_ID_US),
        (f"{n:,} IDs uploaded and shared back end to end in <= {UPLOAD_S:g} s ({up_s:.3f} s)",
         up_s <= UPLOAD_S),
        (f"server memory flat: {n:,} vs {n // 10:,} IDs within +{FLAT_MB:g} MB "
         f"({peak['upload'] - peak['upload_small']:+.0f} MB)",
         peak["upload"] - peak["upload_small"] <= FLAT_MB),
        ("the file is byte-identical to the per-line rules' and to the input", same),
    ])


if __name__ == "__main__":
    sys.exit(main())
