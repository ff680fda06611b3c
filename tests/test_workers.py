"""Each output on its own worker: what one output does holds back no other."""

from __future__ import annotations

import io
import os
import signal
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import DiscoveryConfig, StartAt
from tailer.cursor import Cursor
from tailer.discovery import Discovery
from tailer.emulator import Emulator
from tailer.follower import ProjectFollower, Start
from tailer.health import Health
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.shutdown import Interrupted, Shutdown
from tailer.sinks.files import FileSink
from tailer.sinks.stdout import StdoutSink
from tailer.store import CursorStore
from tailer.workers import Workers

from .conftest import TOKEN, USER_ID, cli_env, daemon_config, qc_tail, secrets_in

PROJECT = 515
LINES = [f"line {n}" for n in range(5)]


@pytest.fixture
def emu() -> Iterator[Emulator]:
    with Emulator(user_id=USER_ID, api_token=TOKEN, seed=5).start() as emulator:
        emulator.add_project(PROJECT, "steady")
        emulator.deploy(PROJECT)
        emulator.write(PROJECT, LINES)
        emulator.publish()
        yield emulator


def client(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1, auth_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy)


def worker(
    emu: Emulator,
    pipeline: Pipeline,
    shutdown: Shutdown,
    health: Health | None = None,
    polls: int = 1,
) -> Scheduler:
    pipeline.followers.append(
        ProjectFollower(client(emu), PROJECT, start=Start(StartAt.DEPLOYMENT))
    )
    return Scheduler(
        [pipeline], shutdown, interval=0.05, max_interval=0.1, health=health, polls=polls
    )


def test_a_stop_lets_a_worker_finish_the_file_write_in_hand(emu, tmp_path):
    """SIGTERM while a worker writes a file: the write is finished and its cursor saved
    before the run ends (with Interrupted, as a signal in the main thread ends it)."""
    writing, release = threading.Event(), threading.Event()
    ended = threading.Event()

    def slow_write(fd: int, data: memoryview) -> int:
        writing.set()
        release.wait(timeout=20)
        return os.write(fd, data)

    def stop_mid_write() -> None:
        if writing.wait(timeout=20):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(0.3)  # the run must still be waiting for the write
        waited.append(not ended.is_set())
        release.set()

    files = FileSink(tmp_path / "out", write=slow_write)
    store = CursorStore(tmp_path / "state")
    shutdown = Shutdown()
    workers = Workers([worker(emu, Pipeline([files], save=store.save), shutdown)], shutdown)
    waited: list[bool] = []
    stopper = threading.Thread(target=stop_mid_write)
    shutdown.install()
    try:
        stopper.start()
        with pytest.raises(Interrupted) as interrupted:
            try:
                workers.run()
            finally:
                ended.set()
    finally:
        shutdown.uninstall()
        release.set()
        stopper.join(timeout=10)
    assert interrupted.value.signum == signal.SIGTERM
    assert waited == [True]
    deploy_id = emu.deploy_ids(PROJECT)[-1]
    assert files.path(PROJECT, deploy_id).read_text().splitlines() == LINES
    (cursor,) = store.load_all().values()
    assert cursor.position - emu.deployment_offset(PROJECT, deploy_id) == len(LINES)


class HungPush:
    """An output whose write never returns (a push to a Loki that never answers)."""

    def __init__(self) -> None:
        self.unhang = threading.Event()

    def write(self, records: object) -> None:
        self.unhang.wait(timeout=30)

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def stamp(self, cursor: Cursor) -> Cursor:
        return cursor

    def recover(self, cursors: object) -> None: ...


@pytest.mark.parametrize("polls", [1, 4])
def test_a_hung_push_holds_back_no_other_output_and_stops_the_watchdog(emu, polls):
    """One worker stuck in a push: the other delivers all the same; the watchdog pings
    (``alive``) stop, with one event naming the output stuck; a stop ends the run at once
    (an interruptible push is abandoned). So too when each worker polls on a pool: a poll
    stuck in hand is no sign of life, however often the loop wakes."""
    out = io.StringIO()
    hung = HungPush()
    shutdown = Shutdown()
    schedulers = [
        worker(emu, Pipeline([StdoutSink(out)], name="stdout"), shutdown, polls=polls),
        worker(emu, Pipeline([hung], name="Loki", interruptible=True), shutdown, polls=polls),
    ]
    workers = Workers(schedulers, shutdown, stall=0.3)
    alive: list[bool] = []
    started = time.monotonic()

    def tick() -> None:
        alive.append(workers.alive())
        delivered = out.getvalue().splitlines() == LINES
        if (delivered and not alive[-1]) or time.monotonic() - started > 20:  # a hang guard
            shutdown.request()

    try:
        with capture_logs() as events:
            workers.run(on_tick=tick)
    finally:
        hung.unhang.set()
    assert out.getvalue().splitlines() == LINES
    assert alive[0] is True and alive[-1] is False
    stalled = [e for e in events if e["event"] == "worker_stalled"]
    assert [e["outputs"] for e in stalled] == ["Loki"]


class PatientPush(HungPush):
    """An output whose write waits out a long outage (retries, each wait a sign of life)."""

    def __init__(self, shutdown: Shutdown) -> None:
        super().__init__()
        self.shutdown = shutdown
        self.written = threading.Event()

    def write(self, records: object) -> None:
        for _ in range(10):
            self.shutdown.wait(0.1)
        self.written.set()


@pytest.mark.parametrize("polls", [1, 4])
def test_a_worker_waiting_out_an_outage_in_a_poll_is_alive(emu, polls):
    """The waits of a poll in hand show life for its worker, on a pool's thread too."""
    shutdown = Shutdown()
    patient = PatientPush(shutdown)
    scheduler = worker(emu, Pipeline([patient], name="Loki"), shutdown, polls=polls)
    workers = Workers([scheduler], shutdown, stall=0.3)
    alive: list[bool] = []
    started = time.monotonic()

    def tick() -> None:
        alive.append(workers.alive())
        if patient.written.is_set() or time.monotonic() - started > 20:  # a hang guard
            shutdown.request()

    workers.run(on_tick=tick)
    assert patient.written.is_set()
    assert alive and all(alive)


def test_credentials_refused_in_every_worker_are_said_once(emu):
    """Both workers' requests are refused for a while (a token being rotated): one event
    when it starts, one when it ends, and lines keep their way once it is over."""
    outs = [io.StringIO(), io.StringIO()]
    shutdown, health = Shutdown(), Health()
    schedulers = [worker(emu, Pipeline([StdoutSink(out)]), shutdown, health) for out in outs]
    workers = Workers(schedulers, shutdown)
    phase: list[object] = ["delivering"]
    started = time.monotonic()

    def tick() -> None:
        if phase[-1] == "delivering" and all(o.getvalue().splitlines() == LINES for o in outs):
            emu.faults.random(rate=1.0, kinds=("auth",))
            emu.write(PROJECT, ["after"])
            emu.publish()
            phase.append(time.monotonic())
        elif isinstance(phase[-1], float) and time.monotonic() - phase[-1] > 1.0:
            emu.faults.clear()  # refused for a while, then taken again
            phase.append("over")
        if all(o.getvalue().splitlines() == [*LINES, "after"] for o in outs):
            shutdown.request()
        if time.monotonic() - started > 30:  # a hang guard
            shutdown.request()

    with capture_logs() as events:
        workers.run(on_tick=tick)
    assert phase[-1] == "over"
    assert [o.getvalue().splitlines() for o in outs] == [[*LINES, "after"]] * 2
    said = [e["event"] for e in events if e["event"].startswith("auth_")]
    assert said == ["auth_failing", "auth_recovered"]


def test_workers_list_the_fleet_once_per_interval(emu):
    """Each worker has its own discovery, due on its own; one request serves them all."""
    now = [0.0]
    config = DiscoveryConfig(enabled=True, interval=10.0)
    first = Discovery(client(emu), config, clock=lambda: now[0])
    second = first.share()
    running = {PROJECT: emu.deploy_ids(PROJECT)[-1]}
    assert first.running() == second.running() == running
    assert emu.stats.by_path["/live/list"] == 1
    now[0] = 10.0
    assert second.running() == first.running() == running  # the other asks, this time
    assert emu.stats.by_path["/live/list"] == 2
    assert first.due == second.due == 20.0
    assert first.running() == running  # alone, asked again: asked anew, as before
    assert emu.stats.by_path["/live/list"] == 3


def files_and_loki(tmp_path: Path, emu: Emulator, loki_url: str) -> Path:
    return daemon_config(
        tmp_path,
        emu,
        poll="interval = 0.2\nmax_interval = 1",
        discovery='enabled = true\ninterval = 0.5\nstart = "deployment"',
        more=f'[output.loki]\nurl = "{loki_url}"\n',
    )


def lines_in(path: Path) -> int:
    return path.read_bytes().count(b"\n") if path.exists() else 0


def test_a_loki_that_never_answers_holds_back_no_file(tmp_path):
    """A Loki that takes the connection and never answers: each push hangs for its timeouts
    and retries. Meanwhile the file keeps up with every line published, batch after batch."""
    with (
        Emulator(user_id=USER_ID, api_token=TOKEN, seed=3).start() as emu,
        socket.create_server(("127.0.0.1", 0), backlog=64) as black_hole,  # never accepts
    ):
        emu.add_project(PROJECT, "steady")
        deploy_id = emu.deploy(PROJECT)
        url = f"http://127.0.0.1:{black_hole.getsockname()[1]}/loki/api/v1/push"
        process = subprocess.Popen(
            qc_tail("--config", str(files_and_loki(tmp_path, emu, url)), "run"),
            env=cli_env(emu),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        log = tmp_path / "out" / str(PROJECT) / f"{deploy_id}.log"
        published = 0
        try:
            for batch in range(6):
                emu.write(PROJECT, [f"batch {batch} line {n}" for n in range(10)])
                emu.publish()
                published += 10
                deadline = time.monotonic() + 15  # a hang guard: it takes well under a second
                while lines_in(log) < published and time.monotonic() < deadline:
                    time.sleep(0.05)
                assert lines_in(log) == published, f"the file was held back at batch {batch}"
        finally:
            process.send_signal(signal.SIGTERM)
            try:
                code = process.wait(timeout=10)
            finally:
                process.kill()
                assert process.stderr is not None
                with process.stderr:
                    stderr = process.stderr.read()
    assert code == 0, stderr
    assert "Traceback" not in stderr
    assert secrets_in(stderr) == []


def test_a_worker_that_found_another_asking_takes_that_answer_however_old(emu):
    """Found asking, the other worker is left to it, and its answer taken at the next look:
    even if by then it is an interval old, and the other asking anew (were it refused for
    age, two workers in step would miss each other's answers round after round)."""
    now = [0.0]
    config = DiscoveryConfig(enabled=True, interval=1.0)
    first = Discovery(client(emu), config, clock=lambda: now[0])
    second = first.share()
    asking = first._listing.lock
    with asking:  # the first worker is asking
        assert second.running() is None
    assert second.due == 1.0
    running = first.running()
    now[0] = 1.0
    with asking:  # and asking again as the second looks
        assert second.running() == running == {PROJECT: emu.deploy_ids(PROJECT)[-1]}
    assert emu.stats.by_path["/live/list"] == 1


def test_two_workers_reading_one_window_at_once_cost_one_request():
    """Both pipelines follow the same deployments, on their own threads, often at the same
    moment: one read serves both, even when the second asks while the first is in flight."""
    with Emulator(user_id=USER_ID, api_token=TOKEN, latency=0.3).start() as emu:
        emu.add_project(PROJECT, "shared")
        deploy_id = emu.deploy(PROJECT)
        emu.write(PROJECT, ["one", "two"])
        emu.publish()
        policy = RetryPolicy(max_attempts=1, auth_attempts=1)
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, cache_ttl=1.0)
        windows: list[tuple[str, ...]] = []

        def read() -> None:
            windows.append(api.read_logs(PROJECT, deploy_id, 0, 2).logs)

        readers = [threading.Thread(target=read) for _ in range(2)]
        for reader in readers:
            reader.start()
            time.sleep(0.05)  # the second asks while the first waits for its answer
        for reader in readers:
            reader.join(timeout=10)
        assert windows == [("one", "two")] * 2
        assert emu.stats.by_path["/live/logs/read"] == 1
