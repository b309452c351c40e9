"""A real `gatekeeper serve` process on a free loopback port, for end-to-end tests."""

from __future__ import annotations

import contextlib
import http.client
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from gatekeeper import config as config_mod
from gatekeeper.domain.gate import Gate

ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Without these, chromium reaches for Google's hosts at start; only loopback is allowed here.
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update",
                 "--disable-sync"]


PASSWORD = "correct horse battery"
SAMPLES = Path(__file__).resolve().parents[2] / "shared" / "samples"


def build_gate(tmp_path: Path, client: Any, *, config: str = "",
               users: tuple[tuple[str, str], ...] = (("ana", "analyst"), ("dan", "data"),
                                                     ("cora", "compliance")),
               terms: str | None = None, kpop: bool = False) -> Gate:
    """A Gate on `client` (fakeredis or the real server) with `config` as its config.toml
    (datasets beside it), the commercial entity acme (its R8 terms accepted by `terms`, if
    given) and `users` (name, role) of acme with PASSWORD; ``kpop`` registers the kpop sample."""
    (tmp_path / "config.toml").write_text(f'{config}\n[datasets]\ndir = "datasets"\n')
    g = Gate(config_mod.load(tmp_path / "config.toml"), client=client)
    if kpop:
        g.datasets.add("kpop", SAMPLES / "kpop.jsonl", actor="t", channel="cli")
    g.entities.add("acme", kind="commercial", research=False, parent=None, actor="t",
                   channel="cli")
    if terms is not None:
        g.entities.accept_terms("acme", by=terms, actor="t", channel="cli")
    for name, role in users:
        g.users.add(name, entity="acme", role=role, password=PASSWORD, actor="t", channel="cli")
    return g


def share_ids(gate: Gate, directory: Path, entity: str, n: int, start: int = 1,
              key: str | None = None, purpose: str = "test") -> Any:
    """An ID share by the data-team user dan of IDs start..start+n-1 to `entity`, as the CLI
    makes one (an ID file in, the granted ID file out); its Reservation."""
    from gatekeeper.domain import shares

    ids = directory / f"ids-{uuid.uuid4().hex}.txt"
    ids.write_text("".join(f"{i}\n" for i in range(start, start + n)))
    return shares.share_to_file(gate, actor="dan", entity=entity, ids_path=ids,
                                out=directory / "out.txt", purpose=purpose,
                                idempotency_key=key)


def sign_in_page(page: Any, url: str, name: str, password: str, then: str) -> None:
    """Sign in through the login form of a real browser page and land on `then`."""
    page.goto(f"{url}/login?next={then}")
    page.fill("#username", name)
    page.fill("#password", password)
    page.click("button[type=submit]")
    page.wait_for_url(f"{url}{then}")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@dataclass
class Server:
    port: int
    gate: Gate
    dir: Path

    def request(self, method: str, path: str, body: bytes | str | None = None,
                headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=30)
        try:
            data = body.encode() if isinstance(body, str) else body
            conn.request(method, path, body=data, headers=headers or {})
            resp = conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
        finally:
            conn.close()

    def share_text(self, token: str, entity: str, ids: list[int] | str, query: str = "",
                   headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
        body = ids if isinstance(ids, str) else "".join(f"{i}\n" for i in ids)
        return self.request("POST", f"/api/v1/shares?entity={entity}{query}", body,
                            {"Authorization": f"Bearer {token}", "Content-Type": "text/plain",
                             **(headers or {})})


def start_server(directory: Path, env_extra: dict[str, str] | None = None) -> subprocess.Popen:
    port = free_port()
    env = {**os.environ, config_mod.ENV_CONFIG: str(directory / "config.toml"),
           "GATEKEEPER_SECRET_KEY": "test-secret"}
    env.pop(config_mod.ENV_REDIS_URL, None)
    env.update(env_extra or {})
    log = directory / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "gatekeeper", "serve", "--port", str(port)],
            env=env, stdout=out, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited: {log.read_text()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                proc.port = port  # type: ignore[attr-defined]
                return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError("server did not start")


@contextlib.contextmanager
def serving(directory: Path, env_extra: dict[str, str] | None = None) -> Iterator[str]:
    """A real `gatekeeper serve` on DIRECTORY's config (and `env_extra` in its environment),
    for a browser: its base URL; stopped afterwards, and its embedded store with it."""
    from gatekeeper.ledger.store import EmbeddedServer

    proc = start_server(directory, env_extra)
    try:
        yield f"http://127.0.0.1:{proc.port}"  # type: ignore[attr-defined]
    finally:
        proc.terminate()
        proc.wait(10)
        EmbeddedServer(directory / "var").stop()


def form_token(html: str, name: str = "csrf_token") -> str:
    """The value of a hidden form field (the CSRF token, an export ticket) in a page."""
    m = re.search(rf'name="{name}" value="([^"]+)"', html)
    assert m, f"no {name} in page"
    return m.group(1)


def sign_in(client: Any, name: str, password: str) -> int:
    """Sign in through /login with its CSRF token; the response status (302 when it worked)."""
    page = client.get("/login").get_data(as_text=True)
    resp = client.post("/login", data={"username": name, "password": password,
                                       "csrf_token": form_token(page)})
    return resp.status_code


def sign_in_agreeing(client: Any, name: str, password: str) -> None:
    """Sign in, then agree to the terms (R8) as a person's first visit does."""
    assert sign_in(client, name, password) == 302
    page = client.get("/terms").get_data(as_text=True)
    resp = client.post("/terms", data={"agree": "yes", "csrf_token": form_token(page)})
    assert resp.status_code == 302


def export_spanish(client: Any, name: str = "ana") -> bytes:
    """`name` (an analyst of build_gate's, PASSWORD) signs in, agrees to the terms and exports
    kpop's Spanish posts as XLSX through the web form; the file's bytes."""
    sign_in_agreeing(client, name, PASSWORD)
    form = client.get("/export", query_string={"dataset": "kpop", "lang": "es"}
                      ).get_data(as_text=True)
    form = form[form.index('id="export-form"'):]
    data = {"format": "xlsx", **dict(re.findall(r'name="([^"]+)" value="([^"]*)"', form))}
    resp = client.post("/export", data=data)
    try:
        assert resp.status_code == 200, resp.get_data(as_text=True)[:500]
        return bytes(resp.get_data())
    finally:
        resp.close()


def api_share(gate: Gate, client: Any, ids: list[int], entity: str = "acme") -> str:
    """`POST /api/v1/shares` of `ids` to `entity` with a token of dan (build_gate's data-team
    member), through the Flask client; the share id."""
    token = gate.users.create_token("dan", actor="t", channel="cli")
    resp = client.post(f"/api/v1/shares?entity={entity}&purpose=t",
                       data="".join(f"{i}\n" for i in ids),
                       headers={"Authorization": f"Bearer {token}",
                                "Content-Type": "text/plain"})
    assert resp.status_code == 200, resp.get_data(as_text=True)
    resp.close()
    return str(resp.headers["X-Share-Id"])
