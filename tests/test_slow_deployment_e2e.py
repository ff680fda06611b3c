"""`qc-tail run` end to end: one deployment whose answers stall holds back no other's polls."""

from __future__ import annotations

import json
import signal
import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import requests

from tailer.emulator import Emulator

from .conftest import TOKEN, USER_ID, Background, cli_env, qc_tail, secrets_in

SLOW, STEADY = 611, 622
RELAYED = ("Content-Type", "Date", "Retry-After", "WWW-Authenticate")


class StallingProxy:
    """The emulator behind a loopback proxy that, once told to, stalls every request about
    one project: a black hole (it reads the request and never answers) or a trickle (a head
    promising a large body, then one byte every 0.2 s: each read gets a byte in time).
    Other requests are relayed as they are. ``release`` ends the stall: stalled requests
    are dropped (the connection closes), later ones are relayed."""

    def __init__(self, upstream: str) -> None:
        self.upstream = upstream
        self.stalls: str | None = None
        self.stalled_project: int | None = None
        self.held = 0  # requests being stalled right now
        self._armed: tuple[int, str, int] | None = None
        self.stalled_total = 0
        self._release = threading.Event()
        self._lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.endswith("/live/logs/read"):
                    owner._count_read(_project(body))
                if owner.stalls is not None and _project(body) == owner.stalled_project:
                    owner._stall(self, owner.stalls)
                    return
                owner._relay(self, body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/api/v2"

    def stall(self, project_id: int, how: str) -> None:
        self._release.clear()
        self.stalled_project, self.stalls = project_id, how

    def stall_from(self, project_id: int, how: str, read: int) -> None:
        """Stall from the ``read``-th request for the project's lines on (that one too)."""
        self._armed = (project_id, how, read)

    def _count_read(self, project_id: int | None) -> None:
        with self._lock:
            if self._armed is None or self._armed[0] != project_id:
                return
            armed, how, left = self._armed
            self._armed = (armed, how, left - 1) if left > 1 else None
        if left <= 1:
            self.stall(armed, how)

    def release(self) -> None:
        self.stalls = None
        self._release.set()

    def stop(self) -> None:
        self.release()
        self.httpd.shutdown()
        self.httpd.server_close()

    def _stall(self, handler: BaseHTTPRequestHandler, how: str) -> None:
        with self._lock:
            self.held += 1
            self.stalled_total += 1
        try:
            if how == "trickle":
                handler.wfile.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100000\r\n\r\n"
                )
                handler.wfile.flush()
                while not self._release.wait(0.2):
                    handler.wfile.write(b" ")
                    handler.wfile.flush()
            else:
                self._release.wait()
        except OSError:
            pass  # the client gave up on it
        finally:
            handler.close_connection = True
            with self._lock:
                self.held -= 1

    def _relay(self, handler: BaseHTTPRequestHandler, body: bytes) -> None:
        wanted = ("Authorization", "Timestamp", "Content-Type")
        headers = {name: handler.headers[name] for name in wanted if handler.headers[name]}
        answer = requests.post(self.upstream + handler.path, data=body, headers=headers, timeout=30)
        handler.send_response(answer.status_code)
        for name in RELAYED:
            if name in answer.headers and name != "Date":
                handler.send_header(name, answer.headers[name])
        handler.send_header("Content-Length", str(len(answer.content)))
        handler.end_headers()
        handler.wfile.write(answer.content)


def _project(body: bytes) -> int | None:
    try:
        project = json.loads(body).get("projectId")
    except (ValueError, AttributeError):
        return None
    return project if isinstance(project, int) else None


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=13).start() as emulator:
        for project_id in (SLOW, STEADY):
            emulator.add_project(project_id, f"algo-{project_id}")
            emulator.deploy(project_id)
            emulator.write(project_id, [f"{project_id} first {n}" for n in range(3)])
        emulator.publish()
        yield emulator


@pytest.fixture
def proxy(emu: Emulator) -> Iterator[StallingProxy]:
    parts = urlsplit(emu.base_url)
    server = StallingProxy(f"{parts.scheme}://{parts.netloc}")
    yield server
    server.stop()


def config(tmp_path: Path, base_url: str) -> Path:
    """Two followed projects; a timeout far beyond the test's waits (its hang guards), so
    that a stalled request stays stalled for as long as the test looks."""
    lines = [
        "[api]",
        f'base_url = "{base_url}"',
        f"user_id = {USER_ID}",
        "timeout = 120",
        "max_in_flight = 4",
        "[poll]",
        "interval = 0.2",
        "max_interval = 0.2",
        "[state]",
        f'dir = "{tmp_path / "state"}"',
        "[discovery]",
        "enabled = false",
        "[output]",
        f'directory = "{tmp_path / "out"}"',
    ]
    for project_id in (SLOW, STEADY):
        lines += ["[[follow]]", f"project_id = {project_id}", 'start = "deployment"']
    path = tmp_path / "qc-tail.toml"
    path.write_text("\n".join(lines) + "\n")
    return path


def file_of(tmp_path: Path, emu: Emulator, project_id: int) -> Callable[[], list[str]]:
    path = tmp_path / "out" / str(project_id) / f"{emu.deploy_ids(project_id)[-1]}.log"
    return lambda: path.read_text().splitlines() if path.exists() else []


def wait_until(condition: Callable[[], bool], guard: float = 30.0) -> bool:
    """Whether ``condition`` came true (``guard`` seconds: a hang guard, not a measure)."""
    deadline = time.monotonic() + guard
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.parametrize("how", ["black-hole", "trickle"])
def test_a_stalled_deployment_holds_back_no_other_deployments_lines(tmp_path, emu, proxy, how):
    """Once every request about one project stalls (never answered, or trickled under the
    timeout), the other project's new lines still reach its file while the stalled request
    is in hand; after the stall, the stalled project's lines come too, each once; SIGTERM
    ends the run at once even with a request stalled."""
    slow, steady = file_of(tmp_path, emu, SLOW), file_of(tmp_path, emu, STEADY)
    process = subprocess.Popen(
        qc_tail("--config", str(config(tmp_path, proxy.base_url)), "run"),
        env=cli_env(emu, QC_BASE_URL=proxy.base_url),  # the environment wins over the file
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: len(slow()) == 3 and len(steady()) == 3)
        proxy.stall(SLOW, how)
        emu.write(SLOW, [f"{SLOW} later {n}" for n in range(2)])
        emu.publish()
        assert wait_until(lambda: proxy.held > 0), "".join(stderr)[
            -3000:
        ]  # the slow project's poll is stuck now
        for round_ in range(3):  # lines published one poll after another, each arriving
            line = f"{STEADY} round {round_}"
            emu.write(STEADY, [line])
            emu.publish()
            assert wait_until(lambda line=line: steady()[-1:] == [line])
            assert proxy.held > 0  # while the slow project's request was still in hand
        assert len(slow()) == 3
        proxy.release()
        assert wait_until(lambda: len(slow()) == 5, guard=60)
    finally:
        proxy.release()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)  # a hang guard; SIGTERM's promise is 2 s
        reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0, "".join(stderr)
    assert secrets_in("".join(stderr)) == []
    assert slow() == [f"{SLOW} first {n}" for n in range(3)] + [
        f"{SLOW} later {n}" for n in range(2)
    ]
    assert steady() == [f"{STEADY} first {n}" for n in range(3)] + [
        f"{STEADY} round {n}" for n in range(3)
    ]


def test_a_deployment_stalled_mid_catch_up_holds_back_no_other(tmp_path, emu, proxy):
    """The slow project's server stops answering while it catches up on a backlog (its
    read-ahead in flight): it cannot take every place of the request budget, nor hold up
    the other project's read-ahead, so the other's new lines (several windows at a time)
    still come while it is stuck."""
    backlog = [f"{SLOW} backlog {n}" for n in range(3000)]
    emu.write(SLOW, backlog)
    emu.publish()
    proxy.stall_from(SLOW, "black-hole", read=3)
    slow, steady = file_of(tmp_path, emu, SLOW), file_of(tmp_path, emu, STEADY)
    process = subprocess.Popen(
        qc_tail("--config", str(config(tmp_path, proxy.base_url)), "run"),
        env=cli_env(emu, QC_BASE_URL=proxy.base_url),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    stderr: list[str] = []
    reader = threading.Thread(target=lambda: stderr.extend(process.stderr or ()), daemon=True)
    reader.start()
    try:
        assert wait_until(lambda: proxy.held > 0 and len(steady()) == 3)
        for round_ in range(3):
            lines = [f"{STEADY} round {round_} line {n}" for n in range(600)]
            emu.write(STEADY, lines)
            emu.publish()
            assert wait_until(lambda last=lines[-1]: steady()[-1:] == [last])
            assert proxy.held > 0  # while the slow project's requests were still in hand
        proxy.release()
        assert wait_until(lambda: len(slow()) == 3003, guard=60)
    finally:
        proxy.release()
        process.send_signal(signal.SIGTERM)
        code = process.wait(timeout=10)  # a hang guard; SIGTERM's promise is 2 s
        reader.join(timeout=5)
        if process.stderr is not None:
            process.stderr.close()
    assert code == 0, "".join(stderr)
    assert slow() == [f"{SLOW} first {n}" for n in range(3)] + backlog
    assert steady() == [f"{STEADY} first {n}" for n in range(3)] + [
        f"{STEADY} round {r} line {n}" for r in range(3) for n in range(600)
    ]


def test_tail_of_two_targets_is_not_held_back_by_the_stalled_one(tmp_path, emu, proxy):
    """``tail -f`` of two projects: while every request about one of them is held, the
    other's new lines still reach stdout."""
    settings = tmp_path / "tail.toml"
    settings.write_text("[api]\ntimeout = 120\nmax_in_flight = 4\n")
    tail = Background(
        qc_tail(
            "--config", str(settings), "tail", str(SLOW), str(STEADY), "-f", "--interval", "0.2"
        ),
        cli_env(emu, QC_BASE_URL=proxy.base_url),
    )
    try:
        tail.wait_for(6)
        proxy.stall(SLOW, "black-hole")
        emu.write(SLOW, [f"{SLOW} later 0"])
        emu.publish()
        assert wait_until(lambda: proxy.held > 0), tail.stderr()[-3000:]
        for round_ in range(3):
            line = f"{STEADY} round {round_}"
            emu.write(STEADY, [line])
            emu.publish()
            assert wait_until(lambda line=line: any(row.endswith(line) for row in tail.lines))
            assert proxy.held > 0
    finally:
        proxy.release()
        code, _ = tail.stop(signal.SIGTERM)
    assert code == 0
