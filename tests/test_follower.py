"""The follower across restarts: which deployments a restarted daemon still follows, and from
where, built from disk as `qc-tail run` builds it, against the emulator on loopback."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import pytest
from structlog.testing import capture_logs

from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import StartAt
from tailer.emulator import Emulator
from tailer.follower import Ended, ProjectFollower, Start
from tailer.pipeline import Pipeline
from tailer.prefetch import Prefetcher
from tailer.reader import Batch
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.shutdown import Shutdown
from tailer.sinks.files import FileSink
from tailer.store import CursorStore

from .conftest import PROJECT, TOKEN, USER_ID


def batches(follower: ProjectFollower) -> list[Batch]:
    """A poll's batches (not the deployments begun or ended on the way)."""
    return [event for event in follower.poll() if isinstance(event, Batch)]


@pytest.fixture
def api(emu: Emulator) -> QcApi:
    policy = RetryPolicy(max_attempts=1)
    return QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)


class Daemon:
    """The follower, file output and cursors of one run; a new one is a restart from disk."""

    def __init__(
        self,
        api: QcApi,
        root: Path,
        start: StartAt,
        deploy_id: str | None = None,
        drain: float = 600.0,
    ) -> None:
        self.store = CursorStore(root / "state")
        self.files = FileSink(root / "out")
        saved = self.store.load_all()
        self.files.recover(saved.values())
        mine = {d: c for (p, d), c in saved.items() if p == PROJECT}
        follower = ProjectFollower(
            api, PROJECT, deploy_id=deploy_id, start=Start(start), saved=mine, drain=drain
        )
        self.pipeline = Pipeline([self.files], [follower], save=self.store.save, saved=saved.keys())
        self.scheduler = Scheduler([self.pipeline], Shutdown(), interval=1.0, max_interval=1.0)

    def poll(self) -> None:
        self.scheduler.poll_once()

    def kill(self) -> None:
        """kill -9 between polls: everything in memory is gone."""
        self.pipeline.close()

    def lines(self, deploy_id: str) -> list[str]:
        path = self.files.path(PROJECT, deploy_id)
        return path.read_text().splitlines() if path.exists() else []


def test_a_restart_resumes_a_deployment_begun_at_its_end_with_no_new_line_yet(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """``start = "end"``: the first run starts after the lines already there and finds none
    new, so it delivers nothing. Lines written while it is down are new to it: the restart
    must deliver them, not start at the end again."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["before 0", "before 1"])
    first = Daemon(api, tmp_path, StartAt.END)
    first.poll()
    first.kill()
    emu.write(PROJECT, ["while down 0", "while down 1"])
    second = Daemon(api, tmp_path, StartAt.END)
    second.poll()
    assert second.lines(deploy_id) == ["while down 0", "while down 1"]


def test_a_restart_drains_a_deployment_followed_before_a_redeploy_while_down(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """``start = "deployment"``: the first run follows a deployment that has no line yet;
    it is redeployed while the daemon is down, and the old one's last line arrives late. The
    restart must still drain the old deployment (SPEC: redeploys drain it to its end)."""
    old = emu.deploy(PROJECT)
    first = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    first.poll()
    first.kill()
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 0"], deploy_id=new)
    emu.write(PROJECT, ["old, late"], deploy_id=old)
    second = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    second.poll()
    assert (second.lines(old), second.lines(new)) == (["old, late"], ["new 0"])


def test_a_pinned_deployment_saves_no_cursor_for_the_successor_it_only_probes(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """A pinned follow reads its successor's offset (where its own lines end) and nothing
    else: the successor gets no cursor, so a restart does not count it as being followed."""
    pinned = emu.deploy(PROJECT)
    emu.write(PROJECT, ["pinned 0"])
    emu.deploy(PROJECT)
    daemon = Daemon(api, tmp_path, StartAt.DEPLOYMENT, deploy_id=pinned)
    daemon.poll()
    assert list(daemon.store.load_all()) == [(PROJECT, pinned)]
    assert daemon.lines(pinned) == ["pinned 0"]


def test_a_first_poll_that_delivers_leaves_the_cursor_after_its_lines(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """The first cursor a new reader saves is its starting point: it must reach the disk
    before the reader's lines are delivered, never after (a restart would read them again)."""
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["line 0", "line 1"])
    first = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    first.poll()
    first.kill()
    second = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    second.poll()
    assert second.lines(deploy_id) == ["line 0", "line 1"]


def test_a_stale_current_deployment_does_not_send_the_follower_backwards(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """After a redeploy D1 -> D2, one ``/live/read`` answer still names D1 (a lagging
    replica). Deployments only move forward: the answer is ignored, D1 is not taken for D2's
    successor, and each file holds its deployment's lines once, with no gap."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"old {i}" for i in range(20)])
    daemon = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    daemon.poll()
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"new {i}" for i in range(40)])
    daemon.poll()
    emu.stale_live_read(PROJECT, answers=1)
    emu.write(PROJECT, [f"new {i}" for i in range(40, 121)])
    with capture_logs() as events:
        for _ in range(3):
            daemon.poll()
    assert daemon.lines(old) == emu.published(PROJECT, old)
    assert daemon.lines(new) == emu.published(PROJECT, new)
    assert len(daemon.lines(new)) == 121
    assert [e for e in events if e["event"] == "gap"] == []
    assert [e["event"] for e in events if e["event"] == "stale_deployment"] == ["stale_deployment"]


def test_a_stale_current_deployment_does_not_hide_a_redeploy_not_seen_yet(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """D1 is followed; D2 is launched, and the next ``/live/read`` answers still name D1 (a
    lagging replica, before the follower ever saw D2). Alone, that answer reads like the
    truth, and D2's lines would be taken for D1's. ``/live/list`` shows D2: D1 ends at D2's
    offset, and each file holds its deployment's lines once."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"old {i}" for i in range(20)])
    daemon = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    daemon.poll()
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, [f"new {i}" for i in range(30)])
    emu.write(PROJECT, ["old late"], deploy_id=old)
    emu.stale_live_read(PROJECT, answers=3)
    with capture_logs() as events:
        for _ in range(3):
            daemon.poll()
    assert daemon.lines(old) == emu.published(PROJECT, old)
    assert daemon.lines(new) == emu.published(PROJECT, new)
    assert len(daemon.lines(new)) == 30
    assert [e for e in events if e["event"] == "gap"] == []
    assert "stale_deployment" in [e["event"] for e in events]


def test_a_stale_current_deployment_at_the_first_poll_begins_at_the_latest_listed(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """``start = "deployment"``: the first ``/live/read`` names D1 though D2 was launched
    since (a lagging replica, before the follower saw anything). ``/live/list`` shows D2:
    the follower begins there, and D1, launched before the start, is not followed."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 0"])
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 0", "new 1"])
    emu.stale_live_read(PROJECT, answers=1)
    daemon = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    with capture_logs() as events:
        daemon.poll()
    assert (daemon.lines(old), daemon.lines(new)) == ([], ["new 0", "new 1"])
    assert list(daemon.store.load_all()) == [(PROJECT, new)]
    assert "stale_deployment" in [e["event"] for e in events]


def test_a_list_of_every_projects_deployments_is_not_chained_into_this_one(
    tmp_path: Path,
) -> None:
    """``/live/list`` documents only a ``status`` filter: a server that ignores
    ``projectId`` answers the whole account. Other projects' deployments must not be taken
    for this project's: after a redeploy (seen while qc-tail was down), the old deployment is
    drained to its end and the new one followed."""
    with Emulator(USER_ID, TOKEN, seed=7, list_ignores_project=True).start() as emu:
        emu.add_project(PROJECT, "mean-reversion")
        emu.add_project(PROJECT + 1, "neighbour")
        old = emu.deploy(PROJECT)
        emu.write(PROJECT, [f"old {i}" for i in range(10)])
        policy = RetryPolicy(max_attempts=1)
        api = QcApi(emu.base_url, QcAuth(USER_ID, TOKEN), policy=policy, sleep=lambda s: None)
        first = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
        first.poll()
        first.kill()
        emu.write(PROJECT, [f"old {i}" for i in range(10, 2010)])
        emu.deploy(PROJECT + 1)  # launched between the two: listed in between
        emu.write(PROJECT + 1, ["not ours"])
        new = emu.deploy(PROJECT)
        emu.write(PROJECT, ["new 0", "new 1"])
        second = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
        for _ in range(2):
            second.poll()
        assert second.lines(old) == emu.published(PROJECT, old)
        assert second.lines(new) == ["new 0", "new 1"]


@pytest.mark.parametrize("drain", [0.0, 600.0])
def test_a_restart_does_not_begin_at_a_stale_current_deployment(
    emu: Emulator, api: QcApi, tmp_path: Path, drain: float
) -> None:
    """The first ``/live/read`` after a restart names D1, though D2 (saved cursor) was
    already read, and D1 drained to its end (``drain`` 0) or not yet: the follower must not
    begin at D1 and take D2's lines for D1's."""
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 0"])
    first = Daemon(api, tmp_path, StartAt.DEPLOYMENT, drain=drain)
    first.poll()
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 0"])
    for _ in range(3):  # the old one is drained and done; the new one followed
        first.poll()
    first.kill()
    emu.write(PROJECT, ["new 1", "new 2"])
    emu.stale_live_read(PROJECT, answers=1)
    second = Daemon(api, tmp_path, StartAt.DEPLOYMENT, drain=drain)
    for _ in range(3):
        second.poll()
    assert second.lines(old) == ["old 0"]
    assert second.lines(new) == ["new 0", "new 1", "new 2"]


def test_a_stale_current_deployment_does_not_end_a_pinned_one(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """A follow entry pinned to the current deployment D2; a lagging answer names D1. D1 is
    not D2's successor: D2's lines go on arriving."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 0"])
    pinned = emu.deploy(PROJECT)
    emu.write(PROJECT, ["pinned 0"])
    daemon = Daemon(api, tmp_path, StartAt.DEPLOYMENT, deploy_id=pinned)
    daemon.poll()
    emu.stale_live_read(PROJECT, answers=1)
    emu.write(PROJECT, ["pinned 1"])
    for _ in range(2):
        daemon.poll()
    assert daemon.lines(pinned) == ["pinned 0", "pinned 1"]


@pytest.mark.parametrize(("new", "windows"), [(1, 1), (100, 1), (600, 3)])
def test_a_poll_reads_what_the_log_holds_and_asks_no_more(
    emu: Emulator, api: QcApi, new: int, windows: int
) -> None:
    """Each window read is a request against the shared budget: once the rows the answers
    promised are read, the poll is over (the next one looks for more)."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["before"])
    follower = ProjectFollower(api, PROJECT, start=Start(StartAt.END))
    assert batches(follower) == []
    emu.write(PROJECT, [f"line {i}" for i in range(new)])
    asked = emu.stats.by_path["/live/logs/read"]
    lines = []
    for batch in batches(follower):
        lines += [line.text for line in batch.lines]
    assert lines == [f"line {i}" for i in range(new)]
    assert emu.stats.by_path["/live/logs/read"] - asked == windows


def test_a_poll_says_each_deployment_begun_before_its_lines_and_ended_once_drained(
    emu: Emulator, api: QcApi
) -> None:
    """One stream, in order: a deployment begun (its first cursor, to save before anything
    else), its lines, and once drained after a redeploy, its end (its last cursor, done)."""
    first = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a"])
    clock = [0.0]
    follower = ProjectFollower(api, PROJECT, drain=60.0, clock=lambda: clock[0])

    def said(events: list[object]) -> list[tuple[str, str]]:
        return [
            (type(e).__name__, e.cursor.deploy_id if not isinstance(e, Batch) else e.lines[0].text)
            for e in events
            if not isinstance(e, Batch) or e.lines
        ]

    assert said(list(follower.poll())) == [("Started", first), ("Batch", "a")]
    second = emu.deploy(PROJECT)
    emu.write(PROJECT, ["b"])
    assert said(list(follower.poll())) == [("Started", second), ("Batch", "b")]
    assert said(list(follower.poll())) == []  # the first still drains: late lines may come
    clock[0] += 61
    events = list(follower.poll())
    assert said(events) == [("Ended", first)]
    ended = events[0]
    assert isinstance(ended, Ended) and ended.cursor.done and ended.cursor.position == 1
    assert said(list(follower.poll())) == []
    assert [e.cursor.deploy_id for e in follower.end()] == [second]


def test_a_new_readers_first_row_is_asked_while_the_list_confirms_its_deployment(
    emu: Emulator, api: QcApi
) -> None:
    """Reading begins a round trip sooner: once ``/live/read`` named the deployment, the row
    a new reader probes is asked beside ``/live/list``, and the probe takes that answer (the
    row is asked once). Every answer after ``/live/read``'s is held until both have come."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["a", "b"])
    emu.publish()
    answer = emu.api.answer

    def held_after_live_read(path: str, headers: Any, raw: bytes) -> Any:
        reply = answer(path, headers, raw)
        if path == "/live/read":
            emu.api.answering.clear()  # later requests are counted, then wait
        return reply

    emu.api.answer = held_after_live_read  # type: ignore[method-assign]
    emu.stats.reset()
    follower = ProjectFollower(api, PROJECT, prefetcher=Prefetcher(2))
    begun = threading.Thread(target=lambda: list(follower.begin()), daemon=True)
    begun.start()
    deadline = time.monotonic() + 20  # a hang guard
    while len(emu.stats.by_path) < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    asked = dict(emu.stats.by_path)
    emu.api.answering.set()
    begun.join(timeout=20)
    assert asked == {"/live/read": 1, "/live/list": 1, "/live/logs/read": 1}
    assert emu.stats.by_path == asked
    assert [reader.length for reader in follower.readers] == [2]


def test_a_stale_current_deployment_at_a_restart_costs_no_read_of_its_rows(
    emu: Emulator, api: QcApi, tmp_path: Path
) -> None:
    """A restart with D2's cursor saved; ``/live/read`` keeps naming D1 (launched before D2,
    never read) for several polls. Each such poll asks ``/live/read`` and ``/live/list`` and
    waits: D1 is not where to begin, so the row a reader of it would probe is never asked."""
    emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 0"])
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 0"])
    first = Daemon(api, tmp_path, StartAt.DEPLOYMENT)
    first.poll()
    first.kill()
    assert list(first.store.load_all()) == [(PROJECT, new)]
    emu.write(PROJECT, ["new 1"])
    emu.stale_live_read(PROJECT, answers=3)
    saved = {d: c for (_, d), c in CursorStore(tmp_path / "state").load_all().items()}
    prefetcher = Prefetcher(1)  # one worker: a job's answer comes after every earlier one's
    follower = ProjectFollower(api, PROJECT, saved=saved, prefetcher=prefetcher)
    emu.stats.reset()
    for _ in range(3):
        assert list(follower.poll()) == []
    prefetcher.submit(lambda: None).result(timeout=20)  # whatever was asked, answered
    assert emu.stats.by_path == {"/live/read": 3, "/live/list": 3}
    assert [line.text for batch in batches(follower) for line in batch.lines] == ["new 1"]
