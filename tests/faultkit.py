"""A gatekeeper lab for fault injection: the real embedded Redis, the real CLI and a real
`gatekeeper serve`, each in a process that can really be SIGKILLed.

CLI runs and the server are children made with os.fork() from the test process, which has
imported gatekeeper.channels.cli.main already (a fresh interpreter costs a second of
imports). Each child gets its own environment — TMPDIR pointing at the lab's own temporary
directory, the
failpoint — and its own Gate and Redis connections, calls the real `main` and ends with
os._exit: that is the real CLI code in a real process. The server child also reads failpoint
changes from a pipe, so one server can stay up across runs with different faults.
"""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import select
import signal
import socket
import sys
import tempfile
import threading
import time
import traceback
import urllib.parse
import warnings
import zlib
from dataclasses import dataclass, field
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

from gatekeeper import config as config_mod
from gatekeeper import faults
from gatekeeper.domain.gate import Gate
from gatekeeper.ledger.store import EmbeddedServer

MARKER = "ZQXHYDRATEDMARKERZQX"  # in every post text of a lab dataset: never on disk (R7)
SECRET = "fault-lab-secret"
PASSWORD = "correct horse battery"
WAIT_S = 60.0  # the longest any child may take before it counts as hung
# Files of the embedded Redis server itself (store.EmbeddedServer._config).
REDIS_FILES = re.compile(r"^(redis\.(conf|lock|log|pid|sock)|gatekeeper\.aof|temp-.*\.(aof|rdb))$")
# Names a leftover spool or partial file would have (spool.LEGACY, publish, datasets.add).
LEFTOVER = re.compile(r"^(gatekeeper-.*|\..*\.(part|tmp)|.*\.(part|tmp))$")


def write_dataset(path: Path, posts: int) -> None:
    """`posts` single v2 posts, each text carrying MARKER, by 50 authors (lean and fast)."""
    with open(path, "w") as fh:
        for i in range(posts):
            author = str(4_000_000_000 + i % 50)
            noise = hashlib.sha256(str(i).encode()).hexdigest()  # rows that compress like text
            fh.write(json.dumps({
                "id": str(1_600_000_000_000_000_000 + i), "lang": "en",
                "created_at": f"2026-10-{1 + i % 28:02d}T{i % 24:02d}:00:00.000Z",
                "text": f"post {i} about {noise[:40]} {MARKER} #{noise[40:]}",
                "author_id": author,
                "author": {"id": author, "username": f"author{i % 50}",
                           "name": f"Author {i % 50}"},
            }) + "\n")


class Lab:
    """A config, a store, a dedicated TMPDIR and a work directory under `base`."""

    def __init__(self, base: Path, *, limits: str = "", dataset_posts: int = 0) -> None:
        self.base = base
        self.config = base / "config.toml"
        self.data_dir = base / "var"
        self.tmpdir = base / "tmp"
        self.work = base / "work"
        for d in (self.tmpdir, self.work):
            d.mkdir(parents=True, exist_ok=True)
        self.config.write_text(f'[redis]\ndata_dir = "var"\n[limits]\n{limits}\n'
                               '[datasets]\ndir = "var/datasets"\n')
        self.store = EmbeddedServer(self.data_dir)
        # A deep path puts the socket in the *caller's* TMPDIR, which children do not share.
        assert self.store.socket.parent == self.data_dir, f"{base} is too deep for a socket"
        self.gate = Gate(config_mod.load(self.config))
        self.dataset_file: Path | None = None
        if dataset_posts:
            source = self.work / "source.jsonl"
            write_dataset(source, dataset_posts)
            info = self.gate.datasets.add("posts", source, actor="lab", channel="cli")
            self.dataset_file = self.gate.config.datasets_dir / info.file
            source.unlink()
        self._n = 0
        self.servers: list[Server] = []

    # --- setup ------------------------------------------------------------------------------

    def entity(self, name: str) -> None:
        g = self.gate
        g.entities.add(name, kind="commercial", research=False, parent=None, actor="lab",
                       channel="cli")
        g.entities.accept_terms(name, by="Jane Doe", actor="lab", channel="cli")

    def user(self, name: str, entity: str, role: str) -> str | None:
        """Add a user (terms accepted); a data user's API token."""
        g = self.gate
        g.users.add(name, entity=entity, role=role, password=PASSWORD, actor="lab",
                    channel="cli")
        g.users.accept_terms(name, actor="lab", channel="cli")
        if role == "data":
            return g.users.create_token(name, actor="lab", channel="cli")
        return None

    # --- the store --------------------------------------------------------------------------

    def store_pid(self) -> int:
        """The running store's pid (checked: a stale pid file must never name another
        process for kill-store)."""
        if not self.store.running():
            raise RuntimeError("the store is not running")
        pid = int((self.data_dir / "redis.pid").read_text().strip())
        if b"redis-server" not in Path(f"/proc/{pid}/cmdline").read_bytes():
            raise RuntimeError(f"pid {pid} is not the lab's redis-server")
        return pid

    def store_up(self) -> bool:
        """Start the store if it is down (as any command would); True if it was down."""
        if self.store.running():
            return False
        self.store.start()
        return True

    def quiet(self) -> None:
        """Drop the test process's Redis connections before a fork (children make their own)."""
        self.gate.client.connection_pool.disconnect()

    # --- children ---------------------------------------------------------------------------

    def env(self, failpoint: str | None = None) -> dict[str, str | None]:
        env: dict[str, str | None] = {
            "TMPDIR": str(self.tmpdir), config_mod.ENV_CONFIG: None,
            config_mod.ENV_REDIS_URL: None, "GATEKEEPER_SECRET_KEY": SECRET,
            faults.ENV: failpoint, faults.ENV_STORE_PID: None}
        if failpoint and failpoint.endswith(":kill-store"):
            env[faults.ENV_STORE_PID] = str(self.store_pid())
        return env

    def cli(self, *args: str, failpoint: str | None = None) -> Run:
        """`gatekeeper --config C ARGS` in a forked child; how it ended and what it said."""
        self._n += 1
        out = self.work / f"cli-{self._n}.out"
        err = self.work / f"cli-{self._n}.err"
        env = self.env(failpoint)
        self.quiet()
        pid = os.fork()
        if pid == 0:  # the child: never returns into the test process
            code = 1
            try:
                _become_child(env, out, err)
                code = run_main(["--config", str(self.config), *args])
            finally:
                os._exit(code)
        status = wait(pid, WAIT_S)
        run = Run(status, out.read_text("utf-8", "replace"), err.read_text("utf-8", "replace"))
        out.unlink()
        err.unlink()
        return run

    def server(self) -> Server:
        """A `gatekeeper serve` child (kept in `servers`, for the caller to stop)."""
        server = Server(self)
        self.servers.append(server)
        return server


@dataclass
class Run:
    """How a child ended: exit code, or -signal; None if it hung (it was killed)."""

    status: int | None
    stdout: str
    stderr: str

    @property
    def killed(self) -> bool:
        return self.status == -signal.SIGKILL

    def json(self) -> dict[str, Any]:
        return json.loads(self.stdout)


def _become_child(env: dict[str, str | None], out: Path, err: Path) -> None:
    """Turn a fresh fork into a process of its own: environment, TMPDIR, stdout/stderr."""
    for name, value in env.items():
        if value is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = value
    tempfile.tempdir = env["TMPDIR"]
    warnings.resetwarnings()  # a real process does not run under pytest's filterwarnings
    for fd, path in ((1, out), (2, err)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        os.dup2(target, fd)
        os.close(target)
    sys.stdin = open(os.devnull)  # noqa: SIM115 - the process ends with os._exit
    sys.stdout = open(1, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stderr = open(2, "w", buffering=1, encoding="utf-8", closefd=False)  # noqa: SIM115


def run_main(args: list[str]) -> int:
    """The CLI's `main` as the console script runs it; its exit code (1 with a traceback for
    an exception nothing caught, as Python does)."""
    import click

    from gatekeeper.channels.cli.main import main

    try:
        rv = main.main(args, prog_name="gatekeeper", standalone_mode=False)
        code = rv if isinstance(rv, int) else 0
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except click.ClickException as exc:
        exc.show()
        code = exc.exit_code
    except BaseException:
        traceback.print_exc()
        code = 1
    with contextlib.suppress(Exception):
        sys.stdout.flush()
        sys.stderr.flush()
    return code


def wait(pid: int, timeout: float) -> int | None:
    """Reap child `pid`: its exit code or -signal; None (after SIGKILL) if it outlived
    `timeout`."""
    fd = os.pidfd_open(pid)
    try:
        ready, _, _ = select.select([fd], [], [], timeout)
        if not ready:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
            return None
    finally:
        os.close(fd)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """`gatekeeper serve` in a forked child on a free loopback port, whose failpoint the test
    sets between requests (over a pipe: the failpoint module reads os.environ each time)."""

    def __init__(self, lab: Lab) -> None:
        self.lab = lab
        self.port = free_port()
        self.log = lab.work / f"server-{self.port}.log"
        ctl_r, self._ctl = os.pipe()
        self._ack, ack_w = os.pipe()
        env = lab.env()
        lab.quiet()
        pid = os.fork()
        if pid == 0:
            code = 1
            try:
                os.close(self._ctl)
                os.close(self._ack)
                _become_child(env, self.log, self.log)
                threading.Thread(target=_control, args=(ctl_r, ack_w), daemon=True).start()
                code = run_main(["--config", str(lab.config), "serve", "--port",
                                 str(self.port)])
            finally:
                os._exit(code)
        os.close(ctl_r)
        os.close(ack_w)
        self.pid = pid
        self.status: int | None = None
        deadline = time.monotonic() + WAIT_S
        while True:
            with contextlib.suppress(OSError), \
                    socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                break
            if self.exited(0.02) or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the server did not start: {self.log.read_text()}")

    def failpoint(self, spec: str | None) -> None:
        """Set (or clear) the server's failpoint for the next request."""
        store_pid = str(self.lab.store_pid()) if spec and spec.endswith(":kill-store") else ""
        self.setenv({faults.ENV: spec or "", faults.ENV_STORE_PID: store_pid})

    def setenv(self, values: dict[str, str]) -> None:
        """Set variables of the server's environment ("" removes one), e.g. the directory of
        a `pause` failpoint."""
        msg = "".join(f"{name}={value}\n" for name, value in values.items())
        os.write(self._ctl, msg.encode())
        got = b""
        while len(got) < len(values):
            ready, _, _ = select.select([self._ack], [], [], 10)
            if not ready:
                raise RuntimeError("the server did not take the failpoint")
            chunk = os.read(self._ack, len(values) - len(got))
            if not chunk:
                raise RuntimeError("the server is gone")
            got += chunk

    def exited(self, timeout: float) -> bool:
        """Whether the server has ended (waiting up to `timeout`); its status is kept."""
        if self.status is not None:
            return True
        fd = os.pidfd_open(self.pid)
        try:
            ready, _, _ = select.select([fd], [], [], timeout)
        finally:
            os.close(fd)
        if not ready:
            return False
        _, status = os.waitpid(self.pid, 0)
        self.status = os.waitstatus_to_exitcode(status)
        return True

    def stop(self) -> None:
        """SIGKILL the server if it still runs, and reap it."""
        if self.status is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)
            self.exited(WAIT_S)
        for fd in (self._ctl, self._ack):
            with contextlib.suppress(OSError):
                os.close(fd)

    def fds_under(self, directory: Path) -> list[tuple[str, int]]:
        """The server's open files under `directory` (path as /proc shows it, size)."""
        found = []
        proc = Path(f"/proc/{self.pid}/fd")
        with contextlib.suppress(FileNotFoundError, ProcessLookupError):
            for fd in proc.iterdir():
                with contextlib.suppress(OSError):
                    target = os.readlink(fd)
                    if target.startswith(str(directory)):
                        found.append((target, os.stat(fd).st_size))
        return found


def _control(fd_in: int, fd_ack: int) -> None:
    """The server child's end of the failpoint pipe: NAME=VALUE lines set os.environ."""
    with os.fdopen(fd_in, "rb") as lines:
        for line in lines:
            name, _, value = line.decode().rstrip("\n").partition("=")
            if value:
                os.environ[name] = value
            else:
                os.environ.pop(name, None)
            os.write(fd_ack, b".")


# --- HTTP ------------------------------------------------------------------------------------


@dataclass
class Answer:
    """An HTTP exchange as the client saw it: status (None: the connection dropped before
    one came), headers, the body bytes received, and whether the body arrived whole."""

    status: int | None
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""
    complete: bool = False

    @property
    def text(self) -> str:
        return self.body.decode(errors="replace")


class Client:
    """A loopback HTTP client with a cookie jar (a browser's session, for the export form)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self.cookies: dict[str, str] = {}

    def request(self, method: str, path: str, body: bytes | None = None,
                headers: dict[str, str] | None = None) -> Answer:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        hdrs = dict(headers or {})
        if self.cookies:
            hdrs["Cookie"] = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        answer = Answer(None)
        try:
            conn.request(method, path, body=body, headers=hdrs)
            resp = conn.getresponse()
            answer.status = resp.status
            answer.headers = {k.lower(): v for k, v in resp.getheaders()}
            for raw in resp.msg.get_all("Set-Cookie") or []:
                jar: SimpleCookie = SimpleCookie()
                jar.load(raw)
                self.cookies.update({k: m.value for k, m in jar.items()})
            parts = []
            try:
                while chunk := resp.read(1 << 16):
                    parts.append(chunk)
                answer.complete = True
            except http.client.IncompleteRead as exc:
                parts.append(exc.partial)
            except OSError:
                pass
            answer.body = b"".join(parts)
            # read() ends quietly when a body with a Content-Length breaks off.
            length = answer.headers.get("content-length")
            if length is not None and len(answer.body) != int(length):
                answer.complete = False
        except (OSError, http.client.HTTPException):
            pass  # dropped before a status line: nothing was received
        finally:
            conn.close()
        return answer

    def send(self, method: str, path: str, body: bytes,
             headers: dict[str, str]) -> http.client.HTTPConnection:
        """Send a request and leave its answer unread (the caller closes the connection)."""
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=WAIT_S)
        cookie = "; ".join(f"{k}={v}" for k, v in self.cookies.items())
        conn.request(method, path, body=body, headers={**headers, "Cookie": cookie})
        return conn

    def form(self, path: str, fields: dict[str, str]) -> Answer:
        return self.request("POST", path, urllib.parse.urlencode(fields).encode(),
                            {"Content-Type": "application/x-www-form-urlencoded"})

    def sign_in(self, name: str) -> None:
        page = self.request("GET", "/login")
        done = self.form("/login", {"username": name, "password": PASSWORD,
                                    "csrf_token": hidden(page.text, "csrf_token")})
        if done.status != 302:
            raise RuntimeError(f"sign-in failed: {done.status} {done.text[:500]}")

    def export_form(self, dataset: str) -> dict[str, str]:
        """The export form's CSRF token and single-use ticket (R5), from a fresh page."""
        page = self.request("GET", f"/export?dataset={dataset}")
        if page.status != 200:
            raise RuntimeError(f"export page: {page.status} {page.text[:500]}")
        form = page.text[page.text.index('id="export-form"'):]
        return {"csrf_token": hidden(form, "csrf_token"), "ticket": hidden(form, "ticket")}

    def export_fields(self, dataset: str, fmt: str, limit: int) -> dict[str, str]:
        """What clicking export sends: the form's fields, no filters, no Users sheet, and the
        first `limit` posts (as the form offers when the whole does not fit)."""
        return {**self.export_form(dataset), "dataset": dataset, "format": fmt, "users": "",
                "limit": str(limit), "since": "", "until": "", "lang": "", "contains": "",
                "author": ""}

    def export(self, dataset: str, fmt: str, limit: int) -> Answer:
        return self.form("/export", self.export_fields(dataset, fmt, limit))

    def share(self, token: str, entity: str, ids: list[int], key: str | None) -> Answer:
        headers = {"Authorization": f"Bearer {token}", "Content-Type": "text/plain"}
        if key:
            headers["Idempotency-Key"] = key
        return self.request("POST", f"/api/v1/shares?entity={entity}",
                            "".join(f"{i}\n" for i in ids).encode(), headers)


def alert(html: str) -> str:
    """The message of an error page (its role="alert" paragraph), as a person reads it."""
    import html as html_mod

    m = re.search(r'role="alert"[^>]*>(.*?)</', html, re.S)
    return " ".join(html_mod.unescape(m.group(1)).split()) if m else html[-600:]


def hidden(html: str, name: str) -> str:
    m = re.search(rf'name="{name}" value="([^"]+)"', html)
    if not m:
        raise RuntimeError(f"no {name} in the page")
    return m.group(1)


# --- what a crash may leave ------------------------------------------------------------------


def readable_marker(data: bytes) -> bool:
    """Whether MARKER can be read from a file's bytes: as they are, or inflated from a ZIP
    (XLSX) entry or a PDF stream — also from a truncated file."""
    needle = MARKER.encode()
    if needle in data:
        return True
    starts: list[tuple[int, int]] = []  # (offset, zlib wbits)
    for m in re.finditer(rb"PK\x03\x04", data):
        head = m.start()
        if head + 30 <= len(data):
            name_len = int.from_bytes(data[head + 26:head + 28], "little")
            extra_len = int.from_bytes(data[head + 28:head + 30], "little")
            starts.append((head + 30 + name_len + extra_len, -15))
    starts += [(m.end(), 15) for m in re.finditer(rb"stream\r?\n", data)]
    for offset, wbits in starts:
        with contextlib.suppress(zlib.error):
            if needle in zlib.decompressobj(wbits).decompress(data[offset:]):
                return True
    return False


def leftovers(lab: Lab, *, store_down: bool = False) -> list[str]:
    """Everything a crash must not leave: any file in the lab's TMPDIR (its spools have no
    names), spool/partial names and readable hydrated bytes in the data directory (beside
    Redis's own files and the dataset itself), refunds owed while the store answers."""
    found = []
    for path in sorted(p for p in lab.tmpdir.rglob("*")):
        what = "readable hydrated content" if path.is_file() and \
            readable_marker(path.read_bytes()) else "a file"
        found.append(f"{what} in TMPDIR: {path.relative_to(lab.tmpdir)} "
                     f"({path.stat().st_size if path.is_file() else 'dir'})")
    for path in sorted(lab.data_dir.rglob("*")):
        rel = path.relative_to(lab.data_dir)
        if path.is_dir() or path == lab.dataset_file or REDIS_FILES.match(str(rel)):
            continue
        if rel.parent == Path("pending") and path.suffix == ".json" and store_down:
            continue
        if rel.parent == Path("pending") and path.suffix == ".json":
            found.append(f"a refund still owed with the store up: {rel}")
        elif LEFTOVER.match(path.name):
            found.append(f"a leftover file in the data dir: {rel}")
        if path.is_file() and readable_marker(path.read_bytes()):
            found.append(f"readable hydrated content in the data dir: {rel}")
    return found
