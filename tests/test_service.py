"""The daemon's objects as `qc-tail run` builds them, over a run that outlives a follower."""

from __future__ import annotations

import contextlib
import gc
import sys
import threading
import tracemalloc
from dataclasses import replace
from pathlib import Path

import pytest
from structlog.testing import capture_logs

import tailer as tailer_package
from tailer.api import QcApi
from tailer.auth import QcAuth
from tailer.config import (
    ApiConfig,
    Config,
    DiscoveryConfig,
    FollowConfig,
    LokiConfig,
    OutputConfig,
    PollConfig,
    StartAt,
    StateConfig,
)
from tailer.discovery import Discovery
from tailer.emulator import Emulator
from tailer.errors import AuthError
from tailer.follower import ProjectFollower
from tailer.health import Health
from tailer.pipeline import Pipeline
from tailer.retry import RetryPolicy
from tailer.scheduler import Scheduler
from tailer.service import _pipelines, shared_reads
from tailer.shutdown import Shutdown

from .conftest import PROJECT, TOKEN, USER_ID
from .loki_recorder import LokiRecorder

DRAIN = 10.0


class FakeTime(Shutdown):
    """A stop flag whose waits advance a fake clock instead of sleeping, up to ``until``."""

    def __init__(self) -> None:
        super().__init__()
        self.now = 0.0
        self.until = 0.0

    def clock(self) -> float:
        return self.now

    def wait(self, seconds: float) -> bool:
        self.now = min(self.now + max(0.0, seconds), self.until)
        if self.now >= self.until:
            self.event.set()
        return self.event.is_set()

    def run(self, scheduler: Scheduler, seconds: float) -> None:
        """Let the daemon run for ``seconds`` of fake time."""
        self.until = self.now + seconds
        self.event.clear()
        scheduler.run()


def daemon(
    emu: Emulator,
    root: Path,
    time: FakeTime,
    follows: tuple[FollowConfig, ...] = (),
    output: OutputConfig | None = None,
    polls: int = 1,
    health: Health | None = None,
    pace: float = 1.0,
) -> tuple[list[Pipeline], Scheduler]:
    """A (re)start from disk: discovery on, files under ``root`` unless ``output`` says;
    a failing follower, and discovery, ask every ``pace`` seconds at most."""
    config = Config(
        follows=follows,
        api=ApiConfig(base_url=emu.base_url, user_id=USER_ID, api_token=TOKEN),
        poll=PollConfig(interval=1.0, max_interval=pace, drain=DRAIN),
        state=StateConfig(dir=root / "state"),
        discovery=DiscoveryConfig(enabled=True, interval=pace, start=StartAt.DEPLOYMENT),
        output=output or OutputConfig(directory=root / "out"),
    )
    api = QcApi(
        emu.base_url,
        QcAuth(USER_ID, TOKEN),
        policy=RetryPolicy(max_attempts=1),
        sleep=lambda s: None,
    )
    pipelines, make_follower = _pipelines(config, api, time, time.clock)
    discovery = Discovery(api, config.discovery, clock=time.clock)
    scheduler = Scheduler(
        pipelines,
        time,
        interval=1.0,
        max_interval=pace,
        drain=DRAIN,
        discovery=discovery,
        make_follower=make_follower,
        clock=time.clock,
        polls=polls,
        health=health or Health(clock=time.clock),
    )
    return pipelines, scheduler


def test_run_once_with_polls_side_by_side_begins_each_follower_once(
    emu: Emulator, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``poll_once`` (``run --once``) of a scheduler that ``run`` would poll on a pool,
    restarted from saved cursors: each discovered follower is begun in the calling thread,
    in turn, never on the pool while its poll begins it too (a second reader, placed
    without the saved cursor the first one took, would write the deployment's lines again)."""
    projects = (PROJECT, PROJECT + 1, PROJECT + 2)
    for project_id in projects:
        if project_id != PROJECT:
            emu.add_project(project_id, f"algo-{project_id}")
        emu.deploy(project_id)
        emu.write(project_id, [f"{project_id} line {n}" for n in range(300)])
    emu.publish()
    time = FakeTime()
    pipelines, scheduler = daemon(emu, tmp_path, time, polls=4)
    scheduler.poll_once()
    for pipeline in pipelines:
        pipeline.close()
    for project_id in projects:
        emu.write(project_id, [f"{project_id} line {n}" for n in range(300, 400)])
    emu.publish()
    begun_in: set[str] = set()
    begin = ProjectFollower.begin

    def recorded(follower: ProjectFollower) -> bool:
        begun_in.add(threading.current_thread().name)
        return begin(follower)

    monkeypatch.setattr(ProjectFollower, "begin", recorded)
    _, scheduler = daemon(emu, tmp_path, time, polls=4)  # a restart, from the saved cursors
    scheduler.poll_once()
    assert begun_in == {threading.current_thread().name}
    for project_id in projects:
        (log,) = (tmp_path / "out" / str(project_id)).glob("*.log")
        assert log.read_text().splitlines() == [f"{project_id} line {n}" for n in range(400)]


def test_a_project_discovered_again_resumes_from_the_cursors_saved_in_this_run(
    emu: Emulator, tmp_path: Path
) -> None:
    """A project followed from a cursor saved by an earlier run stops, is drained and dropped,
    then runs again: the new follower must resume from the cursors saved since the start,
    not from those loaded then (its old deployment's later lines would be written again)."""
    time = FakeTime()
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a", "b"])
    pipelines, scheduler = daemon(emu, tmp_path, time)
    time.run(scheduler, 2)
    for pipeline in pipelines:
        pipeline.close()
    emu.write(PROJECT, ["c"])
    _, scheduler = daemon(emu, tmp_path, time)  # starts with old's cursor after "b"
    time.run(scheduler, 2)
    emu.stop_deployment(PROJECT)
    time.run(scheduler, 3 * DRAIN)
    assert scheduler.slots == []  # no longer running, drained: dropped
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["d"], deploy_id=new)
    time.run(scheduler, 2)  # discovered again
    out = tmp_path / "out" / str(PROJECT)
    assert (out / f"{old}.log").read_text().splitlines() == ["a", "b", "c"]
    assert (out / f"{new}.log").read_text().splitlines() == ["d"]


def _held_by_tailer() -> int:
    """Bytes allocated by qc-tail's own code (not the emulator's) since tracing started and
    still held."""
    gc.collect()
    # CPython's type attribute cache keeps the name of each lookup it caches until another
    # lookup takes its slot (picked by the name's address). A C function that builds its
    # attribute names afresh at every call leaves such strings behind, charged to the line
    # of ours that called it: time-machine's patched clock does (tests/clock_ahead), at every
    # request signed. They are the cache's, not ours.
    sys._clear_type_cache()
    snapshot = tracemalloc.take_snapshot()
    tailer = str(Path(tailer_package.__file__).parent)
    emulator = str(Path(tailer, "emulator"))
    # A project's publishing rhythm keeps a bounded history (deques with a maxlen) and a plan
    # of the next few polls whose length depends on the moment: per project, not per
    # deployment, and it would only add noise here.
    rhythm = str(Path(tailer, "rhythm.py"))
    return sum(
        stat.size
        for stat in snapshot.statistics("filename")
        if stat.traceback[0].filename.startswith(tailer)
        and not stat.traceback[0].filename.startswith(emulator)
        and stat.traceback[0].filename != rhythm
    )


@pytest.mark.parametrize("outputs", ["files and stdout", "loki"])
def test_a_daemon_keeps_nothing_of_the_deployments_it_has_drained(
    emu: Emulator, tmp_path: Path, outputs: str
) -> None:
    """Redeploys come for months: whatever the daemon keeps per deployment (readers, files,
    cursors, bookkeeping) must go once the deployment is drained, or memory grows with every
    redeploy. Memory held by qc-tail's code after 100 more redeploys must stay where it was."""
    time = FakeTime()
    emu.deploy(PROJECT)
    with contextlib.ExitStack() as stack:
        if outputs == "loki":
            loki = stack.enter_context(LokiRecorder(check_age=False))
            output = OutputConfig(loki=LokiConfig(url=loki.url))
        else:
            output = OutputConfig(directory=tmp_path / "out", stdout=True)
        _, scheduler = daemon(emu, tmp_path, time, output=output)
        _assert_flat_over_redeploys(emu, time, scheduler)


def _assert_flat_over_redeploys(emu: Emulator, time: FakeTime, scheduler: Scheduler) -> None:
    def redeploys(n: int) -> None:
        for i in range(n):
            emu.write(PROJECT, [f"old {i}"])
            emu.publish(PROJECT)
            emu.deploy(PROJECT)
            emu.write(PROJECT, [f"new {i}"])
            emu.publish(PROJECT)
            time.run(scheduler, 3)

    redeploys(20)  # warm-up: caches, pools and the chain of draining deployments fill up
    tracemalloc.start()
    try:
        # What a deployment needs while it is followed or drained, and time for every object
        # that lasts (connections, watcher threads, state of the chain) to be replaced by one
        # allocated under tracing: measured, the total rises for about 100 redeploys after
        # tracing starts, then stays within a few hundred bytes.
        redeploys(100)
        before = _held_by_tailer()
        redeploys(100)
        after = _held_by_tailer()
    finally:
        tracemalloc.stop()
    assert len(scheduler.slots[0].follower.readers) <= 1 + DRAIN / 3 + 1
    assert after - before < 100 * 15  # a dict entry a deployment is 25 to 100 bytes


def test_a_follow_pinned_to_an_old_deployment_leaves_the_running_one_to_discovery(
    emu: Emulator, tmp_path: Path
) -> None:
    """SPEC: `run` follows the deployments the config names plus every Running one. A follow
    entry pinned to an old deployment covers that one only: the running one is discovered,
    and neither follower reads the other's deployment (no line twice)."""
    time = FakeTime()
    old = emu.deploy(PROJECT)
    emu.write(PROJECT, ["old 1"])
    emu.publish(PROJECT)
    new = emu.deploy(PROJECT)
    emu.write(PROJECT, ["new 1"])
    emu.write(PROJECT, ["old 2 late"], deploy_id=old)
    emu.publish(PROJECT)
    pinned = (FollowConfig(PROJECT, deploy_id=old, start=StartAt.DEPLOYMENT),)
    _, scheduler = daemon(emu, tmp_path, time, pinned)
    time.run(scheduler, 3)
    emu.write(PROJECT, ["new 2"])
    emu.publish(PROJECT)
    time.run(scheduler, 3)
    for pipeline in scheduler.pipelines:
        pipeline.close()
    _, scheduler = daemon(emu, tmp_path, time, pinned)  # a restart, from both cursors
    emu.write(PROJECT, ["old 3 later"], deploy_id=old)
    emu.publish(PROJECT)
    time.run(scheduler, 3)
    out = tmp_path / "out" / str(PROJECT)
    assert (out / f"{old}.log").read_text().splitlines() == ["old 1", "old 2 late", "old 3 later"]
    assert (out / f"{new}.log").read_text().splitlines() == ["new 1", "new 2"]
    assert len(scheduler.slots) == 2  # the pinned entry, and the running one discovered


def test_credentials_refused_mid_run_are_waited_out_by_polls_and_discovery_alike(
    emu: Emulator, tmp_path: Path
) -> None:
    """A token revoked or being rotated while the daemon runs: every request (polls and
    discovery) is refused for a while. The daemon says so once, shows it in its status, and
    carries on when the credentials work again; nothing is lost."""
    time = FakeTime()
    deploy_id = emu.deploy(PROJECT)
    emu.write(PROJECT, ["a"])
    _, scheduler = daemon(emu, tmp_path, time)
    time.run(scheduler, 2)
    emu.faults.random(rate=1.0, kinds=("auth",))
    emu.write(PROJECT, ["b"])
    with capture_logs() as events:
        time.run(scheduler, 30)
        refused = scheduler.status()
        emu.faults.clear()
        time.run(scheduler, 10)
    assert "auth failing since" in refused
    assert [e["event"] for e in events if e["event"].startswith("auth_")] == [
        "auth_failing",
        "auth_recovered",
    ]
    out = tmp_path / "out" / str(PROJECT) / f"{deploy_id}.log"
    assert out.read_text().splitlines() == ["a", "b"]


def test_credentials_refused_beyond_the_grace_period_end_the_daemon(
    emu: Emulator, tmp_path: Path
) -> None:
    """Refused for longer than ``auth_grace`` (an hour): the credentials are not coming back
    by themselves; the daemon exits (77) for someone to look, not before."""
    time = FakeTime()
    emu.deploy(PROJECT)
    _, scheduler = daemon(emu, tmp_path, time, pace=20.0)
    time.run(scheduler, 2)
    emu.faults.random(rate=1.0, kinds=("auth",))
    refused = time.now
    time.run(scheduler, 3590)
    with pytest.raises(AuthError):
        time.run(scheduler, 60)
    assert 3600 < time.now - refused <= 3600 + 20  # given up on at the first ask past the hour


@pytest.mark.parametrize(
    ("directory", "stdout", "loki", "shared"),
    [
        (True, False, True, True),
        (False, True, True, True),
        (True, True, False, False),
        (False, False, True, False),
    ],
)
def test_one_read_serves_both_pipelines_only_when_there_are_two(
    tmp_path: Path, directory: bool, stdout: bool, loki: bool, shared: bool
) -> None:
    """Files (or stdout) and Loki follow the same deployments on their own threads: an
    answer then serves the identical read the other makes at nearly the same time; with one
    pipeline, every read is the API's."""
    output = OutputConfig(
        directory=tmp_path if directory else None,
        stdout=stdout,
        loki=LokiConfig("http://127.0.0.1:9/loki/api/v1/push") if loki else None,
    )
    config = Config(poll=PollConfig(interval=30.0), output=output)
    assert shared_reads(config) == (1.0 if shared else 0.0)
    assert shared_reads(replace(config, poll=PollConfig(interval=0.5))) == (0.25 if shared else 0)
