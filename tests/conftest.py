"""Shared fixtures: an emulator on loopback, and ways to run the real CLI against it."""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import json
import os
import random
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tailer.emulator import Emulator

USER_ID = 4321
TOKEN = "canary-5f1c0ffee0ddba11-token"  # never to appear in any output
LOKI_USER = "loki-canary-user"
LOKI_SECRET = "loki-canary-0b5e55ed-secret"  # Loki's password or bearer token: never shown
PROJECT = 777
_SINCE = int(time.time()) - 5
_LOKI_FORMS = [
    LOKI_SECRET,
    base64.b64encode(f"{LOKI_USER}:{LOKI_SECRET}".encode()).decode(),  # Basic
    base64.b64encode(f"{LOKI_SECRET}:".encode()).decode(),  # Basic, the token as user name
]


def secrets_in(text: str) -> list[str]:
    """The canary token, or any hash or Authorization value made from it, and Loki's canary
    password or token in any form sent, found in ``text``."""
    found = [TOKEN] if TOKEN in text else []
    found += [form for form in _LOKI_FORMS if form in text]
    for stamp_ in range(_SINCE, int(time.time()) + 5):
        digest = hashlib.sha256(f"{TOKEN}:{stamp_}".encode()).hexdigest()
        basic = base64.b64encode(f"{USER_ID}:{digest}".encode()).decode()
        found += [secret for secret in (digest, basic) if secret in text]
    return found


def assert_no_secrets_under(directory: Path) -> None:
    for path in directory.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes().decode("utf-8", "replace")
            assert secrets_in(text) == [], path


def stamp(i: int) -> str:
    """A line with a realistic timestamp prefix, unique by ``i``."""
    day, hour, minute, second = 1 + i // 86400 % 9, i // 3600 % 24, i // 60 % 60, i % 60
    return f"2026-03-0{day} {hour:02d}:{minute:02d}:{second:02d} msg {i}"


UNKNOWNS: dict[str, dict[str, Any]] = {
    "documented": {},
    "past-end-error": {"past_end": "error"},
    "strict-window": {"strict_window": True},
    "absolute-numbers": {"absolute_numbers": True},
    "bare-answers": {"bare_answers": True},
}
"""The emulator's switches for each way the API may behave where its documentation is silent:
``@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)`` runs a test in each."""
VARIANTS: dict[str, Any] = {"argvalues": list(UNKNOWNS.values()), "ids": list(UNKNOWNS)}


@pytest.fixture
def emu(request: pytest.FixtureRequest) -> Iterator[Emulator]:
    """An emulator with one project; every test using it must never send a window >= 250.
    Parametrized indirectly, it takes the switches of one of ``UNKNOWNS``."""
    switches = getattr(request, "param", {})
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=7, **switches).start() as emulator:
        emulator.add_project(PROJECT, "mean-reversion")
        yield emulator
        assert emulator.stats.oversized_windows == 0
        assert emulator.stats.max_window_seen < 250


def clock_env() -> dict[str, str]:
    """A moved clock (tests/clock_ahead) that the suite runs under, passed on to the CLI it
    starts: a child on the real clock would sign its requests a year away from the emulator's."""
    if not os.environ.get("QC_TAIL_CLOCK_AHEAD"):
        return {}
    return {name: os.environ.get(name, "") for name in ("QC_TAIL_CLOCK_AHEAD", "PYTHONPATH")}


def cli_env(emu: Emulator, **extra: str) -> dict[str, str]:
    """The environment of a user pointed at the emulator (and nothing else)."""
    env = {
        **clock_env(),
        "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
        "QC_BASE_URL": emu.base_url,
        "QC_USER_ID": str(USER_ID),
        "QC_API_TOKEN": TOKEN,
        "PYTHONUNBUFFERED": "1",
    }
    env.update(extra)
    return env


def daemon_config(
    tmp_path: Path,
    emu: Emulator,
    *,
    timeout: float = 5,
    poll: str = "interval = 0.05\nmax_interval = 0.2\ndrain = 1",
    discovery: str = 'enabled = true\ninterval = 0.5\nstart = "project"',
    more: str = "",
) -> Path:
    """A ``run`` config in ``tmp_path`` against ``emu``: state in ./state, files in ./out,
    the sections' bodies as given, and ``more`` (tables) after them."""
    path = tmp_path / "qc-tail.toml"
    path.write_text(
        f"""[api]
base_url = "{emu.base_url}"
user_id = {USER_ID}
timeout = {timeout}
[poll]
{poll}
[state]
dir = "{tmp_path / "state"}"
[discovery]
{discovery}
[output]
directory = "{tmp_path / "out"}"
{more}"""
    )
    return path


def qc_tail(*args: str) -> list[str]:
    """The command line of the real CLI, run by this interpreter, logging at DEBUG."""
    return [sys.executable, "-m", "tailer", "--log-level", "debug", *args]


def loaded(
    emu: Emulator, modules: tuple[str, ...], *args: str
) -> tuple[list[str], dict[str, bool]]:
    """The real CLI's stdout, and which of ``modules`` it had imported when it ended (at the
    default log level: what a command needs at start-up is what it imports)."""
    code = (
        "import atexit, json, sys\n"
        "from tailer.cli import main\n"
        f"atexit.register(lambda: print(json.dumps({{m: m in sys.modules for m in {modules!r}}}),"
        " file=sys.stderr))\n"
        "main(sys.argv[1:])\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code, *args],
        env=cli_env(emu),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout.splitlines(), json.loads(result.stderr.splitlines()[-1])


def run(
    emu: Emulator, *args: str, timeout: float = 60, **env: str
) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        qc_tail(*args),
        env=cli_env(emu, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=Path(__file__).parent,
    )
    assert secrets_in(result.stdout + result.stderr) == []
    return result


def kill_when(
    process: subprocess.Popen[Any], condition: Callable[[], bool], rng: random.Random
) -> bool:
    """SIGKILL ``process`` at an instant ``condition`` holds (True), or after 5 s (False).

    The process is frozen with SIGSTOP at random instants until one finds ``condition`` true,
    so the kill lands exactly in a window a crash-safe daemon must survive.
    """
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and process.poll() is None:
        process.send_signal(signal.SIGSTOP)
        if condition():
            process.send_signal(signal.SIGKILL)
            return True
        process.send_signal(signal.SIGCONT)
        time.sleep(rng.uniform(0, 0.002))
    process.send_signal(signal.SIGKILL)
    return False


@contextlib.contextmanager
def tmpfs(where: Path, size: str) -> Iterator[Path]:
    """A real tmpfs of ``size`` at ``where``, to run out of space for real (root and mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs to fill it needs root")
    where.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(where)]
    mounted = subprocess.run(mount, capture_output=True, text=True, check=False)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield where
    finally:
        subprocess.run(["umount", "-l", str(where)], check=False)


def fill(filler: Path) -> None:
    """Write zeros to ``filler`` until the file system has no room left."""
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError as exc:
        assert exc.errno == errno.ENOSPC
    finally:
        os.close(fd)


@pytest.fixture
def tiny_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A real 16 KiB tmpfs (needs root and mount)."""
    with tmpfs(tmp_path / "tiny", "16k") as mountpoint:
        yield mountpoint


class Background:
    """A command running in the background, its stdout collected line by line into
    ``lines``. stderr is read all along too: DEBUG events would otherwise fill the pipe and
    block the command."""

    def __init__(self, args: list[str], env: dict[str, str]) -> None:
        self.process = subprocess.Popen(
            args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        self.lines: list[str] = []
        self._stderr: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, daemon=True),
            threading.Thread(target=self._read_stderr, daemon=True),
        ]
        for reader in self._readers:
            reader.start()

    def _read(self) -> None:
        assert self.process.stdout is not None
        for line in self.process.stdout:
            self.lines.append(line.rstrip("\n"))

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        self._stderr.extend(self.process.stderr)

    def stderr(self) -> str:
        """What it wrote to stderr so far (its events)."""
        return "".join(self._stderr)

    def wait_for(self, count: int, timeout: float = 30) -> list[str]:
        """The lines so far, once there are ``count`` (a hang guard: ``timeout``)."""
        deadline = time.monotonic() + timeout
        while len(self.lines) < count and time.monotonic() < deadline:
            time.sleep(0.05)
        return list(self.lines)

    def stop(self, signum: int) -> tuple[int, str]:
        """Send ``signum``; the exit status and everything written to stderr."""
        self.process.send_signal(signum)
        code = self.process.wait(timeout=10)  # a hang guard; SIGTERM's promise is 2 s
        for reader in self._readers:
            reader.join(timeout=5)
        assert self.process.stdout is not None and self.process.stderr is not None
        self.process.stdout.close()
        self.process.stderr.close()
        return code, "".join(self._stderr)


def terminated(process: subprocess.Popen[str]) -> tuple[int, str]:
    """SIGTERM to a process started with ``stderr=PIPE``: its exit status and its stderr."""
    process.send_signal(signal.SIGTERM)
    code = process.wait(timeout=10)  # a hang guard; SIGTERM's promise is 2 s
    assert process.stderr is not None
    with process.stderr:
        return code, process.stderr.read()


@contextlib.contextmanager
def trickling(head: bytes, drip: bytes, every: float = 0.2) -> Iterator[str]:
    """A server that sends ``head`` at once, then ``drip`` one byte every ``every`` seconds:
    each read gets a byte in time, so no socket timeout ever trips."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            with conn:
                conn.recv(65536)
                try:
                    conn.sendall(head)
                    for byte in drip:
                        if stop.wait(every):
                            break
                        conn.sendall(bytes([byte]))
                except OSError:
                    pass  # the client gave up: what the test wants

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{listener.getsockname()[1]}/x"
    finally:
        stop.set()
        listener.close()
        thread.join(timeout=10)
