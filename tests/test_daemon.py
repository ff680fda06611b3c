"""Living as a service: sd_notify over a real socket, the watchdog, and --detach."""

from __future__ import annotations

import fcntl
import itertools
import os
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tailer.daemon import Notifier
from tailer.emulator import Emulator
from tailer.emulator.faults import Fault

from .conftest import PROJECT, TOKEN, USER_ID, cli_env, qc_tail, secrets_in, terminated
from .conftest import daemon_config as conftest_daemon_config
from .loki_recorder import LokiRecorder


class NotifySocket:
    """A datagram socket standing in for systemd's, recording each message and its time."""

    def __init__(self, address: str, bind_to: str) -> None:
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(bind_to)
        self.sock.settimeout(0.05)
        self.messages: list[tuple[float, str]] = []

    def collect(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(4096)
            except TimeoutError:
                continue
            self.messages.append((time.monotonic(), data.decode()))

    def wait_for(self, text: str, timeout: float = 20) -> None:
        deadline = time.monotonic() + timeout
        while not any(text in m for _, m in self.messages) and time.monotonic() < deadline:
            self.collect(0.1)
        assert any(text in m for _, m in self.messages), self.messages

    def pings(self, since: float) -> list[float]:
        return [at for at, m in self.messages if m == "WATCHDOG=1" and at >= since]


@pytest.fixture(params=["path", "abstract"])
def notify_socket(request, tmp_path: Path) -> Iterator[NotifySocket]:
    if request.param == "path":
        path = str(tmp_path / "notify.sock")
        listener = NotifySocket(path, path)
    else:
        name = f"qc-tail-test-{os.getpid()}-{time.monotonic_ns()}"
        listener = NotifySocket("@" + name, "\0" + name)
    yield listener
    listener.sock.close()


def test_notifier_is_a_no_op_without_systemd():
    notifier = Notifier(env={})
    assert notifier.send("READY=1") is False
    notifier.watchdog()
    assert notifier.watchdog_interval is None


def test_notifier_sends_to_path_and_abstract_sockets(notify_socket):
    notifier = Notifier(env={"NOTIFY_SOCKET": notify_socket.address, "WATCHDOG_USEC": "2000000"})
    notifier.ready("starting")
    notifier.status("starting")  # unchanged: not sent again
    notifier.status("following 1 project(s)")
    notifier.watchdog()
    notifier.watchdog()  # within the interval: not sent again
    notify_socket.collect(0.3)
    assert [m for _, m in notify_socket.messages] == [
        "READY=1\nSTATUS=starting",
        "STATUS=following 1 project(s)",
        "WATCHDOG=1",
    ]
    assert notifier.watchdog_interval == 1.0


def daemon_config(tmp_path: Path, emu: Emulator) -> Path:
    return conftest_daemon_config(
        tmp_path,
        emu,
        timeout=2,
        poll="interval = 0.05\nmax_interval = 0.1",
        discovery="enabled = false",
        more=f"[[follow]]\nproject_id = {PROJECT}\n",
    )


def test_ready_status_and_a_watchdog_that_stops_when_the_loop_cannot_progress(
    tmp_path, emu, notify_socket
):
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["hello"])
    emu.publish()
    env = cli_env(emu, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="400000")
    config = daemon_config(tmp_path, emu)  # a stalled request's timeout, then its retry's
    config.write_text(config.read_text().replace("timeout = 2", "timeout = 10"))  # wait,
    process = subprocess.Popen(  # would ping: they must fall well after the stalled window
        qc_tail("--config", str(config), "run"),
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        notify_socket.wait_for("READY=1")
        ready = next(m for _, m in notify_socket.messages if "READY=1" in m)
        assert "STATUS=following 1 project(s)" in ready
        start = time.monotonic()
        notify_socket.collect(2.0)
        healthy = notify_socket.pings(start)
        assert 3 <= len(healthy) <= 12  # every 0.2 s, give or take a small, busy machine

        emu.stall(True)  # requests hang: the loop is stuck until its 10 s timeout
        notify_socket.collect(1.0)  # pings sent as the stall began (the next poll hangs)
        stalled_from = time.monotonic()
        notify_socket.collect(1.5)
        assert notify_socket.pings(stalled_from) == []

        emu.stall(False)
        recovered_from = time.monotonic()
        notify_socket.collect(4.0)
        assert notify_socket.pings(recovered_from)
    finally:
        emu.stall(False)
        code, stderr = terminated(process)
    notify_socket.collect(0.3)
    assert code == 0, stderr
    assert secrets_in(stderr) == []
    assert any(m == "STOPPING=1" for _, m in notify_socket.messages)


def test_a_long_catch_up_is_ready_early_and_keeps_the_watchdog_fed(tmp_path, notify_socket):
    """A backlog read at a real API's pace takes one turn of the loop: READY=1 must not wait
    for its end (systemd's start timeout), nor the watchdog pings (it would abort us)."""
    lines = [f"backlog {i}" for i in range(30_000)]  # 121 windows, 0.1 s each, 4 at a time
    with Emulator(user_id=USER_ID, api_token=TOKEN, latency=0.1).start() as emu:
        emu.add_project(PROJECT, "slow")
        deploy_id = emu.deploy(PROJECT)
        emu.write(PROJECT, lines)
        emu.publish()
        config = daemon_config(tmp_path, emu)  # windows: an export would take no time at all
        config.write_text(
            config.read_text().replace("timeout = 2", 'timeout = 2\nexport = "never"')
        )
        env = cli_env(emu, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="400000")
        output = tmp_path / "out" / str(PROJECT) / f"{deploy_id}.log"
        process = subprocess.Popen(qc_tail("--config", str(config), "run"), env=env)
        try:
            complete_at = None
            deadline = time.monotonic() + 60
            while complete_at is None and time.monotonic() < deadline:
                notify_socket.collect(0.05)
                if output.exists() and output.read_bytes().count(b"\n") == len(lines):
                    complete_at = time.monotonic()
        finally:
            process.send_signal(signal.SIGTERM)
            process.wait(timeout=10)
    assert complete_at is not None
    ready_at = next(at for at, m in notify_socket.messages if "READY=1" in m)
    started = notify_socket.messages[0][0]
    assert ready_at < complete_at  # ready after the first lines, not after the whole backlog
    assert len([at for at in notify_socket.pings(started) if at < complete_at]) >= 2


def test_waiting_out_a_429_read_that_another_output_waits_for_keeps_the_watchdog_fed(
    tmp_path, emu, notify_socket
):
    """Files and Loki read the same windows, one request serving both: while the API asks
    for seconds of patience (429 with Retry-After), the output waiting for the other's read
    waits deliberately too, and systemd must go on hearing from us."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["hello"])
    with LokiRecorder(check_age=False) as loki:
        config = conftest_daemon_config(
            tmp_path,
            emu,
            timeout=2,
            poll="interval = 0.05\nmax_interval = 0.1",
            discovery="enabled = false",
            more=f'[output.loki]\nurl = "{loki.url}"\n[[follow]]\nproject_id = {PROJECT}\n',
        )
        env = cli_env(emu, NOTIFY_SOCKET=notify_socket.address, WATCHDOG_USEC="2000000")
        process = subprocess.Popen(
            qc_tail("--config", str(config), "run"), env=env, stderr=subprocess.PIPE, text=True
        )
        try:
            notify_socket.wait_for("READY=1")
            assert loki.wait_for_lines(1, timeout=20) == ["hello"]
            emu.faults.script([Fault("429", retry_after=4)] * 3, path="/live/logs/read")
            start = time.monotonic()
            notify_socket.collect(8.0)
            end = time.monotonic()
        finally:
            code, stderr = terminated(process)
    assert code == 0, stderr
    pings = [start, *notify_socket.pings(start), end]
    gaps = [later - earlier for earlier, later in itertools.pairwise(pings)]
    assert max(gaps) < 2.0, gaps  # WATCHDOG_USEC: systemd would have aborted us
    assert "worker_stalled" not in stderr


def test_detach_keeps_a_locked_pidfile_and_removes_it_on_sigterm(tmp_path, emu):
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["detached hello"])
    emu.publish()
    pidfile = tmp_path / "qc-tail.pid"
    started = subprocess.run(
        qc_tail(
            "--config",
            str(daemon_config(tmp_path, emu)),
            "run",
            "--detach",
            "--pidfile",
            str(pidfile),
        ),
        env=cli_env(emu),
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert started.returncode == 0, started.stderr
    deadline = time.monotonic() + 10
    while not (pidfile.exists() and pidfile.read_text().strip()) and time.monotonic() < deadline:
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    os.kill(pid, 0)  # alive
    with open(pidfile) as handle, pytest.raises(BlockingIOError):
        fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
    log = tmp_path / "out" / str(PROJECT) / f"{emu.deploy_ids(PROJECT)[-1]}.log"
    deadline = time.monotonic() + 10
    while not log.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert log.read_text() == "detached hello\n"
    assert (tmp_path / "state" / "qc-tail.log").exists()  # its events, with no terminal
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 5
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not pidfile.exists()
    with pytest.raises(ProcessLookupError):
        for _ in range(50):
            os.kill(pid, 0)
            time.sleep(0.05)


def test_a_token_file_open_to_others_is_refused_with_78(tmp_path, emu):
    token = tmp_path / "api-token"
    token.write_text("some-token\n")
    token.chmod(0o644)
    config = daemon_config(tmp_path, emu)
    config.write_text(config.read_text().replace("timeout = 2", f'api_token_file = "{token}"'))
    env = cli_env(emu)
    del env["QC_API_TOKEN"]
    result = subprocess.run(
        qc_tail("--config", str(config), "run", "--once"),
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 78
    assert str(token) in result.stderr and "0644" in result.stderr
    token.chmod(0o600)
    emu.deploy(PROJECT)
    result = subprocess.run(
        qc_tail("--config", str(config), "run", "--once"),
        env=env,
        capture_output=True,
        text=True,
        timeout=20,
        check=False,
    )
    assert result.returncode == 77  # now read, and refused by the emulator: a different token
