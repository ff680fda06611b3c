"""The scheduler's pace and its log discipline, on a fake clock against the emulator."""

from __future__ import annotations

import io
import itertools
import os
import signal
import threading
from collections.abc import Callable
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt
from tailer.cursor import Cursor
from tailer.emulator import Emulator, Fault
from tailer.errors import CursorSaveError, OutputError, QcTailError
from tailer.follower import ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import GROUP_LINES, Scheduler
from tailer.shutdown import Interrupted, Shutdown
from tailer.sinks.files import FileSink
from tailer.sinks.recovery import FileMark
from tailer.sinks.stdout import StdoutSink
from tailer.store import CursorStore

from .conftest import PROJECT, TOKEN, USER_ID, VARIANTS


class FakeTime(Shutdown):
    """A stop flag whose waits advance a fake clock instead of sleeping; stops at ``until``."""

    def __init__(self, until: float) -> None:
        super().__init__()
        self.now = 0.0
        self.until = until

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now += max(0.0, seconds)
        if self.now >= self.until:
            self.event.set()
        return self.event.is_set()


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


def scheduler(api: QcApi, time: FakeTime, out: io.StringIO) -> Scheduler:
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), clock=time.clock)
    return Scheduler(
        [Pipeline([StdoutSink(out)], [follower])],
        time,
        interval=1.0,
        max_interval=8.0,
        clock=time.clock,
    )


@pytest.mark.parametrize("emu", **VARIANTS, indirect=True)
def test_an_idle_deployment_backs_off_to_max_interval(emu, api):
    emu.deploy(PROJECT)
    time = FakeTime(until=60)
    polls: list[float] = []
    scheduler(api, time, io.StringIO()).run(on_idle=lambda: polls.append(time.now))
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(polls)]
    assert gaps[:4] == [3.236, 4.0, 8.0, 8.0]  # 2 s, plus a one-time shift of 0.618 x 2 s
    assert set(gaps[3:]) == {8.0}
    # one request per idle poll: the first poll also finds the deployment (2 requests)
    assert emu.stats.by_path["/live/logs/read"] == len(polls) + 1


def test_lines_bring_back_the_fast_pace(emu, api):
    emu.deploy(PROJECT)
    time = FakeTime(until=40)
    out = io.StringIO()
    polls: list[float] = []

    def on_idle() -> None:
        polls.append(time.now)
        if len(polls) == 5:
            emu.write(PROJECT, ["news"])
            emu.publish()

    scheduler(api, time, out).run(on_idle=on_idle)
    gaps = [round(b - a, 3) for a, b in itertools.pairwise(polls)]
    assert gaps[:7] == [3.236, 4.0, 8.0, 8.0, 8.0, 1.0, 2.0]  # news: back to 1 s, then slower
    assert out.getvalue() == "news\n"


def test_an_outage_logs_once_when_it_starts_and_once_when_it_ends(emu, api):
    emu.deploy(PROJECT)
    time = FakeTime(until=120)
    emu.faults.script([Fault("503")] * 12)
    with capture_logs() as events:
        scheduler(api, time, io.StringIO()).run()
    names = [e["event"] for e in events if e["log_level"] in ("warning", "info", "error")]
    assert names.count("poll_failing") == 1
    assert names.count("poll_recovered") == 1
    recovered = next(e for e in events if e["event"] == "poll_recovered")
    assert recovered["failures"] == 12


def test_many_idle_deployments_poll_spread_out_not_in_bursts(emu, api):
    projects = range(1000, 1010)
    for project_id in projects:
        emu.add_project(project_id, f"p{project_id}")
        emu.deploy(project_id)
    time = FakeTime(until=1.5)  # the first round, and the shifted second polls
    followers = [
        ProjectFollower(api, project_id, start=Start(StartAt.END), clock=time.clock)
        for project_id in projects
    ]
    scheduler = Scheduler(
        [Pipeline([StdoutSink(io.StringIO())], followers)],
        time,
        interval=1.0,
        max_interval=1.0,
        clock=time.clock,
    )
    scheduler.run()
    dues = sorted(slot.due for slot in scheduler.slots)
    assert len({round(due, 6) for due in dues}) == 10  # no two together
    assert dues[-1] - dues[0] > 0.8  # spread over most of the interval


class Unreachable:
    """An output that never takes a line (a Loki that is down)."""

    def write(self, records: object) -> None:
        raise OutputError("ConnectionError", output="Loki at http://127.0.0.1:9/push")

    def flush(self) -> None: ...

    def close(self) -> None: ...

    def stamp(self, cursor: Cursor) -> Cursor:
        return cursor

    def recover(self, cursors: object) -> None: ...


def test_poll_once_delivers_to_every_output_before_naming_the_one_left_behind(emu, api):
    projects = (1001, 1002, 1003)
    for project_id in projects:
        emu.add_project(project_id, f"p{project_id}")
        emu.deploy(project_id)
        emu.write(project_id, [f"line {n} of {project_id}" for n in range(3)])
    emu.publish()

    def followers() -> list[ProjectFollower]:
        return [ProjectFollower(api, p, start=Start(StartAt.DEPLOYMENT)) for p in projects]

    out = io.StringIO()
    down = Pipeline([Unreachable()], followers(), name="Loki")
    working = Pipeline([StdoutSink(out, prefix=False)], followers(), name="stdout")
    scheduler = Scheduler([working, down], Shutdown(), interval=1.0, max_interval=1.0)
    scheduler.slots.sort(key=lambda slot: slot.follower.project_id)  # as discovery interleaves
    with pytest.raises(QcTailError) as caught:
        scheduler.poll_once()
    assert caught.value.exit_code == 74
    assert str(caught.value) == (
        "Loki at http://127.0.0.1:9/push could not be brought up to date: ConnectionError; "
        "up to date: stdout"
    )
    expected = [f"line {n} of {p}" for p in projects for n in range(3)]
    assert out.getvalue().splitlines() == expected


def test_a_long_catch_up_takes_turns_with_the_first_poll_of_others(emu, api):
    """One project has a backlog of several groups, another a line: the other's line is
    delivered after the first group of the catch-up, not after all of it."""
    emu.add_project(PROJECT + 1, "small")
    emu.deploy(PROJECT)
    emu.write(PROJECT, [f"backlog {i}" for i in range(3 * GROUP_LINES)])
    emu.deploy(PROJECT + 1)
    emu.write(PROJECT + 1, ["small news"])
    time = FakeTime(until=10)
    out = io.StringIO()
    followers = [
        ProjectFollower(api, project_id, start=Start(StartAt.DEPLOYMENT), clock=time.clock)
        for project_id in (PROJECT, PROJECT + 1)
    ]
    Scheduler(
        [Pipeline([StdoutSink(out, prefix=True)], followers)],
        time,
        interval=1.0,
        max_interval=8.0,
        clock=time.clock,
    ).run()
    printed = out.getvalue().splitlines()
    assert len(printed) == 3 * GROUP_LINES + 1
    assert GROUP_LINES <= printed.index("[small] small news") < 2 * GROUP_LINES


class FlakyStore(CursorStore):
    """A real cursor store whose saves fail (as on a full disk) while ``full`` is set."""

    full = False

    def save(self, cursor: Cursor) -> None:
        if self.full:
            raise CursorSaveError(
                "cannot save a cursor: the disk is full", output="state directory"
            )
        super().save(cursor)


def to_files(
    api: QcApi,
    tmp_path: Path,
    store: CursorStore,
    until: float,
    on_turn: Callable[[int], None],
    *,
    start: StartAt = StartAt.DEPLOYMENT,
    max_interval: float = 8.0,
) -> tuple[FileSink, Pipeline]:
    """Run the follower of PROJECT from ``start``, to files under ``tmp_path`` with its
    cursors in ``store``, on a fake clock until ``until``; ``on_turn(n)`` after turn n."""
    files = FileSink(tmp_path / "out")
    follower = ProjectFollower(api, PROJECT, start=Start(start), clock=lambda: 0.0)
    time = FakeTime(until=until)
    turns = itertools.count(1)
    pipeline = Pipeline([files], [follower], save=store.save)
    Scheduler([pipeline], time, interval=1.0, max_interval=max_interval, clock=time.clock).run(
        on_idle=lambda: on_turn(next(turns))
    )
    return files, pipeline


def test_cursors_a_full_state_directory_refused_are_saved_later_and_no_line_is_doubled(
    emu, api, tmp_path
):
    emu.deploy(PROJECT)
    store = FlakyStore(tmp_path / "state")

    def on_turn(turn: int) -> None:
        if turn == 1:  # the first lines are out; now the disk fills up
            store.full = True
            emu.write(PROJECT, ["two", "three"])
            emu.publish()
        if turn == 6:
            store.full = False

    emu.write(PROJECT, ["one"])
    emu.publish()
    with capture_logs() as events:
        files, pipeline = to_files(api, tmp_path, store, 60, on_turn)
    deploy_id = emu.deploy_ids(PROJECT)[-1]
    assert files.path(PROJECT, deploy_id).read_text() == "one\ntwo\nthree\n"
    (saved,) = store.load_all().values()
    assert saved.position == 3 and FileMark.of(saved).size == len("one\ntwo\nthree\n")
    assert pipeline.unsaved == {}
    names = [e["event"] for e in events if e["log_level"] in ("warning", "info", "error")]
    assert names.count("poll_failing") == 1 and names.count("poll_recovered") == 1


def test_on_a_pool_in_the_main_thread_a_stop_lets_the_file_write_in_hand_finish(emu, tmp_path):
    """Polls on a pool's threads, the loop in the main thread (as ``tail -f`` would run it):
    SIGTERM mid-write ends the run only once the write is done and its cursor saved."""
    writing, release = threading.Event(), threading.Event()
    ended = threading.Event()
    waited: list[bool] = []

    def slow_write(fd: int, data: memoryview) -> int:
        writing.set()
        release.wait(timeout=20)
        return os.write(fd, data)

    def stop_mid_write() -> None:
        if writing.wait(timeout=20):
            os.kill(os.getpid(), signal.SIGTERM)
            threading.Event().wait(0.3)  # the run must still be waiting for the write
        waited.append(not ended.is_set())
        release.set()

    emu.deploy(PROJECT)
    emu.write(PROJECT, ["one", "two"])
    emu.publish()
    api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=RetryPolicy(max_attempts=1))
    files = FileSink(tmp_path / "out", write=slow_write)
    store = CursorStore(tmp_path / "state")
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.DEPLOYMENT))
    shutdown = Shutdown()
    scheduler = Scheduler(
        [Pipeline([files], [follower], save=store.save)],
        shutdown,
        interval=0.05,
        max_interval=0.1,
        polls=4,
    )
    stopper = threading.Thread(target=stop_mid_write)
    shutdown.install()
    try:
        stopper.start()
        with pytest.raises(Interrupted):
            try:
                scheduler.run()
            finally:
                ended.set()
    finally:
        shutdown.uninstall()
        release.set()
        stopper.join(timeout=10)
    assert waited == [True]
    deploy_id = emu.deploy_ids(PROJECT)[-1]
    assert files.path(PROJECT, deploy_id).read_text().splitlines() == ["one", "two"]
    (cursor,) = store.load_all().values()
    assert cursor.position - emu.deployment_offset(PROJECT, deploy_id) == 2


class DownFor(StdoutSink):
    """Standard output behind something that refuses its first ``times`` writes (a Loki
    that is down for a while), then takes every line."""

    def __init__(self, out: io.StringIO, times: int) -> None:
        super().__init__(out)
        self.refusals = times

    def write(self, records: object) -> None:
        if self.refusals:
            self.refusals -= 1
            raise OutputError("ConnectionError", output="Loki at http://127.0.0.1:9/push")
        super().write(records)  # type: ignore[arg-type]


def test_a_group_an_output_refused_is_delivered_before_any_more_is_read(emu, api):
    """The follower hands each batch out once; the scheduler keeps a group it could not
    deliver and delivers it first when the output is back, then the lines that came since:
    each line once, in order."""
    emu.deploy(PROJECT)
    first = [f"first {i}" for i in range(GROUP_LINES + 10)]
    emu.write(PROJECT, first)
    emu.publish()
    time = FakeTime(until=30)
    out = io.StringIO()
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.DEPLOYMENT), clock=time.clock)
    scheduler = Scheduler(
        [Pipeline([DownFor(out, times=3)], [follower])],
        time,
        interval=1.0,
        max_interval=2.0,
        clock=time.clock,
    )

    later: list[str] = []

    def on_idle() -> None:
        if time.now > 10 and not later:  # the output is back by then
            later.append("later")
            emu.write(PROJECT, later)
            emu.publish()

    scheduler.run(on_idle=on_idle)
    assert out.getvalue().splitlines() == [*first, "later"]


class FillsUp(FlakyStore):
    """A state directory that takes ``room`` cursors, then is full (until ``full`` is
    cleared: space was made)."""

    def __init__(self, directory: Path, room: int) -> None:
        super().__init__(directory)
        self.room: int | None = room

    def save(self, cursor: Cursor) -> None:
        super().save(cursor)
        if self.room is not None:
            self.room -= 1
            if self.room == 0:
                self.full, self.room = True, None


def test_a_catch_up_whose_cursor_the_state_directory_refused_is_not_written_twice(
    emu, api, tmp_path
):
    """A full group is in the files when its cursor save fails (a full state directory): it
    is delivered, only its cursor waits. Delivered again, it would be in the files twice."""
    emu.deploy(PROJECT)
    backlog = [f"backlog {i}" for i in range(GROUP_LINES + 5)]
    emu.write(PROJECT, backlog)
    emu.publish()
    store = FillsUp(tmp_path / "state", room=1)  # the follower's first cursor, then full

    def on_turn(turn: int) -> None:
        if turn == 4:
            store.full = False

    files, _ = to_files(api, tmp_path, store, 30, on_turn)
    deploy_id = emu.deploy_ids(PROJECT)[-1]
    assert files.path(PROJECT, deploy_id).read_text().splitlines() == backlog
    (saved,) = store.load_all().values()
    assert saved.position == len(backlog)


def test_a_redeploy_whose_first_cursor_the_state_directory_refused_loses_no_older_line(
    emu, api, tmp_path
):
    """A poll finds the old deployment's last lines and a redeploy; the new deployment's
    first cursor is saved before any of them, and the state directory refuses it. The old
    deployment's lines read just before are delivered once it takes cursors again."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 1"])
    emu.publish()
    store = FlakyStore(tmp_path / "state")

    def on_turn(turn: int) -> None:
        if turn == 1:  # "old 1" is out; the last old lines, a redeploy, a full disk
            emu.write(PROJECT, ["old 2", "old 3"])
            new = emu.deploy(PROJECT)
            emu.write(PROJECT, ["new 1"], new)
            emu.publish()
            store.full = True
        if turn == 4:
            store.full = False

    files, _ = to_files(api, tmp_path, store, 60, on_turn, max_interval=2.0)
    new = emu.deploy_ids(PROJECT)[-1]
    assert files.path(PROJECT, old).read_text().splitlines() == ["old 1", "old 2", "old 3"]
    assert files.path(PROJECT, new).read_text().splitlines() == ["new 1"]


def test_every_deployment_a_redeploy_began_is_saved_though_the_first_save_was_refused(
    emu, api, tmp_path
):
    """Two redeploys between polls begin two deployments, each saved where it starts before
    anything else. The state directory refuses the first: once it takes cursors again, both
    are saved, and a restart reads the lines the latest one got while qc-tail was down."""
    emu.deploy(PROJECT)
    store = FlakyStore(tmp_path / "state")

    def on_turn(turn: int) -> None:
        if turn == 1:  # two redeploys, a line of the first; the disk is full
            middle = emu.deploy(PROJECT)
            emu.deploy(PROJECT)
            emu.write(PROJECT, ["middle"], middle)
            emu.publish()
            store.full = True
        if turn == 4:
            store.full = False

    files, _ = to_files(api, tmp_path, store, 30, on_turn, start=StartAt.END, max_interval=2.0)
    latest = emu.deploy_ids(PROJECT)[-1]
    assert (PROJECT, latest) in store.load_all()
    emu.write(PROJECT, ["while down"], latest)  # then a restart
    emu.publish()
    saved = store.load_all()
    restarted = ProjectFollower(
        api,
        PROJECT,
        start=Start(StartAt.END),
        saved={d: c for (_, d), c in saved.items()},
        clock=lambda: 0.0,
    )
    again = Pipeline([files], [restarted], save=store.save)
    Scheduler([again], FakeTime(until=5), interval=1.0, max_interval=2.0).poll_once()
    assert files.path(PROJECT, latest).read_text() == "while down\n"


def test_a_redeploy_while_down_is_read_from_its_first_line_whatever_the_start(emu, api, tmp_path):
    """``start = "end"`` places the first deployment a follower meets; a redeploy found while
    it runs is read from its first line. One that happened while qc-tail was down (the
    deployment followed before still unfinished) is a redeploy all the same: its lines
    published meanwhile are not skipped."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["old before"])
    emu.publish()
    store = CursorStore(tmp_path / "state")
    files = FileSink(tmp_path / "out")

    def daemon() -> Scheduler:
        saved = {d: c for (_, d), c in store.load_all().items()}
        follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END), saved=saved)
        pipeline = Pipeline([files], [follower], save=store.save, saved=store.load_all())
        return Scheduler([pipeline], FakeTime(until=5), interval=1.0, max_interval=2.0)

    daemon().poll_once()
    emu.write(PROJECT, ["old 1"])
    emu.publish()
    daemon().poll_once()
    new = emu.deploy(PROJECT)  # while qc-tail is down
    emu.write(PROJECT, ["new 1", "new 2"], new)
    emu.publish()
    daemon().poll_once()
    assert files.path(PROJECT, old).read_text() == "old 1\n"
    assert files.path(PROJECT, new).read_text() == "new 1\nnew 2\n"
