"""Benchmark dehydrating a twarc2 file and uploading an ID list, against `twarc2 dehydrate`.

One run, side by side, on one generated twarc2-style JSONL file of 1,500,000 posts (the demo
generator's pages, as twarc2 writes them; cached under --workdir) and its gzipped copy:

- `twarc2 dehydrate` on the plain file (the tool users have; installed into its own venv under
  --workdir on first run), and on the .gz file (it cannot read one, and says so, yet exits 0);
- our whole CLI path, `gatekeeper share --dataset`, ledger included, on the plain and the .gz
  dataset, against a fresh embedded store — read from the dataset's ID sidecar — and the same
  share read through the dataset's Parquet index as before the sidecar (`INDEX_PATH`);
- a bare `orjson.loads` loop over the plain file, for reference;
- the real server (`gatekeeper serve`, waitress, loopback) answering `POST /api/v1/shares` with
  150,000 and 1,500,000 uploaded IDs (text/plain, and the gzip response), with its peak memory.

Each command-line run is its own process, so its peak RSS is its own (`wait4`); the server's is
polled every 10 ms during each request (and read from VmHWM, reset first, where Linux allows).
Every run is made ``--rounds`` times (3), the order reversed every other round; the table shows
the median run by time, with the highest peak of its rounds (every run listed below it).
Prints one table and the goals; exits 1 if a goal fails.

Run from the repository root::

    python bench/ids.py                  # the full 1,500,000 posts (generates ~2.5 GB once)
    python bench/ids.py --posts 100000   # a quick check
"""

from __future__ import annotations

import argparse
import contextlib
import filecmp
import hashlib
import http.client
import json
import os
import platform
import secrets
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import zlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from itertools import islice
from pathlib import Path
from typing import Any

import msgspec
import orjson
import psutil

# This checkout's package, here and in every process started below, whatever is installed.
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from gatekeeper import config as config_mod  # noqa: E402
from gatekeeper.domain.demo import PAGE_SIZE, demo_pages  # noqa: E402
from gatekeeper.domain.gate import Gate  # noqa: E402
from gatekeeper.ledger.store import EmbeddedServer  # noqa: E402

POSTS = 1_500_000  # R2's limit: the most one entity may receive in 30 days
SEED = 0
ANCHOR = datetime(2026, 1, 1, tzinfo=UTC)  # fixed, so a cached file is the same file
GENERATOR = 1  # bump when the way the file is made changes, to regenerate the cache
ENTITY, USER = "bench-university", "bench-data"  # academic + research: R3 lifts R2
PLACEHOLDER_TOKEN = "offline-placeholder"  # only so twarc2 does not prompt; it never connects
SPEED_GOAL, DEHYDRATE_MB, UPLOAD_S, SERVER_MB, FLAT_MB = 6.0, 40.0, 2.0, 150.0, 30.0
ORJSON_LOOP = """\
import sys, orjson
pages = 0
with open(sys.argv[1], "rb") as fh:
    for line in fh:
        if line.strip():
            orjson.loads(line)
            pages += 1
print(pages)
"""
# The share as it was before the ID sidecar (issue 14 item 6): the dataset's Parquet index,
# read by pyarrow, R9 and repeats by numpy. The same CLI, with the sidecar looked away from.
INDEX_PATH = """\
import runpy, sys
from gatekeeper.domain.datasets import Datasets
Datasets.id_sidecar = lambda self, name: None
sys.argv = ["gatekeeper", *sys.argv[1:]]
runpy.run_module("gatekeeper", run_name="__main__", alter_sys=True)
"""
MB = 2**20


# --- the input file ------------------------------------------------------------------------------


def dataset_files(workdir: Path, posts: int) -> tuple[Path, Path, dict[str, Any]]:
    """The plain and gzipped twarc2 JSONL files of `posts` posts: reused, or made and cached."""
    base = workdir / f"twarc2-{posts}"
    plain, gz, meta_path = (base.with_suffix(".jsonl"), base.with_suffix(".jsonl.gz"),
                            base.with_suffix(".json"))
    want = {"posts": posts, "seed": SEED, "anchor": ANCHOR.isoformat(), "generator": GENERATOR}
    if meta_path.exists() and plain.exists() and gz.exists():
        meta = json.loads(meta_path.read_text())
        if ({k: meta.get(k) for k in want} == want and plain.stat().st_size == meta["bytes"]
                and gz.stat().st_size == meta["gz_bytes"]):
            meta["reused"] = True
            return plain, gz, meta
    workdir.mkdir(parents=True, exist_ok=True)
    print(f"generating {posts:,} posts into {plain} (+ .gz); cached for later runs ...",
          flush=True)
    started = time.perf_counter()
    plain_part, gz_part = plain.with_name(plain.name + ".part"), gz.with_name(gz.name + ".part")
    gzip_bin = shutil.which("gzip")
    with open(plain_part, "wb") as out, open(gz_part, "wb") as gz_out:
        # gzip runs beside the generator (a second core), fed the same bytes.
        zipper = subprocess.Popen([gzip_bin, "-6", "-n", "-c"], stdin=subprocess.PIPE,
                                  stdout=gz_out) if gzip_bin else None
        z = None if zipper else zlib.compressobj(6, zlib.DEFLATED, 31)
        for page in demo_pages(posts, SEED, ANCHOR):
            # json.dumps with its defaults is how twarc2 writes a page (ASCII, spaced).
            line = json.dumps(page).encode("ascii") + b"\n"
            out.write(line)
            if zipper:
                zipper.stdin.write(line)  # type: ignore[union-attr]
            else:
                gz_out.write(z.compress(line))  # type: ignore[union-attr]
        if zipper:
            zipper.stdin.close()  # type: ignore[union-attr]
            if zipper.wait() != 0:
                raise SystemExit("gzip failed while writing the .gz copy")
        else:
            gz_out.write(z.flush())  # type: ignore[union-attr]
    os.replace(plain_part, plain)
    os.replace(gz_part, gz)
    meta = {**want, "bytes": plain.stat().st_size, "gz_bytes": gz.stat().st_size,
            "pages": -(-posts // PAGE_SIZE), "seconds": round(time.perf_counter() - started, 1),
            "how": "gatekeeper.domain.demo.demo_pages(posts, seed=0, "
                   "anchor=2026-01-01T00:00Z), one "
                   "json.dumps(page) per line (as twarc2 writes), plain; the .gz by "
                   + ("`gzip -6 -n`" if gzip_bin else "zlib level 6") + " of the same bytes",
            "made_at": datetime.now(UTC).isoformat(timespec="seconds")}
    meta_path.write_text(json.dumps(meta, indent=2))
    meta["reused"] = False
    return plain, gz, meta


def twarc2_binary(workdir: Path) -> tuple[Path | None, str]:
    """`twarc2` from its own venv under workdir (pip-installed on first use); None if it fails."""
    venv = workdir / "twarc-venv"
    exe = venv / "bin" / "twarc2"
    if not exe.exists():
        print(f"installing twarc into {venv} (first run) ...", flush=True)
        log = workdir / "twarc-install.log"
        with open(log, "wb") as out:
            ok = subprocess.run([sys.executable, "-m", "venv", str(venv)], stdout=out,
                                stderr=subprocess.STDOUT, check=False).returncode == 0
            ok = ok and subprocess.run([str(venv / "bin" / "python"), "-m", "pip", "install",
                                        "-q", "twarc"], stdout=out, stderr=subprocess.STDOUT,
                                       check=False).returncode == 0
        if not ok or not exe.exists():
            return None, f"pip install twarc failed (see {log}); the twarc2 columns are skipped"
    version = subprocess.run([str(venv / "bin" / "python"), "-c",
                              "import importlib.metadata as m; print(m.version('twarc'))"],
                             capture_output=True, text=True, check=False).stdout.strip()
    return exe, version or "?"


# --- measuring one process -----------------------------------------------------------------------


@dataclass
class Run:
    label: str
    seconds: float = float("nan")
    peak_mb: float = float("nan")
    rc: int | None = None
    out: str = "-"  # what it produced, as shown in the table
    ids: int | None = None
    note: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def typical(got: list[Run]) -> Run:
    """The median run by time (the upper one of an even count), carrying the highest peak
    of all rounds and a note of any round that failed."""
    run = sorted(got, key=lambda r: r.seconds)[len(got) // 2]
    chosen = Run(run.label, run.seconds, max(r.peak_mb for r in got), run.rc, run.out,
                 run.ids, run.note or next((r.note for r in got if r.note), ""),
                 {**run.extra, "all": got})
    if any(r.rc != run.rc for r in got):  # a failed round fails the row
        chosen.rc = next(r.rc for r in got if r.rc not in (0, 200))
    return chosen


def warm(path: Path) -> None:
    """Read a file once, so every timed run reads its input from the page cache alike."""
    with open(path, "rb") as fh:
        while fh.read(8 * MB):
            pass


def measured(label: str, cmd: list[str], *, stdout: Path | None = None,
             env: dict[str, str] | None = None, cwd: Path | None = None,
             log: Path) -> tuple[Run, str]:
    """Run `cmd` to completion; wall seconds, its own peak RSS, exit code and stderr.

    The peak comes from GNU time (%M): rusage straight from this process would not do, as
    Linux carries a forked child's max RSS across exec and so reports at least ours. Without
    GNU time, the child's VmHWM is polled every 5 ms instead.
    """
    gnu_time = shutil.which("time", path="/usr/bin:/bin")
    rss_file = log.with_suffix(".maxrss")
    wrapped = [gnu_time, "-f", "%M", "-o", str(rss_file), *cmd] if gnu_time else cmd
    peak = 0
    out = open(stdout, "wb") if stdout else subprocess.DEVNULL  # noqa: SIM115 - closed below
    try:
        with open(log, "wb") as err:
            t0 = time.perf_counter()
            proc = subprocess.Popen(wrapped, stdout=out, stderr=err, env=env, cwd=cwd)
            while not gnu_time and proc.poll() is None:
                with contextlib.suppress(OSError, ValueError):
                    status = Path(f"/proc/{proc.pid}/status").read_text()
                    peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
                time.sleep(0.005)
            rc = proc.wait()
            seconds = time.perf_counter() - t0
    finally:
        if stdout:
            out.close()  # type: ignore[union-attr]
    if gnu_time:
        # GNU time adds "Command exited with non-zero status N" before the figure.
        peak = int(rss_file.read_text().split()[-1])
    return Run(label, seconds, peak / 1024, rc), log.read_text(errors="replace")


def lines_and_digest(path: Path) -> tuple[int, str]:
    if not path.exists():
        return 0, ""
    h, n = hashlib.sha256(), 0
    with open(path, "rb") as fh:
        while chunk := fh.read(8 * MB):
            h.update(chunk)
            n += chunk.count(b"\n")
    return n, h.hexdigest()


# --- the server ----------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(run_dir: Path, config: Path) -> tuple[subprocess.Popen, int]:
    port = free_port()
    env = {**os.environ, config_mod.ENV_CONFIG: str(config), "PYTHONPATH": str(ROOT),
           "GATEKEEPER_SECRET_KEY": secrets.token_urlsafe(16)}
    env.pop(config_mod.ENV_REDIS_URL, None)
    with open(run_dir / "server.log", "wb") as out:
        proc = subprocess.Popen([sys.executable, "-m", "gatekeeper", "serve", "--host",
                                 "127.0.0.1", "--port", str(port)], env=env, stdout=out,
                                stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited: {(run_dir / 'server.log').read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise SystemExit("the server did not start within 30 s")


class PeakRSS:
    """A process's peak RSS over a block: polled every 10 ms, and its VmHWM reset at the start
    (/proc/PID/clear_refs "5") where Linux allows, which sees peaks between two polls."""

    def __init__(self, pid: int) -> None:
        self.proc = psutil.Process(pid)
        self.pid = pid
        self.polled = 0
        self.hwm: int | None = None
        self._stop = threading.Event()

    def _vm_hwm(self) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) * 1024
        raise OSError("no VmHWM")

    def _poll(self) -> None:
        while True:
            self.polled = max(self.polled, self.proc.memory_info().rss)
            if self._stop.wait(0.01):
                return

    def __enter__(self) -> PeakRSS:
        self.before = self.proc.memory_info().rss
        try:
            Path(f"/proc/{self.pid}/clear_refs").write_text("5")
            self._reset = True
        except OSError:
            self._reset = False
        self._thread = threading.Thread(target=self._poll, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.polled = max(self.polled, self.proc.memory_info().rss)
        if self._reset:
            try:
                self.hwm = self._vm_hwm()
            except OSError:
                self.hwm = None

    @property
    def peak(self) -> int:
        return max(self.polled, self.hwm or 0)


def upload(port: int, token: str, ids: Path, expect: int, gzip: bool, server_pid: int,
           label: str) -> Run:
    """POST an ID file to /api/v1/shares, streamed from disk; time first byte out to last in."""
    size = ids.stat().st_size
    _, want_digest = lines_and_digest(ids)
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=600)
    conn.connect()  # not timed: an open connection, as a client that keeps one
    chunks: list[bytes] = []
    with PeakRSS(server_pid) as rss, open(ids, "rb") as fh:
        conn.putrequest("POST", f"/api/v1/shares?entity={ENTITY}")
        for name, value in (("Authorization", f"Bearer {token}"),
                            ("Content-Type", "text/plain"), ("Content-Length", str(size)),
                            ("Accept", "application/gzip" if gzip else "text/plain")):
            conn.putheader(name, value)
        t0 = time.perf_counter()
        conn.endheaders()
        while chunk := fh.read(MB):
            conn.send(chunk)
        t_sent = time.perf_counter()
        resp = conn.getresponse()
        t_head = time.perf_counter()
        while chunk := resp.read(MB):
            chunks.append(chunk)
        seconds = time.perf_counter() - t0
    conn.close()
    body = b"".join(chunks)
    wire = len(body)
    if gzip and resp.status == 200:
        body = zlib.decompress(body, wbits=31)
    lines = body.count(b"\n")
    same = hashlib.sha256(body).hexdigest() == want_digest
    run = Run(label, seconds, rss.peak / MB, resp.status, f"{lines:,} IDs", lines,
              extra={"before_mb": rss.before / MB, "polled_mb": rss.polled / MB,
                     "hwm_mb": None if rss.hwm is None else rss.hwm / MB,
                     "sent_s": t_sent - t0, "head_s": t_head - t0, "wire": wire,
                     "upload_bytes": size, "same": same,
                     "granted": resp.getheader("X-Share-Granted")})
    if resp.status != 200:
        run.note = f"HTTP {resp.status}: {body[:200]!r}"
    elif lines != expect or not same:
        run.note = f"expected the {expect:,} uploaded IDs back, got {lines:,} (same={same})"
    return run


# --- the run -------------------------------------------------------------------------------------


def machine(workdir: Path, twarc_version: str | None, load: str) -> list[str]:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text()
                .splitlines() if line.startswith("model name")), platform.processor())
    fs = subprocess.run(["df", "--output=fstype", str(workdir)], capture_output=True,
                        text=True, check=False).stdout.split()[-1:] or ["?"]
    return [
        f"machine: nproc={os.cpu_count()}, CPU {cpu}, RAM "
        f"{psutil.virtual_memory().total / 2**30:.0f} GiB, Linux {platform.release()}, "
        f"workdir on {fs[0]}, load average at the start {load}",
        f"software: Python {platform.python_version()}, orjson {orjson.__version__}, "
        f"msgspec {msgspec.__version__}, twarc {twarc_version or 'not installed'} "
        "(own venv, same Python)",
    ]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--posts", type=int, default=POSTS,
                        help="posts in the file = IDs dehydrated and uploaded")
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/gatekeeper-bench"),
                        help="where the generated files and the twarc venv are cached")
    parser.add_argument("--no-twarc", action="store_true", help="skip the twarc2 runs")
    parser.add_argument("--rounds", type=int, default=3,
                        help="runs of every side, in alternating order; medians are shown")
    parser.add_argument("--keep", action="store_true",
                        help="keep this run's store, outputs and logs (printed at the end)")
    args = parser.parse_args()
    command = shlex.join([Path(sys.executable).name, *sys.argv])
    started = time.perf_counter()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())  # others' work skews the times
    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)

    plain, gz, meta = dataset_files(workdir, args.posts)
    twarc, twarc_note = (None, "skipped (--no-twarc)") if args.no_twarc else \
        twarc2_binary(workdir)
    twarc_version = twarc_note if twarc else None  # on success, the note is its version
    if twarc is None:
        print(f"twarc2: {twarc_note}", flush=True)
    small = max(1, args.posts // 10)

    run_dir = Path(tempfile.mkdtemp(prefix="run-", dir=workdir))
    config = run_dir / "config.toml"
    config.write_text('[redis]\ndata_dir = "var"\n[server]\nmax_upload_mb = 100\n'
                      '[datasets]\ndir = "datasets"\n')
    env = {**os.environ, config_mod.ENV_CONFIG: str(config), "PYTHONPATH": str(ROOT)}
    env.pop(config_mod.ENV_REDIS_URL, None)
    # twarc2 gets a home of its own (no config of the user's is read) and a placeholder token:
    # with none it stops to ask for one; dehydrate never uses it.
    twarc_home = workdir / "twarc-home"
    twarc_home.mkdir(exist_ok=True)
    twarc_env = {**os.environ, "HOME": str(twarc_home), "BEARER_TOKEN": PLACEHOLDER_TOKEN}
    gk = [sys.executable, "-m", "gatekeeper", "--config", str(config)]
    runs: dict[str, Run] = {}
    every: dict[str, list[Run]] = {}  # each round's run, by key
    setup: list[str] = []
    server = None
    try:
        # The store: one entity exempt from R2 (R3), so every share of 1,500,000 fits, a
        # data-team user and a token; the two datasets registered (copied in) by the CLI.
        gate = Gate(config_mod.load(config))
        gate.entities.add(ENTITY, kind="academic", research=True, parent=None, actor="bench",
                          channel="cli")
        gate.entities.accept_terms(ENTITY, by="Bench Signatory", actor="bench", channel="cli")
        gate.users.add(USER, entity=ENTITY, role="data", password=secrets.token_urlsafe(16),
                       actor="bench", channel="cli")
        token = gate.users.create_token(USER, actor="bench", channel="cli")
        for name, path in (("bench", plain), ("bench-gz", gz)):
            t0 = time.perf_counter()
            done = subprocess.run([*gk, "dataset", "add", name, str(path)], env=env,
                                  capture_output=True, text=True, check=False)
            if done.returncode != 0:
                raise SystemExit(f"dataset add {name} failed: {done.stderr}")
            setup.append(f"`gatekeeper dataset add {name}` {time.perf_counter() - t0:.1f} s")
        datasets_dir = run_dir / "datasets"

        def ours(key: str, label: str, dataset: str, stored: Path,
                 index_path: bool = False) -> None:
            warm(stored)
            out = run_dir / f"{key}.txt"
            cli = [sys.executable, "-c", INDEX_PATH, "--config", str(config)] if index_path \
                else gk
            run, err = measured(label, [*cli, "share", "--as", USER, "--entity", ENTITY,
                                        "--dataset", dataset, "--out", str(out)],
                                stdout=run_dir / f"{key}.stdout", env=env,
                                log=run_dir / f"{key}.stderr")
            run.ids, run.extra["digest"] = lines_and_digest(out)
            run.extra["path"] = out
            run.out = f"{run.ids:,} IDs"
            if run.rc != 0:
                run.note = err.strip().splitlines()[-1] if err.strip() else f"exit {run.rc}"
            every.setdefault(key, []).append(run)

        def theirs(key: str, label: str, src: Path) -> None:
            out = run_dir / f"{key}.txt"
            if twarc is None:
                every[key] = [Run(label, note=twarc_note)]
                return
            warm(src)
            run, err = measured(label, [str(twarc), "--log", str(run_dir / "twarc.log"),
                                        "dehydrate", "--hide-progress", str(src), str(out)],
                                stdout=run_dir / f"{key}.stdout", env=twarc_env, cwd=run_dir,
                                log=run_dir / f"{key}.stderr")
            said = (run_dir / f"{key}.stdout").read_text(errors="replace") + err
            run.ids, run.extra["digest"] = lines_and_digest(out)
            run.extra["path"] = out
            run.extra["said"] = " / ".join(s.strip() for s in said.splitlines() if s.strip())
            run.out = f"{run.ids:,} IDs" + ("" if out.exists() else " (no file)")
            every.setdefault(key, []).append(run)

        def bare() -> None:
            warm(plain)
            run, err = measured("bare orjson.loads loop, plain", [sys.executable, "-c",
                                                                   ORJSON_LOOP, str(plain)],
                                stdout=run_dir / "orjson.stdout", log=run_dir / "orjson.stderr")
            pages = (run_dir / "orjson.stdout").read_text().strip()
            run.out = f"{int(pages):,} pages" if pages.isdigit() else err.strip()[-80:]
            every.setdefault("orjson", []).append(run)

        steps = [
            lambda: theirs("twarc", "twarc2 dehydrate, plain", plain),
            lambda: ours("ours", "gatekeeper share --dataset, plain", "bench",
                         datasets_dir / "bench.jsonl"),
            lambda: ours("ours_gz", "gatekeeper share --dataset, .gz", "bench-gz",
                         datasets_dir / "bench-gz.jsonl.gz"),
            lambda: ours("before", "same, plain, via the index (before the sidecar)", "bench",
                         datasets_dir / "bench.jsonl", index_path=True),
            bare,
            lambda: theirs("twarc_gz", "twarc2 dehydrate, .gz", gz),
        ]
        for r in range(args.rounds):
            for step in steps if r % 2 == 0 else steps[::-1]:
                step()
        runs.update({key: typical(got) for key, got in every.items()})

        # The server: uploads of a tenth and of all the IDs (from our plain dehydrate).
        if runs["ours"].rc != 0:
            raise SystemExit(f"our dehydrate failed, so there is no ID file to upload: "
                             f"{runs['ours'].note}")
        ids_all = runs["ours"].extra["path"]
        ids_small, warmup = run_dir / "ids-small.txt", run_dir / "ids-warmup.txt"
        with open(ids_all, "rb") as src:
            head = list(islice(src, small))
        ids_small.write_bytes(b"".join(head))
        warmup.write_bytes(b"".join(head[:1000]))
        server, port = start_server(run_dir, config)
        upload(port, token, warmup, min(1000, small), False, server.pid, "warm-up")
        idle = psutil.Process(server.pid).memory_info().rss / MB
        uploads = [
            ("up_small", ids_small, small, False, f"POST /api/v1/shares {small:,} IDs"),
            ("up_all", ids_all, args.posts, False, f"POST /api/v1/shares {args.posts:,} IDs"),
            ("up_gzip", ids_all, args.posts, True,
             f"POST /api/v1/shares {args.posts:,} IDs, gzip reply")]
        for r in range(args.rounds):
            for key, ids, n, gzip, label in uploads if r % 2 == 0 else uploads[::-1]:
                every.setdefault(key, []).append(upload(port, token, ids, n, gzip, server.pid,
                                                        label))
        runs.update({key: typical(every[key]) for key, *_ in uploads})
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        EmbeddedServer(run_dir / "var").stop()
        if not args.keep:
            shutil.rmtree(run_dir, ignore_errors=True)

    # --- the table -------------------------------------------------------------------------------
    tw, us, usgz, tw_gz = runs["twarc"], runs["ours"], runs["ours_gz"], runs["twarc_gz"]
    have_twarc = tw.rc == 0

    def factor(run: Run) -> str:
        if not have_twarc or run.rc is None or run.seconds != run.seconds:
            return "-"
        return f"{tw.seconds / run.seconds:,.1f}x"

    rows = []
    for key in ("twarc", "ours", "ours_gz", "before", "orjson", "twarc_gz", "up_small",
                "up_all", "up_gzip"):
        r = runs[key]
        server_row = key.startswith("up_")
        rows.append((r.label, "-" if r.rc is None else f"{r.seconds:,.2f}",
                     "-" if r.rc is None else f"{r.peak_mb:,.0f}" + (" (server)" if server_row
                                                                     else ""),
                     "-" if server_row or key == "twarc_gz" else factor(r),
                     "-" if r.rc is None else ("HTTP " if server_row else "") + str(r.rc),
                     r.out))
    head = ("run", "seconds", "peak MB", "vs twarc2", "exit", "output")
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    line = "  ".join("-" * w for w in widths)

    def fmt(cells: tuple[str, ...]) -> str:
        return "  ".join(c.ljust(w) if i in (0, 5) else c.rjust(w)
                         for i, (c, w) in enumerate(zip(cells, widths, strict=True)))

    print(f"dehydrate and upload {args.posts:,} Post IDs: gatekeeper vs twarc2 dehydrate")
    print(f"command: {command}")
    for fact in machine(workdir, twarc_version, load):
        print(fact)
    print(f"load average at the end {' / '.join(f'{x:.2f}' for x in os.getloadavg())}; "
          f"{args.rounds} rounds, the order reversed every other round")
    print(f"data: {plain} ({meta['bytes'] / 1e9:,.2f} GB, {meta['pages']:,} pages of "
          f"{PAGE_SIZE}) and .gz ({meta['gz_bytes'] / 1e9:,.2f} GB); "
          + ("reused from the cache" if meta["reused"] else
             f"generated in {meta['seconds']:,.0f} s") + f"; made by {meta['how']}")
    print("setup, untimed: fresh embedded store; " + "; ".join(setup))
    print()
    print(fmt(head))
    print(line)
    for r in rows:
        print(fmt(r))
    print(line)
    for key in ("twarc", "ours", "ours_gz", "before", "orjson", "up_small", "up_all",
                "up_gzip"):
        got = runs[key].extra.get("all") or []
        if len(got) > 1:
            print(f"  runs of {runs[key].label}: "
                  + ", ".join(f"{r.seconds:.2f} s / {r.peak_mb:.0f} MB" for r in got))
    print("seconds: wall time of the whole process (start-up included) or, for POST, first "
          "byte sent to last byte received on an open loopback connection; peak MB: the "
          "process's own peak RSS in MiB (GNU time %M), for POST the server's (polled every 10 ms"
          + (", and VmHWM reset before each request)" if runs["up_all"].extra["hwm_mb"]
             is not None else ")"))
    print("vs twarc2: twarc2's seconds / this row's (>1 = faster than twarc2); every input "
          "was read once just before its run, so all read from the page cache")
    print("twarc2 ran with --hide-progress (its fastest); ours is `gatekeeper --config C share "
          f"--as {USER} --entity {ENTITY} --dataset NAME --out FILE` (academic research entity, "
          "R3: no R2 limit; the ledger still takes and settles the share)")
    if have_twarc:
        same = us.extra.get("digest") == tw.extra.get("digest") and us.ids == tw.ids
        same_gz = usgz.extra.get("digest") == us.extra.get("digest")
        print(f"same IDs: ours (plain) vs twarc2 {'identical, same order' if same else 'DIFFER'}"
              f" ({us.ids:,} vs {tw.ids:,} lines); ours .gz vs plain "
              f"{'identical' if same_gz else 'DIFFER'}")
        if not same and us.extra.get("path") and tw.extra.get("path"):
            print("  (byte comparison: "
                  f"{filecmp.cmp(us.extra['path'], tw.extra['path'], shallow=False)})")
    if tw_gz.rc is not None:
        print(f"twarc2 on the .gz: exit {tw_gz.rc}, {tw_gz.ids:,} IDs written; it said: "
              f"{tw_gz.extra.get('said') or '(nothing)'}")
    for key in ("ours", "ours_gz", "before"):
        if runs[key].note:
            print(f"{runs[key].label}: {runs[key].note}")
    print(f"server: RSS {idle:,.0f} MB idle after a 1,000-ID warm-up; per request "
          + "; ".join(f"{runs[k].label.split(' ', 2)[2]}: before {runs[k].extra['before_mb']:.0f}"
                      f", polled peak {runs[k].extra['polled_mb']:.0f}"
                      + ("" if runs[k].extra["hwm_mb"] is None else
                         f", VmHWM {runs[k].extra['hwm_mb']:.0f}") + " MB"
                      for k in ("up_small", "up_all", "up_gzip")))
    print("upload: " + "; ".join(
        f"{runs[k].label.split(' ', 2)[2]}: {runs[k].extra['upload_bytes'] / 1e6:,.1f} MB "
        f"sent in {runs[k].extra['sent_s']:.2f} s, reply headers at "
        f"{runs[k].extra['head_s']:.2f} s, {runs[k].extra['wire'] / 1e6:,.1f} MB back, "
        f"{'same IDs back' if runs[k].extra['same'] else 'IDs DIFFER'}"
        + (f" — {runs[k].note}" if runs[k].note else "")
        for k in ("up_small", "up_all", "up_gzip")))

    up_ok = all(runs[k].rc == 200 and not runs[k].note for k in ("up_small", "up_all",
                                                                 "up_gzip"))
    peaks = {k: runs[k].peak_mb for k in ("up_small", "up_all", "up_gzip")}
    goals: list[tuple[str, bool | None]] = [
        (f"our dehydrate >= {SPEED_GOAL:g}x faster than twarc2 dehydrate on the same file "
         f"({factor(us)})",
         None if not have_twarc else us.rc == 0 and tw.seconds >= SPEED_GOAL * us.seconds),
        (f"our dehydrate peak <= {DEHYDRATE_MB:g} MB (plain {us.peak_mb:.0f} MB, .gz "
         f"{usgz.peak_mb:.0f} MB)",
         us.rc == 0 and usgz.rc == 0 and max(us.peak_mb, usgz.peak_mb) <= DEHYDRATE_MB),
        (f"our dehydrate (ID sidecar) no slower than via the index, as before "
         f"({us.seconds:.2f} s vs {runs['before'].seconds:.2f} s; peak {us.peak_mb:.0f} vs "
         f"{runs['before'].peak_mb:.0f} MB)",
         us.rc == 0 and runs["before"].rc == 0 and us.seconds <= runs["before"].seconds),
        ("our dehydrate gives the same ID file as via the index, as before",
         us.rc == 0 and runs["before"].rc == 0
         and us.extra.get("digest") == runs["before"].extra.get("digest")),
        ("our dehydrate gives twarc2's IDs, in its order, from the plain and the .gz file",
         None if not have_twarc else us.extra.get("digest") == tw.extra.get("digest")
         == usgz.extra.get("digest") and us.ids == args.posts),
        (f"{args.posts:,}-ID upload answered in <= {UPLOAD_S:g} s end to end "
         f"({runs['up_all'].seconds:.2f} s; gzip reply {runs['up_gzip'].seconds:.2f} s)",
         up_ok and runs["up_all"].seconds <= UPLOAD_S),
        (f"server peak <= {SERVER_MB:g} MB ({max(peaks.values()):.0f} MB)",
         up_ok and max(peaks.values()) <= SERVER_MB),
        (f"server memory flat: {args.posts:,} vs {small:,} IDs within +{FLAT_MB:g} MB "
         f"({peaks['up_all'] - peaks['up_small']:+.0f} MB; gzip reply "
         f"{peaks['up_gzip'] - peaks['up_small']:+.0f} MB)",
         up_ok and max(peaks["up_all"], peaks["up_gzip"]) - peaks["up_small"] <= FLAT_MB),
    ]
    print()
    for text, ok in goals:
        print(f"{'SKIP' if ok is None else 'PASS' if ok else 'FAIL'}  {text}")
    if args.keep:
        print(f"\nkept: {run_dir}")
    print(f"\ntotal run time {time.perf_counter() - started:.0f} s")
    return 0 if all(ok is not False for _, ok in goals) else 1


if __name__ == "__main__":
    sys.exit(main())
